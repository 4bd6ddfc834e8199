"""``kdumper save VMCORE OUT``: filter, compress and write a vmcore (makedumpfile's job).

Only the standard library is imported at module level: numpy and the pipeline load when the
command runs, so other commands start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import DumpIOError, ExitCode, UsageError
from .output import collector_paused, human_bytes, note, print_json

if TYPE_CHECKING:
    from ..collect.early import EarlyPages

FORMATS = ("kdump", "elf", "flat")
CODECS = ("none", "zlib", "lzo", "snappy", "zstd")  # kdumper.codecs.CODECS (not imported here)
DEFAULT_LEVEL = 31
DEFAULT_CODEC = "zlib"  # every reader has it (Debian 12's makedumpfile and crash lack zstd)
PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
BAR_EVERY = 0.2  # seconds between redraws of the progress bar


class ProgressPrinter:
    """Renders ``progress(phase, done, total)`` on stderr: a bar on a terminal, else a plain
    line every few seconds (serial consoles and the journal get no carriage returns; a run that
    ends within the first interval prints nothing)."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self._last = self.started if not self.tty else 0.0
        self._phase = ""
        self._drawn = False
        self._lines = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if self.tty:
            if phase == self._phase and not finished and now - self._last < BAR_EVERY:
                return
        elif now - self._last < PLAIN_PROGRESS_EVERY and not (finished and self._lines):
            return
        self._phase, self._last = phase, now
        pct = 100.0 * done / total if total else 100.0
        unit = "pages" if phase == "write" else "pfns"
        elapsed = now - self.started
        if self.tty:
            width = 30
            fill = int(width * pct / 100)
            bar = "#" * fill + "-" * (width - fill)
            self.stream.write(
                f"\rkdumper: {phase:<6} [{bar}] {pct:5.1f}% {done}/{total} {unit} {elapsed:6.1f} s"
            )
            self._drawn = True
        else:
            self.stream.write(
                f"kdumper: {phase}: {pct:.0f}% ({done}/{total} {unit}, {elapsed:.0f} s)\n"
            )
            self._lines += 1
        self.stream.flush()

    def end(self) -> None:
        """Finish the bar line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``save`` subcommand."""
    p = sub.add_parser(
        "save",
        help="filter, compress and save a vmcore (like makedumpfile)",
        description="Read VMCORE (/proc/vmcore, an ELF vmcore copy or any dump kdumper reads), "
        "leave out the page classes of the dump level and write OUT, kdump-compressed (default), "
        "ELF or flattened ('-' for stdout). OUT is written as OUT-incomplete (mode 0600) and "
        "renamed when complete.",
        epilog="dump level bits (add them up; as makedumpfile -d): 1 zero pages, 2 page cache "
        "without private data, 4 all page cache, 8 user process pages (anonymous and hugetlbfs), "
        "16 free pages. HWPoison and offline (balloon) pages are always left out. --split N "
        "writes OUT.1 ... OUT.N (or OUT with '{}' replaced by 1..N).",
    )
    p.add_argument("vmcore", metavar="VMCORE", help="the dump to save (e.g. /proc/vmcore)")
    p.add_argument("out", metavar="OUT", help="output file ('-': flattened stream on stdout)")
    p.add_argument(
        "-d",
        "--dump-level",
        type=int,
        default=DEFAULT_LEVEL,
        metavar="LEVEL",
        help=f"page classes to leave out, 0-31 (default {DEFAULT_LEVEL})",
    )
    p.add_argument(
        "-c",
        "--codec",
        choices=CODECS,
        default=None,
        help=f"page compression of kdump/flat output (default {DEFAULT_CODEC})",
    )
    p.add_argument("--format", "-f", choices=FORMATS, default="kdump", help="output format")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="compression worker processes (default: one per CPU; 0 or 1: compress in this "
        "process, the default for -c none)",
    )
    p.add_argument("--split", type=int, metavar="N", help="write N kdump-compressed parts")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


add_parser = register  # the name the capture path uses


