"""Synthetic x86_64 ELF vmcores shaped like ``/proc/vmcore`` of a Linux 6.1 kernel.

``make_vmcore(path, mem_mib=64, ...)`` writes an ELF64 core with what the capture kernel exports:
one PT_NOTE (a ``CORE``/NT_PRSTATUS note per CPU and the ``VMCOREINFO`` note with the keys a 6.1
kernel writes), a PT_LOAD for the kernel image and one per RAM range, whose memory holds the
structures that makedumpfile, drgn and kdumper read without debug info:

* the kernel image at a 2 MiB-aligned physical address (KASLR: random virtual and physical
  offsets, ``phys_base`` accordingly) with ``init_uts_ns``, ``init_top_pgt`` (4- or 5-level page
  tables), ``node_data``, ``node_online_map`` and a lockless printk ring buffer (``prb``);
* the direct map at ``page_offset_base`` (4 KiB, 2 MiB and 1 GiB leaves), the kernel text mapping,
  kernel stacks in vmalloc space and the vmemmap (2 MiB leaves) holding ``struct page`` arrays;
* SPARSEMEM_EXTREME ``mem_section`` roots whose ``section_mem_map`` encodes the vmemmap;
* ``struct page`` contents of a busy machine (free buddy blocks up to order 10, page cache with
  and without PG_private, anonymous pages and THPs, slab, hugetlb, page tables, kernel pages,
  reserved pages, a few HWPoison and balloon-offline pages), and page data to match (zero,
  constant-filled, random, text-like, code-like and pointer-heavy pages).

Free buddy heads are linked into node 0's zone free lists and LRU pages into two LRU lists, so
makedumpfile's free-list walk (used when ``NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)`` is missing) finds
the same free pages; idle sections (below) are the exception: their blocks are not on any list.
The kernel-image PT_LOAD points at the same file bytes as the RAM PT_LOAD holding the image
(``/proc/vmcore`` has a second copy; the contents are equal), so readers meet overlapping
PT_LOADs as on real vmcores.

Everything is deterministic in ``seed``. Memory past ``populated_mib`` is an idle machine's: free
order-10 blocks of zero pages, left as holes of a sparse file, their ``struct page`` arrays mapped
from one shared vmemmap page per zone, so a vmcore costs the disk of its populated part only
(64 GiB with ``populated_mib=16``: about 30 MiB, written in under two seconds).

``SynthInfo`` is the ground truth: PT_LOAD map, per-pfn page class (as the ``struct page`` array
says) and content kind, exact zero pages, addresses, registers, utsname, VMCOREINFO text and the
kernel log lines ``makedumpfile --dump-dmesg`` prints. ``SynthInfo.expected_dumpable(level)`` is
the page set makedumpfile keeps at a dump level.

Layouts and values come from Linux 6.1 (``kernel/crash_core.c``, ``kernel/printk/printk.c``
``log_buf_vmcoreinfo_setup()``, ``arch/x86/kernel/machine_kexec_64.c``,
``include/linux/page-flags.h``, ``include/linux/mm_types.h``, ``arch/x86/mm/kaslr.c``,
``kernel/printk/printk_ringbuffer.[ch]``); struct sizes not fixed by 6.1 itself (``pglist_data``,
``zone``) are those of a distribution 6.x x86_64 build.

Run ``python -m tests.synth OUT --mem-mib 64`` to write one and print its facts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from kdumper.dump.arch import X86_64
from kdumper.dump.base import Utsname
from kdumper.dump.notes import Note, build_notes, build_prstatus

# ---------------------------------------------------------------------------------------------
# Constants of an x86_64 Linux 6.1 kernel

PAGE_SIZE = 4096
PAGE_SHIFT = 12
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
U64 = (1 << 64) - 1

CHUNK = 2 * MIB  # PMD size: unit of page data generation, vmemmap pages and pageblocks
PAGES_PER_CHUNK = CHUNK // PAGE_SIZE  # 512 = pageblock_nr_pages (pageblock_order 9)
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
LOAD_PHYSICAL_ADDR = 0x100_0000
KERNEL_IMAGE_SIZE = GIB  # with CONFIG_RANDOMIZE_BASE
CPU_ENTRY_AREA_BASE = 0xFFFF_FE00_0000_0000

SECTION_SIZE_BITS = 27
PAGES_PER_SECTION = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT)  # 32768: 2 MiB of struct pages
SIZEOF_PAGE = 64
SIZEOF_MEM_SECTION = 32  # section_mem_map, usage, page_ext, pad (CONFIG_PAGE_EXTENSION)
SECTIONS_PER_ROOT = PAGE_SIZE // SIZEOF_MEM_SECTION
SECTION_MARKED_PRESENT = 1 << 0
SECTION_HAS_MEM_MAP = 1 << 1
SECTION_IS_ONLINE = 1 << 2
SECTION_IS_EARLY = 1 << 3

MAX_ORDER = 11  # LENGTH(zone.free_area): buddy orders 0..10
MIGRATE_TYPES = 6  # LENGTH(free_area.free_list)
MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RECLAIMABLE = 0, 1, 2
MAX_NUMNODES = 1024  # NODES_SHIFT 10
ZONE_DMA, ZONE_DMA32, ZONE_NORMAL = 0, 1, 2
MAX_NR_ZONES = 5  # DMA, DMA32, NORMAL, MOVABLE, DEVICE

# page->flags: node (10 bits) at 54, zone (3 bits) at 51, last_cpupid (21 bits, reset to all ones)
# at 30, then the flag bits (include/linux/page-flags-layout.h with NR_CPUS=8192).
ZONES_PGSHIFT = 51
LAST_CPUPID_MASK = ((1 << 21) - 1) << 30


class PG(IntEnum):
    """``enum pageflags`` of 6.1 x86_64 (CONFIG_MMU, ARCH_USES_PG_UNCACHED, MEMORY_FAILURE)."""

    locked = 0
    referenced = 1
    uptodate = 2
    dirty = 3
    lru = 4
    active = 5
    workingset = 6
    waiters = 7
    error = 8
    slab = 9
    owner_priv_1 = 10  # PG_swapcache
    arch_1 = 11
    reserved = 12
    private = 13
    private_2 = 14
    writeback = 15
    head = 16
    mappedtodisk = 17
    reclaim = 18
    swapbacked = 19
    unevictable = 20
    mlocked = 21
    uncached = 22
    hwpoison = 23


PG_swapcache = PG.owner_priv_1
# page_type values kept in _mapcount (PG_buddy 0x80, PG_offline 0x100, PG_table 0x200)
PAGE_BUDDY_MAPCOUNT_VALUE = ~0x80
PAGE_OFFLINE_MAPCOUNT_VALUE = ~0x100
PAGE_TABLE_MAPCOUNT_VALUE = ~0x200
COMPOUND_PAGE_DTOR, HUGETLB_PAGE_DTOR, TRANSHUGE_PAGE_DTOR = 1, 2, 3
POISON_POINTER_DELTA = 0xDEAD_0000_0000_0000
LIST_POISON1 = POISON_POINTER_DELTA + 0x100
LIST_POISON2 = POISON_POINTER_DELTA + 0x122
TAIL_MAPPING = POISON_POINTER_DELTA + 0x400
PAGE_MAPPING_ANON = 1

# struct page (mm_types.h, 6.1): flags@0; lru / compound_head / slab_list @8; compound_dtor@16 and
# compound_order@17 of the first tail page; mapping / slab_cache @24; index / freelist @32;
# private / slab counters @40; _mapcount@48; _refcount@52; memcg_data@56.
PAGE_DTYPE = np.dtype(
    {
        "names": [
            "flags",
            "lru_next",
            "lru_prev",
            "mapping",
            "index",
            "private",
            "mapcount",
            "refcount",
            "memcg",
        ],
        "formats": ["<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "<i4", "<i4", "<u8"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 52, 56],
        "itemsize": SIZEOF_PAGE,
    }
)

# pglist_data / zone (sizes and offsets as VMCOREINFO of a distribution 6.x kernel exports them)
SIZEOF_PGLIST_DATA = 175168
OFF_PGDAT_NR_ZONES = 172512
OFF_PGDAT_NODE_START_PFN = 172520
OFF_PGDAT_NODE_PRESENT_PAGES = 172528
OFF_PGDAT_NODE_SPANNED_PAGES = 172536
OFF_PGDAT_NODE_ID = 172544
OFF_PGDAT_LRU_LISTS = 0x4000  # where this generator keeps its two LRU list heads (not exported)
SIZEOF_ZONE = 1728
OFF_ZONE_SPANNED_PAGES = 144
OFF_ZONE_FREE_AREA = 256
OFF_ZONE_VM_STAT = 1536
SIZEOF_FREE_AREA = 104  # free_list[MIGRATE_TYPES] then nr_free
SIZEOF_NODEMASK = 128
SIZEOF_LIST_HEAD = 16

# printk_ringbuffer (5.10+; latched_seq 5.13+) layouts
SIZEOF_PRB = 88
OFF_PRB_TEXT_DATA_RING = 48
OFF_PRB_FAIL = 80
SIZEOF_PRB_DESC = 24
SIZEOF_PRINTK_INFO = 88
DESC_SV_BITS = 64
DESC_FLAGS_SHIFT = DESC_SV_BITS - 2
DESC_ID_MASK = (1 << DESC_FLAGS_SHIFT) - 1
DESC_COMMITTED, DESC_FINALIZED, DESC_REUSABLE = 1, 2, 3
FAILED_LPOS, NO_LPOS = 0x1, 0x3

# page-table entry bits
_PAGE_TABLE = 0x067  # PRESENT | RW | USER | ACCESSED | DIRTY: every non-leaf entry
_NX = 1 << 63
PAGE_KERNEL = _NX | 0x163  # PRESENT | RW | ACCESSED | DIRTY | GLOBAL
PAGE_KERNEL_LARGE = _NX | 0x1E3  # ... | PSE
PAGE_KERNEL_LARGE_EXEC_RO = 0x1E1  # kernel text: PRESENT | ACCESSED | DIRTY | PSE | GLOBAL
PAGE_KERNEL_LARGE_RO = _NX | 0x1E1  # rodata

# default virtual layout without CONFIG_RANDOMIZE_MEMORY (Documentation/x86/x86_64/mm.rst)
PAGE_OFFSET_L4, VMALLOC_START_L4, VMEMMAP_START_L4 = (
    0xFFFF_8880_0000_0000,
    0xFFFF_C900_0000_0000,
    0xFFFF_EA00_0000_0000,
)
PAGE_OFFSET_L5, VMALLOC_START_L5, VMEMMAP_START_L5 = (
    0xFF11_0000_0000_0000,
    0xFFA0_0000_0000_0000,
    0xFFD4_0000_0000_0000,
)


class PageClass(IntEnum):
    """What a pfn's ``struct page`` says it is (HOLE: not in any PT_LOAD of the vmcore)."""

    HOLE = 0
    RESERVED = 1  # PG_reserved: low 1 MiB, kernel image, memblock allocations
    KERNEL = 2  # allocated kernel page, no flags
    SLAB = 3  # PG_slab (head and tails)
    PGTABLE = 4  # PG_table page type
    FREE = 5  # in a free buddy block (head: PAGE_BUDDY_MAPCOUNT_VALUE, private = order)
    CACHE = 6  # PG_lru, mapping is an address_space, no PG_private
    CACHE_PRIVATE = 7  # as CACHE with PG_private
    ANON = 8  # mapping | PAGE_MAPPING_ANON (order-0 and THP)
    HUGETLB = 9  # compound page with HUGETLB_PAGE_DTOR
    HWPOISON = 10  # PG_hwpoison
    OFFLINE = 11  # PG_offline page type (balloon)


class Content(IntEnum):
    """What a pfn's page data is."""

    HOLE = 0  # not in the vmcore
    ZERO = 1
    CONST = 2  # one byte value repeated
    RANDOM = 3
    TEXT = 4  # ASCII words
    CODE = 5  # x86-like machine code
    DATA = 6  # kernel data: pointers, small integers, zeros
    META = 7  # structures this generator lays out (page tables, struct pages, ...)


# makedumpfile -d bits and the classes each excludes (HWPOISON and OFFLINE always go)
DL_EXCLUDE_ZERO, DL_EXCLUDE_CACHE, DL_EXCLUDE_CACHE_PRI = 1, 2, 4
DL_EXCLUDE_USER_DATA, DL_EXCLUDE_FREE = 8, 16
_EXCLUDED_BY: dict[PageClass, int] = {
    PageClass.FREE: DL_EXCLUDE_FREE,
    PageClass.CACHE: DL_EXCLUDE_CACHE | DL_EXCLUDE_CACHE_PRI,
    PageClass.CACHE_PRIVATE: DL_EXCLUDE_CACHE_PRI,
    PageClass.ANON: DL_EXCLUDE_USER_DATA,
    PageClass.HUGETLB: DL_EXCLUDE_USER_DATA,
}
_ALWAYS_EXCLUDED = (PageClass.HWPOISON, PageClass.OFFLINE)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: ``size`` bytes of physical memory at ``paddr``, stored at file ``offset``."""

    paddr: int
    size: int
    offset: int
    vaddr: int

    @property
    def start_pfn(self) -> int:
        """First pfn."""
        return self.paddr >> PAGE_SHIFT

    @property
    def end_pfn(self) -> int:
        """One past the last pfn."""
        return (self.paddr + self.size) >> PAGE_SHIFT


@dataclass(frozen=True)
class PrintkRecord:
    """One kernel log record (``struct printk_info`` plus its text)."""

    text: str
    ts_nsec: int = 0
    level: int = 6
    facility: int = 0
    caller_id: int = 0  # pid, or 0x80000000 | cpu
    subsystem: str = ""
    device: str = ""
    flags: int = 0x2  # LOG_NEWLINE


@dataclass(frozen=True)
class PrintkRing:
    """An encoded lockless printk ring: the three arrays and the ring's head and tail."""

    count_bits: int
    size_bits: int
    descs: bytes
    infos: bytes
    data: bytes
    head_id: int
    tail_id: int
    head_lpos: int
    tail_lpos: int
    records: tuple[PrintkRecord, ...]  # still readable, oldest first
    first_seq: int  # sequence number of records[0]


