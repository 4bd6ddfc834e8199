"""Page classification (kernel/pages.py): layouts per kernel release, the decision chain, ranges.

Three kinds of checks: hand-built ``struct page`` arrays in the layout of each kernel release
(5.10 to 7.1) run through the real feature extraction; :class:`LevelFilter` decisions on
hand-built features (precedence, ranges, windows); and the synthetic 6.1 vmcore of
tests/synth.py against its ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import kdumper
from kdumper.dump.vmcoreinfo import VmcoreInfo
from kdumper.kernel.pages import (
    Classifier,
    LevelFilter,
    PageClass,
    PageFeatures,
    PageLayout,
    UnknownLayoutError,
    exclusion_windows,
    page_layout,
    parse_release,
)

LEVELS = (0, 1, 2, 3, 4, 6, 8, 10, 16, 24, 31)

# ---- VMCOREINFO of each kernel release (only the keys page_layout reads) ---------------------

_COMMON = """\
SIZE(page)=64
OFFSET(page.flags)=0
OFFSET(page._refcount)=52
OFFSET(page.mapping)=24
OFFSET(page.lru)=8
OFFSET(page._mapcount)=48
OFFSET(page.private)=40
LENGTH(zone.free_area)=11
"""
# 5.10-6.11 page-flag numbers (x86_64 with MEMORY_FAILURE) and ~PG_x page types
_OLD_FLAGS = """\
NUMBER(PG_lru)=4
NUMBER(PG_private)=13
NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=19
NUMBER(PG_hwpoison)=23
NUMBER(PG_head_mask)=65536
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129
NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257
"""
# 6.12 numbers, as a Debian 6.12 cloud kernel exports them
_NEW_FLAGS = """\
NUMBER(PG_lru)=5
NUMBER(PG_private)=14
NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=17
NUMBER(PG_hwpoison)=20
NUMBER(PG_head_mask)=64
NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=-184549376
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456
NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-201326592
NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-251658240
"""
KERNELS: dict[str, str] = {
    "5.10": "OSRELEASE=5.10.0-30-amd64\n" + _COMMON + _OLD_FLAGS + "NUMBER(PG_slab)=9\n"
    "NUMBER(HUGETLB_PAGE_DTOR)=2\nOFFSET(page.compound_dtor)=16\n"
    "OFFSET(page.compound_order)=17\nOFFSET(page.compound_head)=8\n",
    "6.1": "OSRELEASE=6.1.0-28-amd64\n" + _COMMON + _OLD_FLAGS + "NUMBER(PG_slab)=9\n"
    "NUMBER(HUGETLB_PAGE_DTOR)=2\nOFFSET(page.compound_dtor)=16\n"
    "OFFSET(page.compound_order)=17\nOFFSET(page.compound_head)=8\n",
    "6.3": "OSRELEASE=6.3.0\n" + _COMMON + _OLD_FLAGS + "NUMBER(PG_slab)=9\n"
    "NUMBER(HUGETLB_PAGE_DTOR)=2\nOFFSET(folio._folio_dtor)=80\nOFFSET(folio._folio_order)=81\n"
    "OFFSET(page.compound_head)=8\n",
    "6.6": "OSRELEASE=6.6.0\n" + _COMMON + _OLD_FLAGS + "NUMBER(PG_slab)=9\n"
    "NUMBER(PG_hugetlb)=15\nOFFSET(page.compound_head)=8\n",
    "6.9": "OSRELEASE=6.9.0\n" + _COMMON + _OLD_FLAGS + "NUMBER(PG_slab)=9\n"
    "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-2049\nOFFSET(page.compound_head)=8\n",
    "6.10": "OSRELEASE=6.10.0\n" + _COMMON + _OLD_FLAGS + "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=-4097\n"
    "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-2049\nOFFSET(page.compound_head)=8\n",
    "6.12": "OSRELEASE=6.12.0-28-cloud-amd64\n" + _COMMON + _NEW_FLAGS
    + "OFFSET(page.compound_head)=8\n",
    "6.16": "OSRELEASE=6.16.0\n" + _COMMON + _NEW_FLAGS + "OFFSET(page.compound_head)=8\n"
    "NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE)=-150994944\n",
    "7.1": "OSRELEASE=7.1.0\n" + _COMMON + _NEW_FLAGS + "OFFSET(page.compound_info)=8\n",
}  # fmt: skip
VARIANT_PREFIX = {
    "5.10": "4.16-6.2",
    "6.1": "4.16-6.2",
    "6.3": "6.3-6.5",
    "6.6": "6.6-6.8",
    "6.9": "6.9",
    "6.10": "6.10-6.11",
    "6.12": "6.12+",
    "6.16": "6.16+",
    "7.1": "7.1+",
}


def info_of(kernel: str, *, drop: tuple[str, ...] = (), extra: str = "") -> VmcoreInfo:
    """The VMCOREINFO of ``kernel`` without the keys in ``drop`` and with ``extra`` lines."""
    lines = [ln for ln in KERNELS[kernel].splitlines() if not ln.startswith(drop or ("\0",))]
    return VmcoreInfo.parse("\n".join(lines) + "\n" + extra)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_layout_variant_per_release(kernel: str) -> None:
    lay = page_layout(info_of(kernel))
    assert lay.variant.startswith(VARIANT_PREFIX[kernel]), lay.variant
    assert lay.detects_free
    assert lay.type_top_byte == (kernel in ("6.12", "6.16", "7.1"))
    expected_source = {"5.10": "field", "6.1": "field", "6.3": "field"}.get(kernel, "flags1")
    assert lay.order_source == expected_source
    if kernel == "6.3":  # folio offsets are relative to the folio: tail page 1 starts at 64
        assert (lay.order_offset, lay.dtor_offset) == (17, 16)
    assert lay.warnings == ()


@pytest.mark.parametrize(
    ("kernel", "drop", "extra", "why"),
    [
        ("6.12", ("OFFSET(page.compound_head)",), "", "compound_head"),
        ("6.1", ("OFFSET(page.compound_head)",), "", "compound_head"),
        ("6.10", ("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)",), "", "PG_slab"),
        ("6.1", ("SIZE(page)",), "", r"SIZE\(page\)"),
        ("6.1", ("NUMBER(PG_lru)",), "", "PG_lru"),
        ("6.1", ("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",), "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=77\n",
         "neither"),
        # a ~PG_x marker next to PGTY_x << 24 ones: some third encoding
        ("6.12", ("NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)",),
         "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257\n", "neither"),
        ("6.1", ("OSRELEASE",), "OSRELEASE=4.9.0\n", "before 4.16"),
        ("6.1", ("OFFSET(page.mapping)",), "OFFSET(page.mapping)=60\n", "mapping at 60"),
    ],
)  # fmt: skip
def test_unknown_layouts_refuse(kernel: str, drop: tuple[str, ...], extra: str, why: str) -> None:
    with pytest.raises(UnknownLayoutError, match=why):
        page_layout(info_of(kernel, drop=drop, extra=extra))


def test_newer_kernel_is_classified_with_a_warning() -> None:
    lay = page_layout(info_of("7.1", drop=("OSRELEASE",), extra="OSRELEASE=8.3.0\n"))
    assert any("newer" in w for w in lay.warnings)


def test_no_buddy_marker_keeps_free_pages_with_a_warning() -> None:
    lay = page_layout(info_of("6.1", drop=("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",)))
    assert not lay.detects_free
    assert any("free pages cannot be recognised" in w for w in lay.warnings)


def test_parse_release() -> None:
    assert parse_release("6.1.0-28-cloud-amd64") == (6, 1)
    assert parse_release("6.12.118+deb13-cloud-amd64") == (6, 12)
    assert parse_release("garbage") is None
    assert parse_release(None) is None


# ---- struct page arrays of each release through Classifier.features ------------------------

WINDOW = 512
HEAD_ADDR = 0xFFFFEA0000000000  # a vmemmap address (compound_head of tails points here | 1)
ANON = 0xFFFF888012345001  # anon_vma | PAGE_MAPPING_ANON
FILE = 0xFFFF888012346000  # an address_space


@dataclass
class Expect:
    """What each pfn of the hand-built window is, at each level (class or 0)."""

    classes: dict[int, tuple[int, int]]  # pfn -> (class, lowest level bit that drops it)


class _FakeMemMap:
    def __init__(self, pages: npt.NDArray[np.void]) -> None:
        self.pages = pages

    def read(self, start: int, stop: int) -> tuple[npt.NDArray[np.void], npt.NDArray[np.bool_]]:
        return self.pages[start:stop], np.ones(stop - start, np.bool_)


def _classifier(lay: PageLayout, pages: npt.NDArray[np.void]) -> Classifier:
    c = object.__new__(Classifier)
    c.layout = lay
    c.memmap = _FakeMemMap(pages)  # type: ignore[assignment]
    return c


def _flag(nr: int | None) -> int:
    assert nr is not None
    return 1 << nr


def build_window(
    kernel: str, *, unaccepted: bool = False
) -> tuple[PageLayout, npt.NDArray[np.void], dict[int, int]]:
    """A 512-pfn window of struct pages in ``kernel``'s layout and each pfn's class at -d 31."""
    lay = page_layout(info_of(kernel))
    raw = np.zeros(WINDOW * lay.size, np.uint8)
    u64 = raw.view("<u8").reshape(WINDOW, lay.size // 8)
    u32 = raw.view("<u4").reshape(WINDOW, lay.size // 4)
    u8 = raw.reshape(WINDOW, lay.size)
    F, MAP, PRIV, HEAD = lay.flags // 8, lay.mapping // 8, 40 // 8, lay.compound_head // 8
    MC = 48 // 4
    assert lay.buddy_type is not None and lay.offline_type is not None
    expect: dict[int, int] = {}

    def set_type(pfn: int, value: int, low: int = 0) -> None:
        u32[pfn, MC] = value | low

    def compound(head: int, order: int, flags: int = 0, mapping: int = 0) -> None:
        u64[head, F] = flags | lay.head_mask
        u64[head, MAP] = mapping
        for t in range(head + 1, head + (1 << order)):
            u64[t, HEAD] = (HEAD_ADDR + head * lay.size) | 1
            u64[t, MAP] = 0xDEAD000000000400  # TAIL_MAPPING: even, never anon
        if lay.order_source == "flags1":
            u64[head + 1, F] |= order
        else:
            assert lay.order_offset is not None
            u8[head + 1, lay.order_offset] = order

    # 0-7: a free buddy block of order 3 (only the head is marked)
    set_type(0, lay.buddy_type)
    u64[0, PRIV] = 3
    expect.update(dict.fromkeys(range(8), PageClass.FREE))
    u64[8, MAP] = ANON  # anonymous page
    expect[8] = PageClass.USER
    u64[9, F], u64[9, MAP] = _flag(lay.pg_lru), FILE  # page cache
    expect[9] = PageClass.CACHE
    u64[10, F], u64[10, MAP] = _flag(lay.pg_lru) | _flag(lay.pg_private), FILE
    expect[10] = PageClass.CACHE_PRIVATE
    # 11: a slab page whose first word at mapping's offset looks anonymous: kept
    u64[11, MAP] = ANON
    if lay.pg_slab is not None:
        u64[11, F] = _flag(lay.pg_slab)
    else:
        assert lay.slab_type is not None
        set_type(11, lay.slab_type)
    u64[12, F] = _flag(lay.pg_hwpoison)
    expect[12] = PageClass.HWPOISON
    set_type(13, lay.offline_type)
    expect[13] = PageClass.OFFLINE
    # 14: a kernel page (kept); 15: shmem in the swap cache (PG_swapcache needs PG_swapbacked)
    u64[15, F] = _flag(lay.pg_swapcache) | _flag(lay.pg_swapbacked)
    u64[15, MAP] = FILE
    expect[15] = PageClass.CACHE
    u64[16 + 5, F] = _flag(lay.pg_swapcache)  # swapcache bit alone (PG_owner_priv_1): not cache
    # 32-47: an anonymous THP of order 4
    compound(32, 4, mapping=ANON)
    expect.update(dict.fromkeys(range(32, 48), PageClass.USER))
    # 48-63: a hugetlb page of order 4 (mapping: a hugetlbfs file)
    compound(48, 4, mapping=FILE)
    if lay.hugetlb_type is not None:
        set_type(48, lay.hugetlb_type)
    elif lay.pg_hugetlb is not None:
        u64[49, F] |= _flag(lay.pg_hugetlb)
    else:
        assert lay.dtor_offset is not None and lay.hugetlb_dtor is not None
        u8[49, lay.dtor_offset] = lay.hugetlb_dtor
    expect.update(dict.fromkeys(range(48, 64), PageClass.USER))
    # 64-79: a large page-cache folio of order 4
    compound(64, 4, flags=_flag(lay.pg_lru), mapping=FILE)
    expect.update(dict.fromkeys(range(64, 80), PageClass.CACHE))
    # 80-95: a kernel compound page (slab-free, no lru): kept with its tails
    compound(80, 4)
    # 96: a buddy page with an order past the free areas: warned about and kept
    set_type(96, lay.buddy_type)
    u64[96, PRIV] = 20
    # 97: a buddy page that is also hwpoisoned: free first (-d 16), else hwpoison
    set_type(97, lay.buddy_type)
    u64[97, F] = _flag(lay.pg_hwpoison)
    expect[97] = PageClass.FREE
    # 98: an anon-looking tail of nothing (compound_head bit 0 set): tails follow their head
    u64[98, HEAD] = HEAD_ADDR | 1
    u64[98, MAP] = ANON
    # 101: a compound head of an order its pfn is not aligned to: only the head goes
    compound(101, 2, mapping=ANON)
    expect[101] = PageClass.USER
    # 128-255: a buddy block of order 7
    set_type(128, lay.buddy_type)
    u64[128, PRIV] = 7
    expect.update(dict.fromkeys(range(128, 256), PageClass.FREE))
    if lay.type_top_byte:
        # 6.12+: the low 24 bits of page_type may carry data; the type is the top byte
        set_type(256, lay.buddy_type, low=0x1234)
        expect[256] = PageClass.FREE
        set_type(257, lay.offline_type, low=0x10)
        expect[257] = PageClass.OFFLINE
    if unaccepted:  # 6.16+: unaccepted memory, one max-order block from pfn 0
        assert lay.unaccepted_type is not None
        set_type(0, lay.unaccepted_type)
        u64[0, PRIV] = 0
    pages = raw.view(lay.dtype())
    return lay, pages, expect


def _expected_at(expect: dict[int, int], level: int) -> npt.NDArray[np.uint8]:
    out = np.zeros(WINDOW, np.uint8)
    for pfn, cls in expect.items():
        needed = (
            int(cls) if cls != PageClass.CACHE else int(PageClass.CACHE | PageClass.CACHE_PRIVATE)
        )
        if cls in (PageClass.HWPOISON, PageClass.OFFLINE) or level & needed:
            out[pfn] = cls
    return out


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("level", LEVELS)
def test_features_and_decisions_per_release(kernel: str, level: int) -> None:
    lay, pages, expect = build_window(kernel)
    feats = _classifier(lay, pages).features(0, WINDOW)
    got = LevelFilter(level, lay.max_order).apply(feats)
    want = _expected_at(expect, level)
    if level & PageClass.FREE == 0:
        want[97] = PageClass.HWPOISON  # not free at this level: the hwpoison check decides
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"pfns {bad[:10]}: got {got[bad[:10]]}, want {want[bad[:10]]}"


def test_unaccepted_memory_is_free() -> None:
    lay, pages, _ = build_window("6.16", unaccepted=True)
    big = np.zeros(2048, pages.dtype)
    big[:WINDOW] = pages
    feats = _classifier(lay, big).features(0, 2048)
    got = LevelFilter(16, lay.max_order).apply(feats)
    assert (got[:1024] == PageClass.FREE).all()  # 1 << (LENGTH(zone.free_area) - 1) pages
    assert (got[1024:] == 0).all()
    assert (LevelFilter(15, lay.max_order).apply(feats)[:8] == 0).all()


def test_holes_are_not_examined() -> None:
    lay, pages, _ = build_window("6.1")
    present = np.ones(WINDOW, np.bool_)
    present[128] = False  # the head of the order-7 block is not in the vmcore
    present[8] = False
    feats = _classifier(lay, pages).features(0, WINDOW, present)
    got = LevelFilter(31, lay.max_order).apply(feats)
    assert (got[128:256] == 0).all()  # nothing decided the block: kept
    assert got[8] == 0
    assert (got[0:8] == PageClass.FREE).all()


# ---- LevelFilter on hand-made features ------------------------------------------------------


def make_features(n: int, start: int = 0, **arrays: npt.NDArray[np.generic]) -> PageFeatures:
    """Features of ``n`` present, readable pfns; keyword arrays override the all-false ones."""
    z = np.zeros(n, np.bool_)
    fields: dict[str, npt.NDArray[np.generic]] = {
        "present": np.ones(n, np.bool_),
        "examined": np.ones(n, np.bool_),
        "tail": z,
        "buddy": z,
        "buddy_order": np.zeros(n, np.int64),
        "unaccepted": z,
        "cache": z,
        "private": z,
        "user": z,
        "hwpoison": z,
        "offline": z,
        "order": np.zeros(n, np.int64),
    }
    fields.update(arrays)
    return PageFeatures(start=start, **fields)  # type: ignore[arg-type]


def _mask(n: int, *pfns: int) -> npt.NDArray[np.bool_]:
    m = np.zeros(n, np.bool_)
    m[list(pfns)] = True
    return m


def test_range_runs_on_into_the_next_windows() -> None:
    # a 1 GiB hugetlb page (order 18) spans four 64 Ki-pfn windows
    n = 1 << 16
    order = np.zeros(n, np.int64)
    order[0] = 18
    flt = LevelFilter(8, 11)
    first = flt.apply(make_features(n, 0, user=_mask(n, 0), order=order))
    assert (first == PageClass.USER).all()
    for w in (1, 2, 3):
        # the pages inside the range are not examined: a "buddy head" there is ignored
        later = flt.apply(make_features(n, w * n, buddy=_mask(n, 5), user=_mask(n, 7)))
        assert (later == PageClass.USER).all()
    after = flt.apply(make_features(n, 4 * n, user=_mask(n, 3)))
    assert int(np.count_nonzero(after)) == 1 and after[3] == PageClass.USER


def test_overlapping_ranges_follow_the_first() -> None:
    n = 64
    order = np.zeros(n, np.int64)
    order[0] = 4  # a user compound page 0-15
    buddy_order = np.zeros(n, np.int64)
    buddy_order[8] = 5  # a (corrupt) buddy head inside it claiming 8-39
    got = LevelFilter(31, 11).apply(
        make_features(n, user=_mask(n, 0), order=order, buddy=_mask(n, 8), buddy_order=buddy_order)
    )
    assert (got[:16] == PageClass.USER).all()
    assert (got[16:] == 0).all()  # the inner head was skipped, its range never applied


def test_adjacent_ranges() -> None:
    n = 64
    bo = np.zeros(n, np.int64)
    bo[0], bo[8], bo[16] = 3, 3, 4
    got = LevelFilter(16, 11).apply(make_features(n, buddy=_mask(n, 0, 8, 16), buddy_order=bo))
    assert (got[:32] == PageClass.FREE).all() and (got[32:] == 0).all()


def test_precedence_cache_private_needs_level_4() -> None:
    n = 4
    f = make_features(n, cache=_mask(n, 0, 1), private=_mask(n, 1), user=_mask(n, 1))
    assert LevelFilter(2, 11).apply(f).tolist() == [PageClass.CACHE, 0, 0, 0]
    # a private cache page is not checked as user data unless -d 4 is off and 8 is on
    assert LevelFilter(10, 11).apply(f).tolist() == [PageClass.CACHE, PageClass.USER, 0, 0]
    assert LevelFilter(4, 11).apply(f).tolist() == [PageClass.CACHE, PageClass.CACHE_PRIVATE, 0, 0]


def test_unreadable_struct_pages_are_kept() -> None:
    n = 8
    examined = np.ones(n, np.bool_)
    examined[2] = False
    f = make_features(n, examined=examined, user=np.ones(n, np.bool_))
    assert LevelFilter(31, 11).apply(f).tolist() == [8, 8, 0, 8, 8, 8, 8, 8]


# ---- the synthetic 6.1 vmcore ------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from tests.synth import make_vmcore

    path = tmp_path_factory.mktemp("pages") / "vmcore"
    return path, make_vmcore(path, mem_mib=64, seed=11)


def _classes_per_level(path: Path, levels: tuple[int, ...]) -> dict[int, npt.NDArray[np.uint8]]:
    dump = kdumper.open(str(path))
    c = Classifier(dump)
    out = {lv: np.zeros(dump.max_pfn, np.uint8) for lv in levels}
    for start, _present, classes in exclusion_windows(c, levels):
        for lv, cls in zip(levels, classes, strict=True):
            out[lv][start : start + cls.size] = cls
    dump.close()
    return out


def test_synthetic_vmcore_matches_ground_truth(synth64: tuple[Path, object]) -> None:
    path, info = synth64
    got = _classes_per_level(path, LEVELS)
    for level in LEVELS:
        want = info.excluded_by_level(level)[: got[level].size]  # type: ignore[attr-defined]
        bad = np.flatnonzero((got[level] != 0) != want)
        assert bad.size == 0, f"-d {level}: pfns {bad[:10]} differ"


def test_synthetic_five_level_paging(tmp_path: Path) -> None:
    from tests.synth import make_vmcore

    info = make_vmcore(tmp_path / "v5", mem_mib=48, seed=5, five_level=True)
    got = _classes_per_level(tmp_path / "v5", (31,))[31]
    want = info.excluded_by_level(31)[: got.size]
    assert np.array_equal(got != 0, want)


def test_synthetic_vmcore_without_compound_head_is_unknown(tmp_path: Path) -> None:
    from tests.synth import make_vmcore

    make_vmcore(tmp_path / "v", mem_mib=32, seed=3, vmcoreinfo_drop=["OFFSET(page.compound_head)"])
    with kdumper.open(str(tmp_path / "v")) as dump, pytest.raises(UnknownLayoutError):
        Classifier(dump)


def test_memmap_clears_section_flag_bits(synth64: tuple[Path, object]) -> None:
    path, info = synth64
    with kdumper.open(str(path)) as dump:
        mm = Classifier(dump).memmap
        for pfn in (0, 1, 4097, dump.max_pfn - 1):
            assert mm.page_addr(pfn) == info.struct_page_addr(pfn)  # type: ignore[attr-defined]
        # a new section flag in bit 5 (not in makedumpfile's mask) does not move the array
        sec = next(iter(mm.sections))
        mm.sections[sec] |= 1 << 5
        assert mm.page_addr(sec << mm.pfn_shift) == info.struct_page_addr(sec << mm.pfn_shift)  # type: ignore[attr-defined]


@pytest.mark.parametrize("level", [16, 31, 17])
def test_skipping_free_blocks_changes_nothing(tmp_path: Path, level: int) -> None:
    """Reading only the heads of free max-order blocks gives the same decisions and counts."""
    from tests.synth import make_vmcore

    info = make_vmcore(tmp_path / "v", mem_mib=512, populated_mib=96, seed=9)
    with kdumper.open(str(tmp_path / "v")) as dump:
        c = Classifier(dump)
        results = []
        for skip in (False, True):
            flt = LevelFilter(level, c.layout.max_order)
            parts = [flt.apply(f) for f, _ in c.windows(skip_free=skip)]
            results.append(np.concatenate(parts))
    assert np.array_equal(results[0], results[1])
    want = info.excluded_by_level(level)[: results[0].size]
    assert np.array_equal(results[1] != 0, want)
    assert int(np.count_nonzero(results[1] == PageClass.FREE)) > 1 << 15  # idle memory
