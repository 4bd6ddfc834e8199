"""The ``kdumper`` command: argument parsing and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import ExitCode, KdumperError
from ..logs import configure_on_first_use
from .output import collector_paused

# numpy's OpenBLAS starts one thread per CPU when numpy is imported, and they spin for a while:
# measured here, 2-4 % of a `save`'s CPU taken from the compression threads. kdumper never calls
# BLAS, so one thread is plenty (set before any command imports numpy).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# command name -> the module (in kdumper.cli) that registers it. Only the module of the command
# being run is imported: the capture path and `save` do not pay for the triage or config code.
COMMANDS: dict[str, str] = {
    "info": "info_cmd",
    "dmesg": "dmesg_cmd",
    "report": "report_cmd",
    "convert": "convert_cmd",
    "reassemble": "reassemble_cmd",
    "save": "save_cmd",
    "mem-usage": "mem_usage_cmd",
    "oops": "oops_cmd",
    "verify": "verify_cmd",
    "propagate": "propagate_cmd",
    "status": "status_cmd",
    "load": "load_cmd",
    "unload": "load_cmd",
    "reload": "load_cmd",
    "test": "load_cmd",
    "capture": "capture_cmd",
    "recover-raw": "recover_raw_cmd",
    "crashkernel": "crashkernel_cmd",
    "config": "config_cmd",
}

EXIT_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "internal error (a bug: run with --debug and report it)",
    ExitCode.USAGE: "wrong command line",
    ExitCode.NOT_OPERATIONAL: "the machine is not protected (status)",
    ExitCode.BAD_DUMP: "a dump is corrupt, truncated or of an unknown format",
    ExitCode.NOT_FOUND: "a file, device or page does not exist",
    ExitCode.IO: "reading or writing failed (disk full, broken pipe, I/O error)",
    ExitCode.MISSING_DEPENDENCY: "an optional library or tool is not installed",
    ExitCode.CONFIG: "the configuration is wrong",
    ExitCode.KERNEL: "the kernel refused (kexec, sysfs, permissions)",
    ExitCode.INCOMPLETE: "finished, but the result is incomplete (dump cut short)",
    ExitCode.UNSUPPORTED: "valid input this version cannot handle",
}
INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code.value:>3}  {EXIT_MEANINGS[code]}" for code in ExitCode]
    lines.append(f"  {INTERRUPTED:>3}  interrupted (Ctrl-C)")
    return "\n".join(lines)


def _terminal_width() -> int:
    """What ``shutil.get_terminal_size().columns - 2`` gives argparse's help formatter (without
    importing shutil, with bz2 and lzma behind it: ~1.7 ms of every command's start)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with kdumper's prefix and exit code."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument; its default width imports shutil
        return self.formatter_class(prog=self.prog, width=_terminal_width())  # type: ignore[call-arg]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"kdumper: error: {message}\n")


def _command_of(argv: Sequence[str] | None) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    words = sys.argv[1:] if argv is None else list(argv)
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--config":
            skip = True  # the one global option that takes a value
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: the subcommand named in ``argv``, or every subcommand."""
    parser = _Parser(
        prog="kdumper",
        description="Linux kdump's user-space side: read, convert and triage kernel crash dumps.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kdumper {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="debug logging; tracebacks for internal errors"
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default $KDUMPER_CONFIG or /etc/kdumper/kdumper.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = _command_of(argv)
    names = [COMMANDS[wanted]] if wanted in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in names:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def _setup_logging(debug: bool) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("kdumper: %(levelname)s: %(message)s"))
    root = logging.getLogger("kdumper")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    root.propagate = False
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.DEBUG, "debug")
    logging.addLevelName(logging.INFO, "info")
    logging.addLevelName(logging.ERROR, "error")


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _quiet_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kdumper`` command line; returns the process exit code."""
    with collector_paused():  # the command's modules are imported here
        parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else ExitCode.USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    debug = bool(args.debug)
    if debug:
        _setup_logging(debug)
    else:  # set up by the first library module that asks for a logger
        configure_on_first_use(lambda: _setup_logging(False))
    try:
        return int(args.func(args))
    except KdumperError as e:
        if debug:
            _print_traceback()
        print(f"kdumper: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print("kdumper: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # the reader of our stdout went away (| head): stop quietly
        _quiet_stdout()
        return ExitCode.IO
    except MemoryError:
        print("kdumper: error: out of memory", file=sys.stderr)
        return ExitCode.ERROR
    except Exception as e:  # a bug: one line, the traceback only on request
        if debug:
            _print_traceback()
        print(
            f"kdumper: internal error: {type(e).__name__}: {e} "
            "(run with --debug for the traceback; please report)",
            file=sys.stderr,
        )
        return ExitCode.ERROR


def run() -> NoReturn:
    """The ``kdumper`` console script: :func:`main`, then leave without finalising Python.

    Tearing down the interpreter (numpy and a hundred modules) took ~10 ms of every command's
    run time, after the work was done; kdumper closes and fsyncs what it writes itself, its only
    thread is a daemon, so only the standard streams are left to flush.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe or stream: nothing more can be said
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
