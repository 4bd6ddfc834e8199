"""Random-access byte sources that readers parse, and sinks that writers fill.

Readers never touch files directly: they call :meth:`ByteSource.pread`, so the same reader parses a
plain file, ``/proc/vmcore`` (where mmap may be refused) or a flattened stream seen through its
record index. Writers emit ``write_at(offset, data)`` calls into a :class:`Sink`, so the same writer
fills a seekable file or a flattened stream for a pipe.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from abc import ABC, abstractmethod
from types import TracebackType
from typing import BinaryIO

from ..errors import DumpIOError, InputNotFoundError, NoSpaceError, TruncatedDumpError


class ByteSource(ABC):
    """Random-access, read-only bytes with a known size."""

    path: str
    size: int

    @abstractmethod
    def pread(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; ``TruncatedDumpError`` if they are not there."""

    def pread_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes at ``offset`` (sources that can override the copy)."""
        out[:] = self.pread(offset, len(out))

    def pread_many(self, offsets: list[int], length: int) -> list[bytes]:
        """``length`` bytes at each offset (sources override the loop to make it cheap)."""
        return [self.pread(offset, length) for offset in offsets]

    def pread_upto(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the source)."""
        length = max(0, min(length, self.size - offset))
        return self.pread(offset, length) if length else b""

    def check_range(self, offset: int, length: int, what: str) -> None:
        """Raise ``TruncatedDumpError`` naming ``what`` unless the range lies inside the source."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedDumpError(
                f"{what} at offset {offset:#x} (+{length:#x}) lies past the end of the file "
                f"({self.size:#x} bytes): the file is truncated or corrupt",
                path=self.path,
            )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the resources behind the source."""

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(ByteSource):
    """A file read through mmap when possible (and ``use_mmap``), else through ``os.pread``."""

    def __init__(self, path: str | os.PathLike[str], *, use_mmap: bool = True) -> None:
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
            # a block device: its size comes from seeking to the end
            self.size = os.lseek(self._fd, 0, os.SEEK_END)
        self._map: mmap.mmap | None = None
        if self.size and use_mmap:
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

    def pread_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes at ``offset``: one copy, no new buffer."""
        length = len(out)
        self.check_range(offset, length, "data")
        if self._map is not None:
            out[:] = memoryview(self._map)[offset : offset + length]
            return
        done = 0
        while done < length:
            try:
                n = os.preadv(self._fd, [out[done:]], offset + done)
            except OSError as e:
                raise DumpIOError(
                    f"read error at offset {offset + done:#x}: {e.strerror}", path=self.path
                ) from None
            if n <= 0:
                raise TruncatedDumpError(f"short read at offset {offset:#x}", path=self.path)
            done += n

    def pread_many(self, offsets: list[int], length: int) -> list[bytes]:
        """``length`` bytes at each offset: one system call each, no per-read checks."""
        if not offsets:
            return []
        self.check_range(min(offsets), max(offsets) - min(offsets) + length, "data")
        if self._map is not None:
            m = self._map
            return [m[o : o + length] for o in offsets]
        fd, pread = self._fd, os.pread
        try:
            out = [pread(fd, length, o) for o in offsets]
        except OSError as e:
            raise DumpIOError(f"read error: {e.strerror}", path=self.path) from None
        if any(len(d) != length for d in out):
            raise TruncatedDumpError("short read", path=self.path)
        return out

    def view(self, offset: int, length: int) -> memoryview:
        """A zero-copy view when the file is mapped, else a copy."""
        if self._map is not None:
            self.check_range(offset, length, "data")
            return memoryview(self._map)[offset : offset + length]
        return memoryview(self.pread(offset, length))

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class BytesSource(ByteSource):
    """Bytes in memory (tests, small reassembled headers)."""

    def __init__(self, data: bytes, path: str = "<memory>") -> None:
        self._data = data
        self.size = len(data)
        self.path = path

    def pread(self, offset: int, length: int) -> bytes:
        self.check_range(offset, length, "data")
        return self._data[offset : offset + length]


class Sink(ABC):
    """Where a writer puts its bytes: ``write_at`` calls, then ``finish`` or ``abort``."""

    name: str

    @abstractmethod
    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset``; raises :class:`NoSpaceError` or :class:`DumpIOError`."""

    @property
    def seekable(self) -> bool:
        """Whether earlier offsets may be rewritten (a plain file: yes; a stream: no)."""
        return True

    def finish(self) -> None:  # noqa: B027 - optional hook
        """Flush, fsync and publish the output."""

    def abort(self) -> None:  # noqa: B027 - optional hook
        """Stop writing; keep whatever was written (it may be marked incomplete)."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()


def os_error(e: OSError, path: str, doing: str) -> DumpIOError:
    """The kdumper error for an ``OSError`` met while ``doing`` something to ``path``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return NoSpaceError(f"{doing}: no space left ({e.strerror})", path=path)
    return DumpIOError(f"{doing}: {e.strerror or e}", path=path)


class FileSink(Sink):
    """A file written in place; created 0600; published by ``finish`` (fsync, then rename).

    The file is written under ``path + '-incomplete'`` (or ``tmp_path``) and renamed to ``path``
    only when complete, so an interrupted dump is never mistaken for a whole one.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, tmp_path: str | None = None, overwrite: bool = False
    ) -> None:
        self.name = os.fspath(path)
        self.tmp_path = tmp_path if tmp_path is not None else self.name + "-incomplete"
        if not overwrite and os.path.exists(self.name):
            raise DumpIOError("already exists (use --force to overwrite)", path=self.name)
        try:
            self._fd = os.open(
                self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
        except OSError as e:
            raise os_error(e, self.tmp_path, "cannot create") from None
        os.fchmod(self._fd, 0o600)
        self.size = 0

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.pwrite(self._fd, view, offset)
            except OSError as e:
                raise os_error(e, self.tmp_path, "write failed") from None
            if n == 0:
                raise NoSpaceError("write failed: no space left", path=self.tmp_path)
            view, offset = view[n:], offset + n
        self.size = max(self.size, offset)

    def truncate(self, size: int) -> None:
        """Cut or extend the file to ``size`` bytes (sparse)."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as e:
            raise os_error(e, self.tmp_path, "cannot resize") from None
        self.size = size

    def finish(self) -> None:
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise os_error(e, self.tmp_path, "fsync failed") from None
        finally:
            os.close(self._fd)
            self._fd = -1
        if self.tmp_path != self.name:
            os.replace(self.tmp_path, self.name)
        with contextlib.suppress(OSError):
            dfd = os.open(os.path.dirname(os.path.abspath(self.name)), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def create_private(path: str) -> BinaryIO:
    """A new file opened for streaming writes, mode 0600 whatever the umask (dumps hold secrets)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise os_error(e, path, "cannot create") from None
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def fsync_stream(stream: BinaryIO, path: str) -> None:
    """Flush and fsync ``stream`` (written to ``path``)."""
    try:
        stream.flush()
        os.fsync(stream.fileno())
    except OSError as e:
        raise os_error(e, path, "fsync failed") from None


def split_paths(out: str, parts: int) -> list[str]:
    """Part names of a split set: ``out`` with ``{}`` replaced by 1..N, else ``out.1`` ..."""
    if "{}" in out:
        return [out.replace("{}", str(i)) for i in range(1, parts + 1)]
    return [f"{out}.{i}" for i in range(1, parts + 1)]
