"""``kdumper crashkernel [--show] | --set SIZE|auto|none [--dry-run]``: the crash memory."""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..host import boot
from ..host.crashkernel import (
    CrashkernelError,
    compute_reservation,
    current_reservation,
    mib,
    parse_cmdline,
    recommend,
)
from ..host.kexec import read_state
from ..host.paths import read_text
from ..host.service import Host, ram_size
from ..host.status import pending_crashkernel
from .config_cmd import add_config_option, host_from_env, load_from_args
from .output import human_bytes, note, print_json, print_pairs

WHICH = shutil.which  # tests replace these two
RUN = boot._run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``crashkernel`` subcommand."""
    p = sub.add_parser(
        "crashkernel",
        help="show or set the crash kernel memory reservation (crashkernel=)",
        description="Show the crashkernel= reservation (command line, reserved now, what this "
        "machine needs), or set it in the bootloader configuration (grubby, or "
        "/etc/default/grub + update-grub). A new reservation takes effect at the next boot.",
        epilog="SIZE is any crashkernel= value: 256M, 1G-64G:256M,64G-:512M, '1G,high 256M,low'; "
        "'auto' writes kdumper's recommendation for this machine; 'none' removes crashkernel=.",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--show", action="store_true", help="show the reservation (default)")
    group.add_argument("--set", metavar="SIZE", help="set crashkernel= (SIZE, auto or none)")
    p.add_argument("--dry-run", action="store_true", help="with --set: show, change nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(p)
    p.set_defaults(func=run)


def _sizes(host: Host, args: argparse.Namespace) -> tuple[int | None, int | None]:
    """Kernel image memory and initrd size of what `load` would load (for the footprint)."""
    try:
        cfg = load_from_args(args)
    except ConfigError:
        cfg = Config()
    plan = boot.plan_load(cfg.load, host.paths, release=host.release, arch=host.arch)
    if plan.kernel is None:
        return None, None
    try:
        kernel = os.path.getsize(plan.kernel)
        initrd = os.path.getsize(plan.initrd) if plan.initrd else 0
    except OSError:
        return None, None
    return kernel, initrd


def collect(host: Host, args: argparse.Namespace) -> dict[str, Any]:
    """The facts ``crashkernel --show`` reports."""
    paths = host.paths
    cmdline = read_text(paths.proc_cmdline) or ""
    cargs = parse_cmdline(cmdline)
    res = current_reservation(read_text(paths.proc_iomem), read_text(paths.kexec_crash_size))
    ram = ram_size(paths)
    kernel_size, initrd_size = _sizes(host, args)
    expected: int | None = None
    notes: list[str] = list(cargs.errors)
    if ram:
        try:
            r = compute_reservation(cargs, ram, host.arch)
            expected = r.total
            notes += r.notes
        except CrashkernelError as e:
            notes.append(f"{e} (so nothing is reserved)")
            expected = 0
    rec = recommend(ram, kernel_size=kernel_size, initrd_size=initrd_size) if ram else None
    current = " ".join(f"crashkernel={v}" for v in cargs.all_values)
    return {
        "cmdline": current,
        "reserved": res.size,
        "ranges": [[s, e] for s, e in res.ranges],
        "loaded": read_state(paths).loaded,
        "ram": ram,
        "expected": expected,
        "recommended": rec.size if rec else None,
        "recommended_value": rec.value if rec else None,
        "recommendation": rec.reason if rec else None,
        "footprint": rec.footprint if rec else None,
        "pending": pending_crashkernel(read_text(paths.default_grub), current),
        "arch": host.arch,
        "notes": notes,
    }


def render(info: dict[str, Any]) -> None:
    """The human-readable lines."""
    ranges = ", ".join(f"{s:#x}-{e:#x}" for s, e in info["ranges"] if e)
    reserved = mib(info["reserved"]) if info["reserved"] else "nothing"
    if ranges:
        reserved += f" at {ranges}"
    rec = None
    if info["recommended"]:
        rec = f"{mib(info['recommended'])}: crashkernel={info['recommended_value']}"
    elif info["recommendation"]:
        rec = f"none ({info['recommendation']})"
    print_pairs(
        [
            ("command line", info["cmdline"] or "no crashkernel="),
            ("reserved now", reserved),
            ("RAM", human_bytes(info["ram"]) if info["ram"] else "unknown"),
            ("command line gives", mib(info["expected"]) if info["expected"] is not None else None),
            ("recommended", rec),
            ("why", info["recommendation"] if info["recommended"] else None),
            ("capture footprint", mib(info["footprint"]) if info["footprint"] else None),
            (
                "pending",
                f"{info['pending']} (in the bootloader config: reboot to use it)"
                if info["pending"]
                else None,
            ),
        ]
    )
    for n in info["notes"]:
        print(f"note: {n}")


def run(args: argparse.Namespace) -> int:
    """``kdumper crashkernel``."""
    host = host_from_env()
    if args.set is None:
        if args.dry_run:
            note("--dry-run goes with --set")
        info = collect(host, args)
        if args.json:
            print_json(info)
        else:
            render(info)
        return 0
    value = args.set
    if value.strip() == "auto":
        ram = ram_size(host.paths)
        if not ram:
            raise CrashkernelError("cannot tell this machine's RAM size", "auto")
        kernel_size, initrd_size = _sizes(host, args)
        rec = recommend(ram, kernel_size=kernel_size, initrd_size=initrd_size)
        if not rec.size:
            raise CrashkernelError(rec.reason, "auto")
        value = rec.value
        note(f"auto: {rec.reason}")
    change = boot.plan_crashkernel_change(value, host.paths, which=WHICH)
    if not args.dry_run:
        boot.apply_crashkernel_change(change, run=RUN)
    if args.json:
        print_json(
            {**change.to_dict(), "dry_run": bool(args.dry_run), "reboot_needed": change.changed}
        )
        return 0
    where = change.file if change.tool == "grub" else "every boot entry (grubby)"
    if not change.changed:
        print(f"{where}: crashkernel= is already as asked; nothing to do")
    else:
        print(f"{where}:" + (f" {change.variable}" if change.variable else ""))
        for line in change.diff():
            print(f"  {line}")
        for argv in change.commands:
            print(("would run: " if args.dry_run else "ran: ") + " ".join(argv))
        if args.dry_run:
            print("dry run: nothing was changed")
        else:
            print("reboot needed: the new reservation takes effect at the next boot")
    for w in change.warnings:
        note(f"warning: {w}")
    return 0
