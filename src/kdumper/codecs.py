"""Per-page codecs of the kdump-compressed format, byte-compatible with makedumpfile.

Each page is compressed on its own (makedumpfile ``write_kdump_pages_cyclic``):

=======  ======  ==========================================================================
name     flag    bytes
=======  ======  ==========================================================================
none     0       the page itself
zlib     0x1     zlib stream (RFC 1950 wrapper), level 1 = ``compress2(..., Z_BEST_SPEED)``
lzo      0x2     raw LZO1X block, no header (``lzo1x_1_11_compress``, see below)
snappy   0x4     raw snappy block, not framed (``snappy_compress``)
zstd     0x20    one zstd frame with the content size, level 1 (``ZSTD_compressCCtx(.., 1)``)
=======  ======  ==========================================================================

Codec objects are safe to share between threads: the stateful compressors (zstd contexts, the
LZO work memory) live in ``threading.local`` storage. The libraries are imported on first use, so
a missing one only matters to the codec that needs it (:class:`MissingDependencyError` names the
pip package).

LZO: liblzo2 (the library makedumpfile links) is used through ctypes when the system has it,
about 10x faster than the pure-Rust ``lzallright`` (measured: 680 vs 68 MB/s on x86_64 code
pages); otherwise ``lzallright`` compresses. Both write LZO1X, the one format every LZO reader
decompresses (``lzo1x_decompress_safe``: makedumpfile, crash, libkdumpfile; checked in
tests/test_codecs.py and the oracle tests). makedumpfile ``-l`` calls ``lzo1x_1_compress``, whose
16 Ki-entry dictionary is cleared (32 KiB) for every page; kdumper calls the same library's
``lzo1x_1_11_compress``, the LZO1X-1 compressor with a 2 Ki-entry dictionary, which is plenty
for 4 KiB of input: 2.80 -> 2.60 us a page on the kept pages of a 4 GiB guest's vmcore (-d 31),
output 0.36 % larger; the bytes differ from makedumpfile's, the pages do not.
"""

from __future__ import annotations

import ctypes
import threading
import zlib
from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any

from .errors import DumpFormatError, MissingDependencyError, UsageError

CODECS = ("none", "zlib", "lzo", "snappy", "zstd")

FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20
FLAGS_MASK = FLAG_ZLIB | FLAG_LZO | FLAG_SNAPPY | FLAG_ZSTD

Buffer = bytes | bytearray | memoryview


class CodecError(DumpFormatError):
    """Page data that does not decompress to exactly one page (the caller adds the pfn)."""


class Codec(ABC):
    """One page codec: ``compress`` a page, ``decompress`` stored bytes back to ``size`` bytes."""

    name: str
    flag: int

    @abstractmethod
    def compress(self, page: Buffer) -> bytes:
        """The stored form of ``page`` (may be longer than the page: then store it raw)."""

    @abstractmethod
    def decompress(self, data: Buffer, size: int) -> bytes:
        """Exactly ``size`` bytes from ``data``; :class:`CodecError` otherwise."""

    def available(self) -> None:  # noqa: B027 - only codecs with a library override it
        """Import the library now; :class:`MissingDependencyError` when it is not installed."""

    def _wrong_size(self, got: int, size: int) -> CodecError:
        return CodecError(f"{self.name} data decompressed to {got} bytes instead of {size}")

    def __repr__(self) -> str:
        return f"<codec {self.name}>"


def _import(module: str, package: str, codec: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"the {codec} codec", package, f"pip install {package}"
        ) from None


class NoneCodec(Codec):
    """Pages stored as they are (makedumpfile without -c/-l/-p/-z)."""

    name = "none"
    flag = 0

    def compress(self, page: Buffer) -> bytes:
        return bytes(page)

    def decompress(self, data: Buffer, size: int) -> bytes:
        if len(data) != size:
            raise self._wrong_size(len(data), size)
        return bytes(data)


class ZlibCodec(Codec):
    """zlib level 1 with the zlib wrapper (makedumpfile -c)."""

    name = "zlib"
    flag = FLAG_ZLIB

    def compress(self, page: Buffer) -> bytes:
        return zlib.compress(page, 1)

    def decompress(self, data: Buffer, size: int) -> bytes:
        d = zlib.decompressobj()
        try:
            out = d.decompress(data, size)
        except zlib.error as e:
            raise CodecError(f"zlib data is corrupt ({e})") from None
        if not d.eof:
            if d.unconsumed_tail:
                raise CodecError(f"zlib data decompresses to more than {size} bytes")
            raise CodecError(f"zlib data is truncated ({len(out)} of {size} bytes)")
        if len(out) != size:
            raise self._wrong_size(len(out), size)
        return out


