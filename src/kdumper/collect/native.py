"""The two codecs whose per-call cost matters, called through ctypes with raw addresses.

* LZO: liblzo2's LZO1X-1 (:data:`kdumper.codecs.LZO_COMPRESS`; the call overhead of the codec
  object doubled the time of this fast codec);
* zlib: one ``deflate`` stream per thread, ``deflateReset`` between pages, as makedumpfile does
  since aa5ee50: ``zlib.compress`` allocates and frees the 256 KiB deflate state for every page.
  Measured on a 6.1 vmcore: 63 -> 41 us per page, byte-identical output (same libz).

They write into the caller's buffer (a worker's shared-memory slot) or one output buffer per
thread, and need nothing but ctypes: the collector's early helper (:mod:`.early`) runs them
before numpy is imported. The bytes are those of :mod:`kdumper.codecs` (checked in
tests/test_pipeline.py).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..codecs import LZO_COMPRESS

if TYPE_CHECKING:
    from ..codecs import Codec


class _Lzo:
    """liblzo2's LZO1X-1 called with raw addresses (one output buffer per thread).

    The call is made without ``argtypes``, every argument an existing ctypes object: ctypes then
    converts nothing per call (with ``argtypes`` it made a new argument object for each of the
    five). The page pointers of a source buffer are made once (the collector reuses its read
    buffer), the destination pointer is one object whose value moves on. Measured: the call's
    own cost 0.31 -> 0.21 us, ~2.6 us a page in all.
    """

    WRKMEM = 1 << 17  # LZO1X_1_MEM_COMPRESS is 64 KiB on LP64 (as kdumper.codecs)

    def __init__(self, lib: ctypes.CDLL) -> None:
        fn = getattr(lib, LZO_COMPRESS)
        # a function pointer of its own (no argtypes), the library's attribute left as it is
        self._fn = type(fn)(ctypes.cast(fn, ctypes.c_void_p).value)
        self._fn.restype = ctypes.c_int
        self._local = threading.local()

    def _state(self, need: int, src: int, count: int, page_size: int) -> Any:
        """This thread's buffers and argument objects: an output buffer of ``need`` bytes (none
        when 0), the length cell, the work memory and the pointers to the ``count`` pages at
        ``src``."""
        st = self._local
        if getattr(st, "wrk", None) is None:
            st.wrk = ctypes.create_string_buffer(self.WRKMEM)
            st.n = ctypes.c_size_t()
            st.n_ref, st.wrk_ref = ctypes.byref(st.n), ctypes.byref(st.wrk)
            st.dst = ctypes.c_void_p()
            st.size = 0
            st.src = st.page_size = -1
            st.pages = []
        if st.size < need:
            st.out = ctypes.create_string_buffer(need)
            st.size = need
        if st.src != src or st.page_size != page_size or len(st.pages) < count:
            st.pages = [ctypes.c_void_p(src + i * page_size) for i in range(count)]
            st.src, st.page_size, st.length = src, page_size, ctypes.c_size_t(page_size)
        return st

    def encode(
        self, src: int, count: int, page_size: int, keep: Iterable[int], out: int | None = None
    ) -> tuple[list[int], bytes | int]:  # fmt: skip
        """The stored size of each of the ``count`` pages at address ``src`` (0 for the pages
        not in ``keep``; a page that does not shrink is stored raw, ``page_size`` bytes), and their
        payloads back to back (only their length when they were written at address ``out``)."""
        need = 0 if out is not None else count * stored_bound(page_size)
        st = self._state(need, src, count, page_size)
        out_addr = out if out is not None else (ctypes.addressof(st.out) if need else 0)
        fn, memmove, n, dst, pages = self._fn, ctypes.memmove, st.n, st.dst, st.pages
        length, n_ref, wrk_ref = st.length, st.n_ref, st.wrk_ref
        sizes = [0] * count
        pos = 0
        # the per-page work is this loop: nothing in it that can be done once per batch.
        # LZO1X-1 only writes *dst_len, and always returns LZO_E_OK (lzo1x_c.ch).
        for i in keep:
            dst.value = out_addr + pos
            fn(pages[i], length, dst, n_ref, wrk_ref)
            size = n.value
            if size >= page_size:  # did not shrink: stored raw
                memmove(out_addr + pos, src + i * page_size, page_size)
                size = page_size
            sizes[i] = size
            pos += size
        return sizes, _payload(out, out_addr, pos)


def stored_bound(page_size: int) -> int:
    """Bytes the native compressors may write for one page before it is stored raw (LZO's
    worst case, makedumpfile ``calculate_len_buf_out``; deflateBound of a page is smaller)."""
    return page_size + page_size // 16 + 64 + 3


def _payload(out: int | None, addr: int, length: int) -> bytes | int:
    """The payloads as bytes, or only their length when they went to the caller's buffer."""
    return length if out is not None else ctypes.string_at(addr, length)


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
        self, src: int, count: int, page_size: int, keep: Iterable[int], out: int | None = None
    ) -> tuple[list[int], bytes | int]:  # fmt: skip
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
        return sizes, _payload(out, out_addr, pos)


NativeCodec = _Lzo | _Zlib
_LIBS: dict[str, NativeCodec | None] = {}
_LIBS_LOCK = threading.Lock()


def native(codec: str) -> NativeCodec | None:
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
        found: NativeCodec | None = _LIBS[codec]
        return found


def zlib_matches() -> bool:
    """Whether libz.so.1 is the library Python's zlib module runs (same bytes guaranteed)."""
    import zlib

    lib = native("zlib")
    return isinstance(lib, _Zlib) and lib._version.decode() == zlib.ZLIB_RUNTIME_VERSION


def native_for(codec: Codec) -> NativeCodec | None:
    """The ctypes path that writes the same bytes as ``codec``, or None (zstd, snappy, the
    lzallright LZO backend, a libz other than the one Python's zlib runs)."""
    if codec.name == "lzo" and getattr(codec, "backend_name", "") == "liblzo2":
        return native("lzo")
    if codec.name == "zlib" and zlib_matches():
        return native("zlib")
    return None
