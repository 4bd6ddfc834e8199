#!/usr/bin/env python3
"""kdumper vs Debian's kdump-tools (makedumpfile): crash → dump saved, crash → machine back.

Both tools run in the same QEMU guest (vmharness.rootfs: debootstrap bookworm, the same kernel,
1 GiB, ``crashkernel=256M``, the same ext4 dump disk on ``/var/crash``), dump level 31 with zlib
(Debian's ``MAKEDUMP_ARGS`` default and kdumper's). The kdump-tools guest is the same tree plus
bookworm's kdump-tools, kexec-tools and makedumpfile (vmharness.kdumptools), kdumper's units
masked. Each run crashes the guest with sysrq and follows the capture kernel and the reboot; the
times come from the serial console, stamped by the host as the lines arrive.

Runs are interleaved (kernel by kernel, the tools' order alternating between runs) so both tools
see the same machine load; the table shows medians and the kdumper/kdump-tools ratio.

    python benchmarks/bench_capture.py --kernel 6.1 --kernel 6.12 --runs 2 [--json OUT]

Needs root and the VM tools (scripts/vm-deps.sh); each cycle takes 1-4 minutes under TCG.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmharness.cache import cache_dir  # noqa: E402
from vmharness.errors import HarnessError  # noqa: E402
from vmharness.kdumptools import TOOLS, CaptureRun, build_kdumptools, capture_cycle  # noqa: E402
from vmharness.rootfs import RootfsImage, build_rootfs  # noqa: E402

#: table column -> capture_timing key
COLUMNS: dict[str, str] = {
    "crash→capture kernel": "capture_kernel",
    "crash→capture service": "capture_start",
    "crash→dump saved": "dump_saved",
    "crash→reboot": "reboot",
    "crash→back": "back",
}


#: step table column -> (from, to) capture_timing keys ("" = the crash)
STEPS: dict[str, tuple[str, str]] = {
    "crash→capture kernel": ("", "capture_kernel"),
    "capture kernel boot": ("capture_kernel", "capture_start"),
    "service start→dmesg saved": ("capture_start", "dmesg_saved"),
    "dmesg→dump saved": ("dmesg_saved", "dump_saved"),
    "dump saved→reboot": ("dump_saved", "reboot"),
    "reboot→back (re-armed)": ("reboot", "back"),
}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, spread: tuple[float, float] | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.1f}"
    if spread is not None and spread[0] != spread[1]:
        text += f" ({spread[0]:.1f}–{spread[1]:.1f})"
    return text


def table(runs: list[CaptureRun], kernels: list[str]) -> str:
    """The markdown table: medians (min–max) per kernel and tool, then the ratio row."""
    head = ["kernel", "tool", "runs", *COLUMNS, "dump MiB"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kernel in kernels:
        medians: dict[str, dict[str, float | None]] = {}
        for tool in TOOLS:
            mine = [r for r in runs if r.kernel == kernel and r.tool == tool and r.ok]
            failed = sum(1 for r in runs if r.kernel == kernel and r.tool == tool and not r.ok)
            row = [kernel, tool, f"{len(mine)}" + (f" (+{failed} failed)" if failed else "")]
            medians[tool] = {}
            for key in COLUMNS.values():
                values = [r.timing[key] for r in mine if key in r.timing]
                medians[tool][key] = _median(values)
                spread = (min(values), max(values)) if values else None
                row.append(_fmt(medians[tool][key], spread))
            sizes = [r.dump_bytes / 2**20 for r in mine if r.dump_bytes is not None]
            medians[tool]["size"] = _median(sizes)
            row.append(_fmt(medians[tool]["size"]))
            out.append("| " + " | ".join(row) + " |")
        ratio = [kernel, "**kdumper / kdump-tools**", ""]
        for key in [*COLUMNS.values(), "size"]:
            a, b = medians["kdumper"][key], medians["kdump-tools"][key]
            ratio.append(f"{a / b:.2f}" if a is not None and b else "–")
        out.append("| " + " | ".join(ratio) + " |")
    return "\n".join(out)


def steps_table(runs: list[CaptureRun], kernels: list[str]) -> str:
    """Where the time goes: the median of each step's duration, per kernel and tool."""
    head = ["kernel", "tool", *STEPS]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kernel in kernels:
        for tool in TOOLS:
            mine = [r for r in runs if r.kernel == kernel and r.tool == tool and r.ok]
            row = [kernel, tool]
            for start, end in STEPS.values():
                values = [
                    r.timing[end] - (r.timing[start] if start else 0.0)
                    for r in mine
                    if end in r.timing and (not start or start in r.timing)
                ]
                row.append(_fmt(_median(values)))
            out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def _load(path: Path) -> list[CaptureRun]:
    runs = []
    for item in json.loads(path.read_text()):
        item["workdir"] = Path(item["workdir"])
        item["loadavg"] = tuple(item["loadavg"])
        runs.append(CaptureRun(**item))
    return runs


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved cycles and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", action="append", help="6.1, 6.12 (repeatable; default 6.1)")
    parser.add_argument("--runs", type=int, default=2, help="crashes per kernel and tool")
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument("--mem", default="1G")
    parser.add_argument("--crashkernel", default="256M")
    parser.add_argument("--from-json", type=Path, help="print the tables of a --json file")
    args = parser.parse_args(argv)
    kernels: list[str] = args.kernel or ["6.1"]
    if args.from_json:
        try:
            loaded = _load(args.from_json)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            print(f"bench_capture: {args.from_json}: {exc}", file=sys.stderr)
            return 2
        print(table(loaded, kernels) + "\n\n" + steps_table(loaded, kernels))
        return 0
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        print("bench_capture: needs root (debootstrap, chroot, mkfs)", file=sys.stderr)
        return 2

    images: dict[tuple[str, str], RootfsImage] = {}
    try:
        for kernel in kernels:
            images[kernel, "kdumper"] = build_rootfs(kernel)
            images[kernel, "kdump-tools"] = build_kdumptools(kernel)
    except HarnessError as exc:
        print(f"bench_capture: building the guests: {exc}", file=sys.stderr)
        return 1

    base = cache_dir("bench-capture")
    runs: list[CaptureRun] = []
    started = time.monotonic()
    for n in range(args.runs):
        for kernel in kernels:
            order = TOOLS if n % 2 == 0 else tuple(reversed(TOOLS))
            for tool in order:
                workdir = base / f"{kernel}-{tool}-{n}"
                try:
                    run, _ = capture_cycle(
                        images[kernel, tool],
                        tool,
                        workdir,
                        mem=args.mem,
                        crashkernel=args.crashkernel,
                    )
                except HarnessError as exc:
                    print(f"bench_capture: {kernel} {tool} run {n}: {exc}", file=sys.stderr)
                    continue
                runs.append(run)
                state = "ok" if run.ok else "FAILED: " + "; ".join(run.problems)
                timing = " ".join(f"{k}={v:.1f}" for k, v in run.timing.items())
                print(
                    f"# {kernel} {tool} run {n}: {timing} dump={run.dump_bytes} "
                    f"load={run.loadavg[0]:.2f} {state} ({workdir})",
                    file=sys.stderr,
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in runs], indent=2) + "\n")

    loads = [r.loadavg[0] for r in runs]
    packages = ", ".join(images[kernels[0], "kdump-tools"].info.get("packages", []))
    print(table(runs, kernels))
    print()
    print(steps_table(runs, kernels))
    print()
    print(
        f"{len(runs)} cycles in {(time.monotonic() - started) / 60:.1f} min; seconds, median "
        f"(min–max) of the successful runs; mem {args.mem}, crashkernel={args.crashkernel}, "
        f"level 31, zlib; {packages}; host load average (1 min) at the runs' start "
        f"{min(loads, default=0):.2f}–{max(loads, default=0):.2f} on {os.cpu_count()} CPUs"
    )
    return 0 if runs and all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