#: liblzo2's LZO1X-1 compressor that kdumper calls (module doc); its work memory is at most
#: LZO1X_1_MEM_COMPRESS, 16384 dict entries (lzo1x.h)
LZO_COMPRESS = "lzo1x_1_11_compress"


class _Liblzo2:
    """liblzo2 through ctypes (:data:`LZO_COMPRESS` / ``lzo1x_decompress_safe``)."""

    WRKMEM = 1 << 17  # LZO1X_1_MEM_COMPRESS is 16384 dict entries (64 KiB on LP64); be generous

    def __init__(self, lib: ctypes.CDLL) -> None:
        sig: list[Any] = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_void_p,
        ]
        self._compress = getattr(lib, LZO_COMPRESS)
        self._compress.argtypes = sig
        self._compress.restype = ctypes.c_int
        self._decompress = lib.lzo1x_decompress_safe
        self._decompress.argtypes = sig
        self._decompress.restype = ctypes.c_int
        self._local = threading.local()

    def _state(self, out_size: int) -> tuple[Any, Any, ctypes.c_size_t]:
        st = self._local
        if getattr(st, "out_size", -1) < out_size:
            st.wrk = ctypes.create_string_buffer(self.WRKMEM)
            st.out = ctypes.create_string_buffer(out_size)
            st.out_size = out_size
            st.n = ctypes.c_size_t()
        return st.wrk, st.out, st.n

    def compress(self, page: bytes) -> bytes:
        # worst case of LZO1X: len + len/16 + 64 + 3 (makedumpfile calculate_len_buf_out)
        bound = len(page) + len(page) // 16 + 64 + 3
        wrk, out, n = self._state(bound)
        n.value = bound
        rc = self._compress(page, len(page), out, ctypes.byref(n), wrk)
        if rc != 0:  # LZO_E_OK; LZO1X-1 cannot fail on a valid buffer
            raise CodecError(f"{LZO_COMPRESS} failed with code {rc}")
        return ctypes.string_at(out, n.value)

    def decompress(self, data: bytes, size: int) -> tuple[int, bytes]:
        _, out, n = self._state(size)
        n.value = size
        rc = self._decompress(data, len(data), out, ctypes.byref(n), None)
        return rc, ctypes.string_at(out, n.value)


_LZO_ERRORS = {
    -4: "input overrun (the data is truncated)",
    -5: "output overrun (the data decompresses to more than one page)",
    -6: "lookbehind overrun (the data is corrupt)",
    -8: "input not consumed (trailing bytes)",
}


