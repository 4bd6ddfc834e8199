"""The synthetic vmcore generator (tests/synth.py) against its own ground truth and the oracles.

Self-checks read the written file with code independent of the generator (ELF headers, a page
table walker, a struct-page classifier written from makedumpfile's rules); the oracle tests run
makedumpfile (1.7.2 from Debian, 1.7.6 when unpacked under ~/.cache/kdumper/tools) and drgn.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdumper.dump.arch import X86_64
from kdumper.dump.notes import parse_notes, parse_prstatus
from kdumper.dump.vmcoreinfo import VmcoreInfo
from tests.synth import (
    PAGE_SIZE,
    Content,
    PageClass,
    PrintkRecord,
    SynthInfo,
    build_printk_ring,
    dmesg_lines,
    main,
    make_vmcore,
)

START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
ENTRY_MASK = 0x000F_FFFF_FFFF_F000


# ----------------------------------------------------------------------------- helpers


def sha(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Elf:
    """An independent reader of the ELF core: program headers, notes, physical reads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 - closed by the fixture's finaliser
        ehdr = self.f.read(64)
        assert ehdr[:7] == b"\x7fELF\x02\x01\x01"
        e_type, e_machine = struct.unpack_from("<HH", ehdr, 16)
        (phoff,) = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        assert (e_type, e_machine, phentsize) == (4, 62, 56)
        self.f.seek(phoff)
        raw = self.f.read(56 * phnum)
        self.phdrs = [struct.unpack_from("<IIQQQQQQ", raw, 56 * i) for i in range(phnum)]
        notes = [p for p in self.phdrs if p[0] == 4]
        assert len(notes) == 1
        self.f.seek(notes[0][2])
        self.notes = self.f.read(notes[0][5])
        self.loads = [p for p in self.phdrs if p[0] == 1]

    def phys(self, paddr: int, size: int) -> bytes:
        for _t, _fl, off, _va, pa, filesz, _memsz, _al in self.loads:
            if pa <= paddr and paddr + size <= pa + filesz:
                self.f.seek(off + paddr - pa)
                return self.f.read(size)
        raise KeyError(hex(paddr))

    def u64(self, paddr: int) -> int:
        return int(struct.unpack("<Q", self.phys(paddr, 8))[0])

    def vmcoreinfo(self) -> VmcoreInfo:
        for note in parse_notes(self.notes):
            if note.name == "VMCOREINFO":
                return VmcoreInfo.parse(note.desc)
        raise AssertionError("no VMCOREINFO note")


class Walker:
    """x86_64 page-table walk from VMCOREINFO alone (as makedumpfile's vtop4_x86_64 does)."""

    def __init__(self, elf: Elf) -> None:
        self.elf = elf
        vi = elf.vmcoreinfo()
        self.levels = 5 if vi.number("pgtable_l5_enabled") else 4
        phys_base = vi.number("phys_base")
        top = vi.symbol("init_top_pgt")
        assert phys_base is not None and top is not None
        self.pgd = (top - START_KERNEL_MAP + phys_base) & ((1 << 64) - 1)

    def vtop(self, vaddr: int) -> int:
        table = self.pgd
        shifts = (48, 39, 30, 21, 12)[5 - self.levels :]
        for shift in shifts:
            entry = self.elf.u64(table + ((vaddr >> shift) & 511) * 8)
            if not entry & 1:
                raise KeyError(f"{vaddr:#x} not mapped at level shift {shift}")
            if shift == 12 or (shift in (21, 30) and entry & 0x80):
                mask = (1 << shift) - 1
                return (entry & ENTRY_MASK & ~mask) | (vaddr & mask)
            table = entry & ENTRY_MASK
        raise AssertionError("unreachable")

    def read(self, vaddr: int, size: int) -> bytes:
        out = b""
        while size:
            n = min(size, PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)))
            out += self.elf.phys(self.vtop(vaddr), n)
            vaddr, size = vaddr + n, size - n
        return out


PAGE = np.dtype(
    {
        "names": ["flags", "head", "dtor", "order", "mapping", "private", "mapcount", "refcount"],
        "formats": ["<u8", "<u8", "u1", "u1", "<u8", "<u8", "<i4", "<i4"],
        "offsets": [0, 8, 16, 17, 24, 40, 48, 52],
        "itemsize": 64,
    }
)


