"""``kdumper reassemble IN... OUT``: flattened stream or split parts → one ordinary dump file."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ..dump.elf import is_elf
from ..dump.io import FileSource
from ..dump.open import describe_head
from ..errors import DumpFormatError, ExitCode, UsageError
from ..records import as_dict
from .output import human_bytes, note, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``reassemble`` subcommand."""
    p = sub.add_parser(
        "reassemble",
        usage="kdumper reassemble [options] IN... OUT",
        help="rebuild one dump file from a flattened stream or from split parts",
        description="One input: a flattened stream (makedumpfile -F, QEMU kdump-*; '-' reads "
        "stdin) becomes the ordinary file it stands for (makedumpfile -R). Several inputs: the "
        "parts of a split set become one kdump-compressed file (makedumpfile --reassemble).",
    )
    p.add_argument("paths", nargs="+", metavar="IN... OUT", help="input(s), then the output")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def _check_single(path: str) -> None:
    """One input must be a flattened stream."""
    from ..dump.diskdump import is_kdump
    from ..dump.flattened import is_flattened

    with FileSource(path) as src:
        head = src.pread_upto(0, 4096)
    if is_flattened(head):
        return
    if is_kdump(head):
        raise UsageError(
            f"{path}: already a kdump-compressed file; to join a split set name all its parts"
        )
    if is_elf(head):
        raise UsageError(f"{path}: an ELF core, not a flattened stream; nothing to reassemble")
    raise DumpFormatError(describe_head(head), path=path)


def run(args: argparse.Namespace) -> int:
    """``kdumper reassemble``."""
    if len(args.paths) < 2:
        raise UsageError("reassemble needs at least one input and an output: reassemble IN... OUT")
    inputs, out = list(args.paths[:-1]), str(args.paths[-1])
    if out == "-":
        raise UsageError("reassemble writes an ordinary file; OUT cannot be '-'")
    if os.path.isdir(out):
        raise UsageError(f"{out}: is a directory; name the output file")
    if os.path.realpath(out) in {os.path.realpath(p) for p in inputs if p != "-"}:
        raise UsageError(f"{out}: the output would overwrite an input")
    started = time.monotonic()
    summary: dict[str, Any]
    if len(inputs) == 1:
        from ..dump.flattened import reassemble_flat

        src = inputs[0]
        if src != "-":
            _check_single(src)
        elif sys.stdin.isatty():
            raise UsageError("reading a flattened stream from a terminal; pipe it into stdin")
        reassemble_flat(src, out, overwrite=args.force)
        size = os.path.getsize(out)
        with FileSource(out) as result_src:
            head = result_src.pread_upto(0, 8)
        fmt = "elf" if is_elf(head) else "kdump"
        summary = {"path": out, "format": fmt, "bytes_out": size}
        note(f"wrote {out}: {fmt}, {human_bytes(size)} in {time.monotonic() - started:.1f} s")
        incomplete = False
    else:
        if "-" in inputs:
            raise UsageError("split parts must be files, not '-'")
        from ..dump.split import reassemble_split

        result = reassemble_split(inputs, out, overwrite=args.force)
        summary = as_dict(result)
        incomplete = result.incomplete
        note(
            f"wrote {out}: {result.format}, {result.pages} pages from {len(inputs)} parts, "
            f"{human_bytes(result.bytes_out)} in {time.monotonic() - started:.1f} s"
            + (" (INCOMPLETE: a part was cut short)" if incomplete else "")
        )
    summary["seconds"] = round(time.monotonic() - started, 3)
    if args.json:
        print_json(summary)
    return ExitCode.INCOMPLETE if incomplete else ExitCode.OK
