"""Text and JSON output shared by the commands (the only place that writes to stdout)."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO

# json and datetime are imported where they are used: `kdumper save` and the capture need
# neither unless asked for JSON (2 ms of start-up, measured with -X importtime)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector around a burst of imports.

    Importing numpy and kdumper's modules allocates tens of thousands of objects and no garbage
    worth a pass (a few hundred cycles); the collector's passes over them were ~3 ms of a
    ``kdumper save``'s start (measured: the same imports in 66.5 instead of 69.3 ms, median of
    25 processes). They are frozen afterwards (moved out of the collector's generations): the
    first collection after the imports walked them all, 1.5 ms of a 4 GiB guest's save, on
    the one CPU the workers wait for.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


def human_bytes(n: int) -> str:
    """``12.3 MiB`` style size."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def iso_utc(epoch: int) -> str:
    """ISO 8601 UTC time of a Unix timestamp (``2023-11-14T22:13:20Z``)."""
    from datetime import UTC, datetime

    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"(invalid timestamp {epoch})"


def print_pairs(pairs: Iterable[tuple[str, object]], out: TextIO | None = None) -> None:
    """Aligned ``key: value`` lines; None values are left out."""
    rows = [(k, v) for k, v in pairs if v is not None]
    width = max((len(k) for k, _ in rows), default=0) + 1
    stream = out if out is not None else sys.stdout
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}", file=stream)


def print_json(obj: Mapping[str, Any], out: TextIO | None = None) -> None:
    """One JSON object, indented, with a final newline."""
    import json

    stream = out if out is not None else sys.stdout
    json.dump(obj, stream, indent=2, sort_keys=False, default=str)
    stream.write("\n")


def note(message: str) -> None:
    """A progress or summary line on stderr."""
    print(f"kdumper: {message}", file=sys.stderr)
