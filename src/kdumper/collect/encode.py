"""Batch page encoding for the collector: zero detection and per-page compression of a batch.

A batch is ``count`` pages back to back in one buffer. :meth:`BatchEncoder.encode` returns the
stored form of every page (see :class:`Encoded`) in makedumpfile's rules: a zero page is shared
(when zero pages are excluded), a page whose compressed form is not smaller is stored raw. The
bytes are those of :mod:`kdumper.codecs` (checked in tests/test_pipeline.py).

It runs in the collector's worker processes (or its one thread) and keeps the per-page Python
work to one library call: zero pages are found with numpy for the whole batch, LZO and zlib
are called through ctypes with raw buffer addresses (:mod:`.native`), zstd and snappy go through
the codec objects (a reused zstd context, cramjam). All of them release the GIL while compressing.
"""

from __future__ import annotations

import ctypes

import numpy as np
import numpy.typing as npt

from ..codecs import Codec
from ..records import record
from .native import NativeCodec, native_for, stored_bound

Bools = npt.NDArray[np.bool_]


@record
class Encoded:
    """The stored form of a batch of pages."""

    sizes: npt.NDArray[np.int64]  # stored length of each page (0 for a zero page)
    flags: npt.NDArray[np.uint32]  # codec flag of each page (0: raw or zero)
    data: bytes | memoryview  # the stored pages back to back
    zero: Bools | None  # zero pages (shared zero page), None when there are none
    zero_count: int


def zero_flags(data: bytes | memoryview, page_size: int) -> Bools:
    """One bool per page of ``data``: all bytes zero."""
    words = np.frombuffer(data, dtype=np.uint64).reshape(-1, page_size // 8)
    # max() is a SIMD reduction; any() first casts every word to bool (1.6x slower here)
    result: Bools = words.max(axis=1) == 0
    return result


def _sizes_flags(
    sizes: list[int], page_size: int, flag: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """The stored sizes as an array, and the codec flag of every page that shrank."""
    arr = np.array(sizes, np.int64)
    flags = np.where((arr > 0) & (arr < page_size), flag, 0).astype(np.uint32)
    return arr, flags


class BatchEncoder:
    """Encodes batches of pages with one codec; safe to call from several threads."""

    def __init__(self, codec: Codec, page_size: int, exclude_zero: bool) -> None:
        self.codec = codec
        self.page_size = page_size
        self.exclude_zero = exclude_zero
        self._native: NativeCodec | None = native_for(codec)

    def slot_bytes(self, count: int) -> int:
        """Room that :meth:`encode` needs in ``out`` for a batch of ``count`` pages."""
        return count * max(stored_bound(self.page_size), self.page_size)

    def encode(
        self, data: bytes | memoryview, lost: Bools | None = None, out: memoryview | None = None
    ) -> Encoded:
        """The stored form of the pages in ``data`` (a multiple of the page size).

        ``lost``: pages the source did not have; they get no payload (size 0) and are neither
        zero nor stored. ``out``: a writable buffer of :meth:`slot_bytes` bytes to put the
        payloads in (``Encoded.data`` is then a view of it), instead of new bytes.
        """
        ps = self.page_size
        count = len(data) // ps
        zero = None
        zero_count = 0
        if self.exclude_zero:
            zero = zero_flags(data, ps)
            if lost is not None:
                zero &= ~lost
            zero_count = int(np.count_nonzero(zero))
            if zero_count == count:
                return Encoded(np.zeros(count, np.int64), np.zeros(count, np.uint32), b"",
                               zero, zero_count)  # fmt: skip
            if not zero_count:
                zero = None
        omit = zero if lost is None else (lost if zero is None else zero | lost)
        flag = self.codec.flag
        if flag == 0:  # no compression: the stored pages as they are
            if omit is None:  # (a copy: ``data`` may be a buffer the caller reuses)
                payload = _put(out, data) if out is not None else bytes(data)
                sizes = np.full(count, ps, np.int64)
                return Encoded(sizes, np.zeros(count, np.uint32), payload, None, 0)
            pages = np.frombuffer(data, np.uint8).reshape(count, ps)[~omit]  # a copy
            stored = np.where(omit, 0, ps).astype(np.int64)
            payload = pages.tobytes() if out is None else _put(out, pages.data.cast("B"))
            return Encoded(stored, np.zeros(count, np.uint32), payload, zero, zero_count)
        keep = range(count) if omit is None else np.flatnonzero(~omit).tolist()
        if self._native is not None:
            addr = None if out is None else _address(out)
            src = int(np.frombuffer(data, np.uint8).ctypes.data)  # bytes or a reused buffer
            native_sizes, blob = self._native.encode(src, count, ps, keep, addr)
            sizes_a, flags_a = _sizes_flags(native_sizes, ps, flag)
            if isinstance(blob, int):
                assert out is not None
                return Encoded(sizes_a, flags_a, out[:blob], zero, zero_count)
            return Encoded(sizes_a, flags_a, blob, zero, zero_count)
        view = memoryview(data)
        compress = self.codec.compress
        parts: list[bytes | memoryview] = []
        append = parts.append
        stored_sizes = [0] * count
        for i in keep:
            page = view[i * ps : (i + 1) * ps]
            c = compress(page)
            if len(c) < ps:
                append(c)
                stored_sizes[i] = len(c)
            else:
                append(page)
                stored_sizes[i] = ps
        sizes_a, flags_a = _sizes_flags(stored_sizes, ps, flag)
        if out is None:
            return Encoded(sizes_a, flags_a, b"".join(parts), zero, zero_count)
        pos = 0
        for part in parts:
            out[pos : pos + len(part)] = part
            pos += len(part)
        return Encoded(sizes_a, flags_a, out[:pos], zero, zero_count)


def _put(out: memoryview, data: bytes | memoryview) -> memoryview:
    """A view of the copy of ``data`` at the start of ``out``."""
    out[: len(data)] = data
    return out[: len(data)]


def _address(buf: memoryview) -> int:
    """The address of a writable buffer, for the C libraries."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))
