"""A sweep of corrupt dumps: every one must end in one clear error line, never a traceback or hang.

For each format (ELF, kdump-compressed, flattened, split) a small valid file is written with
kdumper's own writers, then corrupted: truncated at every structural boundary and at random
offsets, signatures and header fields broken, page descriptors pointing past the end, stored
sizes larger than a page, compressed data damaged, bitmaps shorter than ``max_mapnr``, malformed
VMCOREINFO, absurd or overlapping PT_LOADs, flattened records with negative sizes or no end
marker, split sets with a part missing.

Each variant runs ``kdumper info`` (in-process through ``kdumper.cli.main.main``) and reads every
page through the API. Allowed outcomes: success, or a :class:`KdumperError` whose exit code is a
documented "bad input" code (never 1 = internal error), printed as one ``kdumper: error:`` line.
Variants marked ``must_fail`` must be detected (an error, or the dump reporting itself
incomplete). A few variants also run as real ``python -m kdumper info`` subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.dump.bitmap import Bitmap
from kdumper.dump.elf import ElfDump, write_elf
from kdumper.dump.io import BytesSource, FileSink
from kdumper.errors import ExitCode, KdumperError
from tests import oracles
from tests.oracles import PAGE, Load, build_elf, tiny_notes, tiny_pages, vmcoreinfo_text

# exit codes a bad input may give (errors.ExitCode): never ERROR (1, a bug) nor USAGE
BAD_INPUT_CODES = {
    ExitCode.BAD_DUMP,
    ExitCode.NOT_FOUND,
    ExitCode.IO,
    ExitCode.INCOMPLETE,
    ExitCode.UNSUPPORTED,
}
CASE_TIMEOUT = 20.0  # seconds for info + reading every page of one tiny variant
MAX_READS = 4096  # pages read per variant (an absurd header may claim billions of them)
MEMORY_HEADROOM = 4 << 30  # address space a variant may add before it counts as a blow-up


class Hang(BaseException):  # a BaseException, so the code under test cannot swallow it
    """Raised by the alarm when a variant runs longer than CASE_TIMEOUT."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in this thread after ``seconds``."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", autouse=True)
def bounded_memory() -> Iterator[None]:
    """Cap the address space, so a header claiming petabytes raises instead of swapping."""
    with oracles.limited_address_space(MEMORY_HEADROOM):
        yield


# ------------------------------------------------------------------------- the valid base files


