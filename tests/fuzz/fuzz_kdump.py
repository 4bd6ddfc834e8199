"""Fuzz the kdump-compressed reader: ``KdumpDump(BytesSource(data))`` then every accessor.

Run: ``python tests/fuzz/fuzz_kdump.py [libFuzzer options] [corpus dirs]`` (or tests/fuzz/run.sh).
"""

from __future__ import annotations


def one_input(data: bytes) -> None:
    """Parse ``data`` as a kdump-compressed file and exercise the dump."""
    from kdumper.dump.diskdump import KdumpDump
    from kdumper.dump.io import BytesSource
    from tests.fuzz.fuzzlib import exercise

    exercise(KdumpDump(BytesSource(data, "fuzz.kdump")))


def main() -> None:
    """Run the fuzzer (libFuzzer options and corpus directories in ``sys.argv``)."""
    from tests.fuzz.fuzzlib import run

    run(one_input, ["kdumper.codecs", "kdumper.dump.diskdump", "kdumper.kernel.crashinfo"])


if __name__ == "__main__":
    main()
