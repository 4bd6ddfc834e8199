"""``kdumper verify DUMP``: is a saved dump whole and readable?

Two checks. First the checksum, when a checksum file lies next to the dump (``DUMP.blake2b``,
``DUMP.sha256`` or ``DUMP.sha512``, written by the ssh target; ``b2sum -c`` reads the same file):
the whole file is hashed in 1 MiB reads. Then the structure: the dump is opened with
:func:`kdumper.open` (headers, bitmaps, notes), every page descriptor of a kdump-compressed file
is checked (one vectorised pass), and pages are read and decompressed: an even sample of
:data:`DEFAULT_SAMPLE` dumped pages (first and last included) by default, every one with
``--full``.

Verdict: ``good`` (exit 0), ``bad`` (checksum mismatch, corrupt structure or page: exit
``BAD_DUMP``), ``incomplete`` (the header or a missing end marker says the dump was cut short, or
pages are lost: exit ``INCOMPLETE``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..collect.targets.stream import file_digest, find_checksum_file, read_checksum_file
from ..dump.base import Dump
from ..dump.bitmap import Bitmap
from ..errors import (
    DumpFormatError,
    ExitCode,
    KdumperError,
    PageIncompleteError,
    PageNotPresentError,
    UsageError,
)
from .output import print_json

DEFAULT_SAMPLE = 4096  # pages read without --full: ~16 MiB of page data, well under a second
_CHUNK = 256  # pages per bulk read with --full
_MAX_PROBLEMS = 10  # problems listed in the result (the counters keep counting)


@dataclass
class ChecksumCheck:
    """The outcome of the checksum-file check."""

    file: str
    algorithm: str
    expected: str
    actual: str

    @property
    def ok(self) -> bool:
        """Whether the file's digest is the recorded one."""
        return self.expected == self.actual


@dataclass
class VerifyResult:
    """What :func:`verify_dump` found."""

    paths: list[str]
    verdict: str = "good"  # "good", "bad", "incomplete"
    format: str | None = None
    checksum: list[dict[str, Any]] = field(default_factory=list)
    pages_dumped: int = 0
    pages_checked: int = 0
    bad_pages: int = 0
    incomplete_pages: int = 0
    full: bool = False
    header_incomplete: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        """0 good, ``BAD_DUMP`` bad, ``INCOMPLETE`` incomplete."""
        return {"good": ExitCode.OK, "bad": ExitCode.BAD_DUMP}.get(
            self.verdict, ExitCode.INCOMPLETE
        )

    def problem(self, text: str) -> None:
        """Record one problem (the first few are kept)."""
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)


def check_checksums(paths: list[str], result: VerifyResult) -> None:
    """Hash every path that has a checksum file beside it; a mismatch makes the dump bad."""
    for path in paths:
        found = find_checksum_file(path)
        if found is None:
            continue
        sum_file, algorithm = found
        expected = read_checksum_file(sum_file, algorithm, os.path.basename(path))
        check = ChecksumCheck(sum_file, algorithm, expected, file_digest(path, algorithm))
        result.checksum.append({**asdict(check), "ok": check.ok})
        if not check.ok:
            result.verdict = "bad"
            result.problem(
                f"{path}: {algorithm} checksum mismatch (recorded {expected[:16]}..., "
                f"file {check.actual[:16]}...)"
            )


def sample_pfns(dumped: Bitmap, count: int) -> Iterator[tuple[int, int]]:
    """``count`` dumped pfns spread evenly (first and last included), as ``(pfn, 1)`` runs."""
    total = dumped.count()
    if total == 0 or count <= 0:
        return
    wanted = np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(np.int64))
    i, seen = 0, 0
    for start, stop in dumped.runs():
        length = stop - start
        while i < wanted.size and wanted[i] < seen + length:
            yield start + int(wanted[i]) - seen, 1
            i += 1
        seen += length
        if i >= wanted.size:
            return


def all_pfns(dumped: Bitmap) -> Iterator[tuple[int, int]]:
    """Every dumped pfn, as runs of up to ``_CHUNK`` consecutive pages."""
    for start, stop in dumped.runs():
        for first in range(start, stop, _CHUNK):
            yield first, min(_CHUNK, stop - first)


