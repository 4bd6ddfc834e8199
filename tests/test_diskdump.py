"""kdump-compressed reader and writer: round trips, makedumpfile's layout, bad input, ENOSPC."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kdumper.codecs import CODECS
from kdumper.dump.arch import EM_386, EM_ARM, S390X, Arch
from kdumper.dump.base import Dump, Utsname
from kdumper.dump.bitmap import Bitmap
from kdumper.dump.diskdump import (
    KdumpDump,
    KdumpWriter,
    encode_page,
    is_kdump,
    section_ranks,
    write_kdump,
)
from kdumper.dump.io import BytesSource, FileSink, FileSource
from kdumper.dump.notes import Note
from kdumper.errors import (
    DumpFormatError,
    KdumperError,
    NoSpaceError,
    PageExcludedError,
    PageIncompleteError,
    PageNotPresentError,
    TruncatedDumpError,
    UnknownFormatError,
)
from tests.kdump_memdump import PAGE, MemoryDump, MemorySink, make_dump

HDR = struct.Struct("<8si390s6xqqIiiIIIIIIi")
SUB = struct.Struct("<QiiQQqQqQqQQQQ")
DESC = struct.Struct("<qIIQ")


def write_bytes(dump: Dump, **kw: object) -> bytes:
    sink = MemorySink()
    write_kdump(sink, dump, **kw)  # type: ignore[arg-type]
    return sink.getvalue()


def open_bytes(raw: bytes) -> KdumpDump:
    return KdumpDump(BytesSource(raw, path="test.kdump"))


def all_pages(dump: Dump) -> dict[int, bytes]:
    return {p: dump.read_pfn(p) for p in dump.dumped.pfns().tolist()}


@pytest.fixture(scope="module")
def src() -> MemoryDump:
    return make_dump()


@pytest.fixture(scope="module")
def zlib_file(src: MemoryDump) -> bytes:
    return write_bytes(src, codec="zlib")


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip(src: MemoryDump, codec: str) -> None:
    sink = MemorySink()
    res = write_kdump(sink, src, codec=codec)
    back = open_bytes(sink.getvalue())
    assert back.present == src.present and back.dumped == src.dumped
    assert all_pages(back) == all_pages(src)
    n_zero = sum(1 for p in src.dumped.pfns().tolist() if src.pages[p] == bytes(PAGE))
    assert (res.pages, res.zero_pages, res.codec) == (src.dumped.count(), n_zero, codec)
    assert res.bytes_out == len(sink.getvalue()) and not res.incomplete
    counts = back.codec_counts()
    assert counts["zero"] == n_zero and sum(counts.values()) == src.dumped.count()
    if codec != "none":
        assert counts["raw"] == res.raw_pages > 0 and counts[codec] > 0
    for pfn in (0, 1, 2, 3, src.max_pfn - 1):
        assert back.is_zero_pfn(pfn) == (src.dumped.test(pfn) and src.pages[pfn] == bytes(PAGE))
    excluded = next(p for p in range(src.max_pfn) if src.present.test(p) and p not in src.pages)
    with pytest.raises(PageExcludedError):
        back.read_pfn(excluded)
    hole = next(p for p in range(src.max_pfn) if not src.present.test(p))
    with pytest.raises(PageNotPresentError) as e:
        back.read_pfn(hole)
    assert type(e.value) is PageNotPresentError
    for pfn in (-1, src.max_pfn, 1 << 40):
        with pytest.raises(PageNotPresentError):
            back.read_pfn(pfn)


def test_file_layout_is_makedumpfiles(src: MemoryDump, zlib_file: bytes) -> None:
    """Parse our output with plain struct, following reference/makedumpfile.md §1.1-1.8."""
    raw = zlib_file
    h = HDR.unpack_from(raw)
    sig, ver, uts, tv_sec, tv_usec, status, bs, sub_blocks, bm_blocks, mapnr32 = h[:10]
    assert (sig, ver, bs, status, tv_sec, tv_usec) == (b"KDUMP   ", 6, PAGE, 1, 1700000000, 0)
    assert h[10:14] == (0, 0, 0, 0) and h[14] == 2  # nr_cpus = NT_PRSTATUS notes
    assert mapnr32 == src.max_pfn and raw[HDR.size : PAGE] == bytes(PAGE - HDR.size)
    # version "unknown": libkdumpfile (so drgn) ignores a utsname with an empty version
    assert Utsname.unpack(uts) == Utsname("Linux", "", "6.1.0-test", "unknown", "x86_64", "")
    s = SUB.unpack_from(raw, PAGE)
    phys_base, level, split, _, _, off_vi, size_vi, off_note, size_note = s[:9]
    assert (phys_base, level, split) == (16777216, 1, 0)
    assert s[9:13] == (0, 0, 0, 0) and s[13] == src.max_pfn
    assert off_note == PAGE + 104 and sub_blocks == -(-(104 + size_note) // PAGE)
    assert raw[off_vi : off_vi + size_vi].startswith(b"OSRELEASE=6.1.0-test\n")
    bm_len = -(-(src.max_pfn + 7) // 8 // PAGE) * PAGE
    assert bm_blocks * PAGE == 2 * bm_len
    bm1 = (1 + sub_blocks) * PAGE
    assert raw[bm1 : bm1 + bm_len] == src.present.tobytes(bm_len)
    assert raw[bm1 + bm_len : bm1 + 2 * bm_len] == src.dumped.tobytes(bm_len)
    descs = bm1 + 2 * bm_len
    n = src.dumped.count()
    data = descs + 24 * n
    assert raw[data : data + PAGE] == bytes(PAGE)  # the shared zero page comes first
    pos = data + PAGE
    for i, pfn in enumerate(src.dumped.pfns().tolist()):
        off, size, flags, page_flags = DESC.unpack_from(raw, descs + 24 * i)
        assert page_flags == 0
        if src.pages[pfn] == bytes(PAGE):
            assert (off, size, flags) == (data, PAGE, 0)
            continue
        assert off == pos and (flags, size == PAGE) in ((1, False), (0, True))  # packed in order
        pos += size
    assert pos == len(raw)


def test_raw_fallback_for_incompressible_pages() -> None:
    rng = random.Random(3)
    pages = {p: rng.randbytes(PAGE) for p in range(8)}
    for codec in ("zlib", "lzo", "snappy", "zstd"):
        sink = MemorySink()
        res = write_kdump(sink, MemoryDump(pages, 8), codec=codec)
        back = open_bytes(sink.getvalue())
        assert res.raw_pages == 8 and back.codec_counts() == {"raw": 8}
        assert all_pages(back) == pages


def test_encode_page() -> None:
    from kdumper.codecs import get_codec

    zlib_codec = get_codec("zlib")
    assert encode_page(zlib_codec, bytes(PAGE), bytes(PAGE)) == (0, None)
    flags, data = encode_page(zlib_codec, bytes(PAGE), None)
    assert flags == 1 and data is not None and len(data) < 100
    rnd = random.Random(1).randbytes(PAGE)
    assert encode_page(zlib_codec, rnd, bytes(PAGE)) == (0, rnd)
    assert encode_page(get_codec("none"), b"x" * PAGE, None) == (0, b"x" * PAGE)


def test_exclude_zero_false(src: MemoryDump) -> None:
    raw = write_bytes(src, codec="zstd", exclude_zero=False, dump_level=31)
    back = open_bytes(raw)
    f = back.facts()
    assert f.dump_level == 30  # the zero bit follows exclude_zero
    assert "zero" not in back.codec_counts()
    assert all_pages(back) == all_pages(src)


def test_pages_subset_and_dump_level(src: MemoryDump) -> None:
    keep = src.dumped.copy()
    keep.set_range(0, 4000, False)
    back = open_bytes(write_bytes(src, pages=keep, dump_level=17, codec="lzo"))
    assert back.dumped == keep and back.present == src.present
    assert back.facts().dump_level == 17
    with pytest.raises(PageExcludedError):
        back.read_pfn(next(p for p in src.dumped.pfns().tolist() if p < 4000))
    assert all_pages(back) == {p: src.pages[p] for p in keep.pfns().tolist()}


def test_convert_kdump_to_kdump_keeps_headers(src: MemoryDump, zlib_file: bytes) -> None:
    first = open_bytes(zlib_file)
    again = open_bytes(write_bytes(first, codec="snappy"))
    assert all_pages(again) == all_pages(src)
    a, b = first.facts(), again.facts()
    for field in ("utsname", "crash_time", "nr_cpus", "phys_base", "dump_level"):
        assert getattr(a, field) == getattr(b, field), field
    assert (b.compression, b.status) == ("snappy", 4)
    assert [(n.name, n.type, n.desc) for n in again.notes] == [
        (n.name, n.type, n.desc) for n in src.notes
    ]
    assert again.vmcoreinfo is not None and again.vmcoreinfo.osrelease == "6.1.0-test"
    assert len(again.prstatus) == 2 and again.prstatus[0].pid == 100


def test_facts(zlib_file: bytes) -> None:
    f = open_bytes(zlib_file).facts()
    got = (f.format, f.header_version, f.crash_time, f.nr_cpus, f.status, f.compression)
    assert got == ("kdump", 6, 1700000000, 2, 1, "zlib")
    assert (f.incomplete, f.phys_base, f.split, f.dump_level) == (False, 16777216, None, 1)
    assert f.utsname is not None and f.utsname.machine == "x86_64"
    assert f.extra["block_size"] == PAGE and "warnings" not in f.extra
    assert is_kdump(zlib_file[:8]) and not is_kdump(b"\x7fELF")


def test_utsname_is_made_sane_for_libkdumpfile() -> None:
    d = MemoryDump({0: b"a" * PAGE}, 1, notes=[])
    f = open_bytes(write_bytes(d, utsname=Utsname(release="6.1.0"))).facts()
    assert f.utsname == Utsname("Linux", "", "6.1.0", "unknown", "x86_64", "")


def test_utsname_argument_and_no_notes() -> None:
    d = MemoryDump({0: b"a" * PAGE, 1: bytes(PAGE)}, 2, notes=[])
    uts = Utsname("Linux", "box", "6.9.0", "#1 SMP", "x86_64", "(none)")
    raw = write_bytes(d, utsname=uts)
    back = open_bytes(raw)
    f = back.facts()
    assert f.utsname == uts and f.nr_cpus == 1 and f.crash_time is None and back.notes == []
    s = SUB.unpack_from(raw, PAGE)
    assert s[5:9] == (0, 0, 0, 0)  # no vmcoreinfo, no notes
    assert back.read_pfn(0) == b"a" * PAGE


def test_millions_of_pfns_sparse() -> None:
    rng = random.Random(11)
    n = 3_000_001
    pfns = sorted(rng.sample(range(n), 3000))
    pages = {p: (p.to_bytes(8, "little") * 512) for p in pfns}
    d = MemoryDump(pages, n)
    back = open_bytes(write_bytes(d, codec="zstd"))
    assert back.max_pfn == n and back.dumped.count() == 3000
    for p in [*pfns[::97], pfns[-1]]:
        assert back.read_pfn(p) == pages[p]
    with pytest.raises(PageExcludedError):
        back.read_pfn(pfns[0] + 1 if pfns[0] + 1 not in pages else pfns[0] + 2)


def test_rank_table_matches_naive_count() -> None:
    rng = np.random.default_rng(4)
    for nbits in (1, 7, 4096, 4097, 50_001):
        flags = rng.random(nbits) < 0.3
        bm = Bitmap.from_bool(flags)
        ranks = section_ranks(bm.bits)
        cum = np.concatenate(([0], np.cumsum(flags)))
        assert ranks.tolist() == [int(cum[min(s * 4096, nbits)]) for s in range(ranks.size)]
    d = MemoryDump({p: b"x" * PAGE for p in np.flatnonzero(flags).tolist()}, nbits)
    back = open_bytes(write_bytes(d, codec="none", exclude_zero=False))
    for pfn in [*rng.integers(0, nbits, 300).tolist(), 0, nbits - 1, nbits]:
        assert back._rank(pfn) == int(cum[pfn])
    for i in rng.integers(0, int(cum[-1]), 100).tolist():
        pfn = back._pfn_of_index(i)
        assert flags[pfn] and back._rank(pfn) == i


# -- other byte orders and word sizes ------------------------------------------------------------

I686 = Arch("i686", EM_386, "little", 32, PAGE, 144, 72, (), "", "")
ARMV7 = Arch("armv7l", EM_ARM, "little", 32, PAGE, 148, 72, (), "", "")
OTHER_ARCHES = {"s390x": (S390X, "lp64"), "i686": (I686, "pack"), "armv7l": (ARMV7, "pad")}


def foreign_dump(arch: Arch) -> MemoryDump:
    d = make_dump(3000, seed=2)
    d.arch = arch
    d.notes = [Note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\nPAGESIZE=4096\nCRASHTIME=1700000000\n")]
    return d


@pytest.mark.parametrize("name", sorted(OTHER_ARCHES))
def test_other_layouts_roundtrip(name: str) -> None:
    arch, variant = OTHER_ARCHES[name]
    d = foreign_dump(arch)
    uts = Utsname("Linux", "h", "6.1.0", "#1", name, "")
    raw = write_bytes(d, codec="zlib", utsname=uts)
    back = open_bytes(raw)
    got = (back.layout.variant, back.layout.byteorder, back.arch.name)
    assert got == (variant, arch.byteorder, name)
    assert all_pages(back) == all_pages(d)
    assert back.vmcoreinfo is not None and back.vmcoreinfo.osrelease == "6.1.0"
    assert back.facts().crash_time == 1700000000 and back.max_mapnr == d.max_pfn


def no_machine(raw: bytes) -> bytes:
    """A file whose utsname.machine is empty (QEMU leaves everything but machine empty; some
    writers not even that)."""
    machine = 12 + 4 * 65
    return raw[:machine] + bytes(65) + raw[machine + 65 :]


def test_empty_machine_is_guessed(src: MemoryDump, zlib_file: bytes) -> None:
    back = open_bytes(no_machine(zlib_file))
    assert back.arch.name == "x86_64"
    assert any("guessed from notes" in w for w in back.facts().extra["warnings"])
    d = MemoryDump({0: b"q" * PAGE}, 1, notes=[])
    back = open_bytes(no_machine(write_bytes(d)))
    assert back.arch.name == "x86_64" and back.read_pfn(0) == b"q" * PAGE
    assert any("assuming x86_64" in w for w in back.facts().extra["warnings"])


# -- older header versions and unusual files ------------------------------------------------------


def put(raw: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_older_header_versions(src: MemoryDump, zlib_file: bytes, version: int) -> None:
    raw = put(zlib_file, 8, "<i", version)
    raw = put(raw, 440, "<I", src.max_pfn)
    back = open_bytes(raw)
    assert back.header_version == version and all_pages(back) == all_pages(src)
    names = [n.name for n in back.notes]
    if version >= 4:
        assert names == ["CORE", "CORE", "VMCOREINFO"]
    elif version == 3:
        assert names == ["VMCOREINFO"] and back.vmcoreinfo is not None
        assert back.vmcoreinfo.osrelease == "6.1.0-test"
    else:
        assert names == [] and back.vmcoreinfo is None
    assert back.facts().dump_level == 1


def test_v5_max_mapnr_comes_from_32bit_field(src: MemoryDump, zlib_file: bytes) -> None:
    raw = put(put(zlib_file, 8, "<i", 5), 440, "<I", 5000)
    back = open_bytes(raw)
    assert back.max_pfn == 5000 and back.read_pfn(10) == src.read_pfn(10)
    with pytest.raises(PageNotPresentError):
        back.read_pfn(6000)


def test_diskdump_signature(src: MemoryDump, zlib_file: bytes) -> None:
    back = open_bytes(b"DISKDUMP" + zlib_file[8:])
    assert back.facts().extra["signature"] == "DISKDUMP" and back.read_pfn(3) == src.read_pfn(3)


def single_bitmap_file(raw: bytes) -> bytes:
    """Our file rebuilt with only the dumped bitmap (the old single-bitmap layout)."""
    h = list(HDR.unpack_from(raw))
    bs, sub_blocks, bm_blocks = h[6], h[7], h[8]
    bm1 = (1 + sub_blocks) * bs
    half = bm_blocks * bs // 2
    descs_at = bm1 + 2 * half
    s = SUB.unpack_from(raw, bs)
    n = s[13]
    count = Bitmap(np.frombuffer(raw[bm1 + half : descs_at], np.uint8), n).count()
    descs = bytearray(raw[descs_at : descs_at + 24 * count])
    for i in range(count):
        off = struct.unpack_from("<q", descs, 24 * i)[0]
        struct.pack_into("<q", descs, 24 * i, off - half)
    h[8] = bm_blocks // 2
    head = HDR.pack(*h) + raw[HDR.size : bm1]
    return head + raw[bm1 + half : descs_at] + bytes(descs) + raw[descs_at + 24 * count :]


def test_single_bitmap_file(src: MemoryDump, zlib_file: bytes) -> None:
    back = open_bytes(single_bitmap_file(zlib_file))
    assert not back.two_bitmaps and back.present == back.dumped == src.dumped
    assert all_pages(back) == all_pages(src)
    assert back.codec_counts()["zero"] > 0


def test_bitmap_shorter_than_max_mapnr_64_is_clamped(src: MemoryDump, zlib_file: bytes) -> None:
    bits = HDR.unpack_from(zlib_file)[8] * PAGE * 8
    back = open_bytes(put(zlib_file, PAGE + 96, "<Q", bits + 100))
    assert back.max_pfn == bits and back.max_mapnr == bits + 100
    assert any("covers only" in w for w in back.facts().extra["warnings"])
    with pytest.raises(PageNotPresentError):
        back.read_pfn(bits + 50)


# -- incomplete dumps ---------------------------------------------------------------------------


def check_incomplete(raw: bytes, src: MemoryDump) -> tuple[int, int]:
    """Every page reads right or raises PageIncompleteError; returns (good, lost) counts."""
    back = open_bytes(raw)
    assert back.facts().incomplete
    good = lost = 0
    for pfn in src.dumped.pfns().tolist():
        try:
            assert back.read_pfn(pfn) == src.pages[pfn], pfn
            good += 1
        except PageIncompleteError:
            lost += 1
    counts = back.codec_counts()
    assert counts.get("incomplete", 0) == lost
    return good, lost


@pytest.mark.parametrize("where", [0.15, 0.5, 0.9, 0.999])
def test_no_space_in_page_data(src: MemoryDump, zlib_file: bytes, where: float) -> None:
    data_start = open_bytes(zlib_file).data_offset
    limit = data_start + int((len(zlib_file) - data_start) * where)
    sink = MemorySink(limit=limit)
    with pytest.raises(NoSpaceError) as e:
        write_kdump(sink, src, codec="zlib")
    res = e.value.result  # type: ignore[attr-defined]
    assert res.incomplete
    raw = sink.getvalue()
    assert HDR.unpack_from(raw)[5] == 1 | 8  # status: zlib + incomplete
    good, lost = check_incomplete(raw, src)
    assert good > 0 and lost > 0 and res.pages == good


def test_no_space_in_descriptor_table(src: MemoryDump, zlib_file: bytes) -> None:
    back = open_bytes(zlib_file)
    sink = MemorySink(limit=back.desc_offset + 100)
    with pytest.raises(NoSpaceError):
        write_kdump(sink, src, codec="zlib")
    good, _ = check_incomplete(sink.getvalue(), src)
    assert good == 0


def test_source_pages_lost_are_recorded_as_lost(src: MemoryDump) -> None:
    class Lossy(MemoryDump):
        def read_pfn(self, pfn: int) -> bytes:
            if pfn % 10 == 3:
                raise PageIncompleteError(pfn)
            return super().read_pfn(pfn)

    lossy = Lossy(src.pages, src.max_pfn, notes=src.notes)
    sink = MemorySink()
    res = write_kdump(sink, lossy, codec="zlib")
    assert res.incomplete
    back = open_bytes(sink.getvalue())
    assert back.facts().incomplete and back.header.status == 1 | 8
    with pytest.raises(PageIncompleteError):
        back.read_pfn(next(p for p in src.pages if p % 10 == 3))
    assert back.read_pfn(4) == src.pages[4]


def test_truncated_copy_is_incomplete(src: MemoryDump, zlib_file: bytes) -> None:
    cut = zlib_file[: len(zlib_file) - 30000]
    back = open_bytes(cut)
    f = back.facts()
    assert f.incomplete and any("truncated" in w for w in f.extra["warnings"])
    check_incomplete(cut, src)


def test_writer_api_checks_page_count(src: MemoryDump) -> None:
    w = KdumpWriter(MemorySink(), src, codec="none")
    w.begin()
    w.add_page(bytes(PAGE))
    with pytest.raises(ValueError, match="given 1 pages"):
        w.finish()


def test_file_sink_writes_0600_and_renames(tmp_path: Path, src: MemoryDump) -> None:
    out = tmp_path / "vmcore"
    with FileSink(out) as sink:
        res = write_kdump(sink, src, codec="lzo")
    assert oct(out.stat().st_mode & 0o777) == "0o600" and res.bytes_out == out.stat().st_size
    with KdumpDump(FileSource(out)) as back:
        assert all_pages(back) == all_pages(src)


# -- bad input --------------------------------------------------------------------------------


def test_wrong_signature() -> None:
    with pytest.raises(UnknownFormatError, match="not a kdump"):
        open_bytes(b"\x7fELF" + bytes(1000))
    with pytest.raises(UnknownFormatError):
        open_bytes(b"")


def boundaries(raw: bytes) -> dict[str, int]:
    d = open_bytes(raw)
    return {
        "signature": 4,
        "header-mid": 200,
        "header-end": 463,
        "header-block": PAGE,
        "sub-header-mid": PAGE + 50,
        "notes-mid": PAGE + 300,
        "bitmap1": d.bitmap_offset,
        "bitmap1-mid": d.bitmap_offset + 100,
        "bitmap2": d.bitmap_offset + (d.desc_offset - d.bitmap_offset) // 2,
        "descs": d.desc_offset,
        "descs-mid": d.desc_offset + 24 * 100 + 5,
        "data": d.data_offset,
        "zero-page-mid": d.data_offset + 100,
        "data-first": d.data_offset + PAGE,
        "data-mid": (d.data_offset + len(raw)) // 2,
        "last-byte": len(raw) - 1,
    }


@pytest.mark.parametrize("codec", ["zlib", "none"])
def test_truncated_at_every_boundary(src: MemoryDump, codec: str) -> None:
    raw = write_bytes(src, codec=codec)
    for name, cut in boundaries(raw).items():
        try:
            d = open_bytes(raw[:cut])
        except (TruncatedDumpError, DumpFormatError) as e:
            assert name in ("signature", "header-mid", "header-end", "header-block",
                            "sub-header-mid", "notes-mid", "bitmap1", "bitmap1-mid",
                            "bitmap2"), name  # fmt: skip
            assert str(e).startswith("test.kdump: ")
            continue
        assert name not in ("signature", "header-mid", "bitmap1"), name
        assert d.facts().incomplete, name
        with contextlib.suppress(KdumperError):
            d.codec_counts()
        for pfn in src.dumped.pfns()[::7].tolist():
            with contextlib.suppress(PageIncompleteError):
                assert d.read_pfn(pfn) == src.pages[pfn]


HEADER_CASES = {
    "block_size-0": (428, "<i", 0, "block_size 0"),
    "block_size-3": (428, "<i", 3, "block_size 3"),
    "block_size-2MiB": (428, "<i", 2 << 20, "block_size"),
    "block_size-negative": (428, "<i", -4096, "block_size"),
    "version-negative": (8, "<i", -1, "header_version"),
    "sub_hdr_size-negative": (432, "<i", -1, "sub_hdr_size"),
    "sub_hdr_size-huge": (432, "<i", 1 << 30, "past the end"),
    "bitmap_blocks-huge": (436, "<I", 0xFFFFFFFF, "far more than max_mapnr"),
    "bitmap_blocks-0": (436, "<I", 0, "bitmap"),
    "max_mapnr_64-absurd": (PAGE + 96, "<Q", 1 << 60, "absurd max_mapnr"),
    "split-range-bad": (PAGE + 80, "<QQ", 20, 4, "split part range"),
    "notes-past-end": (PAGE + 48, "<q", 1 << 40, "ELF notes"),
    "notes-size-absurd": (PAGE + 56, "<Q", 1 << 40, "absurd ELF note size"),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_bad_header_fields(zlib_file: bytes, case: str) -> None:
    offset, fmt, *values, text = HEADER_CASES[case]
    raw = put(zlib_file, offset, fmt, *values)  # type: ignore[arg-type]
    if case == "split-range-bad":
        raw = put(raw, PAGE + 12, "<i", 1)
    with pytest.raises(DumpFormatError, match=text) as e:
        open_bytes(raw)
    assert "\n" not in str(e.value)


def first_stored(raw: bytes) -> tuple[int, int, int]:
    """(pfn, descriptor position, data offset) of the first page stored compressed."""
    d = open_bytes(raw)
    for i, pfn in enumerate(d.dumped.pfns().tolist()):
        off, _size, flags, _ = DESC.unpack_from(raw, d.desc_offset + 24 * i)
        if flags:
            return pfn, d.desc_offset + 24 * i, off
    raise AssertionError("no compressed page")


DESC_CASES = {
    "offset-past-end": (0, "<q", 1 << 40, TruncatedDumpError, "past the end"),
    "offset-negative": (0, "<q", -4096, DumpFormatError, "negative data offset"),
    "size-gt-page": (8, "<I", PAGE + 1, DumpFormatError, "stored size 4097"),
    "size-0": (8, "<I", 0, DumpFormatError, "stored size 0"),
    "flags-unknown": (12, "<I", 0x40, DumpFormatError, "unknown compression flags 0x40"),
    "flags-two": (12, "<I", 0x3, DumpFormatError, "unknown compression flags 0x3"),
    "raw-short": (12, "<I", 0, DumpFormatError, "raw page of"),
    "zstd-flag-on-zlib": (12, "<I", 0x20, DumpFormatError, "zstd data"),
}


@pytest.mark.parametrize("case", sorted(DESC_CASES))
def test_bad_descriptor(zlib_file: bytes, case: str) -> None:
    pfn, at, _ = first_stored(zlib_file)
    rel, fmt, value, error, text = DESC_CASES[case]
    raw = put(zlib_file, at + rel, fmt, value)  # type: ignore[arg-type]
    d = open_bytes(raw)
    with pytest.raises(error, match=text) as e:  # type: ignore[arg-type]
        d.read_pfn(pfn)
    assert f"{pfn:#x}" in str(e.value)
    if case != "zstd-flag-on-zlib":
        with pytest.raises(DumpFormatError, match=f"pfn {pfn:#x}"):
            d.codec_counts()


def test_lost_descriptor(zlib_file: bytes) -> None:
    pfn, at, _ = first_stored(zlib_file)
    d = open_bytes(put(zlib_file, at, "<q", 0))
    with pytest.raises(PageIncompleteError):
        d.read_pfn(pfn)
    assert d.codec_counts()["incomplete"] == 1


def test_corrupt_compressed_bytes(zlib_file: bytes) -> None:
    pfn, _, off = first_stored(zlib_file)
    raw = bytearray(zlib_file)
    for i in range(off + 2, off + 40):
        raw[i] ^= 0xA5
    d = open_bytes(bytes(raw))
    with pytest.raises(DumpFormatError, match=rf"pfn {pfn:#x} \(data at {off:#x}\): zlib"):
        d.read_pfn(pfn)


def test_random_corruption_never_leaks_a_raw_exception(zlib_file: bytes) -> None:
    rng = np.random.default_rng(3)
    d0 = open_bytes(zlib_file)
    hot = [(0, 470), (PAGE, PAGE + 120), (d0.desc_offset, d0.desc_offset + 24 * 64)]
    for _ in range(300):
        raw = bytearray(zlib_file)
        for _ in range(int(rng.integers(1, 5))):
            lo, hi = hot[int(rng.integers(0, len(hot)))]
            raw[int(rng.integers(lo, hi))] = int(rng.integers(0, 256))
        try:
            d = open_bytes(bytes(raw))
            d.facts()
            with contextlib.suppress(KdumperError):
                d.codec_counts()
            for pfn in d.dumped.pfns()[:80].tolist():
                with contextlib.suppress(KdumperError):
                    d.read_pfn(pfn)
        except KdumperError:
            pass


# -- oracle: libkdumpfile reads what we write ---------------------------------------------------

LKF_SCRIPT = """
import hashlib, json, sys, kdumpfile
k = kdumpfile.kdumpfile(sys.argv[1])
out = {"max_pfn": int(k.attr["max_pfn"]), "release": str(k.attr["linux.uts.release"])}
pages = {}
for pfn in range(out["max_pfn"]):
    try:
        data = k.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * 4096, 4096)
        pages[pfn] = hashlib.sha1(bytes(data)).hexdigest()
    except Exception as e:
        pages[pfn] = type(e).__name__
