"""ELF vmcores: read ``/proc/vmcore``-style cores (kexec, makedumpfile ``-E``, QEMU), write ``-E``.

Reader rules (decided here, relied on by ``kdumper info`` and the converters):

- Physical addresses come from ``p_paddr`` only; ``p_vaddr`` is kept for the writer's mapping.
- ``present`` = pfns inside ``[p_paddr, p_paddr + p_memsz)`` of some PT_LOAD (a partial first or
  last page counts); bytes of a present page that no segment covers (unaligned RAM edges) read
  as zeros.
- ``dumped`` = present pfns none of whose bytes lie in a "no data" range. ``[p_filesz, p_memsz)`` of
  a segment is where makedumpfile ``-E`` cut excluded pages out, so those pfns are *not* dumped
  (as makedumpfile's ``exclude_nodata_pages`` does). Reading such a page still returns zeros by
  default, as the ELF specification, the kernel, crash and drgn do: ELF cannot tell a cut-out zero
  page from a cut-out free page, and the zero ones must read back (``nodata_zero=False`` raises
  :class:`PageExcludedError` instead).
- A file cut short (``p_offset + p_filesz`` past the end, common for interrupted copies of
  ``/proc/vmcore``) stays readable: ``facts().incomplete`` is set, a warning is recorded, the lost
  pages stay in ``dumped`` (as lost descriptors do in a kdump-compressed file) and reading one
  raises :class:`PageIncompleteError`, so converters record them as lost, not as filtered.
- Segments that lie wholly inside the union of earlier ones (the kernel-text PT_LOAD that
  ``/proc/vmcore`` lists next to the RAM segment holding the same memory) are *views*: the RAM
  segment is read, the view is kept only so the writer can reproduce its virtual mapping. Partial
  overlaps must hold the same bytes in the overlap, else :class:`DumpFormatError`.
- ``e_flags`` bit 0 is makedumpfile's ``DUMP_ELF_INCOMPLETE``.

The writer produces what ``makedumpfile -E`` produces: ELF header, one PT_NOTE, then PT_LOADs. Runs
of at least 256 left-out pages are cut out of the file and stay inside ``p_memsz`` of the segment
before them (readers see zeros, the RAM map survives); shorter runs are written, which keeps the
PT_LOAD count small. See :func:`write_elf` for virtual addresses and the kernel-image view.
"""

from __future__ import annotations

import contextlib
import struct
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import (
    DumpFormatError,
    KdumperError,
    NoSpaceError,
    PageExcludedError,
    PageIncompleteError,
    PageNotPresentError,
    TruncatedDumpError,
    UnknownFormatError,
    UnsupportedError,
)
from ..logs import get_logger
from ..records import record
from .arch import Arch, ByteOrder, arch_for_elf
from .base import Dump, DumpFacts, WriteResult
from .bitmap import Bitmap
from .io import ByteSource, Sink
from .notes import NT_PRSTATUS, Note, build_notes, parse_notes

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1
ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
PN_XNUM = 0xFFFF  # e_phnum when the real count is in section header 0's sh_info
XNUM_THRESHOLD = PN_XNUM  # from this many program headers on, the count goes to sh_info
DUMP_ELF_INCOMPLETE = 0x1  # e_flags bit makedumpfile sets when the dump was cut short

MAX_PHYS_BITS = 52  # no architecture addresses more physical memory than 2^52 bytes
# Page bitmaps are dense (one bit per pfn up to the highest PT_LOAD): beyond this many pfns
# (16 TiB of physical address space at 4 KiB pages, a 512 MiB bitmap) kdumper refuses to build
# them; raise it for machines with RAM above 16 TiB.
MAX_BITMAP_PFNS = 1 << 32
MAX_NOTES_SIZE = 256 << 20  # a PT_NOTE bigger than this is corruption (8192 CPUs need ~4 MiB)
# a program header table bigger than this is corruption (a million ELF64 program headers; a
# vmcore has one per RAM range, thousands at the most). A flattened or sparse file can claim
# holes this big, and reading one would take as much memory.
MAX_PHDRS_SIZE = 64 << 20
MAX_OVERLAP_CHECK = 16 << 20  # bytes of a partial PT_LOAD overlap compared (the rest is trusted)
COPY_CHUNK_PAGES = 256  # pages per read/write call when copying segment data (1 MiB at 4 KiB)
NOT_PADDR_64 = (1 << 64) - 1  # p_paddr of a segment that is not RAM (/proc/kcore)
NOT_PADDR_32 = (1 << 32) - 1

ET_NAMES = {0: "ET_NONE", 1: "ET_REL (an object file)", 2: "ET_EXEC (a program or vmlinux)",
            3: "ET_DYN (a shared library or PIE program)"}  # fmt: skip
EM_NAMES = {2: "SPARC", 3: "i386", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "s390",
            40: "ARM", 43: "SPARC v9", 62: "x86_64", 183: "AArch64", 243: "RISC-V",
            258: "LoongArch"}  # fmt: skip


