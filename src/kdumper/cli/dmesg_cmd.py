"""``kdumper dmesg DUMP...``: the crashed kernel's log, as ``makedumpfile --dump-dmesg`` writes it.

The default output is byte-identical to ``makedumpfile --dump-dmesg`` of the generation that
matches the kernel: with the ``[    T123]`` caller-id column when the kernel records caller ids
(``CONFIG_PRINTK_CALLER``; makedumpfile 1.7.5+ prints it), without it otherwise.
``--no-caller-id`` gives the 1.7.4-and-older form; ``--caller-id`` asks for the column (a kernel
that records no caller ids has none to print). ``--json`` prints the raw records.

Exit codes: 0 when the whole ring was read; 10 (:attr:`ExitCode.INCOMPLETE`) when the ring had
problems (corrupt descriptors, inconsistent indices): the records that could be recovered are
still written, and each problem is one ``kdumper: warning:`` line on standard error. A dump with
no readable log at all is an error (11, or 4/5 for a damaged or filtered dump).

``-o FILE`` writes the file 0600 via ``FILE-incomplete``, fsynced, then renamed: the capture
path saves the log this way before it writes the dump.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..dump.io import FileSink
from ..errors import ExitCode
from ..kernel.printk import KernelLog, LogRecord, format_makedumpfile, read_log
from .output import note


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``dmesg`` subcommand."""
    p = subparsers.add_parser(
        "dmesg",
        help="print the crashed kernel's log (makedumpfile --dump-dmesg format)",
        description="Print the kernel log of a dump exactly as makedumpfile --dump-dmesg does "
        "(with the caller-id column when the kernel records caller ids, as makedumpfile 1.7.5+). "
        "Works on ELF, kdump-compressed, flattened and split dumps (several paths: the parts of "
        "a split set). Exits 10 when the log ring was damaged: what could be recovered is "
        "printed and each problem is reported on standard error.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help="dump file (several: a split set)")
    ids = p.add_mutually_exclusive_group()
    ids.add_argument(
        "--caller-id",
        dest="caller_id",
        action="store_const",
        const=True,
        default=None,
        help="print the [T123]/[C1] caller-id column (the default when the kernel records it)",
    )
    ids.add_argument(
        "--no-caller-id",
        dest="caller_id",
        action="store_const",
        const=False,
        help="no caller-id column (the makedumpfile 1.7.4-and-older format)",
    )
    p.add_argument("--json", action="store_true", help="print the raw records as JSON")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE (0600, fsynced, replaced atomically) instead of standard output",
    )
    p.set_defaults(func=run)


register = add_parser  # the name main.py calls


def record_to_dict(rec: LogRecord) -> dict[str, Any]:
    """One record as JSON: text decoded as UTF-8, undecodable bytes as ``\\xNN`` escapes."""
    return {
        "seq": rec.seq,
        "ts_nsec": rec.ts_nsec,
        "level": rec.level,
        "facility": rec.facility,
        "caller_id": rec.caller_id,
        "caller": rec.caller() or None,
        "text": rec.text.decode("utf-8", "backslashreplace"),
        "subsystem": rec.subsystem,
        "device": rec.device,
    }


def log_to_json(log: KernelLog) -> bytes:
    """The whole log as one JSON document (``layout``, ``has_caller_id``, ``problems``,
    ``records``), newline-terminated."""
    doc = {
        "layout": log.layout,
        "has_caller_id": log.has_caller_id,
        "complete": not log.problems,
        "problems": list(log.problems),
        "records": [record_to_dict(r) for r in log.records],
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def render(log: KernelLog, *, caller_id: bool | None = None, as_json: bool = False) -> bytes:
    """The bytes ``kdumper dmesg`` writes for ``log``."""
    if as_json:
        return log_to_json(log)
    wanted = log.has_caller_id if caller_id is None else caller_id
    return format_makedumpfile(log.records, caller_id=wanted and log.has_caller_id)


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``: 0600, through ``path-incomplete``, fsynced, renamed."""
    sink = FileSink(path, overwrite=True)
    try:
        sink.write_at(0, data)
    except BaseException:
        sink.abort()
        raise
    sink.finish()


def run(args: argparse.Namespace) -> int:
    """Read the log of the dump named in ``args.dumps`` and write it; returns the exit code."""
    from .. import open as open_dump

    with open_dump(*args.dumps) as dump:
        log = read_log(dump)
    data = render(log, caller_id=args.caller_id, as_json=args.json)
    if args.output:
        write_file(args.output, data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    for problem in log.problems:
        print(f"kdumper: warning: kernel log: {problem}", file=sys.stderr)
    if log.problems:
        note(
            f"the kernel log is incomplete: {len(log.records)} records recovered, "
            f"{len(log.problems)} problem(s)"
        )
        return ExitCode.INCOMPLETE
    return ExitCode.OK
