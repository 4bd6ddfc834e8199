"""The capture pipeline (collect/): batch encoding, filtering, saving in every format, mem-usage.

Everything runs on the synthetic 6.1 vmcore of tests/synth.py, whose ground truth says which
pages each dump level keeps; outputs are read back with kdumper's own readers and compared page
by page with the source.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.codecs import CODECS, get_codec
from kdumper.collect.encode import BatchEncoder, zero_flags
from kdumper.collect.pipeline import (
    SaveOptions,
    _batches,
    build_filter,
    mem_usage,
    save,
    split_paths,
)
from kdumper.collect.source import open_for_save, read_source
from kdumper.dump.diskdump import encode_page
from kdumper.errors import UsageError

PS = 4096


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.synth import make_vmcore

    path = tmp_path_factory.mktemp("pipeline") / "vmcore"
    return path, make_vmcore(path, mem_mib=48, seed=21)


def _pages(rng: np.random.Generator, kinds: list[str]) -> bytes:
    out = []
    for kind in kinds:
        if kind == "zero":
            out.append(bytes(PS))
        elif kind == "random":
            out.append(rng.bytes(PS))
        elif kind == "text":
            out.append((b"the quick brown fox " * 205)[:PS])
        else:
            page = bytearray(PS)
            page[100:108] = b"\x01\x02\x03\x04\x05\x06\x07\x08"
            out.append(bytes(page))
    return b"".join(out)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("exclude_zero", [True, False])
def test_batch_encoder_matches_encode_page(codec: str, exclude_zero: bool) -> None:
    c = get_codec(codec)
    try:
        c.available()
    except kdumper.errors.MissingDependencyError:
        pytest.skip(f"{codec} library missing")
    rng = np.random.default_rng(1)
    kinds = ["zero", "random", "text", "sparse", "zero", "text", "random", "sparse"] * 5
    data = _pages(rng, kinds)
    lost = np.zeros(len(kinds), np.bool_)
    lost[[3, 4]] = True  # a lost non-zero page and a lost zero page
    enc = BatchEncoder(c, PS, exclude_zero).encode(data, lost)
    pos = 0
    for i in range(len(kinds)):
        page = data[i * PS : (i + 1) * PS]
        if lost[i]:
            assert enc.sizes[i] == 0
            assert enc.zero is None or not enc.zero[i]
            continue
        flags, payload = encode_page(c, page, bytes(PS) if exclude_zero else None)
        if payload is None:
            assert enc.zero is not None and enc.zero[i] and enc.sizes[i] == 0
            continue
        size = int(enc.sizes[i])
        assert bytes(enc.data[pos : pos + size]) == payload, f"page {i}"
        assert int(enc.flags[i]) == flags
        pos += size
    assert pos == len(enc.data)
    assert enc.zero_count == (sum(k == "zero" for k in kinds) - 1 if exclude_zero else 0)


def test_zero_flags() -> None:
    data = bytearray(3 * PS)
    data[PS + PS - 1] = 1
    assert zero_flags(bytes(data), PS).tolist() == [True, False, True]


def test_batches_cut_across_chunks() -> None:
    pfns = np.array([1, 2, 3, 4, 10, 11, 20, 21, 22, 23, 24], np.int64)
    got = list(_batches(iter([pfns[:5], pfns[5:]]), 4))
    assert [b.tolist() for b in got] == [[1, 2, 3, 4], [10, 11, 20, 21], [22, 23, 24]]
    assert list(_batches(iter([]), 4)) == []


def test_split_paths() -> None:
    assert split_paths("out", 2) == ["out.1", "out.2"]
    assert split_paths("v-{}.kd", 2) == ["v-1.kd", "v-2.kd"]


# ---- filtering -----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1, 2, 4, 8, 16, 31])
def test_build_filter_matches_ground_truth(synth: tuple[Path, Any], level: int) -> None:
    path, info = synth
    with open_for_save(path) as dump:
        f = build_filter(dump, level)
    want = info.expected_dumpable(level, zero_excluded=False)[: f.pages.nbits]
    assert np.array_equal(f.pages.window(0, f.pages.nbits), want)
    counts = info.class_counts()
    if level & 16:
        assert f.excluded["free"] == counts["FREE"]
    if level & 8:
        assert f.excluded["user"] == counts["ANON"] + counts["HUGETLB"]
    assert f.excluded["hwpoison"] == counts["HWPOISON"]
    assert f.excluded["offline"] == counts["OFFLINE"]
    assert f.layout is not None and f.warnings == []


def test_unknown_layout_keeps_everything_but_zero_pages(tmp_path: Path) -> None:
    from tests.synth import make_vmcore

    info = make_vmcore(
        tmp_path / "v", mem_mib=32, seed=4, vmcoreinfo_drop=["OFFSET(page.compound_head)"]
    )
    with open_for_save(tmp_path / "v") as dump:
        result = save(dump, str(tmp_path / "out"), SaveOptions(dump_level=31, codec="lzo"))
    assert result.filter.layout is None
    assert any("cannot be classified" in w for w in result.filter.warnings)
    assert sum(result.filter.excluded.values()) == 0
    assert result.zero_pages == int(info.zero.sum())
    with kdumper.open(str(tmp_path / "out")) as out:
        assert out.dumped.count() == int(info.present.sum())  # zero pages are in, as pd_zero


# ---- saving --------------------------------------------------------------------------------


def _check_output(out_path: str | list[str], src: Path, info: Any, level: int) -> None:
    """The output holds exactly the pages ``level`` keeps, each equal to the source's."""
    paths = [out_path] if isinstance(out_path, str) else out_path
    with kdumper.open(*paths) as out, kdumper.open(str(src)) as source:
        zero_excluded = out.format == "elf" and bool(level & 1)
        want = info.expected_dumpable(level, zero_excluded=zero_excluded)
        got = out.dumped.window(0, len(want)) & out.present.window(0, len(want))
        want = want[: got.size]
        # makedumpfile -E (and kdumper) write short runs of left-out pages instead of cutting
        # them out: only runs of 256+ pages are missing from an ELF file
        wrong = (want & ~got) if out.format == "elf" else (got != want)
        bad = np.flatnonzero(wrong)
        assert bad.size == 0, f"pfns {bad[:10]} differ ({out.format})"
        for pfn in np.flatnonzero(want).tolist():
            assert out.read_pfn(pfn) == source.read_pfn(pfn), f"pfn {pfn}"


