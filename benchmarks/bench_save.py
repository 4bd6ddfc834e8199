#!/usr/bin/env python3
"""kdumper save vs makedumpfile on the same vmcores: wall time, peak RSS, output size.

Each tool runs as a whole process (Python start-up and imports included for kdumper), several
times, interleaved so both see the same machine load; the table shows medians. Peak RSS comes
from GNU time (``%M``). Outputs go to a scratch directory and are deleted after each run, so
the input stays in the page cache and no run pays for deleting the previous output.

Inputs: the VM harness's cached busy 1 GiB vmcores (6.1 and 6.12) when they exist
(``~/.cache/kdumper/vmcores``; this script never starts QEMU), else a synthetic 1 GiB vmcore from
tests/synth.py. ``--vmcore PATH`` adds any ELF vmcore.

    python benchmarks/bench_save.py [--runs 3] [--levels 1,31] [--codecs zstd,lzo,zlib]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KDUMPER_CACHE") or Path.home() / ".cache" / "kdumper")
MAKEDUMPFILE = {
    "1.7.2": "/usr/bin/makedumpfile",
    "1.7.6": str(CACHE / "tools" / "makedumpfile-1.7.6" / "usr" / "bin" / "makedumpfile"),
}
MDF_CODECS = {"1.7.2": ("zlib", "lzo"), "1.7.6": ("zlib", "lzo", "zstd")}
MDF_OPTION = {"zlib": "-c", "lzo": "-l", "snappy": "-p", "zstd": "-z"}
TIME = "/usr/bin/time"

# kdumper's CLI until main.py registers save: the same main(), with save added
_KDUMPER_SHIM = r"""
import argparse, sys
from kdumper.cli import main as m, save_cmd
build = m.build_parser
def bp():
    p = build()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "save" not in sub.choices:
        save_cmd.register(sub)
    return p
