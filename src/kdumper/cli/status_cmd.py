"""``kdumper status [--json]``: is this machine protected? Exit 3 when it is not."""

from __future__ import annotations

import argparse
import time

from ..errors import ConfigError, ExitCode
from ..host.crashkernel import mib
from ..host.status import HostStatus, collect_status
from .config_cmd import add_config_option, host_from_env, load_from_args
from .output import human_bytes, print_json, print_pairs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``status`` subcommand."""
    p = sub.add_parser(
        "status",
        help="is this machine protected by kdump? if not, why and what to do",
        description="Report the crash memory reservation, whether the capture kernel is "
        "loaded, what would be loaded, the dump target and its free space, the configuration, "
        "the last dump and the last `kdumper test`. Exit 0 when protected, 3 when not.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not connect to an ssh target (only check that its key file exists)",
    )
    add_config_option(p)
    p.set_defaults(func=run)


def _when(epoch: object) -> str:
    if not isinstance(epoch, int):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def render(st: HostStatus) -> None:
    """One screen of text."""
    head = "protected" if st.operational else "NOT protected"
    print(f"kdumper: this machine is {head}")
    reserved = mib(st.reserved) if st.reserved else "none"
    if st.cmdline_crashkernel:
        reserved += f" ({st.cmdline_crashkernel})"
    if st.recommended:
        reserved += f"; recommended {mib(st.recommended)}"
    state = st.state
    if state is None or not state.supported:
        loaded = "kernel has no kdump support"
    elif state.loaded:
        rec = st.loaded or {}
        what = rec.get("kernel") or "unknown image (loaded outside kdumper)"
        since = f" since {_when(rec.get('loaded_at'))}" if rec.get("loaded_at") else ""
        loaded = f"loaded{since}: {what}"
    else:
        loaded = "not loaded"
    plan = st.plan
    would = None
    if plan is not None:
        kernel = plan.kernel or "NOT FOUND"
        initrd = plan.initrd or ("NOT FOUND" if plan.initrd_wanted else "none")
        would = f"{kernel} + {initrd}"
    target = None
    if st.target is not None:
        t = st.target
        target = f"{t.location} ({t.kind})"
        if t.exists is False:
            target += ", MISSING"
        elif t.free is not None:
            target += f", {human_bytes(t.free)} free"
        elif t.exists is None:
            target += ", not checked from here"
    config = "ok" if st.config_error is None else "ERROR"
    if st.config_files:
        config += f" ({', '.join(st.config_files)})"
    elif st.config_error is None:
        config += " (built-in defaults)"
    last = "none"
    if st.last_dump is not None:
        d = st.last_dump
        last = f"{d.path} ({_when(d.mtime)}" + (", INCOMPLETE)" if d.incomplete else ")")
    test = None
    if st.test is not None:
        test = f"{st.test.id} {st.test.result}: {st.test.message}"
    lock = state.lockdown if state is not None and state.lockdown else None
    hotplug = None
    if state is not None and (state.cpu_hotplug or state.memory_hotplug):
        hotplug = "the kernel updates the loaded image itself (crash_hotplug)"
    print_pairs(
        [
            ("  reservation", reserved),
            ("  capture kernel", loaded),
            ("  would load", would),
            ("  target", target),
            ("  config", config),
            ("  last dump", last),
            ("  last test", test),
            ("  lockdown", lock if lock and lock != "none" else None),
            ("  hotplug", hotplug),
        ]
    )
    if st.problems:
        print("problems:")
        for p in st.problems:
            mark = "-" if p.blocking else "~"
            print(f"  {mark} {p.what}")
            print(f"    fix: {p.fix}")


def run(args: argparse.Namespace) -> int:
    """``kdumper status``."""
    host = host_from_env()
    try:
        cfg = load_from_args(args)
        error = None
    except ConfigError as e:
        cfg, error = None, str(e)
    probe = None
    if not args.offline:
        from ..collect.targets.ssh import check_target

        probe = check_target
    st = collect_status(cfg, host, config_error=error, probe_ssh=probe)
    if args.json:
        print_json(st.to_dict())
    else:
        render(st)
    return ExitCode.OK if st.operational else ExitCode.NOT_OPERATIONAL