@pytest.mark.parametrize(
    ("level", "codec", "threads"),
    [(31, "zlib", 2), (31, "lzo", 0), (1, "zstd", 3), (0, "none", 2), (17, "snappy", 1)],
)
def test_save_kdump(
    synth: tuple[Path, Any], tmp_path: Path, level: int, codec: str, threads: int
) -> None:
    path, info = synth
    out = str(tmp_path / "out.kdump")
    calls: list[tuple[str, int, int]] = []
    opts = SaveOptions(
        dump_level=level,
        codec=codec,
        threads=threads,
        batch_pages=37,  # odd batches: runs cut across batches
        progress=lambda *a: calls.append(a),
    )
    with open_for_save(path) as dump:
        result = save(dump, out, opts)
    _check_output(out, path, info, level)
    assert not result.incomplete and result.lost_pages == 0
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert not os.path.exists(out + "-incomplete")
    summary = result.summary()
    pages = summary["pages"]
    assert pages["total"] == int(info.present.sum())
    zero_kept = info.expected_dumpable(level, zero_excluded=False) & info.zero
    assert pages["excluded"]["zero"] == (int(zero_kept.sum()) if level & 1 else 0)
    assert pages["kept"] == int(info.expected_dumpable(level).sum())
    assert summary["bytes_out"] == os.path.getsize(out)
    assert calls[-1][0] == "write" and calls[-1][1] == calls[-1][2]
    with kdumper.open(out) as o:
        facts = o.facts()
        assert facts.dump_level == level
        assert facts.utsname is not None and facts.utsname.release == info.osrelease


