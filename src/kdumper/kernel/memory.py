"""The crashed kernel's virtual memory, from VMCOREINFO alone (no debug info).

x86_64: kernel-image addresses translate directly (``__pa_symbol``: vaddr - __START_KERNEL_map +
phys_base); everything else (direct map, vmemmap, vmalloc) through a walk of the kernel's own page
tables from ``SYMBOL(init_top_pgt)``, 4- or 5-level (``NUMBER(pgtable_l5_enabled)``), with 1 GiB and
2 MiB leaves and the SME encryption bit masked off. Page-table pages are cached, and
:meth:`KernelMemory.extents` hands out whole contiguous leaves so bulk readers (``struct page``
arrays) translate once per 2 MiB or 1 GiB, not once per page.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator

from ..dump.base import Dump
from ..dump.vmcoreinfo import VmcoreInfo
from ..errors import AddressNotMappedError, KdumperError, UnsupportedError

START_KERNEL_MAP = 0xFFFFFFFF80000000
_PRESENT = 1 << 0
_PSE = 1 << 7  # a leaf at PUD (1 GiB) or PMD (2 MiB) level
_ADDR_MASK = 0x000FFFFFFFFFF000  # bits 12..51: the next table or page frame
_TABLE_CACHE = 256  # page-table pages kept (1 MiB): a full walk of a 64 GiB vmemmap fits


def _require_vmcoreinfo(dump: Dump) -> VmcoreInfo:
    info = dump.vmcoreinfo
    if info is None:
        raise UnsupportedError(f"{dump.path}: the dump has no VMCOREINFO; kernel memory is unknown")
    return info


class KernelMemory:
    """Virtual-address reads in the crashed kernel (x86_64)."""

    def __init__(self, dump: Dump) -> None:
        if dump.arch.name != "x86_64":
            raise UnsupportedError(
                f"{dump.path}: kernel address translation for {dump.arch.name} is not supported yet"
            )
        self.dump = dump
        self.info = info = _require_vmcoreinfo(dump)
        self.phys_base = info.number("phys_base") or 0
        top = info.symbol("init_top_pgt") or info.symbol("init_level4_pgt")
        if top is None:
            raise UnsupportedError(f"{dump.path}: VMCOREINFO has no SYMBOL(init_top_pgt)")
        self.pgd_phys = self.kernel_image_pa(top)
        self.levels = 5 if info.number("pgtable_l5_enabled") else 4
        self.entry_mask = _ADDR_MASK & ~(info.number("sme_mask") or 0)
        self._tables: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._u64 = struct.Struct("<Q")

    def kernel_image_pa(self, vaddr: int) -> int:
        """Physical address of a kernel-image (text/data/bss) virtual address."""
        return vaddr - START_KERNEL_MAP + self.phys_base

    def _table(self, phys: int) -> tuple[int, ...]:
        entries = self._tables.get(phys)
        if entries is None:
            entries = struct.unpack("<512Q", self.dump.read_phys(phys, 4096))
            self._tables[phys] = entries
            if len(self._tables) > _TABLE_CACHE:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(phys)
        return entries

    def translate(self, vaddr: int) -> tuple[int, int]:
        """``(paddr, span)``: the physical address and how many bytes stay contiguous after it."""
        vaddr &= (1 << 64) - 1
        table = self.pgd_phys
        shift = 39 + 9 * (self.levels - 4)
        while True:
            index = (vaddr >> shift) & 0x1FF
            try:
                entry = self._table(table)[index]
            except KdumperError as e:
                raise AddressNotMappedError(vaddr, f"page table unreadable: {e}") from None
            if not entry & _PRESENT:
                raise AddressNotMappedError(vaddr, f"level-{shift} entry not present")
            base = entry & self.entry_mask
            if shift == 12 or (shift in (21, 30) and entry & _PSE):
                size = 1 << shift
                offset = vaddr & (size - 1)
                if shift != 12:
                    base &= ~(size - 1)
                return base + offset, size - offset
            table = base
            shift -= 9

    def vtop(self, vaddr: int) -> int:
        """Physical address of ``vaddr``."""
        if START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + (1 << 30):
            return self.kernel_image_pa(vaddr)
        return self.translate(vaddr)[0]

    def extents(self, vaddr: int, size: int) -> Iterator[tuple[int, int, int]]:
        """``(vaddr, paddr, length)`` pieces covering ``[vaddr, vaddr+size)``, one per leaf run."""
        end = vaddr + size
        while vaddr < end:
            paddr, span = self.translate(vaddr)
            length = min(span, end - vaddr)
            yield vaddr, paddr, length
            vaddr += length

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual address ``vaddr``."""
        if START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + (1 << 30):
            return self.dump.read_phys(self.kernel_image_pa(vaddr), size)
        return b"".join(self.dump.read_phys(p, n) for _, p, n in self.extents(vaddr, size))

    def read_u64(self, vaddr: int) -> int:
        """An unsigned 64-bit word."""
        return int(self._u64.unpack(self.read(vaddr, 8))[0])

    def read_u32(self, vaddr: int) -> int:
        """An unsigned 32-bit word."""
        return int(struct.unpack("<I", self.read(vaddr, 4))[0])

    def read_symbol(self, name: str, size: int) -> bytes:
        """``size`` bytes at ``SYMBOL(name)``."""
        addr = self.info.symbol(name)
        if addr is None:
            raise UnsupportedError(f"{self.dump.path}: VMCOREINFO has no SYMBOL({name})")
        return self.read(addr, size)


def kernel_memory(dump: Dump) -> KernelMemory:
    """The :class:`KernelMemory` of ``dump`` (one per dump object, cached on it)."""
    cached = getattr(dump, "_kernel_memory", None)
    if cached is None:
        cached = KernelMemory(dump)
        dump._kernel_memory = cached  # type: ignore[attr-defined]
    return cached
