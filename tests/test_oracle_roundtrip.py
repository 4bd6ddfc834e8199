"""Round trips through kdumper's own writers and readers, by the library and by the CLI.

ELF → kdump-compressed (each codec) → ELF, → flattened → reassembled, → split → reassembled:
every page of every step equals the source page (checked against the independent ``RefElf``).
The CLI (``python -m kdumper convert/info/reassemble``) runs as a real subprocess.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.codecs import CODECS
from kdumper.dump.io import FileSink
from tests import oracles
from tests.oracles import oracle_check

CLI_TIMEOUT = 300


def kdumper_cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """``python -m kdumper ARGS`` in a subprocess; fails the test on a non-zero exit."""
    argv = [sys.executable, "-m", "kdumper", *map(os.fspath, args)]
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"kdumper did not finish within {CLI_TIMEOUT} s: {' '.join(argv[2:])}")
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, f"{' '.join(argv[2:])} exited {res.returncode}: {res.stderr}"
    return res


def assert_all_pages(path: str | Path | list[Path], synth: Any) -> None:
    """The dump at ``path`` holds every page of the source, each identical."""
    paths = [str(p) for p in path] if isinstance(path, list) else [str(path)]
    with kdumper.open(*paths) as dump:
        want = synth.ref.present_pfns()
        got = dump.dumped.pfns()
        assert np.array_equal(got, want), f"dumped {got.size} pages, the source has {want.size}"
        oracles.assert_pages(dump, synth.ref, want)


@pytest.mark.parametrize("codec", CODECS)
def test_elf_kdump_elf(synth: Any, ours: oracles.OurOutputs, tmp_path: Path, codec: str) -> None:
    """ELF → kdump(codec) → ELF keeps every page."""
    from kdumper.dump.elf import write_elf

    kdump = ours.one("kdump", codec)
    with oracle_check("kdumper→kdumper", "kdump", codec, "kdumper", "round trip"):
        assert_all_pages(kdump, synth)
        with kdumper.open(str(kdump)) as dump:
            facts = dump.facts()
            assert facts.format == "kdump"
            assert facts.compression == codec
            counts = dump.codec_counts()
            assert sum(counts.values()) == synth.ref.present_pfns().size, counts
            back = tmp_path / "back.elf"
            with FileSink(back) as sink:
                write_elf(sink, dump)
        assert_all_pages(back, synth)


@pytest.mark.parametrize("codec", ["none", "zlib", "zstd"])
def test_flattened_round_trip(
    synth: Any, ours: oracles.OurOutputs, tmp_path: Path, codec: str
) -> None:
    """kdump → flattened → reassembled gives the file a direct write gives, byte for byte."""
    from kdumper.dump.flattened import reassemble_flat

    flat = ours.one("flat-kdump", codec)
    with oracle_check("kdumper→kdumper", "flat-kdump", codec, "kdumper", "round trip"):
        assert_all_pages(flat, synth)
        out = tmp_path / "reassembled"
        reassemble_flat(str(flat), str(out))
        assert filecmp.cmp(out, ours.one("kdump", codec), shallow=False)


def test_flattened_elf_round_trip(synth: Any, ours: oracles.OurOutputs, tmp_path: Path) -> None:
    """ELF → flattened ELF → reassembled gives the ELF a direct write gives."""
    from kdumper.dump.flattened import reassemble_flat

    flat = ours.one("flat-elf")
    with oracle_check("kdumper→kdumper", "flat-elf", "none", "kdumper", "round trip"):
        assert_all_pages(flat, synth)
        out = tmp_path / "reassembled"
        reassemble_flat(str(flat), str(out))
        assert filecmp.cmp(out, ours.one("elf"), shallow=False)


@pytest.mark.parametrize("codec", ["zlib", "lzo"])
def test_split_round_trip(synth: Any, ours: oracles.OurOutputs, tmp_path: Path, codec: str) -> None:
    """kdump split in 3 parts, read together and reassembled, keeps every page."""
    from kdumper.dump.split import reassemble_split

    parts = ours.get("split-kdump", codec)
    with oracle_check("kdumper→kdumper", "split-kdump", codec, "kdumper", "round trip"):
        assert_all_pages(parts, synth)
        with kdumper.open(*map(str, parts)) as dump:
            assert dump.facts().parts == len(parts)
        out = tmp_path / "reassembled"
        reassemble_split([str(p) for p in parts], str(out))
        assert_all_pages(out, synth)


# ------------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [("kdump", "lzo"), ("kdump", "zstd"), ("kdump", "snappy"), ("elf", None), ("flat", "zlib")],
)
def test_cli_convert(synth: Any, tmp_path: Path, fmt: str, codec: str | None) -> None:
    """``kdumper convert IN OUT --format F --codec C`` writes a dump holding every page."""
    out = tmp_path / f"out.{fmt}"
    args = ["convert", synth.path, out, "--format", fmt]
    if codec:
        args += ["--codec", codec]
    kdumper_cli(*args)
    assert out.exists(), f"convert wrote no {out}"
    assert (out.stat().st_mode & 0o777) == 0o600, "dumps are written 0600"
    assert_all_pages(out, synth)
    info = json.loads(kdumper_cli("info", "--json", out).stdout)
    text = json.dumps(info)
    want = {"kdump": "kdump", "elf": "elf", "flat": "flattened"}[fmt]
    assert want in text, f"info --json does not name the format {want!r}: {text[:300]}"
    if codec:
        assert codec in text, f"info --json does not name the codec {codec!r}"


def test_cli_info_json_source(synth: Any) -> None:
    """``kdumper info --json`` describes the source ELF (release, format)."""
    info = json.loads(kdumper_cli("info", "--json", synth.path).stdout)
    text = json.dumps(info)
    assert synth.release in text
    assert "elf" in text


def test_cli_reassemble_flat(synth: Any, ours: oracles.OurOutputs, tmp_path: Path) -> None:
    """``kdumper reassemble FLAT OUT`` gives the direct-write file."""
    out = tmp_path / "out"
    kdumper_cli("reassemble", ours.one("flat-kdump", "zlib"), out)
    assert filecmp.cmp(out, ours.one("kdump", "zlib"), shallow=False)


def test_cli_reassemble_split(synth: Any, ours: oracles.OurOutputs, tmp_path: Path) -> None:
    """``kdumper reassemble PART... OUT`` joins a split set."""
    out = tmp_path / "out"
    kdumper_cli("reassemble", *ours.get("split-kdump", "zlib"), out)
    assert_all_pages(out, synth)


def test_cli_convert_split(synth: Any, tmp_path: Path) -> None:
    """``kdumper convert IN OUT --split 3`` writes parts that open together."""
    out = tmp_path / "out"
    kdumper_cli("convert", synth.path, out, "--format", "kdump", "--split", "3")
    parts = sorted(p for p in tmp_path.iterdir() if p.name.startswith("out"))
    assert len(parts) == 3, f"--split 3 wrote {[p.name for p in parts]}"
    assert_all_pages(parts, synth)
