"""Batch page encoding for the collector: zero detection and per-page compression of a batch.

A batch is ``count`` pages back to back in one buffer. :meth:`BatchEncoder.encode` returns the
stored form of every page (see :class:`Encoded`) in makedumpfile's rules: a zero page is shared
(when zero pages are excluded), a page whose compressed form is not smaller is stored raw. The
bytes are those of :mod:`kdumper.codecs` (checked in tests/test_pipeline.py).

It runs in the collector's worker processes (or its one thread) and keeps the per-page Python
work to one library call: zero pages are found with numpy for the whole batch, and the two codecs
whose per-call cost matters call their C library through ctypes with raw buffer addresses, into
the caller's buffer (a worker's shared-memory slot) or one output buffer per thread:

* LZO: liblzo2's ``lzo1x_1_compress`` (the call overhead of the codec object doubled the time of
  this fast codec);
* zlib: one ``deflate`` stream per thread, ``deflateReset`` between pages, as makedumpfile does
  since aa5ee50: ``zlib.compress`` allocates and frees the 256 KiB deflate state for every page.
  Measured on a 6.1 vmcore: 63 -> 41 us per page, byte-identical output (same libz).

zstd and snappy go through the codec objects (a reused zstd context, cramjam). All of them
release the GIL while compressing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..codecs import Codec

Bools = npt.NDArray[np.bool_]


@dataclass
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


class _Lzo:
    """liblzo2's ``lzo1x_1_compress`` called with raw addresses (one output buffer per thread)."""

    WRKMEM = 1 << 17  # LZO1X_1_MEM_COMPRESS is 64 KiB on LP64 (as kdumper.codecs)

    def __init__(self, lib: ctypes.CDLL) -> None:
        fn = lib.lzo1x_1_compress
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p]  # fmt: skip
        fn.restype = ctypes.c_int
        self._fn = fn
        self._local = threading.local()

    def _buffers(self, need: int) -> tuple[int, Any, int, int]:
        """Output buffer address (``need`` bytes; none when ``need`` is 0), length cell, work
        memory, of this thread."""
        st = self._local
        if getattr(st, "wrk", None) is None:
            st.wrk = ctypes.create_string_buffer(self.WRKMEM)
            st.n = ctypes.c_size_t()
            st.size = 0
        if st.size < need:
            st.out = ctypes.create_string_buffer(need)
            st.size = need
        out_addr = ctypes.addressof(st.out) if need else 0
        return out_addr, st.n, ctypes.addressof(st.n), ctypes.addressof(st.wrk)

    def encode(
        self, src: int, count: int, page_size: int, keep: Iterable[int], flag: int,
        out: int | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], bytes | int]:  # fmt: skip
        """Sizes, flags and the payloads of the ``count`` pages at address ``src`` (the payloads'
        length when they were written at address ``out``)."""
        need = 0 if out is not None else count * stored_bound(page_size)
        out_addr, n, n_addr, wrk = self._buffers(need)
        if out is not None:
            out_addr = out
        fn, memmove = self._fn, ctypes.memmove
        sizes = [0] * count
        pos = 0
        # the per-page work is this loop: nothing in it that can be done once per batch.
        # lzo1x_1_compress only writes *dst_len, and always returns LZO_E_OK (lzo1x.h).
        for i in keep:
            page = src + i * page_size
            dst = out_addr + pos
            fn(page, page_size, dst, n_addr, wrk)
            size = n.value
            if size >= page_size:  # did not shrink: stored raw
                memmove(dst, page, page_size)
                size = page_size
            sizes[i] = size
            pos += size
        return (*_sizes_flags(sizes, page_size, flag), _payload(out, out_addr, pos))


def stored_bound(page_size: int) -> int:
    """Bytes the native compressors may write for one page before it is stored raw (LZO's
    worst case, makedumpfile ``calculate_len_buf_out``; deflateBound of a page is smaller)."""
    return page_size + page_size // 16 + 64 + 3


def _payload(out: int | None, addr: int, length: int) -> bytes | int:
    """The payloads as bytes, or only their length when they went to the caller's buffer."""
    return length if out is not None else ctypes.string_at(addr, length)


