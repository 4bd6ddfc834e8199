"""Fuzz the ELF note parser and NT_PRSTATUS decoding; check that build_notes round-trips.

Run: ``python tests/fuzz/fuzz_notes.py [libFuzzer options] [corpus dirs]``.
"""

from __future__ import annotations


def one_input(data: bytes) -> None:
    """Parse ``data`` as a PT_NOTE segment (both byte orders), decode registers, rebuild."""
    from kdumper.dump.arch import ARCHES
    from kdumper.dump.notes import build_notes, find_vmcoreinfo_note, parse_notes, parse_prstatus
    from kdumper.errors import KdumperError

    for endian in ("<", ">"):
        try:
            notes = parse_notes(data, endian, path="fuzz.notes")
        except KdumperError:
            continue
        for arch in ARCHES:
            for cpu in parse_prstatus(notes, arch):
                cpu.pc(arch)
                cpu.sp(arch)
        find_vmcoreinfo_note(notes)
        if all(n.name.isascii() for n in notes):
            again = parse_notes(build_notes(notes, endian), endian)
            want = [(n.name, n.type, n.desc) for n in notes]
            got = [(n.name, n.type, n.desc) for n in again]
            assert got == want, "parse_notes(build_notes(notes)) != notes"


def main() -> None:
    """Run the fuzzer (libFuzzer options and corpus directories in ``sys.argv``)."""
    from tests.fuzz.fuzzlib import run

    run(one_input, ["kdumper.dump.notes"])


if __name__ == "__main__":
    main()