def _read_one(dump: Dump, pfn: int, result: VerifyResult) -> None:
    try:
        dump.read_pfn(pfn)
    except PageIncompleteError:
        result.incomplete_pages += 1
    except PageNotPresentError as e:  # dumped but unreadable: the bitmaps contradict themselves
        result.bad_pages += 1
        result.problem(f"pfn {pfn:#x}: {e}")
    except DumpFormatError as e:
        result.bad_pages += 1
        result.problem(str(e))


def check_pages(dump: Dump, result: VerifyResult, *, full: bool, sample: int) -> None:
    """Read (and so decompress) the chosen pages, counting bad and lost ones."""
    dumped = dump.dumped
    result.pages_dumped = dumped.count()
    runs = all_pfns(dumped) if full else sample_pfns(dumped, sample)
    for pfn, count in runs:
        result.pages_checked += count
        if count > 1:
            try:
                dump.read_pages(pfn, count)
                continue
            except KdumperError:
                pass  # find the culprit page by page
        for p in range(pfn, pfn + count):
            _read_one(dump, p, result)


def verify_dump(
    paths: list[str], *, full: bool = False, sample: int = DEFAULT_SAMPLE
) -> VerifyResult:
    """Check a dump (several paths: a split set): checksum, structure, pages."""
    from .. import open as open_dump

    started = time.monotonic()
    result = VerifyResult(paths=list(paths), full=full)
    check_checksums(result.paths, result)
    try:
        with open_dump(*result.paths) as dump:
            facts = dump.facts()
            result.format = facts.format
            result.header_incomplete = facts.incomplete
            dump.codec_counts()  # kdump-compressed: checks every page descriptor
            check_pages(dump, result, full=full, sample=sample)
    except DumpFormatError as e:
        result.verdict = "bad"
        result.problem(str(e))
    if result.bad_pages:
        result.verdict = "bad"
    elif result.verdict == "good" and (result.header_incomplete or result.incomplete_pages):
        result.verdict = "incomplete"
    result.seconds = time.monotonic() - started
    return result


def verdict_line(result: VerifyResult) -> str:
    """The one-line verdict ``verify`` prints."""
    name = " ".join(result.paths)
    parts: list[str] = []
    if result.format:
        parts.append(result.format)
    for c in result.checksum:
        parts.append(f"{c['algorithm']} checksum {'matches' if c['ok'] else 'MISMATCH'}")
    if not result.checksum:
        parts.append("no checksum file")
    how = "all" if result.full else "sample; --full reads all"
    parts.append(f"{result.pages_checked} of {result.pages_dumped} pages read ({how})")
    if result.bad_pages:
        parts.append(f"{result.bad_pages} bad")
    if result.incomplete_pages:
        parts.append(f"{result.incomplete_pages} lost")
    if result.header_incomplete:
        parts.append("marked incomplete")
    head = {"good": "OK", "bad": "BAD", "incomplete": "INCOMPLETE"}[result.verdict]
    text = f"{name}: {head}: {', '.join(parts)}"
    if result.verdict != "good" and result.problems:
        text += f" -- {result.problems[0]}"
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``verify`` subcommand."""
    p = sub.add_parser(
        "verify",
        help="check a saved dump: checksum file, headers, page descriptors, pages",
        description="Check a dump: its checksum file if one lies beside it (DUMP.blake2b, "
        "DUMP.sha256, DUMP.sha512), then its structure (headers, every page descriptor) and a "
        f"sample of {DEFAULT_SAMPLE} pages read and decompressed (--full: every page). Prints "
        "one verdict line; exit 0 good, 4 bad, 10 incomplete.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help="dump file (several: a split set)")
    p.add_argument("--full", action="store_true", help="read and decompress every page")
    p.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"pages to read without --full (default {DEFAULT_SAMPLE})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``kdumper verify``."""
    if args.sample < 0:
        raise UsageError("--sample must be 0 or more")
    result = verify_dump(list(args.dumps), full=args.full, sample=args.sample)
    if args.json:
        out = asdict(result)
        out["seconds"] = round(result.seconds, 3)
        print_json(out)
    else:
        print(verdict_line(result))
    return int(result.exit_code)
