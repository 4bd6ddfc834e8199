"""Per-page codecs: round trips, makedumpfile-compatible bytes, corrupt input, threads."""

from __future__ import annotations

import ctypes
import random
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from kdumper import codecs
from kdumper.codecs import (
    CODECS,
    CodecError,
    LzoCodec,
    SnappyCodec,
    ZstdCodec,
    codec_for_flag,
    codec_for_status,
    get_codec,
)
from kdumper.errors import DumpFormatError, MissingDependencyError, UsageError

PAGE = 4096
_rng = random.Random(5)
PAGES = {
    "zero": bytes(PAGE),
    "random": _rng.randbytes(PAGE),
    "text": (b"The quick brown fox jumps over the lazy dog. " * 100)[:PAGE],
    "sparse": bytes(2000) + _rng.randbytes(96) + bytes(2000),
    "pattern": bytes(range(256)) * 16,
}


def liblzo2() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("liblzo2.so.2")
    except OSError:
        return None


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("kind", sorted(PAGES))
def test_roundtrip(name: str, kind: str) -> None:
    codec = get_codec(name)
    page = PAGES[kind]
    out = codec.compress(page)
    assert isinstance(out, bytes)
    assert codec.decompress(out, PAGE) == page
    if kind in ("zero", "text", "pattern") and name != "none":
        assert len(out) < PAGE // 4


def test_flags_and_lookup() -> None:
    assert [get_codec(n).flag for n in CODECS] == [0, 0x1, 0x2, 0x4, 0x20]
    for n in CODECS:
        assert codec_for_flag(get_codec(n).flag).name == n
        assert get_codec(n).name == n
    with pytest.raises(DumpFormatError, match="0x40"):
        codec_for_flag(0x40)
    with pytest.raises(UsageError, match="unknown codec 'lz4'"):
        get_codec("lz4")
    assert codec_for_status(0x1 | 0x8) == "zlib"
    assert codec_for_status(0x20 | 0x10) == "zstd"
    assert codec_for_status(0x8) == "none"


def test_zlib_is_makedumpfile_level_1() -> None:
    page = PAGES["text"]
    assert get_codec("zlib").compress(page) == zlib.compress(page, 1)
    assert zlib.decompress(get_codec("zlib").compress(page)) == page


def test_zstd_frame_has_content_size() -> None:
    zstandard = pytest.importorskip("zstandard")
    out = get_codec("zstd").compress(PAGES["text"])
    assert zstandard.frame_content_size(out) == PAGE
    params = zstandard.get_frame_parameters(out)
    assert params.content_size == PAGE and not params.has_checksum


def test_zstd_accepts_frames_without_content_size() -> None:
    zstandard = pytest.importorskip("zstandard")
    frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(PAGES["text"])
    assert get_codec("zstd").decompress(frame, PAGE) == PAGES["text"]


def test_snappy_is_raw_block() -> None:
    cramjam = pytest.importorskip("cramjam")
    out = get_codec("snappy").compress(PAGES["text"])
    assert out[:2] == b"\x80\x20"  # varint 4096: a raw block, not the framed format
    assert bytes(cramjam.snappy.decompress_raw(out)) == PAGES["text"]


@pytest.mark.skipif(liblzo2() is None, reason="liblzo2 is not installed")
@pytest.mark.parametrize("kind", sorted(PAGES))
def test_lzallright_output_is_lzo1x_for_liblzo2(kind: str) -> None:
    """lzallright's blocks decompress with liblzo2's lzo1x_decompress_safe (makedumpfile's)."""
    pytest.importorskip("lzallright")
    lib = liblzo2()
    assert lib is not None
    fn = lib.lzo1x_decompress_safe
    fn.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_void_p,
    ]
    data = LzoCodec("lzallright").compress(PAGES[kind])
    out = ctypes.create_string_buffer(PAGE)
    n = ctypes.c_size_t(PAGE)
    assert fn(data, len(data), out, ctypes.byref(n), None) == 0
    assert n.value == PAGE and out.raw == PAGES[kind]


@pytest.mark.skipif(liblzo2() is None, reason="liblzo2 is not installed")
def test_lzo_backends_read_each_other() -> None:
    pytest.importorskip("lzallright")
    fast, pure = LzoCodec("liblzo2"), LzoCodec("lzallright")
    assert fast.backend_name == "liblzo2" and pure.backend_name == "lzallright"
    for page in PAGES.values():
        assert pure.decompress(fast.compress(page), PAGE) == page
        assert fast.decompress(pure.compress(page), PAGE) == page


