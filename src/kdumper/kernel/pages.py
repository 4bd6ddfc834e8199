"""Page classification from the crashed kernel's ``struct page`` array (makedumpfile's ``-d``).

The mem_map is found from ``SYMBOL(mem_section)`` (SPARSEMEM_EXTREME or plain SPARSEMEM; with
SPARSEMEM_VMEMMAP every section decodes to the same virtual ``vmemmap`` base) and read in fixed
pfn windows, translated once per page-table leaf. Each window's ``struct page`` records are parsed
as one numpy structured array into level-independent :class:`PageFeatures`; a
:class:`LevelFilter` then applies makedumpfile's ``__exclude_unnecessary_pages`` decision chain
for one dump level (first match wins, a free block or compound page excludes its whole range and
the pages inside it are not examined, a range may run on into the next window).

The kernel-version differences are picked once per dump in :func:`page_layout` from the
VMCOREINFO keys that exist; each variant names the kernel release that made it necessary. A
layout that is not recognised raises :class:`UnknownLayoutError`: the caller then keeps every page
but the zero ones (never drops a page it cannot classify), and says so.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import field
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from ..dump.base import Dump
from ..dump.vmcoreinfo import VmcoreInfo
from ..errors import KdumperError, UnsupportedError
from ..records import record
from .memory import KernelMemory, kernel_memory

# 64 Ki pfns = 256 MiB of RAM = 4 MiB of struct page per window: large reads, bounded memory.
# A multiple of makedumpfile's PGMM_CACHED (512), so "a compound head is never the last struct
# page of a batch" holds here too. (Each window costs the collector a round trip to a worker:
# 32 Ki windows made a 64 GiB synthetic guest's save 10 ms slower; and parsing a window in
# 32 Ki pieces, for the CPU cache, gained a worker 0.5 ms of 15 on a 4 GiB guest.)
WINDOW_PFNS = 1 << 16
_SECTION_MARKED_PRESENT = 1
_PAGE_MAPPING_ANON = 1
# Newest kernel whose struct page rules were checked here (makedumpfile's LATEST_VERSION is 7.0;
# its 7.1 fix is the compound_info rename, handled below). Newer kernels get a warning.
NEWEST_KNOWN = (7, 1)
OLDEST_KNOWN = (4, 16)  # u8 compound_order/dtor (4.16); older layouts are not modelled

ReadPhys = Callable[[int, int], bytes]
Bools = npt.NDArray[np.bool_]


class PageClass(IntFlag):
    """Why a page is excluded: the ``-d`` bit that excludes it (HWPOISON/OFFLINE always)."""

    KEEP = 0
    ZERO = 1  # decided from the page contents, not from struct page
    CACHE = 2  # page cache without PG_private (-d 2 or 4)
    CACHE_PRIVATE = 4  # page cache with PG_private (-d 4)
    USER = 8  # anonymous pages and hugetlbfs pages (-d 8)
    FREE = 16  # buddy allocator free pages and unaccepted memory (-d 16)
    HWPOISON = 32  # always excluded: reading them can machine-check
    OFFLINE = 64  # always excluded: logically offline (balloon, virtio-mem)


ALWAYS_EXCLUDED = PageClass.HWPOISON | PageClass.OFFLINE
CLASS_NAMES: dict[int, str] = {
    PageClass.CACHE: "cache",
    PageClass.CACHE_PRIVATE: "cache_private",
    PageClass.USER: "user",
    PageClass.FREE: "free",
    PageClass.HWPOISON: "hwpoison",
    PageClass.OFFLINE: "offline",
}


class UnknownLayoutError(UnsupportedError):
    """The kernel's ``struct page`` layout is not one kdumper knows: pages cannot be classified."""


