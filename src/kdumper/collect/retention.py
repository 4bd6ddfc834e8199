"""Dump directories: their names, their creation, their files, and how many are kept.

One crash gives one directory, named the same on every target (local, raw recovered at boot,
ssh; :func:`kdumper.collect.targets.ssh.dump_dir_name`)::

    <host>-YYYY-MM-DD-HH-MM-SS[.N]

``host`` is the crashed kernel's nodename (``init_uts_ns``), else the capture system's host name;
the time is the crash time (VMCOREINFO ``CRASHTIME``) in local time, else the time of the capture.
kdump-utils writes ``<ip>-YYYY-MM-DD-HH:MM:SS``; kdumper has no colons in the name, because ``scp``,
``rsync`` and ``tar -f`` read ``a:b`` as ``host:path``. ``.N`` (N = 1, 2, ...) is added when a
directory of that name exists already (the same vmcore captured twice).

Retention (``[retention] keep = N``) keeps the newest N directories whose names have this form, by
the time in the name; other directories are never touched, nor is the one just written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..dump.io import FileSink, os_error
from ..errors import DumpIOError
from .targets.ssh import dump_dir_name

DIR_PATTERN = re.compile(
    r"^(?P<host>[A-Za-z0-9._-]+)-(?P<time>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)(?:\.(?P<seq>\d{1,4}))?$"
)
MAX_SEQ = 999  # directories of one name and time before giving up

if TYPE_CHECKING:
    from ..dump.base import Dump

TriageFn = Callable[["Dump", list[str]], dict[str, Any]]
"""``triage(dump, paths)``: the analysis of the crashed kernel that opens a dump directory's
``report.json`` (``paths`` name the saved dump in its next steps). The capture takes it as a
parameter, so that the collector does not import the triage code (the CLI passes
:func:`kdumper.triage.report.triage_json`)."""

__all__ = [
    "DIR_PATTERN",
    "DumpDirEntry",
    "TriageFn",
    "create_dump_dir",
    "dump_dir_name",
    "list_dump_dirs",
    "prune",
    "write_file",
]


@dataclass(frozen=True)
class DumpDirEntry:
    """A kdumper dump directory found in a target directory."""

    path: str
    name: str
    time: str  # YYYY-MM-DD-HH-MM-SS, sorts as the time does
    seq: int

    @property
    def key(self) -> tuple[str, int, str]:
        """Sort key: oldest first."""
        return (self.time, self.seq, self.name)


def create_dump_dir(base: str, name: str) -> str:
    """Create ``base/name`` (0700; ``base`` too if missing), or ``base/name.N`` when it exists;
    returns the path."""
    try:
        os.makedirs(base, mode=0o755, exist_ok=True)
    except OSError as e:
        raise os_error(e, base, "cannot create the target directory") from None
    for seq in range(MAX_SEQ + 1):
        path = os.path.join(base, name if seq == 0 else f"{name}.{seq}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except OSError as e:
            raise os_error(e, path, "cannot create the dump directory") from None
        os.chmod(path, 0o700)  # whatever the umask
        return path
    raise DumpIOError(f"{MAX_SEQ + 1} dump directories of this name exist", path=base)


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``: 0600, through ``path-incomplete``, fsynced, renamed."""
    sink = FileSink(path, overwrite=True)
    try:
        sink.write_at(0, data)
    except BaseException:
        sink.abort()
        with contextlib.suppress(OSError):
            os.unlink(sink.tmp_path)
        raise
    sink.finish()


def list_dump_dirs(base: str) -> list[DumpDirEntry]:
    """kdumper's dump directories directly under ``base``, oldest first (missing base: none)."""
    found = []
    try:
        with os.scandir(base) as it:
            for entry in it:
                m = DIR_PATTERN.match(entry.name)
                if m and entry.is_dir(follow_symlinks=False):
                    found.append(
                        DumpDirEntry(entry.path, entry.name, m["time"], int(m["seq"] or 0))
                    )
    except OSError:
        return []
    return sorted(found, key=lambda e: e.key)


def prune(
    base: str,
    keep: int,
    *,
    protect: str | None = None,
    remove: Callable[[str], None] = shutil.rmtree,
) -> list[str]:
    """Delete the oldest dump directories of ``base`` beyond the newest ``keep``; returns the
    deleted paths. ``protect`` (the directory just written) is never deleted and counts as one
    of the ``keep``. ``keep`` 0 keeps everything."""
    if keep <= 0:
        return []
    entries = list_dump_dirs(base)
    protected = os.path.realpath(protect) if protect else None
    others = [e for e in entries if os.path.realpath(e.path) != protected]
    room = keep - (1 if protected is not None and len(others) < len(entries) else 0)
    victims = others[: max(0, len(others) - max(room, 0))]
    deleted = []
    for e in victims:
        try:
            remove(e.path)
        except OSError as err:
            raise os_error(err, e.path, "cannot delete an old dump") from None
        deleted.append(e.path)
    return deleted
