"""Opening the dump to be saved so that reading it does not grow the process's memory.

``kdumper.open`` maps files with mmap, which is right for analysis but wrong for a collector:
every page touched through a file mapping counts in the process's resident set, so saving a
64 GiB vmcore would "use" 64 GiB. Here a plain file (a vmcore copy, a block device) is read
with ``pread`` into short-lived buffers instead; ``/proc/vmcore`` keeps mmap, which the kernel
backs with the old kernel's page frames (no page cache, not counted as resident file pages) and
which is far faster there than ``read()`` (the kernel's read path maps each page separately).
"""

from __future__ import annotations

import os

from ..dump.base import Dump
from ..dump.io import FileSource
from ..dump.open import open_dump, open_source


def read_source(path: str | os.PathLike[str]) -> FileSource:
    """A file read with ``pread`` into short-lived buffers; mmap only for ``/proc`` files."""
    return FileSource(path, use_mmap=os.path.realpath(path).startswith("/proc/"))


def open_for_save(path: str | os.PathLike[str], *more: str | os.PathLike[str]) -> Dump:
    """Open a dump to be saved (filtered, rewritten): bounded memory while reading it.

    A split set (several paths) is opened with :func:`kdumper.open`.
    """
    if more or os.path.isdir(path):
        return open_dump(path, *more)  # split sets; directories get open_dump's hint
    src = read_source(path)
    try:
        return open_source(src)
    except BaseException:
        src.close()
        raise
