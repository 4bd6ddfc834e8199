"""``kdumper recover-raw``: copy a dump left on the raw target device into the dump directory.

At the boot after a crash (``kdumper load --boot`` calls :func:`recover_at_boot`), or by hand:
when the kdumper area of the device (``[target] raw`` at ``raw_offset``, or ``--device``) holds
a dump not yet recovered, it is rebuilt as ``<[target] path>/<host>-<time>/vmcore`` with its
``vmcore-dmesg.txt``, ``report.json`` and ``test-id``, and the area is marked recovered, so a
second run does nothing. A dump that was cut (device full, capture killed) becomes
``vmcore-incomplete``, marked incomplete in its kdump header.

Exit codes: 0 recovered, or nothing to recover; 10 recovered, but incomplete; 5 the device does
not exist; 4 the area's header is corrupt; 6 reading or writing failed; 2 no device configured.
"""

from __future__ import annotations

import argparse

from ..config import Config, parse_size
from ..errors import ExitCode, KdumperError, UsageError
from .config_cmd import add_config_option, load_from_args
from .output import note, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``recover-raw``."""
    p = sub.add_parser(
        "recover-raw",
        help="copy a dump from the raw target device into the dump directory",
        description="If the raw target device holds a kdumper dump not yet recovered, rebuild "
        "it as <path>/<host>-<time>/vmcore (with its kernel log, report.json and test id) and "
        "mark it recovered on the device. kdumper load --boot does this at every boot.",
    )
    p.add_argument(
        "--device",
        metavar="DEV",
        help="the device (or a file standing for one; default [target] raw)",
    )
    p.add_argument(
        "--offset",
        metavar="BYTES",
        help='where the kdumper area starts ("1M"; default [target] raw_offset)',
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_config_option(p)
    p.set_defaults(func=run)


def _offset(text: str | None, cfg: Config) -> int:
    if text is None:
        return cfg.target.raw_offset
    try:
        return parse_size(text)
    except Exception:  # config's own _Bad: a value error with the reason
        raise UsageError(f'--offset {text!r}: expected a size like "1M" or bytes') from None


def run(args: argparse.Namespace) -> int:
    """``kdumper recover-raw``."""
    from ..collect.raw import recover_device
    from ..triage.report import triage_json

    cfg = load_from_args(args)
    device = args.device or cfg.target.raw
    if not device:
        raise UsageError("no raw device: give --device DEV or set [target] raw")
    res = recover_device(
        device,
        _offset(args.offset, cfg),
        cfg.target.path,
        keep=cfg.retention.keep,
        say=note,
        triage=triage_json,
    )
    for w in res.warnings:
        note(f"warning: {w}")
    if args.json:
        print_json(res.to_dict())
    elif res.status == "none":
        print(f"{device}: no kdumper dump on the device")
    elif res.status == "already":
        print(f"{device}: the dump on the device was recovered already")
    else:
        print(f"recovered the dump on {device} into {res.dump_dir} ({res.status})")
    return ExitCode.INCOMPLETE if res.status == "incomplete" else ExitCode.OK


def recover_at_boot(cfg: Config) -> None:
    """``load --boot``: recover a dump from the raw target, if any; problems are reported on
    standard error and never stop the load."""
    if cfg.target.kind != "raw" or not cfg.target.raw:
        return
    from ..collect.raw import recover_device
    from ..triage.report import triage_json

    try:
        res = recover_device(
            cfg.target.raw,
            cfg.target.raw_offset,
            cfg.target.path,
            keep=cfg.retention.keep,
            say=note,
            triage=triage_json,
        )
    except KdumperError as e:
        note(f"warning: no dump recovered from the raw target: {e}")
        return
    for w in res.warnings:
        note(f"warning: {w}")
    if res.dump_dir:
        note(f"recovered the dump on {cfg.target.raw} into {res.dump_dir} ({res.status})")
