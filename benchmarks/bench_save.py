#!/usr/bin/env python3
"""kdumper save vs makedumpfile on the same vmcores: wall time, time to a durable dump, peak RSS,
output size.

Each tool runs as a whole process (Python start-up and imports included for kdumper), several
times, interleaved so every tool sees the same machine load; the table shows medians. Two times:

* ``wall``: the process alone;
* ``saved``: the process and then ``fsync`` of its output — the time until the dump is on disk,
  which is what a capture needs before it reboots. kdumper fsyncs its output itself (it starts
  writeback while it writes); makedumpfile leaves its dirty pages to the kernel's flusher, so
  its ``wall`` does not include writing the dump to disk (kdump-tools and kdumpctl ``sync``
  afterwards).

Peak RSS comes from GNU time (``%M``). Outputs go to a scratch directory and are deleted after
each run; the input stays in the page cache.

``--cpus 1`` runs every tool on one CPU (``taskset``), as in a capture kernel booted with
``nr_cpus=1`` (kdumper's, kdump-tools' and kdumpctl's default). ``--python /usr/bin/python3`` also
runs kdumper under that interpreter (a cached venv with kdumper installed from this tree, byte
code compiled, as a Debian user's install is; the guest's capture uses Debian's python3).

Inputs: the VM harness's cached busy vmcores (6.1 and 6.12, 1 GiB and 4 GiB guests, built with
``python -m vmharness vmcore --kernel 6.1 --scenario busy --trigger sysrq --mem 4G``;
``~/.cache/kdumper/vmcores``; this script never starts QEMU), else a synthetic 1 GiB vmcore from
tests/synth.py. ``--vmcore PATH`` adds any ELF vmcore.

    python benchmarks/bench_save.py [--runs 3] [--levels 1,31] [--codecs zstd,lzo,zlib]
        [--cpus 1] [--python /usr/bin/python3] [--mem 1024M,4096M]
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


@dataclass
class Case:
    """One vmcore × level × codec × tool."""

    vmcore: str
    level: int
    codec: str
    tool: str  # "kdumper", "makedumpfile 1.7.2", ...
    walls: list[float] = field(default_factory=list)
    saved: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    size: int = 0
    failed: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def saved_wall(self) -> float:
        return statistics.median(self.saved) if self.saved else float("nan")

    @property
    def rss(self) -> float:
        return max(self.rss_kib) / 1024 if self.rss_kib else float("nan")


def kdumper_argv() -> list[str]:
    """How to run ``kdumper save`` as its own process (this tree's package, byte code compiled
    first as an installation does: the interpreter is never left to compile it on every run)."""
    import kdumper

    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(kdumper.__file__)],
                   stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    exe = shutil.which("kdumper")
    return [exe, "save"] if exe is not None else [sys.executable, "-m", "kdumper", "save"]


def python_venv(python: str) -> list[str]:
    """``kdumper save`` under ``python``: a venv in the cache with this tree installed."""
    tag = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    venv = CACHE / "bench" / f"venv-{os.path.basename(python)}-{tag}"
    if not (venv / "bin" / "kdumper").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--force-reinstall", "--no-deps",
                    str(ROOT)], check=True)  # fmt: skip
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True)
    return [str(venv / "bin" / "kdumper"), "save"]


def vmcores(
    extra: list[str], scratch: Path, harness: bool = True, mems: tuple[str, ...] = ("1024M",)
) -> list[tuple[str, Path]]:
    """(label, path) of the inputs."""
    found: list[tuple[str, Path]] = []
    base = CACHE / "vmcores" if harness else Path("/nonexistent")
    for mem in mems:
        gib = int(mem.rstrip("M")) // 1024
        for pattern, label in (
            ("6.1.*-busy-sysrq-*", f"6.1 busy {gib} GiB"),
            ("6.12.*-busy-sysrq-*", f"6.12 busy {gib} GiB"),
        ):
            for d in sorted(base.glob(pattern)) if base.is_dir() else []:
                if (d / "vmcore.elf").exists() and d.name.split("-")[-2] == mem:
                    found.append((label, _pin(d / "vmcore.elf", scratch)))
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


def run_once(argv: list[str], out: Path) -> tuple[float, float, int, int, str]:
    """Wall seconds, seconds until the output is on disk, peak RSS KiB, output bytes (all
    parts), error text."""
    started = time.monotonic()
    res = subprocess.run(
        [TIME, "-f", "%e %M", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if out.exists():
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    saved = time.monotonic() - started
    lines = res.stderr.strip().splitlines()
    rss = int(lines[-1].split()[1]) if lines and len(lines[-1].split()) == 2 else 0
    size = out.stat().st_size if out.exists() else 0
    if out.exists():
        out.unlink()
    err = "" if res.returncode == 0 else f"exit {res.returncode}: {' '.join(lines[-3:])}"
    return wall, saved, rss, size, err


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
    ap.add_argument("--cpus", type=int, help="run every tool on this many CPUs (taskset)")
    ap.add_argument("--python", action="append", default=[],
                    help="also run kdumper under this interpreter (a cached venv)")  # fmt: skip
    ap.add_argument("--mem", default="1024M", help="harness guest sizes, e.g. 1024M,4096M")
    ap.add_argument("--scratch", help="directory for outputs (default: a temporary one)")
    args = ap.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="kdumper-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return run_all(args, scratch)
    finally:
        if not args.scratch:  # our own temporary directory (hard links, the synthetic vmcore)
            shutil.rmtree(scratch, ignore_errors=True)


def run_all(args: argparse.Namespace, scratch: Path) -> int:
    """Every case, interleaved; print the table."""
    levels = [int(x) for x in args.levels.split(",")]
    codecs = args.codecs.split(",")
    kdumpers = {"kdumper": kdumper_argv()}
    for py in args.python:
        kdumpers[f"kdumper ({py})"] = python_venv(py)
    pin: list[str] = []
    if args.cpus:
        cpus = sorted(os.sched_getaffinity(0))[: args.cpus]
        pin = ["taskset", "-c", ",".join(str(c) for c in cpus)]
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
    mems = tuple(args.mem.split(","))
    inputs = vmcores(extra, scratch, harness=not args.no_harness, mems=mems)
    for label, path in inputs:
        for level in levels:
            for codec in codecs:
                plan: list[tuple[Case, list[str], Path]] = []
                out = scratch / "out"
                for version, exe in tools.items():
                    if codec in MDF_CODECS[version]:
                        c = Case(label, level, codec, f"makedumpfile {version}")
                        plan.append((c, [*pin, exe, "-d", str(level), MDF_OPTION[codec],
                                         str(path), str(out)], out))  # fmt: skip
                for name, kd in kdumpers.items():
                    c = Case(label, level, codec, name)
                    argv = [*pin, *kd, str(path), str(out), "-d", str(level), "-c", codec,
                            "--no-progress"]  # fmt: skip
                    if args.threads is not None:
                        argv += ["--threads", str(args.threads)]
                    plan.append((c, argv, out))
                for _ in range(args.runs):  # interleaved: the same load for every tool
                    for case, argv_, out_ in plan:
                        wall, saved, rss, size, err = run_once(argv_, out_)
                        if err:
                            case.failed = err
                            continue
                        case.walls.append(wall)
                        case.saved.append(saved)
                        case.rss_kib.append(rss)
                        case.size = size
                cases.extend(c for c, _, _ in plan)
                print(f"# done: {label} -d {level} {codec}", file=sys.stderr)
    print_table(cases, args.runs, inputs, args.cpus)
    return 0


def _mib(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size / 2**20:.0f} MiB, {st.st_blocks * 512 / 2**20:.0f} MiB on disk"


def print_table(
    cases: list[Case], runs: int, inputs: list[tuple[str, Path]], cpus: int | None = None
) -> None:
    load = os.getloadavg()
    where = f"pinned to {cpus} CPU(s) with taskset" if cpus else "all CPUs"
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({where}), load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end; "
          f"median of {runs} runs.")  # fmt: skip
    print("Inputs: " + "; ".join(f"{lb} ({_mib(p)})" for lb, p in inputs))
    print()
    print("| vmcore | -d | codec | tool | wall s | saved s | peak RSS MiB | output MiB "
          "| saved vs 1.7.2 | saved vs 1.7.6 | wall vs 1.7.6 | size vs 1.7.6 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, int, str], dict[str, Case]] = {}
    for c in cases:
        groups.setdefault((c.vmcore, c.level, c.codec), {})[c.tool] = c
    for (vm, level, codec), by_tool in groups.items():
        for tool, c in by_tool.items():
            mine = tool.startswith("kdumper")
            ratios = []
            for ref, attr in (("1.7.2", "saved_wall"), ("1.7.6", "saved_wall"), ("1.7.6", "wall")):
                r = by_tool.get(f"makedumpfile {ref}")
                ok = mine and r is not None and r.walls and c.walls
                ratios.append(f"{getattr(c, attr) / getattr(r, attr):.2f}" if ok else "")
            r = by_tool.get("makedumpfile 1.7.6")
            ok = mine and r is not None and r.size and c.size
            ratios.append(f"{c.size / r.size:.3f}" if ok else "")  # type: ignore[union-attr]
            if c.failed and not c.walls:
                print(f"| {vm} | {level} | {codec} | {tool} | failed: {c.failed} | | | | | | | |")
                continue
            print(
                f"| {vm} | {level} | {codec} | {tool} | {c.wall:.2f} | {c.saved_wall:.2f} | "
                f"{c.rss:.0f} | {c.size / 2**20:.1f} | " + " | ".join(ratios) + " |"
            )


if __name__ == "__main__":
    sys.exit(main())