@record(frozen=True)
class _Layout:
    """Struct layouts of one ELF class and byte order."""

    bits: int
    endian: str
    ehdr: struct.Struct
    phdr: struct.Struct
    shdr: struct.Struct
    phdr_dtype: np.dtype[np.void]
    flags_offset: int  # of e_flags inside the ELF header

    @classmethod
    def get(cls, bits: int, byteorder: ByteOrder) -> _Layout:
        key = (bits, byteorder)
        if key not in _LAYOUTS:
            _LAYOUTS[key] = cls._make(bits, byteorder)
        return _LAYOUTS[key]

    @classmethod
    def _make(cls, bits: int, byteorder: ByteOrder) -> _Layout:
        e = "<" if byteorder == "little" else ">"
        if bits == 64:
            names = (
                "p_type",
                "p_flags",
                "p_offset",
                "p_vaddr",
                "p_paddr",
                "p_filesz",
                "p_memsz",
                "p_align",
            )
            fmts = ("u4", "u4", "u8", "u8", "u8", "u8", "u8", "u8")
            return cls(
                64,
                e,
                struct.Struct(e + "16sHHIQQQIHHHHHH"),
                struct.Struct(e + "IIQQQQQQ"),
                struct.Struct(e + "IIQQQQIIQQ"),
                np.dtype({"names": names, "formats": [e + f for f in fmts]}),
                48,
            )
        names = (
            "p_type",
            "p_offset",
            "p_vaddr",
            "p_paddr",
            "p_filesz",
            "p_memsz",
            "p_flags",
            "p_align",
        )
        return cls(
            32,
            e,
            struct.Struct(e + "16sHHIIIIIHHHHHH"),
            struct.Struct(e + "IIIIIIII"),
            struct.Struct(e + "IIIIIIIIII"),
            np.dtype({"names": names, "formats": [e + "u4"] * 8}),
            36,
        )


_LAYOUTS: dict[tuple[int, str], _Layout] = {}