def test_threads_do_not_change_the_output(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = synth
    outs = []
    for threads in (0, 2, 4):
        out = tmp_path / f"t{threads}"
        with open_for_save(path) as dump:
            save(dump, str(out), SaveOptions(dump_level=31, codec="zstd", threads=threads))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_save_elf(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, info = synth
    out = str(tmp_path / "out.elf")
    with open_for_save(path) as dump:
        result = save(dump, out, SaveOptions(dump_level=31, format="elf"))
    assert result.zero_pages > 0
    _check_output(out, path, info, 31)


def test_save_flat_file_and_stream(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, info = synth
    plain = tmp_path / "plain"
    with open_for_save(path) as dump:
        save(dump, str(plain), SaveOptions(dump_level=31, codec="lzo"))
        flat = str(tmp_path / "flat")
        save(dump, flat, SaveOptions(dump_level=31, codec="lzo", format="flat"))
        stream = io.BytesIO()
        res = save(dump, stream, SaveOptions(dump_level=31, codec="lzo", format="flat"))
    assert Path(flat).read_bytes() == stream.getvalue()
    assert res.outputs[0].bytes_out == len(stream.getvalue())
    _check_output(flat, path, info, 31)
    from kdumper.dump.flattened import reassemble_flat

    reassemble_flat(flat, str(tmp_path / "re"))
    assert (tmp_path / "re").read_bytes() == plain.read_bytes()


def test_save_split(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, info = synth
    out = str(tmp_path / "part")
    with open_for_save(path) as dump:
        result = save(dump, out, SaveOptions(dump_level=31, codec="zlib", split=3))
    paths = split_paths(out, 3)
    assert [r.path for r in result.outputs] == paths
    _check_output(paths, path, info, 31)
    assert sum(r.pages for r in result.outputs) == int(
        info.expected_dumpable(31, zero_excluded=False).sum()
    )


def test_truncated_source_is_saved_incomplete(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = synth
    cut = tmp_path / "cut"
    shutil.copyfile(path, cut)
    size = os.path.getsize(cut)
    os.truncate(cut, size - 3 * 1024 * 1024)  # the last 3 MiB of the last PT_LOAD are lost
    out = str(tmp_path / "out")
    with open_for_save(cut) as dump:
        result = save(dump, out, SaveOptions(dump_level=0, codec="lzo"))
    assert result.incomplete and result.lost_pages > 0
    with kdumper.open(out) as o:
        assert o.facts().incomplete


def test_bad_options(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = synth
    with open_for_save(path) as dump:
        with pytest.raises(UsageError):
            save(dump, str(tmp_path / "a"), SaveOptions(dump_level=32))
        with pytest.raises(UsageError):
            save(dump, str(tmp_path / "a"), SaveOptions(format="elf", split=2))
        with pytest.raises(UsageError):
            save(dump, io.BytesIO(), SaveOptions(format="kdump"))


def test_read_source_does_not_map_files(synth: tuple[Path, Any]) -> None:
    path, _ = synth
    with read_source(path) as src:
        assert src._map is None
        assert src.pread(0, 4) == b"\x7fELF"


# ---- mem-usage -----------------------------------------------------------------------------


def test_mem_usage_matches_ground_truth(synth: tuple[Path, Any]) -> None:
    path, info = synth
    levels = (0, 1, 2, 4, 8, 16, 31)
    with open_for_save(path) as dump:
        usage = mem_usage(dump, levels)
    for lu in usage.levels:
        assert lu.kept_pages == int(info.expected_dumpable(lu.dump_level).sum()), lu.dump_level
    counts = info.class_counts()
    top = usage.classes
    assert top["free"] == counts["FREE"]
    assert top["user"] == counts["ANON"] + counts["HUGETLB"]
    assert top["cache"] + top["cache_private"] == counts["CACHE"] + counts["CACHE_PRIVATE"]
    total_excluded = sum(v for k, v in top.items() if k != "kernel_data")
    assert total_excluded + top["kernel_data"] == usage.total_pages
    j = usage.to_json()
    assert j["total_bytes"] == usage.total_pages * PS
