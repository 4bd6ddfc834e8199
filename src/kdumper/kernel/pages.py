"""Page classification from the crashed kernel's ``struct page`` array (makedumpfile's ``-d``).

The mem_map is found from ``SYMBOL(mem_section)`` (SPARSEMEM / SPARSEMEM_EXTREME; with
SPARSEMEM_VMEMMAP every section decodes to the same virtual ``vmemmap`` base) and read in fixed
pfn windows, each window's ``struct page`` records parsed as one numpy structured array. The rules
are makedumpfile's (``__exclude_unnecessary_pages``); the kernel-version differences are picked
once per dump in :func:`page_layout` from the VMCOREINFO keys that exist.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from ..dump.base import Dump
from ..dump.vmcoreinfo import VmcoreInfo
from ..errors import AddressNotMappedError, KdumperError, UnsupportedError
from .memory import KernelMemory, kernel_memory

WINDOW_PFNS = 1 << 16  # 64 Ki pfns = 256 MiB of RAM = 4 MiB of struct page per window
_SECTION_MAP_MASK = ~((1 << 5) - 1)  # SECTION_MAP_LAST_BIT is 1<<5 since 4.13 (makedumpfile.h)
_SECTION_MARKED_PRESENT = 1
_PAGE_MAPPING_ANON = 1


class PageClass(IntFlag):
    """Classes of ``-d``: a page is excluded when its class shares a bit with the dump level."""

    KEEP = 0
    ZERO = 1  # decided from the page contents, not from struct page
    CACHE = 2  # page cache without PG_private
    CACHE_PRIVATE = 4  # page cache with PG_private
    USER = 8  # anonymous and hugetlbfs pages
    FREE = 16  # buddy allocator free pages
    HWPOISON = 32  # always excluded
    OFFLINE = 64  # always excluded (balloon, virtio-mem)
    UNKNOWN = 128  # no struct page could be read: always kept


ALWAYS_EXCLUDED = PageClass.HWPOISON | PageClass.OFFLINE


def excluded_mask(classes: npt.NDArray[np.uint8], dump_level: int) -> npt.NDArray[np.bool_]:
    """Which pages of a window ``dump_level`` excludes (zero pages are found separately)."""
    level = dump_level & 0x1E
    if level & PageClass.CACHE_PRIVATE:
        level |= PageClass.CACHE  # -d 4 drops all cache pages, private or not
    return np.asarray((classes & np.uint8(level | ALWAYS_EXCLUDED)) != 0, dtype=np.bool_)


@dataclass(frozen=True)
class PageLayout:
    """Where the fields of ``struct page`` are and what the kernel's markers are."""

    size: int
    flags: int
    mapping: int
    private: int | None
    mapcount: int | None
    compound_head: int | None
    pg_lru: int
    pg_private: int
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_hwpoison: int | None
    head_mask: int
    buddy: int | None  # PAGE_BUDDY_MAPCOUNT_VALUE (as a u32)
    slab_type: int | None  # PAGE_SLAB_MAPCOUNT_VALUE (6.10+)
    offline_type: int | None
    unaccepted_type: int | None  # 6.16+ (unaccepted memory)
    hugetlb_type: int | None  # PAGE_HUGETLB_MAPCOUNT_VALUE (6.9+)
    pg_hugetlb: int | None  # NUMBER(PG_hugetlb), 6.6–6.8
    order_in_flags1: bool  # 6.6+: compound order is the low byte of tail page 1's flags
    order_offset: int | None  # offset of the order byte inside tail page 1 (≤ 6.5)
    dtor_offset: int | None  # offset of the destructor id inside tail page 1 (≤ 6.5)
    hugetlb_dtor: int | None
    max_order: int  # LENGTH(zone.free_area): NR_PAGE_ORDERS
    type_top_byte: bool  # 6.12+: page types are PGTY_x << 24; the low 24 bits may carry data
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def dtype(self) -> np.dtype[np.void]:
        """A numpy structured dtype for one ``struct page``."""
        names, formats, offsets = ["flags", "mapping"], ["<u8", "<u8"], [self.flags, self.mapping]
        for name, off, fmt in (
            ("private", self.private, "<u8"),
            ("mapcount", self.mapcount, "<u4"),
            ("head", self.compound_head, "<u8"),
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


def page_layout(info: VmcoreInfo) -> PageLayout:
    """The ``struct page`` layout of this kernel; :class:`UnsupportedError` if it is unknown."""
    size = info.size("page")
    flags = info.offset("page", "flags")
    mapping = info.offset("page", "mapping")
    lru = info.number("PG_lru")
    private_bit = info.number("PG_private")
    if None in (size, flags, mapping, lru, private_bit):
        raise UnsupportedError(
            "VMCOREINFO lacks SIZE(page), OFFSET(page.flags/mapping) or NUMBER(PG_lru/PG_private)"
        )
    assert size is not None and flags is not None and mapping is not None
    assert lru is not None and private_bit is not None
    warnings: list[str] = []
    buddy = _u32(info.number("PAGE_BUDDY_MAPCOUNT_VALUE"))
    mapcount = info.offset("page", "_mapcount")
    if mapcount is None:
        mapcount = info.offset("page", "page_type")
    if buddy is None or mapcount is None or info.offset("page", "private") is None:
        warnings.append("free pages cannot be recognised (no buddy marker exported)")
    # 6.9 (d99e3140a4d3) marks hugetlb folios with a page type; 6.6 had PG_hugetlb in folio flags;
    # before, the compound destructor id (4.4–6.2 page.compound_dtor, 6.3–6.5 folio._folio_dtor).
    hugetlb_type = _u32(info.number("PAGE_HUGETLB_MAPCOUNT_VALUE"))
    pg_hugetlb = info.number("PG_hugetlb")
    order_in_flags1 = hugetlb_type is not None or pg_hugetlb is not None
    order_offset = info.offset("page", "compound_order")
    dtor_offset = info.offset("page", "compound_dtor")
    if order_offset is None and info.offset("folio", "_folio_order") is not None:
        order_offset = (info.offset("folio", "_folio_order") or 0) - size
        dtor_offset = (info.offset("folio", "_folio_dtor") or 0) - size
    # 6.12 (commit 4ffca5a96678 "mm: support only one page_type per page") moved types to the top
    # byte: compare only that byte when the exported value's low 24 bits are clear.
    type_top_byte = buddy is not None and buddy & 0x00FFFFFF == 0
    head_mask = info.number("PG_head_mask")
    if head_mask is None:
        head_mask = 1 << (info.number("PG_head") or 16)
    return PageLayout(
        size=size,
        flags=flags,
        mapping=mapping,
        private=info.offset("page", "private"),
        mapcount=mapcount,
        compound_head=info.offset("page", "compound_head")
        if info.offset("page", "compound_head") is not None
        else info.offset("page", "compound_info"),
        pg_lru=lru,
        pg_private=private_bit,
        pg_swapcache=info.number("PG_swapcache"),
        pg_swapbacked=info.number("PG_swapbacked"),
        pg_slab=info.number("PG_slab"),
        pg_hwpoison=info.number("PG_hwpoison"),
        head_mask=head_mask,
        buddy=buddy,
        slab_type=_u32(info.number("PAGE_SLAB_MAPCOUNT_VALUE")),
        offline_type=_u32(info.number("PAGE_OFFLINE_MAPCOUNT_VALUE")),
        unaccepted_type=_u32(info.number("PAGE_UNACCEPTED_MAPCOUNT_VALUE")),
        hugetlb_type=hugetlb_type,
        pg_hugetlb=pg_hugetlb,
        order_in_flags1=order_in_flags1,
        order_offset=order_offset,
        dtor_offset=dtor_offset,
        hugetlb_dtor=info.number("HUGETLB_PAGE_DTOR"),
        max_order=info.length("zone.free_area") or 11,
        type_top_byte=type_top_byte,
        warnings=tuple(warnings),
    )


class MemMap:
    """Locates the ``struct page`` of every pfn through ``mem_section``."""

    def __init__(self, dump: Dump, mem: KernelMemory, layout: PageLayout) -> None:
        info = mem.info
        self.dump, self.mem, self.layout = dump, mem, layout
        root = info.symbol("mem_section")
        bits = info.number("SECTION_SIZE_BITS")
        sec_size = info.size("mem_section")
        map_off = info.offset("mem_section", "section_mem_map")
        if root is None or bits is None or sec_size is None or map_off is None:
            raise UnsupportedError("VMCOREINFO lacks the SPARSEMEM mem_section entries")
        page_shift = dump.page_size.bit_length() - 1
        self.pfn_shift = bits - page_shift
        nr_sections = (dump.max_pfn + (1 << self.pfn_shift) - 1) >> self.pfn_shift
        length = info.length("mem_section")
        per_root = dump.page_size // sec_size if length is not None else 1  # EXTREME
        nr_roots = (nr_sections + per_root - 1) // per_root
        roots = struct.unpack(f"<{nr_roots}Q", mem.read(root, 8 * nr_roots))
        self.sections: dict[int, int] = {}  # section nr -> coded mem_map (already pfn-biased)
        for r, root_addr in enumerate(roots):
            if not root_addr:
                continue
            count = min(per_root, nr_sections - r * per_root)
            try:
                raw = mem.read(root_addr, count * sec_size)
            except KdumperError:
                continue
            for i in range(count):
                coded = struct.unpack_from("<Q", raw, i * sec_size + map_off)[0]
                if coded & _SECTION_MARKED_PRESENT:
                    self.sections[r * per_root + i] = coded & _SECTION_MAP_MASK & ((1 << 64) - 1)

    def page_addr(self, pfn: int) -> int | None:
        """Virtual address of the ``struct page`` of ``pfn`` (None when its section is absent)."""
        coded = self.sections.get(pfn >> self.pfn_shift)
        if coded is None:
            return None
        return (coded + pfn * self.layout.size) & ((1 << 64) - 1)

    def read(self, start: int, stop: int) -> tuple[npt.NDArray[np.void], npt.NDArray[np.bool_]]:
        """The struct pages of ``[start, stop)`` and which of them could be read."""
        size = self.layout.size
        buf = np.zeros((stop - start) * size, dtype=np.uint8)
        ok = np.zeros(stop - start, dtype=np.bool_)
        sec_pfns = 1 << self.pfn_shift
        pfn = start
        while pfn < stop:
            sec_end = min(stop, ((pfn >> self.pfn_shift) + 1) * sec_pfns)
            addr = self.page_addr(pfn)
            if addr is not None:
                try:
                    pos = (pfn - start) * size
                    for _, paddr, n in self.mem.extents(addr, (sec_end - pfn) * size):
                        buf[pos : pos + n] = np.frombuffer(self.dump.read_phys(paddr, n), np.uint8)
                        pos += n
                    ok[pfn - start : sec_end - start] = True
                except (AddressNotMappedError, KdumperError):
                    pass  # unreadable struct pages: these pfns stay UNKNOWN (kept)
            pfn = sec_end
        return buf.view(self.layout.dtype()), ok


def _bit(flags: npt.NDArray[np.uint64], nr: int | None) -> npt.NDArray[np.bool_]:
    if nr is None:
        return np.zeros(flags.shape, dtype=np.bool_)
    return np.asarray((flags & np.uint64(1 << nr)) != 0, dtype=np.bool_)


class Classifier:
    """Classifies the pages of one dump, window by window."""

    def __init__(self, dump: Dump) -> None:
        info = dump.vmcoreinfo
        if info is None:
            raise UnsupportedError(f"{dump.path}: no VMCOREINFO: pages cannot be classified")
        self.dump = dump
        self.layout = page_layout(info)
        self.memmap = MemMap(dump, kernel_memory(dump), self.layout)
        self._carry: tuple[int, int] = (0, 0)  # (end pfn, class) of a range crossing windows

    def _is_type(
        self, mapcount: npt.NDArray[np.uint32], value: int | None
    ) -> npt.NDArray[np.bool_]:
        if value is None:
            return np.zeros(mapcount.shape, dtype=np.bool_)
        if self.layout.type_top_byte and value & 0x00FFFFFF == 0:
            return np.asarray((mapcount >> np.uint32(24)) == np.uint32(value >> 24), np.bool_)
        return np.asarray(mapcount == np.uint32(value), np.bool_)

    def classify(self, start: int, stop: int) -> npt.NDArray[np.uint8]:
        """One :class:`PageClass` value per pfn of ``[start, stop)``; call in ascending order."""
        lay = self.layout
        pages, ok = self.memmap.read(start, stop)
        n = stop - start
        flags = pages["flags"].astype(np.uint64)
        mapping = pages["mapping"].astype(np.uint64)
        mapcount = (
            pages["mapcount"].astype(np.uint32)
            if lay.mapcount is not None
            else np.zeros(n, np.uint32)
        )
        private = pages["private"].astype(np.uint64) if lay.private is not None else None
        head_word = pages["head"].astype(np.uint64) if lay.compound_head is not None else None

        slab = _bit(flags, lay.pg_slab) | self._is_type(mapcount, lay.slab_type)
        anon = ((mapping & np.uint64(_PAGE_MAPPING_ANON)) != 0) & ~slab
        cache = _bit(flags, lay.pg_lru)
        if lay.pg_swapcache is not None:
            backed = _bit(flags, lay.pg_swapbacked) if lay.pg_swapbacked is not None else True
            cache |= _bit(flags, lay.pg_swapcache) & backed
        priv = _bit(flags, lay.pg_private)
        buddy = (
            self._is_type(mapcount, lay.buddy) & ~slab
            if private is not None
            else np.zeros(n, np.bool_)
        )
        tail = (head_word & np.uint64(1)) != 0 if head_word is not None else np.zeros(n, np.bool_)

        # compound heads: order and hugetlb from tail page 1 (the next struct page)
        is_head = ((flags & np.uint64(lay.head_mask)) != 0) & ~tail
        is_head[-1:] = False  # compound pages are aligned: a window never ends on a head
        order = np.zeros(n, np.int64)
        hugetlb = np.zeros(n, np.bool_)
        heads = np.flatnonzero(is_head)
        if heads.size:
            tail1 = heads + 1
            if lay.order_in_flags1:
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
            pfns = heads + start
            bad = (order[heads] >= 64) | ((pfns & ((1 << np.minimum(order[heads], 62)) - 1)) != 0)
            order[heads[bad]] = 0

        cls = np.zeros(n, np.uint8)
        span = np.ones(n, np.int64) << order
        free = buddy & ~tail
        if private is not None and free.any():
            bad_order = private >= np.uint64(lay.max_order)
            free &= ~bad_order
            span[free] = np.int64(1) << private[free].astype(np.int64)
        unaccepted = self._is_type(mapcount, lay.unaccepted_type) & ~tail & ~free
        span[unaccepted] = 1 << (lay.max_order - 1)
        rest = ~tail & ~free & ~unaccepted
        cache_np = rest & cache & ~anon & ~priv
        cache_p = rest & cache & ~anon & priv
        user = rest & ~(cache & ~anon) & (anon | hugetlb)
        other = rest & ~(cache & ~anon) & ~(anon | hugetlb)
        cls[free | unaccepted] = PageClass.FREE
        cls[cache_np] = PageClass.CACHE
        cls[cache_p] = PageClass.CACHE_PRIVATE
        cls[user] = PageClass.USER
        cls[other & _bit(flags, lay.pg_hwpoison)] = PageClass.HWPOISON
        offline = other & ~_bit(flags, lay.pg_hwpoison) & ~slab
        cls[offline & self._is_type(mapcount, lay.offline_type)] = PageClass.OFFLINE

        # a head's class covers its whole range (compound page or buddy block): spread it
        ranged = np.flatnonzero((span > 1) & (cls != 0))
        for i in ranged.tolist():
            cls[i : i + int(span[i])] = cls[i]
        carry_end, carry_cls = self._carry
        if carry_end > start:
            cls[: min(carry_end, stop) - start] = carry_cls
        self._carry = (0, 0)
        if ranged.size:
            last = int(ranged[-1])
            end = start + last + int(span[last])
            if end > stop:
                self._carry = (end, int(cls[last]))
        cls[~ok] = PageClass.UNKNOWN
        return cls

    def windows(self, window: int = WINDOW_PFNS) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
        """``(start_pfn, classes)`` for every window of RAM, ascending; bounded memory."""
        self._carry = (0, 0)
        present = self.dump.present
        for start in range(0, self.dump.max_pfn, window):
            stop = min(start + window, self.dump.max_pfn)
            if present.count(start, stop) == 0:
                continue
            yield start, self.classify(start, stop)
