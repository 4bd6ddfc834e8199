"""Opening the dump to be saved so that reading it does not grow the process's memory.

``kdumper.open`` maps files with mmap, which is right for analysis but wrong for a collector:
every page touched through a file mapping counts in the process's resident set, so saving a
64 GiB vmcore would "use" 64 GiB. Here a plain file (a vmcore copy, a block device) is read
with ``pread`` into short-lived buffers instead; ``/proc/vmcore`` keeps mmap, which the kernel
backs with the old kernel's page frames (no page cache, not counted as resident file pages) and
which is far faster there than ``read()`` (the kernel's read path maps each page separately).
"""

from __future__ import annotations

import contextlib
import mmap
import os

from ..dump.base import Dump
from ..dump.io import ByteSource
from ..dump.open import open_dump, open_source
from ..errors import DumpIOError, InputNotFoundError, TruncatedDumpError


class ReadSource(ByteSource):
    """A file read with ``pread`` (``mmap`` only for ``/proc`` files); never keeps pages."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InputNotFoundError(self.path) from None
        except IsADirectoryError:
            raise DumpIOError("is a directory, not a dump file", path=self.path) from None
        except OSError as e:
            raise DumpIOError(f"cannot open: {e.strerror}", path=self.path) from None
        st = os.fstat(self._fd)
        self.size = st.st_size
        if self.size == 0 and not os.path.isfile(self.path):
            self.size = os.lseek(self._fd, 0, os.SEEK_END)  # a block device
        self._map: mmap.mmap | None = None
        if self.size and os.path.realpath(self.path).startswith("/proc/"):
            with contextlib.suppress(OSError, ValueError):
                self._map = mmap.mmap(self._fd, self.size, prot=mmap.PROT_READ)

    def pread(self, offset: int, length: int) -> bytes:
        self.check_range(offset, length, "data")
        if self._map is not None:
            return self._map[offset : offset + length]
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as e:
            raise DumpIOError(
                f"read error at offset {offset:#x}: {e.strerror}", path=self.path
            ) from None
        if len(data) != length:
            raise TruncatedDumpError(f"short read at offset {offset:#x}", path=self.path)
        return data

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_for_save(path: str | os.PathLike[str], *more: str | os.PathLike[str]) -> Dump:
    """Open a dump to be saved (filtered, rewritten): bounded memory while reading it.

    A split set (several paths) is opened with :func:`kdumper.open`.
    """
    if more or os.path.isdir(path):
        return open_dump(path, *more)  # split sets; directories get open_dump's hint
    src = ReadSource(path)
    try:
        return open_source(src)
    except BaseException:
        src.close()
        raise
