"""Shared parts of the fuzz targets: what each target does with a parsed dump, and the seeds.

A target hands the fuzzer's bytes to one reader through :class:`kdumper.dump.io.BytesSource` and
then exercises the result (header facts, notes, VMCOREINFO, registers, bitmaps, page reads).
The only acceptable failure is a :class:`kdumper.errors.KdumperError` naming the problem; any
other exception is a bug the fuzzer reports as a crash. kdumper is imported lazily so that a
target can import it under atheris' instrumentation.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_READS = 48  # pages read per input: enough to reach the descriptors, cheap enough to fuzz
TARGETS = ("elf", "kdump", "flattened", "vmcoreinfo", "notes")


def exercise(dump: Any, max_reads: int = MAX_READS) -> None:
    """Touch everything a user of ``dump`` would: facts, notes, registers, bitmaps, pages."""
    from kdumper.errors import KdumperError

    dump.facts()
    info = dump.vmcoreinfo
    if info is not None:
        info.osrelease  # noqa: B018 - the property parses
    dump.prstatus  # noqa: B018
    dump.codec_counts()
    present = dump.present
    dumped = dump.dumped
    present.count()
    dumped.count()
    reads = 0
    for start, stop in present.runs():
        for pfn in (start, stop - 1, (start + stop) // 2):
            try:
                page = dump.read_pfn(pfn)
            except KdumperError:
                pass
            else:
                assert len(page) == dump.page_size, f"read_pfn gave {len(page)} bytes"
            reads += 1
        if reads >= max_reads:
            break
    for pfn in (-1, dump.max_pfn, dump.max_pfn + 1, 1 << 60):
        try:
            dump.read_pfn(pfn)
        except KdumperError:
            pass
        else:
            raise AssertionError(f"read_pfn({pfn:#x}) outside [0, max_pfn) returned a page")
    from kdumper.kernel.utsname import read_utsname

    read_utsname(dump)


def guarded(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``fn`` with :class:`KdumperError` treated as a fine outcome (every other error escapes)."""
    from kdumper.errors import KdumperError

    def one_input(data: bytes) -> None:
        with contextlib.suppress(KdumperError):
            fn(data)

    return one_input


def run(one_input: Callable[[bytes], None], modules: list[str]) -> None:
    """Instrument ``modules`` (and what they import from kdumper), then fuzz ``one_input``."""
    import atheris

    # the readers log a warning per odd input (a truncated PT_LOAD, ...): keep the fuzzer quiet
    quiet = logging.getLogger("kdumper")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    with atheris.instrument_imports(include=["kdumper", "tests.fuzz"]):
        for name in modules:
            importlib.import_module(name)
    atheris.Setup(sys.argv, guarded(one_input))
    atheris.Fuzz()


# ----------------------------------------------------------------------------------- the seeds


def small_elf(vmcoreinfo: bytes | None = None) -> bytes:
    """A 3-page ELF vmcore (two PT_LOADs) with compressible pages: a good fuzzing seed."""
    from tests.oracles import Load, build_elf, tiny_notes, tiny_pages

    loads = [
        Load(0, tiny_pages(2, 0, random_every=0)),
        Load(4 * 4096, tiny_pages(1, 4, random_every=0)),
    ]
    return build_elf(loads, tiny_notes(cpus=1, vmcoreinfo=vmcoreinfo))


def seeds() -> dict[str, dict[str, bytes]]:
    """Seed inputs per target, written by kdumper's own writers from a tiny vmcore."""
    import io

    from kdumper.dump.diskdump import write_kdump
    from kdumper.dump.elf import ElfDump, write_elf
    from kdumper.dump.flattened import FlatSink
    from kdumper.dump.io import BytesSource
    from tests.oracles import tiny_notes, vmcoreinfo_text

    class MemSink:
        """A seekable in-memory sink (the writers' Sink protocol)."""

        seekable = True
        name = "<memory>"

        def __init__(self) -> None:
            self.buf = bytearray()

        def write_at(self, offset: int, data: bytes | memoryview) -> None:
            end = offset + len(data)
            if end > len(self.buf):
                self.buf += bytes(end - len(self.buf))
            self.buf[offset:end] = data

        def truncate(self, size: int) -> None:
            del self.buf[size:]
            self.buf += bytes(size - len(self.buf))

        def finish(self) -> None:
            pass

        def abort(self) -> None:
            pass

    elf = small_elf()
    src = ElfDump(BytesSource(elf, "seed.elf"))
    out: dict[str, dict[str, bytes]] = {t: {} for t in TARGETS}
    out["elf"]["handmade"] = elf
    sink: Any = MemSink()
    write_elf(sink, src)
    out["elf"]["written"] = bytes(sink.buf)
    for codec in ("none", "zlib", "lzo", "snappy", "zstd"):
        sink = MemSink()
        write_kdump(sink, src, codec=codec)
        out["kdump"][codec] = bytes(sink.buf)
    for kind in ("kdump", "elf"):
        stream = io.BytesIO()
        flat = FlatSink(stream, name="<seed>")
        if kind == "kdump":
            write_kdump(flat, src, codec="zlib")
        else:
            write_elf(flat, src)
        flat.finish()
        out["flattened"][kind] = stream.getvalue()
    out["vmcoreinfo"]["minimal"] = vmcoreinfo_text()
    out["vmcoreinfo"]["utsname"] = vmcoreinfo_text(
        extra="SYMBOL(init_uts_ns)=ffffffff81000010\nOFFSET(uts_namespace.name)=4\n"
        "SYMBOL(_stext)=ffffffff81000000\nSIZE(page)=64\nOFFSET(page.flags)=0\n"
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nLENGTH(zone.free_area)=11\n"
    )
    out["notes"]["two-cpus"] = tiny_notes(cpus=2)
    out["notes"]["with-padding"] = tiny_notes(cpus=1) + bytes(24)
    return out


def write_seeds(root: str | os.PathLike[str]) -> None:
    """Write every target's seeds under ``root/<target>/``."""
    for target, files in seeds().items():
        d = Path(root) / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)


def pack_u64(value: int) -> bytes:
    """Little-endian u64 (for the hypothesis mutators)."""
    return struct.pack("<Q", value % (1 << 64))
