"""Streaming a dump into a pipe while checksumming it; checksum files next to dumps.

A streaming target (ssh, a raw device behind ``dd``) gets the flattened format through a pipe.
:class:`HashingPipe` is the binary stream handed to the writer: every byte that goes into the pipe
also goes through a hash, so the checksum of what was sent costs no second read. The checksum is
stored next to the dump as ``<dump>.<algorithm>`` in the line format of the coreutils tools
(``<hex>  <name>``), so ``b2sum -c vmcore.flat.blake2b`` (or ``sha256sum -c``) checks it without
kdumper; ``kdumper verify`` checks it too.

The default algorithm is BLAKE2b-512 (``hashlib.blake2b()``, the same digest as ``b2sum``): in the
standard library, and fast without special CPU instructions (1.3 GB/s on one core of the build
machine; SHA-256 needs SHA-NI to be faster, and xxhash is not always installed in a capture
environment).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import struct
from typing import TYPE_CHECKING, Any

from ...dump.flattened import END_FLAG, FLAT_SIGNATURE
from ...errors import DumpFormatError, DumpIOError, InputNotFoundError, UsageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# algorithm -> the coreutils program that checks its files with -c
CHECKSUM_TOOLS: dict[str, str] = {"blake2b": "b2sum", "sha256": "sha256sum", "sha512": "sha512sum"}
DEFAULT_CHECKSUM = "blake2b"
_HEX_LEN = {"blake2b": 128, "sha256": 64, "sha512": 128}
_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]+) [ *](?P<name>.+)$")
_READ_CHUNK = 1 << 20  # file_digest reads this much at a time (hashlib releases the GIL)
_MARK = 16
FLAT_END = struct.pack(">qq", END_FLAG, END_FLAG)  # the end marker of a flattened stream


def new_hash(algorithm: str) -> Any:
    """A fresh hash object for ``algorithm`` (one of :data:`CHECKSUM_TOOLS`)."""
    if algorithm not in CHECKSUM_TOOLS:
        raise UsageError(
            f"unknown checksum algorithm {algorithm!r}; choose from {', '.join(CHECKSUM_TOOLS)}"
        )
    return hashlib.new(algorithm)


def checksum_line(hexdigest: str, name: str) -> str:
    """One line of a checksum file, as ``b2sum``/``sha256sum`` write it."""
    return f"{hexdigest}  {name}\n"


def checksum_path(dump_path: str, algorithm: str = DEFAULT_CHECKSUM) -> str:
    """Where the checksum of ``dump_path`` is kept: ``<dump_path>.<algorithm>``."""
    return f"{dump_path}.{algorithm}"


def find_checksum_file(dump_path: str) -> tuple[str, str] | None:
    """``(path, algorithm)`` of the checksum file next to ``dump_path``, or None."""
    for algorithm in CHECKSUM_TOOLS:
        path = checksum_path(dump_path, algorithm)
        if os.path.isfile(path):
            return path, algorithm
    return None


def read_checksum_file(path: str, algorithm: str, name: str) -> str:
    """The expected hex digest for ``name`` in the checksum file ``path``.

    A file with a single entry applies whatever name it records (the dump may have been renamed);
    with several entries the one for ``name`` is taken.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 16)
    except FileNotFoundError:
        raise InputNotFoundError(path) from None
    except OSError as e:
        raise DumpIOError(f"cannot read the checksum file: {e.strerror}", path=path) from None
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if m is None or len(m["hex"]) != _HEX_LEN[algorithm]:
            raise DumpFormatError(
                f"not a {CHECKSUM_TOOLS[algorithm]} line: {line[:80]!r}", path=path
            )
        entries.append((m["hex"].lower(), m["name"]))
    if not entries:
        raise DumpFormatError("the checksum file is empty", path=path)
    if len(entries) == 1:
        return entries[0][0]
    for hexdigest, entry_name in entries:
        if os.path.basename(entry_name) == name:
            return hexdigest
    raise DumpFormatError(f"no checksum for {name} in the file", path=path)


def file_digest(path: str, algorithm: str) -> str:
    """The hex digest of the whole file ``path``, read in 1 MiB chunks."""
    h = new_hash(algorithm)
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
    except FileNotFoundError:
        raise InputNotFoundError(path) from None
    except OSError as e:
        raise DumpIOError(f"read failed: {e.strerror}", path=path) from None
    return str(h.hexdigest())


class HashingPipe(io.RawIOBase):
    """A write-only binary stream over a pipe's file descriptor that hashes what it writes.

    Every ``write`` is written whole (short pipe writes are retried). After the reading side went
    away (``EPIPE``) :attr:`broken` is set and the ``BrokenPipeError`` propagates, so a caller
    can tell a dropped transport from its writer's own failure. ``close`` closes the descriptor
    (the reader sees end of file).
    """

    def __init__(self, fd: int, algorithm: str = DEFAULT_CHECKSUM, name: str = "<pipe>") -> None:
        super().__init__()
        self._fd = fd
        self._hash = new_hash(algorithm)
        self.algorithm = algorithm
        self.name = name
        self.bytes_written = 0
        self.broken = False
        self.head = b""  # the first 16 bytes written
        self.tail = b""  # the last 16 bytes written

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        if self._fd < 0:
            raise ValueError("write to a closed pipe")
        view = memoryview(data).cast("B")
        total = view.nbytes
        while view.nbytes:
            try:
                n = os.write(self._fd, view)
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.broken = True
                raise
            done = view[:n]
            self._hash.update(done)
            if len(self.head) < _MARK:
                self.head += bytes(done[: _MARK - len(self.head)])
            self.tail = (self.tail + bytes(done[-_MARK:]))[-_MARK:]
            self.bytes_written += n
            view = view[n:]
        return total

    def ends_flattened_stream(self) -> bool | None:
        """For a flattened stream: whether it ended with the end marker; None if not flattened."""
        if not self.head.startswith(FLAT_SIGNATURE):
            return None
        return self.tail == FLAT_END

    def hexdigest(self) -> str:
        """The digest of everything written so far."""
        return str(self._hash.hexdigest())

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.broken = True
        super().close()
