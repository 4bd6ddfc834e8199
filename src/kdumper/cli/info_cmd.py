"""``kdumper info DUMP...``: what a dump is and what it holds."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from ..dump.base import Dump
from ..dump.open import open_dump
from ..errors import KdumperError
from ..kernel.utsname import read_utsname
from ..records import as_dict
from .output import human_bytes, iso_utc, print_json, print_pairs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``info`` subcommand."""
    p = sub.add_parser(
        "info",
        help="show a dump's format, kernel, pages and header facts",
        description="Show what a dump is: format, kernel release, pages present/dumped/zero, "
        "codecs, dump level, crash time, CPUs. Several paths are the parts of a split set.",
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP", help="dump file (several: a split set)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _file_size(dump: Dump, paths: list[str]) -> int:
    source = getattr(dump, "source", None)
    if len(paths) == 1 and source is not None and getattr(source, "size", None) is not None:
        inner = getattr(source, "inner", None)  # a FlatSource: report the file, not its content
        if inner is not None and getattr(inner, "size", None) is not None:
            return int(inner.size)
        return int(source.size)
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.stat(path).st_size
    return total


def collect(dump: Dump, paths: list[str]) -> dict[str, Any]:
    """The facts ``info`` reports, as a JSON-ready dict."""
    facts = dump.facts()
    utsname = facts.utsname
    if utsname is None or not utsname.release:
        utsname = read_utsname(dump) or utsname
    vi = dump.vmcoreinfo
    release = utsname.release if utsname is not None and utsname.release else None
    if release is None and vi is not None:
        release = vi.osrelease
    machine = utsname.machine if utsname is not None and utsname.machine else dump.arch.name
    codecs = dump.codec_counts()
    try:
        build_id = vi.build_id if vi is not None else None
    except KdumperError:
        build_id = None
    warnings = list(facts.extra.get("warnings", []))
    for w in getattr(dump, "warnings", []):
        if w not in warnings:
            warnings.append(w)
    extra = {k: v for k, v in facts.extra.items() if k != "warnings"}
    return {
        "paths": paths,
        "format": facts.format,
        "kernel_release": release,
        "machine": machine,
        "utsname": as_dict(utsname) if utsname is not None else None,
        "page_size": dump.page_size,
        "max_pfn": dump.max_pfn,
        "pages_present": dump.present.count(),
        "pages_dumped": dump.dumped.count(),
        "pages_zero": codecs.get("zero"),
        "codecs": codecs,
        "compression": facts.compression,
        "dump_level": facts.dump_level,
        "incomplete": facts.incomplete,
        "crash_time": facts.crash_time,
        "crash_time_utc": iso_utc(facts.crash_time) if facts.crash_time is not None else None,
        "nr_cpus": facts.nr_cpus,
        "header_version": facts.header_version,
        "phys_base": facts.phys_base,
        "build_id": build_id,
        "split": list(facts.split) if facts.split is not None else None,
        "parts": facts.parts,
        "file_size": _file_size(dump, paths),
        "extra": extra,
        "warnings": warnings,
    }


def _pages(n: int | None, page_size: int) -> str | None:
    return None if n is None else f"{n} ({human_bytes(n * page_size)})"


def render(info: dict[str, Any]) -> None:
    """The human-readable ``key: value`` lines."""
    ps = info["page_size"]
    codecs = info["codecs"]
    codec_mix = ", ".join(f"{k} {v}" for k, v in sorted(codecs.items(), key=lambda kv: -kv[1]))
    crash = None
    if info["crash_time"] is not None:
        crash = f"{info['crash_time_utc']} ({info['crash_time']})"
    split = info["split"]
    incomplete = "yes (the dump was cut short; some pages are missing)" if info[
        "incomplete"
    ] else "no"  # fmt: skip
    print_pairs([
        ("file", ", ".join(info["paths"])),
        ("format", info["format"] + (f" ({info['parts']} parts)" if info["parts"] > 1 else "")),
        ("kernel release", info["kernel_release"] or "unknown"),
        ("machine", info["machine"]),
        ("page size", ps),
        ("pages present", _pages(info["pages_present"], ps)),
        ("pages dumped", _pages(info["pages_dumped"], ps)),
        ("zero pages", _pages(info["pages_zero"], ps)),
        ("codecs", codec_mix or None),
        ("compression", info["compression"]),
        ("dump level", info["dump_level"]),
        ("incomplete", incomplete),
        ("crash time", crash),
        ("cpus", info["nr_cpus"]),
        ("header version", info["header_version"]),
        ("phys_base", f"{info['phys_base']:#x}" if info["phys_base"] is not None else None),
        ("build id", info["build_id"]),
        ("split part", f"pfns {split[0]:#x}-{split[1]:#x}" if split else None),
        ("file size", f"{info['file_size']} bytes ({human_bytes(info['file_size'])})"),
    ])  # fmt: skip
    for w in info["warnings"]:
        print(f"warning: {w}")


def run(args: argparse.Namespace) -> int:
    """``kdumper info``."""
    paths: list[str] = list(args.dumps)
    with open_dump(*paths) as dump:
        info = collect(dump, paths)
    if args.json:
        print_json(info)
    else:
        render(info)
    return 0
