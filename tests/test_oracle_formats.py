"""makedumpfile 1.7.2 and 1.7.6 write files kdumper must read, and read the files kdumper writes.

Direction "tool→kdumper": makedumpfile converts the synthetic vmcore (``-c``, ``-l``,
``-z``, ``-E``, ``-F``, ``--split``, ``-R``) and every page kdumper reads back must equal the
source page. Direction "kdumper→tool": makedumpfile refilters our kdump-compressed and
ELF files (``-d 1 -c``), rearranges our flattened streams (``-R``), reassembles our split sets
(``--reassemble``) and extracts the kernel log (``--dump-dmesg``) from them.
"""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.errors import PageNotPresentError
from tests import oracles
from tests.oracles import MAKEDUMPFILE_CODECS, MAKEDUMPFILE_VERSIONS, makedumpfile, oracle_check

pytestmark = pytest.mark.oracle

# (name, format as kdumper reports it, codec, makedumpfile options, dump level)
WRITE_CASES = [
    ("kdump-none-d0", "kdump", "none", ["-d", "0"], 0),
    ("kdump-zlib", "kdump", "zlib", ["-c", "-d", "1"], 1),
    ("kdump-lzo", "kdump", "lzo", ["-l", "-d", "1"], 1),
    ("kdump-zstd", "kdump", "zstd", ["-z", "-d", "1"], 1),
    ("elf", "elf", "none", ["-E", "-d", "1"], 1),
    ("kdump-zlib-d31", "kdump", "zlib", ["-c", "-d", "31"], 31),
]


def _params(cases: list[Any]) -> list[Any]:
    out = []
    for version in MAKEDUMPFILE_VERSIONS:
        for case in cases:
            codec = case[2]
            if codec not in ("none", *MAKEDUMPFILE_CODECS[version]):
                continue  # this makedumpfile is built without the codec
            out.append(pytest.param(version, *case[1:], id=f"makedumpfile-{version}-{case[0]}"))
    return out


def check_read(dump: Any, synth: Any, level: int | None, *, zero_excluded: bool = False) -> int:
    """``dump`` (a kdumper Dump of the synthetic vmcore) holds exactly what makedumpfile keeps.

    ``level``: the dump level makedumpfile filtered with (the synthetic vmcore's ground truth
    says which pages that keeps), or None for "every page" (our own unfiltered outputs).
    ``zero_excluded``: zero pages are cut out (ELF output) rather than shared (kdump).
    Every page the dump holds must equal the source page. Returns the number compared.
    """
    ref = synth.ref
    assert dump.arch.name == "x86_64"
    assert dump.page_size == oracles.PAGE
    present = dump.present.pfns()
    dumped = dump.dumped.pfns()
    outside = present[~np.isin(present, ref.present_pfns())]
    assert outside.size == 0, f"pages outside the source's PT_LOADs: {outside[:8].tolist()}"
    assert np.isin(dumped, present).all(), "dumped pages that are not present"
    if level is None:
        expected = ref.present_pfns()
    else:
        expected = np.flatnonzero(synth.info.expected_dumpable(level, zero_excluded=zero_excluded))
    lost = np.setdiff1d(expected, dumped)
    extra = np.setdiff1d(dumped, expected)
    if zero_excluded:
        # makedumpfile -E cuts a PT_LOAD only at runs of >= 256 excluded pages (PFN_EXCLUDED);
        # shorter runs stay in the file with their contents (checked below like the others)
        extra = extra[:0]
    assert lost.size == 0, f"{lost.size} pages that level {level} keeps are missing: {lost[:8]}"
    assert extra.size == 0, f"{extra.size} pages that level {level} drops are dumped: {extra[:8]}"
    n = oracles.assert_pages(dump, ref, dumped)
    lacking = np.setdiff1d(present, dumped)
    if lacking.size and not zero_excluded:
        with pytest.raises(PageNotPresentError):
            dump.read_pfn(int(lacking[0]))
    elif lacking.size:
        # ELF: a page inside p_memsz but past p_filesz reads as zeros (ElfDump nodata_zero)
        try:
            page = dump.read_pfn(int(lacking[0]))
        except PageNotPresentError:
            pass
        else:
            assert page == bytes(len(page)), "a page cut out of an ELF dump must read as zeros"
    info = dump.vmcoreinfo
    assert info is not None and info.osrelease == synth.release
    return n