def is_elf(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts like an ELF file."""
    return head[:4] == ELFMAG


@record(frozen=True)
class View:
    """A PT_LOAD whose memory another (RAM) segment already holds, e.g. the kernel-text mapping."""

    paddr: int
    memsz: int
    vaddr: int


class ElfDump(Dump):
    """An ELF core of a crashed kernel, seen as physical pages.

    ``nodata_zero``: pages in ``[p_filesz, p_memsz)`` of a segment read as zeros (default) or raise
    :class:`PageExcludedError`. Either way they are not in :attr:`dumped`.
    """

    def __init__(self, source: ByteSource, *, nodata_zero: bool = True) -> None:
        self.source = source
        self.path = source.path
        self.format = "elf"
        self.nodata_zero = nodata_zero
        self.warnings: list[str] = []
        # a flattened stream that was cut short (FlatSource.complete / .problem)
        self.source_incomplete = getattr(source, "complete", True) is False
        problem = getattr(source, "problem", None)
        if problem:
            self.warnings.append(str(problem))
        self._parse_header()
        self._parse_segments()
        self._build_map()

    # -- parsing ------------------------------------------------------------------------------

    def _error(self, msg: str) -> DumpFormatError:
        return DumpFormatError(msg, path=self.path)

    def _parse_header(self) -> None:
        src = self.source
        ident = src.pread_upto(0, 16)
        if not is_elf(ident):
            raise UnknownFormatError("not an ELF file (no \\x7fELF magic)", path=self.path)
        if len(ident) < 16:
            raise self._truncated("ELF identification")
        ei_class, ei_data = ident[4], ident[5]
        if ei_class not in (ELFCLASS32, ELFCLASS64):
            raise self._error(f"ELF header has an invalid class {ei_class} (expected 1 or 2)")
        if ei_data not in (ELFDATA2LSB, ELFDATA2MSB):
            raise self._error(f"ELF header has an invalid byte order {ei_data} (expected 1 or 2)")
        byteorder: ByteOrder = "little" if ei_data == ELFDATA2LSB else "big"
        self.elf_class = 64 if ei_class == ELFCLASS64 else 32
        lay = _Layout.get(self.elf_class, byteorder)
        self._layout = lay
        if src.size < lay.ehdr.size:
            raise self._truncated("ELF header")
        hdr = lay.ehdr.unpack(src.pread(0, lay.ehdr.size))
        e_type, e_machine, e_phoff, e_shoff, e_flags = hdr[1], hdr[2], hdr[5], hdr[6], hdr[7]
        e_phentsize, e_phnum = hdr[9], hdr[10]
        if e_type != ET_CORE:
            what = ET_NAMES.get(e_type, f"e_type {e_type}")
            raise UnknownFormatError(
                f"an ELF file but not a core dump: {what} (did you swap vmlinux and the vmcore?)",
                path=self.path,
            )
        arch = arch_for_elf(e_machine, byteorder)
        if arch is None:
            name = EM_NAMES.get(e_machine, "unknown machine")
            raise UnsupportedError(
                f"{self.path}: ELF core for e_machine {e_machine} ({name}, {byteorder}-endian) is "
                "not supported; kdumper reads x86_64, aarch64, ppc64le and s390x dumps"
            )
        self.arch: Arch = arch
        self.e_flags = e_flags
        if e_phnum == PN_XNUM:
            e_phnum = self._xnum_phnum(e_shoff)
        if e_phnum == 0:
            raise self._error("ELF core has no program headers (e_phnum is 0)")
        if e_phentsize < lay.phdr.size:
            raise self._error(
                f"ELF e_phentsize {e_phentsize} is smaller than a program header "
                f"({lay.phdr.size} bytes)"
            )
        if e_phnum * e_phentsize > MAX_PHDRS_SIZE:
            raise self._error(
                f"ELF program header table of {e_phnum} x {e_phentsize} bytes is absurd "
                f"(more than {MAX_PHDRS_SIZE >> 20} MiB)"
            )
        if e_phoff + e_phnum * e_phentsize > src.size:
            raise self._truncated(
                f"{e_phnum} program headers at offset {e_phoff:#x}"
                + (" (e_phnum is absurd)" if e_phnum * e_phentsize > src.size else "")
            )
        raw = src.pread(e_phoff, e_phnum * e_phentsize)
        if e_phentsize == lay.phdr.size:
            self._phdrs = np.frombuffer(raw, dtype=lay.phdr_dtype)
        else:  # larger entries (allowed by the ELF specification): take the known prefix
            rows = np.frombuffer(raw, dtype=np.uint8).reshape(e_phnum, e_phentsize)
            self._phdrs = rows[:, : lay.phdr.size].copy().view(lay.phdr_dtype).reshape(-1)
        self.phnum = e_phnum

    def _truncated(self, what: str) -> DumpFormatError:
        return TruncatedDumpError(
            f"{what} lies past the end of the file ({self.source.size} bytes): "
            "the file is truncated or corrupt",
            path=self.path,
        )

    def _xnum_phnum(self, e_shoff: int) -> int:
        lay = self._layout
        if e_shoff == 0 or e_shoff + lay.shdr.size > self.source.size:
            raise self._error("e_phnum is PN_XNUM but there is no section header 0 to hold it")
        shdr = lay.shdr.unpack(self.source.pread(e_shoff, lay.shdr.size))
        return int(shdr[7])  # sh_info

    def _parse_segments(self) -> None:
        ph = self._phdrs
        notes_idx = np.flatnonzero(ph["p_type"] == PT_NOTE)
        self.notes = self._read_notes(notes_idx)
        vi = self.vmcoreinfo
        page_size = self.arch.page_size
        if vi is not None and "PAGESIZE" in vi:
            page_size = vi.page_size or 0
            if page_size < 512 or page_size > (1 << 21) or page_size & (page_size - 1):
                raise self._error(f"VMCOREINFO PAGESIZE={page_size} is not a valid page size")
        self.page_size = page_size

        load_idx = np.flatnonzero(ph["p_type"] == PT_LOAD)
        loads = ph[load_idx]
        not_paddr = NOT_PADDR_64 if self.elf_class == 64 else NOT_PADDR_32
        keep = (loads["p_memsz"] > 0) & (loads["p_paddr"] != not_paddr)
        load_idx, loads = load_idx[keep], loads[keep]
        self.nr_loads = int(load_idx.size)
        if self.nr_loads > 1 and not loads["p_paddr"].any():
            raise UnsupportedError(
                f"{self.path}: the PT_LOADs carry no physical addresses (p_paddr is 0 in all "
                "of them): a /proc/kcore copy or an old QEMU dump, not a vmcore"
            )
        paddr = loads["p_paddr"].astype(np.uint64)
        memsz = loads["p_memsz"].astype(np.uint64)
        filesz = loads["p_filesz"].astype(np.uint64)
        offset = loads["p_offset"].astype(np.uint64)
        limit = np.uint64(1 << MAX_PHYS_BITS)
        for bad, why in (
            (filesz > memsz, "p_filesz is larger than p_memsz"),
            (
                (paddr >= limit) | (memsz > limit - np.minimum(paddr, limit)),
                f"ends beyond 2^{MAX_PHYS_BITS} bytes of physical memory (absurd size)",
            ),
            (offset >= np.uint64(1 << 62), "has an absurd file offset"),
        ):
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise self._error(
                    f"PT_LOAD (program header {int(load_idx[i])}) {why}: p_paddr={int(paddr[i]):#x}"
                    f" p_memsz={int(memsz[i]):#x} p_filesz={int(filesz[i]):#x}"
                    f" p_offset={int(offset[i]):#x}"
                )
        # bytes of each segment really in the file (a cut-short copy loses the tail)
        size = np.uint64(self.source.size)
        avail = np.where(offset >= size, np.uint64(0), size - np.minimum(offset, size))
        have = np.minimum(filesz, avail)
        start = paddr.astype(np.int64)
        self._seg_idx = load_idx
        self._start = start
        self._mem_end = start + memsz.astype(np.int64)
        self._file_end = start + filesz.astype(np.int64)  # declared file data
        self._have_end = start + have.astype(np.int64)  # file data actually present
        self._offset = offset.astype(np.int64)
        self._vaddr = loads["p_vaddr"].astype(np.uint64)
        lost = int((filesz - have).sum())
        if lost:
            self.warnings.append(
                f"the file is truncated: {lost} bytes of PT_LOAD data are missing; "
                "the pages they held read as incomplete"
            )
            get_logger(__name__).warning("%s: %s", self.path, self.warnings[-1])

    def _read_notes(self, idx: npt.NDArray[np.intp]) -> list[Note]:
        ph = self._phdrs
        notes: list[Note] = []
        base = 0
        for i in idx.tolist():
            off, size = int(ph["p_offset"][i]), int(ph["p_filesz"][i])
            if size > MAX_NOTES_SIZE:
                raise self._error(f"PT_NOTE (program header {i}) has an absurd size {size:#x}")
            if off + size > self.source.size:
                raise self._truncated(f"PT_NOTE (program header {i}) at offset {off:#x}")
            data = self.source.pread(off, size)
            for note in parse_notes(data, self._layout.endian, self.path):
                notes.append(
                    Note(note.name, note.type, note.desc, note.desc_offset + base) if base else note
                )
            base += size
        return notes

    def _build_map(self) -> None:
        """Sort segments by paddr; drop views, trim verified partial overlaps."""
        order = np.lexsort((-(self._mem_end - self._start), self._start))
        self._select(order)
        n = self._start.size
        self.views: list[View] = []
        if n > 1:
            prev_max = np.maximum.accumulate(self._mem_end)[:-1]
            contained = np.concatenate(([False], self._mem_end[1:] <= prev_max))
            partial = np.concatenate(
                ([False], (self._start[1:] < prev_max) & (self._mem_end[1:] > prev_max))
            )
            for i in np.flatnonzero(partial).tolist():
                self._trim_overlap(i, int(prev_max[i - 1]))
            for i in np.flatnonzero(contained).tolist():
                vaddr = int(self._vaddr[i])
                if vaddr:
                    self.views.append(
                        View(int(self._start[i]), int(self._mem_end[i] - self._start[i]), vaddr)
                    )
            keep = ~contained
            self._select(keep)
        ends = self._mem_end
        top = int(ends.max()) if ends.size else 0
        self.max_pfn = -(-top // self.page_size)
        # Python lists for the per-page lookup (faster than numpy for scalars)
        self._l_start: list[int] = self._start.tolist()
        self._l_mem_end: list[int] = self._mem_end.tolist()
        self._l_file_end: list[int] = self._file_end.tolist()
        self._l_have_end: list[int] = self._have_end.tolist()
        self._l_offset: list[int] = self._offset.tolist()
        self._last = 0

    def _select(self, index: npt.NDArray[Any]) -> None:
        """Reorder or filter all per-segment arrays alike."""
        for name in ("_seg_idx", "_start", "_mem_end", "_file_end", "_have_end", "_offset"):
            setattr(self, name, getattr(self, name)[index])
        self._vaddr = self._vaddr[index]

    def _trim_overlap(self, i: int, covered_to: int) -> None:
        """Segment i starts inside earlier memory: check the overlap holds the same bytes, trim."""
        s = int(self._start[i])
        length = covered_to - s
        j = int(np.flatnonzero((self._start[:i] <= s) & (self._mem_end[:i] > s))[-1])
        who = f"PT_LOADs (program headers {int(self._seg_idx[j])} and {int(self._seg_idx[i])})"
        # compare what segment j holds of the overlap (bounded: a big overlap is sampled)
        cmp = min(covered_to, int(self._mem_end[j]), s + MAX_OVERLAP_CHECK) - s
        if self._segment_bytes(j, s, cmp) != self._segment_bytes(i, s, cmp):
            raise self._error(f"{who} overlap at {s:#x} (+{length:#x}) with different contents")
        checked = "identical" if cmp == length else f"identical in the first {cmp:#x} bytes"
        self.warnings.append(f"{who} overlap at {s:#x} (+{length:#x}); the contents are {checked}")
        delta = np.int64(length)
        self._start[i] += delta
        self._offset[i] += delta
        if self._vaddr[i]:
            self._vaddr[i] += np.uint64(length)
        self._file_end[i] = max(self._file_end[i], self._start[i])
        self._have_end[i] = max(self._have_end[i], self._start[i])

    def _segment_bytes(self, i: int, addr: int, length: int) -> bytes:
        """Bytes of segment i at physical [addr, addr+length) (zeros where it has no file data)."""
        start, have = int(self._start[i]), int(self._have_end[i])
        take = max(0, min(addr + length, have) - addr)
        data = self.source.pread(int(self._offset[i]) + addr - start, take) if take else b""
        return data + bytes(length - take)

    # -- the Dump interface -------------------------------------------------------------------

    def _check_bitmap_size(self) -> None:
        if self.max_pfn > MAX_BITMAP_PFNS:
            raise UnsupportedError(
                f"{self.path}: the PT_LOADs reach physical address "
                f"{self.max_pfn * self.page_size:#x}; a page bitmap over that much would need "
                f"{self.max_pfn >> 33} GiB (is a p_paddr corrupt?)"
            )

    @cached_property
    def present(self) -> Bitmap:
        """Pfns inside some PT_LOAD's ``[p_paddr, p_paddr + p_memsz)``."""
        self._check_bitmap_size()
        ps = self.page_size
        return ranges_to_bitmap(self._start // ps, -(-self._mem_end // ps), self.max_pfn)

    @cached_property
    def dumped(self) -> Bitmap:
        """Present pfns with no byte in a no-data range; lost (truncated) pages stay in."""
        self._check_bitmap_size()
        ps = self.page_size
        holes = self._mem_end > self._file_end
        nodata = (self._file_end[holes] // ps, -(-self._mem_end[holes] // ps))
        return ranges_to_bitmap(
            self._start // ps, -(-self._mem_end // ps), self.max_pfn, minus=nodata
        )

    def read_pfn(self, pfn: int) -> bytes:
        """One page; bytes outside every segment are zeros (see the module docstring)."""
        ps = self.page_size
        addr = pfn * ps
        end = addr + ps
        i = self._last
        starts = self._l_start
        if not (i < len(starts) and starts[i] <= addr and end <= self._l_mem_end[i]):
            i = bisect_right(starts, addr) - 1
            if i < 0 or self._l_mem_end[i] <= addr:
                i += 1  # the page may still begin in a hole and reach into the next segment
        if i < len(starts) and starts[i] <= addr and end <= self._l_have_end[i]:
            self._last = i
            return self.source.pread(self._l_offset[i] + addr - starts[i], ps)
        return self._assemble(pfn, i)

    def _assemble(self, pfn: int, i: int) -> bytes:
        """A page that crosses segment edges, holes, no-data or lost ranges."""
        ps = self.page_size
        addr, end = pfn * ps, pfn * ps + ps
        if pfn < 0 or pfn >= self.max_pfn:
            raise PageNotPresentError(pfn)
        buf = bytearray(ps)
        found = False
        starts = self._l_start
        while i < len(starts) and starts[i] < end:
            s, mem_end = starts[i], self._l_mem_end[i]
            if mem_end > addr:
                found = True
                have, file_end = self._l_have_end[i], self._l_file_end[i]
                lo, hi = max(addr, s), min(end, have)
                if hi > lo:
                    off = self._l_offset[i] + lo - s
                    buf[lo - addr : hi - addr] = self.source.pread(off, hi - lo)
                if min(end, file_end) > max(addr, have):
                    raise PageIncompleteError(pfn)
                if min(end, mem_end) > max(addr, file_end) and not self.nodata_zero:
                    raise PageExcludedError(pfn)
            i += 1
        if not found:
            raise PageNotPresentError(pfn)
        return bytes(buf)

    def read_pages(self, pfn: int, count: int) -> bytes:
        """``count`` pages from ``pfn`` on, in one read when a single segment holds them all."""
        ps = self.page_size
        addr, end = pfn * ps, (pfn + count) * ps
        i = bisect_right(self._l_start, addr) - 1
        if i >= 0 and end <= self._l_have_end[i]:
            return self.source.pread(self._l_offset[i] + addr - self._l_start[i], end - addr)
        return b"".join(self.read_pfn(p) for p in range(pfn, pfn + count))

    def read_phys_many(self, addrs: list[int], size: int) -> list[bytes | None]:
        """As :meth:`Dump.read_phys_many`: the reads that lie inside one segment's file data
        (nearly all) located at once and read in one tight loop; the others one by one."""
        a = np.asarray(addrs, np.int64)
        seg = np.searchsorted(self._start, a, side="right") - 1
        segc = np.maximum(seg, 0)
        inside = (seg >= 0) & (a + size <= self._have_end[segc])
        out: list[bytes | None] = [None] * len(addrs)
        where = np.flatnonzero(inside)
        try:
            offsets = (self._offset[segc[where]] + a[where] - self._start[segc[where]]).tolist()
            for i, data in zip(where.tolist(), self.source.pread_many(offsets, size), strict=True):
                out[i] = data
            rest = np.flatnonzero(~inside).tolist()
        except KdumperError:  # a read error among them: find out which, one by one
            rest = list(range(len(addrs)))
        for i in rest:
            with contextlib.suppress(KdumperError):
                out[i] = self.read_phys(addrs[i], size)
        return out

    def read_pages_into(self, pfn: int, count: int, out: memoryview) -> None:
        """As :meth:`read_pages`, into ``out``: one copy when one segment holds them all."""
        at = self.page_run_offset(pfn, count)
        if at is not None:
            self.source.pread_into(at, out)
        else:
            out[:] = self.read_pages(pfn, count)

    def page_run_offset(self, pfn: int, count: int) -> int | None:
        """The file offset that :meth:`read_pages_into` reads pages ``pfn`` .. ``pfn + count``
        from, when one segment holds them all in the file; else None."""
        ps = self.page_size
        return self.phys_offset(pfn * ps, count * ps)

    def phys_offset(self, paddr: int, size: int) -> int | None:
        """The file offset of the ``size`` bytes at physical ``paddr``, when one segment holds
        them all in the file; else None."""
        i = bisect_right(self._l_start, paddr) - 1
        if i >= 0 and paddr + size <= self._l_have_end[i]:
            return self._l_offset[i] + paddr - self._l_start[i]
        return None

    def read_phys_into(self, paddr: int, out: memoryview) -> None:
        """As :meth:`read_phys`, into ``out``: one copy when one segment holds the range."""
        at = self.phys_offset(paddr, len(out))
        if at is not None:
            self.source.pread_into(at, out)
        else:
            out[:] = self.read_phys(paddr, len(out))

    def vaddr_regions(self) -> list[tuple[int, int, int | None]]:
        """``(start_pfn, end_pfn, vaddr - paddr or None)`` per RAM segment, ascending."""
        ps = self.page_size
        out: list[tuple[int, int, int | None]] = []
        for s, e, v in zip(self._l_start, self._l_mem_end, self._vaddr.tolist(), strict=True):
            out.append((s // ps, -(-e // ps), (v - s) if v else None))
        return out

    def facts(self) -> DumpFacts:
        """Header facts: CPUs from NT_PRSTATUS notes, crash time and phys_base from VMCOREINFO."""
        vi = self.vmcoreinfo
        crash_time = phys_base = None
        warnings = list(self.warnings)
        if vi is not None:
            try:
                crash_time = vi.crashtime
            except KdumperError as e:
                warnings.append(str(e))
            try:
                phys_base = vi.number("phys_base")
            except KdumperError as e:
                warnings.append(str(e))
        nr_cpus = sum(1 for n in self.notes if n.type == NT_PRSTATUS and n.name == "CORE")
        truncated = bool((self._have_end < self._file_end).any())
        return DumpFacts(
            format=self.format,
            crash_time=crash_time,
            nr_cpus=nr_cpus,
            incomplete=bool(self.e_flags & DUMP_ELF_INCOMPLETE)
            or truncated
            or self.source_incomplete,
            phys_base=phys_base,
            extra={
                "elf_class": self.elf_class,
                "pt_loads": self.nr_loads,
                "views": len(self.views),
                "e_flags": self.e_flags,
                "warnings": warnings,
            },
        )

    def close(self) -> None:
        self.source.close()


Ranges = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


def merge_ranges(starts: npt.NDArray[np.int64], stops: npt.NDArray[np.int64]) -> Ranges:
    """The union of ``[starts[i], stops[i])`` as sorted, disjoint, non-adjacent ranges."""
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    if starts.size == 0:
        return starts, stops
    order = np.argsort(starts, kind="stable")
    starts, stops = starts[order], stops[order]
    reach = np.maximum.accumulate(stops)
    first = np.concatenate(([True], starts[1:] > reach[:-1]))
    last = np.concatenate((first[1:], [True]))
    return starts[first], reach[last]


def _fill(bits: npt.NDArray[np.uint8], start: int, stop: int, value: bool) -> None:
    """Set or clear bits ``[start, stop)`` of a packed LSB-first bitmap in place."""
    lo, hi = start >> 3, stop >> 3
    if lo == hi:
        masks = [(lo, ((1 << (stop - start)) - 1) << (start & 7))]
    else:
        masks = []
        if start & 7:
            masks.append((lo, (0xFF << (start & 7)) & 0xFF))
            lo += 1
        bits[lo:hi] = 0xFF if value else 0
        if stop & 7:
            masks.append((hi, (1 << (stop & 7)) - 1))
    for i, mask in masks:
        if value:
            bits[i] |= np.uint8(mask)
        else:
            bits[i] &= np.uint8(~mask & 0xFF)


def ranges_to_bitmap(
    starts: npt.NDArray[np.int64],
    stops: npt.NDArray[np.int64],
    nbits: int,
    minus: Ranges | None = None,
) -> Bitmap:
    """A bitmap of the pfns in ``[starts[i], stops[i])`` and in none of the ``minus`` ranges.

    Ranges may overlap and come in any order. Work and memory beyond the bitmap itself are
    proportional to the number of ranges, not to the pfns they span.
    """
    bm = Bitmap.zeros(nbits)
    for part, value in ((merge_ranges(starts, stops), True), (minus, False)):
        if part is None:
            continue
        lo, hi = merge_ranges(*part) if not value else part
        for s, e in zip(
            np.clip(lo, 0, nbits).tolist(), np.clip(hi, 0, nbits).tolist(), strict=True
        ):
            if e > s:
                _fill(bm.bits, s, e, value)
    return bm


# -- writer -----------------------------------------------------------------------------------

PFN_EXCLUDED = 256  # makedumpfile -E: shorter runs of excluded pages are written, not cut out


@record
class _Seg:
    pfn: int  # first pfn
    file_pages: int
    mem_pages: int
    delta: int | None  # vaddr - paddr, None: no kernel virtual address known (p_vaddr 0)
    offset: int = 0
    view: bool = False  # a second mapping of pages a RAM segment holds (not counted twice)


def _read_run(
    dump: Dump, pfn: int, count: int, kept: Bitmap | None = None
) -> tuple[bytes, npt.NDArray[np.bool_] | None]:
    """``count`` pages from ``pfn``, and which kept pages the source lost (None: none).

    Lost pages and, when ``kept`` is given, pages the source does not hold read as zeros.
    """
    reader = getattr(dump, "read_pages", None)
    try:
        if reader is not None:
            data: bytes = reader(pfn, count)
            return data, None
        return b"".join(dump.read_pfn(p) for p in range(pfn, pfn + count)), None
    except PageIncompleteError:
        pass
    except PageNotPresentError:
        if kept is None:
            raise
    lost = np.zeros(count, dtype=np.bool_)
    pages = []
    for i in range(count):
        try:
            pages.append(dump.read_pfn(pfn + i))
        except PageIncompleteError:
            pages.append(bytes(dump.page_size))
            lost[i] = kept is None or kept.test(pfn + i)
        except PageNotPresentError:
            if kept is None:
                raise
            pages.append(bytes(dump.page_size))
    return b"".join(pages), lost if lost.any() else None


def _runs_in(bm: Bitmap, start: int, stop: int) -> Iterator[tuple[int, int]]:
    """Runs of set bits inside ``[start, stop)`` (bounded memory)."""
    step = 1 << 24
    pending: tuple[int, int] | None = None
    for base in range(start, stop, step):
        flags = bm.window(base, min(base + step, stop)).view(np.int8)
        edge = np.zeros(1, dtype=np.int8)  # int8 throughout: a list would promote to int64
        edges = np.diff(np.concatenate((edge, flags, edge)))
        for s, e in zip(
            (np.flatnonzero(np.equal(edges, 1)) + base).tolist(),
            (np.flatnonzero(np.equal(edges, -1)) + base).tolist(),
            strict=True,
        ):
            if pending is not None and pending[1] == s:
                pending = (pending[0], e)
                continue
            if pending is not None:
                yield pending
            pending = (s, e)
    if pending is not None:
        yield pending


def _regions(dump: Dump, vaddr_base: int | None) -> list[tuple[int, int, int | None]]:
    """RAM ranges ``(start_pfn, end_pfn, vaddr - paddr)``, split where the mapping changes."""
    if isinstance(dump, ElfDump) and vaddr_base is None:
        maps = dump.vaddr_regions()
    else:
        maps = [(0, dump.max_pfn, vaddr_base)]
    out: list[tuple[int, int, int | None]] = []
    mi = 0
    for rs, re_ in dump.present.runs():
        pos = rs
        while pos < re_:
            while mi < len(maps) and maps[mi][1] <= pos:
                mi += 1
            if mi < len(maps) and maps[mi][0] <= pos:
                stop, delta = min(re_, maps[mi][1]), maps[mi][2]
            else:
                stop = min(re_, maps[mi][0]) if mi < len(maps) else re_
                delta = None
            if out and out[-1][1] == pos and out[-1][2] == delta:
                out[-1] = (out[-1][0], stop, delta)
            else:
                out.append((pos, stop, delta))
            pos = stop
    return out


def _segments(
    kept: Bitmap, regions: Sequence[tuple[int, int, int | None]], min_gap: int
) -> list[_Seg]:
    """Segments over each region: file data from the first kept page to the last one before a
    gap of at least ``min_gap`` excluded pages; ``p_memsz`` runs on over the gap after it."""
    segs: list[_Seg] = []
    for rs, re_, delta in regions:
        cur: _Seg | None = None
        for ks, ke in _runs_in(kept, rs, re_):
            if cur is not None and ks - (cur.pfn + cur.file_pages) < min_gap:
                cur.file_pages = cur.mem_pages = ke - cur.pfn  # a short gap is written
                continue
            if cur is None:
                if ks - rs < min_gap:  # a short leading gap is written too
                    cur = _Seg(rs, ke - rs, ke - rs, delta)
                    segs.append(cur)
                    continue
                segs.append(_Seg(rs, 0, ks - rs, delta))
            else:
                cur.mem_pages = ks - cur.pfn
            cur = _Seg(ks, ke - ks, ke - ks, delta)
            segs.append(cur)
        if cur is None:
            segs.append(_Seg(rs, 0, re_ - rs, delta))
        else:
            cur.mem_pages = re_ - cur.pfn
    return segs


def _find_zero_pages(dump: Dump, kept: Bitmap) -> Bitmap:
    """The all-zero pages among ``kept`` (reads every kept page once)."""
    ps = dump.page_size
    zero = Bitmap.zeros(kept.nbits)
    for rs, re_ in kept.runs():
        for base in range(rs, re_, COPY_CHUNK_PAGES):
            n = min(COPY_CHUNK_PAGES, re_ - base)
            data, lost = _read_run(dump, base, n)
            words = np.frombuffer(data, dtype=np.uint64).reshape(n, ps // 8)
            flags: npt.NDArray[np.bool_] = np.logical_not(words.any(axis=1))
            if lost is not None:
                flags &= ~lost  # a lost page is copied (as zeros) and reported, not cut out
            if flags.any():
                zero.store_window(base, flags)
    return zero


def write_elf(
    sink: Sink,
    dump: Dump,
    *,
    pages: Bitmap | None = None,
    exclude_zero: bool = False,
    vaddr_base: int | None = None,
    min_gap: int = PFN_EXCLUDED,
) -> WriteResult:
    """Write ``dump`` as an ELF core like ``makedumpfile -E`` (headers first, then data in order).

    ``pages``: the pfns to keep (default ``dump.dumped``); ``exclude_zero``: also leave out
    all-zero pages (found in a first pass, so kept pages are read twice). As makedumpfile does,
    only runs of at least ``min_gap`` (256) left-out pages are cut out of the file; shorter
    runs are written (their data when the source has it, else zeros), which keeps the number
    of PT_LOADs small. A cut run stays inside ``p_memsz`` of the segment before it, so readers
    see it as zeros and the RAM map is kept. ``min_gap=1`` cuts out every left-out page.

    Virtual addresses: from an ELF source each segment keeps its source mapping
    (``p_vaddr = src_vaddr + (paddr - src_paddr)``, as makedumpfile does), and the source's view
    segments (the kernel-image mapping) are written again, whole, after the RAM segments, so
    tools that translate kernel addresses through ``p_vaddr`` (vmcore-dmesg) keep working.
    Otherwise ``p_vaddr`` is ``vaddr_base + paddr`` when the caller knows the direct-map base,
    else 0, which makedumpfile reads as "no kernel virtual address" (``NOT_KV_ADDR``): a guessed
    direct-map base would be wrong under memory KASLR and would shadow drgn's page-table
    translation. crash and drgn take ``phys_base`` and the KASLR offset from VMCOREINFO, so no
    kernel-image segment is invented.

    A kept page the source lost (:class:`PageIncompleteError`) is written as zeros, the result is
    ``incomplete`` and ``e_flags`` gets ``DUMP_ELF_INCOMPLETE`` when the sink is seekable. On
    :class:`NoSpaceError` ``e_flags`` gets it too (seekable sinks) and the error is re-raised.
    The sink is not finished here: the caller calls ``sink.finish()`` or ``sink.abort()``.
    """
    arch, ps = dump.arch, dump.page_size
    lay = _Layout.get(arch.bits, arch.byteorder)
    kept = dump.dumped & dump.present  # a copy
    if pages is not None:
        kept = kept & pages
    zero = None
    if exclude_zero:
        zero = _find_zero_pages(dump, kept)
        kept.bits &= ~zero.bits

    min_gap = max(1, min_gap)
    segs = _segments(kept, _regions(dump, vaddr_base), min_gap)
    zero_pages = 0
    if zero is not None:
        zero_pages = zero.count() - sum(zero.count(s.pfn, s.pfn + s.file_pages) for s in segs)
    if isinstance(dump, ElfDump) and vaddr_base is None:
        for view in dump.views:
            lo = view.paddr // ps
            hi = min(-(-(view.paddr + view.memsz) // ps), dump.max_pfn)
            if hi > lo:
                segs.append(_Seg(lo, hi - lo, hi - lo, view.vaddr - view.paddr, view=True))

    phnum = 1 + len(segs)
    xnum = phnum >= XNUM_THRESHOLD
    note_off = lay.ehdr.size + phnum * lay.phdr.size + (lay.shdr.size if xnum else 0)
    notes = build_notes(dump.notes, lay.endian)
    data_off = -(-(note_off + len(notes)) // ps) * ps
    pos = data_off
    for seg in segs:
        seg.offset = pos
        pos += seg.file_pages * ps
    end = pos

    ident = ELFMAG + bytes(
        [
            ELFCLASS64 if lay.bits == 64 else ELFCLASS32,
            ELFDATA2LSB if arch.byteorder == "little" else ELFDATA2MSB,
            EV_CURRENT,
        ]
    )
    ident += bytes(16 - len(ident))
    shdr_off = lay.ehdr.size + phnum * lay.phdr.size if xnum else 0
    ehdr = lay.ehdr.pack(
        ident,
        ET_CORE,
        arch.e_machine,
        EV_CURRENT,
        0,
        lay.ehdr.size,
        shdr_off,
        0,
        lay.ehdr.size,
        lay.phdr.size,
        PN_XNUM if xnum else phnum,
        lay.shdr.size if xnum else 0,
        1 if xnum else 0,
        0,
    )
    written = lost_pages = 0
    incomplete = struct.pack(lay.endian + "I", DUMP_ELF_INCOMPLETE)
    try:
        sink.write_at(0, ehdr)
        sink.write_at(lay.ehdr.size, _phdr(lay, PT_NOTE, 0, note_off, 0, 0, len(notes), 0))
        at = lay.ehdr.size + lay.phdr.size
        batch: list[bytes] = []
        for seg in segs:
            paddr = seg.pfn * ps
            vaddr = (paddr + seg.delta) & ((1 << lay.bits) - 1) if seg.delta is not None else 0
            flags = PF_R | PF_W | PF_X
            filesz, memsz = seg.file_pages * ps, seg.mem_pages * ps
            batch.append(_phdr(lay, PT_LOAD, flags, seg.offset, vaddr, paddr, filesz, memsz))
            if len(batch) >= 4096:
                sink.write_at(at, b"".join(batch))
                at += sum(map(len, batch))
                batch = []
        if batch:
            sink.write_at(at, b"".join(batch))
        if xnum:  # section header 0 holds the real e_phnum
            sink.write_at(shdr_off, lay.shdr.pack(0, 0, 0, 0, 0, 1, 0, phnum, 0, 0))
        if notes:
            sink.write_at(note_off, notes)
        # segment data lies back to back from data_off: coalesce small segments into big writes
        out = bytearray()
        out_at = data_off
        limit = COPY_CHUNK_PAGES * ps
        for seg in segs:
            for base in range(0, seg.file_pages, COPY_CHUNK_PAGES):
                n = min(COPY_CHUNK_PAGES, seg.file_pages - base)
                data, lost = _read_run(dump, seg.pfn + base, n, kept)
                out += data
                if len(out) >= limit:
                    sink.write_at(out_at, memoryview(out))
                    out_at += len(out)
                    out = bytearray()
                if not seg.view:
                    written += n
                    if lost is not None:
                        lost_pages += int(lost.sum())
        if out:
            sink.write_at(out_at, memoryview(out))
        if lost_pages and sink.seekable:
            sink.write_at(lay.flags_offset, incomplete)
    except NoSpaceError:
        if sink.seekable:
            with contextlib.suppress(KdumperError):
                sink.write_at(lay.flags_offset, incomplete)
        raise
    return WriteResult(
        path=sink.name,
        format="elf",
        pages=written,
        zero_pages=zero_pages,
        bytes_in=written * ps,
        bytes_out=end if end > data_off else note_off + len(notes),
        incomplete=lost_pages > 0,
        codec="none",
    )


def _phdr(
    lay: _Layout,
    ptype: int,
    flags: int,
    offset: int,
    vaddr: int,
    paddr: int,
    filesz: int,
    memsz: int,
) -> bytes:
    if lay.bits == 64:
        return lay.phdr.pack(ptype, flags, offset, vaddr, paddr, filesz, memsz, 0)
    return lay.phdr.pack(ptype, offset, vaddr, paddr, filesz, memsz, flags, 0)