def _check_args(args: argparse.Namespace) -> str:
    if not 0 <= args.dump_level <= 31:
        raise UsageError(f"-d {args.dump_level}: dump levels are 0..31")
    if args.format == "elf" and args.codec not in (None, "none"):
        raise UsageError("-c does not apply to ELF output (ELF pages are not compressed)")
    if args.threads is not None and not 0 <= args.threads <= 1024:
        raise UsageError(f"--threads {args.threads}: use 0..1024")
    out = str(args.out)
    if args.split is not None:
        if args.format != "kdump":
            raise UsageError("--split works with --format kdump only")
        if not 2 <= args.split <= 1024:
            raise UsageError(f"--split {args.split}: a split set has 2..1024 parts")
        if out == "-":
            raise UsageError("--split cannot write to stdout")
    if out == "-" and args.format != "flat":
        raise UsageError(
            f"{args.format} output needs a seekable file; use --format flat for stdout"
        )
    if out == "-" and sys.stdout.isatty():
        raise UsageError("refusing to write a binary dump to a terminal; redirect stdout")
    if out != "-":
        from ..dump.io import split_paths  # (the pipeline would import numpy this early)

        outs = split_paths(out, args.split) if args.split else [out]
        src = os.path.realpath(args.vmcore)
        for o in outs:
            if os.path.isdir(o):
                raise UsageError(f"{o}: is a directory; name the output file")
            if os.path.realpath(o) == src:
                raise UsageError(f"{o}: the output would overwrite the input")
            if os.path.exists(o) and not args.force:
                raise DumpIOError("already exists (use --force to overwrite)", path=o)
    codec = args.codec or (DEFAULT_CODEC if args.format != "elf" else "none")
    if args.format != "elf":
        from ..codecs import get_codec

        get_codec(codec).available()  # a missing library fails before any output exists
    return codec


def _start_early(args: argparse.Namespace, codec: str) -> EarlyPages | None:
    """The helper that compresses the kernel image while this process imports numpy
    (:mod:`kdumper.collect.early`), when the save will compress in worker processes."""
    if args.format == "elf" or codec == "none" or (args.threads is not None and args.threads < 2):
        return None
    from ..collect.early import start_early

    return start_early(args.vmcore, codec, exclude_zero=bool(args.dump_level & 1))


def run(args: argparse.Namespace) -> int:
    """``kdumper save``."""
    codec = _check_args(args)
    early = _start_early(args, codec)  # before numpy: on the CPUs idle while it is imported
    try:
        with collector_paused():
            from ..collect.pipeline import SaveOptions, save
            from ..collect.source import open_for_save

        progress = None if args.no_progress else ProgressPrinter()
        options = SaveOptions(
            dump_level=args.dump_level,
            codec=codec,
            format=args.format,
            threads=args.threads,
            split=args.split or 0,
            overwrite=args.force,
            progress=progress,
            early=early,
        )
        out: Any = sys.stdout.buffer if args.out == "-" else args.out
        with open_for_save(args.vmcore) as dump:
            try:
                result = save(dump, out, options)
            finally:
                if progress is not None:
                    progress.end()
    finally:
        if early is not None:
            early.close()
    summary = result.summary()
    for warning in summary["warnings"]:
        note(f"warning: {warning}")
    pages = summary["pages"]
    excluded = ", ".join(f"{k} {v}" for k, v in pages["excluded"].items() if v)
    for r in result.outputs:
        what = r.format + (f" {r.codec}" if r.format != "elf" else "")
        note(f"wrote {r.path}: {what}, {human_bytes(r.bytes_out)}")
    note(
        f"dump level {result.dump_level}: kept {pages['kept']} of {pages['total']} pages"
        + (f" (left out: {excluded})" if excluded else "")
        + f"; {human_bytes(result.bytes_in)} read, {human_bytes(result.bytes_out)} written "
        f"in {result.seconds:.1f} s"
        + (" — INCOMPLETE: the source lost some pages" if result.incomplete else "")
    )
    if args.json:
        print_json(summary, sys.stderr if args.out == "-" else None)
    return ExitCode.INCOMPLETE if result.incomplete else ExitCode.OK
