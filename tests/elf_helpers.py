"""Test helpers (engineer A): an in-memory :class:`Dump` and hand-packed ELF cores.

:func:`pack_elf` packs cores with ``struct`` directly, independent of ``kdumper.dump.elf``, so the
reader is not only tested against its own writer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from kdumper.dump.arch import X86_64, Arch
from kdumper.dump.base import Dump, DumpFacts
from kdumper.dump.bitmap import Bitmap
from kdumper.dump.notes import Note, build_notes, build_prstatus
from kdumper.errors import PageExcludedError, PageNotPresentError

PAGE = 4096
DIRECT_MAP = 0xFFFF888000000000
KERNEL_MAP = 0xFFFFFFFF80000000
DEFAULT_VMCOREINFO = (
    "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1700000000\nNUMBER(phys_base)=0\n"
)


def vmcoreinfo_note(text: str | None = None, **extra: str) -> Note:
    """A VMCOREINFO note; ``extra`` adds ``KEY=VALUE`` lines."""
    if text is None:
        text = DEFAULT_VMCOREINFO
    text += "".join(f"{k}={v}\n" for k, v in extra.items())
    return Note("VMCOREINFO", 0, text.encode())


def default_notes(cpus: int = 2, vmcoreinfo: str | None = None) -> list[Note]:
    """``cpus`` NT_PRSTATUS notes and a VMCOREINFO note."""
    notes = [build_prstatus(X86_64, 100 + i, {"rip": 0xFFFFFFFF81000000 + i}) for i in range(cpus)]
    notes.append(vmcoreinfo_note(vmcoreinfo))
    return notes


def page_pattern(pfn: int, size: int = PAGE) -> bytes:
    """Recognisable non-zero contents for ``pfn``."""
    return struct.pack("<Q", 0x5A5A000000000000 | pfn) * (size // 8)


@dataclass
class MemDump(Dump):
    """A dump held in memory: ``pages`` maps pfn → contents; ``ram`` lists present pfn ranges."""

    ram: Sequence[tuple[int, int]]
    pages: Mapping[int, bytes] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=default_notes)
    arch: Arch = X86_64
    page_size: int = PAGE
    path: str = "<mem>"
    format: str = "mem"

    def __post_init__(self) -> None:
        self.max_pfn = max((e for _, e in self.ram), default=0)
        flags = np.zeros(self.max_pfn, dtype=np.bool_)
        for s, e in self.ram:
            flags[s:e] = True
        self._present = Bitmap.from_bool(flags)
        dflags = np.zeros(self.max_pfn, dtype=np.bool_)
        for pfn in self.pages:
            dflags[pfn] = True
        self._dumped = Bitmap.from_bool(dflags & flags)

    @property
    def present(self) -> Bitmap:
        return self._present

    @property
    def dumped(self) -> Bitmap:
        return self._dumped

    def read_pfn(self, pfn: int) -> bytes:
        if not self._present.test(pfn):
            raise PageNotPresentError(pfn)
        if pfn not in self.pages:
            raise PageExcludedError(pfn)
        return self.pages[pfn]

    def facts(self) -> DumpFacts:
        return DumpFacts(format=self.format, nr_cpus=2)


def mem_dump(
    ram: Sequence[tuple[int, int]],
    *,
    zero: Iterable[int] = (),
    missing: Iterable[int] = (),
    notes: list[Note] | None = None,
) -> MemDump:
    """A MemDump whose RAM pages hold :func:`page_pattern`, except ``zero`` (zeros) and
    ``missing`` (excluded)."""
    zero_set, missing_set = set(zero), set(missing)
    pages: dict[int, bytes] = {}
    for s, e in ram:
        for pfn in range(s, e):
            if pfn not in missing_set:
                pages[pfn] = bytes(PAGE) if pfn in zero_set else page_pattern(pfn)
    return MemDump(ram=ram, pages=pages, notes=notes if notes is not None else default_notes())


@dataclass
class Load:
    """One PT_LOAD for :func:`pack_elf`: ``data`` is the file part; ``memsz`` defaults to it."""

    paddr: int
    data: bytes
    memsz: int | None = None
    vaddr: int | None = None  # default: the x86_64 direct map
    offset: int | None = None  # default: placed after the previous data
    filesz: int | None = None  # default: len(data) (set it to lie about the size)


def pack_elf(
    loads: Sequence[Load],
    notes: Sequence[Note] | None = None,
    *,
    bits: int = 64,
    endian: str = "<",
    machine: int = 62,
    e_type: int = 4,
    e_flags: int = 0,
    note_segments: int = 1,
    data_align: int = PAGE,
) -> bytes:
    """An ELF core packed by hand with ``struct`` (no kdumper writer code involved)."""
    notes = list(default_notes() if notes is None else notes)
    nphdr = note_segments + len(loads)
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    note_blobs: list[bytes] = []
    if note_segments:
        per = -(-len(notes) // note_segments) or 1
        for k in range(note_segments):
            note_blobs.append(build_notes(notes[k * per : (k + 1) * per], endian))
    pos = ehsize + phentsize * nphdr
    note_offs = []
    for blob in note_blobs:
        note_offs.append(pos)
        pos += len(blob)
    pos = -(-pos // data_align) * data_align
    placed: list[tuple[Load, int]] = []
    for ld in loads:
        off = ld.offset if ld.offset is not None else pos
        placed.append((ld, off))
        pos = max(pos, off + len(ld.data))
    out = bytearray(pos)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if endian == "<" else 2, 1]) + bytes(9)
    fmt = "16sHHIQQQIHHHHHH" if bits == 64 else "16sHHIIIIIHHHHHH"
    struct.pack_into(endian + fmt, out, 0, ident, e_type, machine, 1, 0, ehsize, 0, e_flags,
                     ehsize, phentsize, nphdr, 0, 0, 0)  # fmt: skip
    at = ehsize
    for blob, off in zip(note_blobs, note_offs, strict=True):
        out[off : off + len(blob)] = blob
        _pack_phdr(out, at, bits, endian, 4, off, 0, 0, len(blob), len(blob))
        at += phentsize
    for ld, off in placed:
        out[off : off + len(ld.data)] = ld.data
        filesz = len(ld.data) if ld.filesz is None else ld.filesz
        memsz = filesz if ld.memsz is None else ld.memsz
        vaddr = DIRECT_MAP + ld.paddr if ld.vaddr is None else ld.vaddr
        _pack_phdr(out, at, bits, endian, 1, off, vaddr, ld.paddr, filesz, memsz)
        at += phentsize
    return bytes(out)


def _pack_phdr(
    out: bytearray, at: int, bits: int, endian: str, ptype: int, offset: int, vaddr: int,
    paddr: int, filesz: int, memsz: int,
) -> None:  # fmt: skip
    if bits == 64:
        struct.pack_into(endian + "IIQQQQQQ", out, at, ptype, 7, offset, vaddr, paddr, filesz,
                         memsz, 0)  # fmt: skip
    else:
        struct.pack_into(endian + "IIIIIIII", out, at, ptype, offset, vaddr & 0xFFFFFFFF, paddr,
                         filesz, memsz, 7, 0)  # fmt: skip


def pages_bytes(pfns: Iterable[int]) -> bytes:
    """The :func:`page_pattern` pages of ``pfns`` back to back."""
    return b"".join(page_pattern(p) for p in pfns)
