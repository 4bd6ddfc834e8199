"""The kdump-compressed ("diskdump") format: :class:`KdumpDump` reads, :func:`write_kdump` writes.

File layout (makedumpfile ``write_kdump_header``, ``write_kdump_pages_and_bitmap_cyclic``;
reference/makedumpfile.md §1), ``bs`` = block_size = the crashed kernel's page size::

    0                          disk_dump_header (rest of the block zero)
    bs                         kdump_sub_header, then the ELF notes verbatim (sub_hdr_size blocks)
    (1+sub_hdr_size)*bs        1st bitmap (RAM), 2nd bitmap (dumped), each block-aligned
    (1+sub_hdr+bitmap)*bs      page_desc[one per set bit of the 2nd bitmap], 24 bytes each
    + 24*num_dumpable          page data back to back; the shared zero page first (dump_level & 1)

Every field is in the crashed machine's byte order and C layout: LP64 (x86_64, aarch64, ...),
ILP32 (i386: 64-bit fields 4-aligned, "pack"; arm/mips: 8-aligned, "pad"), either endianness.
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..codecs import (
    FLAG_LZO,
    FLAG_SNAPPY,
    FLAG_ZLIB,
    FLAG_ZSTD,
    FLAGS_MASK,
    Codec,
    CodecError,
    codec_for_flag,
    codec_for_status,
    get_codec,
)
from ..errors import (
    DumpFormatError,
    KdumperError,
    NoSpaceError,
    PageExcludedError,
    PageIncompleteError,
    PageNotPresentError,
    TruncatedDumpError,
    UnknownFormatError,
)
from ..records import record
from .arch import ARCHES, EM_386, X86_64, Arch, ByteOrder, arch_for_name
from .base import Dump, DumpFacts, Utsname, WriteResult
from .bitmap import Bitmap
from .flattened import FlatSink, FlatSource
from .io import ByteSource, Sink
from .notes import NT_PRSTATUS, VMCOREINFO_NOTE_NAME, Note, build_notes, parse_notes

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"

STATUS_INCOMPLETE = 0x8  # DUMP_DH_COMPRESSED_INCOMPLETE: the writer ran out of space
STATUS_EXCLUDED_VMEMMAP = 0x10  # DUMP_DH_EXCLUDED_VMEMMAP (-e)
DISKDUMP_STATUS_INCOMPLETED = 0x1  # the old diskdump patch's DUMP_HEADER_INCOMPLETED

HEADER_VERSION = 6
DESC_SIZE = 24
SECTION_PFNS = 4096  # BITMAP_SECT_LEN of crash/makedumpfile: pfns per prefix-count entry
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 1 << 20
MAX_MAPNR = 1 << 52  # 2^64 bytes of 4 KiB pages: anything larger is corruption
MAX_NOTES = 64 << 20  # a note area larger than this is corruption

DUMP_LEVEL_ZERO = 1  # -d bit 1: zero pages share one stored page


class DiskDumpHeader(NamedTuple):
    """``struct disk_dump_header``."""

    signature: bytes
    header_version: int
    utsname: bytes
    tv_sec: int
    tv_usec: int
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    total_ram_blocks: int
    device_blocks: int
    written_blocks: int
    current_cpu: int
    nr_cpus: int


class SubHeader(NamedTuple):
    """``struct kdump_sub_header`` (fields newer than the file's version read as 0)."""

    phys_base: int = 0
    dump_level: int = 0  # v1
    split: int = 0  # v2
    start_pfn: int = 0  # v2, truncated to 32 bits
    end_pfn: int = 0  # v2
    offset_vmcoreinfo: int = 0  # v3
    size_vmcoreinfo: int = 0  # v3
    offset_note: int = 0  # v4
    size_note: int = 0  # v4
    offset_eraseinfo: int = 0  # v5
    size_eraseinfo: int = 0  # v5
    start_pfn_64: int = 0  # v6
    end_pfn_64: int = 0  # v6
    max_mapnr_64: int = 0  # v6


# how many SubHeader fields exist in each header version
_SUB_FIELDS_BY_VERSION = (1, 2, 5, 7, 9, 11, 14)
# where each SubHeader field ends, per layout variant (the struct of a version ends at its last)
_SUB_FIELD_ENDS = {
    "lp64": (8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104),
    "pack": (4, 8, 12, 16, 20, 28, 32, 40, 44, 52, 56, 64, 72, 80),
    "pad": (4, 8, 12, 16, 20, 32, 36, 48, 52, 64, 68, 80, 88, 96),
}


@record(frozen=True)
class Layout:
    """The C layout of the kdump structures for one byte order and word size."""

    byteorder: ByteOrder
    bits: int
    variant: str  # "lp64", "pack" (i386) or "pad" (arm, mips)
    header: struct.Struct
    sub: struct.Struct
    desc: struct.Struct
    desc_dtype: np.dtype[np.void]

    @property
    def endian(self) -> str:
        """The ``struct`` prefix."""
        return "<" if self.byteorder == "little" else ">"


_SUB_FORMATS = {
    "lp64": "QiiQQqQqQqQQQQ",  # 104 bytes
    "pack": "IiiIIqIqIqIQQQ",  # 80 bytes: i386 aligns 64-bit fields to 4
    "pad": "IiiII4xqI4xqI4xqI4xQQQ",  # 96 bytes: arm/mips align them to 8
}


_SUB_STRUCTS = [struct.Struct("<" + f) for f in _SUB_FORMATS.values()]


def layout_for(byteorder: ByteOrder, bits: int, variant: str | None = None) -> Layout:
    """The :class:`Layout` for a byte order and word size (32-bit: ``variant`` pack or pad)."""
    e = "<" if byteorder == "little" else ">"
    if bits == 64:
        variant = "lp64"
        header = struct.Struct(e + "8si390s6xqqIiiIIIIIIi")  # 464 bytes
    else:
        variant = variant or "pad"
        header = struct.Struct(e + "8si390s2xiiIiiIIIIIIi")  # 452 bytes
    dtype = np.dtype(
        [("offset", e + "i8"), ("size", e + "u4"), ("flags", e + "u4"), ("page_flags", e + "u8")]
    )
    return Layout(
        byteorder=byteorder,
        bits=bits,
        variant=variant,
        header=header,
        sub=struct.Struct(e + _SUB_FORMATS[variant]),
        desc=struct.Struct(e + "qIIQ"),
        desc_dtype=dtype,
    )


# utsname.machine values of 32-bit kernels (crash's and libkdumpfile's machine names)
_MACHINES_32 = ("i386", "i486", "i586", "i686", "arm", "armv7l", "mips", "ppc", "s390", "sh")


def _machine_bits(machine: str) -> int | None:
    if not machine:
        return None
    if machine in _MACHINES_32 or (machine.startswith("arm") and "64" not in machine):
        return 32
    if machine.startswith("mips") and "64" not in machine:
        return 32
    return 64


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _header_problem(h: DiskDumpHeader) -> str | None:
    """Why ``h`` cannot be a valid header (None when it looks right)."""
    if not _is_pow2(h.block_size) or not MIN_BLOCK_SIZE <= h.block_size <= MAX_BLOCK_SIZE:
        return (
            f"block_size {h.block_size} is not a power of two between "
            f"{MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"
        )
    if not 0 <= h.header_version <= 64:
        return f"header_version {h.header_version} is not a kdump header version"
    if h.sub_hdr_size < 0:
        return f"sub_hdr_size {h.sub_hdr_size} is negative"
    return None


def _probe_header(raw: bytes, path: str) -> tuple[Layout, DiskDumpHeader]:
    """Find the byte order and word size whose reading of the header is plausible."""
    candidates: list[tuple[Layout, DiskDumpHeader]] = []
    machine = Utsname.unpack(raw[12:402]).machine
    variant = "pack" if re.fullmatch(r"i[3-6]86", machine) else "pad"
    for byteorder in ("little", "big"):
        for bits in (64, 32):
            lay = layout_for(byteorder, bits, variant)
            if len(raw) >= lay.header.size:
                candidates.append((lay, DiskDumpHeader(*lay.header.unpack_from(raw))))
    if not candidates:
        raise TruncatedDumpError(
            f"the kdump header is truncated ({len(raw)} bytes, at least 452 needed)", path=path
        )
    want_bits = _machine_bits(machine)
    known = arch_for_name(machine)
    if known is not None:
        candidates.sort(key=lambda c: (c[0].bits != known.bits, c[0].byteorder != known.byteorder))
    elif want_bits is not None:
        candidates.sort(key=lambda c: c[0].bits != want_bits)
    good = [c for c in candidates if _header_problem(c[1]) is None]
    if not good:
        raise DumpFormatError(
            f"corrupt kdump header: {_header_problem(candidates[0][1])}", path=path
        )
    # among the plausible readings, prefer one whose bitmap covers max_mapnr
    for lay, h in good:
        if h.bitmap_blocks * h.block_size * 8 >= h.max_mapnr:
            return lay, h
    return good[0]


def pack_sub_header(layout: Layout, sub: SubHeader, version: int) -> bytes:
    """The sub-header bytes of a header ``version`` file (older versions are shorter)."""
    keep = _SUB_FIELDS_BY_VERSION[min(max(version, 0), HEADER_VERSION)]
    return layout.sub.pack(*sub)[: _SUB_FIELD_ENDS[layout.variant][keep - 1]]


def is_kdump(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a kdump-compressed or diskdump file."""
    return head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)


if hasattr(np, "bitwise_count"):

    def _popcount(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return np.bitwise_count(a)  # type: ignore[no-any-return]

else:  # numpy < 2.0
    _POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return _POP[a]  # type: ignore[no-any-return]


def section_ranks(bits: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Set bits before each 4096-pfn section: ``ranks[s]`` (one extra entry: the total)."""
    sect_bytes = SECTION_PFNS // 8
    nsect = (bits.size + sect_bytes - 1) // sect_bytes
    ranks = np.zeros(nsect + 1, dtype=np.int64)
    step = 1 << 12  # sections per batch: bounds the temporary popcount array to 2 MiB
    for s in range(0, nsect, step):
        chunk = bits[s * sect_bytes : (s + step) * sect_bytes]
        if chunk.size % sect_bytes:
            chunk = np.concatenate(
                [chunk, np.zeros(sect_bytes - chunk.size % sect_bytes, np.uint8)]
            )
        counts = _popcount(chunk).reshape(-1, sect_bytes).sum(axis=1, dtype=np.int64)
        ranks[s + 1 : s + 1 + counts.size] = counts
    np.cumsum(ranks, out=ranks)
    return ranks


class PageInOtherPartError(PageExcludedError):
    """A pfn that one part of a split dump does not hold: another part has it."""

    template = "pfn {pfn:#x} is in another part of this split dump (open all parts together)"


def _generic_arch(machine: str, byteorder: ByteOrder, bits: int, page_size: int) -> Arch:
    """An :class:`Arch` for a machine kdumper has no table entry for: pages only, no registers."""
    return Arch(
        name=machine or "unknown",
        e_machine=0,
        byteorder=byteorder,
        bits=bits,
        page_size=page_size,
        prstatus_size=0,
        prstatus_reg_offset=0,
        registers=(),
        pc_register="",
        sp_register="",
    )


def _guess_arch(notes: list[Note], byteorder: ByteOrder, bits: int) -> Arch | None:
    """The architecture whose NT_PRSTATUS size matches the notes (for an empty machine field)."""
    sizes = {len(n.desc) for n in notes if n.type == NT_PRSTATUS and n.name == "CORE"}
    for arch in ARCHES:
        if arch.byteorder == byteorder and arch.bits == bits and arch.prstatus_size in sizes:
            return arch
    return None


class KdumpDump(Dump):
    """A kdump-compressed file (``KDUMP   `` or ``DISKDUMP``), header versions 0–6.

    Pages are found through a prefix-popcount table over the 2nd bitmap (one entry per 4096
    pfns), so opening costs one pass over the bitmaps and each page one descriptor read.
    A part of a split set reads only its own pfn range (:class:`PageInOtherPartError` outside);
    ``kdumper.dump.split.SplitDump`` joins the parts.
    """

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.path = source.path
        self.warnings: list[str] = []
        self.format = "flattened-kdump" if isinstance(source, FlatSource) else "kdump"
        if isinstance(source, FlatSource) and source.problem:
            self.warnings.append(source.problem)
        head = source.pread_upto(0, 512)
        if not is_kdump(head):
            raise UnknownFormatError(
                f"not a kdump-compressed file (signature {head[:8]!r})", path=self.path
            )
        self.layout, self.header = _probe_header(head, self.path)
        h = self.header
        self.signature = h.signature
        self.block_size = bs = h.block_size
        self.page_size = bs
        self.header_version = h.header_version
        if h.header_version > HEADER_VERSION:
            self.warnings.append(
                f"header version {h.header_version} is newer than 6; read as version 6"
            )
        self.utsname = Utsname.unpack(h.utsname)
        self.sub = self._read_sub_header()
        self._read_max_mapnr()
        self._read_bitmaps()
        self.notes = self._read_notes()
        self.arch = self._pick_arch()
        self._init_descs()

    # ---- parsing -------------------------------------------------------------------------

    def _error(self, msg: str) -> DumpFormatError:
        return DumpFormatError(msg, path=self.path)

    def _read_sub_header(self) -> SubHeader:
        h, lay = self.header, self.layout
        if h.sub_hdr_size == 0 or (h.header_version == 0 and h.signature == DISKDUMP_SIGNATURE):
            return SubHeader()
        room = h.sub_hdr_size * self.block_size
        length = min(max(s.size for s in _SUB_STRUCTS), room)
        self.source.check_range(self.block_size, length, "kdump sub-header")
        raw = self.source.pread(self.block_size, length).ljust(128, b"\0")
        fields = list(lay.sub.unpack_from(raw))
        if lay.bits == 32 and h.header_version >= 3:
            # libkdumpfile's heuristic for i386 "pack" vs arm/mips "pad": the right one has its
            # offset_vmcoreinfo inside the sub-header blocks
            alt = layout_for(lay.byteorder, 32, "pad" if lay.variant == "pack" else "pack")
            alt_fields = list(alt.sub.unpack_from(raw))
            lo, hi = self.block_size, (1 + h.sub_hdr_size) * self.block_size
            if not lo < fields[5] <= hi and lo < alt_fields[5] <= hi:
                self.layout = lay = alt
                fields = alt_fields
        keep = _SUB_FIELDS_BY_VERSION[min(h.header_version, HEADER_VERSION)]
        fields[keep:] = [0] * (len(fields) - keep)
        return SubHeader(*fields)

    def _read_max_mapnr(self) -> None:
        h, sub = self.header, self.sub
        max_mapnr = h.max_mapnr
        if h.header_version >= 6:
            if sub.max_mapnr_64:
                max_mapnr = sub.max_mapnr_64
            else:
                self.warnings.append("max_mapnr_64 is 0; using the 32-bit max_mapnr")
        if max_mapnr > MAX_MAPNR:
            raise self._error(f"absurd max_mapnr {max_mapnr:#x} (more than 2^52 pages)")
        self.max_mapnr = max_mapnr
        self.split_range: tuple[int, int] | None = None
        if h.header_version >= 2 and sub.split:
            if h.header_version >= 6:
                start, end = sub.start_pfn_64, sub.end_pfn_64
            else:
                start, end = sub.start_pfn, sub.end_pfn
            if not 0 <= start <= end <= max_mapnr:
                raise self._error(
                    f"split part range [{start:#x}, {end:#x}) is outside [0, {max_mapnr:#x})"
                )
            self.split_range = (start, end)

    def _read_bitmaps(self) -> None:
        h, bs = self.header, self.block_size
        self.bitmap_offset = (1 + h.sub_hdr_size) * bs
        length = h.bitmap_blocks * bs
        need = (self.max_mapnr + 7) // 8
        need_blocks = (need + bs - 1) // bs
        if h.bitmap_blocks > 2 * need_blocks + 2:
            raise self._error(
                f"bitmap_blocks {h.bitmap_blocks} is far more than max_mapnr {self.max_mapnr:#x} "
                f"needs ({2 * need_blocks})"
            )
        self.source.check_range(self.bitmap_offset, length, "the bitmaps")
        if isinstance(self.source, FlatSource) and length > self.source.inner.size:
            # the records of a flattened file hold the bitmaps: they cannot be mostly holes
            raise TruncatedDumpError(
                f"the bitmaps ({length:#x} bytes) are larger than the whole flattened file",
                path=self.path,
            )
        raw = np.frombuffer(self.source.pread(self.bitmap_offset, length), dtype=np.uint8)
        max_pfn = self.max_mapnr
        if h.bitmap_blocks >= 2 * need_blocks:  # crash's dump_is_partial(): both bitmaps present
            half = length // 2
            present, dumped = raw[:half], raw[half:]
            self.two_bitmaps = True
        else:
            present = dumped = raw
            self.two_bitmaps = False
            if length * 8 < min(max_pfn, h.max_mapnr):  # libkdumpfile try_header() rejects it
                raise self._error(
                    f"the bitmap ({h.bitmap_blocks} blocks) covers {length * 8:#x} pfns but "
                    f"max_mapnr is {max_pfn:#x}"
                )
            if length * 8 < max_pfn:
                max_pfn = length * 8  # as libkdumpfile: clamp to what the bitmap covers
                self.warnings.append(
                    f"the bitmap covers only {max_pfn:#x} of {self.max_mapnr:#x} pfns; "
                    "pages above it are treated as absent"
                )
        self.max_pfn = max_pfn
        self._present = Bitmap(present, max_pfn)
        self._dumped = self._present if present is dumped else Bitmap(dumped, max_pfn)
        if self.two_bitmaps and bool(np.any(self._dumped.bits & ~self._present.bits)):
            self.warnings.append("the 2nd bitmap marks pages that the 1st bitmap says are not RAM")

    def _read_notes(self) -> list[Note]:
        h, sub, src = self.header, self.sub, self.source
        e = self.layout.endian
        if h.header_version >= 4 and sub.offset_note and sub.size_note:
            if sub.size_note > MAX_NOTES:
                raise self._error(f"absurd ELF note size {sub.size_note:#x}")
            src.check_range(sub.offset_note, sub.size_note, "the ELF notes")
            return parse_notes(src.pread(sub.offset_note, sub.size_note), e, self.path)
        if h.header_version >= 3 and sub.offset_vmcoreinfo and sub.size_vmcoreinfo:
            if sub.size_vmcoreinfo > MAX_NOTES:
                raise self._error(f"absurd VMCOREINFO size {sub.size_vmcoreinfo:#x}")
            src.check_range(sub.offset_vmcoreinfo, sub.size_vmcoreinfo, "the VMCOREINFO data")
            text = src.pread(sub.offset_vmcoreinfo, sub.size_vmcoreinfo)
            return [Note(VMCOREINFO_NOTE_NAME, 0, text, 0)]
        return []

    def _pick_arch(self) -> Arch:
        lay, machine = self.layout, self.utsname.machine
        arch = arch_for_name(machine)
        if arch is not None and arch.byteorder == lay.byteorder and arch.bits == lay.bits:
            return arch
        if not machine:
            guess = _guess_arch(self.notes, lay.byteorder, lay.bits)
            if guess is not None:
                self.warnings.append(f"utsname.machine is empty; {guess.name} guessed from notes")
                return guess
            if lay.byteorder == "little" and lay.bits == 64:
                self.warnings.append("utsname.machine is empty; assuming x86_64")
                return X86_64
        self.warnings.append(
            f"machine {machine!r} ({lay.bits}-bit {lay.byteorder}-endian) is not in kdumper's "
            "architecture table: pages are readable, registers are not"
        )
        return _generic_arch(machine, lay.byteorder, lay.bits, self.block_size)

    def _init_descs(self) -> None:
        h, bs, src = self.header, self.block_size, self.source
        self._dbits = self._dumped.bits
        self._dview = self._dbits.data
        self._ranks = section_ranks(self._dbits)
        self.num_dumpable = int(self._ranks[-1])  # the global count (a split part's table size)
        self.desc_offset = (1 + h.sub_hdr_size + h.bitmap_blocks) * bs
        self.data_offset = self.desc_offset + self.num_dumpable * DESC_SIZE
        start, end = self.split_range or (0, self.max_pfn)
        self._first_index = self._rank(min(start, self.max_pfn))
        self.num_descs = self._rank(min(end, self.max_pfn)) - self._first_index
        self.truncated = False
        table_end = self.desc_offset + self.num_descs * DESC_SIZE
        if self.num_descs and table_end > src.size:
            self.truncated = True
            lost = (table_end - max(src.size, self.desc_offset) + DESC_SIZE - 1) // DESC_SIZE
            self.warnings.append(
                f"the file is truncated: {lost} of {self.num_descs} page descriptors "
                "lie past its end"
            )
        elif self.num_descs:
            last = self._desc_at(self.num_descs - 1)
            if last[0] > 0 and last[0] + last[1] > src.size:
                self.truncated = True
                self.warnings.append(
                    "the file is truncated: the last page's data lies past its end"
                )
        # the shared zero page: the first data block, if it holds zeros (makedumpfile and QEMU
        # write it first when zero pages are excluded); every desc pointing there is a zero page
        self.zero_offset: int | None = None
        if self.data_offset + bs <= src.size and src.pread(self.data_offset, bs) == bytes(bs):
            self.zero_offset = self.data_offset

    # ---- lookup --------------------------------------------------------------------------

    def _rank(self, pfn: int) -> int:
        """Set bits of the 2nd bitmap below ``pfn``."""
        sect = pfn >> 12
        n = int(self._ranks[sect])
        lo, hi = sect << 9, pfn >> 3
        if hi > lo:
            n += int.from_bytes(self._dview[lo:hi], "little").bit_count()
        if pfn & 7:
            n += (int(self._dbits[hi]) & ((1 << (pfn & 7)) - 1)).bit_count()
        return n

    def _desc_at(self, index: int) -> tuple[int, int, int, int]:
        """The page_desc with index ``index`` within this file's table."""
        pos = self.desc_offset + index * DESC_SIZE
        raw = self.source.pread_upto(pos, DESC_SIZE)
        if len(raw) < DESC_SIZE:
            return (0, 0, 0, 0)  # past the end of a truncated file: lost
        return self.layout.desc.unpack(raw)  # type: ignore[return-value]

    def _desc_of(self, pfn: int) -> tuple[int, int, int, int]:
        if not 0 <= pfn < self.max_pfn or not self._present.test(pfn):
            raise PageNotPresentError(pfn)
        if not self._dumped.test(pfn):
            raise PageExcludedError(pfn)
        if self.split_range is not None and not self.split_range[0] <= pfn < self.split_range[1]:
            raise PageInOtherPartError(pfn)
        return self._desc_at(self._rank(pfn) - self._first_index)

    @property
    def incomplete(self) -> bool:
        """Whether pages may be missing: the header says so, or the file is cut short."""
        flag = (
            DISKDUMP_STATUS_INCOMPLETED
            if self.signature == DISKDUMP_SIGNATURE
            else STATUS_INCOMPLETE
        )
        cut = isinstance(self.source, FlatSource) and not self.source.complete
        return bool(self.header.status & flag) or self.truncated or cut

    def read_pfn(self, pfn: int) -> bytes:
        offset, size, flags, _ = self._desc_of(pfn)
        bs = self.block_size
        if offset == 0:
            raise PageIncompleteError(pfn)
        where = f"page descriptor of pfn {pfn:#x}"
        if offset < 0:
            raise self._error(f"{where} has a negative data offset {offset}")
        if size == 0 or size > bs:
            raise self._error(f"{where} has stored size {size} (block size {bs})")
        if offset + size > self.source.size:
            if self.incomplete:
                raise PageIncompleteError(pfn)
            raise TruncatedDumpError(
                f"data of pfn {pfn:#x} at {offset:#x} (+{size}) lies past the end of the file "
                f"({self.source.size:#x} bytes)",
                path=self.path,
            )
        data = self.source.pread(offset, size)
        if flags == 0:
            if size != bs:
                raise self._error(f"{where}: raw page of {size} bytes (page size {bs})")
            return data
        if flags & ~FLAGS_MASK or flags & (flags - 1):
            raise self._error(f"{where} has unknown compression flags {flags:#x}")
        try:
            return codec_for_flag(flags).decompress(data, bs)
        except CodecError as e:
            raise self._error(f"pfn {pfn:#x} (data at {offset:#x}): {e.fields['msg']}") from None

    def is_zero_pfn(self, pfn: int) -> bool:
        if self.zero_offset is None:
            return False
        try:
            offset, _, flags, _ = self._desc_of(pfn)
        except PageNotPresentError:
            return False
        return offset == self.zero_offset and flags == 0

    def iter_descs(self, chunk: int = 1 << 16) -> Iterator[npt.NDArray[np.void]]:
        """This file's page descriptors in pfn order, as numpy records, ``chunk`` at a time.

        Descriptors past the end of a truncated file come back zeroed (lost pages).
        """
        dt = self.layout.desc_dtype
        for first in range(0, self.num_descs, chunk):
            n = min(chunk, self.num_descs - first)
            raw = self.source.pread_upto(self.desc_offset + first * DESC_SIZE, n * DESC_SIZE)
            arr = np.zeros(n, dtype=dt)
            got = len(raw) // DESC_SIZE
            arr[:got] = np.frombuffer(raw[: got * DESC_SIZE], dtype=dt)
            yield arr

    def codec_counts(self) -> dict[str, int]:
        """Pages per storage kind; every descriptor is checked on the way (one table scan).

        Raises :class:`DumpFormatError` naming the first corrupt descriptor's pfn. In a dump
        marked incomplete, descriptors pointing past the end of the file count as incomplete.
        """
        counts: dict[str, int] = {}
        names = {0: "raw", FLAG_ZLIB: "zlib", FLAG_LZO: "lzo", FLAG_SNAPPY: "snappy"}
        names[FLAG_ZSTD] = "zstd"
        bs, fsize = self.block_size, self.source.size
        first = 0
        for arr in self.iter_descs(1 << 18):
            off = arr["offset"].astype(np.int64)
            size = arr["size"].astype(np.int64)
            flags = arr["flags"].astype(np.int64)
            past = (off > 0) & (off + size > fsize)
            lost = (off == 0) | (past if self.incomplete else False)
            bad = ~lost & (
                (off < 0)
                | past
                | (size == 0)
                | (size > bs)
                | ((flags & ~FLAGS_MASK) != 0)
                | ((flags & (flags - 1)) != 0)
                | ((flags == 0) & (size != bs))
            )
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                pfn = self._pfn_of_index(first + i)
                raise self._error(
                    f"page descriptor of pfn {pfn:#x} is corrupt (offset {int(off[i]):#x}, "
                    f"size {int(size[i])}, flags {int(flags[i]):#x}; file size {fsize:#x})"
                )
            zero = (off == (self.zero_offset or -1)) & (flags == 0)
            stored = ~lost & ~zero
            for kind, n in (("incomplete", lost.sum()), ("zero", zero.sum())):
                if n:
                    counts[kind] = counts.get(kind, 0) + int(n)
            vals, cnt = np.unique(flags[stored], return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist(), strict=True):
                counts[names[v]] = counts.get(names[v], 0) + c
            first += arr.size
        return counts

    def _pfn_of_index(self, index: int) -> int:
        """The pfn of this file's ``index``-th descriptor (the inverse of the rank lookup)."""
        target = self._first_index + index + 1  # set bits up to and including the pfn
        sect = int(np.searchsorted(self._ranks, target, side="left")) - 1
        base = sect * SECTION_PFNS
        window = self._dumped.window(base, base + SECTION_PFNS)
        return base + int(np.flatnonzero(window)[target - int(self._ranks[sect]) - 1])

    @property
    def present(self) -> Bitmap:
        return self._present

    @property
    def dumped(self) -> Bitmap:
        return self._dumped

    @cached_property
    def eraseinfo(self) -> bytes:
        """The eraseinfo text (v5+: what ``--config`` erased), empty when there is none."""
        sub = self.sub
        if self.header_version < 5 or not sub.offset_eraseinfo or not sub.size_eraseinfo:
            return b""
        if sub.size_eraseinfo > MAX_NOTES:
            raise self._error(f"absurd eraseinfo size {sub.size_eraseinfo:#x}")
        self.source.check_range(sub.offset_eraseinfo, sub.size_eraseinfo, "the eraseinfo")
        return self.source.pread(sub.offset_eraseinfo, sub.size_eraseinfo)

    def facts(self) -> DumpFacts:
        h, sub = self.header, self.sub
        extra: dict[str, object] = {
            "signature": h.signature.decode("ascii", "replace"),
            "block_size": self.block_size,
            "max_mapnr": self.max_mapnr,
            "num_dumpable": self.num_dumpable,
            "layout": f"{self.layout.bits}-bit {self.layout.byteorder}-endian "
            f"({self.layout.variant})",
        }
        if h.status & STATUS_EXCLUDED_VMEMMAP and h.signature == KDUMP_SIGNATURE:
            extra["excluded_vmemmap"] = True
        if isinstance(self.source, FlatSource):
            extra["flattened_records"] = self.source.records
        if self.truncated:
            extra["truncated"] = True
        if self.warnings:
            extra["warnings"] = list(dict.fromkeys(self.warnings))
        return DumpFacts(
            format=self.format,
            header_version=h.header_version,
            utsname=self.utsname,
            crash_time=h.tv_sec or None,
            nr_cpus=h.nr_cpus,
            dump_level=sub.dump_level if h.header_version >= 1 else None,
            status=h.status,
            compression=codec_for_status(h.status) if h.signature == KDUMP_SIGNATURE else None,
            incomplete=self.incomplete,
            phys_base=sub.phys_base,
            split=self.split_range,
            extra=extra,
        )

    def close(self) -> None:
        self._dview.release()
        self.source.close()


# ---- writer ----------------------------------------------------------------------------------


def encode_page(codec: Codec, page: bytes, zero: bytes | None) -> tuple[int, bytes | None]:
    """How the writer stores ``page``: ``(flags, payload)``; payload None = the shared zero page.

    ``zero`` is a page of zeros when zero pages are excluded, else None. A page that does not
    shrink is stored raw (flags 0), as makedumpfile does.
    """
    if zero is not None and page == zero:
        return 0, None
    if codec.flag == 0:
        return 0, page
    out = codec.compress(page)
    if len(out) >= len(page):
        return 0, page
    return codec.flag, out


def _note_offsets(notes_bytes: bytes, endian: str) -> tuple[int, int] | None:
    """(offset, size) of the VMCOREINFO desc inside the note bytes."""
    for note in parse_notes(notes_bytes, endian):
        if note.name == VMCOREINFO_NOTE_NAME:
            return note.desc_offset, len(note.desc)
    return None


def _default_utsname(dump: Dump) -> Utsname:
    if isinstance(dump, KdumpDump):
        return dump.utsname
    try:
        uts = dump.facts().utsname
    except KdumperError:  # a reader's facts() must not stop a write
        uts = None
    if uts is not None and uts.machine:
        return uts
    info = dump.vmcoreinfo
    release = info.osrelease if info is not None else None
    return Utsname(sysname="Linux", release=release or "", machine=dump.arch.name)


def _sane_utsname(uts: Utsname, dump: Dump) -> Utsname:
    """``uts`` with the fields readers insist on filled in.

    libkdumpfile (so drgn) ignores a utsname whose sysname is not "Linux" or whose release,
    version or machine is empty (``uts_looks_sane``), and then cannot tell the architecture.
    """
    return Utsname(
        sysname=uts.sysname or "Linux",
        nodename=uts.nodename,
        release=uts.release or "unknown",
        version=uts.version or "unknown",
        machine=uts.machine or dump.arch.name,
        domainname=uts.domainname,
    )


class KdumpWriter:
    """Writes one kdump-compressed file; :func:`write_kdump` drives it page by page.

    Call :meth:`begin`, then for each pfn of :meth:`pfn_chunks` in order one of
    :meth:`add_page` (the page's bytes), :meth:`add_encoded` (already compressed, e.g. by a
    thread pool with :func:`encode_page`) or :meth:`add_lost`, then :meth:`finish`.
    Descriptors are written before the data they point at, in chunks; on
    :class:`NoSpaceError` the descriptors whose data did not land are zeroed, the header gets
    the incomplete flag (seekable sinks) and the error is re-raised with ``.result`` set.
    """

    def __init__(
        self,
        sink: Sink,
        dump: Dump,
        *,
        pages: Bitmap | None = None,
        codec: str = "zlib",
        dump_level: int | None = None,
        exclude_zero: bool = True,
        utsname: Utsname | None = None,
        split_range: tuple[int, int] | None = None,
        desc_slots: int | None = None,
        flush_bytes: int = 1 << 20,
    ) -> None:
        self.sink = sink
        self.dump = dump
        self.codec = get_codec(codec)
        self.codec.available()
        arch = dump.arch
        self.layout = layout_for(
            arch.byteorder, arch.bits, "pack" if arch.e_machine == EM_386 else None
        )
        self.block_size = bs = dump.page_size
        if not _is_pow2(bs) or not MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE:
            raise DumpFormatError(f"page size {bs} cannot be a kdump block size", path=dump.path)
        self.max_mapnr = n = dump.max_pfn
        self.exclude_zero = exclude_zero
        self.zero = bytes(bs) if exclude_zero else None
        self.present = present = _fit(dump.present, n)
        chosen = _fit(dump.dumped, n) & present
        self.pages = chosen if pages is None else _fit(pages, n) & chosen
        self.is_split = split_range is not None
        self.range = split_range or (0, n)
        start, end = self.range
        if not 0 <= start <= end <= n:
            raise ValueError(f"split range {self.range} is outside [0, {n})")
        self.expected = self.pages.count(start, end)
        self.desc_slots = desc_slots if desc_slots is not None else self.pages.count()
        if self.desc_slots < self.expected:
            raise ValueError(f"desc_slots {self.desc_slots} < {self.expected} pages to write")
        facts = _facts(dump)
        level = dump_level if dump_level is not None else (facts.dump_level or 0)
        self.dump_level = (level & ~DUMP_LEVEL_ZERO) | (DUMP_LEVEL_ZERO if exclude_zero else 0)
        self.utsname = _sane_utsname(
            utsname if utsname is not None else _default_utsname(dump), dump
        )
        self.flush_bytes = flush_bytes
        self._build_headers(facts)
        # running state
        self._desc_pos = self.desc_offset
        self._data_pos = self.data_offset + (bs if exclude_zero else 0)
        self._data_flushed = self._data_pos
        # descriptors not written yet: single pages in the lists, batches as arrays (in order)
        self._offsets: list[int] = []
        self._sizes: list[int] = []
        self._flags: list[int] = []
        self._desc_parts: list[npt.NDArray[np.void]] = []
        self._pending = 0
        self._data: list[bytes] = []
        self._data_len = 0
        self.result = WriteResult(
            path=sink.name,
            format="flattened-kdump" if isinstance(sink, FlatSink) else "kdump",
            codec=self.codec.name,
        )
        self._lost = 0
        self._failed = False

    def _build_headers(self, facts: DumpFacts) -> None:
        dump, lay, bs = self.dump, self.layout, self.block_size
        e = lay.endian
        notes = build_notes(dump.notes, e) if dump.notes else b""
        info = dump.vmcoreinfo
        crashtime = phys_base = None
        if info is not None:
            with contextlib.suppress(DumpFormatError):  # a malformed value: use the fallback
                crashtime = info.crashtime
            with contextlib.suppress(DumpFormatError):
                phys_base = info.number("phys_base")
        if crashtime is None:
            crashtime = facts.crash_time or 0
        if phys_base is None:
            phys_base = facts.phys_base or 0
        nr_cpus = sum(1 for n in dump.notes if n.type == NT_PRSTATUS and n.name == "CORE")
        offset_note = bs + lay.sub.size if notes else 0
        vmci = _note_offsets(notes, e) if notes else None
        self.sub_hdr_size = -(-(lay.sub.size + len(notes)) // bs)
        self.bitmap_len = -(-((self.max_mapnr + 7) // 8) // bs) * bs  # each bitmap
        self.bitmap_blocks = 2 * self.bitmap_len // bs
        self.bitmap_offset = (1 + self.sub_hdr_size) * bs
        self.desc_offset = self.bitmap_offset + 2 * self.bitmap_len
        self.data_offset = self.desc_offset + self.desc_slots * DESC_SIZE
        self.status = self.codec.flag
        self._header_fields = DiskDumpHeader(
            signature=KDUMP_SIGNATURE,
            header_version=HEADER_VERSION,
            utsname=self.utsname.pack(),
            tv_sec=_wrap_signed(crashtime, lay.bits),
            tv_usec=0,
            status=self.status,
            block_size=bs,
            sub_hdr_size=self.sub_hdr_size,
            bitmap_blocks=self.bitmap_blocks,
            max_mapnr=min(self.max_mapnr, 0xFFFFFFFF),
            total_ram_blocks=0,
            device_blocks=0,
            written_blocks=0,
            current_cpu=0,
            nr_cpus=max(nr_cpus, 1),
        )
        start, end = self.range if self.is_split else (0, 0)
        word = (1 << lay.bits) - 1
        self.sub = SubHeader(
            phys_base=phys_base & word,
            dump_level=self.dump_level,
            split=1 if self.is_split else 0,
            start_pfn=min(start, 0xFFFFFFFF),
            end_pfn=min(end, 0xFFFFFFFF),
            offset_vmcoreinfo=offset_note + vmci[0] if vmci else 0,
            size_vmcoreinfo=vmci[1] if vmci else 0,
            offset_note=offset_note,
            size_note=len(notes),
            start_pfn_64=start,
            end_pfn_64=end,
            max_mapnr_64=self.max_mapnr,
        )
        self._notes = notes

    def header_bytes(self) -> bytes:
        """The disk_dump_header as it stands (status included)."""
        return self.layout.header.pack(*self._header_fields._replace(status=self.status))

    def _write(self, offset: int, data: bytes | memoryview) -> None:
        self.sink.write_at(offset, data)
        self.result.bytes_out = max(self.result.bytes_out, offset + len(data))

    def begin(self) -> None:
        """Write the headers, notes, both bitmaps and the shared zero page.

        In a seekable sink the header carries the incomplete flag until :meth:`finish`: a
        writer killed midway (SIGKILL, a hung target, power loss) leaves a file that every
        reader flags as cut short rather than one that claims to be whole.
        """
        bs, lay = self.block_size, self.layout
        try:
            status = self.status | (STATUS_INCOMPLETE if self.sink.seekable else 0)
            header = lay.header.pack(*self._header_fields._replace(status=status))
            self._write(0, header.ljust(bs, b"\0"))
            sub = lay.sub.pack(*self.sub) + self._notes
            self._write(bs, sub.ljust(self.sub_hdr_size * bs, b"\0"))
            self._write_bitmap(self.bitmap_offset, self.present)
            self._write_bitmap(self.bitmap_offset + self.bitmap_len, self.pages)
            if self.exclude_zero:
                self._write(self.data_offset, bytes(bs))
        except NoSpaceError as e:
            self._fail(e, [])
            raise

    def _write_bitmap(self, offset: int, bm: Bitmap) -> None:
        view = bm.bits.data
        step = 1 << 20
        for pos in range(0, len(view), step):
            self._write(offset + pos, view[pos : pos + step])
        pad = self.bitmap_len - len(view)
        if pad > 0:
            self._write(offset + len(view), bytes(pad))

    def pfn_chunks(self, chunk: int = 1 << 20) -> Iterator[npt.NDArray[np.int64]]:
        """The pfns to add, ascending, as arrays of at most ``chunk`` pfn space each."""
        start, end = self.range
        for lo in range(start, end, chunk):
            pfns = self.pages.pfns(lo, min(lo + chunk, end))
            if pfns.size:
                yield pfns

    def add_page(self, page: bytes) -> None:
        """Add the next page: zero check, compress, raw fallback."""
        self.result.bytes_in += len(page)
        self.add_encoded(*encode_page(self.codec, page, self.zero))

    def add_encoded(self, flags: int, payload: bytes | None) -> None:
        """Add the next page in stored form (see :func:`encode_page`)."""
        if payload is None:
            self._offsets.append(self.data_offset)
            self._sizes.append(self.block_size)
            self._flags.append(0)
            self.result.zero_pages += 1
        else:
            self._offsets.append(self._data_pos)
            self._sizes.append(len(payload))
            self._flags.append(flags)
            self._data.append(payload)
            self._data_pos += len(payload)
            self._data_len += len(payload)
            if flags == 0 and self.codec.flag:
                self.result.raw_pages += 1
        self.result.pages += 1
        self._pending += 1
        if self._data_len >= self.flush_bytes or self._pending >= 1 << 15:
            self._flush()

    def add_encoded_batch(
        self,
        sizes: npt.NDArray[np.int64],
        flags: npt.NDArray[np.uint32],
        data: bytes | memoryview,
        zero: npt.NDArray[np.bool_] | None = None,
        lost: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """Add the next ``len(sizes)`` pages at once (the collector's fast path).

        Page ``i`` is a shared zero page where ``zero[i]``, lost where ``lost[i]``, else
        ``sizes[i]`` bytes of ``data`` (payloads back to back, in order) stored with
        ``flags[i]``, exactly as :meth:`add_encoded` would record them one by one.
        """
        count = int(sizes.size)
        if not count:
            return
        stored = np.ones(count, np.bool_)
        if zero is not None:
            stored &= ~zero
        if lost is not None:
            stored &= ~lost
        lengths = np.where(stored, sizes, 0).astype(np.int64)
        ends = np.cumsum(lengths)
        if int(ends[-1]) != len(data):
            raise ValueError(f"batch payloads are {len(data)} bytes, sizes say {int(ends[-1])}")
        offsets = self._data_pos + ends - lengths
        desc_sizes = lengths
        desc_flags = np.where(stored, flags, 0).astype(np.int64)
        if zero is not None and zero.any():
            zero_here = zero & ~lost if lost is not None else zero
            offsets = np.where(zero_here, self.data_offset, offsets)
            desc_sizes = np.where(zero_here, self.block_size, desc_sizes)
            self.result.zero_pages += int(np.count_nonzero(zero_here))
        if lost is not None and lost.any():
            offsets = np.where(lost, 0, offsets)
            self._lost += int(np.count_nonzero(lost))
        self._seal_singles()
        self._desc_parts.append(self._make_descs(offsets, desc_sizes, desc_flags))
        self._pending += count
        if len(data):
            self._data.append(data)  # type: ignore[arg-type]  # joined by _flush
            self._data_pos += len(data)
            self._data_len += len(data)
        if self.codec.flag:
            self.result.raw_pages += int(np.count_nonzero(stored & (desc_flags == 0)))
        self.result.pages += count
        if self._data_len >= self.flush_bytes or self._pending >= 1 << 15:
            self._flush()

    def add_lost(self) -> None:
        """Add the next page as lost (descriptor offset 0: readers report it incomplete)."""
        self._offsets.append(0)
        self._sizes.append(0)
        self._flags.append(0)
        self._lost += 1
        self.result.pages += 1
        self._pending += 1

    def _make_descs(self, offsets: _Ints, sizes: _Ints, flags: _Ints) -> npt.NDArray[np.void]:
        arr = np.zeros(len(offsets), dtype=self.layout.desc_dtype)
        arr["offset"] = offsets
        arr["size"] = sizes
        arr["flags"] = flags
        return arr

    def _seal_singles(self) -> None:
        """The single pages added so far become one array part (batches keep them in order)."""
        if self._offsets:
            self._desc_parts.append(self._make_descs(self._offsets, self._sizes, self._flags))
            self._offsets, self._sizes, self._flags = [], [], []

    def _descs(self) -> npt.NDArray[np.void]:
        self._seal_singles()
        parts = self._desc_parts
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @property
    def buffered(self) -> bool:
        """Whether page data handed to :meth:`add_encoded_batch` is held, not yet written."""
        return bool(self._data)

    def flush(self) -> None:
        """Write what is buffered now (so the caller may reuse the buffers it handed in)."""
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        descs = self._descs()
        # the collector's batches (add_encoded_batch: a few chunks of hundreds of KiB) are
        # written as they are: joining them first would copy every byte of the dump once more;
        # single pages (add_encoded) are joined into one write
        chunks = self._data if len(self._data) <= _DIRECT_CHUNKS else [b"".join(self._data)]
        try:
            self._write(self._desc_pos, descs.tobytes())
        except NoSpaceError as e:
            # part of this chunk may be on disk pointing at data that will never be written
            self._fail(e, [(self._desc_pos, descs, 0)])
            raise
        pos = self._data_flushed
        try:
            for chunk in chunks:
                if len(chunk):
                    self._write(pos, chunk)
                    pos += len(chunk)
        except NoSpaceError as e:
            self._fail(e, [(self._desc_pos, descs, self._data_flushed)])
            raise
        self._desc_pos += descs.nbytes
        self._data_flushed = pos
        self._offsets, self._sizes, self._flags, self._data = [], [], [], []
        self._desc_parts, self._pending = [], 0
        self._data_len = 0

    def _fail(self, err: NoSpaceError, chunks: list[tuple[int, npt.NDArray[np.void], int]]) -> None:
        """Out of space: zero descriptors whose data is lost, flag the header, attach the result."""
        self._failed = True
        self.result.incomplete = True
        for pos, descs, lost_from in chunks:
            lost = descs["offset"] >= lost_from if lost_from else np.ones(descs.size, bool)
            if self.exclude_zero:
                lost &= descs["offset"] != self.data_offset  # the zero page landed long ago
            lost_count = int(lost.sum())
            descs[lost] = np.zeros(1, dtype=descs.dtype)
            self.result.pages -= lost_count
            with contextlib.suppress(Exception):
                self.sink.write_at(pos, descs.tobytes())
        self.status |= STATUS_INCOMPLETE
        if self.sink.seekable:
            with contextlib.suppress(Exception):
                self.sink.write_at(0, self.header_bytes())
        err.result = self.result  # type: ignore[attr-defined]

    def finish(self) -> WriteResult:
        """Flush what is buffered, check the page count, mark the header if pages were lost."""
        try:
            self._flush()
            if self._lost:
                self.status |= STATUS_INCOMPLETE
                self.result.incomplete = True
            if self._lost or self.sink.seekable:
                self._write(0, self.header_bytes())  # the final status (see begin)
        except NoSpaceError as e:
            if not self._failed:
                self._fail(e, [])
            raise
        written = (self._desc_pos - self.desc_offset) // DESC_SIZE
        if written != self.expected:
            raise ValueError(f"the writer was given {written} pages, expected {self.expected}")
        return self.result


_Ints = Sequence[int] | npt.NDArray[np.int64]

#: at most this many buffered payload chunks are written one by one instead of joined
_DIRECT_CHUNKS = 8


def _wrap_signed(value: int, bits: int) -> int:
    """``value`` as a C signed integer of ``bits`` bits would hold it."""
    half = 1 << (bits - 1)
    return (value + half) % (1 << bits) - half


def _fit(bm: Bitmap, nbits: int) -> Bitmap:
    """``bm`` with exactly ``nbits`` bits (cut or zero-extended; ``bm`` is left alone)."""
    return bm if bm.nbits == nbits else Bitmap(bm.bits[: (nbits + 7) // 8].copy(), nbits)


def _facts(dump: Dump) -> DumpFacts:
    try:
        return dump.facts()
    except KdumperError:  # a reader's facts() must not stop a write
        return DumpFacts(format="unknown")


def write_kdump(
    sink: Sink,
    dump: Dump,
    *,
    pages: Bitmap | None = None,
    codec: str = "zlib",
    dump_level: int | None = None,
    exclude_zero: bool = True,
    utsname: Utsname | None = None,
    split_range: tuple[int, int] | None = None,
    desc_slots: int | None = None,
) -> WriteResult:
    """Write ``dump`` as a kdump-compressed file into ``sink``, laid out as makedumpfile does.

    ``pages`` (default ``dump.dumped``) chooses the pages kept; zero pages share one stored page
    when ``exclude_zero``. ``split_range``/``desc_slots`` make one part of a split set. A page
    the source lost (``PageIncompleteError``) is recorded as lost and the file marked incomplete.
    The sink is not finished here: the caller calls ``sink.finish()`` (or uses it as a context
    manager). On :class:`NoSpaceError` the file stays readable, marked incomplete, and the error
    is re-raised (its ``result`` attribute holds the :class:`WriteResult` so far).
    """
    w = KdumpWriter(
        sink,
        dump,
        pages=pages,
        codec=codec,
        dump_level=dump_level,
        exclude_zero=exclude_zero,
        utsname=utsname,
        split_range=split_range,
        desc_slots=desc_slots,
    )
    w.begin()
    read = dump.read_pfn
    add = w.add_page
    for chunk in w.pfn_chunks():
        for pfn in chunk.tolist():
            try:
                page = read(pfn)
            except PageIncompleteError:
                w.add_lost()
                continue
            add(page)
    return w.finish()
