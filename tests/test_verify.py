"""``kdumper verify``: checksum files, structure, pages; verdicts and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.cli.main import main
from kdumper.cli.verify_cmd import sample_pfns, verify_dump
from kdumper.collect.targets.stream import checksum_line, file_digest
from kdumper.dump.bitmap import Bitmap
from kdumper.dump.diskdump import KdumpDump, write_kdump
from kdumper.dump.flattened import FlatSink
from kdumper.dump.io import FileSink
from kdumper.errors import ExitCode


@pytest.fixture(scope="module")
def files(synth: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic vmcore as a flattened stream and as a kdump-compressed file."""
    where = tmp_path_factory.mktemp("verify")
    flat, kdump = where / "vmcore.flat", where / "vmcore.kdump"
    with kdumper.open(str(synth.path)) as dump:
        with open(flat, "wb") as f:
            sink = FlatSink(f)
            write_kdump(sink, dump, codec="zlib")
            sink.finish()
        fsink = FileSink(kdump)
        write_kdump(fsink, dump, codec="zlib")
        fsink.finish()
    return {"flat": flat, "kdump": kdump, "elf": Path(synth.path)}


def copy(src: Path, dst: Path, algorithm: str | None = "blake2b") -> Path:
    shutil.copyfile(src, dst)
    if algorithm:
        line = checksum_line(file_digest(str(dst), algorithm), dst.name)
        Path(f"{dst}.{algorithm}").write_text(line)
    return dst


def test_good_flat_with_checksum(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = copy(files["flat"], tmp_path / "vmcore.flat")
    # the checksum file is what b2sum writes and checks
    ours = Path(f"{dump}.blake2b").read_text()
    theirs = subprocess.run(["b2sum", dump.name], cwd=tmp_path, capture_output=True, text=True)
    assert ours == theirs.stdout
    assert main(["verify", str(dump)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{dump}: OK: flattened-kdump, blake2b checksum matches, 4096 of ")
    assert main(["verify", "--full", "--json", str(dump)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "good" and out["full"] is True
    assert out["pages_checked"] == out["pages_dumped"] > 4096
    assert out["checksum"][0]["ok"] is True and out["checksum"][0]["algorithm"] == "blake2b"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_other_checksum_algorithms(files: dict[str, Path], tmp_path: Path, algorithm: str) -> None:
    dump = copy(files["flat"], tmp_path / "dump.flat", algorithm)
    tool = f"{algorithm}sum"
    check = subprocess.run([tool, "-c", f"{dump.name}.{algorithm}"], cwd=tmp_path)
    assert check.returncode == 0
    result = verify_dump([str(dump)])
    assert result.verdict == "good" and result.checksum[0]["algorithm"] == algorithm


def test_checksum_mismatch_is_bad(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = copy(files["flat"], tmp_path / "vmcore.flat")
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the page data: the structure may still look fine
    dump.write_bytes(bytes(data))
    assert main(["verify", str(dump)]) == ExitCode.BAD_DUMP
    line = capsys.readouterr().out
    assert ": BAD: " in line and "blake2b checksum MISMATCH" in line


def test_corrupt_page_without_checksum(files: dict[str, Path], tmp_path: Path) -> None:
    dump = copy(files["kdump"], tmp_path / "vmcore", None)
    with kdumper.open(str(dump)) as d:
        assert isinstance(d, KdumpDump)
        descs = np.concatenate(list(d.iter_descs()))
    zlib_pages = descs[descs["flags"] == 1]
    offsets = zlib_pages["offset"][[0, len(zlib_pages) // 2, -1]]
    data = bytearray(dump.read_bytes())
    for off in offsets.tolist():
        data[off : off + 8] = b"\xff" * 8  # the zlib header and first block: undecodable
    dump.write_bytes(bytes(data))
    result = verify_dump([str(dump)], full=True)
    assert result.verdict == "bad" and result.bad_pages == 3
    assert result.problems and "pfn" in result.problems[0]
    assert main(["verify", "--full", str(dump)]) == ExitCode.BAD_DUMP


def test_cut_stream_is_incomplete(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "vmcore-incomplete"
    data = files["flat"].read_bytes()
    dump.write_bytes(data[: len(data) * 6 // 10])
    assert main(["verify", "--full", str(dump)]) == ExitCode.INCOMPLETE
    line = capsys.readouterr().out
    assert ": INCOMPLETE: " in line and "lost" in line and "marked incomplete" in line


@pytest.mark.parametrize("kind", ["kdump", "elf"])
def test_other_formats(files: dict[str, Path], kind: str) -> None:
    result = verify_dump([str(files[kind])], full=True)
    assert result.verdict == "good" and result.checksum == []
    assert result.format == kind and result.pages_checked == result.pages_dumped


def test_not_a_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world\n" * 100)
    assert main(["verify", str(junk)]) == ExitCode.BAD_DUMP
    assert ": BAD: " in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "missing")]) == ExitCode.NOT_FOUND
    bad_sum = copy(junk, tmp_path / "junk2", None)
    Path(f"{bad_sum}.blake2b").write_text("not a checksum\n")
    assert main(["verify", str(bad_sum)]) == ExitCode.BAD_DUMP
    assert "not a b2sum line" in capsys.readouterr().err


def test_sample_pfns_spread() -> None:
    flags = np.zeros(10_000, dtype=bool)
    flags[100:200] = flags[5000:5500] = flags[9990:] = True
    bm = Bitmap.from_bool(flags)
    pfns = [p for p, n in sample_pfns(bm, 50)]
    assert len(pfns) == 50 and pfns == sorted(pfns)
    assert pfns[0] == 100 and pfns[-1] == 9999
    assert all(flags[p] for p in pfns)
    assert [p for p, _ in sample_pfns(bm, 10_000)] == np.flatnonzero(flags).tolist()
    assert list(sample_pfns(Bitmap.zeros(10), 5)) == []


def test_split_set(synth: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kdumper.dump.split import write_split

    parts = [str(tmp_path / f"vmcore.{i}") for i in (1, 2, 3)]
    with kdumper.open(str(synth.path)) as dump:
        write_split(parts, dump, codec="zlib")
    for p in parts:
        Path(f"{p}.sha256").write_text(checksum_line(file_digest(p, "sha256"), Path(p).name))
    assert main(["verify", "--full", *parts]) == 0
    assert capsys.readouterr().out.count("sha256 checksum matches") == 3
    Path(parts[1]).write_bytes(Path(parts[1]).read_bytes()[:-10] + b"\0" * 10)
    assert main(["verify", *parts]) == ExitCode.BAD_DUMP
