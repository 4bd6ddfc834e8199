"""makedumpfile's flattened format (``-F``): a stream of (offset, size, bytes) records.

Layout (makedumpfile ``write_start_flat_header``/``write_buffer``/``rearrange_dumpdata``):

* a 4096-byte header: ``"makedumpfile"`` NUL-padded to 16 bytes, then big-endian int64
  type = 1 and int64 version = 1, the rest zero;
* records: big-endian int64 ``offset``, int64 ``size``, then ``size`` bytes destined for
  ``offset`` of the reassembled file; a later record wins where records overlap;
* an end marker ``(-1, -1)``.

:class:`FlatSource` reads a flattened file in place (random access through a record index),
:class:`FlatSink` writes one to a stream (a pipe to ssh), and :func:`reassemble_flat` turns a
flattened stream back into the ordinary file, like ``makedumpfile -R``.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import struct
import sys
from typing import BinaryIO

import numpy as np

from ..errors import DumpFormatError, DumpIOError, InputNotFoundError, TruncatedDumpError
from .io import ByteSource, FileSink, Sink, os_error

FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096  # MAX_SIZE_MDF_HEADER
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
END_FLAG = -1

_FILE_HEADER = struct.Struct(">16sqq")
_RECORD = struct.Struct(">qq")

RECORD_LIMIT = 1 << 20  # FlatSink coalesces adjacent writes into records of up to this size
_COPY_CHUNK = 1 << 20  # reassemble_flat copies payloads through a buffer of this size


def is_flattened(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a makedumpfile flattened stream."""
    return head[:16] == FLAT_SIGNATURE.ljust(16, b"\0")


def flat_header() -> bytes:
    """The 4096-byte file header of a flattened stream."""
    head = _FILE_HEADER.pack(FLAT_SIGNATURE, TYPE_FLAT_HEADER, VERSION_FLAT_HEADER)
    return head.ljust(FLAT_HEADER_SIZE, b"\0")


def _check_file_header(head: bytes, path: str) -> int:
    """Validate the flattened file header; returns its version."""
    if len(head) < _FILE_HEADER.size:
        raise TruncatedDumpError(
            f"flattened header is truncated ({len(head)} of {FLAT_HEADER_SIZE} bytes)", path=path
        )
    sig, ftype, version = _FILE_HEADER.unpack_from(head)
    if sig != FLAT_SIGNATURE.ljust(16, b"\0"):
        raise DumpFormatError("not a makedumpfile flattened file (bad signature)", path=path)
    if ftype != TYPE_FLAT_HEADER:
        raise DumpFormatError(
            f"flattened header has type {ftype}, expected {TYPE_FLAT_HEADER}", path=path
        )
    if len(head) < FLAT_HEADER_SIZE:
        raise TruncatedDumpError(
            f"flattened header is truncated ({len(head)} of {FLAT_HEADER_SIZE} bytes)", path=path
        )
    return int(version)


def _bad_record(pos: int, offset: int, size: int, path: str) -> DumpFormatError:
    return DumpFormatError(
        f"flattened record at {pos:#x} is corrupt (offset {offset}, size {size})", path=path
    )


class FlatSource(ByteSource):
    """The reassembled content of a flattened file, read in place through its record index.

    Bytes that no record wrote read as zeros (they are holes of the reassembled file). A missing
    end marker or a last record cut short is tolerated: :attr:`complete` is then False and
    :attr:`problem` says why, so the dump on top can report itself incomplete.
    """

    def __init__(self, inner: ByteSource) -> None:
        self.inner = inner
        self.path = inner.path
        self.version = _check_file_header(inner.pread_upto(0, FLAT_HEADER_SIZE), self.path)
        self.complete = False
        self.problem: str | None = None
        self.records = 0
        offsets: list[int] = []
        sizes: list[int] = []
        fpos: list[int] = []
        pos = FLAT_HEADER_SIZE
        end = inner.size
        while True:
            if pos + _RECORD.size > end:
                self.problem = (
                    "the flattened stream ends without its end marker (it was cut short)"
                    if pos == end
                    else f"the flattened stream ends inside a record header at {pos:#x}"
                )
                break
            offset, size = _RECORD.unpack(inner.pread(pos, _RECORD.size))
            if offset == END_FLAG and size == END_FLAG:
                self.complete = True
                if pos + _RECORD.size != end:
                    self.problem = f"{end - pos - _RECORD.size} bytes follow the end marker"
                break
            if offset < 0 or size <= 0 or offset + size > 1 << 62:
                raise _bad_record(pos, offset, size, self.path)
            pos += _RECORD.size
            if pos + size > end:
                self.problem = (
                    f"the last flattened record (offset {offset:#x}, {size} bytes) is cut short "
                    f"after {end - pos} bytes"
                )
                size = end - pos
                if size > 0:
                    offsets.append(offset)
                    sizes.append(size)
                    fpos.append(pos)
                break
            offsets.append(offset)
            sizes.append(size)
            fpos.append(pos)
            pos += size
        self.records = len(offsets)
        self._starts, self._ends, self._fpos = _resolve(offsets, sizes, fpos)
        self.size = int(self._ends.max()) if self._ends.size else 0

    def pread(self, offset: int, length: int) -> bytes:
        self.check_range(offset, length, "data")
        if length == 0:
            return b""
        stop = offset + length
        i = max(int(np.searchsorted(self._starts, offset, side="right")) - 1, 0)
        if self._ends[i] <= offset:
            i += 1
        out = bytearray()
        pos = offset
        while pos < stop:
            if i >= self._starts.size or self._starts[i] >= stop:
                out += bytes(stop - pos)  # a hole up to the end of the request
                break
            seg_start, seg_end = int(self._starts[i]), int(self._ends[i])
            if seg_start > pos:
                out += bytes(seg_start - pos)
                pos = seg_start
            take = min(seg_end, stop) - pos
            out += self.inner.pread(int(self._fpos[i]) + (pos - seg_start), take)
            pos += take
            i += 1
        return bytes(out)

    def close(self) -> None:
        self.inner.close()


