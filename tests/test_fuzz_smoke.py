"""The fuzz targets in tests/fuzz/, run briefly on every test run.

Two ways: each atheris target for a fixed number of inputs with a fixed seed (deterministic, so a
failure here is reproducible; ``bash tests/fuzz/run.sh SECONDS`` fuzzes for as long as wanted),
and the same targets fed by hypothesis with mutated seed files (works where atheris cannot be
installed or instrument). The only acceptable failure of a target is a ``KdumperError``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import oracles
from tests.fuzz import fuzzlib

ROOT = Path(__file__).resolve().parent.parent
# inputs per target: about 5-20 s each on this machine (the readers run 400-20000 inputs/s)
RUNS = {"elf": 3000, "kdump": 20000, "flattened": 10000, "vmcoreinfo": 10000, "notes": 50000}
SCALE = float(os.environ.get("KDUMPER_FUZZ_SCALE", "1"))
HYPOTHESIS_EXAMPLES = int(os.environ.get("KDUMPER_FUZZ_EXAMPLES", "150"))

# Findings reported to the reader's owner and not fixed yet: (target, libFuzzer artifact kind)
# -> why. They xfail (any other crash fails); KDUMPER_FUZZ_STRICT=1 makes them fail too.
KNOWN: dict[tuple[str, str], str] = {
    # e.g. ("elf", "oom"): "what the reader does wrong (reported to its owner)",
}
STRICT = os.environ.get("KDUMPER_FUZZ_STRICT", "") not in ("", "0")


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed inputs of every target (written by kdumper's writers)."""
    root = tmp_path_factory.mktemp("fuzz-seeds")
    fuzzlib.write_seeds(root)
    return root


def _target(name: str) -> Callable[[bytes], None]:
    module = importlib.import_module(f"tests.fuzz.fuzz_{name}")
    return fuzzlib.guarded(module.one_input)


@pytest.mark.parametrize("target", fuzzlib.TARGETS)
def test_seeds_are_accepted(target: str, seed_dir: Path) -> None:
    """Every seed parses cleanly: the targets start from valid inputs."""
    module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    for seed in sorted((seed_dir / target).iterdir()):
        module.one_input(seed.read_bytes())


@pytest.mark.parametrize("target", fuzzlib.TARGETS)
def test_atheris(target: str, seed_dir: Path, tmp_path: Path) -> None:
    """A deterministic atheris run: fixed seed and input count, fresh corpus."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        oracles.unavailable("atheris is not installed (pip install -e '.[fuzz]')")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    runs = max(100, int(RUNS[target] * SCALE))
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'src'}")
    argv = [
        sys.executable,
        str(ROOT / "tests" / "fuzz" / f"fuzz_{target}.py"),
        f"-runs={runs}",
        "-seed=1",
        "-rss_limit_mb=2048",
        "-timeout=10",
        "-max_len=65536",
        "-max_total_time=120",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
        str(seed_dir / target),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    if res.returncode != 0:
        found = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
        keep = oracles.CACHE / "fuzz" / "crashes"
        keep.mkdir(parents=True, exist_ok=True)
        for name in found:
            (keep / f"{target}-{name}").write_bytes((tmp_path / name).read_bytes())
        tail = "\n".join(
            ln
            for ln in res.stderr.splitlines()
            if not ln.endswith("read as incomplete") and not ln.startswith("#")
        )[-4000:]
        kinds = {name.split("-", 1)[0] for name in found}
        if not STRICT and kinds and all((target, k) in KNOWN for k in kinds):
            pytest.xfail(f"known: {'; '.join(KNOWN[(target, k)] for k in sorted(kinds))}")
        pytest.fail(
            f"fuzz target {target} found a bug (inputs kept in {keep}: {found}); "
            f"replay: PYTHONPATH=.:src python tests/fuzz/fuzz_{target}.py {keep}/{target}-...\n"
            f"{tail}"
        )


INTERESTING = [
    0, 1, 2, 0x7F, 0x80, 0xFF, 0x1000 - 1, 0x1000, 0x1000 + 1, 0xFFFF, 0x7FFFFFFF, 0x80000000,
    0xFFFFFFFF, 1 << 32, 1 << 40, 1 << 52, 1 << 62, 1 << 63, (1 << 64) - 1,
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few mutations, biased towards the headers at the start of each format."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 5))):
        if not data:
            break
        region = draw(st.sampled_from(["head", "block1", "anywhere"]))
        hi = {"head": 1024, "block1": 4096 + 1024, "anywhere": len(data)}[region]
        lo = 4096 if region == "block1" and len(data) > 4096 else 0
        pos = draw(st.integers(lo, max(lo, min(hi, len(data)) - 1)))
        op = draw(st.sampled_from(["flip", "word", "truncate", "insert", "delete"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "word":
            width = draw(st.sampled_from([4, 8]))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
            raw = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
            data[pos : pos + width] = raw
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=24))
        else:
            del data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


@pytest.mark.parametrize("target", fuzzlib.TARGETS)
def test_hypothesis(target: str) -> None:
    """The targets fed by hypothesis with mutated seeds (the fallback without atheris)."""
    seeds = list(fuzzlib.seeds()[target].values())
    one_input = _target(target)

    @settings(
        max_examples=HYPOTHESIS_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(seeds))
    def run(data: bytes) -> None:
        with oracles.limited_address_space(4 << 30):
            one_input(data)

    run()
