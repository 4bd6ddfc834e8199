"""``kdumper oops [LOGFILE|-]``: the crash reports in a kernel log, with titles and signatures.

The log is text: a saved ``dmesg``, ``/var/log/kern.log`` or the journal, a serial console or
netconsole capture, the ``dmesg`` file kdump-tools saves next to a dump. Every report found is
printed (title, signature, kind, task, kernel, taint, RIP, the top of the call trace, modules);
the one that is *the* crash is marked. Finding no report is not an error: the command says so and
exits 0 (``--json`` prints ``[]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import DumpIOError, InputNotFoundError, UnsupportedError
from ..triage.oops import Report, lines_from_text, parse_log, primary, report_to_dict
from ..triage.signature import Crash, describe

NO_REPORTS = "no kernel crash reports found"
_BINARY_PROBE = 1 << 16  # a NUL byte in the first 64 KiB: not a text log


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``oops`` subcommand."""
    p = subparsers.add_parser(
        "oops",
        help="find oops/panic/BUG/WARNING reports in a kernel log; titles and signatures",
        description="Find the kernel crash reports (oops, panic, BUG, WARNING, KASAN, KFENCE, "
        "UBSAN, lockdep, hung task, soft/hard lockup, RCU stall, OOM, sysrq) in a text kernel "
        "log and print each with a normalised title and a deduplication signature. The report "
        "that is the crash is marked 'primary'. Exits 0 also when no report is found.",
    )
    p.add_argument(
        "logfile",
        nargs="?",
        default="-",
        metavar="LOGFILE",
        help="kernel log (dmesg, kern.log, journal, serial console capture); '-' or nothing "
        "reads standard input",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of report objects")
    p.add_argument(
        "--primary", action="store_true", help="only the primary report (the crash itself)"
    )
    p.add_argument(
        "--frames",
        type=int,
        default=12,
        metavar="N",
        help="call trace frames to show per report (default 12; 0 for all)",
    )
    p.add_argument(
        "--unreliable",
        action="store_true",
        help="also show the frames the unwinder marked '?' (hidden in text output by default)",
    )
    p.set_defaults(func=run)


register = add_parser  # the name the other command modules use


def read_log(path: str) -> str:
    """The text of a log file (``-``: standard input), undecodable bytes replaced."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        name = path
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise InputNotFoundError(path) from None
        except IsADirectoryError:
            raise DumpIOError("is a directory, not a log file", path=path) from None
        except OSError as e:
            raise DumpIOError(e.strerror or str(e), path=path) from None
    if b"\0" in data[:_BINARY_PROBE]:
        raise UnsupportedError(
            f"{name}: binary data, not a text kernel log (for a dump, extract its log first)"
        )
    return data.decode("utf-8", "replace")


def _crash_dict(index: int, report: Report, crash: Crash, is_primary: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": index,
        "primary": is_primary,
        "title": crash.title,
        "signature": crash.signature,
        "signature_frames": list(crash.frames),
        "guilty": crash.guilty.symbol() if crash.guilty else None,
    }
    out.update(report_to_dict(report))
    return out


def _task(report: Report) -> str | None:
    parts = []
    if report.comm is not None:
        parts.append(report.comm)
    ids = []
    if report.pid is not None:
        ids.append(f"PID {report.pid}")
    if report.uid is not None:
        ids.append(f"UID {report.uid}")
    if report.cpu is not None:
        ids.append(f"CPU {report.cpu}")
    if ids:
        parts.append(f"({', '.join(ids)})")
    return " ".join(parts) or None


def _print_report(
    index: int,
    total: int,
    report: Report,
    crash: Crash,
    is_primary: bool,
    frames: int,
    unreliable: bool,
) -> None:
    mark = ", primary" if is_primary else ""
    print(f"report {index + 1} of {total}{mark}: {crash.title}")
    rows: list[tuple[str, object]] = [
        ("signature", crash.signature),
        ("kind", report.kind.value),
        ("first line", report.first_line),
        ("log lines", f"{report.start + 1}-{report.end}"),
        ("time", f"{report.time:.6f}" if report.time is not None else None),
        ("task", _task(report)),
        ("kernel", " ".join(x for x in (report.release, report.build) if x) or None),
        (
            "taint",
            None if report.taint is None else (report.taint or "not tainted"),
        ),
        ("hardware", report.hardware),
        ("RIP", report.rip.symbol() if report.rip else None),
        ("guilty", crash.guilty.symbol() if crash.guilty else None),
        ("caused by", f"report {report.caused_by + 1}" if report.caused_by is not None else None),
    ]
    if report.modules is not None:
        shown = " ".join(report.modules[:20])
        more = f" ... ({len(report.modules)} modules)" if len(report.modules) > 20 else ""
        rows.append(("modules", (shown + more) or "(none)"))
    width = max(len(k) for k, v in rows if v is not None) + 1
    for key, value in rows:
        if value is not None:
            print(f"  {key + ':':<{width}} {value}")
    if report.stacks:
        stack = report.stacks[0]
        usable = [f for f in stack.frames if unreliable or f.reliable]
        shown_frames = usable if frames <= 0 else usable[:frames]
        label = stack.label or "stack"
        notes = [f"{len(stack.frames)} frames"]
        hidden = len(stack.frames) - len(usable)
        if hidden:
            notes.append(f"{hidden} marked '?' not shown")
        if report.stack_from is not None:
            notes.append(f"from report {report.stack_from + 1}")
        print(f"  {label} ({', '.join(notes)}):")
        for f in shown_frames:
            regs = "RIP: " if f.regs else ""
            print(f"    {'' if f.reliable else '? '}{regs}{f.symbol()}")
        if len(shown_frames) < len(usable):
            print(f"    ... {len(usable) - len(shown_frames)} more")
    print()


def run(args: argparse.Namespace) -> int:
    """Parse the log named in ``args.logfile`` and print its reports; returns the exit code."""
    reports = parse_log(lines_from_text(read_log(args.logfile)))
    main = primary(reports)
    chosen = [main] if args.primary and main is not None else list(range(len(reports)))
    crashes = {k: describe(reports[k]) for k in chosen}
    if args.json:
        json.dump(
            [_crash_dict(k, reports[k], crashes[k], k == main) for k in chosen],
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return 0
    if not chosen:
        print(NO_REPORTS)
        return 0
    for k in chosen:
        _print_report(
            k, len(reports), reports[k], crashes[k], k == main, args.frames, args.unreliable
        )
    return 0
