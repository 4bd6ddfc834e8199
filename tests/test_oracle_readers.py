"""drgn, Debian's libkdumpfile and crash read the files kdumper writes.

Each of our outputs of the synthetic vmcore (ELF; kdump-compressed with every codec; flattened;
split) is opened by each reference reader that supports the format, and every page the reader
returns must equal the source page. The pytest ids name the format, codec, tool and version.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import oracles
from tests.oracles import ALL_CODECS, oracle_check

pytestmark = pytest.mark.oracle

KDUMP = [("kdump", c) for c in ALL_CODECS]

# What each reader supports (analysis.md §8, vm.md): drgn 0.3.0 (PyPI wheel, built with
# libkdumpfile) reads ELF, kdump-compressed with every codec and flattened files;
# libkdumpfile 0.5.1 (bookworm) reads ELF and kdump-compressed but not flattened; neither opens a
# split set through these APIs.
DRGN_INPUTS = [
    ("elf", "none"),
    *KDUMP,
    ("flat-kdump", "zlib"),
    ("flat-kdump", "zstd"),
    ("flat-elf", "none"),
]
LIBKDUMPFILE_INPUTS = [("elf", "none"), *KDUMP]
CRASH_INPUTS = [("elf", "none"), *KDUMP, ("flat-kdump", "zlib"), ("flat-elf", "none")]


def _ids(tool: str, version: str, inputs: list[tuple[str, str]]) -> list[Any]:
    return [pytest.param(f, c, id=f"ours-{f}-{c}-{tool}-{version}") for f, c in inputs]


@pytest.mark.parametrize(("fmt", "codec"), _ids("drgn", oracles.drgn_version(), DRGN_INPUTS))
def test_drgn_reads_ours(synth: Any, ours: oracles.OurOutputs, fmt: str, codec: str) -> None:
    """drgn (PyPI) reads every page of our file as the source has it."""
    pfns = synth.ref.present_pfns()
    with oracle_check("kdumper→tool", fmt, codec, f"drgn {oracles.drgn_version()}", "read pages"):
        reads = oracles.drgn_read(ours.one(fmt, codec), pfns)
        oracles.assert_oracle_pages(reads, synth.ref, pfns)


@pytest.mark.parametrize(
    ("fmt", "codec"), _ids("libkdumpfile", oracles.libkdumpfile_version(), LIBKDUMPFILE_INPUTS)
)
def test_libkdumpfile_reads_ours(
    synth: Any, ours: oracles.OurOutputs, fmt: str, codec: str
) -> None:
    """Debian's python3-libkdumpfile reads every page of our file as the source has it."""
    pfns = synth.ref.present_pfns()
    tool = f"libkdumpfile {oracles.libkdumpfile_version()}"
    with oracle_check("kdumper→tool", fmt, codec, tool, "read pages"):
        reads = oracles.libkdumpfile_read(ours.one(fmt, codec), pfns)
        oracles.assert_oracle_pages(reads, synth.ref, pfns)


@pytest.mark.parametrize(("fmt", "codec"), _ids("crash", oracles.crash_version(), CRASH_INPUTS))
def test_crash_osrelease_ours(synth: Any, ours: oracles.OurOutputs, fmt: str, codec: str) -> None:
    """``crash --osrelease`` accepts our file and finds the crashed kernel's release."""
    with oracle_check(
        "kdumper→tool", fmt, codec, f"crash {oracles.crash_version()}", "--osrelease"
    ):
        assert oracles.crash_osrelease(ours.one(fmt, codec)) == synth.release


def test_crash_osrelease_our_split(synth: Any, ours: oracles.OurOutputs) -> None:
    """``crash --osrelease`` accepts each part of our split set."""
    parts = ours.get("split-kdump", "zlib")
    with oracle_check(
        "kdumper→tool", "split-kdump", "zlib", f"crash {oracles.crash_version()}", "--osrelease"
    ):
        for part in parts:
            assert oracles.crash_osrelease(part) == synth.release