@pytest.mark.parametrize(("version", "fmt", "codec", "args", "level"), _params(WRITE_CASES))
def test_read_makedumpfile_output(
    synth: Any, tmp_path: Path, version: str, fmt: str, codec: str, args: list[str], level: int
) -> None:
    """We read every format and codec makedumpfile writes, page for page."""
    out = tmp_path / "dump"
    with oracle_check("tool→kdumper", fmt, codec, f"makedumpfile {version}", " ".join(args)):
        makedumpfile(version, *args, synth.path, out)
        with kdumper.open(str(out)) as dump:
            check_read(dump, synth, level, zero_excluded=fmt == "elf" and bool(level & 1))
            facts = dump.facts()
            assert facts.format == fmt
            if fmt == "kdump":
                assert facts.compression == codec
                assert facts.dump_level == level
                assert facts.header_version == 6
                assert facts.utsname is not None and facts.utsname.release == synth.release


FLAT_CASES = [
    ("flat-kdump-zlib", "kdump", "zlib", ["-F", "-c", "-d", "1"], 1),
    ("flat-elf", "elf", "none", ["-F", "-E", "-d", "1"], 1),
]


@pytest.mark.parametrize(("version", "fmt", "codec", "args", "level"), _params(FLAT_CASES))
def test_read_makedumpfile_flattened(
    synth: Any, tmp_path: Path, version: str, fmt: str, codec: str, args: list[str], level: int
) -> None:
    """We read makedumpfile's flattened streams in place, and reassemble them byte for byte."""
    from kdumper.dump.flattened import reassemble_flat

    flat = tmp_path / "dump.flat"
    with oracle_check(
        "tool→kdumper", f"flat-{fmt}", codec, f"makedumpfile {version}", " ".join(args)
    ):
        with open(flat, "wb") as f:
            makedumpfile(version, *args, synth.path, stdout=f)
        with kdumper.open(str(flat)) as dump:
            assert dump.facts().format == f"flattened-{fmt}"
            check_read(dump, synth, level, zero_excluded=fmt == "elf")
        theirs, mine = tmp_path / "theirs", tmp_path / "mine"
        with open(flat, "rb") as f:
            makedumpfile(version, "-R", theirs, stdin=f)
        reassemble_flat(str(flat), str(mine))
        assert filecmp.cmp(theirs, mine, shallow=False), "reassembled files differ"
        with kdumper.open(str(mine)) as dump:
            assert dump.facts().format == fmt
            check_read(dump, synth, level, zero_excluded=fmt == "elf")


@pytest.mark.parametrize(
    "version", [pytest.param(v, id=f"makedumpfile-{v}") for v in MAKEDUMPFILE_VERSIONS]
)
def test_read_makedumpfile_split(synth: Any, tmp_path: Path, version: str) -> None:
    """We read makedumpfile's split sets (all parts together) and their reassembly."""
    from kdumper.dump.split import reassemble_split

    parts = [tmp_path / f"part{i}" for i in range(3)]
    with oracle_check(
        "tool→kdumper", "split-kdump", "zlib", f"makedumpfile {version}", "--split -c -d 1"
    ):
        makedumpfile(version, "--split", "-c", "-d", "1", synth.path, *parts)
        with kdumper.open(*map(str, parts)) as dump:
            facts = dump.facts()
            assert facts.parts == 3
            check_read(dump, synth, 1)
        theirs, mine = tmp_path / "theirs", tmp_path / "mine"
        makedumpfile(version, "--reassemble", *parts, theirs)
        reassemble_split([str(p) for p in parts], str(mine))
        for path in (theirs, mine):
            with kdumper.open(str(path)) as dump:
                assert dump.facts().parts == 1
                check_read(dump, synth, 1)


# ----------------------------------------------------------------- makedumpfile reads our files

REFILTER_INPUTS = [("elf", "none"), *(("kdump", c) for c in oracles.ALL_CODECS)]


def _refilter_params() -> list[Any]:
    out = []
    for version in MAKEDUMPFILE_VERSIONS:
        for fmt, codec in REFILTER_INPUTS:
            if codec not in ("none", *MAKEDUMPFILE_CODECS[version]):
                continue
            out.append(
                pytest.param(version, fmt, codec, id=f"ours-{fmt}-{codec}-makedumpfile-{version}")
            )
    return out


