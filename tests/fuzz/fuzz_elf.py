"""Fuzz the ELF vmcore reader: ``ElfDump(BytesSource(data))`` then every accessor.

Run: ``python tests/fuzz/fuzz_elf.py [libFuzzer options] [corpus dirs]`` (or tests/fuzz/run.sh).
"""

from __future__ import annotations


def one_input(data: bytes) -> None:
    """Parse ``data`` as an ELF core and exercise the dump."""
    from kdumper.dump.elf import ElfDump
    from kdumper.dump.io import BytesSource
    from tests.fuzz.fuzzlib import exercise

    exercise(ElfDump(BytesSource(data, "fuzz.elf")))


def main() -> None:
    """Run the fuzzer (libFuzzer options and corpus directories in ``sys.argv``)."""
    from tests.fuzz.fuzzlib import run

    run(one_input, ["kdumper.dump.elf", "kdumper.kernel.crashinfo"])


if __name__ == "__main__":
    main()
