"""``kdumper capture``: save the crashed kernel's dump, in the capture kernel.

Run by ``kdumper-capture.service``. Each step is one plain ``kdumper: ...`` line on standard error
(the journal and the serial console); ``--json`` prints the result as one JSON object at the end.
The steps, the free-space guard and the actions are described in
:mod:`kdumper.collect.capture`.

Exit codes (with ``--no-action``, or when the action could not be started): 0 the dump is
complete; 10 it is incomplete (the target filled up, the capture was cut, or the source lost
pages); otherwise the exit code of the failure (6 I/O, 5 a missing device, 4 an unreadable
vmcore, ...). Once the final or failure action has been started the exit code is 0: a non-zero
exit would make the unit's ``FailureAction=reboot-force`` race a halt or power-off, or reboot
under the emergency shell of ``failure_action = "shell"``; the result is in the journal lines
and ``--json``. Without ``/proc/vmcore`` (not a capture kernel) nothing is done and no action is
taken (exit 5).

A configuration that does not load does not stop the capture: the error is reported and the
dump goes to the defaults (``/var/crash``, level 31, zlib, reboot afterwards).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..errors import ExitCode, KdumperError
from .config_cmd import add_config_option, host_from_env, load_from_args
from .output import note, print_json

if TYPE_CHECKING:
    from ..dump.base import Dump


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``capture``."""
    p = sub.add_parser(
        "capture",
        help="save the crashed kernel's dump (run in the capture kernel)",
        description="Save the crashed kernel's dump as the configuration says: the kernel log "
        "first, then the filtered, compressed dump (vmcore-incomplete, renamed vmcore when "
        "complete), report.json, the kdumper test id; keep the newest [retention] keep dumps; "
        "run the [hooks]; then final_action, or failure_action when the target failed. "
        "kdumper-capture.service runs it in the capture kernel.",
    )
    p.add_argument(
        "--vmcore",
        default="/proc/vmcore",
        metavar="PATH",
        help="the dump to save (default /proc/vmcore)",
    )
    p.add_argument(
        "--no-action",
        dest="act",
        action="store_false",
        help="do not reboot, halt, power off or start a shell afterwards (only say which)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``kdumper capture``."""
    from ..collect.capture import CaptureEnv, capture
    from ..config import Config

    try:
        cfg = load_from_args(args)
    except KdumperError as e:  # a wrong or unreadable configuration must not lose the dump
        note(f"error: the configuration does not load: {e}")
        note("capturing with the default configuration instead")
        cfg = Config()
    env = CaptureEnv(
        vmcore=args.vmcore,
        cmdline=host_from_env().paths.proc_cmdline,
        act=args.act,
        say=note,
        triage=_triage,
    )
    result = capture(cfg, env)
    if args.json:
        print_json(result.to_dict())
    if result.action_taken:
        return ExitCode.OK
    return result.exit_code


def _triage(dump: Dump, paths: list[str]) -> dict[str, Any]:
    """report.json's analysis; the triage code is imported only once the dump is saved (its
    import costs the capture kernel's one CPU time before the log is safe)."""
    from ..triage.report import triage_json

    return triage_json(dump, paths)