m.build_parser = bp
sys.exit(m.main())
"""


@dataclass
class Case:
    """One vmcore × level × codec × tool."""

    vmcore: str
    level: int
    codec: str
    tool: str  # "kdumper", "makedumpfile 1.7.2", ...
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    size: int = 0
    failed: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def rss(self) -> float:
        return max(self.rss_kib) / 1024 if self.rss_kib else float("nan")


def kdumper_argv() -> list[str]:
    """How to run ``kdumper save`` as its own process."""
    exe = shutil.which("kdumper")
    if exe is not None:
        probe = subprocess.run([exe, "save", "--help"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [exe, "save"]
    return [sys.executable, "-c", _KDUMPER_SHIM, "save"]


def vmcores(extra: list[str], scratch: Path, harness: bool = True) -> list[tuple[str, Path]]:
    """(label, path) of the inputs."""
    found: list[tuple[str, Path]] = []
    base = CACHE / "vmcores" if harness else Path("/nonexistent")
    for pattern, label in (
        ("6.1.*-busy-sysrq-*", "6.1 busy 1 GiB"),
        ("6.12.*-busy-sysrq-*", "6.12 busy 1 GiB"),
    ):
        for d in sorted(base.glob(pattern)) if base.is_dir() else []:
            if (d / "vmcore.elf").exists() and "1024M" in d.name:
                found.append((f"{label} ({d.name[-16:]})", _pin(d / "vmcore.elf", scratch)))
                break
    for p in extra:
        found.append((os.path.basename(p), Path(p)))
    if not found:
        sys.path.insert(0, str(ROOT))
        from tests.synth import make_vmcore

        path = scratch / "synth-1g.elf"
        make_vmcore(path, mem_mib=1024, populated_mib=1024, seed=3)
        found.append(("synthetic 1 GiB (tests/synth.py)", path))
    return found


def _pin(path: Path, scratch: Path) -> Path:
    """A hard link in the scratch directory, so the harness may replace its cache meanwhile."""
    link = scratch / f"{path.parent.name}.elf"
    try:
        if not link.exists():
            os.link(path, link)
        return link
    except OSError:
        return path


def run_once(argv: list[str], out: Path) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS KiB, output bytes (all parts), error text."""
    started = time.monotonic()
    res = subprocess.run(
        [TIME, "-f", "%e %M", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    lines = res.stderr.strip().splitlines()
    rss = int(lines[-1].split()[1]) if lines and len(lines[-1].split()) == 2 else 0
    size = out.stat().st_size if out.exists() else 0
    if out.exists():
        out.unlink()
    err = "" if res.returncode == 0 else f"exit {res.returncode}: {' '.join(lines[-3:])}"
    return wall, rss, size, err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--levels", default="1,31")
    ap.add_argument("--codecs", default="zstd,lzo,zlib")
    ap.add_argument("--vmcore", action="append", default=[], help="an extra ELF vmcore")
    ap.add_argument("--no-harness", action="store_true", help="skip the harness's vmcores")
    ap.add_argument(
        "--synthetic-gib",
        type=int,
        help="also a sparse synthetic vmcore of this much RAM (64 MiB busy, the rest idle)",
    )
    ap.add_argument("--threads", type=int, help="kdumper --threads (default: one per CPU)")
    ap.add_argument("--scratch", help="directory for outputs (default: a temporary one)")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    codecs = args.codecs.split(",")
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="kdumper-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    kd = kdumper_argv()
    tools = {v: p for v, p in MAKEDUMPFILE.items() if os.access(p, os.X_OK)}
    cases: list[Case] = []
    extra = list(args.vmcore)
    if args.synthetic_gib:
        sys.path.insert(0, str(ROOT))
        from tests.synth import make_vmcore

        sparse = scratch / f"synth-{args.synthetic_gib}g.elf"
        if not sparse.exists():
            make_vmcore(sparse, mem_mib=args.synthetic_gib * 1024, seed=2)
        extra.append(str(sparse))
    inputs = vmcores(extra, scratch, harness=not args.no_harness)
    for label, path in inputs:
        for level in levels:
            for codec in codecs:
                plan: list[tuple[Case, list[str], Path]] = []
                out = scratch / "out"
                for version, exe in tools.items():
                    if codec in MDF_CODECS[version]:
                        c = Case(label, level, codec, f"makedumpfile {version}")
                        plan.append((c, [exe, "-d", str(level), MDF_OPTION[codec], str(path),
                                         str(out)], out))  # fmt: skip
                c = Case(label, level, codec, "kdumper")
                argv = [*kd, str(path), str(out), "-d", str(level), "-c", codec, "--no-progress"]
                if args.threads is not None:
                    argv += ["--threads", str(args.threads)]
                plan.append((c, argv, out))
                for _ in range(args.runs):  # interleaved: the same load for every tool
                    for case, argv_, out_ in plan:
                        wall, rss, size, err = run_once(argv_, out_)
                        if err:
                            case.failed = err
                            continue
                        case.walls.append(wall)
                        case.rss_kib.append(rss)
                        case.size = size
                cases.extend(c for c, _, _ in plan)
                print(f"# done: {label} -d {level} {codec}", file=sys.stderr)
    print_table(cases, args.runs, inputs)
    return 0


def _mib(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size / 2**20:.0f} MiB, {st.st_blocks * 512 / 2**20:.0f} MiB on disk"


def print_table(cases: list[Case], runs: int, inputs: list[tuple[str, Path]]) -> None:
    load = os.getloadavg()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end; "
          f"median of {runs} runs.")  # fmt: skip
    print("Inputs: " + "; ".join(f"{lb} ({_mib(p)})" for lb, p in inputs))
    print()
    print("| vmcore | -d | codec | tool | wall s | peak RSS MiB | output MiB "
          "| wall vs 1.7.2 | wall vs 1.7.6 | size vs 1.7.2 | size vs 1.7.6 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, int, str], dict[str, Case]] = {}
    for c in cases:
        groups.setdefault((c.vmcore, c.level, c.codec), {})[c.tool] = c
    for (vm, level, codec), by_tool in groups.items():
        for tool, c in by_tool.items():
            ratios = []
            for ref in ("makedumpfile 1.7.2", "makedumpfile 1.7.6"):
                r = by_tool.get(ref)
                ok = tool == "kdumper" and r is not None and r.walls and c.walls
                ratios.append(f"{c.wall / r.wall:.2f}" if ok else "")  # type: ignore[union-attr]
            for ref in ("makedumpfile 1.7.2", "makedumpfile 1.7.6"):
                r = by_tool.get(ref)
                ok = tool == "kdumper" and r is not None and r.size and c.size
                ratios.append(f"{c.size / r.size:.3f}" if ok else "")  # type: ignore[union-attr]
            if c.failed and not c.walls:
                print(f"| {vm} | {level} | {codec} | {tool} | failed: {c.failed} | | | | | | |")
                continue
            print(
                f"| {vm} | {level} | {codec} | {tool} | {c.wall:.2f} | {c.rss:.0f} | "
                f"{c.size / 2**20:.1f} | " + " | ".join(ratios) + " |"
            )


if __name__ == "__main__":
    sys.exit(main())
