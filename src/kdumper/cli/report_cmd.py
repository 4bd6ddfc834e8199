"""``kdumper report DUMP... [--json | --html OUT]``: the triage report of a dump.

Text by default (the summary fits one screen; the last log lines follow), ``--json`` for
machines (schema ``kdumper-report-1``, stable keys), ``--html OUT`` for one self-contained page
(inline CSS and SVG, works offline; written 0600). Exits 10 when the kernel log could not be
read or its ring was damaged (the report is still produced from what was recovered).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ExitCode


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``report`` subcommand."""
    p = subparsers.add_parser(
        "report",
        help="triage report: kernel, panic reason, title, signature, trace, registers, memory",
        description="Print what a kernel engineer wants first about a crash dump: kernel, "
        "crash time, uptime, panic reason, crash title and signature, the primary report's "
        "call trace, the panic CPU's registers, taint, memory by page class, the last log "
        "lines and the crash/drgn command lines to go further. No debug info is needed.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help="dump file (several: a split set)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--html", metavar="OUT", help="write a self-contained HTML page to OUT (0600)")
    p.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the memory composition (reading every struct page)",
    )
    p.add_argument(
        "--lines",
        type=int,
        default=50,
        metavar="N",
        help="log lines at the end of the report (default 50)",
    )
    p.set_defaults(func=run)


register = add_parser  # the name main.py calls


def run(args: argparse.Namespace) -> int:
    """Build and print (or write) the report; returns the exit code."""
    from .. import open as open_dump
    from ..triage.report import build_report, render_html, render_text, report_to_json
    from .dmesg_cmd import write_file
    from .output import note

    lines = max(0, args.lines)
    with open_dump(*args.dumps) as dump:
        report = build_report(dump, list(args.dumps), memory=args.memory, log_lines=lines)
    if args.json:
        json.dump(report_to_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.html:
        write_file(args.html, render_html(report).encode())
        note(f"report written to {args.html}")
    else:
        sys.stdout.write(render_text(report))
    sys.stdout.flush()
    if report.log is None:
        print("kdumper: warning: the kernel log could not be read (see notes)", file=sys.stderr)
        return ExitCode.INCOMPLETE
    for problem in report.log.problems:
        print(f"kdumper: warning: kernel log: {problem}", file=sys.stderr)
    return ExitCode.INCOMPLETE if report.log.problems else ExitCode.OK
