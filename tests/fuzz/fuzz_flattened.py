"""Fuzz the flattened-format reader and format sniffing: ``FlatSource`` and ``open_source``.

Run: ``python tests/fuzz/fuzz_flattened.py [libFuzzer options] [corpus dirs]``.
"""

from __future__ import annotations


def one_input(data: bytes) -> None:
    """Index ``data`` as a flattened stream, read the reassembled view, open what it holds."""
    from kdumper.dump.flattened import FlatSource
    from kdumper.dump.io import BytesSource
    from kdumper.dump.open import open_source
    from kdumper.errors import KdumperError
    from tests.fuzz.fuzzlib import exercise

    try:
        flat = FlatSource(BytesSource(data, "fuzz.flat"))
    except KdumperError:
        pass
    else:
        size = flat.size
        for offset, length in ((0, 64), (size // 2, 4096), (max(0, size - 100), 100)):
            got = flat.pread_upto(offset, length)
            assert len(got) == max(0, min(length, size - offset)), "pread_upto length"
    exercise(open_source(BytesSource(data, "fuzz.flat")))


def main() -> None:
    """Run the fuzzer (libFuzzer options and corpus directories in ``sys.argv``)."""
    from tests.fuzz.fuzzlib import run

    run(
        one_input,
        [
            "kdumper.dump.diskdump",
            "kdumper.dump.elf",
            "kdumper.dump.flattened",
            "kdumper.dump.open",
        ],
    )


if __name__ == "__main__":
    main()
