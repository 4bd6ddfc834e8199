"""``kdumper save`` and ``kdumper mem-usage``: the command line, makedumpfile as the oracle
(same pages kept at every dump level, byte-identical files for zlib, the same pages for lzo),
and memory that does not grow with the size of the dump."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.cli import main as cli_main
from kdumper.cli import save_cmd
from tests import oracles

LEVELS = (1, 2, 4, 8, 16, 31)
MAX_RSS_KIB = 96 * 1024


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.synth import make_vmcore

    path = tmp_path_factory.mktemp("save") / "vmcore"
    return path, make_vmcore(path, mem_mib=64, seed=31)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---- command line --------------------------------------------------------------------------


def test_save_json_summary(
    synth: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, info = synth
    out = tmp_path / "vmcore.kdump"
    code, stdout, err = run(
        ["save", str(path), str(out), "-d", "31", "-c", "lzo", "--json"], capsys
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["dump_level"] == 31 and summary["codec"] == "lzo"
    assert summary["pages"]["kept"] == int(info.expected_dumpable(31).sum())
    assert summary["bytes_out"] == out.stat().st_size
    assert set(summary["pages"]["excluded"]) == {
        "zero", "cache", "cache_private", "user", "free", "hwpoison", "offline"
    }  # fmt: skip
    assert "wrote" in err and "kept" in err
    # the output exists now: a second run refuses, --force overwrites
    code, _, err = run(["save", str(path), str(out)], capsys)
    assert code == int(kdumper.errors.ExitCode.IO) and "already exists" in err
    code, _, err = run(["save", str(path), str(out), "--force", "--no-progress"], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "32"], "dump levels are 0..31"),
        (["--format", "elf", "-c", "zlib"], "does not apply to ELF"),
        (["--format", "flat", "--split", "2"], "--split works with --format kdump only"),
        (["--split", "1"], "2..1024 parts"),
        (["--threads", "-1"], "--threads"),
    ],
)
def test_save_usage_errors(
    synth: tuple[Path, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    path, _ = synth
    code, _, err = run(["save", str(path), str(tmp_path / "o"), *args], capsys)
    assert code == int(kdumper.errors.ExitCode.USAGE)
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_save_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["save", str(tmp_path / "nope"), str(tmp_path / "o")], capsys)
    assert code == int(kdumper.errors.ExitCode.NOT_FOUND), err
    assert err.count("\n") == 1


def test_save_flat_to_stdout(
    synth: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, info = synth
    buf = io.BytesIO()

    class _Out:
        buffer = buf

        @staticmethod
        def isatty() -> bool:
            return False

        @staticmethod
        def write(text: str) -> int:
            return len(text)

        @staticmethod
        def flush() -> None:
            pass

    monkeypatch.setattr(sys, "stdout", _Out())
    code = cli_main.main(["save", str(path), "-", "--format", "flat", "-c", "zstd", "--json"])
    assert code == 0
    flat = tmp_path / "flat"
    flat.write_bytes(buf.getvalue())
    with kdumper.open(str(flat)) as d:
        assert d.format == "flattened-kdump"
        assert d.dumped.count() == int(info.expected_dumpable(31, zero_excluded=False).sum())


def test_mem_usage_text_and_json(
    synth: tuple[Path, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path, info = synth
    code, out, err = run(["mem-usage", str(path), "--no-progress"], capsys)
    assert code == 0, err
    for name in ("ZERO", "NON_PRI_CACHE", "PRI_CACHE", "USER", "FREE", "KERN_DATA"):
        assert name in out
    code, out, _ = run(["mem-usage", str(path), "--json", "--levels", "1,31"], capsys)
    data = json.loads(out)
    assert [lv["dump_level"] for lv in data["levels"]] == [1, 31]
    assert data["levels"][1]["kept_pages"] == int(info.expected_dumpable(31).sum())
    code, _, err = run(["mem-usage", str(path), "--levels", "1,40"], capsys)
    assert code == int(kdumper.errors.ExitCode.USAGE)


def test_progress_printer_plain_and_tty() -> None:
    plain = io.StringIO()
    p = save_cmd.ProgressPrinter(plain, tty=False)
    p("write", 1, 10)
    p("write", 10, 10)
    assert plain.getvalue() == ""  # a short run prints nothing
    p._last -= 10
    p("write", 5, 10)
    p("write", 10, 10)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and "100%" in lines[-1] and "\r" not in plain.getvalue()
    tty = io.StringIO()
    t = save_cmd.ProgressPrinter(tty, tty=True)
    t("filter", 5, 10)
    t("write", 10, 10)
    t.end()
    assert "\r" in tty.getvalue() and tty.getvalue().endswith("\n") and "#" in tty.getvalue()


# ---- makedumpfile as the oracle ----------------------------------------------------------------


def _kept(path: Path | str, max_pfn: int) -> np.ndarray:
    with kdumper.open(str(path)) as d:
        return d.dumped.window(0, max_pfn) & d.present.window(0, max_pfn)


@pytest.mark.oracle
@pytest.mark.parametrize("version", oracles.MAKEDUMPFILE_VERSIONS)
def test_same_pages_as_makedumpfile(
    synth: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    """At every level, kdumper keeps exactly the pfns makedumpfile keeps; each page's bytes
    equal the source. Both kdump-compressed: zero pages are SET in bitmap 2 on both sides."""
    path, info = synth
    for level in LEVELS:
        theirs = tmp_path / f"mdf-{level}"
        ours = tmp_path / f"kd-{level}"
        oracles.makedumpfile(version, "-d", str(level), "-l", path, theirs)
        code, _, err = run(
            ["save", str(path), str(ours), "-d", str(level), "-c", "lzo", "--no-progress"], capsys
        )
        assert code == 0, err
        a, b = _kept(theirs, info.max_pfn), _kept(ours, info.max_pfn)
        diff = np.flatnonzero(a != b)
        assert diff.size == 0, f"-d {level}: pfns {diff[:10]} differ from makedumpfile {version}"
    with kdumper.open(str(ours)) as o, kdumper.open(str(path)) as src:
        for pfn in o.dumped.pfns().tolist():
            assert o.read_pfn(pfn) == src.read_pfn(pfn)


def _both(
    synth: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], level: int,
    codec: str, option: str,
) -> tuple[Path, Path]:  # fmt: skip
    """makedumpfile 1.7.2's file and ours, from the same vmcore, level and codec."""
    path, _ = synth
    theirs, ours = tmp_path / "mdf", tmp_path / "kd"
    oracles.makedumpfile("1.7.2", "-d", str(level), option, path, theirs)
    argv = ["save", str(path), str(ours), "-d", str(level), "-c", codec, "--no-progress"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    return theirs, ours


@pytest.mark.oracle
def test_byte_identical_to_makedumpfile_zlib(
    synth: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs, ours = _both(synth, tmp_path, capsys, 31, "zlib", "-c")
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.oracle
def test_lzo_same_pages_as_makedumpfile(
    synth: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kdumper's LZO1X-1 keeps a smaller dictionary than makedumpfile -l (kdumper.codecs): the
    compressed bytes differ, the file's pages and size (within 1 %) do not."""
    theirs, ours = _both(synth, tmp_path, capsys, 1, "lzo", "-l")
    with kdumper.open(str(theirs)) as a, kdumper.open(str(ours)) as b:
        assert a.dumped == b.dumped and a.page_size == b.page_size
        pfns = a.dumped.pfns()
        assert pfns.size > 100
        for start in range(0, pfns.size, 512):
            chunk = pfns[start : start + 512]
            assert (oracles.read_pages(a, chunk) == oracles.read_pages(b, chunk)).all()
    assert 0.99 < ours.stat().st_size / theirs.stat().st_size < 1.01


# ---- memory ------------------------------------------------------------------------------------

_RSS_SCRIPT = r"""
import sys
from kdumper.cli import main as m
code = m.main(sys.argv[1:])
# VmHWM: the peak RSS of this process image (ru_maxrss would include the forked copy of pytest)
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print(hwm, code)
"""


def _peak_rss_kib(args: list[str]) -> int:
    res = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rss, code = res.stdout.split()[-2:]
    assert code == "0", res.stderr[-2000:]
    return int(rss)


def test_peak_rss_does_not_grow_with_dump_size(tmp_path: Path) -> None:
    """A 64 MiB and a (sparse) 64 GiB vmcore: peak RSS of the whole process stays below
    96 MiB and within a few MiB (one-bit-per-pfn bitmaps) of each other."""
    from tests.synth import make_vmcore

    small, big = tmp_path / "small", tmp_path / "big"
    make_vmcore(small, mem_mib=64, seed=1)
    make_vmcore(big, mem_mib=64 * 1024, seed=1)
    rss = {}
    for name, src in (("small", small), ("big", big)):
        for level, codec in ((31, "zlib"), (1, "lzo")):
            if name == "big" and level == 1:
                continue  # 64 GiB of (sparse) zero pages to read: too slow for a unit test
            out = tmp_path / f"{name}-{level}"
            rss[name, level] = _peak_rss_kib(
                ["save", str(src), str(out), "-d", str(level), "-c", codec, "--no-progress"]
            )
            out.unlink()
    print("peak RSS KiB", rss)
    assert max(rss.values()) <= MAX_RSS_KIB, rss
    # 16 Mi pfns: each extra bitmap is 2 MiB; the writer and the reader hold a few
    assert rss["big", 31] - rss["small", 31] <= 16 * 1024, rss
    (tmp_path / "big").unlink()


def test_output_is_private(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = synth
    out = tmp_path / "o"
    assert cli_main.main(["save", str(path), str(out), "--no-progress"]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["o"]


def test_save_split_and_elf_from_the_command_line(
    synth: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, info = synth
    out = tmp_path / "part-{}.kdump"
    code, stdout, err = run(
        ["save", str(path), str(out), "--split", "2", "-c", "zstd", "--json", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    parts = [str(tmp_path / "part-1.kdump"), str(tmp_path / "part-2.kdump")]
    assert [o["path"] for o in json.loads(stdout)["outputs"]] == parts
    with kdumper.open(*parts) as d:
        assert d.dumped.count() == int(info.expected_dumpable(31, zero_excluded=False).sum())
    elf = tmp_path / "v.elf"
    code, _, err = run(["save", str(path), str(elf), "--format", "elf", "-d", "1"], capsys)
    assert code == 0, err
    with kdumper.open(str(elf)) as d, kdumper.open(str(path)) as src:
        keep = info.expected_dumpable(1)
        for pfn in np.flatnonzero(keep)[::97].tolist():
            assert d.read_pfn(pfn) == src.read_pfn(pfn)