@dataclass(frozen=True, eq=False)
class SynthInfo:
    """Ground truth about a synthetic vmcore written by :func:`make_vmcore`."""

    path: str
    page_size: int
    max_pfn: int  # one past the last pfn of the highest PT_LOAD (makedumpfile's max_mapnr)
    segments: tuple[Segment, ...]  # the RAM PT_LOADs, ascending
    kernel_segment: Segment | None  # the kernel-image PT_LOAD (it overlaps a RAM one)
    crashkernel: tuple[int, int] | None  # [start, end) reserved for the capture kernel: a hole
    page_class: np.ndarray  # uint8 PageClass per pfn < max_pfn
    content: np.ndarray  # uint8 Content per pfn
    zero: np.ndarray  # bool per pfn: present and all zero
    const_value: dict[int, int]  # CONST pfn -> its byte value
    kerneloffset: int
    phys_base: int
    kernel_phys: int  # physical address of _text
    kernel_size: int  # _end - _text
    page_offset_base: int
    vmalloc_base: int
    vmemmap_base: int
    five_level: bool
    symbols: Mapping[str, int]  # VMCOREINFO symbols and a few more (run-time addresses)
    utsname: Utsname
    build_id: str
    crashtime: int
    nr_cpus: int
    panic_cpu: int
    pids: tuple[int, ...]
    registers: tuple[dict[str, int], ...]  # what each CPU's NT_PRSTATUS note holds
    vmcoreinfo: str
    printk_records: tuple[PrintkRecord, ...]  # records in the ring, oldest first
    dmesg: tuple[str, ...]  # the lines ``makedumpfile --dump-dmesg`` prints for them
    seed: int
    file_size: int
    idle_sections: int  # sections whose struct pages share one vmemmap page per zone

    @property
    def osrelease(self) -> str:
        """The kernel release."""
        return self.utsname.release

    def expected_dmesg(self, *, caller_id: bool = False) -> list[str]:
        """The kernel log as ``makedumpfile --dump-dmesg`` prints it (see :func:`dmesg_lines`)."""
        return dmesg_lines(self.printk_records, caller_id=caller_id)

    @property
    def present(self) -> np.ndarray:
        """bool per pfn: inside a RAM PT_LOAD."""
        present: np.ndarray = self.page_class != PageClass.HOLE
        return present

    def pfns(self, cls: PageClass) -> np.ndarray:
        """The pfns of one page class."""
        return np.flatnonzero(self.page_class == cls)

    def class_counts(self) -> dict[str, int]:
        """Pages per page class."""
        counts = np.bincount(self.page_class, minlength=len(PageClass))
        return {c.name: int(counts[c]) for c in PageClass}

    def excluded_by_level(self, dump_level: int) -> np.ndarray:
        """bool per pfn: a present page makedumpfile drops at ``dump_level`` by its class."""
        drop = np.zeros(len(PageClass), dtype=bool)
        for cls, bits in _EXCLUDED_BY.items():
            drop[cls] = bool(dump_level & bits)
        for cls in _ALWAYS_EXCLUDED:
            drop[cls] = True
        excluded: np.ndarray = drop[self.page_class] & self.present
        return excluded

    def expected_dumpable(
        self, dump_level: int, *, zero_excluded: bool | None = None
    ) -> np.ndarray:
        """bool per pfn: the pages makedumpfile keeps at ``dump_level``.

        Zero pages go when ``zero_excluded`` (default: ``dump_level & 1``, as in ELF output); in a
        kdump-compressed file they stay set in the 2nd bitmap, so pass ``zero_excluded=False``.
        """
        keep: np.ndarray = self.present & ~self.excluded_by_level(dump_level)
        if zero_excluded is None:
            zero_excluded = bool(dump_level & DL_EXCLUDE_ZERO)
        if zero_excluded:
            keep &= ~self.zero
        return keep

    def file_offset(self, paddr: int) -> int:
        """Where physical address ``paddr`` is stored in the file (KeyError in a hole)."""
        for seg in self.segments:
            if seg.paddr <= paddr < seg.paddr + seg.size:
                return seg.offset + paddr - seg.paddr
        raise KeyError(f"physical address {paddr:#x} is not in the vmcore")

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Bytes of physical memory from the written file (must lie in one PT_LOAD)."""
        off = self.file_offset(paddr)
        if self.file_offset(paddr + size - 1) != off + size - 1:
            raise KeyError(f"[{paddr:#x}, +{size:#x}) crosses a hole")
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(size)

    def page(self, pfn: int) -> bytes:
        """The page data of ``pfn`` from the written file."""
        return self.read_phys(pfn << PAGE_SHIFT, PAGE_SIZE)

    def direct_map(self, paddr: int) -> int:
        """The direct-map virtual address of ``paddr``."""
        return self.page_offset_base + paddr

    def struct_page_addr(self, pfn: int) -> int:
        """The vmemmap virtual address of pfn's ``struct page``."""
        return self.vmemmap_base + pfn * SIZEOF_PAGE

    def summary(self) -> dict[str, Any]:
        """JSON-friendly facts."""
        return {
            "path": self.path,
            "osrelease": self.osrelease,
            "max_pfn": self.max_pfn,
            "segments": [[hex(s.paddr), hex(s.size), hex(s.offset)] for s in self.segments],
            "crashkernel": [hex(x) for x in self.crashkernel] if self.crashkernel else None,
            "kerneloffset": hex(self.kerneloffset),
            "phys_base": hex(self.phys_base),
            "kernel_phys": hex(self.kernel_phys),
            "page_offset_base": hex(self.page_offset_base),
            "vmalloc_base": hex(self.vmalloc_base),
            "vmemmap_base": hex(self.vmemmap_base),
            "five_level": self.five_level,
            "classes": self.class_counts(),
            "zero_pages": int(self.zero.sum()),
            "idle_sections": self.idle_sections,
            "file_size": self.file_size,
            "dmesg_lines": len(self.dmesg),
        }


# ---------------------------------------------------------------------------------------------
# Small helpers


def _align_down(x: int, a: int) -> int:
    return x & ~(a - 1)


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def _pow2floor(x: int) -> int:
    return 1 << (x.bit_length() - 1)


def _u64(x: int) -> np.uint64:
    return np.uint64(x & U64)