def classify(vi: VmcoreInfo, pages: np.ndarray) -> np.ndarray:
    """PageClass per struct page by makedumpfile's rules for a 6.1 kernel (written apart from
    the generator: a compound head classifies its tails)."""

    def flag(name: str) -> np.ndarray:
        nr = vi.number(name)
        assert nr is not None
        bits: np.ndarray = (pages["flags"] >> np.uint64(nr)) & np.uint64(1) != 0
        return bits

    n = len(pages)
    head_mask = np.uint64(vi.number("PG_head_mask") or 0)
    is_head = pages["flags"] & head_mask != 0
    dtor = np.zeros(n, np.uint8)
    order = np.zeros(n, np.int64)
    idx = np.flatnonzero(is_head[:-1])
    dtor[idx], order[idx] = pages["dtor"][idx + 1], pages["order"][idx + 1]
    slab = flag("PG_slab")
    anon = (pages["mapping"] & np.uint64(1) != 0) & ~slab
    lru = flag("PG_lru")
    cache = lru | (flag("PG_swapcache") & flag("PG_swapbacked"))
    out = np.full(n, PageClass.KERNEL, dtype=np.uint8)
    out[(pages["flags"] >> np.uint64(12)) & np.uint64(1) != 0] = PageClass.RESERVED  # PG_reserved
    out[slab] = PageClass.SLAB
    out[pages["mapcount"] == ~0x200] = PageClass.PGTABLE
    out[pages["mapcount"] == vi.number("PAGE_OFFLINE_MAPCOUNT_VALUE")] = PageClass.OFFLINE
    out[cache & ~anon] = PageClass.CACHE
    out[cache & ~anon & flag("PG_private")] = PageClass.CACHE_PRIVATE
    out[anon] = PageClass.ANON
    out[flag("PG_hwpoison")] = PageClass.HWPOISON
    for i in np.flatnonzero(is_head & (dtor == vi.number("HUGETLB_PAGE_DTOR"))):
        out[i] = PageClass.HUGETLB
    buddy = (pages["mapcount"] == vi.number("PAGE_BUDDY_MAPCOUNT_VALUE")) & ~slab
    for i in np.flatnonzero(buddy):
        out[i : i + (1 << int(pages["private"][i]))] = PageClass.FREE
    covered = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(is_head):  # tails take their head's class
        out[i + 1 : i + (1 << int(order[i]))] = out[i]
        covered[i + 1 : i + (1 << int(order[i]))] = True
    tails = (pages["head"] & np.uint64(1)) != 0
    assert (tails == covered).all(), "compound_head of a tail page without its head"
    return out