@pytest.mark.skipif(liblzo2() is None, reason="liblzo2 is not installed")
def test_native_lzo_is_the_codecs_lzo() -> None:
    """The collector's ctypes path (pointer objects made once per source buffer) writes the
    codec's bytes, page by page, for any buffer, whichever pages it is asked for."""
    from kdumper.collect.native import native

    lib = native("lzo")
    assert lib is not None
    codec = LzoCodec("liblzo2")
    kinds = sorted(PAGES)
    for rotate in range(3):  # new buffers at new addresses: the pointers follow them
        order = kinds[rotate:] + kinds[:rotate]
        buf = ctypes.create_string_buffer(b"".join(PAGES[k] for k in order))
        for keep in (list(range(len(order))), [1, 3], []):
            sizes, payload = lib.encode(ctypes.addressof(buf), len(order), PAGE, keep)
            assert isinstance(payload, bytes)
            want = [
                codec.compress(PAGES[order[i]]) if i in keep else b"" for i in range(len(order))
            ]
            want = [w if len(w) < PAGE else PAGES[order[i]] for i, w in enumerate(want)]
            assert sizes == [len(w) for w in want]  # random pages are stored raw
            assert payload == b"".join(want)
            out = ctypes.create_string_buffer(len(order) * 2 * PAGE)
            got = lib.encode(ctypes.addressof(buf), len(order), PAGE, keep, ctypes.addressof(out))
            assert got == (sizes, len(payload)) and out.raw[: len(payload)] == payload
    assert lib.encode(0, 0, PAGE, []) == ([], b"")


def _corruptions(data: bytes) -> list[tuple[str, bytes]]:
    flipped = bytearray(data)
    for i in range(2, len(flipped), 3):
        flipped[i] ^= 0x5A
    return [
        ("empty", b""),
        ("one-byte", data[:1]),
        ("half", data[: len(data) // 2]),
        ("flipped", bytes(flipped)),
        ("garbage", bytes(range(256)) * 4),
    ]


@pytest.mark.parametrize("name", ["zlib", "lzo", "snappy", "zstd"])
def test_corrupt_data_raises_codec_error(name: str) -> None:
    """Damage either raises CodecError or (for codecs without checksums) yields other bytes;
    never a raw library exception, never the wrong length."""
    codec = get_codec(name)
    data = codec.compress(PAGES["text"])
    for what, bad in _corruptions(data):
        try:
            out = codec.decompress(bad, PAGE)
        except CodecError as e:
            assert name in str(e), what
            continue
        assert len(out) == PAGE, what
    with pytest.raises(CodecError):
        codec.decompress(data[: len(data) // 2], PAGE)


@pytest.mark.parametrize("name", CODECS)
def test_wrong_size_is_an_error(name: str) -> None:
    codec = get_codec(name)
    with pytest.raises(CodecError, match=r"2048|more than"):
        codec.decompress(codec.compress(PAGES["text"][:2048]), PAGE)
    with pytest.raises(CodecError):
        codec.decompress(codec.compress(PAGES["text"]), 2048)


def test_snappy_huge_claimed_size_does_not_allocate() -> None:
    with pytest.raises(CodecError, match="claims"):
        get_codec("snappy").decompress(b"\xff\xff\xff\xff\x0f" + bytes(10), PAGE)


def test_zstd_huge_claimed_size() -> None:
    zstandard = pytest.importorskip("zstandard")
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(1 << 20))
    with pytest.raises(CodecError, match="claims 1048576"):
        get_codec("zstd").decompress(frame, PAGE)


def test_zlib_bomb_is_bounded() -> None:
    with pytest.raises(CodecError, match="more than 4096"):
        get_codec("zlib").decompress(zlib.compress(bytes(1 << 20), 9), PAGE)


@pytest.mark.parametrize("name", CODECS)
def test_threads_share_a_codec(name: str) -> None:
    codec = get_codec(name)
    rng = random.Random(9)
    pages = [rng.randbytes(64) * 64 for _ in range(64)] + list(PAGES.values())
    want = [codec.compress(p) for p in pages]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(codec.compress, pages))
            assert got == want
            back = list(pool.map(lambda d: codec.decompress(d, PAGE), got))
            assert back == pages


def test_missing_library_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cramjam", None)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "lzallright", None)
    with pytest.raises(MissingDependencyError, match="cramjam") as e:
        SnappyCodec().compress(PAGES["text"])
    assert "pip install cramjam" in str(e.value)
    with pytest.raises(MissingDependencyError, match="zstandard"):
        ZstdCodec().available()
    with pytest.raises(MissingDependencyError, match="lzallright"):
        LzoCodec("lzallright").available()


def test_codecs_module_imports_no_codec_library() -> None:
    import subprocess

    code = (
        "import sys, kdumper.codecs as c; c.get_codec('zlib').compress(bytes(4096)); "
        "print(sorted(m for m in ('zstandard', 'cramjam', 'lzallright') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert codecs.CODECS == ("none", "zlib", "lzo", "snappy", "zstd")
