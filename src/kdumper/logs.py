"""The library's loggers, with :mod:`logging` imported when the first one is asked for.

``import logging`` (and the ``traceback``/``threading``/``string`` it pulls in) is ~2.5 ms, a
few per cent of a small ``kdumper save``, and most runs never log. The command line says how
logging is set up (:func:`configure_on_first_use`); the first :func:`get_logger` imports logging
and runs that set-up before it hands out a logger.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

_pending: list[Callable[[], None]] = []


def configure_on_first_use(setup: Callable[[], None]) -> None:
    """Run ``setup`` before the first :func:`get_logger` (now, when logging is already in use)."""
    if "logging" in sys.modules:
        setup()
    else:
        _pending[:] = [setup]


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, after the set-up the command line registered."""
    import logging

    while _pending:
        _pending.pop()()
    return logging.getLogger(name)