out["pages"] = pages
print(json.dumps(out))
"""


def libkdumpfile_read(path: Path) -> dict[str, object]:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3")
    probe = subprocess.run(["/usr/bin/python3", "-c", "import kdumpfile"], capture_output=True)
    if probe.returncode:
        pytest.skip("python3-libkdumpfile is not installed")
    res = subprocess.run(
        ["/usr/bin/python3", "-c", LKF_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


@pytest.mark.oracle
@pytest.mark.parametrize(("codec", "arch"), [(c, "x86_64") for c in CODECS] + [
    ("zlib", "s390x"), ("lzo", "i686")])  # fmt: skip
def test_libkdumpfile_reads_our_kdump(tmp_path: Path, codec: str, arch: str) -> None:
    d = make_dump(3000, seed=8) if arch == "x86_64" else foreign_dump(OTHER_ARCHES[arch][0])
    out = tmp_path / "ours.kdump"
    with FileSink(out) as sink:
        write_kdump(sink, d, codec=codec, utsname=Utsname("Linux", "", "6.1.0", "", arch, ""))
    got = libkdumpfile_read(out)
    assert got["max_pfn"] == d.max_pfn and str(got["release"]).startswith("6.1.0")
    pages = got["pages"]
    assert isinstance(pages, dict)
    for pfn in range(d.max_pfn):
        if d.dumped.test(pfn):
            assert pages[str(pfn)] == hashlib.sha1(d.pages[pfn]).hexdigest(), pfn
        else:
            assert pages[str(pfn)] == "NoDataException", pfn


# -- oracle: makedumpfile 1.7.2 reads our kdump files (needs the synthetic vmcore) ---------------


def makedumpfile_exe() -> str:
    import shutil

    exe = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
    if not os.path.exists(exe):
        pytest.skip("makedumpfile is not installed")
    return exe


@pytest.mark.oracle
@pytest.mark.parametrize("codec", ["none", "zlib", "lzo"])  # Debian's 1.7.2 lacks snappy/zstd
def test_makedumpfile_refilters_our_kdump(synth: object, tmp_path: Path, codec: str) -> None:
    from kdumper.dump.elf import ElfDump

    exe = makedumpfile_exe()
    src = ElfDump(FileSource(synth.path))  # type: ignore[attr-defined]
    ours = tmp_path / "ours.kdump"
    with FileSink(ours) as sink:
        write_kdump(sink, src, codec=codec)
    refiltered = tmp_path / "refiltered"
    res = subprocess.run(
        [exe, "-c", "-d", "1", str(ours), str(refiltered)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    back = KdumpDump(FileSource(refiltered))
    assert back.dumped.count() > 0.9 * src.dumped.count()
    for pfn in back.dumped.pfns().tolist():
        assert back.read_pfn(pfn) == src.read_pfn(pfn), pfn
    dmesg = tmp_path / "dmesg"
    res = subprocess.run([exe, "--dump-dmesg", str(ours), str(dmesg)], capture_output=True)
    assert res.returncode == 0, res.stderr
    want = synth.info.dmesg  # type: ignore[attr-defined]
    assert dmesg.read_text().splitlines()[-len(want) :] == list(want)


@pytest.mark.parametrize("nbits", [0, 1, 7, 8, 9, 63, 64, 65, 12345, 1 << 20])
def test_bitmap_count_with_and_without_bitwise_count(
    nbits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bitmap.count: numpy's bitwise_count on whole words plus the table for the tail bytes,
    and the table alone (numpy < 2.0), agree with the bits."""
    from kdumper.dump import bitmap

    flags = np.random.default_rng(nbits).random(nbits) < 0.3
    bm = bitmap.Bitmap.from_bool(flags)
    assert bm.count() == int(flags.sum())
    monkeypatch.setattr(bitmap, "_BITWISE_COUNT", None)
    assert bm.count() == int(flags.sum())
    assert bm.count(3, nbits - 2) == int(flags[3 : max(3, nbits - 2)].sum())