def parse_release(release: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a kernel release string such as ``6.1.0-28-cloud-amd64``."""
    m = re.match(r"\s*(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


@record(frozen=True)
class PageLayout:
    """Where the fields of ``struct page`` are and how this kernel marks page kinds."""

    variant: str  # human name of the rules chosen, with the kernel releases they cover
    size: int
    flags: int
    mapping: int
    private: int | None
    mapcount: int | None
    compound_head: int  # 7.1 renamed it compound_info (same meaning: bit 0 marks a tail)
    pg_lru: int
    pg_private: int
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None  # before 6.10
    pg_hwpoison: int | None
    pg_buddy: int | None  # very old kernels (page_is_buddy_v2)
    head_mask: int
    buddy_type: int | None  # PAGE_BUDDY_MAPCOUNT_VALUE as a u32
    slab_type: int | None  # PAGE_SLAB_MAPCOUNT_VALUE (6.10+)
    offline_type: int | None  # PAGE_OFFLINE_MAPCOUNT_VALUE (5.0+)
    unaccepted_type: int | None  # PAGE_UNACCEPTED_MAPCOUNT_VALUE (6.16+)
    hugetlb_type: int | None  # PAGE_HUGETLB_MAPCOUNT_VALUE (6.9+)
    pg_hugetlb: int | None  # NUMBER(PG_hugetlb), 6.6–6.8 (a bit in folio._flags_1)
    order_source: str  # "flags1" (6.6+), "field" (4.16–6.5), "none"
    order_offset: int | None  # byte offset of compound_order inside tail page 1 ("field")
    dtor_offset: int | None  # byte offset of compound_dtor inside tail page 1 ("field")
    hugetlb_dtor: int | None  # NUMBER(HUGETLB_PAGE_DTOR) (4.4–6.5)
    max_order: int  # LENGTH(zone.free_area): NR_PAGE_ORDERS
    type_top_byte: bool  # 6.12+: a page type is the top byte of page_type (PGTY_x << 24)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def detects_free(self) -> bool:
        """Whether free (buddy) pages can be told from struct page alone."""
        return self.private is not None and (
            (self.buddy_type is not None and self.mapcount is not None) or self.pg_buddy is not None
        )

    def dtype(self) -> np.dtype[np.void]:
        """A numpy structured dtype for one ``struct page`` (the fields used here)."""
        names = ["flags", "mapping", "head"]
        formats = ["<u8", "<u8", "<u8"]
        offsets = [self.flags, self.mapping, self.compound_head]
        for name, off, fmt in (
            ("private", self.private, "<u8"),
            ("mapcount", self.mapcount, "<u4"),
        ):
            if off is not None:
                names.append(name)
                formats.append(fmt)
                offsets.append(off)
        return np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": self.size}
        )


def _u32(value: int | None) -> int | None:
    return None if value is None else value & 0xFFFFFFFF


def _type_form(value: int) -> str | None:
    """How a page-type marker is encoded: "bit" (~PG_x, 4.18–6.11), "top" (PGTY_x<<24, 6.12+)."""
    inverted = ~value & 0xFFFFFFFF
    if inverted and inverted & (inverted - 1) == 0:
        return "bit"  # exactly one bit clear: ~PG_buddy, ~PG_offline, ...
    if value & 0x00FFFFFF == 0 and 0x80 <= value >> 24 < 0xFF:
        return "top"
    return None


def page_layout(info: VmcoreInfo) -> PageLayout:
    """The ``struct page`` rules of this kernel; :class:`UnknownLayoutError` if not recognised."""
    missing = [
        key
        for key in (
            "SIZE(page)",
            "OFFSET(page.flags)",
            "OFFSET(page.mapping)",
            "NUMBER(PG_lru)",
            "NUMBER(PG_private)",
            "NUMBER(PG_head_mask)",
        )
        if key not in info
    ]
    # 7.1 (d50569612c29 "mm: rename the 'compound_head' field ... to 'compound_info'")
    head_off = info.offset("page", "compound_head")
    if head_off is None:
        head_off = info.offset("page", "compound_info")
    if head_off is None:
        missing.append("OFFSET(page.compound_head) or OFFSET(page.compound_info)")
    pg_slab = info.number("PG_slab")
    slab_type = _u32(info.number("PAGE_SLAB_MAPCOUNT_VALUE"))
    if pg_slab is None and slab_type is None:
        missing.append("NUMBER(PG_slab) or NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)")
    if missing:
        raise UnknownLayoutError(
            "unknown struct page layout: VMCOREINFO lacks " + ", ".join(missing)
        )
    size = info.size("page")
    flags = info.offset("page", "flags")
    mapping = info.offset("page", "mapping")
    lru = info.number("PG_lru")
    private_bit = info.number("PG_private")
    head_mask = info.number("PG_head_mask")
    assert size is not None and flags is not None and mapping is not None
    assert lru is not None and private_bit is not None and head_mask is not None
    assert head_off is not None
    for name, off, width in (("flags", flags, 8), ("mapping", mapping, 8), ("head", head_off, 8)):
        if off < 0 or off + width > size:
            raise UnknownLayoutError(f"unknown struct page layout: {name} at {off} of {size}")
    release = parse_release(info.osrelease)
    if release is not None and release < OLDEST_KNOWN:
        raise UnknownLayoutError(
            f"kernel {info.osrelease}: struct page layouts before 4.16 are not supported"
        )
    warnings: list[str] = []
    if release is not None and release > NEWEST_KNOWN:
        warnings.append(
            f"kernel {info.osrelease} is newer than the newest struct page layout kdumper knows "
            f"({NEWEST_KNOWN[0]}.{NEWEST_KNOWN[1]}); classifying by that layout's rules"
        )
    mapcount = info.offset("page", "_mapcount")
    private = info.offset("page", "private")
    buddy = _u32(info.number("PAGE_BUDDY_MAPCOUNT_VALUE"))
    typed = [
        v
        for v in (
            buddy,
            slab_type,
            _u32(info.number("PAGE_OFFLINE_MAPCOUNT_VALUE")),
            _u32(info.number("PAGE_HUGETLB_MAPCOUNT_VALUE")),
            _u32(info.number("PAGE_UNACCEPTED_MAPCOUNT_VALUE")),
        )
        if v is not None
    ]
    forms = {_type_form(v) for v in typed}
    if None in forms or len(forms) > 1:
        raise UnknownLayoutError(
            "unknown struct page layout: page type markers "
            + ", ".join(f"{v:#x}" for v in typed)
            + " are neither ~PG_x (4.18-6.11) nor PGTY_x << 24 (6.12+)"
        )
    # 6.12 (4ffca5a96678 "mm: support only one page_type per page"): the type is the top byte and
    # the kernel may use the low 24 bits; compare the top byte only.
    type_top_byte = forms == {"top"}
    hugetlb_type = _u32(info.number("PAGE_HUGETLB_MAPCOUNT_VALUE"))
    pg_hugetlb = info.number("PG_hugetlb")
    order_offset = dtor_offset = None
    if hugetlb_type is not None or pg_hugetlb is not None:
        # 6.6 (ebc1baf5c9b4 "mm: free up a word in the first tail page"): the order is the low
        # byte of folio._flags_1 (tail page 1's flags); hugetlb: PG_hugetlb there (6.6–6.8) or a
        # page type on the head (6.9, d99e3140a4d3 "mm: turn folio_test_hugetlb into a PageType")
        order_source = "flags1"
    elif info.offset("folio", "_folio_order") is not None:
        # 6.3 (1c5509be58f6 "mm: remove 'First tail page' members from struct page")
        order_source = "field"
        order_offset = (info.offset("folio", "_folio_order") or 0) - size
        dtor = info.offset("folio", "_folio_dtor")
        dtor_offset = dtor - size if dtor is not None else None
    elif info.offset("page", "compound_order") is not None:
        # 4.16–6.2: u8 page.compound_order / compound_dtor of tail page 1
        order_source = "field"
        order_offset = info.offset("page", "compound_order")
        dtor_offset = info.offset("page", "compound_dtor")
    else:
        order_source = "none"
        warnings.append(
            "compound page orders are not exported: only the head page of a large folio is "
            "excluded, and hugetlb pages are kept"
        )
    for name, where in (("compound_order", order_offset), ("compound_dtor", dtor_offset)):
        if where is not None and not 0 <= where < size:
            raise UnknownLayoutError(f"unknown struct page layout: {name} at {where} of {size}")
    if mapcount is not None and not 0 <= mapcount <= size - 4:
        raise UnknownLayoutError(f"unknown struct page layout: _mapcount at {mapcount}")
    if private is not None and not 0 <= private <= size - 8:
        raise UnknownLayoutError(f"unknown struct page layout: private at {private}")
    layout = PageLayout(
        variant=_variant_name(
            type_top_byte,
            slab_type is not None,
            hugetlb_type is not None,
            pg_hugetlb is not None,
            info.offset("folio", "_folio_order") is not None,
            info.offset("page", "compound_info") is not None,
            info.number("PAGE_UNACCEPTED_MAPCOUNT_VALUE") is not None,
        ),
        size=size,
        flags=flags,
        mapping=mapping,
        private=private,
        mapcount=mapcount,
        compound_head=head_off,
        pg_lru=lru,
        pg_private=private_bit,
        pg_swapcache=info.number("PG_swapcache"),
        pg_swapbacked=info.number("PG_swapbacked"),
        pg_slab=pg_slab,
        pg_hwpoison=info.number("PG_hwpoison"),
        pg_buddy=info.number("PG_buddy"),
        head_mask=head_mask,
        buddy_type=buddy,
        slab_type=slab_type,
        offline_type=_u32(info.number("PAGE_OFFLINE_MAPCOUNT_VALUE")),
        unaccepted_type=_u32(info.number("PAGE_UNACCEPTED_MAPCOUNT_VALUE")),
        hugetlb_type=hugetlb_type,
        pg_hugetlb=pg_hugetlb,
        order_source=order_source,
        order_offset=order_offset,
        dtor_offset=dtor_offset,
        hugetlb_dtor=info.number("HUGETLB_PAGE_DTOR"),
        max_order=info.length("zone.free_area") or 11,
        type_top_byte=type_top_byte,
        warnings=tuple(warnings),
    )
    if not layout.detects_free:
        # makedumpfile then walks the zones' free lists; kdumper keeps free pages instead
        warnings.append(
            "free pages cannot be recognised (no PAGE_BUDDY_MAPCOUNT_VALUE/PG_buddy, _mapcount or "
            "private): -d 16 keeps them"
        )
        layout = PageLayout(**{**layout.__dict__, "warnings": tuple(warnings)})
    return layout


def _variant_name(
    top: bool, slab_type: bool, hugetlb_type: bool, pg_hugetlb: bool, folio: bool, info: bool,
    unaccepted: bool,
) -> str:  # fmt: skip
    """The newest kernel rule set these VMCOREINFO keys imply."""
    if info:
        return "7.1+ (compound_info)"
    if unaccepted:
        return "6.16+ (unaccepted memory type)"
    if top:
        return "6.12+ (one page type per page, PGTY_x << 24)"
    if slab_type:
        return "6.10-6.11 (slab as a page type)"
    if hugetlb_type:
        return "6.9 (hugetlb as a page type)"
    if pg_hugetlb:
        return "6.6-6.8 (order in folio._flags_1, PG_hugetlb)"
    if folio:
        return "6.3-6.5 (folio._folio_order/_folio_dtor)"
    return "4.16-6.2 (page.compound_order/compound_dtor)"


class MemMap:
    """Locates the ``struct page`` of every pfn through ``mem_section`` and reads them in bulk.

    ``read_phys`` reads physical memory (default ``dump.read_phys``); pass a bulk reader to make
    the big struct page reads cheap.
    """

    def __init__(
        self,
        dump: Dump,
        mem: KernelMemory,
        layout: PageLayout,
        read_phys: ReadPhys | None = None,
    ) -> None:
        info = mem.info
        self.dump, self.mem, self.layout = dump, mem, layout
        self.read_phys: ReadPhys = read_phys or bulk_reader(dump)
        # scattered small reads (free block heads) in one call when the dump is read directly
        self._read_many = dump.read_phys_many if read_phys is None else None
        # and the runs of struct pages straight into the window's array, when the format can
        # (an ELF vmcore: a copy less of the mem_map; a 4 GiB guest's reads 15.5 -> 13.8 ms)
        self._read_into: Callable[[int, memoryview], None] | None = (
            getattr(dump, "read_phys_into", None) if read_phys is None else None
        )
        root = info.symbol("mem_section")
        bits = info.number("SECTION_SIZE_BITS")
        sec_size = info.size("mem_section")
        map_off = info.offset("mem_section", "section_mem_map")
        if root is None or bits is None or sec_size is None or map_off is None:
            raise UnsupportedError(
                f"{dump.path}: VMCOREINFO lacks the SPARSEMEM mem_section entries "
                "(FLATMEM and DISCONTIGMEM kernels are not supported)"
            )
        page_shift = dump.page_size.bit_length() - 1
        if bits <= page_shift or sec_size < map_off + 8:
            raise UnsupportedError(f"{dump.path}: VMCOREINFO mem_section entries are inconsistent")
        self.pfn_shift = bits - page_shift
        nr_sections = (dump.max_pfn + (1 << self.pfn_shift) - 1) >> self.pfn_shift
        # SPARSEMEM_EXTREME when LENGTH(mem_section) is the number of roots of page_size /
        # SIZE(mem_section) sections each, or missing (makedumpfile get_mem_type())
        length = info.length("mem_section")
        max_bits = info.number("MAX_PHYSMEM_BITS")
        per_root = dump.page_size // sec_size
        extreme = True
        if length is not None and max_bits is not None and max_bits > bits:
            all_sections = 1 << (max_bits - bits)
            extreme = length == -(-all_sections // per_root)
        coded: dict[int, int] = {}
        if extreme:
            nr_roots = -(-nr_sections // per_root)
            roots = struct.unpack(f"<{nr_roots}Q", mem.read(root, 8 * nr_roots))
            for r, root_addr in enumerate(roots):
                if not root_addr:
                    continue
                count = min(per_root, nr_sections - r * per_root)
                try:
                    raw = mem.read(root_addr, count * sec_size)
                except KdumperError:
                    continue
                self._decode(raw, sec_size, map_off, r * per_root, count, coded)
        else:  # plain SPARSEMEM: one static array of struct mem_section
            self._decode(mem.read(root, nr_sections * sec_size), sec_size, map_off, 0,
                         nr_sections, coded)  # fmt: skip
        self.sections = coded  # section nr -> coded mem_map (pre-biased by -start_pfn)
        # The coded pointer is aligned to min(page size, start pfn * sizeof(page)) (mmzone.h:
        # "mem_map - section_nr_to_pfn(pnum)"); every low bit below that is a section flag, so
        # clear them all rather than makedumpfile's fixed 5 (robust to new SECTION_* flags).
        ctz = (layout.size & -layout.size).bit_length() - 1
        self._map_mask = ~((1 << max(5, min(page_shift, self.pfn_shift + ctz))) - 1)
        self._map_mask &= (1 << 64) - 1

    @staticmethod
    def _decode(
        raw: bytes, sec_size: int, map_off: int, first: int, count: int, out: dict[int, int]
    ) -> None:
        words = np.frombuffer(raw, dtype=np.uint8)[: count * sec_size].reshape(count, sec_size)
        maps = words[:, map_off : map_off + 8].copy().view("<u8").reshape(-1)
        for i in np.flatnonzero(maps & np.uint64(_SECTION_MARKED_PRESENT)).tolist():
            out[first + i] = int(maps[i])

    def page_addr(self, pfn: int) -> int | None:
        """Virtual address of the ``struct page`` of ``pfn`` (None when its section is absent)."""
        coded = self.sections.get(pfn >> self.pfn_shift)
        if coded is None:
            return None
        return ((coded & self._map_mask) + pfn * self.layout.size) & ((1 << 64) - 1)

    def read(
        self,
        start: int,
        stop: int,
        want: Bools | None = None,
        into: tuple[npt.NDArray[np.uint8], Bools] | None = None,
    ) -> tuple[npt.NDArray[np.void], Bools]:
        """The struct pages of ``[start, stop)`` and which of them could be read.

        ``want``: read only these pfns (the others stay zero and not ok); ``into``: fill this
        ``(raw bytes, ok)`` pair of an earlier call instead of new arrays.
        """
        size = self.layout.size
        if into is None:
            buf = np.zeros((stop - start) * size, dtype=np.uint8)
            ok = np.zeros(stop - start, dtype=np.bool_)
        else:
            buf, ok = into
        if want is None:
            runs = [(start, stop)]
        else:
            edges = np.flatnonzero(np.diff(np.concatenate(([0], want.view(np.int8), [0]))))
            runs = list(
                zip((edges[::2] + start).tolist(), (edges[1::2] + start).tolist(), strict=True)
            )
        sec_pfns = 1 << self.pfn_shift
        for lo, hi in runs:
            pfn = lo
            while pfn < hi:
                sec_end = min(hi, ((pfn >> self.pfn_shift) + 1) * sec_pfns)
                addr = self.page_addr(pfn)
                if addr is not None:
                    self._read_run(addr, pfn - start, sec_end - pfn, buf, ok)
                pfn = sec_end
        return buf.view(self.layout.dtype()), ok

    def read_each(
        self, pfns: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """The struct pages of scattered ``pfns``: which of them could be read (positions in
        ``pfns``) and their bytes, a row each; one small read each, the page-table walk shared
        by all pfns of one leaf."""
        size = self.layout.size
        leaf_lo = leaf_hi = paddr_lo = 0
        index: list[int] = []
        paddrs: list[int] = []
        for pos, pfn in enumerate(pfns.tolist()):
            addr = self.page_addr(pfn)
            if addr is None:
                continue
            if not leaf_lo <= addr < leaf_hi - size:
                try:
                    paddr, span = self.mem.translate(addr)
                except KdumperError:
                    continue
                leaf_lo, leaf_hi, paddr_lo = addr, addr + span, paddr
            index.append(pos)
            paddrs.append(paddr_lo + addr - leaf_lo)
        if self._read_many is not None:
            datas = self._read_many(paddrs, size)
        else:
            datas = [self._read_or_none(paddr, size) for paddr in paddrs]
        got = [i for i, data in enumerate(datas) if data is not None]
        blob = b"".join(datas[i] or b"" for i in got)
        rows = np.frombuffer(blob, np.uint8).reshape(-1, size)
        return np.asarray(index, np.int64)[got], rows

    def _read_or_none(self, paddr: int, size: int) -> bytes | None:
        try:
            return self.read_phys(paddr, size)
        except KdumperError:
            return None

    def _read_run(self, addr: int, first: int, count: int, buf: npt.NDArray[np.uint8],
                  ok: Bools) -> None:  # fmt: skip
        """Struct pages of one section into ``buf``; unmapped or unreadable parts stay not ok."""
        size = self.layout.size
        pos, end = first * size, (first + count) * size
        pieces: list[tuple[int, int, int]] = []  # (buffer pos, paddr, length), merged
        vaddr = addr
        while pos < end:
            try:
                paddr, span = self.mem.translate(vaddr)
            except KdumperError:
                span = 4096 - (vaddr & 4095)  # skip this page of the vmemmap
                paddr = -1
            n = min(span, end - pos)
            if paddr >= 0:
                if (
                    pieces
                    and pieces[-1][0] + pieces[-1][2] == pos
                    and (pieces[-1][1] + pieces[-1][2] == paddr)
                ):
                    last = pieces.pop()
                    pieces.append((last[0], last[1], last[2] + n))
                else:
                    pieces.append((pos, paddr, n))
            pos += n
            vaddr += n
        into = self._read_into
        view = buf.data
        for bpos, paddr, n in pieces:
            try:
                if into is not None:
                    into(paddr, view[bpos : bpos + n])
                else:
                    buf[bpos : bpos + n] = np.frombuffer(self.read_phys(paddr, n), np.uint8)
            except KdumperError:
                buf[bpos : bpos + n] = 0  # (a read that failed midway may have filled a part)
                continue  # these pfns stay unreadable: kept
            lo = -(-bpos // size)
            hi = (bpos + n) // size
            ok[lo:hi] = True


def bulk_reader(dump: Dump) -> ReadPhys:
    """``read_phys`` for ``dump`` that reads whole page runs at once when the format can."""
    read_pages = getattr(dump, "read_pages", None)
    if read_pages is None:
        return dump.read_phys
    ps = dump.page_size

    def read(paddr: int, size: int) -> bytes:
        first = paddr // ps
        last = -(-(paddr + size) // ps)
        data: bytes = read_pages(first, last - first)
        off = paddr - first * ps
        return data if off == 0 and len(data) == size else data[off : off + size]

    return read


@record
class PageFeatures:
    """What the struct pages of one window say, independent of the dump level."""

    start: int
    present: Bools  # in the vmcore (a PT_LOAD)
    examined: Bools  # present and its struct page was read
    tail: Bools
    buddy: Bools
    buddy_order: npt.NDArray[np.int64]  # page.private of buddy pages
    unaccepted: Bools
    cache: Bools  # is_cache_page && !isAnon
    private: Bools  # PG_private
    user: Bools  # isAnon || isHugetlb
    hwpoison: Bools
    offline: Bools
    order: npt.NDArray[np.int64]  # valid compound order of heads, else 0
    all_free: bool = False  # every present pfn lies in a free max-order block (read heads only)

    @property
    def size(self) -> int:
        """Pfns in the window."""
        return int(self.examined.size)


def _bit(flags: npt.NDArray[np.uint64], nr: int | None) -> Bools:
    if nr is None or not 0 <= nr < 64:
        return np.zeros(flags.shape, dtype=np.bool_)
    return np.asarray((flags & np.uint64(1 << nr)) != 0, dtype=np.bool_)


class Classifier:
    """Reads struct pages window by window and decides which pages a dump level excludes.

    Raises :class:`UnknownLayoutError` (an :class:`UnsupportedError`) when the kernel's layout
    is not recognised and :class:`UnsupportedError` when the memory model is not supported; the
    caller then falls back to zero-page-only filtering.
    """

    def __init__(self, dump: Dump, *, read_phys: ReadPhys | None = None) -> None:
        info = dump.vmcoreinfo
        if info is None:
            raise UnsupportedError(f"{dump.path}: no VMCOREINFO: pages cannot be classified")
        self.dump = dump
        self.layout = page_layout(info)
        self.memmap = MemMap(dump, kernel_memory(dump), self.layout, read_phys)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the chosen layout cannot do (shown to the user)."""
        return self.layout.warnings

    def _is_type(self, mapcount: npt.NDArray[np.uint32], value: int | None) -> Bools:
        if value is None:
            return np.zeros(mapcount.shape, dtype=np.bool_)
        if self.layout.type_top_byte:
            return np.asarray((mapcount >> np.uint32(24)) == np.uint32(value >> 24), np.bool_)
        return np.asarray(mapcount == np.uint32(value), np.bool_)

    def _read_skipping_free_blocks(
        self, start: int, stop: int, present: Bools
    ) -> tuple[npt.NDArray[np.void], Bools] | PageFeatures:
        """Struct pages of a window (and which could be read), without reading the inside of
        free max-order blocks; the features themselves when the window is all free blocks.

        A present head of a max-order buddy block excludes the whole block at any dump level
        with -d 16 and the pages inside are never examined (makedumpfile jumps over them), so
        only the heads are read first; on a mostly idle machine this skips most of the mem_map.
        """
        lay = self.layout
        n = stop - start
        block = 1 << (lay.max_order - 1)
        if start % block or lay.mapcount is None or lay.buddy_type is None:
            return self.memmap.read(start, stop)
        heads = np.zeros(n, np.bool_)
        heads[::block] = True
        heads &= present
        at = np.flatnonzero(heads)
        got, rows = self.memmap.read_each(at + start)
        idx = at[got]  # the heads whose struct page was read
        hp = rows.reshape(-1).view(lay.dtype())
        mapcount = hp["mapcount"].astype(np.uint32)
        flags = hp["flags"].astype(np.uint64)
        free = (
            self._is_type(mapcount, lay.buddy_type)
            & ~(_bit(flags, lay.pg_slab) | self._is_type(mapcount, lay.slab_type))
            & ((hp["head"] & np.uint64(1)) == 0)
            & (hp["private"].astype(np.uint64) == np.uint64(lay.max_order - 1))
        )
        skip = np.zeros(n, np.bool_)
        for i in idx[free].tolist():
            skip[i : i + block] = True
        rest = ~skip & ~heads & present
        if not rest.any() and heads.sum() == free.sum():
            # all free blocks (an idle stretch of memory): the features are known
            z = np.zeros(n, np.bool_)
            order = np.zeros(n, np.int64)
            order[idx] = lay.max_order - 1
            buddy = np.zeros(n, np.bool_)
            buddy[idx] = True
            return PageFeatures(
                start=start, present=present, examined=present.copy(), tail=z, buddy=buddy,
                buddy_order=order, unaccepted=z, cache=z, private=z, user=z, hwpoison=z,
                offline=z, order=np.zeros(n, np.int64), all_free=True,
            )  # fmt: skip
        raw = np.zeros(n * lay.size, np.uint8)
        raw.reshape(n, lay.size)[idx] = rows
        ok = np.zeros(n, np.bool_)
        ok[idx] = True
        if rest.any():
            pages, ok = self.memmap.read(start, stop, rest, (raw, ok))
        else:
            pages = raw.view(lay.dtype())
        ok |= skip  # the inside of a free block: decided by its head
        return pages, ok

    def features(
        self, start: int, stop: int, present: Bools | None = None, *, skip_free: bool = False
    ) -> PageFeatures:
        """Parse the struct pages of ``[start, stop)`` (``present``: pfns in the vmcore).

        ``skip_free``: do not read the inside of free max-order blocks; only for dump levels
        that exclude free pages (they all exclude those blocks whole).
        """
        lay = self.layout
        n = stop - start
        if present is None:
            present = np.ones(n, np.bool_)
        if skip_free and lay.detects_free:
            read = self._read_skipping_free_blocks(start, stop, present)
            if isinstance(read, PageFeatures):
                return read
            pages, ok = read
        else:
            pages, ok = self.memmap.read(start, stop)
        examined = ok & present
        flags = pages["flags"].astype(np.uint64)
        mapping = pages["mapping"].astype(np.uint64)
        mapcount = (
            pages["mapcount"].astype(np.uint32) if lay.mapcount is not None else np.zeros(n, "<u4")
        )
        private = pages["private"].astype(np.uint64) if lay.private is not None else None
        tail = np.asarray((pages["head"] & np.uint64(1)) != 0, np.bool_)

        slab = _bit(flags, lay.pg_slab) | self._is_type(mapcount, lay.slab_type)
        anon = ((mapping & np.uint64(_PAGE_MAPPING_ANON)) != 0) & ~slab
        cache = _bit(flags, lay.pg_lru)
        if lay.pg_swapcache is not None:
            swap = _bit(flags, lay.pg_swapcache)
            if lay.pg_swapbacked is not None:  # PG_swapcache means it only with PG_swapbacked
                swap &= _bit(flags, lay.pg_swapbacked)
            cache |= swap
        cache &= ~anon
        if lay.detects_free:
            if lay.buddy_type is not None and lay.mapcount is not None:
                buddy = self._is_type(mapcount, lay.buddy_type) & ~slab
            else:
                buddy = _bit(flags, lay.pg_buddy)
            assert private is not None
            buddy_order = np.minimum(private, np.uint64(1 << 40)).astype(np.int64)
        else:
            buddy = np.zeros(n, np.bool_)
            buddy_order = np.zeros(n, np.int64)

        # compound heads: order (and hugetlb) from tail page 1, the next struct page; the last
        # struct page of a window is never a head of a valid order (windows are aligned)
        is_head = (flags & np.uint64(lay.head_mask)) != 0
        is_head[-1:] = False
        order = np.zeros(n, np.int64)
        hugetlb = np.zeros(n, np.bool_)
        heads = np.flatnonzero(is_head & examined)
        if heads.size and lay.order_source != "none":
            tail1 = heads + 1
            if lay.order_source == "flags1":
                order[heads] = (flags[tail1] & np.uint64(0xFF)).astype(np.int64)
                if lay.hugetlb_type is not None:
                    hugetlb[heads] = self._is_type(mapcount[heads], lay.hugetlb_type)
                else:
                    hugetlb[heads] = _bit(flags[tail1], lay.pg_hugetlb)
            else:
                raw = pages.view(np.uint8).reshape(n, lay.size)
                if lay.order_offset is not None:
                    order[heads] = raw[tail1, lay.order_offset]
                if lay.dtor_offset is not None and lay.hugetlb_dtor is not None:
                    hugetlb[heads] = raw[tail1, lay.dtor_offset] == lay.hugetlb_dtor
            ho = order[heads]
            pfns = heads + start
            bad = (ho >= 63) | ((pfns & ((np.int64(1) << np.minimum(ho, 62)) - 1)) != 0)
            order[heads[bad]] = 0
        return PageFeatures(
            start=start,
            present=present,
            examined=examined,
            tail=tail,
            buddy=buddy,
            buddy_order=buddy_order,
            unaccepted=self._is_type(mapcount, lay.unaccepted_type),
            cache=cache,
            private=_bit(flags, lay.pg_private),
            user=anon | hugetlb,
            hwpoison=_bit(flags, lay.pg_hwpoison),
            offline=self._is_type(mapcount, lay.offline_type) & ~slab,
            order=order,
        )

    def windows(
        self,
        start: int = 0,
        stop: int | None = None,
        window: int = WINDOW_PFNS,
        *,
        skip_free: bool = False,
    ) -> Iterator[tuple[PageFeatures, Bools]]:
        """``(features, present)`` for each window of ``[start, stop)`` holding RAM, ascending.

        ``skip_free``: see :meth:`features`.
        """
        present_bm = self.dump.present
        stop = self.dump.max_pfn if stop is None else min(stop, self.dump.max_pfn)
        for lo in range(start - start % window, stop, window):
            hi = min(lo + window, stop)
            present = present_bm.window(lo, hi)
            if not present.any():
                continue
            yield self.features(lo, hi, present, skip_free=skip_free), present


class LevelFilter:
    """makedumpfile's exclusion decisions for one dump level, applied window after window.

    :meth:`apply` returns one :class:`PageClass` per pfn: 0 for a kept page, else the class that
    excluded it (the counter makedumpfile would increment). Windows must come in ascending
    order: a free block or compound page may run on into the next window.
    """

    def __init__(self, dump_level: int, max_order: int) -> None:
        self.level = dump_level
        self.max_order = max_order
        self._carry_end = 0  # absolute pfn where a range started in an earlier window ends
        self._carry_cls = 0

    @property
    def carry(self) -> tuple[int, int]:
        """``(end pfn, class)`` of the last range that ran on past a window (``(0, 0)``: none)."""
        return self._carry_end, self._carry_cls

    def carry_over(self, carry: tuple[int, int]) -> None:
        """Take on a run-on range decided elsewhere (a window classified on its own)."""
        if carry[0] > self._carry_end:
            self._carry_end, self._carry_cls = carry

    def apply(self, f: PageFeatures) -> npt.NDArray[np.uint8]:
        """Classes of the pfns of one window (0 = kept)."""
        level, n = self.level, f.size
        if f.all_free and level & PageClass.FREE and self._carry_end <= f.start:
            # an idle stretch of memory: the free blocks cover every present pfn and none runs
            # on (max-order blocks are aligned, windows are multiples of them)
            return np.where(f.present, np.uint8(PageClass.FREE), np.uint8(0))
        cls = np.zeros(n, np.uint8)
        span = np.zeros(n, np.int64)  # pages a decision covers; 0: one page
        cand = f.examined & ~f.tail  # tails follow their head's range
        skip, skip_cls = 0, self._carry_cls
        if self._carry_end > f.start:  # inside a range decided in an earlier window: skipped
            skip = min(self._carry_end, f.start + n) - f.start
            cand[:skip] = False
        if level & PageClass.FREE:
            sel = cand & f.buddy
            good = sel & (f.buddy_order < self.max_order)  # a bad order: warned and kept
            cls[good] = PageClass.FREE
            span[good] = np.int64(1) << f.buddy_order[good]
            cand &= ~sel
            sel = cand & f.unaccepted
            cls[sel] = PageClass.FREE
            span[sel] = 1 << (self.max_order - 1)
            cand &= ~sel
        if level & PageClass.CACHE:
            sel = cand & f.cache & ~f.private
            cls[sel] = PageClass.CACHE
            cand &= ~sel
        if level & PageClass.CACHE_PRIVATE:
            sel = cand & f.cache
            cls[sel] = np.where(f.private[sel], PageClass.CACHE_PRIVATE, PageClass.CACHE)
            cand &= ~sel
        if level & PageClass.USER:
            sel = cand & f.user
            cls[sel] = PageClass.USER
            cand &= ~sel
        sel = cand & f.hwpoison
        cls[sel] = PageClass.HWPOISON
        cand &= ~sel
        cls[cand & f.offline] = PageClass.OFFLINE
        # a compound head's decision covers 1 << order pages (free blocks set their own span)
        decided = (cls != 0) & (span == 0)
        span[decided] = np.int64(1) << f.order[decided]
        self._spread(cls, span, f.start)
        if skip:
            cls[:skip] = skip_cls
        cls[~f.present] = 0  # holes: nothing to exclude or count
        return cls

    def _spread(self, cls: npt.NDArray[np.uint8], span: npt.NDArray[np.int64], start: int) -> None:
        """Give every pfn of a multi-page range its head's class; remember a run-on range."""
        n = cls.size
        heads = np.flatnonzero(span > 1)
        if not heads.size:
            return
        ends = heads + span[heads]
        if heads.size > 1 and bool((heads[1:] < np.maximum.accumulate(ends)[:-1]).any()):
            # overlapping ranges (inconsistent struct pages): makedumpfile skips the pages of a
            # range, so a head inside an earlier range is not examined; do it one by one
            keep: list[int] = []
            reach = -1
            for h, e in zip(heads.tolist(), ends.tolist(), strict=True):
                if h < reach:
                    cls[h] = cls[keep[-1]]
                    continue
                keep.append(h)
                reach = e
            heads = np.asarray(keep, dtype=np.int64)
            ends = heads + span[heads]
        # the ranges are disjoint and ascending: the covered pfns, in order, are the ranges'
        # pfns one after the other
        stops = np.minimum(ends, n)
        edges = np.zeros(n + 1, np.int8)
        edges[heads] = 1
        edges[stops] -= 1  # a range may start where the previous one stops
        covered = np.cumsum(edges[:n], dtype=np.int8) > 0
        cls[covered] = np.repeat(cls[heads], stops - heads)
        last = int(heads[-1])
        if int(ends[-1]) > n:
            self._carry_end = start + int(ends[-1])
            self._carry_cls = int(cls[last])


@record
class Classified:
    """The classes of one window at one dump level (:meth:`LevelFilter.apply`) and its facts."""

    start: int
    cls: npt.NDArray[np.uint8]  # per pfn: 0 kept, else the excluding PageClass
    unreadable: int  # present pfns kept because their struct page could not be read
    all_free: bool  # every present pfn is in a free max-order block (cls is FREE or 0)
    carry: tuple[int, int]  # a range running on past the window: (end pfn, class); (0, 0): none


class WindowClassifier:
    """Classifies the windows of a dump at one dump level.

    :meth:`in_order` is the filter pass: windows in ascending order, each seeing the ranges that
    run on from earlier ones. :meth:`alone` classifies one window as if nothing ran into it —
    what a worker process can do for any window in any order; its result is the in-order one
    unless an earlier window's range reaches into it (:attr:`Classified.carry` says when), which
    only a compound page larger than a window (a 1 GiB hugetlb page) does.
    """

    def __init__(self, classifier: Classifier, dump_level: int) -> None:
        self.classifier = classifier
        self.dump = classifier.dump
        self.level = dump_level
        self.skip_free = bool(dump_level & PageClass.FREE)  # free max-order blocks: heads only
        self.filter = LevelFilter(dump_level, classifier.layout.max_order)

    def windows(self, window: int = WINDOW_PFNS) -> list[tuple[int, int]]:
        """``(start, stop)`` of every window holding RAM, ascending."""
        present, n = self.dump.present, self.dump.max_pfn
        spans = [(lo, min(lo + window, n)) for lo in range(0, n, window)]
        return [(lo, hi) for lo, hi in spans if present.window(lo, hi).any()]

    def in_order(self, start: int, stop: int) -> Classified:
        """The next window of the pass, with the ranges running on from earlier windows."""
        return self._classify(self.filter, start, stop)

    def alone(self, start: int, stop: int) -> Classified:
        """One window on its own (see the class docstring)."""
        return self._classify(LevelFilter(self.level, self.filter.max_order), start, stop)

    def _classify(self, flt: LevelFilter, start: int, stop: int) -> Classified:
        present = self.dump.present.window(start, stop)
        feats = self.classifier.features(start, stop, present, skip_free=self.skip_free)
        cls = flt.apply(feats)
        # unreadable struct pages (kept unless a range from a readable head covers them)
        unreadable = int(np.count_nonzero(present & ~feats.examined & (cls == 0)))
        carry = flt.carry if flt.carry[0] > stop else (0, 0)
        return Classified(start, cls, unreadable, feats.all_free, carry)


def exclusion_windows(
    classifier: Classifier,
    levels: Sequence[int],
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[int, Bools, list[npt.NDArray[np.uint8]]]]:
    """``(start_pfn, present, classes per level)`` for each window holding RAM."""
    filters = [LevelFilter(level, classifier.layout.max_order) for level in levels]
    for feats, present in classifier.windows(start, stop):
        yield feats.start, present, [flt.apply(feats) for flt in filters]