class LzoCodec(Codec):
    """Raw LZO1X-1 blocks (makedumpfile -l); ``backend`` is "auto", "liblzo2" or "lzallright"."""

    name = "lzo"
    flag = FLAG_LZO

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend
        self._lib: _Liblzo2 | None = None
        self._lzallright: Any = None
        self._lock = threading.Lock()
        self._ready = False

    def _load(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self.backend in ("auto", "liblzo2"):
                try:
                    self._lib = _Liblzo2(ctypes.CDLL("liblzo2.so.2"))
                except (OSError, AttributeError):
                    if self.backend == "liblzo2":
                        raise MissingDependencyError(
                            "the lzo codec (liblzo2 backend)", "liblzo2", "apt install liblzo2-2"
                        ) from None
            if self._lib is None:
                mod = _import("lzallright", "lzallright", "lzo")
                self._lzallright = mod
                self._comp = mod.LZOCompressor()  # thread-safe, releases the GIL (its docs)
            self._ready = True

    def available(self) -> None:
        self._load()

    @property
    def backend_name(self) -> str:
        """Which library does the work ("liblzo2" or "lzallright")."""
        self._load()
        return "liblzo2" if self._lib is not None else "lzallright"

    def compress(self, page: Buffer) -> bytes:
        self._load()
        if self._lib is not None:
            return self._lib.compress(page if isinstance(page, bytes) else bytes(page))
        return bytes(self._comp.compress(page))

    def decompress(self, data: Buffer, size: int) -> bytes:
        self._load()
        if self._lib is not None:
            rc, out = self._lib.decompress(data if isinstance(data, bytes) else bytes(data), size)
            if rc != 0:
                why = _LZO_ERRORS.get(rc, f"error code {rc}")
                raise CodecError(f"lzo data is corrupt: {why}")
        else:
            mod = self._lzallright
            try:
                out = bytes(mod.LZOCompressor.decompress(data, size))
            except mod.LZOError as e:
                raise CodecError(f"lzo data is corrupt ({e.args[0] if e.args else e})") from None
        if len(out) != size:
            raise self._wrong_size(len(out), size)
        return out


def _varint(data: Buffer) -> int:
    """The snappy preamble: the uncompressed length as a little-endian base-128 varint."""
    value = shift = 0
    for i in range(min(len(data), 5)):
        b = data[i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
    return -1


class SnappyCodec(Codec):
    """Raw snappy blocks (makedumpfile -p), via cramjam."""

    name = "snappy"
    flag = FLAG_SNAPPY

    def __init__(self) -> None:
        self._mod: Any = None

    def _load(self) -> Any:
        if self._mod is None:
            self._mod = _import("cramjam", "cramjam", "snappy")
        return self._mod

    def available(self) -> None:
        self._load()

    def compress(self, page: Buffer) -> bytes:
        return bytes(self._load().snappy.compress_raw(page))

    def decompress(self, data: Buffer, size: int) -> bytes:
        mod = self._load()
        claimed = _varint(data)
        if claimed != size:  # checked first: a corrupt preamble must not make cramjam allocate GBs
            raise CodecError(f"snappy data claims {claimed} bytes instead of {size}")
        try:
            out = bytes(mod.snappy.decompress_raw(data))
        except Exception as e:  # cramjam.DecompressionError (and anything the binding raises)
            raise CodecError(f"snappy data is corrupt ({e})") from None
        if len(out) != size:
            raise self._wrong_size(len(out), size)
        return out


class ZstdCodec(Codec):
    """zstd level 1, one frame with the content size (makedumpfile -z)."""

    name = "zstd"
    flag = FLAG_ZSTD

    def __init__(self) -> None:
        self._mod: Any = None
        self._local = threading.local()  # zstd contexts are not thread-safe

    def _load(self) -> Any:
        if self._mod is None:
            self._mod = _import("zstandard", "zstandard", "zstd")
        return self._mod

    def available(self) -> None:
        self._load()

    def compress(self, page: Buffer) -> bytes:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = self._load().ZstdCompressor(level=1, write_content_size=True)
        return bytes(cctx.compress(page))

    def decompress(self, data: Buffer, size: int) -> bytes:
        mod = self._load()
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = mod.ZstdDecompressor()
        try:
            claimed = mod.frame_content_size(data)
            if claimed not in (-1, size):
                raise CodecError(f"zstd frame claims {claimed} bytes instead of {size}")
            out = bytes(dctx.decompress(data, max_output_size=size))
        except mod.ZstdError as e:
            raise CodecError(f"zstd data is corrupt ({e})") from None
        if len(out) != size:
            raise self._wrong_size(len(out), size)
        return out


_CODECS: dict[str, Codec] = {
    "none": NoneCodec(),
    "zlib": ZlibCodec(),
    "lzo": LzoCodec(),
    "snappy": SnappyCodec(),
    "zstd": ZstdCodec(),
}
_BY_FLAG = {c.flag: c for c in _CODECS.values()}


def get_codec(name: str) -> Codec:
    """The codec called ``name`` (one of :data:`CODECS`); shared, thread-safe."""
    try:
        return _CODECS[name]
    except KeyError:
        raise UsageError(f"unknown codec {name!r} (choose from {', '.join(CODECS)})") from None


def codec_for_flag(flag: int) -> Codec:
    """The codec of a page_desc ``flags`` value (0 = stored raw)."""
    try:
        return _BY_FLAG[flag]
    except KeyError:
        raise DumpFormatError(f"unknown page compression flags {flag:#x}") from None


def codec_for_status(status: int) -> str:
    """The header-level codec name of a kdump ``status`` word ("none" when no flag is set)."""
    for flag in (FLAG_ZLIB, FLAG_LZO, FLAG_SNAPPY, FLAG_ZSTD):
        if status & flag:
            return _BY_FLAG[flag].name
    return "none"
