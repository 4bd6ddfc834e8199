"""``kdumper load | unload | reload | test``: arm, disarm and test the capture kernel."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ..errors import UsageError
from ..host import service
from ..host.boot import plan_load
from .config_cmd import add_config_option, host_from_env, load_from_args
from .output import note, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``load``, ``unload``, ``reload`` and ``test``."""
    p = sub.add_parser(
        "load",
        help="load the capture kernel (arm kdump)",
        description="Load the capture kernel into the crash memory with kexec_file_load(2): "
        "the kernel and initrd of [load] (default: the running kernel's), with /proc/cmdline "
        "minus [load] remove plus [load] append as its command line. Replaces a loaded one.",
    )
    p.add_argument(
        "--boot",
        action="store_true",
        help="the boot-time load of kdumper.service (also reports the last test and "
        "first recovers a dump left on a raw target: kdumper recover-raw)",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would be loaded; load nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(p)
    p.set_defaults(func=run_load)

    p = sub.add_parser("unload", help="unload the capture kernel (disarm kdump)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(p)
    p.set_defaults(func=run_unload)

    p = sub.add_parser(
        "reload",
        help="load the capture kernel again (after a kernel, config or hotplug change)",
        description="Load the capture kernel again. With --if-loaded, do nothing unless one is "
        "loaded (for udev hotplug rules and kernel install hooks).",
    )
    p.add_argument("--if-loaded", action="store_true", help="only when one is loaded now")
    p.add_argument("--dry-run", action="store_true", help="show what would be loaded; load nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(p)
    p.set_defaults(func=run_reload)

    p = sub.add_parser(
        "test",
        help="crash this machine now to test kdump end to end",
        description="Record a test id, reload the capture kernel with it, and crash the kernel "
        "through /proc/sysrq-trigger. The machine boots the capture kernel, saves a dump with "
        "the test id and reboots; `kdumper status` then says whether the test dump was saved. "
        "Asks for confirmation on a terminal.",
    )
    p.add_argument("--yes", action="store_true", help="do not ask; crash right away")
    add_config_option(p)
    p.set_defaults(func=run_test)


def _dry_run(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)
    host = host_from_env()
    plan = plan_load(cfg.load, host.paths, release=host.release, arch=host.arch)
    service.check_plan(plan)
    if args.json:
        print_json({"dry_run": True, **plan.to_dict()})
    else:
        print(f"kernel:  {plan.kernel}")
        print(f"initrd:  {plan.initrd or 'none'}")
        print(f"cmdline: {plan.cmdline}")
        print("dry run: nothing was loaded")
    return 0


def _report(outcome: service.LoadOutcome, args: argparse.Namespace, verb: str) -> None:
    for w in outcome.warnings:
        note(f"warning: {w}")
    if args.json:
        print_json(outcome.to_dict())
        return
    plan = outcome.plan
    initrd = f" with {plan.initrd}" if plan.initrd else " without an initrd"
    print(f"{verb} {plan.kernel}{initrd}")
    print(f"capture command line: {plan.cmdline}")


def run_load(args: argparse.Namespace) -> int:
    """``kdumper load``."""
    if args.dry_run:
        return _dry_run(args)
    cfg = load_from_args(args)
    host = host_from_env()
    if args.boot:
        # a dump left on a raw target is copied first: a failing load must not lose it
        from .recover_raw_cmd import recover_at_boot

        recover_at_boot(cfg)
    outcome = service.load_capture(cfg, host)
    _report(outcome, args, "loaded")
    if args.boot:
        test = service.check_test(cfg, host.paths)
        if test is not None and test.result != "pending":
            note(f"last kdumper test {test.id}: {test.result}: {test.message}")
    return 0


def run_unload(args: argparse.Namespace) -> int:
    """``kdumper unload``."""
    was = service.unload_capture(host_from_env())
    if args.json:
        print_json({"unloaded": True, "was_loaded": was})
    else:
        print("unloaded the capture kernel" if was else "no capture kernel was loaded")
    return 0


def run_reload(args: argparse.Namespace) -> int:
    """``kdumper reload``."""
    if args.dry_run:
        return _dry_run(args)
    cfg = load_from_args(args)
    outcome = service.reload_capture(cfg, host_from_env(), if_loaded=args.if_loaded)
    if outcome is None:
        if args.json:
            print_json({"loaded": False, "skipped": "no capture kernel was loaded"})
        else:
            print("no capture kernel is loaded; nothing to reload")
        return 0
    _report(outcome, args, "reloaded")
    return 0


def _confirm(ask: Callable[[str], str] = input) -> bool:
    print(
        "kdumper test crashes this machine NOW: every process dies and unsaved data is lost.",
        file=sys.stderr,
    )
    print("It boots the capture kernel, saves a dump and reboots.", file=sys.stderr)
    try:
        answer = ask("Type 'yes' to crash the machine: ")
    except EOFError:
        return False
    return answer.strip().lower() == "yes"


def run_test(args: argparse.Namespace) -> int:
    """``kdumper test``."""
    cfg = load_from_args(args)
    host = host_from_env()
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise UsageError(
                "refusing to crash the machine without confirmation: stdin is not "
                "a terminal; add --yes"
            )
        if not _confirm():
            note("not confirmed; nothing was done")
            return 1
    tid = service.prepare_test(cfg, host)
    note(f"test {tid} recorded in {host.paths.test_state_file}; crashing the kernel now")
    sys.stdout.flush()
    sys.stderr.flush()
    service.trigger_crash(host.paths, sync=os.sync)
    return 0