def kdump_bitmaps(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(bitmap1, bitmap2, max_mapnr, block_size) of a kdump-compressed file."""
    with open(path, "rb") as f:
        head = f.read(464)
        assert head[:8] == b"KDUMP   "
        bs, sub, blocks, max_mapnr = struct.unpack_from("<iiII", head, 428)
        half = blocks * bs // 2
        f.seek((1 + sub) * bs)
        raw = f.read(2 * half)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little").astype(bool)
    n = half * 8
    return bits[:n][:max_mapnr], bits[n:][:max_mapnr], max_mapnr, bs


def kdump_pages(path: str | os.PathLike[str], pfns: list[int]) -> dict[int, bytes]:
    """Page data of ``pfns`` (set in bitmap2) from a zlib/raw kdump-compressed file."""
    _b1, b2, _mm, bs = kdump_bitmaps(path)
    with open(path, "rb") as f:
        head = f.read(464)
        _bs, sub, blocks = struct.unpack_from("<iiI", head, 428)
        table = (1 + sub + blocks) * bs
        rank = np.cumsum(b2) - 1
        out = {}
        for pfn in pfns:
            f.seek(table + 24 * int(rank[pfn]))
            off, size, flags, _pf = struct.unpack("<qIIQ", f.read(24))
            f.seek(off)
            data = f.read(size)
            out[pfn] = zlib.decompress(data) if flags & 1 else data
    return out


def makedumpfiles() -> list[tuple[str, str]]:
    """(version, binary) of the makedumpfile builds on this machine."""
    found = []
    for cand in ("/usr/sbin/makedumpfile", "/usr/bin/makedumpfile", shutil.which("makedumpfile")):
        if cand and os.access(cand, os.X_OK):
            found.append(("1.7.2", cand))
            break
    cache = Path(os.environ.get("KDUMPER_CACHE") or Path.home() / ".cache" / "kdumper")
    for sub in ("usr/sbin/makedumpfile", "usr/bin/makedumpfile"):
        cand = str(cache / "tools" / "makedumpfile-1.7.6" / sub)
        if os.access(cand, os.X_OK):
            found.append(("1.7.6", cand))
            break
    return found


MAKEDUMPFILES = makedumpfiles()


@pytest.fixture(params=[v for v, _ in MAKEDUMPFILES] or ["absent"])
def mdf(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Each makedumpfile on the machine; skipped when there is none."""
    for version, path in MAKEDUMPFILES:
        if version == request.param:
            return version, path
    pytest.skip("makedumpfile is not installed (apt-get install makedumpfile)")


def run_mdf(binary: str, *args: str | int | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run([binary, *map(str, args)], capture_output=True, timeout=300, check=False)
    assert res.returncode == 0, (res.stdout + res.stderr).decode(errors="replace")[-2000:]
    return res


@pytest.fixture(scope="module")
def vm64(tmp_path_factory: pytest.TempPathFactory) -> SynthInfo:
    """The default synthetic vmcore: 64 MiB, KASLR, holes, 2 CPUs."""
    return make_vmcore(tmp_path_factory.mktemp("synth") / "vmcore", mem_mib=64, seed=1)


VARIANTS: dict[str, dict[str, Any]] = {
    "kaslr4": {"mem_mib": 64, "seed": 2},
    "nokaslr4": {"mem_mib": 64, "seed": 3, "kaslr": False},
    "kaslr5": {"mem_mib": 96, "seed": 4, "five_level": True},
    "nokaslr5-noholes": {
        "mem_mib": 48,
        "seed": 5,
        "kaslr": False,
        "five_level": True,
        "holes": False,
        "nr_cpus": 1,
    },
    "6g-sparse": {"mem_mib": 6144, "seed": 6, "populated_mib": 32, "nr_cpus": 4},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SynthInfo:
    return make_vmcore(tmp_path_factory.mktemp(request.param) / "vmcore", **VARIANTS[request.param])


# ----------------------------------------------------------------------------- self-checks


def test_deterministic(tmp_path: Path) -> None:
    a = make_vmcore(tmp_path / "a", mem_mib=48, seed=11)
    b = make_vmcore(tmp_path / "b", mem_mib=48, seed=11)
    c = make_vmcore(tmp_path / "c", mem_mib=48, seed=12)
    assert sha(a.path) == sha(b.path) != sha(c.path)
    assert (a.page_class == b.page_class).all() and (a.content == b.content).all()
    assert a.vmcoreinfo == b.vmcoreinfo and a.registers == b.registers
    assert a.kerneloffset != c.kerneloffset or a.page_offset_base != c.page_offset_base


def test_fast_and_small(tmp_path: Path) -> None:
    t = time.perf_counter()
    info = make_vmcore(tmp_path / "v", mem_mib=64)
    assert time.perf_counter() - t < 5  # well under a second on an idle machine
    st = os.stat(info.path)
    assert st.st_blocks * 512 < 48 << 20  # zero pages are file holes


def test_sparse_64g(tmp_path: Path) -> None:
    """A 64 GiB machine costs a few tens of MiB of disk: idle memory is holes of the file."""
    info = make_vmcore(tmp_path / "v", mem_mib=65536, seed=9, populated_mib=16)
    st = os.stat(info.path)
    assert st.st_size > 62 << 30  # 64 GiB less the PCI hole and the crashkernel area
    assert st.st_blocks * 512 < 40 << 20
    assert info.max_pfn == 64 << 18
    assert info.idle_sections > 400
    counts = info.class_counts()
    assert counts["FREE"] > 15 << 18 and counts["HOLE"] >= (1 << 30) >> 12  # PCI hole
    assert info.zero[info.pfns(PageClass.FREE)].mean() > 0.99
    elf = Elf(info.path)
    walk = Walker(elf)
    # a struct page of an idle section: head of a free order-10 block
    pfn = info.max_pfn - 1024
    sp = np.frombuffer(walk.read(info.struct_page_addr(pfn), 64), PAGE)[0]
    assert sp["mapcount"] == -129 and sp["private"] == 10


def test_elf_layout(variant: SynthInfo) -> None:
    info = variant
    elf = Elf(info.path)
    assert elf.phdrs[0][0] == 4  # PT_NOTE first, as /proc/vmcore has it
    loads = [(pa, sz, off, va) for _t, _f, off, va, pa, sz, _m, _a in elf.loads]
    ram = [(s.paddr, s.size, s.offset, s.vaddr) for s in info.segments]
    kseg = info.kernel_segment
    assert kseg is not None
    assert loads == [(kseg.paddr, kseg.size, kseg.offset, kseg.vaddr), *ram]
    for pa, _sz, _off, va in ram:
        assert va == info.page_offset_base + pa  # makedumpfile derives page_offset from this
    assert kseg.vaddr == START_KERNEL_MAP + 0x100_0000 + info.kerneloffset
    assert info.kerneloffset % (2 << 20) == 0 and info.kernel_phys % (2 << 20) == 0
    assert (kseg.vaddr - START_KERNEL_MAP + info.phys_base) % (1 << 64) == info.kernel_phys
    assert info.max_pfn == (ram[-1][0] + ram[-1][1]) >> 12
    present = np.zeros(info.max_pfn, bool)
    for pa, sz, _o, _v in ram:
        present[pa >> 12 : (pa + sz) >> 12] = True
    assert (present == info.present).all()
    if info.crashkernel:
        lo, hi = info.crashkernel
        assert not info.present[lo >> 12 : hi >> 12].any()
        assert info.segments[0].paddr == 0x1000


def test_notes(variant: SynthInfo) -> None:
    info = variant
    elf = Elf(info.path)
    notes = parse_notes(elf.notes)
    prs = parse_prstatus(notes, X86_64)
    assert len(prs) == info.nr_cpus
    assert [p.pid for p in prs] == list(info.pids)
    for p, regs in zip(prs, info.registers, strict=True):
        assert p.registers == {r: regs.get(r, 0) for r in X86_64.registers}
        text = info.symbols["_text"]
        assert text <= p.pc(X86_64) < text + info.kernel_size
    assert notes[-1].name == "VMCOREINFO" and notes[-1].type == 0
    assert notes[-1].desc.decode() == info.vmcoreinfo


REQUIRED_KEYS = [
    "OSRELEASE",
    "BUILD-ID",
    "PAGESIZE",
    "SYMBOL(init_uts_ns)",
    "OFFSET(uts_namespace.name)",
    "SYMBOL(node_online_map)",
    "SYMBOL(swapper_pg_dir)",
    "SYMBOL(_stext)",
    "SYMBOL(vmap_area_list)",
    "SYMBOL(mem_section)",
    "LENGTH(mem_section)",
    "SIZE(mem_section)",
    "OFFSET(mem_section.section_mem_map)",
    "NUMBER(SECTION_SIZE_BITS)",
    "NUMBER(MAX_PHYSMEM_BITS)",
    "SIZE(page)",
    "SIZE(pglist_data)",
    "SIZE(zone)",
    "SIZE(free_area)",
    "SIZE(list_head)",
    "SIZE(nodemask_t)",
    "OFFSET(page.flags)",
    "OFFSET(page._refcount)",
    "OFFSET(page.mapping)",
    "OFFSET(page.lru)",
    "OFFSET(page._mapcount)",
    "OFFSET(page.private)",
    "OFFSET(page.compound_dtor)",
    "OFFSET(page.compound_order)",
    "OFFSET(page.compound_head)",
    "OFFSET(pglist_data.node_zones)",
    "OFFSET(pglist_data.nr_zones)",
    "OFFSET(pglist_data.node_start_pfn)",
    "OFFSET(pglist_data.node_spanned_pages)",
    "OFFSET(pglist_data.node_id)",
    "OFFSET(zone.free_area)",
    "OFFSET(zone.vm_stat)",
    "OFFSET(zone.spanned_pages)",
    "OFFSET(free_area.free_list)",
    "OFFSET(list_head.next)",
    "OFFSET(list_head.prev)",
    "OFFSET(vmap_area.va_start)",
    "OFFSET(vmap_area.list)",
    "LENGTH(zone.free_area)",
    "SYMBOL(prb)",
    "SYMBOL(printk_rb_static)",
    "SYMBOL(clear_seq)",
    "SIZE(printk_ringbuffer)",
    "OFFSET(prb_desc_ring.count_bits)",
    "SIZE(printk_info)",
    "OFFSET(printk_info.caller_id)",
    "OFFSET(latched_seq.val)",
    "LENGTH(free_area.free_list)",
    "NUMBER(NR_FREE_PAGES)",
    "NUMBER(PG_lru)",
    "NUMBER(PG_private)",
    "NUMBER(PG_swapcache)",
    "NUMBER(PG_swapbacked)",
    "NUMBER(PG_slab)",
    "NUMBER(PG_hwpoison)",
    "NUMBER(PG_head_mask)",
    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",
    "NUMBER(HUGETLB_PAGE_DTOR)",
    "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)",
    "NUMBER(phys_base)",
    "SYMBOL(init_top_pgt)",
    "NUMBER(pgtable_l5_enabled)",
    "SYMBOL(node_data)",
    "LENGTH(node_data)",
    "KERNELOFFSET",
    "NUMBER(KERNEL_IMAGE_SIZE)",
    "NUMBER(sme_mask)",
    "CRASHTIME",
]


def test_vmcoreinfo(variant: SynthInfo) -> None:
    info = variant
    vi = VmcoreInfo.parse(info.vmcoreinfo)
    assert not vi.problems
    missing = [k for k in REQUIRED_KEYS if k not in vi]
    assert not missing
    assert vi.osrelease == info.osrelease and vi.page_size == PAGE_SIZE
    assert vi.kerneloffset == info.kerneloffset
    assert (vi.number("phys_base") or 0) % (1 << 64) == info.phys_base
    assert vi.symbol("swapper_pg_dir") == vi.symbol("init_top_pgt")
    assert vi.number("pgtable_l5_enabled") == int(info.five_level)
    assert vi.crashtime == info.crashtime and vi.build_id == info.build_id
    bits = vi.number("MAX_PHYSMEM_BITS")
    assert bits == (52 if info.five_level else 46)
    # makedumpfile's SPARSEMEM_EXTREME test: LENGTH == NR_MEM_SECTIONS / SECTIONS_PER_ROOT
    per_root = PAGE_SIZE // (vi.size("mem_section") or 1)
    assert vi.length("mem_section") == (1 << (bits - 27)) // per_root
    for name, addr in info.symbols.items():
        if f"SYMBOL({name})" in vi:
            assert vi.symbol(name) == addr, name


def test_page_tables_and_kernel_objects(variant: SynthInfo) -> None:
    info = variant
    elf = Elf(info.path)
    walk = Walker(elf)
    uts = walk.read(info.symbols["init_uts_ns"], 390)
    assert uts[:5] == b"Linux" and info.osrelease.encode() in uts
    # kernel text mapping: _text maps to kernel_phys
    assert walk.vtop(info.symbols["_text"]) == info.kernel_phys
    # direct map, including the 4 KiB-mapped first 2 MiB and a random RAM page
    for pfn in (0x10, int(np.flatnonzero(info.content == Content.RANDOM)[-1])):
        assert walk.vtop(info.direct_map(pfn << 12)) == pfn << 12
        assert walk.read(info.direct_map(pfn << 12), PAGE_SIZE) == info.page(pfn)
    # kernel stacks in vmalloc space hold return addresses into the kernel text
    top = info.symbols["stack_top_cpu0"]
    words = np.frombuffer(walk.read(top - PAGE_SIZE, PAGE_SIZE), "<u8")
    assert (words >> np.uint64(32) == np.uint64(0xFFFFFFFF)).any()
    assert info.registers[0]["rsp"] < top


def test_struct_pages_match_classes(variant: SynthInfo) -> None:
    """Every present pfn's struct page, found through mem_section and the vmemmap as
    makedumpfile finds it, classifies to SynthInfo.page_class."""
    info = variant
    elf = Elf(info.path)
    walk = Walker(elf)
    vi = elf.vmcoreinfo()
    per_root = PAGE_SIZE // (vi.size("mem_section") or 1)
    roots_va = vi.symbol("mem_section")
    assert roots_va is not None
    pps = 1 << (27 - 12)
    nsec = -(-info.max_pfn // pps)
    got = np.full(info.max_pfn, PageClass.HOLE, dtype=np.uint8)
    for sec in range(nsec):
        root = int(struct.unpack("<Q", walk.read(roots_va + 8 * (sec // per_root), 8))[0])
        coded = 0
        if root:
            coded = int(struct.unpack("<Q", walk.read(root + (sec % per_root) * 32, 8))[0])
        present = info.present[sec * pps : (sec + 1) * pps]
        assert bool(coded & 1) == bool(present.any()), sec
        if not coded & 1:
            continue
        mem_map = (coded & ~0x1F) + sec * pps * 64
        assert mem_map == info.struct_page_addr(sec * pps)
        pages = np.frombuffer(walk.read(mem_map, pps * 64), PAGE)
        cls = classify(vi, pages)[: info.max_pfn - sec * pps]
        got[sec * pps : sec * pps + len(cls)] = np.where(present[: len(cls)], cls, PageClass.HOLE)
    bad = np.flatnonzero(got != info.page_class)
    assert not len(bad), [
        (int(p), PageClass(got[p]).name, PageClass(info.page_class[p]).name) for p in bad[:5]
    ]


def test_class_mix(vm64: SynthInfo) -> None:
    counts = vm64.class_counts()
    assert all(counts[c.name] for c in PageClass), counts
    present = int(vm64.present.sum())
    assert 0.1 < counts["FREE"] / present < 0.5
    assert 0.1 < (counts["CACHE"] + counts["CACHE_PRIVATE"]) / present < 0.5
    kinds = np.bincount(vm64.content[vm64.present], minlength=len(Content))
    assert all(kinds[c] for c in Content if c != Content.HOLE)


def test_content(vm64: SynthInfo) -> None:
    info = vm64
    elf = Elf(info.path)
    rng = np.random.default_rng(0)
    for kind in (
        Content.ZERO,
        Content.CONST,
        Content.RANDOM,
        Content.TEXT,
        Content.CODE,
        Content.DATA,
    ):
        for pfn in rng.choice(np.flatnonzero(info.content == kind), 8):
            data = elf.phys(int(pfn) << 12, PAGE_SIZE)
            assert data == info.page(int(pfn))
            assert (data == bytes(PAGE_SIZE)) == bool(info.zero[pfn])
            if kind == Content.ZERO:
                assert info.zero[pfn]
            elif kind == Content.CONST:
                assert data == bytes([info.const_value[int(pfn)]]) * PAGE_SIZE
            elif kind == Content.TEXT:
                assert data[:8] == b"%08x" % pfn and data[8:].isascii()
            elif kind == Content.RANDOM:
                assert len(zlib.compress(data)) > PAGE_SIZE
    # compression is realistic: zlib level 1 over all pages lands between 20% and 70%
    sample = rng.choice(np.flatnonzero(info.present & ~info.zero), 400, replace=False)
    raw = sum(len(zlib.compress(elf.phys(int(p) << 12, PAGE_SIZE), 1)) for p in sample)
    assert 0.2 < raw / (400 * PAGE_SIZE) < 0.7


def test_expected_dumpable(vm64: SynthInfo) -> None:
    info = vm64
    keep0 = info.expected_dumpable(0)
    assert (keep0 == info.present & ~np.isin(info.page_class, (10, 11))).all()
    keep31 = info.expected_dumpable(31)
    keep31_kdump = info.expected_dumpable(31, zero_excluded=False)
    assert (keep31 == keep31_kdump & ~info.zero).all()
    assert not keep31[info.pfns(PageClass.FREE)].any()
    assert keep31_kdump[info.pfns(PageClass.SLAB)].all()


def test_printk_ring_wraps() -> None:
    """Records past the ring's capacity evict the oldest; ids and lpos wrap like the kernel's."""
    recs = [
        PrintkRecord(f"message number {i} " + "x" * (i % 50), ts_nsec=i * 1000) for i in range(600)
    ]
    for count_bits in (6, 10):  # out of descriptors / out of text space
        ring = build_printk_ring(recs, size_bits=12, count_bits=count_bits)
        kept = ring.records
        assert 0 < len(kept) <= 1 << count_bits and kept[-1].text == recs[-1].text
        assert [r.text for r in kept] == [r.text for r in recs[-len(kept) :]]
        assert ring.first_seq == 600 - len(kept)
        assert decode_ring(ring) == dmesg_lines(kept)
        assert sum(len(r.text) + 8 for r in kept) <= 4096
    # fewer records than descriptors: nothing evicted
    small = build_printk_ring(recs[:10], size_bits=14)
    assert len(small.records) == 10 and decode_ring(small) == dmesg_lines(small.records)


def decode_ring(ring: object) -> list[str]:
    """Read a ring as makedumpfile's dump_lockless_dmesg() does (no caller ids)."""
    from tests.synth import PrintkRing

    assert isinstance(ring, PrintkRing)
    count, size = 1 << ring.count_bits, 1 << ring.size_bits
    lines: list[str] = []
    rid = ring.tail_id
    mask = (1 << 62) - 1
    while True:
        slot = rid % count
        sv, begin, nxt = struct.unpack_from("<QQQ", ring.descs, slot * 24)
        if sv & mask == rid and sv >> 62 in (1, 2):
            begin, nxt = begin % size, nxt % size
            if begin != nxt:
                if begin > nxt:
                    begin = 0
                begin += 8
                _seq, ts, text_len = struct.unpack_from("<QQH", ring.infos, slot * 88)
                text = ring.data[begin : begin + min(text_len, nxt - begin)]
                lines.append(f"[{ts // 10**9:5d}.{ts % 10**9 // 1000:06d}] {text.decode()}")
        if rid == ring.head_id:
            return lines
        rid = (rid + 1) & mask


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "v"), "--mem-mib", "32", "--no-kaslr", "--seed", "4"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["osrelease"] == "6.1.0-synth-amd64" and facts["kerneloffset"] == "0x0"
    assert os.path.getsize(tmp_path / "v") == facts["file_size"]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_vmcore(tmp_path / "v", mem_mib=16)
    with pytest.raises(ValueError):
        make_vmcore(tmp_path / "v", nr_cpus=0)


# ----------------------------------------------------------------------------- oracles


@pytest.mark.oracle
@pytest.mark.parametrize("level", [1, 31])
def test_makedumpfile_filters(
    mdf: tuple[str, str], variant: SynthInfo, level: int, tmp_path: Path
) -> None:
    """makedumpfile accepts the vmcore and keeps exactly the pages SynthInfo predicts."""
    _version, binary = mdf
    out = tmp_path / "out"
    run_mdf(binary, "-c", "-d", level, variant.path, out)
    b1, b2, max_mapnr, bs = kdump_bitmaps(out)
    assert bs == PAGE_SIZE and max_mapnr == variant.max_pfn
    assert (b1 == variant.present).all()
    want = variant.expected_dumpable(level, zero_excluded=False)
    bad = np.flatnonzero(b2 != want)
    assert not len(bad), [(int(p), PageClass(variant.page_class[p]).name) for p in bad[:8]]
    # what it copied is our page data
    rng = np.random.default_rng(level)
    kept = np.flatnonzero(want & ~variant.zero)
    pfns = [int(p) for p in rng.choice(kept, min(64, len(kept)), replace=False)]
    for pfn, data in kdump_pages(out, pfns).items():
        assert data == variant.page(pfn), pfn


@pytest.mark.oracle
@pytest.mark.parametrize("level", [2, 4, 8, 16])
def test_makedumpfile_levels(
    mdf: tuple[str, str], vm64: SynthInfo, level: int, tmp_path: Path
) -> None:
    _version, binary = mdf
    run_mdf(binary, "-c", "-d", level, vm64.path, tmp_path / "out")
    _b1, b2, _mm, _bs = kdump_bitmaps(tmp_path / "out")
    assert (b2 == vm64.expected_dumpable(level, zero_excluded=False)).all()


@pytest.mark.oracle
def test_makedumpfile_elf_and_flat(mdf: tuple[str, str], vm64: SynthInfo, tmp_path: Path) -> None:
    """-E keeps the same pages (zero pages dropped) and -F streams a file -R restores."""
    _version, binary = mdf
    run_mdf(binary, "-E", "-d", 31, vm64.path, tmp_path / "elf")
    elf = Elf(tmp_path / "elf")
    want = vm64.expected_dumpable(31)
    have = np.zeros(vm64.max_pfn, bool)
    for _t, _f, _off, _va, pa, filesz, _memsz, _al in elf.loads[1:]:  # [0]: the kernel image
        have[pa >> 12 : (pa + filesz) >> 12] = True
    assert not (want & ~have).any()
    # makedumpfile does not cut a segment for a short run of excluded pages: it copies them
    rng = np.random.default_rng(5)
    assert (have & ~want).any()
    for pfn in rng.choice(np.flatnonzero(have), 64):
        assert elf.phys(int(pfn) << 12, PAGE_SIZE) == vm64.page(int(pfn))
    flat = tmp_path / "flat"
    with open(flat, "wb") as f:
        res = subprocess.run(
            [binary, "-F", "-c", "-d", "31", vm64.path],
            stdout=f,
            stderr=subprocess.PIPE,
            timeout=300,
            check=False,
        )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert flat.read_bytes()[:12] == b"makedumpfile"
    with open(flat, "rb") as f:
        res = subprocess.run(
            [binary, "-R", str(tmp_path / "re")],
            stdin=f,
            capture_output=True,
            timeout=300,
            check=False,
        )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    _b1, b2, _mm, _bs = kdump_bitmaps(tmp_path / "re")
    assert (b2 == vm64.expected_dumpable(31, zero_excluded=False)).all()


@pytest.mark.oracle
def test_makedumpfile_dmesg(mdf: tuple[str, str], variant: SynthInfo, tmp_path: Path) -> None:
    version, binary = mdf
    run_mdf(binary, "--dump-dmesg", variant.path, tmp_path / "log")
    got = (tmp_path / "log").read_text().splitlines()
    assert got == variant.expected_dmesg(caller_id=version != "1.7.2")
    assert got[-1].endswith("(relocation range: 0xffffffff80000000-0xffffffffbfffffff)")


@pytest.mark.oracle
def test_makedumpfile_dmesg_wrapped(mdf: tuple[str, str], tmp_path: Path) -> None:
    """A small ring that wrapped many times: only the newest records survive, in order."""
    version, binary = mdf
    recs = [
        PrintkRecord(
            f"line {i}: " + "abcdefgh" * (i % 7),
            ts_nsec=i * 3_000_017,
            caller_id=(0x8000_0000 | i % 2) if i % 3 else 100 + i,
        )
        for i in range(3000)
    ]
    info = make_vmcore(tmp_path / "v", mem_mib=32, seed=8, dmesg=recs, log_buf_shift=12)
    assert len(info.printk_records) < 128 and info.printk_records[-1].text == recs[-1].text
    run_mdf(binary, "--dump-dmesg", info.path, tmp_path / "log")
    got = (tmp_path / "log").read_text().splitlines()
    assert got == info.expected_dmesg(caller_id=version != "1.7.2")


@pytest.mark.oracle
def test_makedumpfile_sparse_64g(mdf: tuple[str, str], tmp_path: Path) -> None:
    """-d 31 on a 64 GiB sparse vmcore: the idle order-10 blocks all go, quickly."""
    _version, binary = mdf
    info = make_vmcore(tmp_path / "v", mem_mib=65536, seed=10, populated_mib=16)
    t = time.perf_counter()
    run_mdf(binary, "-c", "-d", 31, info.path, tmp_path / "out")
    assert time.perf_counter() - t < 60
    _b1, b2, max_mapnr, _bs = kdump_bitmaps(tmp_path / "out")
    assert max_mapnr == info.max_pfn
    assert (b2 == info.expected_dumpable(31, zero_excluded=False)).all()


@pytest.mark.oracle
def test_drgn_reads(variant: SynthInfo) -> None:
    drgn = pytest.importorskip("drgn")
    info = variant
    prog = drgn.Program()
    prog.set_core_dump(info.path)
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    rng = np.random.default_rng(1)
    for pfn in rng.choice(np.flatnonzero(info.present & ~info.zero), 16):
        pa = int(pfn) << 12
        data = info.page(int(pfn))
        assert prog.read(pa, PAGE_SIZE, True) == data
        assert prog.read(info.direct_map(pa), PAGE_SIZE) == data
    # through the page tables: vmemmap, kernel image objects, vmalloc'd stacks
    walk = Walker(Elf(info.path))
    for pfn in rng.choice(np.flatnonzero(info.present), 16):
        va = info.struct_page_addr(int(pfn))
        assert prog.read(va, 64) == walk.read(va, 64)
    uts = prog.read(info.symbols["init_uts_ns"], 390)
    assert info.osrelease.encode() in uts
    top = info.symbols["stack_top_cpu0"]
    assert prog.read(top - 64, 64) == walk.read(top - 64, 64)
    prb = prog.read_u64(info.symbols["prb"])
    assert prb == info.symbols["printk_rb_static"]


@pytest.mark.oracle
def test_makedumpfile_free_lists(mdf: tuple[str, str], tmp_path: Path) -> None:
    """Without NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) makedumpfile walks node 0's zone free lists
    (node_online_map, node_data, pglist_data, zone.free_area): they hold every free block."""
    _version, binary = mdf
    drop = ["NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"]
    info = make_vmcore(tmp_path / "v", mem_mib=64, seed=12, vmcoreinfo_drop=drop)
    assert "PAGE_BUDDY_MAPCOUNT_VALUE" not in info.vmcoreinfo
    run_mdf(binary, "-c", "-d", 16, info.path, tmp_path / "out")
    _b1, b2, _mm, _bs = kdump_bitmaps(tmp_path / "out")
    assert (b2 == info.expected_dumpable(16, zero_excluded=False)).all()


@pytest.mark.oracle
def test_makedumpfile_without_kernel_segment(mdf: tuple[str, str], tmp_path: Path) -> None:
    _version, binary = mdf
    info = make_vmcore(tmp_path / "v", mem_mib=40, seed=13, kernel_segment=False)
    assert info.kernel_segment is None and len(Elf(info.path).loads) == len(info.segments)
    run_mdf(binary, "-c", "-d", 31, info.path, tmp_path / "out")
    _b1, b2, _mm, _bs = kdump_bitmaps(tmp_path / "out")
    assert (b2 == info.expected_dumpable(31, zero_excluded=False)).all()


LIBKDUMPFILE_READ = """
import sys, kdumpfile
k = kdumpfile.kdumpfile(sys.argv[1])
k.attr["addrxlat.ostype"] = "linux"
print(k.attr["linux.uts.release"])
for a in sys.argv[2:]:
    print(k.read(kdumpfile.KDUMP_KVADDR, int(a, 16), 64).hex())
"""


@pytest.mark.oracle
def test_libkdumpfile_reads(variant: SynthInfo) -> None:
    """libkdumpfile (Debian's python3-libkdumpfile) finds the utsname and walks the tables."""
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import kdumpfile"], capture_output=True, check=False)
    if probe.returncode:
        pytest.skip("python3-libkdumpfile is not installed (apt-get install python3-libkdumpfile)")
    info = variant
    walk = Walker(Elf(info.path))
    pfn = int(np.flatnonzero(info.present)[-1])
    addrs = [info.symbols["init_uts_ns"], info.struct_page_addr(pfn), info.direct_map(pfn << 12)]
    res = subprocess.run(
        [python, "-c", LIBKDUMPFILE_READ, info.path, *(f"{a:x}" for a in addrs)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    lines = res.stdout.decode().split()
    assert lines[0] == info.osrelease
    assert [bytes.fromhex(x) for x in lines[1:]] == [walk.read(a, 64) for a in addrs]


def test_module_runs_as_script(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "tests.synth", str(tmp_path / "v"), "--mem-mib", "32"],
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert json.loads(res.stdout)["max_pfn"] > 0