class _Memory:
    """Sparse physical memory: 2 MiB chunks created on first write."""

    def __init__(self) -> None:
        self.chunks: dict[int, np.ndarray] = {}

    def chunk(self, cid: int) -> np.ndarray:
        arr = self.chunks.get(cid)
        if arr is None:
            arr = self.chunks[cid] = np.zeros(CHUNK, dtype=np.uint8)
        return arr

    def write(self, paddr: int, data: bytes | bytearray | np.ndarray) -> None:
        if isinstance(data, np.ndarray):
            buf = np.ascontiguousarray(data).view(np.uint8).ravel()
        else:
            buf = np.frombuffer(bytes(data), dtype=np.uint8)
        pos = 0
        while pos < len(buf):
            addr = paddr + pos
            off = addr & (CHUNK - 1)
            n = min(CHUNK - off, len(buf) - pos)
            self.chunk(addr >> 21)[off : off + n] = buf[pos : pos + n]
            pos += n

    def write_u64(self, paddr: int, value: int) -> None:
        self.write(paddr, struct.pack("<Q", value & U64))

    def read(self, paddr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            off = paddr & (CHUNK - 1)
            n = min(CHUNK - off, size)
            arr = self.chunks.get(paddr >> 21)
            out += bytes(n) if arr is None else arr[off : off + n].tobytes()
            paddr += n
            size -= n
        return bytes(out)


class _Allocator:
    """Top-down allocation from free physical ranges (memblock-like)."""

    def __init__(self, ranges: Sequence[tuple[int, int]]) -> None:
        self.free = sorted((lo, hi) for lo, hi in ranges if hi > lo)
        self.used: list[tuple[int, int, str]] = []

    def alloc(self, size: int, align: int = PAGE_SIZE, what: str = "") -> int:
        size = _align_up(size, PAGE_SIZE)
        for i in range(len(self.free) - 1, -1, -1):
            lo, hi = self.free[i]
            start = _align_down(hi - size, align)
            if start >= lo:
                pieces = [(lo, start), (start + size, hi)]
                self.free[i : i + 1] = [p for p in pieces if p[1] > p[0]]
                self.used.append((start, size, what))
                return start
        raise ValueError(f"synthetic memory too small for {what} ({size:#x} bytes)")


class _PageTables:
    """x86_64 page tables built in Python, placed in physical memory at the end."""

    def __init__(self, five_level: bool, root_phys: int) -> None:
        self.shifts = (48, 39, 30, 21, 12) if five_level else (39, 30, 21, 12)
        self.tables: list[np.ndarray] = []
        self.phys: list[int | None] = []
        self.child: dict[tuple[int, int], int] = {}
        self.root = self._new(root_phys)

    def _new(self, phys: int | None = None) -> int:
        self.tables.append(np.zeros(512, dtype=np.uint64))
        self.phys.append(phys)
        return len(self.tables) - 1

    def link(self, parent: int, index: int, phys: int) -> int:
        """A table at fixed ``phys`` (the kernel image's own) under ``parent[index]``."""
        tid = self._new(phys)
        self.child[(parent, index)] = tid
        return tid

    def map(self, vaddr: int, paddr: int, size: int, leaf: int, flags: int) -> None:
        """Map ``size`` bytes with ``leaf``-sized pages (4 KiB, 2 MiB or 1 GiB)."""
        leaf_shift = leaf.bit_length() - 1
        for off in range(0, size, leaf):
            va = vaddr + off
            t = self.root
            for shift in self.shifts:
                i = (va >> shift) & 511
                if shift == leaf_shift:
                    self.tables[t][i] = _u64((paddr + off) | flags)
                    break
                c = self.child.get((t, i))
                if c is None:
                    c = self.child[(t, i)] = self._new()
                t = c

    def map_range(self, vaddr: int, paddr: int, size: int, *, gbpages: bool) -> None:
        """The direct map of [paddr, paddr+size): the largest aligned leaves that fit."""
        end = paddr + size
        p = paddr
        while p < end:
            if gbpages and p % GIB == 0 and p + GIB <= end:
                self.map(vaddr + p - paddr, p, GIB, GIB, PAGE_KERNEL_LARGE)
                p += GIB
            elif p % CHUNK == 0 and p + CHUNK <= end and p >= CHUNK:
                self.map(vaddr + p - paddr, p, CHUNK, CHUNK, PAGE_KERNEL_LARGE)
                p += CHUNK
            else:
                n = min(end, _align_up(p + 1, CHUNK)) - p
                self.map(vaddr + p - paddr, p, n, PAGE_SIZE, PAGE_KERNEL)
                p += n

    def place(self, alloc: _Allocator) -> list[tuple[int, np.ndarray]]:
        """Allocate the tables that have no address yet; fill in the table entries."""
        for tid, phys in enumerate(self.phys):
            if phys is None:
                self.phys[tid] = alloc.alloc(PAGE_SIZE, what="page table")
        for (t, i), c in self.child.items():
            phys = self.phys[c]
            assert phys is not None
            self.tables[t][i] = _u64(phys | _PAGE_TABLE)
        return [(p, tab) for p, tab in zip(self.phys, self.tables, strict=True) if p is not None]


# ---------------------------------------------------------------------------------------------
# The printk ring (a separate piece: the log tests build rings of their own)


def build_printk_ring(
    records: Sequence[PrintkRecord | str], *, size_bits: int = 17, count_bits: int | None = None
) -> PrintkRing:
    """Encode ``records`` as a 6.1 lockless printk ring, evicting the oldest as the kernel does.

    ``size_bits``: log2 of the text ring (CONFIG_LOG_BUF_SHIFT); ``count_bits``: log2 of the number
    of descriptors (default ``size_bits - 5``, PRB_AVGBITS). Descriptor ids and logical positions
    start where the kernel's do (DESC0_ID, BLK0_LPOS) so they wrap like the real ones.
    """
    if count_bits is None:
        count_bits = size_bits - 5
    count, size = 1 << count_bits, 1 << size_bits
    descs = bytearray(count * SIZEOF_PRB_DESC)
    infos = bytearray(count * SIZEOF_PRINTK_INFO)
    data = bytearray(size)
    desc0_id = (-(count + 1)) & DESC_ID_MASK
    # the static ring's initial state: the last descriptor is reusable with DESC0_ID
    struct.pack_into(
        "<QQQ",
        descs,
        (count - 1) * SIZEOF_PRB_DESC,
        (DESC_REUSABLE << DESC_FLAGS_SHIFT) | desc0_id,
        FAILED_LPOS,
        FAILED_LPOS,
    )
    struct.pack_into("<Q", infos, 0, (-count) & U64)
    head_id = desc0_id
    head_lpos = tail_lpos = (-size) & U64
    live: deque[tuple[int, int, PrintkRecord]] = deque()  # (id, seq, record)
    blocks: deque[tuple[int, int]] = deque()  # (id, next_lpos) of blocks in the data ring

    def make_reusable(rid: int) -> None:
        off = (rid % count) * SIZEOF_PRB_DESC
        struct.pack_into("<Q", descs, off, (DESC_REUSABLE << DESC_FLAGS_SHIFT) | rid)

    for seq, rec in enumerate(records):
        if isinstance(rec, str):
            rec = PrintkRecord(rec)
        text = rec.text.encode()[: min(0xFFFF, size // 2 - 16)]
        rid = (head_id + 1) & DESC_ID_MASK
        if live and live[0][0] == (rid - count) & DESC_ID_MASK:
            make_reusable(live.popleft()[0])  # desc_push_tail
        if text:
            blk = _align_up(8 + len(text), 8)
            begin = head_lpos
            nxt = (begin + blk) & U64
            wraps = (begin >> size_bits) != (nxt >> size_bits)
            if wraps:  # wrapping blocks keep their data at the start of the ring
                nxt = ((nxt >> size_bits << size_bits) + blk) & U64
            while ((nxt - tail_lpos) & U64) > size:  # data_push_tail
                if not blocks:
                    tail_lpos = (nxt - size) & U64
                    break
                bid, bnext = blocks.popleft()
                if live and live[0][0] == bid:
                    make_reusable(live.popleft()[0])
                tail_lpos = bnext
            b = begin % size
            struct.pack_into("<Q", data, b, rid)
            at = 8 if wraps else b + 8
            if wraps:
                struct.pack_into("<Q", data, 0, rid)
            data[at : at + len(text)] = text
            blocks.append((rid, nxt))
            head_lpos = nxt
        else:
            begin = nxt = NO_LPOS
        slot = rid % count
        struct.pack_into(
            "<QQQ",
            descs,
            slot * SIZEOF_PRB_DESC,
            (DESC_FINALIZED << DESC_FLAGS_SHIFT) | rid,
            begin,
            nxt,
        )
        info = bytearray(SIZEOF_PRINTK_INFO)
        struct.pack_into(
            "<QQHBBI",
            info,
            0,
            seq,
            rec.ts_nsec,
            len(text),
            rec.facility,
            (rec.flags & 0x1F) | ((rec.level & 7) << 5),
            rec.caller_id,
        )
        info[24 : 24 + 16] = rec.subsystem.encode()[:15].ljust(16, b"\0")
        info[40 : 40 + 48] = rec.device.encode()[:47].ljust(48, b"\0")
        infos[slot * SIZEOF_PRINTK_INFO : (slot + 1) * SIZEOF_PRINTK_INFO] = info
        live.append(
            (
                rid,
                seq,
                PrintkRecord(
                    text.decode("utf-8", "replace"),
                    rec.ts_nsec,
                    rec.level,
                    rec.facility,
                    rec.caller_id,
                    rec.subsystem,
                    rec.device,
                    rec.flags,
                ),
            )
        )
        head_id = rid
    tail_id = live[0][0] if live else head_id
    return PrintkRing(
        count_bits=count_bits,
        size_bits=size_bits,
        descs=bytes(descs),
        infos=bytes(infos),
        data=bytes(data),
        head_id=head_id,
        tail_id=tail_id,
        head_lpos=head_lpos,
        tail_lpos=tail_lpos,
        records=tuple(r for _, _, r in live),
        first_seq=live[0][1] if live else 0,
    )


def printk_ringbuffer_struct(ring: PrintkRing, descs: int, infos: int, text: int) -> bytes:
    """``struct printk_ringbuffer`` for ``ring`` with its arrays at these virtual addresses."""
    out = bytearray(SIZEOF_PRB)
    # desc_ring: count_bits, descs, infos, head_id, tail_id, last_finalized_id
    struct.pack_into(
        "<I4xQQQQQ", out, 0, ring.count_bits, descs, infos, ring.head_id, ring.tail_id, ring.head_id
    )
    # text_data_ring: size_bits, data, head_lpos, tail_lpos; then fail
    struct.pack_into(
        "<I4xQQQ", out, OFF_PRB_TEXT_DATA_RING, ring.size_bits, text, ring.head_lpos, ring.tail_lpos
    )
    return bytes(out)


def dmesg_lines(records: Sequence[PrintkRecord], *, caller_id: bool = False) -> list[str]:
    """The lines ``makedumpfile --dump-dmesg`` prints for ``records``.

    ``caller_id``: add the ``[  T1234]`` / ``[     C0]`` column as makedumpfile 1.7.3+ does
    (1.7.2 prints none).
    """
    lines: list[str] = []
    for rec in records:
        raw = rec.text.encode()
        if not raw:
            continue  # data-less records are skipped
        prefix = f"[{rec.ts_nsec // 1_000_000_000:5d}.{rec.ts_nsec % 1_000_000_000 // 1000:06d}] "
        if caller_id:
            cid = rec.caller_id
            tag = f"{'C' if cid & 0x8000_0000 else 'T'}{cid & 0x7FFF_FFFF}"
            prefix += f"[{tag:>8}] "
        out = [prefix]
        for b in raw:
            if b == 0x0A:
                out.append("\n" + " " * len(prefix))
            elif 0x20 <= b < 0x7F or b in b"\t\v\f\r":
                out.append(chr(b))
            elif b < 0x80:
                out.append(f"\\x{b:02x}")
            else:  # a signed char promoted to int
                out.append(f"\\x{(b - 256) & 0xFFFFFFFF:08x}")
        lines.extend("".join(out).split("\n"))
    return lines


def default_dmesg(
    uts: Utsname,
    *,
    mem_bytes: int,
    crash: tuple[int, int] | None,
    nr_cpus: int,
    kerneloffset: int,
    pid: int,
    comm: str = "bash",
) -> list[PrintkRecord]:
    """A short boot log ending in a sysrq-triggered panic, as a 6.1 kernel prints it."""
    hw = "QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014"
    cpu_ctx = 0x8000_0000
    boot = [
        f"Linux version {uts.release} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14)"
        f" 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) {uts.version}",
        f"Command line: BOOT_IMAGE=/boot/vmlinuz-{uts.release} root=/dev/vda1 ro console=ttyS0"
        " crashkernel=256M",
        "BIOS-provided physical RAM map:",
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
        "BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved",
        "BIOS-e820: [mem 0x00000000000f0000-0x00000000000fffff] reserved",
        f"BIOS-e820: [mem 0x0000000000100000-0x{min(mem_bytes, 3 * GIB) - 0x20001:016x}] usable",
        "NX (Execute Disable) protection: active",
        "SMBIOS 2.8 present.",
        f"DMI: {hw}",
        "tsc: Fast TSC calibration using PIT",
        f"Memory: {mem_bytes // KIB * 9 // 10}K/{mem_bytes // KIB}K available",
    ]
    if crash:
        boot.append(
            f"Reserving {(crash[1] - crash[0]) // MIB}MB of memory at {crash[0] // MIB}MB for"
            f" crashkernel (System RAM: {mem_bytes // MIB}MB)"
        )
    boot += [
        f"smp: Brought up 1 node, {nr_cpus} CPUs",
        "devtmpfs: initialized",
        "clocksource: Switched to clocksource tsc",
        "virtio_blk virtio1: [vda] 41943040 512-byte logical blocks (21.5 GB/20.0 GiB)",
        " vda: vda1 vda2 < vda5 >",
        "EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.",
        "systemd[1]: systemd 252.22-1~deb12u1 running in system mode",
        "systemd[1]: Hostname set to <synth>.",
        "kdump-tools[412]: Starting kdump-tools:",
        "kdump-tools[431]: loaded kdump kernel.",
    ]
    recs: list[PrintkRecord] = []
    t = 0
    for i, text in enumerate(boot):
        recs.append(PrintkRecord(text, ts_nsec=t, caller_id=cpu_ctx if i < 12 else 1))
        t += 8_123_457 if i < 12 else 731_004_913
    t = 42_000_000_000 + 123_456_000
    oops = [
        (4, "sysrq: Trigger a crash"),
        (0, "Kernel panic - not syncing: sysrq triggered crash"),
        (
            4,
            f"CPU: 0 PID: {pid} Comm: {comm} Kdump: loaded Not tainted {uts.release} #1"
            "  Debian 6.1.0-synth",
        ),
        (4, f"Hardware name: {hw}"),
        (4, "Call Trace:"),
        (4, " <TASK>"),
        (4, " dump_stack_lvl+0x44/0x5c"),
        (4, " panic+0x118/0x2ed"),
        (4, " sysrq_handle_crash+0x16/0x20"),
        (4, " __handle_sysrq.cold+0x43/0x11b"),
        (4, " write_sysrq_trigger+0x24/0x40"),
        (4, " proc_reg_write+0x51/0x90"),
        (4, " vfs_write+0xc3/0x3d0"),
        (4, " ksys_write+0x5f/0xe0"),
        (4, " do_syscall_64+0x58/0xc0"),
        (4, " entry_SYSCALL_64_after_hwframe+0x64/0xce"),
        (4, "RIP: 0033:0x7f3a2c4f2f33"),
        (4, "RSP: 002b:00007ffd5c1d8a48 EFLAGS: 00000246 ORIG_RAX: 0000000000000001"),
        (4, " </TASK>"),
        (
            0,
            f"Kernel Offset: {kerneloffset:#x} from 0xffffffff81000000 (relocation range:"
            " 0xffffffff80000000-0xffffffffbfffffff)",
        ),
    ]
    for i, (level, text) in enumerate(oops):
        recs.append(PrintkRecord(text, ts_nsec=t + i * 1_734, level=level, caller_id=pid))
    return recs


# ---------------------------------------------------------------------------------------------
# Memory layout


def _ram_ranges(top: int, holes: bool) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """RAM as /proc/vmcore shows it: BIOS holes, the crashkernel reservation, the PCI hole."""
    if not holes:
        return [(0, top)], None
    low_end = (0xC000_0000 if top > 3 * GIB else top) - 0x2_0000  # ACPI tables at the top
    crash_size = min(256 * MIB, max(4 * MIB, _pow2floor(low_end // 8)))
    align = 16 * MIB if crash_size >= 64 * MIB else 2 * MIB
    crash_lo = _align_down(low_end - crash_size, align)
    crash = (crash_lo, crash_lo + crash_size)
    ranges = [(0x1000, 0x9F000), (0x10_0000, crash[0]), (crash[1], low_end)]
    if top > 4 * GIB:
        ranges.append((4 * GIB, top))
    return [r for r in ranges if r[1] > r[0]], crash


def _kaslr_regions(rng: np.random.Generator, max_paddr: int, five_level: bool) -> list[int]:
    """page_offset_base, vmalloc_base, vmemmap_base as arch/x86/mm/kaslr.c randomises them."""
    if five_level:
        start, vmalloc_tb, phys_bits = PAGE_OFFSET_L5, 12800, 52
    else:
        start, vmalloc_tb, phys_bits = PAGE_OFFSET_L4, 32, 46
    memory_tb = -(-max_paddr // TIB) + 10  # CONFIG_RANDOMIZE_MEMORY_PHYSICAL_PADDING
    direct_tb = min(memory_tb, 1 << (phys_bits - 40))
    vmemmap_tb = -(-(direct_tb << (40 - PAGE_SHIFT)) * SIZEOF_PAGE // TIB)
    sizes = [direct_tb, vmalloc_tb, vmemmap_tb]
    remain = CPU_ENTRY_AREA_BASE - start - sum(sizes) * TIB
    vaddr = start
    bases: list[int] = []
    for i, size_tb in enumerate(sizes):
        entropy = remain // (len(sizes) - i)
        rand = int(rng.integers(0, 1 << 62))
        step = (rand % (entropy + 1)) & ~(GIB - 1)
        vaddr += step
        bases.append(vaddr)
        vaddr = _align_up(vaddr + size_tb * TIB + 1, GIB)
        remain -= step
    return bases


def _zone_of(pfns: np.ndarray) -> np.ndarray:
    return np.where(
        pfns < (16 * MIB >> PAGE_SHIFT),
        ZONE_DMA,
        np.where(pfns < (4 * GIB >> PAGE_SHIFT), ZONE_DMA32, ZONE_NORMAL),
    )


# struct-page kinds inside the layout arrays
_K_SINGLE, _K_FREE_HEAD, _K_FREE_BODY, _K_COMP_HEAD, _K_COMP_TAIL = range(5)

# Templates for 8-page (order-3) units of a busy pageblock: (probability, 8 x (class, kind, n,
# dtor)) where n is the order of a head or the distance of a tail from its head.
_C = PageClass


_Entry = tuple[int, int, int, int]  # (class, kind, order or tail distance, dtor)


def _free(order: int) -> list[_Entry]:
    return [(int(_C.FREE), _K_FREE_HEAD, order, 0)] + [(int(_C.FREE), _K_FREE_BODY, 0, 0)] * (
        (1 << order) - 1
    )


def _comp(cls: int, order: int, dtor: int) -> list[_Entry]:
    return [(int(cls), _K_COMP_HEAD, order, dtor)] + [
        (int(cls), _K_COMP_TAIL, i, dtor) for i in range(1, 1 << order)
    ]


def _single(*classes: int) -> list[_Entry]:
    return [(int(c), _K_SINGLE, 0, 0) for c in classes]


_UNIT_TEMPLATES: list[tuple[float, list[_Entry]]] = [
    (0.10, _free(3)),
    (0.06, _free(2) + _free(1) + _single(_C.KERNEL) + _free(0)),
    (0.06, _comp(_C.SLAB, 3, COMPOUND_PAGE_DTOR)),
    (0.04, _comp(_C.SLAB, 1, COMPOUND_PAGE_DTOR) * 4),
    (0.03, _single(*[_C.SLAB] * 8)),
    (0.28, _single(*[_C.CACHE] * 8)),  # some become CACHE_PRIVATE
    (0.20, _single(*[_C.ANON] * 8)),
    (
        0.12,
        _single(_C.CACHE, _C.ANON, _C.KERNEL, _C.CACHE, _C.ANON, _C.PGTABLE, _C.CACHE_PRIVATE)
        + _free(0),
    ),
    (0.06, _single(*[_C.KERNEL] * 8)),
    (0.03, _single(_C.PGTABLE, _C.PGTABLE, *[_C.ANON] * 6)),
    (0.02, _single(*[_C.OFFLINE] * 8)),
]
_T_PROB = np.array([p for p, _ in _UNIT_TEMPLATES])
_T_PROB /= _T_PROB.sum()
_T_ARR = np.array([t for _, t in _UNIT_TEMPLATES], dtype=np.int64)  # (T, 8, 4)
assert _T_ARR.shape[1:] == (8, 4)

# pageblock kinds of a busy section
_PB_MIXED, _PB_FREE, _PB_THP, _PB_HUGETLB = range(4)

# content kind probabilities per page class: ZERO, CONST, RANDOM, TEXT, CODE, DATA
_CONTENT_P = np.zeros((len(PageClass), 6))
_CONTENT_P[_C.HOLE] = [1, 0, 0, 0, 0, 0]
_CONTENT_P[_C.RESERVED] = [0.8, 0, 0, 0, 0, 0.2]
_CONTENT_P[_C.KERNEL] = [0.3, 0, 0, 0.1, 0.1, 0.5]
_CONTENT_P[_C.SLAB] = [0.15, 0, 0, 0.1, 0, 0.75]
_CONTENT_P[_C.PGTABLE] = [0.2, 0, 0, 0, 0, 0.8]
_CONTENT_P[_C.FREE] = [0.65, 0.05, 0.1, 0.1, 0, 0.1]
_CONTENT_P[_C.CACHE] = [0.05, 0.05, 0.2, 0.45, 0.15, 0.1]
_CONTENT_P[_C.CACHE_PRIVATE] = _CONTENT_P[_C.CACHE]
_CONTENT_P[_C.ANON] = [0.3, 0.15, 0.15, 0.1, 0, 0.3]
_CONTENT_P[_C.HUGETLB] = [0.4, 0, 0.3, 0, 0, 0.3]
_CONTENT_P[_C.HWPOISON] = [0, 0, 0, 0, 0, 1]
_CONTENT_P[_C.OFFLINE] = [1, 0, 0, 0, 0, 0]
_CONTENT_CUM = np.cumsum(_CONTENT_P, axis=1)
_CONTENT_CUM[:, -1] = 1.0


def _buddy_blocks(
    avail: np.ndarray, base_pfn: int, max_order: int = MAX_ORDER - 1
) -> Iterator[tuple[int, int]]:
    """Aligned power-of-two blocks covering the true runs of ``avail``: (index, order)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], avail.astype(np.int8), [0]))))
    for a, b in edges.reshape(-1, 2):
        p = int(a)
        while p < b:
            pfn = base_pfn + p
            align = (pfn & -pfn).bit_length() - 1 if pfn else max_order
            order = min(max_order, align, (int(b) - p).bit_length() - 1)
            yield p, order
            p += 1 << order


@dataclass
class _Layout:
    """Page classes and struct-page shapes of one section (arrays of PAGES_PER_SECTION)."""

    cls: np.ndarray
    kind: np.ndarray
    n: np.ndarray  # order of a head, distance of a tail from its head
    dtor: np.ndarray
    mt: np.ndarray  # migrate type per pageblock (64)


def _layout_section(
    rng: np.random.Generator, base_pfn: int, ram: np.ndarray, reserved: np.ndarray, busy_pages: int
) -> _Layout:
    """Classes of one section: its first ``busy_pages`` (a pageblock multiple) as a busy
    machine's, the rest free buddy blocks."""
    n = PAGES_PER_SECTION
    avail = ram & ~reserved
    cls = np.where(ram, _C.RESERVED, _C.HOLE).astype(np.uint8)
    kind = np.zeros(n, np.uint8)
    num = np.zeros(n, np.int32)
    dtor = np.zeros(n, np.uint8)
    mt = np.where(
        rng.random(64) < 0.85,
        MIGRATE_MOVABLE,
        np.where(rng.random(64) < 0.66, MIGRATE_UNMOVABLE, MIGRATE_RECLAIMABLE),
    )
    if busy_pages:
        _layout_busy(rng, base_pfn, avail, cls, kind, num, dtor)
    idle = avail.copy()
    idle[:busy_pages] = False
    for i, order in _buddy_blocks(idle, base_pfn):
        cls[i : i + (1 << order)] = _C.FREE
        kind[i] = _K_FREE_HEAD
        kind[i + 1 : i + (1 << order)] = _K_FREE_BODY
        num[i : i + (1 << order)] = 0
        num[i] = order
        dtor[i : i + (1 << order)] = 0
    return _Layout(cls, kind, num, dtor, mt.astype(np.uint8))


def _layout_busy(
    rng: np.random.Generator,
    base_pfn: int,
    avail: np.ndarray,
    cls: np.ndarray,
    kind: np.ndarray,
    num: np.ndarray,
    dtor: np.ndarray,
) -> None:
    """A busy machine's page mix over the available pages of a section (in place)."""
    n = PAGES_PER_SECTION
    units = rng.choice(len(_T_ARR), size=n // 8, p=_T_PROB)
    t = _T_ARR[units].reshape(n, 4)
    tc, tk, tn, td = t[:, 0].copy(), t[:, 1].copy(), t[:, 2].copy(), t[:, 3].copy()
    private = (tc == _C.CACHE) & (rng.random(n) < 0.2)
    tc[private] = _C.CACHE_PRIVATE
    # whole pageblocks: free (merged into order 10 in aligned pairs), THP, hugetlb
    pb_avail = avail.reshape(64, 512).all(axis=1)
    pb_zone = _zone_of(base_pfn + np.arange(64) * 512)
    r = rng.random(64)
    pb = np.full(64, _PB_MIXED)
    pb[r < 0.22] = _PB_HUGETLB
    pb[r < 0.19] = _PB_THP
    pb[r < 0.14] = _PB_FREE
    pb[(pb != _PB_FREE) & (pb_zone == ZONE_DMA)] = _PB_MIXED
    pb[~pb_avail] = _PB_MIXED
    for want in (_PB_FREE, _PB_THP, _PB_HUGETLB):  # each section has at least one of each
        spare = np.flatnonzero(pb_avail & (pb_zone != ZONE_DMA) & (pb == _PB_MIXED))
        if not (pb == want).any() and len(spare) > 1:
            pb[spare[int(rng.integers(0, len(spare)))]] = want
    tc2, tk2, tn2, td2 = (a.reshape(64, 512) for a in (tc, tk, tn, td))
    pair_free = (pb[0::2] == _PB_FREE) & (pb[1::2] == _PB_FREE)
    for b in np.flatnonzero(pb != _PB_MIXED):
        if pb[b] == _PB_FREE:
            if b % 2 == 1 and pair_free[b // 2]:
                tc2[b], tk2[b], tn2[b], td2[b] = _C.FREE, _K_FREE_BODY, 0, 0
                continue
            order = 10 if b % 2 == 0 and pair_free[b // 2] else 9
            tc2[b], tk2[b], tn2[b], td2[b] = _C.FREE, _K_FREE_BODY, 0, 0
            tk2[b, 0], tn2[b, 0] = _K_FREE_HEAD, order
        else:
            c = _C.ANON if pb[b] == _PB_THP else _C.HUGETLB
            d = TRANSHUGE_PAGE_DTOR if pb[b] == _PB_THP else HUGETLB_PAGE_DTOR
            tc2[b], td2[b] = c, d
            tk2[b] = _K_COMP_TAIL
            tn2[b] = np.arange(512)
            tk2[b, 0], tn2[b, 0] = _K_COMP_HEAD, 9
    # 8-page units that are not wholly available: single kernel or free pages
    unit_ok = avail.reshape(-1, 8).all(axis=1).repeat(8)
    loose = avail & ~unit_ok
    as_free = loose & (rng.random(n) < 0.5)
    tc[loose] = _C.KERNEL
    tk[loose], tn[loose], td[loose] = _K_SINGLE, 0, 0
    tc[as_free], tk[as_free] = _C.FREE, _K_FREE_HEAD
    cls[avail] = tc[avail]
    kind[avail] = tk[avail]
    num[avail] = tn[avail]
    dtor[avail] = td[avail]


# ---------------------------------------------------------------------------------------------
# Page data


def _text_templates(rng: np.random.Generator, k: int) -> np.ndarray:
    letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
    weights = 1.0 / np.arange(1, 27)
    weights /= weights.sum()
    words = [
        bytes(letters[rng.choice(26, size=int(rng.integers(2, 10)), p=weights)]) for _ in range(600)
    ]
    picks = np.minimum(rng.zipf(1.3, size=k * 900), 600) - 1
    seps = rng.choice([b" ", b" ", b" ", b" ", b"\n", b", ", b". "], size=len(picks))
    text = b"".join(words[i] + s for i, s in zip(picks, seps, strict=True))
    while len(text) < k * PAGE_SIZE:
        text += text
    return np.frombuffer(text[: k * PAGE_SIZE], dtype=np.uint8).reshape(k, PAGE_SIZE).copy()


def _code_templates(rng: np.random.Generator, k: int) -> np.ndarray:
    common = [
        0x48,
        0x89,
        0x8B,
        0x0F,
        0x00,
        0xFF,
        0xE8,
        0x83,
        0xC3,
        0x74,
        0x75,
        0x85,
        0x41,
        0x4C,
        0x24,
        0x45,
        0xC7,
        0x31,
        0xC0,
        0x44,
        0x49,
        0x5D,
        0x55,
        0x90,
        0x66,
        0xEB,
    ]
    p = np.full(256, 0.25 / (256 - len(common)))
    p[common] = 0.75 / len(common)
    p /= p.sum()
    return rng.choice(256, size=(k, PAGE_SIZE), p=p).astype(np.uint8)


def _data_templates(
    rng: np.random.Generator, k: int, dm_base: int, dm_size: int, text_base: int
) -> np.ndarray:
    n = k * PAGE_SIZE // 8
    choice = rng.choice(6, size=n, p=[0.35, 0.25, 0.1, 0.15, 0.1, 0.05])
    words = np.zeros(n, dtype=np.uint64)
    m = choice == 1
    words[m] = _u64(dm_base) + (rng.integers(0, max(dm_size // 8, 1), m.sum()) * 8).astype(
        np.uint64
    )
    m = choice == 2
    words[m] = _u64(text_base) + (rng.integers(0, 3 * MIB // 16, m.sum()) * 16).astype(np.uint64)
    m = choice == 3
    words[m] = rng.integers(1, 4096, m.sum()).astype(np.uint64)
    m = choice == 4
    words[m] = rng.integers(0, 1 << 63, m.sum(), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    words[choice == 5] = _u64(U64)
    return words.view(np.uint8).reshape(k, PAGE_SIZE)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fill_pages(
    rng: np.random.Generator,
    mem: _Memory,
    content: np.ndarray,
    pfn_lo: int,
    pfn_hi: int,
    templates: dict[int, np.ndarray],
    const_value: dict[int, int],
) -> None:
    """Generate the data of every CONST/RANDOM/TEXT/CODE/DATA page in [pfn_lo, pfn_hi)."""
    seg = content[pfn_lo:pfn_hi]
    want = np.flatnonzero((seg >= Content.CONST) & (seg <= Content.DATA)) + pfn_lo
    if not len(want):
        return
    chunk_ids = want >> 9
    starts = np.flatnonzero(np.diff(np.concatenate(([-1], chunk_ids))))
    for s, e in zip(starts, [*starts[1:], len(want)], strict=True):
        pfns = want[s:e]
        cid = int(chunk_ids[s])
        pages = mem.chunk(cid).reshape(PAGES_PER_CHUNK, PAGE_SIZE)
        rows = pfns & 511
        kinds = content[pfns]
        for kd in (Content.TEXT, Content.CODE, Content.DATA):
            m = kinds == kd
            if m.any():
                tpl = templates[kd]
                pages[rows[m]] = tpl[rng.integers(0, len(tpl), m.sum())]
        m = kinds == Content.RANDOM
        if m.any():
            pages[rows[m]] = rng.integers(0, 256, (m.sum(), PAGE_SIZE), dtype=np.uint8)
        m = kinds == Content.CONST
        if m.any():
            vals = rng.integers(1, 256, m.sum()).astype(np.uint8)
            pages[rows[m]] = vals[:, None]
            const_value.update(zip(pfns[m].tolist(), vals.tolist(), strict=True))
        m = (kinds == Content.TEXT) | (kinds == Content.CODE) | (kinds == Content.DATA)
        if m.any():  # stamp the pfn in hex so that every such page is unique
            digits = (pfns[m, None] >> np.arange(28, -1, -4)) & 15
            pages[rows[m], :8] = _HEX[digits]


# ---------------------------------------------------------------------------------------------
# VMCOREINFO


def _vmcoreinfo(
    *,
    release: str,
    build_id: str,
    sym: Mapping[str, int],
    mem_section: int,
    five_level: bool,
    phys_base: int,
    kerneloffset: int,
    crashtime: int,
    drop: Sequence[str],
    extra: Mapping[str, str],
) -> str:
    """VMCOREINFO as crash_save_vmcoreinfo_init() + arch_crash_save_vmcoreinfo() write it."""
    phys_bits = 52 if five_level else 46
    length_mem_section = (1 << (phys_bits - SECTION_SIZE_BITS)) // SECTIONS_PER_ROOT
    e: list[tuple[str, str]] = []

    def add(key: str, value: int | str, fmt: str = "d") -> None:
        e.append((key, value if isinstance(value, str) else format(value, fmt)))

    add("OSRELEASE", release)
    add("BUILD-ID", build_id)
    add("PAGESIZE", PAGE_SIZE)
    add("SYMBOL(init_uts_ns)", sym["init_uts_ns"], "x")
    add("OFFSET(uts_namespace.name)", 0)
    add("SYMBOL(node_online_map)", sym["node_online_map"], "x")
    add("SYMBOL(swapper_pg_dir)", sym["swapper_pg_dir"], "x")
    add("SYMBOL(_stext)", sym["_stext"], "x")
    add("SYMBOL(vmap_area_list)", sym["vmap_area_list"], "x")
    add("SYMBOL(mem_section)", mem_section, "x")
    add("LENGTH(mem_section)", length_mem_section)
    add("SIZE(mem_section)", SIZEOF_MEM_SECTION)
    add("OFFSET(mem_section.section_mem_map)", 0)
    add("NUMBER(SECTION_SIZE_BITS)", SECTION_SIZE_BITS)
    add("NUMBER(MAX_PHYSMEM_BITS)", phys_bits)
    for name, size in (
        ("page", SIZEOF_PAGE),
        ("pglist_data", SIZEOF_PGLIST_DATA),
        ("zone", SIZEOF_ZONE),
        ("free_area", SIZEOF_FREE_AREA),
        ("list_head", SIZEOF_LIST_HEAD),
        ("nodemask_t", SIZEOF_NODEMASK),
    ):
        add(f"SIZE({name})", size)
    for member, off in (
        ("flags", 0),
        ("_refcount", 52),
        ("mapping", 24),
        ("lru", 8),
        ("_mapcount", 48),
        ("private", 40),
        ("compound_dtor", 16),
        ("compound_order", 17),
        ("compound_head", 8),
    ):
        add(f"OFFSET(page.{member})", off)
    add("OFFSET(pglist_data.node_zones)", 0)
    add("OFFSET(pglist_data.nr_zones)", OFF_PGDAT_NR_ZONES)
    add("OFFSET(pglist_data.node_start_pfn)", OFF_PGDAT_NODE_START_PFN)
    add("OFFSET(pglist_data.node_spanned_pages)", OFF_PGDAT_NODE_SPANNED_PAGES)
    add("OFFSET(pglist_data.node_id)", OFF_PGDAT_NODE_ID)
    add("OFFSET(zone.free_area)", OFF_ZONE_FREE_AREA)
    add("OFFSET(zone.vm_stat)", OFF_ZONE_VM_STAT)
    add("OFFSET(zone.spanned_pages)", OFF_ZONE_SPANNED_PAGES)
    add("OFFSET(free_area.free_list)", 0)
    add("OFFSET(list_head.next)", 0)
    add("OFFSET(list_head.prev)", 8)
    add("OFFSET(vmap_area.va_start)", 0)
    add("OFFSET(vmap_area.list)", 40)
    add("LENGTH(zone.free_area)", MAX_ORDER)
    # log_buf_vmcoreinfo_setup()
    add("SYMBOL(prb)", sym["prb"], "x")
    add("SYMBOL(printk_rb_static)", sym["printk_rb_static"], "x")
    add("SYMBOL(clear_seq)", sym["clear_seq"], "x")
    add("SIZE(printk_ringbuffer)", SIZEOF_PRB)
    add("OFFSET(printk_ringbuffer.desc_ring)", 0)
    add("OFFSET(printk_ringbuffer.text_data_ring)", OFF_PRB_TEXT_DATA_RING)
    add("OFFSET(printk_ringbuffer.fail)", OFF_PRB_FAIL)
    add("SIZE(prb_desc_ring)", 48)
    for member, off in (
        ("count_bits", 0),
        ("descs", 8),
        ("infos", 16),
        ("head_id", 24),
        ("tail_id", 32),
    ):
        add(f"OFFSET(prb_desc_ring.{member})", off)
    add("SIZE(prb_desc)", SIZEOF_PRB_DESC)
    add("OFFSET(prb_desc.state_var)", 0)
    add("OFFSET(prb_desc.text_blk_lpos)", 8)
    add("SIZE(prb_data_blk_lpos)", 16)
    add("OFFSET(prb_data_blk_lpos.begin)", 0)
    add("OFFSET(prb_data_blk_lpos.next)", 8)
    add("SIZE(printk_info)", SIZEOF_PRINTK_INFO)
    for member, off in (
        ("seq", 0),
        ("ts_nsec", 8),
        ("text_len", 16),
        ("caller_id", 20),
        ("dev_info", 24),
    ):
        add(f"OFFSET(printk_info.{member})", off)
    add("SIZE(dev_printk_info)", 64)
    add("OFFSET(dev_printk_info.subsystem)", 0)
    add("LENGTH(printk_info_subsystem)", 16)
    add("OFFSET(dev_printk_info.device)", 16)
    add("LENGTH(printk_info_device)", 48)
    add("SIZE(prb_data_ring)", 32)
    for member, off in (("size_bits", 0), ("data", 8), ("head_lpos", 16), ("tail_lpos", 24)):
        add(f"OFFSET(prb_data_ring.{member})", off)
    add("SIZE(atomic_long_t)", 8)
    add("OFFSET(atomic_long_t.counter)", 0)
    add("SIZE(latched_seq)", 24)
    add("OFFSET(latched_seq.val)", 8)
    # back in crash_save_vmcoreinfo_init()
    add("LENGTH(free_area.free_list)", MIGRATE_TYPES)
    add("NUMBER(NR_FREE_PAGES)", 0)
    for flag in ("lru", "private"):
        add(f"NUMBER(PG_{flag})", PG[flag])
    add("NUMBER(PG_swapcache)", PG_swapcache)
    for flag in ("swapbacked", "slab", "hwpoison"):
        add(f"NUMBER(PG_{flag})", PG[flag])
    add("NUMBER(PG_head_mask)", 1 << PG.head)
    add("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)", PAGE_BUDDY_MAPCOUNT_VALUE)
    add("NUMBER(HUGETLB_PAGE_DTOR)", HUGETLB_PAGE_DTOR)
    add("NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)", PAGE_OFFLINE_MAPCOUNT_VALUE)
    # arch_crash_save_vmcoreinfo() (x86_64, CONFIG_NUMA)
    signed_phys_base = phys_base - (1 << 64) if phys_base >= 1 << 63 else phys_base
    add("NUMBER(phys_base)", signed_phys_base)
    add("SYMBOL(init_top_pgt)", sym["init_top_pgt"], "x")
    add("NUMBER(pgtable_l5_enabled)", int(five_level))
    add("SYMBOL(node_data)", sym["node_data"], "x")
    add("LENGTH(node_data)", MAX_NUMNODES)
    add("KERNELOFFSET", kerneloffset, "x")
    add("NUMBER(KERNEL_IMAGE_SIZE)", KERNEL_IMAGE_SIZE)
    add("NUMBER(sme_mask)", 0)
    add("CRASHTIME", crashtime)  # crash_save_vmcoreinfo() at panic time
    dropped = set(drop)
    lines = [f"{k}={v}" for k, v in e if k not in dropped]
    lines += [f"{k}={v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The generator


@dataclass
class _Image:
    """The kernel image: offsets from _text (all 2 MiB multiples except the objects)."""

    text: int  # virtual address of _text
    phys: int
    size: int
    text_size: int = 3 * MIB
    rodata: int = 3 * MIB
    rodata_size: int = MIB
    data: int = 4 * MIB
    data_size: int = MIB
    bss: int = 5 * MIB
    objects: dict[str, int] = field(default_factory=dict)  # name -> offset from _text

    def va(self, name: str) -> int:
        return self.text + self.objects[name]

    def pa(self, name: str) -> int:
        return self.phys + self.objects[name]


_FUNCTIONS = {  # name -> offset in .text (for registers and tests that symbolise addresses)
    "startup_64": 0x0,
    "native_safe_halt": 0x9A2F20,
    "default_idle": 0x9A2F40,
    "do_syscall_64": 0x99C5B0,
    "entry_SYSCALL_64": 0xA00080,
    "panic": 0x5F6A10,
    "__crash_kexec": 0x1C3A70,
    "crash_kexec": 0x1C3B40,
    "machine_kexec": 0x6C0A0,
    "crash_nmi_callback": 0x6B7E0,
    "sysrq_handle_crash": 0x6E2C30,
    "ksys_write": 0x3A5D20,
}


def _image_layout(text_va: int, phys: int, ring_bytes: int) -> _Image:
    bss_size = _align_up(MIB + ring_bytes, PAGE_SIZE)
    img = _Image(text=text_va, phys=phys, size=_align_up(5 * MIB + bss_size, CHUNK))
    d, b = img.data, img.bss
    img.objects.update(
        {
            "_text": 0,
            "_stext": 0,
            "_etext": img.text_size,
            "linux_banner": img.rodata + 0x1E0,
            "init_top_pgt": d,
            "level4_kernel_pgt": d + 0x1000,
            "level3_kernel_pgt": d + 0x2000,
            "level2_kernel_pgt": d + 0x3000,
            "init_uts_ns": d + 0x8000,
            "node_online_map": d + 0x8400,
            "vmap_area_list": d + 0x8480,
            "prb": d + 0x8500,
            "printk_rb_static": d + 0x8540,
            "mem_section": d + 0x8600,
            "node_data": d + 0x9000,
            "clear_seq": b,
            "_printk_rb_static_descs": b + 0x1000,
            "_end": img.size,
        }
    )
    for name, off in _FUNCTIONS.items():
        img.objects[name] = off % img.text_size
    return img


_IMAGE_META_BYTES = 0x10000  # start of .data: page tables and the objects VMCOREINFO names


@dataclass
class _Machine:
    """Where everything is: the plan the later steps read."""

    top: int  # end of the physical address space
    populated: int  # end of the busy memory
    holes: bool
    five_level: bool
    nr_cpus: int
    ram_ranges: list[tuple[int, int]]
    crash: tuple[int, int] | None
    max_pfn: int
    ram: np.ndarray  # bool per pfn, padded to whole sections
    img: _Image
    kerneloffset: int
    phys_base: int
    page_offset_base: int
    vmalloc_base: int
    vmemmap_base: int
    present: np.ndarray  # bool per section: has RAM
    busy: np.ndarray  # bool per section: overlaps the populated memory
    idle: np.ndarray  # bool per section: all free, struct pages from a shared vmemmap page
    unique_secs: list[int]  # present sections with struct pages of their own

    @property
    def k_lo(self) -> int:
        return self.img.phys >> PAGE_SHIFT

    @property
    def k_hi(self) -> int:
        return (self.img.phys + self.img.size) >> PAGE_SHIFT

    def dm(self, paddr: int) -> int:
        """Direct-map address."""
        return self.page_offset_base + paddr


def _plan(
    rng: np.random.Generator,
    *,
    mem_mib: int,
    populated_mib: int | None,
    kaslr: bool,
    holes: bool,
    five_level: bool,
    nr_cpus: int,
    ring_bytes: int,
) -> _Machine:
    """RAM ranges, kernel placement (KASLR), virtual bases and the kinds of sections."""
    top = mem_mib * MIB
    populated = min(top, (populated_mib if populated_mib is not None else 64) * MIB)
    populated = max(_align_down(populated, CHUNK), 16 * MIB)
    ram_ranges, crash = _ram_ranges(top, holes)
    max_pfn = ram_ranges[-1][1] >> PAGE_SHIFT
    n_sections = -(-max_pfn // PAGES_PER_SECTION)
    ram = np.zeros(n_sections * PAGES_PER_SECTION, dtype=bool)
    for lo, hi in ram_ranges:
        ram[lo >> PAGE_SHIFT : hi >> PAGE_SHIFT] = True

    img_size = _image_layout(START_KERNEL_MAP, 0, ring_bytes).size
    if kaslr:
        starts = [
            s
            for lo, hi in ram_ranges
            for s in range(max(_align_up(lo, CHUNK), LOAD_PHYSICAL_ADDR), hi - img_size + 1, CHUNK)
        ]
        if not starts:
            raise ValueError("no room for the kernel image")
        kernel_phys = starts[int(rng.integers(0, len(starts)))]
        slots = (KERNEL_IMAGE_SIZE - LOAD_PHYSICAL_ADDR - img_size) // CHUNK
        kerneloffset = int(rng.integers(0, slots)) * CHUNK
        bases = _kaslr_regions(rng, top, five_level)
    else:
        kernel_phys, kerneloffset = LOAD_PHYSICAL_ADDR, 0
        bases = (
            [PAGE_OFFSET_L5, VMALLOC_START_L5, VMEMMAP_START_L5]
            if five_level
            else [PAGE_OFFSET_L4, VMALLOC_START_L4, VMEMMAP_START_L4]
        )
    if not any(lo <= kernel_phys and kernel_phys + img_size <= hi for lo, hi in ram_ranges):
        raise ValueError("the kernel image does not fit in RAM at 16 MiB")
    text_va = START_KERNEL_MAP + LOAD_PHYSICAL_ADDR + kerneloffset
    img = _image_layout(text_va, kernel_phys, ring_bytes)

    ram_s = ram.reshape(n_sections, PAGES_PER_SECTION)
    present = np.asarray(ram_s.any(axis=1))
    sec = np.arange(n_sections)
    busy = sec * PAGES_PER_SECTION < (populated >> PAGE_SHIFT)
    k_lo, k_hi = kernel_phys >> PAGE_SHIFT, (kernel_phys + img.size) >> PAGE_SHIFT
    kernel_sec = (sec >= k_lo // PAGES_PER_SECTION) & (sec <= (k_hi - 1) // PAGES_PER_SECTION)
    unique = present & (busy | kernel_sec | ~ram_s.all(axis=1))
    return _Machine(
        top=top,
        populated=populated,
        holes=holes,
        five_level=five_level,
        nr_cpus=nr_cpus,
        ram_ranges=ram_ranges,
        crash=crash,
        max_pfn=max_pfn,
        ram=ram,
        img=img,
        kerneloffset=kerneloffset,
        phys_base=(kernel_phys - LOAD_PHYSICAL_ADDR - kerneloffset) & U64,
        page_offset_base=bases[0],
        vmalloc_base=bases[1],
        vmemmap_base=bases[2],
        present=present,
        busy=busy,
        idle=present & ~unique,
        unique_secs=[int(s) for s in np.flatnonzero(unique)],
    )


@dataclass
class _Placement:
    """memblock-style allocations at the top of the busy memory."""

    alloc: _Allocator
    vmemmap: dict[int, int]  # unique section -> physical address of its struct pages
    shared_vmemmap: dict[int, int]  # zone -> the struct pages every idle section maps
    root_array: int  # mem_section root pointers
    roots: dict[int, int]  # root index -> page of struct mem_section
    usage: int  # mem_section_usage of each present section (64 bytes apart)
    pgdat: int  # node 0's pglist_data
    percpu: list[int]
    stacks: list[int]
    stack_va: list[int]
    tables: list[tuple[int, np.ndarray]] = field(default_factory=list)


def _allocate(m: _Machine) -> _Placement:
    free_ranges: list[tuple[int, int]] = []
    k_end = m.img.phys + m.img.size
    for lo, hi in m.ram_ranges:
        lo, hi = max(lo, MIB), min(hi, m.populated)
        for a, b in ((lo, min(hi, m.img.phys)), (max(lo, k_end), hi)):
            if b > a:
                free_ranges.append((a, b))
    alloc = _Allocator(free_ranges)
    vmemmap = {s: alloc.alloc(CHUNK, CHUNK, "vmemmap") for s in m.unique_secs}
    idle_zones = sorted({int(z) for z in _zone_of(np.flatnonzero(m.idle) * PAGES_PER_SECTION)})
    shared = {z: alloc.alloc(CHUNK, CHUNK, "shared vmemmap") for z in idle_zones}
    phys_bits = 52 if m.five_level else 46
    nr_roots = (1 << (phys_bits - SECTION_SIZE_BITS)) // SECTIONS_PER_ROOT
    root_array = alloc.alloc(nr_roots * 8, what="mem_section roots")
    present_secs = np.flatnonzero(m.present)
    roots = {
        int(r): alloc.alloc(PAGE_SIZE, what="mem_section")
        for r in np.unique(present_secs // SECTIONS_PER_ROOT)
    }
    usage = alloc.alloc(64 * len(present_secs), what="mem_section_usage")
    pgdat = alloc.alloc(SIZEOF_PGLIST_DATA, what="pglist_data")
    percpu = [alloc.alloc(64 * KIB, what="percpu") for _ in range(m.nr_cpus)]
    stacks = [alloc.alloc(16 * KIB, what="stack") for _ in range(m.nr_cpus)]
    stack_va = [m.vmalloc_base + 0x10_0000 + i * 0x8000 for i in range(m.nr_cpus)]
    return _Placement(
        alloc, vmemmap, shared, root_array, roots, usage, pgdat, percpu, stacks, stack_va
    )


def _page_tables(m: _Machine, p: _Placement) -> None:
    """init_top_pgt and below: direct map, kernel text map, vmemmap, vmalloc'd stacks."""
    img = m.img
    pt = _PageTables(m.five_level, img.pa("init_top_pgt"))
    if m.five_level:
        p4d = pt.link(pt.root, 511, img.pa("level4_kernel_pgt"))
        pud = pt.link(p4d, 511, img.pa("level3_kernel_pgt"))
    else:
        pud = pt.link(pt.root, 511, img.pa("level3_kernel_pgt"))
    pt.link(pud, 510, img.pa("level2_kernel_pgt"))
    # the direct map covers all RAM below 4 GiB (crashkernel area included) and above
    low_end = max(hi for _lo, hi in m.ram_ranges if hi <= 4 * GIB or not m.holes)
    pt.map_range(m.page_offset_base, 0, low_end, gbpages=True)
    if m.holes and m.top > 4 * GIB:
        pt.map_range(m.dm(4 * GIB), 4 * GIB, m.top - 4 * GIB, gbpages=True)
    for off, size, flags in (
        (0, img.text_size, PAGE_KERNEL_LARGE_EXEC_RO),
        (img.rodata, img.rodata_size, PAGE_KERNEL_LARGE_RO),
        (img.data, img.size - img.data, PAGE_KERNEL_LARGE),
    ):
        pt.map(img.text + off, img.phys + off, size, CHUNK, flags)
    zone_of_sec = _zone_of(np.arange(len(m.present)) * PAGES_PER_SECTION)
    for s in np.flatnonzero(m.present):
        backing = p.vmemmap.get(int(s)) or p.shared_vmemmap[int(zone_of_sec[s])]
        pt.map(m.vmemmap_base + int(s) * CHUNK, backing, CHUNK, CHUNK, PAGE_KERNEL_LARGE)
    for va, pa in zip(p.stack_va, p.stacks, strict=True):
        pt.map(va, pa, 16 * KIB, PAGE_SIZE, PAGE_KERNEL)
    p.tables = pt.place(p.alloc)


def _page_classes(
    rng: np.random.Generator, m: _Machine, p: _Placement
) -> tuple[np.ndarray, list[_Layout]]:
    """PageClass per pfn and the struct-page layout of each unique section."""
    reserved = np.zeros_like(m.ram)
    reserved[: MIB >> PAGE_SHIFT] = True  # the first 1 MiB is always reserved (5.13+)
    reserved[m.k_lo : m.k_hi] = True
    for start, size, _ in p.alloc.used:
        reserved[start >> PAGE_SHIFT : (start + size) >> PAGE_SHIFT] = True
    page_class = np.full(len(m.ram), PageClass.HOLE, dtype=np.uint8)
    layouts: list[_Layout] = []
    for s in m.unique_secs:
        lo, hi = s * PAGES_PER_SECTION, (s + 1) * PAGES_PER_SECTION
        busy_pages = min(PAGES_PER_SECTION, max(0, (m.populated >> PAGE_SHIFT) - lo))
        lay = _layout_section(rng, lo, m.ram[lo:hi], reserved[lo:hi], busy_pages)
        layouts.append(lay)
        page_class[lo:hi] = lay.cls
    for s in map(int, np.flatnonzero(m.idle)):
        page_class[s * PAGES_PER_SECTION : (s + 1) * PAGES_PER_SECTION] = PageClass.FREE
    # a few HWPoison pages among single kernel pages of busy sections
    rows = [
        i * PAGES_PER_SECTION + np.flatnonzero((lay.cls == _C.KERNEL) & (lay.kind == _K_SINGLE))
        for i, lay in enumerate(layouts)
        if m.busy[m.unique_secs[i]]
    ]
    candidates = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    if len(candidates):
        for row in rng.choice(candidates, size=min(3, len(candidates)), replace=False):
            i, off = divmod(int(row), PAGES_PER_SECTION)
            layouts[i].cls[off] = _C.HWPOISON
            page_class[m.unique_secs[i] * PAGES_PER_SECTION + off] = _C.HWPOISON
    return page_class, layouts


def _content_kinds(
    rng: np.random.Generator, m: _Machine, p: _Placement, layouts: list[_Layout]
) -> np.ndarray:
    """Content per pfn: drawn by page class in the busy memory; the kernel image's own mix;
    META for the generator's structures; ZERO elsewhere."""
    content = np.where(m.ram, Content.ZERO, Content.HOLE).astype(np.uint8)
    busy_end = m.populated >> PAGE_SHIFT
    for lay, s in zip(layouts, m.unique_secs, strict=True):
        if not m.busy[s]:
            continue
        lo, hi = s * PAGES_PER_SECTION, (s + 1) * PAGES_PER_SECTION
        u = rng.random(PAGES_PER_SECTION)
        kinds = (u[:, None] > _CONTENT_CUM[lay.cls]).sum(axis=1) + Content.ZERO
        kinds[max(0, busy_end - lo) :] = Content.ZERO
        content[lo:hi] = np.where(m.ram[lo:hi], kinds, Content.HOLE)
    img = m.img
    kimg = np.arange(m.k_lo, m.k_hi)
    u = rng.random(len(kimg))
    off = (kimg - m.k_lo) << PAGE_SHIFT
    content[kimg] = np.select(
        [off < img.text_size, off < img.data, off < img.bss],
        [
            Content.CODE,
            np.where(u < 0.85, Content.TEXT, Content.ZERO),
            np.where(u < 0.6, Content.DATA, Content.ZERO),
        ],
        Content.ZERO,
    )
    meta_lo = (img.phys + img.data) >> PAGE_SHIFT
    content[meta_lo : meta_lo + (_IMAGE_META_BYTES >> PAGE_SHIFT)] = Content.META
    for start, size, _ in p.alloc.used:
        content[start >> PAGE_SHIFT : (start + size) >> PAGE_SHIFT] = Content.META
    for s in map(int, np.flatnonzero(m.idle)):
        content[s * PAGES_PER_SECTION : (s + 1) * PAGES_PER_SECTION] = Content.ZERO
    return content


def _write_mm(
    rng: np.random.Generator,
    m: _Machine,
    p: _Placement,
    layouts: list[_Layout],
    page_class: np.ndarray,
    mem: _Memory,
) -> None:
    """struct pages (with LRU and free lists), mem_section, pglist_data and its zones."""
    n_unique = len(m.unique_secs)
    sp = np.zeros(n_unique * PAGES_PER_SECTION, dtype=PAGE_DTYPE)
    slab_pfns = np.flatnonzero(page_class == _C.SLAB)
    if not len(slab_pfns):
        slab_pfns = np.arange(m.k_lo, m.k_hi)

    def objects(count: int, size: int) -> np.ndarray:
        pf = rng.choice(slab_pfns, size=count).astype(np.uint64)
        slot = rng.integers(0, PAGE_SIZE // size, count).astype(np.uint64) * np.uint64(size)
        return _u64(m.page_offset_base) + (pf << np.uint64(PAGE_SHIFT)) + slot

    pools = _Pools(objects(48, 256), objects(256, 512), objects(512, 128), objects(512, 128))
    for i, s in enumerate(m.unique_secs):
        rows = slice(i * PAGES_PER_SECTION, (i + 1) * PAGES_PER_SECTION)
        _fill_struct_pages(rng, sp[rows], layouts[i], s * PAGES_PER_SECTION, m, pools)
    secs = np.array(m.unique_secs, dtype=np.int64)
    row_pfn = np.repeat(secs, PAGES_PER_SECTION) * PAGES_PER_SECTION + np.tile(
        np.arange(PAGES_PER_SECTION), n_unique
    )
    kind = np.concatenate([lay.kind for lay in layouts]) if layouts else np.zeros(0, np.uint8)
    cls = np.concatenate([lay.cls for lay in layouts]) if layouts else np.zeros(0, np.uint8)

    def link(rows: np.ndarray, head: int) -> None:
        _link_list(sp, rows, row_pfn, m.vmemmap_base, m.dm(head), mem, head)

    # LRU lists (one file, one anon) with their heads in pglist_data
    lru = p.pgdat + OFF_PGDAT_LRU_LISTS
    link(np.flatnonzero(np.isin(cls, (_C.CACHE, _C.CACHE_PRIVATE)) & (kind == _K_SINGLE)), lru)
    anon = (cls == _C.ANON) & ((kind == _K_SINGLE) | (kind == _K_COMP_HEAD))
    link(np.flatnonzero(anon), lru + SIZEOF_LIST_HEAD)
    # free lists: buddy heads of the unique sections by (zone, order, migrate type)
    heads = np.flatnonzero(kind == _K_FREE_HEAD)
    h_zone = _zone_of(row_pfn[heads])
    h_order = sp["private"][heads].astype(np.int64)
    h_mt = np.concatenate([lay.mt for lay in layouts])[heads // PAGES_PER_CHUNK]
    nr_free = np.zeros((MAX_NR_ZONES, MAX_ORDER), dtype=np.int64)
    for z in range(MAX_NR_ZONES):
        for o in range(MAX_ORDER):
            for mt in range(MIGRATE_TYPES):
                sel = heads[(h_zone == z) & (h_order == o) & (h_mt == mt)]
                nr_free[z, o] += len(sel)
                head_off = OFF_ZONE_FREE_AREA + o * SIZEOF_FREE_AREA + mt * SIZEOF_LIST_HEAD
                link(sel, p.pgdat + z * SIZEOF_ZONE + head_off)
    for i, s in enumerate(m.unique_secs):
        mem.write(p.vmemmap[s], sp[i * PAGES_PER_SECTION : (i + 1) * PAGES_PER_SECTION])
    for z, phys in p.shared_vmemmap.items():
        mem.write(phys, _idle_struct_pages(z))

    # mem_section: SPARSEMEM_EXTREME roots; section_mem_map encodes vmemmap - start pfn
    for r, page in p.roots.items():
        mem.write_u64(p.root_array + r * 8, m.dm(page))
    flags = SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP | SECTION_IS_ONLINE | SECTION_IS_EARLY
    for n, s in enumerate(map(int, np.flatnonzero(m.present))):
        ms = p.roots[s // SECTIONS_PER_ROOT] + (s % SECTIONS_PER_ROOT) * SIZEOF_MEM_SECTION
        usage = p.usage + 64 * n
        mem.write(ms, struct.pack("<QQQQ", m.vmemmap_base | flags, m.dm(usage), 0, 0))
        mem.write(usage, struct.pack("<Q", U64) + bytes([0x11]) * 32)  # MIGRATE_MOVABLE

    # pglist_data of node 0 and its zones
    spanned = np.bincount(_zone_of(np.arange(m.max_pfn)), minlength=MAX_NR_ZONES)
    free = np.bincount(
        _zone_of(np.flatnonzero(page_class[: m.max_pfn] == _C.FREE)), minlength=MAX_NR_ZONES
    )
    for z in range(MAX_NR_ZONES):
        zone = p.pgdat + z * SIZEOF_ZONE
        mem.write_u64(zone + OFF_ZONE_SPANNED_PAGES, int(spanned[z]))
        mem.write_u64(zone + OFF_ZONE_VM_STAT, int(free[z]))  # vm_stat[NR_FREE_PAGES]
        for o in range(MAX_ORDER):
            nr_free_at = zone + OFF_ZONE_FREE_AREA + o * SIZEOF_FREE_AREA + 96
            mem.write_u64(nr_free_at, int(nr_free[z, o]))
    nr_zones = int(np.flatnonzero(spanned)[-1]) + 1
    mem.write(p.pgdat + OFF_PGDAT_NR_ZONES, struct.pack("<i", nr_zones))
    present_pages = int(m.ram[: m.max_pfn].sum())
    mem.write(
        p.pgdat + OFF_PGDAT_NODE_START_PFN,
        struct.pack("<QQQi", 0, present_pages, m.max_pfn, 0),  # start, present, spanned, id
    )


def _write_kernel(
    rng: np.random.Generator,
    m: _Machine,
    p: _Placement,
    mem: _Memory,
    *,
    release: str,
    nodename: str,
    dmesg: Sequence[PrintkRecord | str] | None,
    size_bits: int,
) -> tuple[Utsname, str, int, PrintkRing]:
    """The kernel image's objects: utsname, banner, node maps, mem_section, the printk ring,
    page tables. Returns (utsname, build id, pid of the crashing task, ring)."""
    img = m.img
    uts = Utsname(
        sysname="Linux",
        nodename=nodename,
        release=release,
        version=f"#1 SMP PREEMPT_DYNAMIC Debian {release.split('-')[0]}-synth (2024-01-01)",
        machine="x86_64",
        domainname="(none)",
    )
    build_id = rng.integers(0, 256, 20, dtype=np.uint8).tobytes().hex()
    pid = 1000 + int(rng.integers(0, 30000))
    mem.write(img.pa("init_uts_ns"), uts.pack())
    banner = f"Linux version {release} (debian-kernel@lists.debian.org) {uts.version}\n\0"
    mem.write(img.pa("linux_banner"), banner.encode())
    mem.write(img.pa("node_online_map"), struct.pack("<Q", 1))
    vmap = img.va("vmap_area_list")
    mem.write(img.pa("vmap_area_list"), struct.pack("<QQ", vmap, vmap))  # empty list
    mem.write_u64(img.pa("mem_section"), m.dm(p.root_array))
    mem.write_u64(img.pa("node_data"), m.dm(p.pgdat))
    if dmesg is None:
        dmesg = default_dmesg(
            uts,
            mem_bytes=m.top,
            crash=m.crash,
            nr_cpus=m.nr_cpus,
            kerneloffset=m.kerneloffset,
            pid=pid,
        )
    ring = build_printk_ring(dmesg, size_bits=size_bits, count_bits=size_bits - 5)
    descs = img.objects["_printk_rb_static_descs"]
    infos = descs + len(ring.descs)
    text = _align_up(infos + len(ring.infos), PAGE_SIZE)
    img.objects.update({"_printk_rb_static_infos": infos, "__log_buf": text})
    for off, data in ((descs, ring.descs), (infos, ring.infos), (text, ring.data)):
        mem.write(img.phys + off, data)
    prb = printk_ringbuffer_struct(ring, img.text + descs, img.text + infos, img.text + text)
    mem.write(img.pa("printk_rb_static"), prb)
    mem.write_u64(img.pa("prb"), img.va("printk_rb_static"))
    mem.write(img.pa("clear_seq"), bytes(24))  # latched_seq: never cleared
    for phys, table in p.tables:
        mem.write(phys, table)
    return uts, build_id, pid, ring


_GPRS = ("r15", "r14", "r13", "r12", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
         "rsi", "rdi")  # fmt: skip


def _write_cpus(
    rng: np.random.Generator, m: _Machine, p: _Placement, mem: _Memory, pid: int
) -> tuple[list[dict[str, int]], list[int]]:
    """Per-CPU areas and stacks; the registers of each CPU's NT_PRSTATUS note.

    CPU 0 panicked (registers saved in __crash_kexec); the others were stopped by the crash
    NMI while idle.
    """
    img = m.img
    registers: list[dict[str, int]] = []
    pids: list[int] = []
    for cpu in range(m.nr_cpus):
        words = rng.integers(0, 1 << 63, 16 * KIB // 8, dtype=np.uint64)
        ret_addrs = rng.integers(0, img.text_size, len(words[::3])).astype(np.uint64)
        words[::3] = _u64(img.text) + ret_addrs
        mem.write(p.stacks[cpu], words)
        mem.write_u64(p.percpu[cpu], m.dm(p.percpu[cpu]))  # this_cpu_off
        top = p.stack_va[cpu] + 16 * KIB
        regs = {r: int(x) for r, x in zip(_GPRS, rng.integers(0, 1 << 32, 14), strict=True)}
        regs.update(cs=0x10, ss=0x18, gs_base=m.dm(p.percpu[cpu]), orig_rax=U64)
        if cpu == 0:
            regs.update(rip=img.va("__crash_kexec") + 0x6D, rsp=top - 0x1A8, rbp=top - 0x168)
            regs.update(eflags=0x46, fs_base=0x7F3A_2C3D_8740)
            pids.append(pid)
        else:
            regs.update(rip=img.va("native_safe_halt") + 0xB, rsp=top - 0x30, rbp=0)
            regs.update(eflags=0x246, fs_base=0)
            pids.append(0)
        registers.append(regs)
    return registers, pids


def make_vmcore(
    path: str | os.PathLike[str],
    *,
    mem_mib: int = 64,
    kaslr: bool = True,
    seed: int = 0,
    holes: bool = True,
    nr_cpus: int = 2,
    five_level: bool = False,
    populated_mib: int | None = None,
    dmesg: Sequence[PrintkRecord | str] | None = None,
    log_buf_shift: int = 17,
    release: str = "6.1.0-synth-amd64",
    nodename: str = "synth",
    crashtime: int = 1_718_000_000,
    kernel_segment: bool = True,
    vmcoreinfo_drop: Sequence[str] = (),
    vmcoreinfo_extra: Mapping[str, str] | None = None,
) -> SynthInfo:
    """Write a synthetic x86_64 ELF vmcore to ``path`` and return what it contains.

    ``mem_mib``: the physical address space (RAM minus holes when ``holes``); at least 32.
    ``populated_mib``: how much of it (from address 0, 2 MiB granularity, at least 16) holds a
    busy machine's pages; the rest is free order-10 blocks of zero pages, written as file holes
    (default: 64). ``dmesg``: the kernel log records (default: a boot log ending in a sysrq
    panic); ``log_buf_shift``: log2 of the printk text ring (CONFIG_LOG_BUF_SHIFT).
    ``kernel_segment``: add the kernel-image PT_LOAD that real vmcores have.
    ``vmcoreinfo_drop`` / ``vmcoreinfo_extra``: remove keys from / append lines to VMCOREINFO
    (to imitate other kernel versions).
    """
    if mem_mib < 32:
        raise ValueError("mem_mib must be at least 32")
    if not 1 <= nr_cpus <= 64:
        raise ValueError("nr_cpus must be 1..64")
    if not 12 <= log_buf_shift <= 25:
        raise ValueError("log_buf_shift must be 12..25")
    rng = np.random.default_rng(seed)
    count_bits = log_buf_shift - 5  # PRB_AVGBITS
    ring_bytes = _align_up((SIZEOF_PRB_DESC + SIZEOF_PRINTK_INFO) << count_bits, PAGE_SIZE)
    ring_bytes += 1 << log_buf_shift
    m = _plan(
        rng,
        mem_mib=mem_mib,
        populated_mib=populated_mib,
        kaslr=kaslr,
        holes=holes,
        five_level=five_level,
        nr_cpus=nr_cpus,
        ring_bytes=ring_bytes,
    )
    p = _allocate(m)
    _page_tables(m, p)
    page_class, layouts = _page_classes(rng, m, p)
    content = _content_kinds(rng, m, p, layouts)

    mem = _Memory()
    templates: dict[int, np.ndarray] = {
        Content.TEXT: _text_templates(rng, 64),
        Content.CODE: _code_templates(rng, 64),
        Content.DATA: _data_templates(rng, 64, m.page_offset_base, m.populated, m.img.text),
    }
    const_value: dict[int, int] = {}
    _fill_pages(rng, mem, content, 0, len(content), templates, const_value)
    _write_mm(rng, m, p, layouts, page_class, mem)
    uts, build_id, pid, ring = _write_kernel(
        rng, m, p, mem, release=release, nodename=nodename, dmesg=dmesg, size_bits=log_buf_shift
    )
    registers, pids = _write_cpus(rng, m, p, mem, pid)

    sym = {name: m.img.text + off for name, off in m.img.objects.items()}
    sym["swapper_pg_dir"] = sym["init_top_pgt"]
    vmcoreinfo = _vmcoreinfo(
        release=release,
        build_id=build_id,
        sym=sym,
        mem_section=m.dm(p.root_array),
        five_level=five_level,
        phys_base=m.phys_base,
        kerneloffset=m.kerneloffset,
        crashtime=crashtime,
        drop=vmcoreinfo_drop,
        extra=vmcoreinfo_extra or {},
    )
    notes = [build_prstatus(X86_64, pd, r) for pd, r in zip(pids, registers, strict=True)]
    notes.append(Note("VMCOREINFO", 0, vmcoreinfo.encode()))
    path = os.fspath(path)
    segments, kseg, file_size, zero = _write_elf(
        path,
        mem,
        m.ram_ranges,
        build_notes(notes),
        m.page_offset_base,
        m.max_pfn,
        (m.img.phys, m.img.size, m.img.text) if kernel_segment else None,
    )
    sym["mem_section"] = m.dm(p.root_array)  # the root array, as VMCOREINFO says
    sym.update({f"stack_top_cpu{c}": va + 16 * KIB for c, va in enumerate(p.stack_va)})
    return SynthInfo(
        path=path,
        page_size=PAGE_SIZE,
        max_pfn=m.max_pfn,
        segments=segments,
        kernel_segment=kseg,
        crashkernel=m.crash,
        page_class=page_class[: m.max_pfn].copy(),
        content=content[: m.max_pfn].copy(),
        zero=zero,
        const_value=const_value,
        kerneloffset=m.kerneloffset,
        phys_base=m.phys_base,
        kernel_phys=m.img.phys,
        kernel_size=m.img.size,
        page_offset_base=m.page_offset_base,
        vmalloc_base=m.vmalloc_base,
        vmemmap_base=m.vmemmap_base,
        five_level=five_level,
        symbols=sym,
        utsname=uts,
        build_id=build_id,
        crashtime=crashtime,
        nr_cpus=nr_cpus,
        panic_cpu=0,
        pids=tuple(pids),
        registers=tuple(registers),
        vmcoreinfo=vmcoreinfo,
        printk_records=ring.records,
        dmesg=tuple(dmesg_lines(ring.records)),
        seed=seed,
        file_size=file_size,
        idle_sections=int(m.idle.sum()),
    )


@dataclass(frozen=True)
class _Pools:
    """Addresses of slab objects that struct pages point to."""

    kmem_caches: np.ndarray
    address_spaces: np.ndarray
    anon_vmas: np.ndarray
    buffer_heads: np.ndarray


def _fill_struct_pages(
    rng: np.random.Generator,
    sp: np.ndarray,
    lay: _Layout,
    base_pfn: int,
    mach: _Machine,
    pools: _Pools,
) -> None:
    """Fill one section's ``struct page`` array from its layout (vectorised by class)."""
    n = len(sp)
    pfns = base_pfn + np.arange(n)
    cls, kind, num, dtor = lay.cls, lay.kind, lay.n, lay.dtor
    flags = (_zone_of(pfns).astype(np.uint64) << np.uint64(ZONES_PGSHIFT)) | _u64(LAST_CPUPID_MASK)
    mapcount = np.full(n, -1, np.int32)
    refcount = np.zeros(n, np.int32)
    lru_next = np.zeros(n, np.uint64)
    lru_prev = np.zeros(n, np.uint64)
    mapping = np.zeros(n, np.uint64)
    index = np.zeros(n, np.uint64)
    private = np.zeros(n, np.uint64)

    def bit(*names: str) -> np.uint64:
        return _u64(sum(1 << PG[nm] for nm in names))

    def pick(pool: np.ndarray, m: np.ndarray) -> np.ndarray:
        return pool[rng.integers(0, len(pool), int(m.sum()))]

    single, head, tail = kind == _K_SINGLE, kind == _K_COMP_HEAD, kind == _K_COMP_TAIL
    m = (cls == _C.RESERVED) | (cls == _C.HOLE)
    flags[m] |= bit("reserved")
    refcount[m] = 1
    m = kind == _K_FREE_HEAD
    mapcount[m] = PAGE_BUDDY_MAPCOUNT_VALUE
    private[m] = num[m].astype(np.uint64)
    m = single & ((cls == _C.KERNEL) | (cls == _C.HWPOISON))
    refcount[m] = 1
    flags[single & (cls == _C.HWPOISON)] |= bit("hwpoison")
    m = cls == _C.PGTABLE
    refcount[m], mapcount[m] = 1, PAGE_TABLE_MAPCOUNT_VALUE
    m = cls == _C.OFFLINE
    refcount[m], mapcount[m] = 1, PAGE_OFFLINE_MAPCOUNT_VALUE
    # page cache
    m = (cls == _C.CACHE) | (cls == _C.CACHE_PRIVATE)
    r = rng.random(n)
    flags[m] |= bit("lru", "uptodate")
    flags[m & (r < 0.5)] |= bit("referenced")
    flags[m & (r < 0.3)] |= bit("active")
    flags[m & (r > 0.9)] |= bit("dirty")
    priv = cls == _C.CACHE_PRIVATE
    flags[priv] |= bit("private")
    mapping[m] = pick(pools.address_spaces, m)
    index[m] = rng.integers(0, 1 << 20, int(m.sum())).astype(np.uint64)
    private[priv] = pick(pools.buffer_heads, priv)
    mapped = m & (r > 0.7)
    mapcount[mapped] = rng.integers(0, 3, int(mapped.sum()))
    refcount[m] = 1 + np.maximum(mapcount[m] + 1, 0) + priv[m]
    # anonymous pages (order 0 and THP heads)
    anon = (cls == _C.ANON) & (single | head)
    flags[anon] |= bit("lru", "swapbacked", "uptodate", "dirty")
    flags[anon & (r < 0.5)] |= bit("active")
    mapping[anon] = pick(pools.anon_vmas, anon) | np.uint64(PAGE_MAPPING_ANON)
    index[anon] = (
        _u64(0x7F00_0000_0000)
        + rng.integers(0, 1 << 30, int(anon.sum())).astype(np.uint64) * np.uint64(PAGE_SIZE)
    ) >> np.uint64(PAGE_SHIFT)
    swap = anon & single & (r > 0.92)
    flags[swap] |= bit("owner_priv_1")
    private[swap] = rng.integers(1, 1 << 24, int(swap.sum())).astype(np.uint64) << np.uint64(5)
    mapcount[anon & single] = 0
    refcount[anon] = 1 + swap[anon]
    flags[anon & head] |= bit("head")
    # slab (order 0 and compound heads)
    slab = (cls == _C.SLAB) & (single | head)
    flags[slab] |= bit("slab")
    flags[slab & head] |= bit("head")
    lru_next[slab], lru_prev[slab] = _u64(LIST_POISON1), _u64(LIST_POISON2)
    mapping[slab] = pick(pools.kmem_caches, slab)
    index[slab] = (
        _u64(mach.page_offset_base)
        + pfns[slab].astype(np.uint64) * np.uint64(PAGE_SIZE)
        + rng.integers(0, 64, int(slab.sum())).astype(np.uint64) * np.uint64(64)
    )
    inuse = rng.integers(1, 32, int(slab.sum())).astype(np.uint64)
    private[slab] = inuse | (np.uint64(32) << np.uint64(16))
    refcount[slab] = 1
    # hugetlb heads: in use (file mapping) or free in the pool
    huge = (cls == _C.HUGETLB) & head
    flags[huge] |= bit("head", "uptodate")
    used = huge & (r < 0.6)
    mapping[used] = pick(pools.address_spaces, used)
    private[huge] = np.where(used[huge], 2, 8).astype(np.uint64)  # HPG_migratable / HPG_freed
    refcount[used] = 1
    # compound tails: compound_head | 1; the first tail holds dtor/order (6.1 layout)
    head_pfn = pfns - num
    lru_next[tail] = (
        _u64(mach.vmemmap_base) + head_pfn[tail].astype(np.uint64) * np.uint64(SIZEOF_PAGE)
    ) | np.uint64(1)
    order_of_head = np.zeros(n, np.uint64)
    order_of_head[head] = num[head].astype(np.uint64)
    first = tail & (num == 1)
    head_order = order_of_head[np.clip(np.flatnonzero(first) - 1, 0, n - 1)]
    cmapcount = np.where(cls[first] == _C.ANON, 0, 0xFFFFFFFF).astype(np.uint64)
    lru_prev[first] = (
        dtor[first].astype(np.uint64) | (head_order << np.uint64(8)) | (cmapcount << np.uint64(32))
    )
    index[first] = np.uint64(1) << head_order  # compound_nr
    mapping[tail & (num >= 2)] = _u64(TAIL_MAPPING)
    sp["flags"], sp["lru_next"], sp["lru_prev"] = flags, lru_next, lru_prev
    sp["mapping"], sp["index"], sp["private"] = mapping, index, private
    sp["mapcount"], sp["refcount"], sp["memcg"] = mapcount, refcount, 0


def _link_list(
    sp: np.ndarray,
    rows: np.ndarray,
    row_pfn: np.ndarray,
    vmemmap_base: int,
    head_va: int,
    mem: _Memory,
    head_pa: int,
) -> None:
    """Chain the ``lru`` of ``sp[rows]`` (pfn order) into the list whose head is at ``head_va``."""
    if not len(rows):
        mem.write(head_pa, struct.pack("<QQ", head_va, head_va))
        return
    lru = _u64(vmemmap_base + 8) + row_pfn[rows].astype(np.uint64) * np.uint64(SIZEOF_PAGE)
    nxt = np.concatenate((lru[1:], [_u64(head_va)]))
    prv = np.concatenate(([_u64(head_va)], lru[:-1]))
    sp["lru_next"][rows] = nxt
    sp["lru_prev"][rows] = prv
    mem.write(head_pa, struct.pack("<QQ", int(lru[0]), int(lru[-1])))


def _idle_struct_pages(zone: int) -> np.ndarray:
    """A fully free section's struct pages: 32 free order-10 blocks (shared by idle sections)."""
    sp = np.zeros(PAGES_PER_SECTION, dtype=PAGE_DTYPE)
    sp["flags"] = (np.uint64(zone) << np.uint64(ZONES_PGSHIFT)) | _u64(LAST_CPUPID_MASK)
    sp["mapcount"] = -1
    heads = sp[:: 1 << (MAX_ORDER - 1)]
    heads["mapcount"] = PAGE_BUDDY_MAPCOUNT_VALUE
    heads["private"] = MAX_ORDER - 1
    heads["lru_next"], heads["lru_prev"] = LIST_POISON1, LIST_POISON2
    sp[:: 1 << (MAX_ORDER - 1)] = heads
    return sp


def _write_elf(
    path: str,
    mem: _Memory,
    ram_ranges: Sequence[tuple[int, int]],
    notes: bytes,
    page_offset_base: int,
    max_pfn: int,
    kernel: tuple[int, int, int] | None,
) -> tuple[tuple[Segment, ...], Segment | None, int, np.ndarray]:
    """Write the ELF core sparsely: only non-zero pages are written; return the PT_LOAD map."""
    phnum = 1 + len(ram_ranges) + (kernel is not None)
    note_off = 64 + 56 * phnum
    offset = _align_up(note_off + len(notes), PAGE_SIZE)
    segments = []
    for lo, hi in ram_ranges:
        segments.append(Segment(paddr=lo, size=hi - lo, offset=offset, vaddr=page_offset_base + lo))
        offset += _align_up(hi - lo, PAGE_SIZE)
    file_size = offset
    kseg = None
    if kernel is not None:
        kphys, ksize, kva = kernel
        holder = next(s for s in segments if s.paddr <= kphys < s.paddr + s.size)
        kseg = Segment(
            paddr=kphys, size=ksize, offset=holder.offset + kphys - holder.paddr, vaddr=kva
        )
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + bytes(9),
        4,
        X86_64.e_machine,
        1,
        0,
        64,
        0,
        0,
        64,
        56,
        phnum,
        0,
        0,
        0,
    )
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)]
    for s in ([kseg] if kseg else []) + segments:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 7, s.offset, s.vaddr, s.paddr, s.size, s.size, 0))
    zero = np.zeros(max_pfn, dtype=bool)
    for lo, hi in ram_ranges:
        zero[lo >> PAGE_SHIFT : hi >> PAGE_SHIFT] = True
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, file_size)
        os.pwrite(fd, ehdr + b"".join(phdrs) + notes, 0)
        for cid in sorted(mem.chunks):
            arr = mem.chunks[cid]
            nonzero = np.asarray(
                arr.view(np.uint64).reshape(PAGES_PER_CHUNK, PAGE_SIZE // 8).any(axis=1)
            )
            base = cid * PAGES_PER_CHUNK
            for s in segments:
                lo = max(base, s.start_pfn)
                hi = min(base + PAGES_PER_CHUNK, s.end_pfn)
                if lo >= hi:
                    continue
                nz = nonzero[lo - base : hi - base]
                zero[lo:hi] = ~nz
                edges = np.flatnonzero(np.diff(np.concatenate(([0], nz.astype(np.int8), [0]))))
                for a, b in edges.reshape(-1, 2):
                    pa, pb = (lo + int(a) - base) * PAGE_SIZE, (lo + int(b) - base) * PAGE_SIZE
                    os.pwrite(
                        fd, arr[pa:pb].tobytes(), s.offset + (base << PAGE_SHIFT) + pa - s.paddr
                    )
    finally:
        os.close(fd)
    return tuple(segments), kseg, file_size, zero


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.synth OUT [--mem-mib N] ...``: write a vmcore, print its facts."""
    ap = argparse.ArgumentParser(prog="python -m tests.synth", description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--mem-mib", type=int, default=64)
    ap.add_argument("--populated-mib", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--no-kaslr", action="store_true")
    ap.add_argument("--no-holes", action="store_true")
    ap.add_argument("--five-level", action="store_true")
    args = ap.parse_args(argv)
    info = make_vmcore(
        args.out,
        mem_mib=args.mem_mib,
        kaslr=not args.no_kaslr,
        seed=args.seed,
        holes=not args.no_holes,
        nr_cpus=args.cpus,
        five_level=args.five_level,
        populated_mib=args.populated_mib,
    )
    json.dump(info.summary(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
