"""``kdumper mem-usage DUMP``: pages per class and what each dump level keeps.

Like ``makedumpfile --mem-usage``, from the same classifier ``kdumper save`` uses. Zero pages are
found by reading the pages that may be kept, so this reads up to the whole dump once.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ExitCode, UsageError
from .output import human_bytes, note, print_json
from .save_cmd import ProgressPrinter

DEFAULT_LEVELS = (0, 1, 2, 4, 8, 16, 31)
_ROWS = (
    ("zero", "ZERO", "yes", "Pages filled with zero"),
    ("cache", "NON_PRI_CACHE", "yes", "Cache pages without private flag"),
    ("cache_private", "PRI_CACHE", "yes", "Cache pages with private flag"),
    ("user", "USER", "yes", "User process pages"),
    ("free", "FREE", "yes", "Free pages"),
    ("hwpoison", "HWPOISON", "always", "Hardware-poisoned pages"),
    ("offline", "OFFLINE", "always", "Logically offline pages (balloon)"),
    ("kernel_data", "KERN_DATA", "no", "Dumpable kernel data"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``mem-usage`` subcommand."""
    p = sub.add_parser(
        "mem-usage",
        help="pages per class and what each dump level would keep",
        description="Classify every page of DUMP as 'kdumper save' does and print how many "
        "pages (and bytes) each class holds and how much each dump level would keep "
        "(makedumpfile --mem-usage). Reads the pages whose zero-ness matters.",
    )
    p.add_argument("dump", metavar="DUMP", help="a vmcore or any dump kdumper reads")
    p.add_argument(
        "--levels",
        default=",".join(map(str, DEFAULT_LEVELS)),
        metavar="L,L,...",
        help="dump levels to evaluate (default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


add_parser = register


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--levels {text!r}: a comma-separated list of 0..31") from None
    if not levels or any(not 0 <= lv <= 31 for lv in levels):
        raise UsageError(f"--levels {text!r}: a comma-separated list of 0..31")
    return levels


def run(args: argparse.Namespace) -> int:
    """``kdumper mem-usage``."""
    levels = _levels(args.levels)
    from ..collect.pipeline import mem_usage
    from ..collect.source import open_for_save

    progress = None if args.no_progress else ProgressPrinter()
    with open_for_save(args.dump) as dump:
        try:
            usage = mem_usage(dump, levels, progress=progress)
        finally:
            if progress is not None:
                progress.end()
    for warning in usage.warnings:
        note(f"warning: {warning}")
    if args.json:
        print_json(usage.to_json())
        return ExitCode.OK
    ps = usage.page_size
    out = sys.stdout
    print(f"{'TYPE':<14}{'PAGES':>12}{'SIZE':>12}  {'EXCLUDABLE':<11}DESCRIPTION", file=out)
    print("-" * 78, file=out)
    for key, name, excludable, text in _ROWS:
        pages = usage.classes[key]
        print(f"{name:<14}{pages:>12}{human_bytes(pages * ps):>12}  {excludable:<11}{text}",
              file=out)  # fmt: skip
    print(file=out)
    print(f"page size:             {ps}", file=out)
    print(f"Total pages on system: {usage.total_pages}", file=out)
    print(f"Total size on system:  {usage.total_pages * ps} bytes "
          f"({human_bytes(usage.total_pages * ps)})", file=out)  # fmt: skip
    if usage.not_in_source:
        print(f"Not in the dump:       {usage.not_in_source} pages (filtered out before)",
              file=out)  # fmt: skip
    if usage.layout:
        print(f"struct page layout:    {usage.layout}", file=out)
    print(file=out)
    print(f"{'LEVEL':>5}{'KEPT PAGES':>14}{'KEPT SIZE':>12}{'KEPT %':>8}", file=out)
    total = max(usage.total_pages, 1)
    for lv in usage.levels:
        print(f"{lv.dump_level:>5}{lv.kept_pages:>14}{human_bytes(lv.kept_pages * ps):>12}"
              f"{100.0 * lv.kept_pages / total:>7.1f}%", file=out)  # fmt: skip
    return ExitCode.OK