@pytest.mark.parametrize(("version", "fmt", "codec"), _refilter_params())
def test_makedumpfile_refilters_ours(
    synth: Any, ours: oracles.OurOutputs, tmp_path: Path, version: str, fmt: str, codec: str
) -> None:
    """``makedumpfile -d 1 -c OURS OUT`` accepts our file; OUT holds the source's pages."""
    out = tmp_path / "refiltered"
    with oracle_check("kdumper→tool", fmt, codec, f"makedumpfile {version}", "refilter"):
        makedumpfile(version, "-c", "-d", "1", ours.one(fmt, codec), out)
        with kdumper.open(str(out)) as dump:
            check_read(dump, synth, 1)


FLAT_INPUTS = [("flat-kdump", "zlib"), ("flat-kdump", "lzo"), ("flat-elf", "none")]


@pytest.mark.parametrize(
    ("version", "fmt", "codec"),
    [
        pytest.param(v, f, c, id=f"ours-{f}-{c}-makedumpfile-{v}")
        for v in MAKEDUMPFILE_VERSIONS
        for f, c in FLAT_INPUTS
    ],
)
def test_makedumpfile_rearranges_ours(
    synth: Any, ours: oracles.OurOutputs, tmp_path: Path, version: str, fmt: str, codec: str
) -> None:
    """``makedumpfile -R`` rebuilds our flattened stream into the file our reassembler makes."""
    from kdumper.dump.flattened import reassemble_flat

    flat = ours.one(fmt, codec)
    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    with oracle_check("kdumper→tool", fmt, codec, f"makedumpfile {version}", "-R"):
        with open(flat, "rb") as f:
            makedumpfile(version, "-R", theirs, stdin=f)
        reassemble_flat(str(flat), str(mine))
        assert filecmp.cmp(theirs, mine, shallow=False), "makedumpfile -R and ours differ"
        plain = ours.one(fmt.removeprefix("flat-"), codec)
        assert filecmp.cmp(theirs, plain, shallow=False), "flattened+rearranged != direct write"
        with kdumper.open(str(theirs)) as dump:
            check_read(dump, synth, None)


@pytest.mark.parametrize(
    "version", [pytest.param(v, id=f"makedumpfile-{v}") for v in MAKEDUMPFILE_VERSIONS]
)
def test_makedumpfile_reassembles_our_split(
    synth: Any, ours: oracles.OurOutputs, tmp_path: Path, version: str
) -> None:
    """``makedumpfile --reassemble`` accepts our split parts; the result holds every page."""
    parts = ours.get("split-kdump", "zlib")
    out = tmp_path / "reassembled"
    with oracle_check(
        "kdumper→tool", "split-kdump", "zlib", f"makedumpfile {version}", "--reassemble"
    ):
        makedumpfile(version, "--reassemble", *parts, out)
        with kdumper.open(str(out)) as dump:
            check_read(dump, synth, None)


def _dmesg(version: str, path: Path, out: Path) -> subprocess.CompletedProcess[bytes]:
    return makedumpfile(version, "--dump-dmesg", path, out, check=False)


@pytest.mark.parametrize(
    ("version", "fmt", "codec"),
    [
        pytest.param(v, f, c, id=f"ours-{f}-{c}-makedumpfile-{v}")
        for v in MAKEDUMPFILE_VERSIONS
        for f, c in (("elf", "none"), ("kdump", "zlib"), ("kdump", "lzo"))
    ],
)
def test_makedumpfile_dump_dmesg_ours(
    synth: Any, ours: oracles.OurOutputs, tmp_path: Path, version: str, fmt: str, codec: str
) -> None:
    """``makedumpfile --dump-dmesg`` gets the same kernel log from our file as from the source."""
    want_path, got_path = tmp_path / "source.log", tmp_path / "ours.log"
    res = _dmesg(version, synth.path, want_path)
    if res.returncode != 0:
        pytest.skip(f"the synthetic vmcore has no kernel log makedumpfile {version} can read")
    with oracle_check("kdumper→tool", fmt, codec, f"makedumpfile {version}", "--dump-dmesg"):
        res = _dmesg(version, ours.one(fmt, codec), got_path)
        assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
        assert got_path.read_bytes() == want_path.read_bytes()
