"""Exceptions raised by the harness."""

from __future__ import annotations


class HarnessError(RuntimeError):
    """Something the harness needs failed (a download, a build, a guest run)."""


class GuestError(HarnessError):
    """The guest did not produce the expected result; ``serial_log`` points at its console log."""

    def __init__(self, message: str, serial_log: object | None = None) -> None:
        super().__init__(message if serial_log is None else f"{message} (serial log: {serial_log})")
        self.serial_log = serial_log


class GuestStalledError(HarnessError):
    """The guest printed nothing on its console for longer than a wait allowed (hung)."""