I64 = np.int64


def _resolve(
    offsets: list[int], sizes: list[int], fpos: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping segments (start, end, file position) sorted by start; later records win."""
    if not offsets:
        empty = np.zeros(0, dtype=I64)
        return empty, empty.copy(), empty.copy()
    starts = np.asarray(offsets, dtype=I64)
    ends = starts + np.asarray(sizes, dtype=I64)
    pos = np.asarray(fpos, dtype=I64)
    order = np.argsort(starts, kind="stable")
    s, e, p = starts[order], ends[order], pos[order]
    if s.size < 2 or bool(np.all(e[:-1] <= s[1:])):
        return s, e, p  # the usual case: no record overwrites another
    return _sweep(s.tolist(), e.tolist(), p.tolist(), order.tolist())


def _sweep(
    starts: list[int], ends: list[int], fpos: list[int], seq: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint overlapping records in write order (O(n log n) sweep with a max-heap on sequence)."""
    bounds = sorted(set(starts) | set(ends))
    out_s: list[int] = []
    out_e: list[int] = []
    out_p: list[int] = []
    active: list[tuple[int, int]] = []  # (-seq, record index)
    rec = 0
    n = len(starts)
    for lo, hi in itertools.pairwise(bounds):
        while rec < n and starts[rec] <= lo:
            heapq.heappush(active, (-seq[rec], rec))
            rec += 1
        while active and ends[active[0][1]] <= lo:
            heapq.heappop(active)  # lazily drop records that ended
        if not active:
            continue
        win = active[0][1]
        p = fpos[win] + (lo - starts[win])
        if out_e and out_e[-1] == lo and out_p[-1] + (lo - out_s[-1]) == p:
            out_e[-1] = hi  # same record continues
        else:
            out_s.append(lo)
            out_e.append(hi)
            out_p.append(p)
    return np.asarray(out_s, I64), np.asarray(out_e, I64), np.asarray(out_p, I64)


def _stream_error(e: OSError, name: str, doing: str) -> DumpIOError:
    if e.errno == errno.EPIPE:
        return DumpIOError(f"{doing}: the reading side closed the pipe", path=name)
    return os_error(e, name, doing)


class FlatSink(Sink):
    """Writes the flattened format to a binary stream (a pipe, a socket, a file); not seekable.

    Adjacent ``write_at`` calls are coalesced into records of up to :data:`RECORD_LIMIT` bytes.
    ``finish`` writes the end marker; ``abort`` does not, so a reader sees a cut stream.
    """

    def __init__(self, stream: BinaryIO, name: str | None = None) -> None:
        self._stream = stream
        self.name = name if name is not None else str(getattr(stream, "name", "<stream>"))
        self._pending_offset = -1
        self._pending = bytearray()
        self._closed = False
        self.bytes_written = 0
        self._emit(flat_header())

    @property
    def seekable(self) -> bool:
        return False

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._stream.write(data)
        except OSError as e:
            raise _stream_error(e, self.name, "write failed") from None
        except ValueError:  # write to a closed stream
            raise DumpIOError("write failed: the output stream is closed", path=self.name) from None
        self.bytes_written += len(data)

    def _flush_record(self) -> None:
        if self._pending:
            self._emit(_RECORD.pack(self._pending_offset, len(self._pending)))
            self._emit(self._pending)
            self._pending = bytearray()

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        if self._closed:
            raise DumpIOError("write after the flattened stream was closed", path=self.name)
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        view = memoryview(data).cast("B")
        # a zero-size record would end makedumpfile -R's loop: never emit one
        while view.nbytes:
            pending = len(self._pending)
            if pending and offset == self._pending_offset + pending and pending < RECORD_LIMIT:
                take = min(RECORD_LIMIT - pending, view.nbytes)
            else:
                self._flush_record()
                self._pending_offset = offset
                take = min(RECORD_LIMIT, view.nbytes)
            self._pending += view[:take]
            view, offset = view[take:], offset + take
            if len(self._pending) >= RECORD_LIMIT:
                self._flush_record()

    def _flush_stream(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise _stream_error(e, self.name, "flush failed") from None
        except ValueError:
            pass

    def finish(self) -> None:
        if self._closed:
            return
        self._flush_record()
        self._emit(_RECORD.pack(END_FLAG, END_FLAG))
        self._flush_stream()
        self._closed = True

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._flush_record()  # what was written stays readable (no end marker)
            self._flush_stream()
        except DumpIOError:
            pass


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the stream (pipes return short reads)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def reassemble_flat(src: str | BinaryIO, dst: str, *, overwrite: bool = False) -> None:
    """Rebuild the ordinary file ``dst`` from the flattened stream ``src`` (``makedumpfile -R``).

    ``src`` is a path, ``"-"`` for standard input, or a binary stream. Memory stays bounded; the
    output is sparse where no record wrote. ``dst`` is written as ``dst-incomplete`` (0600) and
    renamed when the end marker has been seen; a cut stream raises :class:`TruncatedDumpError`
    and leaves ``dst-incomplete`` behind with everything that arrived.
    """
    if isinstance(src, str):
        if src == "-":
            _reassemble(sys.stdin.buffer, "<stdin>", dst, overwrite)
            return
        try:
            f = open(src, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise InputNotFoundError(src) from None
        except OSError as e:
            raise DumpIOError(f"cannot open: {e.strerror}", path=src) from None
        with f:
            _reassemble(f, src, dst, overwrite)
        return
    _reassemble(src, str(getattr(src, "name", "<stream>")), dst, overwrite)


def _reassemble(stream: BinaryIO, name: str, dst: str, overwrite: bool) -> None:
    try:
        head = _read_exact(stream, FLAT_HEADER_SIZE)
        _check_file_header(head, name)
    except OSError as e:
        raise DumpIOError(f"read failed: {e.strerror}", path=name) from None
    sink = FileSink(dst, overwrite=overwrite)
    try:
        _copy_records(stream, name, sink)
    except BaseException:
        sink.abort()
        raise
    sink.finish()


def _copy_records(stream: BinaryIO, name: str, sink: FileSink) -> None:
    pos = FLAT_HEADER_SIZE
    buf = bytearray(_COPY_CHUNK)
    view = memoryview(buf)
    cut = f"(kept what arrived in {sink.tmp_path})"
    while True:
        try:
            raw = _read_exact(stream, _RECORD.size)
        except OSError as e:
            raise DumpIOError(f"read failed at {pos:#x}: {e.strerror}", path=name) from None
        if len(raw) < _RECORD.size:
            raise TruncatedDumpError(
                f"the flattened stream ends at {pos:#x} without its end marker {cut}", path=name
            )
        offset, size = _RECORD.unpack(raw)
        if offset == END_FLAG and size == END_FLAG:
            return
        if offset < 0 or size <= 0 or offset + size > 1 << 62:
            raise _bad_record(pos, offset, size, name)
        pos += _RECORD.size
        done = 0
        while done < size:
            want = min(size - done, _COPY_CHUNK)
            try:
                got = _readinto_full(stream, view[:want])
            except OSError as e:
                raise DumpIOError(f"read failed at {pos:#x}: {e.strerror}", path=name) from None
            if got:
                sink.write_at(offset + done, view[:got])
            if got < want:
                raise TruncatedDumpError(
                    f"the flattened stream ends inside a record at {pos + done + got:#x} {cut}",
                    path=name,
                )
            done += got
        pos += size


def _readinto_full(stream: BinaryIO, view: memoryview) -> int:
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < view.nbytes:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            chunk = stream.read(view.nbytes - got)
            n = len(chunk)
            view[got : got + n] = chunk
        if not n:
            break
        got += n
    return got
