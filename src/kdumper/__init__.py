"""kdumper: Linux kdump's user-space side — arm, capture, filter, save and triage crash dumps."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dump.base import Dump

__version__ = "0.1.0"

__all__ = ["__version__", "open"]


def open(path: str, *more: str) -> Dump:
    """Open a dump of any format (several paths: the parts of a split set)."""
    from .dump.open import open_dump

    return open_dump(path, *more)