def _write(fmt: str, dump: Any, codec: str = "zlib") -> bytes | list[bytes]:
    """``dump`` written by kdumper's writer as bytes (a list of parts for "split")."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        if fmt == "split":
            from kdumper.dump.split import write_split

            parts = [Path(tmp) / f"part{i}" for i in range(3)]
            write_split([str(p) for p in parts], dump, codec=codec)
            return [p.read_bytes() for p in parts]
        if fmt.startswith("flat"):
            from kdumper.dump.flattened import FlatSink

            with open(out, "wb") as stream, FlatSink(stream) as sink:
                _write_to(sink, fmt.removeprefix("flat-"), dump, codec)
        else:
            with FileSink(out) as sink:
                _write_to(sink, fmt, dump, codec)
        return out.read_bytes()


def _write_to(sink: Any, fmt: str, dump: Any, codec: str) -> None:
    if fmt == "kdump":
        from kdumper.dump.diskdump import write_kdump

        write_kdump(sink, dump, codec=codec)
    else:
        write_elf(sink, dump)


def tiny_dump() -> ElfDump:
    """The tiny 20-page x86_64 vmcore of ``tests/oracles.py`` opened by kdumper."""
    return ElfDump(BytesSource(oracles.tiny_elf(), "tiny.elf"))


_BASES: dict[tuple[str, str], Any] = {}


def base(fmt: str, codec: str = "zlib") -> Any:
    """The valid file of ``fmt`` ("elf", "kdump", "flat-kdump", "flat-elf", "split")."""
    key = (fmt, codec)
    if key not in _BASES:
        _BASES[key] = _write(fmt, tiny_dump(), codec)
    return _BASES[key]


# ------------------------------------------------------------------------------ structure maps


@dataclass
class KdumpMap:
    """Offsets of the structures of a kdump-compressed file (parsed here, independently)."""

    block_size: int
    sub: int
    offset_vmcoreinfo: int
    offset_note: int
    size_note: int
    bitmap1: int
    bitmap2: int
    descs: int
    ndesc: int
    desc_list: list[tuple[int, int, int]]  # (offset, size, flags) per descriptor


_DESC = struct.Struct("<qIIQ")


def kdump_map(data: bytes) -> KdumpMap:
    """Find the header, sub-header, bitmaps and descriptors of a little-endian LP64 file."""
    bs, sub_blocks, bitmap_blocks, max_mapnr = struct.unpack_from("<iiII", data, 428)
    sub = bs
    off_vmci, _, off_note, size_note = struct.unpack_from("<qQqQ", data, sub + 32)
    (max64,) = struct.unpack_from("<Q", data, sub + 96)
    bitmap1 = (1 + sub_blocks) * bs
    half = bitmap_blocks * bs // 2
    bitmap2 = bitmap1 + half
    descs = bitmap1 + bitmap_blocks * bs
    bits = Bitmap(data[bitmap2 : bitmap2 + half], max64 or max_mapnr)
    ndesc = bits.count()
    desc_list = [_DESC.unpack_from(data, descs + i * 24)[:3] for i in range(ndesc)]
    return KdumpMap(
        bs, sub, off_vmci, off_note, size_note, bitmap1, bitmap2, descs, ndesc, desc_list
    )


def elf_map(data: bytes) -> list[int]:
    """Structural boundaries of an ELF64 core: headers, notes, each PT_LOAD's data."""
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    cuts = [1, 4, 16, 32, 63, 64, phoff]
    for i in range(phnum):
        at = phoff + i * phentsize
        cuts += [at, at + 8, at + phentsize - 1]
        p_type, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", data, at)
        if p_type == 4:
            pos = off
            while pos + 12 <= off + filesz:
                namesz, descsz, _ = struct.unpack_from("<III", data, pos)
                if namesz == descsz == 0:
                    break
                cuts += [pos, pos + 12, pos + 12 + namesz]
                pos += 12 + (-(-namesz // 4) * 4) + (-(-descsz // 4) * 4)
        if p_type == 1 and filesz:
            cuts += [off, off + PAGE, off + filesz // 2, off + filesz - 1]
    return cuts


def flat_records(data: bytes) -> list[tuple[int, int, int]]:
    """(file position, offset, size) of each record of a flattened stream (end marker last)."""
    out = []
    pos = 4096
    while pos + 16 <= len(data):
        offset, size = struct.unpack_from(">qq", data, pos)
        out.append((pos, offset, size))
        if offset == -1 and size == -1:
            break
        pos += 16 + size
    return out


def random_cuts(size: int, n: int = 12, seed: int = 3) -> list[int]:
    """``n`` reproducible random truncation points inside a file of ``size`` bytes."""
    rng = np.random.default_rng(seed + size)
    return sorted({int(x) for x in rng.integers(1, size, n)})


def put(data: bytes, offset: int, fmt: str, *values: Any) -> bytes:
    """``data`` with ``struct.pack(fmt, *values)`` written at ``offset``."""
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


# ---------------------------------------------------------------------------------- the variants


@dataclass
class Variant:
    """One corrupt input: a name, its file(s) and whether it must be detected."""

    name: str
    files: list[bytes]
    must_fail: bool


Maker = Callable[[], list[Variant]]
MAKERS: dict[str, Maker] = {}


def maker(name: str) -> Callable[[Maker], Maker]:
    def register(fn: Maker) -> Maker:
        MAKERS[name] = fn
        return fn

    return register


def v(name: str, data: bytes | list[bytes], must_fail: bool = True) -> Variant:
    return Variant(name, data if isinstance(data, list) else [data], must_fail)


# --- ELF


@maker("elf-truncated-at-boundaries")
def _() -> list[Variant]:
    data = base("elf")
    cuts = sorted({c for c in elf_map(data) if 0 <= c < len(data)} | {0, len(data) - 1})
    return [v(f"cut@{c:#x}", data[:c]) for c in cuts]


@maker("elf-truncated-at-random")
def _() -> list[Variant]:
    data = base("elf")
    return [v(f"cut@{c:#x}", data[:c]) for c in random_cuts(len(data))]


@maker("elf-header-fields")
def _() -> list[Variant]:
    d = base("elf")
    return [
        v("magic", b"\x7fELG" + d[4:]),
        v("class32", d[:4] + b"\x01" + d[5:]),
        v("class-bogus", d[:4] + b"\x07" + d[5:]),
        v("big-endian", d[:5] + b"\x02" + d[6:]),
        v("e_type-exec", put(d, 16, "<H", 2)),
        v("e_machine-unknown", put(d, 18, "<H", 0x1234)),
        v("e_phoff-past-end", put(d, 32, "<Q", len(d) + 4096)),
        v("e_phoff-huge", put(d, 32, "<Q", 1 << 63)),
        v("e_phentsize-0", put(d, 54, "<H", 0)),
        v("e_phentsize-7", put(d, 54, "<H", 7)),
        v("e_phnum-0xfffe", put(d, 56, "<H", 0xFFFE)),
        v("e_phnum-0-pn-xnum-no-sections", put(d, 56, "<H", 0xFFFF)),
        v("e_phnum-0", put(d, 56, "<H", 0), must_fail=False),
    ]


def _loads(*loads: Load, notes: bytes | None = None) -> bytes:
    return build_elf(list(loads), tiny_notes() if notes is None else notes)


@maker("elf-absurd-pt-loads")
def _() -> list[Variant]:
    pages = tiny_pages(4)
    return [
        v("offset-past-end", _loads(Load(0, pages), Load(8 * PAGE, pages, offset=1 << 30))),
        v("offset-negative", _loads(Load(0, pages, offset=(1 << 64) - PAGE))),
        v("filesz-past-end", _loads(Load(0, pages, filesz=1 << 40))),
        v("paddr-2^62", _loads(Load(1 << 62, pages))),
        v("paddr-near-2^64", _loads(Load((1 << 64) - PAGE, pages))),
        v("memsz-2^60", _loads(Load(0, pages, memsz=1 << 60))),
        v("memsz-2^64-1", _loads(Load(0, pages, memsz=(1 << 64) - 1))),
        v("filesz-gt-memsz", _loads(Load(0, pages, memsz=PAGE)), must_fail=False),
        v("memsz-gt-filesz", _loads(Load(0, pages, memsz=64 * PAGE)), must_fail=False),
        v("overlap-same", _loads(Load(0, pages), Load(0, tiny_pages(4, 9))), must_fail=False),
        v("overlap-partial", _loads(Load(0, pages), Load(2 * PAGE, pages)), must_fail=False),
        v("overlap-nested", _loads(Load(0, tiny_pages(8)), Load(PAGE, pages)), must_fail=False),
        v("unaligned-paddr", _loads(Load(0x800, pages)), must_fail=False),
        v("unaligned-size", _loads(Load(0, pages[:5000])), must_fail=False),
        v("zero-length", _loads(Load(0, b""), Load(PAGE, pages)), must_fail=False),
        v("no-pt-load", _loads(), must_fail=False),
        v("many-tiny-loads", _loads(*(Load(i * PAGE, pages[:512]) for i in range(300))), False),
    ]


@maker("elf-notes")
def _() -> list[Variant]:
    pages = tiny_pages(4)
    good = tiny_notes()
    return [
        v(
            "namesz-huge",
            _loads(Load(0, pages), notes=struct.pack("<III", 0xFFFFFFF0, 4, 1) + good[12:]),
            False,
        ),
        v(
            "descsz-huge",
            _loads(Load(0, pages), notes=struct.pack("<III", 5, 0xFFFFFFF0, 1) + good[12:]),
            False,
        ),
        v("desc-past-segment", _loads(Load(0, pages), notes=good[:-8]), False),
        v("garbage", _loads(Load(0, pages), notes=bytes(range(256)) * 4), False),
        v("empty", _loads(Load(0, pages), notes=b""), False),
        v(
            "prstatus-short",
            _loads(Load(0, pages), notes=oracles.elf_note(b"CORE", 1, b"\x01\x02")),
            False,
        ),
    ]


UTS = "SYMBOL(init_uts_ns)=ffffffff81000000\nOFFSET(uts_namespace.name)="
VMCOREINFO_BAD = {
    "no-equals": "this is not a key value line\n",
    "pagesize-text": "PAGESIZE=abc\n",
    "pagesize-0": "PAGESIZE=0\n",
    "pagesize-3": "PAGESIZE=3\n",
    "pagesize-negative": "PAGESIZE=-4096\n",
    "pagesize-huge": "PAGESIZE=99999999999999999999999\n",
    "crashtime-text": "CRASHTIME=yesterday\n",
    "crashtime-huge": "CRASHTIME=99999999999999999999999\n",
    "kerneloffset-text": "KERNELOFFSET=zz\n",
    "phys-base-text": "NUMBER(phys_base)=nope\n",
    "symbol-text": "SYMBOL(init_uts_ns)=zz\nOFFSET(uts_namespace.name)=4\n",
    "uts-unmapped": "SYMBOL(init_uts_ns)=ffffffffffff0000\nOFFSET(uts_namespace.name)=4\n",
    "uts-offset-huge": UTS + "9999999999\n",
    "uts-offset-negative": UTS + "-8\n",
    "long-line": "X" * (2 << 20) + "\n",
    "binary": "\x00\xff\xfe=\x01\n",
    "key-only": "=value\n",
}


@maker("vmcoreinfo-malformed")
def _() -> list[Variant]:
    pages = tiny_pages(4)
    out = []
    for name, line in VMCOREINFO_BAD.items():
        # the bad line first, so that it wins over the good key (first occurrence wins)
        text = line.encode("latin-1") + vmcoreinfo_text()
        out.append(v(name, _loads(Load(0, pages), notes=tiny_notes(vmcoreinfo=text)), False))
    out.append(
        v(
            "no-osrelease",
            _loads(Load(0, pages), notes=tiny_notes(vmcoreinfo=b"PAGESIZE=4096\n")),
            False,
        )
    )
    out.append(
        v(
            "no-vmcoreinfo",
            _loads(Load(0, pages), notes=oracles.elf_note(b"CORE", 1, bytes(336))),
            False,
        )
    )
    return out


# --- kdump-compressed


@maker("kdump-truncated-at-boundaries")
def _() -> list[Variant]:
    d = base("kdump")
    m = kdump_map(d)
    cuts = {0, 8, 12, 428, 463, 464, m.sub, m.sub + 8, m.sub + 103, m.sub + 104}
    cuts |= {m.offset_note, m.offset_vmcoreinfo, m.offset_note + m.size_note - 1}
    cuts |= {m.bitmap1, m.bitmap1 + 1, m.bitmap2, m.bitmap2 + 1, m.descs, m.descs + 24}
    cuts |= {m.descs + 24 * m.ndesc - 1, m.descs + 24 * m.ndesc}
    data_offsets = sorted({off for off, _, _ in m.desc_list})
    for off in data_offsets[:3] + data_offsets[-2:]:
        cuts |= {off, off + 1}
    cuts |= {len(d) - 1}
    return [v(f"cut@{c:#x}", d[:c]) for c in sorted(c for c in cuts if 0 <= c < len(d))]


@maker("kdump-truncated-at-random")
def _() -> list[Variant]:
    d = base("kdump")
    return [v(f"cut@{c:#x}", d[:c]) for c in random_cuts(len(d))]


@maker("kdump-header-fields")
def _() -> list[Variant]:
    d = base("kdump")
    m = kdump_map(d)
    s = m.sub
    return [
        v("signature", b"KDUMQ   " + d[8:]),
        v("signature-diskdump", b"DISKDUMP" + d[8:], must_fail=False),
        v("version-negative", put(d, 8, "<i", -1)),
        v("version-0", put(d, 8, "<i", 0), must_fail=False),
        v("version-99", put(d, 8, "<i", 99), must_fail=False),
        v("block_size-0", put(d, 428, "<i", 0)),
        v("block_size-3", put(d, 428, "<i", 3)),
        v("block_size-1000", put(d, 428, "<i", 1000)),
        v("block_size-2^30", put(d, 428, "<i", 1 << 30)),
        v("block_size-negative", put(d, 428, "<i", -4096)),
        v("sub_hdr_size-0", put(d, 432, "<i", 0), must_fail=False),
        v("sub_hdr_size-huge", put(d, 432, "<i", 0x7FFFFFFF)),
        v("sub_hdr_size-negative", put(d, 432, "<i", -1)),
        v("bitmap_blocks-0", put(d, 436, "<I", 0)),
        v("bitmap_blocks-1", put(d, 436, "<I", 1), must_fail=False),
        v("bitmap_blocks-huge", put(d, 436, "<I", 0xFFFFFFFF)),
        v("max_mapnr-0", put(put(d, 440, "<I", 0), s + 96, "<Q", 0), must_fail=False),
        v(
            "max_mapnr-past-bitmap",
            put(put(d, 440, "<I", 0xFFFFFFFF), s + 96, "<Q", 1 << 40),
            False,
        ),
        v("max_mapnr-2^63", put(d, s + 96, "<Q", 1 << 63), must_fail=False),
        v("max_mapnr-2^64-1", put(d, s + 96, "<Q", (1 << 64) - 1), must_fail=False),
        v("nr_cpus-negative", put(d, 460, "<i", -1), must_fail=False),
        v("status-unknown-bits", put(d, 424, "<I", 0xFFFFFF00), must_fail=False),
        v("vmcoreinfo-past-end", put(d, s + 32, "<qQ", 1 << 40, 100), must_fail=False),
        v("vmcoreinfo-size-huge", put(d, s + 40, "<Q", 1 << 40), must_fail=False),
        v("vmcoreinfo-offset-negative", put(d, s + 32, "<q", -4096), must_fail=False),
        v("note-past-end", put(d, s + 48, "<q", 1 << 40), must_fail=False),
        v("note-size-huge", put(d, s + 56, "<Q", 1 << 40), must_fail=False),
        v("note-size-2^64-1", put(d, s + 56, "<Q", (1 << 64) - 1), must_fail=False),
        v("split-range-inverted", put(put(d, s + 12, "<i", 1), s + 80, "<QQ", 20, 4), False),
        v("split-range-past-mapnr", put(put(d, s + 12, "<i", 1), s + 80, "<QQ", 0, 1 << 50), False),
    ]


def _data_desc(m: KdumpMap, flags: int | None = None) -> int:
    """Index of the first descriptor that is not the shared zero page (and has ``flags``)."""
    zero = min(off for off, _, _ in m.desc_list)
    for i, (off, _size, fl) in enumerate(m.desc_list):
        if off != zero and (flags is None or fl == flags):
            return i
    raise AssertionError("no stored page with these flags in the base file")


@maker("kdump-page-descriptors")
def _() -> list[Variant]:
    d = base("kdump")
    m = kdump_map(d)
    i = _data_desc(m)
    at = m.descs + 24 * i
    size = m.desc_list[i][1]
    garbage = (bytes(range(256)) * (24 * m.ndesc // 256 + 1))[: 24 * m.ndesc]
    return [
        v("offset-past-end", put(d, at, "<q", len(d) + PAGE)),
        v("offset-2^62", put(d, at, "<q", 1 << 62)),
        v("offset-negative", put(d, at, "<q", -PAGE)),
        v("offset-0-lost", put(d, at, "<q", 0)),
        v("offset-into-header", put(d, at, "<q", 16), must_fail=False),
        v("size-past-end", put(d, at + 8, "<I", len(d))),
        v("size-gt-page", put(d, at + 8, "<I", PAGE + 1)),
        v("size-2^32-1", put(d, at + 8, "<I", 0xFFFFFFFF)),
        v("size-0", put(d, at + 8, "<I", 0)),
        v("flags-unknown", put(d, at + 12, "<I", 0x40)),
        v("flags-two-codecs", put(d, at + 12, "<I", 0x3)),
        v("raw-but-short", put(put(d, at + 12, "<I", 0), at + 8, "<I", min(size, PAGE - 1))),
        v("all-descs-garbage", d[: m.descs] + garbage + d[m.descs + len(garbage) :]),
        v(
            "bitmap2-all-set",
            d[: m.bitmap2] + b"\xff" * (m.descs - m.bitmap2) + d[m.descs :],
            False,
        ),
        v(
            "bitmap2-not-in-bitmap1",
            d[: m.bitmap1] + bytes(m.bitmap2 - m.bitmap1) + d[m.bitmap2 :],
            False,
        ),
        v(
            "bitmap1-all-set",
            d[: m.bitmap1] + b"\xff" * (m.bitmap2 - m.bitmap1) + d[m.bitmap2 :],
            False,
        ),
    ]


@maker("kdump-corrupt-compressed-data")
def _() -> list[Variant]:
    out = []
    for codec, flag in (("zlib", 1), ("lzo", 2), ("snappy", 4), ("zstd", 0x20)):
        d = base("kdump", codec)
        m = kdump_map(d)
        i = _data_desc(m, flag)
        off, size, _ = m.desc_list[i]
        at = m.descs + 24 * i
        flipped = bytearray(d)
        for k in range(off + 2, off + size, 7):
            flipped[k] ^= 0xA5
        # only zlib's adler32 guarantees that damage is noticed; the others may decode garbage
        out.append(v(f"{codec}-flipped", bytes(flipped), must_fail=codec == "zlib"))
        out.append(v(f"{codec}-zeroed", d[:off] + bytes(size) + d[off + size :], False))
        out.append(
            v(f"{codec}-cut-short", put(d, at + 8, "<I", size // 2), codec in ("zlib", "zstd"))
        )
        out.append(v(f"{codec}-one-byte", put(d, at + 8, "<I", 1)))
    return out


# --- flattened


@maker("flat-truncated-at-records")
def _() -> list[Variant]:
    d = base("flat-kdump")
    cuts = {0, 15, 16, 24, 4095, 4096}
    for pos, _off, size in flat_records(d):
        cuts |= {pos, pos + 8, pos + 16, pos + 16 + max(size, 0) // 2}
    cuts |= {len(d) - 16, len(d) - 1}
    return [v(f"cut@{c:#x}", d[:c]) for c in sorted(c for c in cuts if 0 <= c < len(d))]


@maker("flat-truncated-at-random")
def _() -> list[Variant]:
    d = base("flat-kdump")
    return [v(f"cut@{c:#x}", d[:c]) for c in random_cuts(len(d))]


@maker("flat-records")
def _() -> list[Variant]:
    d = base("flat-kdump")
    recs = flat_records(d)
    first, mid = recs[0][0], recs[len(recs) // 2][0]
    return [
        v("signature", b"makedumpfilX" + d[12:]),
        v("type-2", put(d, 16, ">q", 2)),
        v("version-2", put(d, 24, ">q", 2), must_fail=False),
        v("size-negative", put(d, mid + 8, ">q", -5)),
        v("size-0", put(d, mid + 8, ">q", 0)),
        v("size-past-end", put(d, mid + 8, ">q", len(d))),
        v("size-2^62", put(d, mid + 8, ">q", 1 << 62)),
        v("offset-negative", put(d, mid, ">q", -7)),
        v("offset-minus-1-not-end", put(d, mid, ">q", -1)),
        v("offset-2^62", put(d, first, ">q", 1 << 62), must_fail=False),
        v("offset-2^50", put(d, mid, ">q", 1 << 50), must_fail=False),
        v("no-end-marker", d[:-16]),
        v("garbage-after-end", d + b"\x01" * 100, must_fail=False),
        v("only-header", d[:4096]),
        v("empty-record-stream", d[:4096] + struct.pack(">qq", -1, -1)),
        v("header-overwritten-later", d[:-16] + struct.pack(">qq", 0, 8) + b"KDUMQ   " + d[-16:]),
    ]


@maker("flat-elf")
def _() -> list[Variant]:
    d = base("flat-elf")
    recs = flat_records(d)
    cuts = {rec[0] + 16 + max(rec[2], 0) // 2 for rec in recs[:-1]}
    return [v(f"cut@{c:#x}", d[:c]) for c in sorted(cuts)] + [
        v("inner-magic", d[: 4096 + 16] + b"\x7fELG" + d[4096 + 20 :]),
    ]


# --- split sets


@maker("split-sets")
def _() -> list[Variant]:
    p = base("split")
    other = _write("split", ElfDump(BytesSource(_loads(Load(0, tiny_pages(40, 3))), "other")))
    assert isinstance(p, list) and isinstance(other, list)
    return [
        v("missing-middle-part", [p[0], p[2]]),
        v("missing-last-part", [p[0], p[1]]),
        v("part-twice", [p[0], p[0], p[1], p[2]], must_fail=False),
        v("out-of-order", [p[2], p[0], p[1]], must_fail=False),
        v("one-part-alone", [p[1]], must_fail=False),
        v("parts-of-two-dumps", [p[0], other[1], p[2]], must_fail=False),
        v("middle-signature", [p[0], b"KDUMQ   " + p[1][8:], p[2]]),
    ]


@maker("split-truncated")
def _() -> list[Variant]:
    p = base("split")
    assert isinstance(p, list)
    m = kdump_map(p[1])
    cuts = {0, 464, m.sub + 104, m.bitmap1, m.descs, len(p[1]) - 1}
    return [v(f"part1-cut@{c:#x}", [p[0], p[1][:c], p[2]]) for c in sorted(cuts)]


# ----------------------------------------------------------------------------- running a variant


@dataclass
class Outcome:
    """What kdumper did with one variant."""

    detected: bool
    problems: list[str]


def _read_everything(paths: list[str]) -> tuple[bool, list[str]]:
    """Open with the API and read every page (bounded); returns (detected, problems)."""
    problems: list[str] = []
    detected = False

    def bad_exception(e: BaseException, doing: str) -> None:
        if isinstance(e, KdumperError):
            if e.exit_code not in BAD_INPUT_CODES:
                problems.append(f"{doing}: {type(e).__name__} with exit code {e.exit_code!r}: {e}")
            if "\n" in str(e).strip():
                problems.append(f"{doing}: multi-line message {str(e)!r}")
        else:
            tb = "".join(traceback.format_exception(e)[-3:]).strip()
            problems.append(f"{doing}: {type(e).__name__} escaped: {e!r}\n{tb}")

    try:
        dump = kdumper.open(*paths)
    except Hang:
        raise
    except BaseException as e:
        bad_exception(e, "open")
        return True, problems
    try:
        for what, call in (
            ("facts", dump.facts),
            ("vmcoreinfo", lambda: dump.vmcoreinfo),
            ("prstatus", lambda: dump.prstatus),
            ("codec_counts", dump.codec_counts),
        ):
            try:
                result = call()
            except Hang:
                raise
            except BaseException as e:
                detected = True
                bad_exception(e, what)
                continue
            if what == "facts" and getattr(result, "incomplete", False):
                detected = True
        pfns: list[int] = []
        try:
            for start, stop in dump.present.runs():
                pfns += range(start, min(stop, start + 64))
                if stop - start > 64:
                    pfns += range(max(start + 64, stop - 64), stop)
                if len(pfns) >= MAX_READS:
                    break
        except Hang:
            raise
        except BaseException as e:
            bad_exception(e, "present.runs")
            return True, problems
        for pfn in pfns[:MAX_READS]:
            try:
                page = dump.read_pfn(pfn)
            except Hang:
                raise
            except BaseException as e:
                detected = True
                bad_exception(e, f"read_pfn({pfn:#x})")
                if len(problems) > 3:
                    break
                continue
            if len(page) != dump.page_size:
                problems.append(f"read_pfn({pfn:#x}) returned {len(page)} bytes")
    finally:
        with contextlib.suppress(Exception):
            dump.close()
    return detected, problems


def _info_in_process(paths: list[str]) -> tuple[int, str]:
    try:
        from kdumper.cli.main import main
    except ImportError as e:
        if oracles.IN_CI or os.environ.get("KDUMPER_NEED_CLI"):
            raise
        print(f"(kdumper.cli.main is missing: {e}; only the API is checked)", file=sys.stderr)
        return 0, ""

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["info", *paths])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return int(rc or 0), err.getvalue()


def check_stderr(rc: int, err: str, where: str) -> list[str]:
    """The CLI's failure contract: one ``kdumper: error:`` line and a documented exit code."""
    problems = []
    if rc == 0:
        return problems
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc not in {int(c) for c in BAD_INPUT_CODES}:
        problems.append(f"{where}: exit code {rc} is not a documented bad-input code")
    if "Traceback" in err:
        problems.append(f"{where}: printed a traceback:\n{err[-1500:]}")
    elif len(lines) != 1 or not lines[0].startswith("kdumper: error:"):
        problems.append(f"{where}: stderr is not one 'kdumper: error:' line: {err[-600:]!r}")
    return problems


def run_variant(tmp: Path, variant: Variant) -> Outcome:
    """Write the variant's files, run ``info`` and the page reads under a deadline."""
    paths = []
    for i, blob in enumerate(variant.files):
        path = tmp / f"{variant.name.replace('/', '_')}.{i}"
        path.write_bytes(blob)
        paths.append(str(path))
    problems: list[str] = []
    try:
        with deadline(CASE_TIMEOUT):
            rc, err = _info_in_process(paths)
            problems += check_stderr(rc, err, "info")
            detected, read_problems = _read_everything(paths)
            problems += read_problems
    except Hang as e:
        return Outcome(True, [f"hang: {e}"])
    except MemoryError:
        return Outcome(True, ["MemoryError: the variant made kdumper allocate without bound"])
    return Outcome(rc != 0 or detected, problems)


@pytest.mark.parametrize("case", sorted(MAKERS))
def test_bad_input(case: str, tmp_path: Path) -> None:
    """Every variant of ``case`` ends cleanly; the ``must_fail`` ones are detected."""
    variants = MAKERS[case]()
    assert variants, f"{case} made no variants"
    failures = []
    for variant in variants:
        outcome = run_variant(tmp_path, variant)
        problems = list(outcome.problems)
        if variant.must_fail and not outcome.detected:
            problems.append("not detected: info succeeded and every page read fine")
        if problems:
            failures.append(f"[{variant.name}] " + "\n    ".join(problems))
    assert not failures, (
        f"{len(failures)} of {len(variants)} variants of {case} failed:\n" + "\n".join(failures)
    )


SUBPROCESS_CASES = [
    ("elf-header-fields", "magic"),
    ("kdump-header-fields", "block_size-0"),
    ("kdump-page-descriptors", "offset-past-end"),
    ("flat-records", "size-negative"),
    ("kdump-truncated-at-boundaries", None),
]


@pytest.mark.parametrize(("case", "name"), SUBPROCESS_CASES)
def test_bad_input_subprocess(case: str, name: str | None, tmp_path: Path) -> None:
    """``python -m kdumper info BAD`` as a real process: one error line, documented code."""
    variants = MAKERS[case]()
    variant = (
        variants[len(variants) // 2]
        if name is None
        else next(x for x in variants if x.name == name)
    )
    paths = []
    for i, blob in enumerate(variant.files):
        path = tmp_path / f"bad.{i}"
        path.write_bytes(blob)
        paths.append(str(path))
    res = subprocess.run(
        [sys.executable, "-m", "kdumper", "info", *paths],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode != 0, f"{variant.name}: info accepted a corrupt file: {res.stdout[:500]}"
    problems = check_stderr(res.returncode, res.stderr, variant.name)
    assert not problems, problems


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist: exit NOT_FOUND with one line."""
    rc, err = _info_in_process([str(tmp_path / "nope")])
    assert rc == ExitCode.NOT_FOUND, err
    assert not check_stderr(rc, err, "missing")


def test_directory(tmp_path: Path) -> None:
    """A directory instead of a dump: one error line, a documented code."""
    rc, err = _info_in_process([str(tmp_path)])
    assert rc != 0
    assert not check_stderr(rc, err, "directory")


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    """Empty, short, zero-filled and random files are unknown formats, not crashes."""
    rng = np.random.default_rng(5)
    for name, blob in {
        "empty": b"",
        "one-byte": b"\x7f",
        "zeros": bytes(8192),
        "random": rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes(),
        "text": b"hello world\n" * 100,
    }.items():
        outcome = run_variant(tmp_path, Variant(name, [blob], True))
        assert outcome.detected and not outcome.problems, (name, outcome.problems)
