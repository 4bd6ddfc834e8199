"""``kdumper convert IN... OUT``: rewrite a dump in another format (kdump, ELF, flattened)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ..dump.base import Dump, WriteResult
from ..dump.io import create_private, fsync_stream
from ..dump.open import open_dump
from ..errors import DumpIOError, ExitCode, UsageError
from ..kernel.utsname import read_utsname
from ..records import as_dict
from .output import human_bytes, note, print_json

FORMATS = ("kdump", "elf", "flat")
# zlib is the default: every reader has it (crash, libkdumpfile, makedumpfile builds without
# zstd/snappy, e.g. Debian 12's 1.7.2); pick zstd or lzo explicitly for speed.
DEFAULT_CODEC = "zlib"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``convert`` subcommand."""
    from ..codecs import CODECS

    p = sub.add_parser(
        "convert",
        usage="kdumper convert [options] IN... OUT --format {kdump,elf,flat}",
        help="convert a dump to kdump-compressed, ELF or flattened format",
        description="Read any dump (several inputs: the parts of a split set) and write it as "
        "OUT in another format. OUT '-' writes a flattened stream to stdout. The output is "
        "written as OUT-incomplete (mode 0600) and renamed to OUT when complete.",
        epilog="--split N writes N parts: OUT.1 ... OUT.N, or OUT with '{}' replaced by 1..N "
        "(e.g. 'vmcore-{}.kdump'). --dump-level 1 drops all-zero pages: the default for kdump and "
        "flat output, where they stay readable as zero pages; in ELF output (default 0, keep "
        "every page) runs of 256 or more zero pages are cut out, as makedumpfile -E does. "
        "Filtering page classes (levels 2-31) comes with 'kdumper save'.",
    )
    p.add_argument("paths", nargs="+", metavar="IN... OUT", help="input dump(s), then the output")
    p.add_argument("--format", "-f", choices=FORMATS, required=True, help="output format")
    p.add_argument(
        "--codec",
        choices=CODECS,
        help=f"page compression for kdump/flat output (default {DEFAULT_CODEC})",
    )
    p.add_argument("--split", type=int, metavar="N", help="write N kdump-compressed parts")
    p.add_argument("--dump-level", "-d", type=int, metavar="N", help="0 or 1 (see below)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def split_names(out: str, n: int) -> list[str]:
    """The part names of ``--split N``: ``out`` with ``{}`` → 1..N, else ``out.1`` … ``out.N``."""
    if "{}" in out:
        return [out.replace("{}", str(i)) for i in range(1, n + 1)]
    return [f"{out}.{i}" for i in range(1, n + 1)]


def _check_args(args: argparse.Namespace) -> tuple[list[str], str, int, str]:
    if len(args.paths) < 2:
        raise UsageError("convert needs at least one input and an output: convert IN... OUT")
    inputs, out = list(args.paths[:-1]), str(args.paths[-1])
    fmt = args.format
    level = args.dump_level
    if level is None:
        level = 0 if fmt == "elf" else 1
    if not 0 <= level <= 31:
        raise UsageError(f"--dump-level {level}: dump levels are 0..31")
    if level > 1:
        raise UsageError(
            f"--dump-level {level}: page filtering (levels 2-31) comes with 'kdumper save'; "
            "convert can only drop zero pages (--dump-level 1)"
        )
    if fmt == "elf" and args.codec is not None:
        raise UsageError("--codec does not apply to ELF output (ELF pages are not compressed)")
    codec = args.codec or DEFAULT_CODEC
    if args.split is not None:
        if fmt != "kdump":
            raise UsageError("--split works with --format kdump only")
        if not 2 <= args.split <= 1024:
            raise UsageError(f"--split {args.split}: a split set has 2..1024 parts")
        if out == "-":
            raise UsageError("--split cannot write to stdout")
    if out == "-" and fmt != "flat":
        raise UsageError(f"{fmt} output needs a seekable file; use --format flat for stdout")
    if out != "-":
        outs = split_names(out, args.split) if args.split else [out]
        ins = {os.path.realpath(p) for p in inputs}
        for o in outs:
            if os.path.isdir(o):
                raise UsageError(f"{o}: is a directory; name the output file")
            if os.path.realpath(o) in ins:
                raise UsageError(f"{o}: the output would overwrite an input")
            if os.path.exists(o) and not args.force:
                raise DumpIOError("already exists (use --force to overwrite)", path=o)
    if fmt != "elf":
        from ..codecs import get_codec

        get_codec(codec)  # a missing codec library fails now, before any output exists
    return inputs, out, level, codec


def run(args: argparse.Namespace) -> int:
    """``kdumper convert``."""
    inputs, out, level, codec = _check_args(args)
    started = time.monotonic()
    with open_dump(*inputs) as dump:
        results = _write(args, dump, out, level, codec)
    seconds = time.monotonic() - started
    incomplete = any(r.incomplete for r in results)
    for r in results:
        extra = f", {r.zero_pages} zero" if r.zero_pages else ""
        extra += f", {r.raw_pages} stored raw" if r.raw_pages else ""
        codec_txt = f" {r.codec}" if r.format != "elf" else ""
        note(
            f"wrote {r.path}: {r.format}{codec_txt}, {r.pages} pages{extra}, "
            f"{human_bytes(r.bytes_out)} in {seconds:.1f} s"
            + (" (INCOMPLETE: some source pages were lost)" if r.incomplete else "")
        )
    if args.json:
        summary: dict[str, Any]
        if len(results) == 1:
            summary = {**as_dict(results[0]), "seconds": round(seconds, 3)}
        else:
            summary = {"parts": [as_dict(r) for r in results], "seconds": round(seconds, 3)}
        print_json(summary, sys.stderr if out == "-" else None)
    return ExitCode.INCOMPLETE if incomplete else ExitCode.OK


def _write(
    args: argparse.Namespace, dump: Dump, out: str, level: int, codec: str
) -> list[WriteResult]:
    facts = dump.facts()
    utsname = facts.utsname if facts.utsname and facts.utsname.release else None
    utsname = utsname or read_utsname(dump) or facts.utsname
    recorded_level = (facts.dump_level or 0) | level
    exclude_zero = bool(level & 1)
    if args.format == "elf":
        from ..dump.elf import write_elf
        from ..dump.io import FileSink

        elf_sink = FileSink(out, overwrite=args.force)
        try:
            result = write_elf(elf_sink, dump, exclude_zero=exclude_zero)
        except BaseException:
            elf_sink.abort()
            raise
        elf_sink.finish()
        return [result]
    from ..dump.diskdump import write_kdump

    kw: dict[str, Any] = {
        "codec": codec,
        "dump_level": recorded_level,
        "exclude_zero": exclude_zero,
        "utsname": utsname,
    }
    if args.split:
        from ..dump.split import write_split

        return write_split(split_names(out, args.split), dump, overwrite=args.force, **kw)
    if args.format == "kdump":
        from ..dump.io import FileSink

        sink = FileSink(out, overwrite=args.force)
        try:
            result = write_kdump(sink, dump, **kw)
        except BaseException:
            sink.abort()
            raise
        sink.finish()
        return [result]
    return [_write_flat(dump, out, kw)]


def _write_flat(dump: Dump, out: str, kw: dict[str, Any]) -> WriteResult:
    from ..dump.diskdump import write_kdump
    from ..dump.flattened import FlatSink

    if out == "-":
        stdout = sys.stdout.buffer
        if sys.stdout.isatty():
            raise UsageError("refusing to write a binary dump to a terminal; redirect stdout")
        sink = FlatSink(stdout, name="<stdout>")
        try:
            result = write_kdump(sink, dump, **kw)
        except BaseException:
            sink.abort()
            raise
        sink.finish()
        result.path, result.format = "<stdout>", "flattened-kdump"
        result.bytes_out = sink.bytes_written
        return result
    tmp = out + "-incomplete"
    stream = create_private(tmp)
    with stream:
        sink = FlatSink(stream, name=out)
        try:
            result = write_kdump(sink, dump, **kw)
            sink.finish()
            fsync_stream(stream, tmp)
        except BaseException:
            sink.abort()
            raise
    os.replace(tmp, out)
    result.path, result.format = out, "flattened-kdump"
    result.bytes_out = sink.bytes_written
    return result
