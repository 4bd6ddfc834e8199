"""Shared fixtures: the synthetic vmcore and its ground truth; the oracle matrix report.

Kept small on purpose: helpers live in ``tests/oracles.py``; the VM harness's fixtures live in
``tests/vm/conftest.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import oracles

# The synthetic vmcore is small so that every page can be compared in every test: 32 MiB is
# 8192 pages, read back by each oracle in well under a second.
SYNTH_MIB = int(os.environ.get("KDUMPER_SYNTH_MIB", "32"))


@dataclass(frozen=True)
class Synth:
    """The synthetic x86_64 ELF vmcore of ``tests/synth.py`` and its independent ground truth."""

    path: Path
    info: Any  # tests.synth.SynthInfo
    ref: oracles.RefElf

    @property
    def release(self) -> str:
        """OSRELEASE from the VMCOREINFO note, read without kdumper."""
        for line in self.ref.notes.split(b"\0"):
            for entry in line.splitlines():
                if entry.startswith(b"OSRELEASE="):
                    return entry.split(b"=", 1)[1].decode()
        raise AssertionError(f"{self.path} has no OSRELEASE in VMCOREINFO")


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """A synthetic x86_64 ELF vmcore that makedumpfile accepts (made once per session)."""
    try:
        from tests.synth import make_vmcore
    except ImportError as e:
        oracles.unavailable(f"tests/synth.py (the synthetic vmcore) is not importable: {e}")
    path = tmp_path_factory.mktemp("synth") / "vmcore.elf"
    info = make_vmcore(path, mem_mib=SYNTH_MIB, seed=7)
    return Synth(path=path, info=info, ref=oracles.RefElf(path))


@pytest.fixture(scope="session")
def ours(synth: Synth, tmp_path_factory: pytest.TempPathFactory) -> oracles.OurOutputs:
    """The synthetic vmcore converted by kdumper's writers (each format/codec made on first use)."""
    return oracles.OurOutputs(synth.path, tmp_path_factory.mktemp("ours"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print which reference tool read which format and codec, and keep it as markdown."""
    table = oracles.matrix_markdown()
    if not table:
        return
    terminalreporter.section("oracle matrix (who read what)")
    terminalreporter.write(table)
    target = os.environ.get("KDUMPER_ORACLE_MATRIX") or str(oracles.CACHE / "oracle-matrix.md")
    try:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        oracles.write_matrix(target)
        terminalreporter.write_line(f"(written to {target})")
    except OSError as e:
        terminalreporter.write_line(f"(could not write {target}: {e})")
