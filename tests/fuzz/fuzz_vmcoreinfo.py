"""Fuzz VMCOREINFO parsing and the lookups built on it (utsname, page size, KASLR).

The input is the note text: parsed directly, then put into a tiny ELF vmcore whose accessors
(and ``read_utsname``) follow its SYMBOL/OFFSET/NUMBER values.
Run: ``python tests/fuzz/fuzz_vmcoreinfo.py [libFuzzer options] [corpus dirs]``.
"""

from __future__ import annotations

import contextlib


def one_input(data: bytes) -> None:
    """Parse ``data`` as VMCOREINFO, query every key, then open a vmcore carrying it."""
    from kdumper.dump.elf import ElfDump
    from kdumper.dump.io import BytesSource
    from kdumper.dump.vmcoreinfo import VmcoreInfo
    from kdumper.errors import KdumperError
    from tests.fuzz.fuzzlib import exercise, small_elf

    info = VmcoreInfo.parse(data)
    for key in list(info.entries)[:64]:
        name = key[key.find("(") + 1 : -1] if key.endswith(")") else key
        try:
            if key.startswith("SYMBOL("):
                info.symbol(name)
            elif key.startswith("OFFSET(") and "." in name:
                info.offset(*name.split(".", 1))
            elif key.startswith("SIZE("):
                info.size(name)
            elif key.startswith("LENGTH("):
                info.length(name)
            elif key.startswith("NUMBER("):
                info.number(name)
        except KdumperError:
            pass
    for prop in ("osrelease", "page_size", "crashtime", "kerneloffset", "build_id"):
        with contextlib.suppress(KdumperError):
            getattr(info, prop)
    exercise(ElfDump(BytesSource(small_elf(vmcoreinfo=data), "fuzz.elf")))


def main() -> None:
    """Run the fuzzer (libFuzzer options and corpus directories in ``sys.argv``)."""
    from tests.fuzz.fuzzlib import run

    run(one_input, ["kdumper.dump.elf", "kdumper.dump.vmcoreinfo", "kdumper.kernel.crashinfo"])


if __name__ == "__main__":
    main()