def _sizes_flags(
    sizes: list[int], page_size: int, flag: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """The stored sizes as an array, and the codec flag of every page that shrank."""
    arr = np.array(sizes, np.int64)
    flags = np.where((arr > 0) & (arr < page_size), flag, 0).astype(np.uint32)
    return arr, flags


class _ZStream(ctypes.Structure):
    """``z_stream`` of zlib.h (LP64)."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


_Z_OK, _Z_STREAM_END, _Z_FINISH = 0, 1, 4
_ZLIB_LEVEL = 1  # Z_BEST_SPEED, as makedumpfile -c


class _Deflate:
    """One deflate stream; its zlib state is freed with the object (when its thread ends)."""

    def __init__(self, lib: ctypes.CDLL, version: bytes) -> None:
        self.stream = _ZStream()
        rc = lib.deflateInit_(ctypes.byref(self.stream), _ZLIB_LEVEL, version,
                              ctypes.sizeof(_ZStream))  # fmt: skip
        if rc != _Z_OK:
            raise MemoryError("deflateInit failed")
        self.ptr = ctypes.pointer(self.stream)
        self._end = lib.deflateEnd

    def __del__(self) -> None:
        self._end(self.ptr)


class _Zlib:
    """A deflate stream per thread, reset between pages (makedumpfile's compress_mdf)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.zlibVersion.restype = ctypes.c_char_p
        self._version = lib.zlibVersion()
        ptr = ctypes.POINTER(_ZStream)
        lib.deflateInit_.argtypes = [ptr, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.deflateInit_.restype = ctypes.c_int
        lib.deflate.argtypes = [ptr, ctypes.c_int]
        lib.deflate.restype = ctypes.c_int
        lib.deflateReset.argtypes = [ptr]
        lib.deflateReset.restype = ctypes.c_int
        lib.deflateEnd.argtypes = [ptr]
        lib.deflateBound.argtypes = [ptr, ctypes.c_ulong]
        lib.deflateBound.restype = ctypes.c_ulong
        self._lib = lib
        self._local = threading.local()

    def _stream(self, page_size: int, count: int) -> tuple[Any, Any, int, int]:
        st = self._local
        if getattr(st, "stream", None) is None:
            st.stream = _Deflate(self._lib, self._version)
            st.ptr = st.stream.ptr
            st.bound = int(self._lib.deflateBound(st.ptr, page_size))
            st.size = 0
        need = count * max(st.bound, page_size)
        if st.size < need:
            st.out = ctypes.create_string_buffer(need)
            st.size = need
        return st.stream.stream, st.ptr, st.bound, ctypes.addressof(st.out)

    def encode(
        self, src: int, count: int, page_size: int, keep: Iterable[int], flag: int,
        out: int | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], bytes | int]:  # fmt: skip
        """As :meth:`_Lzo.encode`."""
        stream, ptr, bound, out_addr = self._stream(page_size, count)
        if out is not None:
            out_addr = out
        deflate, reset, memmove = self._lib.deflate, self._lib.deflateReset, ctypes.memmove
        sizes = [0] * count
        pos = 0
        for i in keep:
            page = src + i * page_size
            stream.next_in = page
            stream.avail_in = page_size
            stream.next_out = out_addr + pos
            stream.avail_out = bound
            rc = deflate(ptr, _Z_FINISH)
            size = bound - stream.avail_out
            reset(ptr)
            if rc != _Z_STREAM_END:
                raise RuntimeError(f"deflate failed ({rc})")  # cannot happen with deflateBound
            if size >= page_size:
                memmove(out_addr + pos, page, page_size)
                size = page_size
            sizes[i] = size
            pos += size
        return (*_sizes_flags(sizes, page_size, flag), _payload(out, out_addr, pos))


_LIBS: dict[str, Any] = {}
_LIBS_LOCK = threading.Lock()


def _native(codec: str) -> _Lzo | _Zlib | None:
    """The ctypes fast path of ``codec`` ("lzo", "zlib"), or None when its library is missing."""
    with _LIBS_LOCK:
        if codec not in _LIBS:
            try:
                if codec == "lzo":
                    _LIBS[codec] = _Lzo(ctypes.CDLL("liblzo2.so.2"))
                else:
                    _LIBS[codec] = _Zlib(ctypes.CDLL("libz.so.1"))
            except (OSError, AttributeError):
                _LIBS[codec] = None
        native: _Lzo | _Zlib | None = _LIBS[codec]
        return native


def _zlib_matches() -> bool:
    """Whether libz.so.1 is the library Python's zlib module runs (same bytes guaranteed)."""
    import zlib

    native = _native("zlib")
    return isinstance(native, _Zlib) and native._version.decode() == zlib.ZLIB_RUNTIME_VERSION


class BatchEncoder:
    """Encodes batches of pages with one codec; safe to call from several threads."""

    def __init__(self, codec: Codec, page_size: int, exclude_zero: bool) -> None:
        self.codec = codec
        self.page_size = page_size
        self.exclude_zero = exclude_zero
        self._native: _Lzo | _Zlib | None = None
        if codec.name == "lzo" and getattr(codec, "backend_name", "") == "liblzo2":
            self._native = _native("lzo")
        elif codec.name == "zlib" and _zlib_matches():
            self._native = _native("zlib")

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
            sizes_a, flags_a, blob = self._native.encode(src, count, ps, keep, flag, addr)
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
