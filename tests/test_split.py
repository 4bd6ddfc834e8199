"""Split sets: write_split, SplitDump, reassemble_split, makedumpfile --reassemble."""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kdumper.dump.bitmap import Bitmap
from kdumper.dump.diskdump import KdumpDump, PageInOtherPartError, write_kdump
from kdumper.dump.flattened import FlatSink
from kdumper.dump.io import FileSink, FileSource
from kdumper.dump.split import SplitDump, open_part, reassemble_split, split_ranges, write_split
from kdumper.errors import DumpFormatError, PageExcludedError, PageIncompleteError
from tests.kdump_memdump import PAGE, MemoryDump, make_dump

SUB = struct.Struct("<QiiQQqQqQqQQQQ")


@pytest.fixture(scope="module")
def src() -> MemoryDump:
    return make_dump(9000, seed=6)


@pytest.fixture(scope="module")
def parts(src: MemoryDump, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("split")
    paths = [str(d / f"vmcore.{i}") for i in range(3)]
    results = write_split(paths, src, codec="zlib")
    assert [r.path for r in results] == paths
    assert sum(r.pages for r in results) == src.dumped.count()
    return paths


@pytest.fixture(scope="module")
def whole(src: MemoryDump, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "vmcore"
    with FileSink(out) as sink:
        write_kdump(sink, src, codec="zlib")
    return out


def open_all(paths: list[str]) -> list[KdumpDump]:
    return [open_part(p) for p in paths]


def test_split_ranges_are_balanced() -> None:
    rng = np.random.default_rng(2)
    flags = rng.random(100_000) < rng.random(100_000)  # uneven density
    bm = Bitmap.from_bool(flags)
    for parts in (1, 2, 3, 7):
        ranges = split_ranges(bm, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == 100_000 and len(ranges) == parts
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        counts = [bm.count(a, b) for a, b in ranges]
        assert max(counts) - min(counts) <= 1 and sum(counts) == bm.count()
    assert split_ranges(Bitmap.zeros(100), 4) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    few = Bitmap.from_bool(np.array([False, True, False, False, True]))
    assert sorted(few.count(a, b) for a, b in split_ranges(few, 4)) == [0, 0, 1, 1]


def test_parts_are_makedumpfile_split_files(src: MemoryDump, parts: list[str]) -> None:
    dumps = open_all(parts)
    ranges = [d.split_range for d in dumps]
    assert ranges[0] == (0, ranges[1][0]) and ranges[-1] == (ranges[1][1], src.max_pfn)  # type: ignore[index]
    for d, path in zip(dumps, parts, strict=True):
        raw = Path(path).read_bytes()
        s = SUB.unpack_from(raw, PAGE)
        assert s[2] == 1 and (s[11], s[12]) == d.split_range and (s[3], s[4]) == d.split_range
        assert d.present == src.present and d.dumped == src.dumped  # full bitmaps in each
        assert d.num_dumpable == src.dumped.count()  # descriptor table sized globally
        assert raw[d.data_offset : d.data_offset + PAGE] == bytes(PAGE)  # own zero page
        assert d.facts().split == d.split_range
    assert len({d.data_offset for d in dumps}) == 1
    counts = [d.num_descs for d in dumps]
    assert max(counts) - min(counts) <= 1


def test_a_part_alone_reads_only_its_range(src: MemoryDump, parts: list[str]) -> None:
    d = open_part(parts[1])
    start, end = d.split_range  # type: ignore[misc]
    inside = next(p for p in src.dumped.pfns().tolist() if start <= p < end)
    outside = next(p for p in src.dumped.pfns().tolist() if p >= end)
    assert d.read_pfn(inside) == src.pages[inside]
    with pytest.raises(PageInOtherPartError, match="another part"):
        d.read_pfn(outside)
    with pytest.raises(DumpFormatError, match="other parts are needed"):
        SplitDump([d])


def test_split_dump_reads_everything(src: MemoryDump, parts: list[str]) -> None:
    for order in (open_all(parts), open_all(parts[::-1])):
        sd = SplitDump(order)
        assert sd.present == src.present and sd.dumped == src.dumped
        for pfn in src.dumped.pfns().tolist():
            assert sd.read_pfn(pfn) == src.pages[pfn]
        excluded = next(p for p in range(9000) if src.present.test(p) and p not in src.pages)
        with pytest.raises(PageExcludedError):
            sd.read_pfn(excluded)
        f = sd.facts()
        assert (f.format, f.parts, f.split, f.incomplete) == ("split-kdump", 3, None, False)
        assert [p["path"] for p in f.extra["parts"]] == parts
        n_zero = sum(1 for p in src.dumped.pfns().tolist() if src.pages[p] == bytes(PAGE))
        assert sd.codec_counts()["zero"] == n_zero
        assert sd.is_zero_pfn(next(p for p in src.pages if src.pages[p] == bytes(PAGE)))


def test_missing_or_duplicate_parts(src: MemoryDump, parts: list[str], tmp_path: Path) -> None:
    a, b, c = parts
    with pytest.raises(DumpFormatError, match=r"no part covers pfns 0x[0-9a-f]+-0x[0-9a-f]+") as e:
        SplitDump(open_all([a, c]))
    assert a in str(e.value) and c in str(e.value)
    with pytest.raises(DumpFormatError, match="no part covers pfns 0x0-"):
        SplitDump(open_all([b, c]))
    with pytest.raises(DumpFormatError, match=f"no part covers pfns .*-{src.max_pfn:#x}"):
        SplitDump(open_all([a, b]))
    with pytest.raises(DumpFormatError, match="overlap"):
        SplitDump(open_all([a, b, b, c]))
    other = make_dump(5000, seed=1)
    odd = [str(tmp_path / f"o.{i}") for i in range(2)]
    write_split(odd, other, codec="none")
    with pytest.raises(DumpFormatError, match="same split dump"):
        SplitDump(open_all([a, b, odd[1]]))
    with FileSink(tmp_path / "plain") as sink:
        write_kdump(sink, src, codec="none")
    with pytest.raises(DumpFormatError, match="not a part of a split dump"):
        SplitDump(open_all([a, b, str(tmp_path / "plain")]))
    plain = open_part(str(tmp_path / "plain"))
    assert SplitDump([plain]).read_pfn(3) == plain.read_pfn(3)  # a whole dump is a set of one


def test_reassemble_equals_whole_file(parts: list[str], whole: Path, tmp_path: Path) -> None:
    out = tmp_path / "joined"
    res = reassemble_split(parts[::-1], str(out))
    assert out.read_bytes() == whole.read_bytes()
    assert res.bytes_out == out.stat().st_size and not res.incomplete and res.codec == "zlib"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    d = KdumpDump(FileSource(out))
    assert d.split_range is None and d.facts().split is None


@pytest.mark.oracle
def test_makedumpfile_reassembles_our_parts(parts: list[str], whole: Path, tmp_path: Path) -> None:
    exe = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
    if not os.path.exists(exe):
        pytest.skip("makedumpfile is not installed")
    out = tmp_path / "mdf"
    res = subprocess.run(
        [exe, "--reassemble", *parts, str(out)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.read_bytes() == whole.read_bytes()


def test_flattened_parts_reassemble(
    src: MemoryDump, parts: list[str], whole: Path, tmp_path: Path
) -> None:
    flats = []
    for i, p in enumerate(parts):
        d = open_part(p)
        path = tmp_path / f"flat.{i}"
        with open(path, "wb") as f:
            sink = FlatSink(f)
            write_kdump(sink, d, codec="zlib", split_range=d.split_range, desc_slots=d.num_dumpable)
            sink.finish()
        flats.append(str(path))
    sd = SplitDump(open_all(flats))
    for pfn in src.dumped.pfns()[::5].tolist():
        assert sd.read_pfn(pfn) == src.pages[pfn]
    reassemble_split(flats, str(tmp_path / "joined"))
    assert (tmp_path / "joined").read_bytes() == whole.read_bytes()


def test_reassemble_incomplete_part(src: MemoryDump, tmp_path: Path) -> None:
    class Lossy(MemoryDump):
        def read_pfn(self, pfn: int) -> bytes:
            if pfn in (7001, 7002, 7003):
                raise PageIncompleteError(pfn)
            return super().read_pfn(pfn)

    lossy = Lossy(src.pages, src.max_pfn, notes=src.notes)
    paths = [str(tmp_path / f"p.{i}") for i in range(3)]
    results = write_split(paths, lossy, codec="snappy")
    assert [r.incomplete for r in results] == [False, False, True]
    sd = SplitDump(open_all(paths))
    assert sd.facts().incomplete
    out = tmp_path / "joined"
    res = reassemble_split(paths, str(out))
    assert res.incomplete
    d = KdumpDump(FileSource(out))
    assert d.facts().incomplete and d.header.status == 4 | 8
    with pytest.raises(PageIncompleteError):
        d.read_pfn(7002)
    kept = next(p for p in src.dumped.pfns().tolist() if p > 7003)
    assert d.read_pfn(kept) == src.pages[kept]
    assert d.codec_counts()["incomplete"] == sum(p in src.pages for p in (7001, 7002, 7003))


def test_reassemble_without_zero_page_sharing(src: MemoryDump, tmp_path: Path) -> None:
    paths = [str(tmp_path / f"nz.{i}") for i in range(2)]
    write_split(paths, src, codec="lzo", exclude_zero=False)
    with FileSink(tmp_path / "whole") as sink:
        write_kdump(sink, src, codec="lzo", exclude_zero=False)
    reassemble_split(paths, str(tmp_path / "joined"))
    assert (tmp_path / "joined").read_bytes() == (tmp_path / "whole").read_bytes()
    exe = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
    if os.path.exists(exe):
        out = tmp_path / "mdf"
        subprocess.run([exe, "--reassemble", *paths, str(out)], capture_output=True, check=True)
        assert out.read_bytes() == (tmp_path / "whole").read_bytes()
