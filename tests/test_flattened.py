"""makedumpfile's flattened format: FlatSink, FlatSource, reassemble_flat, makedumpfile -R."""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kdumper.dump.diskdump import KdumpDump, write_kdump
from kdumper.dump.flattened import (
    FLAT_HEADER_SIZE,
    RECORD_LIMIT,
    FlatSink,
    FlatSource,
    flat_header,
    is_flattened,
    reassemble_flat,
)
from kdumper.dump.io import BytesSource, FileSink, FileSource
from kdumper.errors import (
    DumpFormatError,
    DumpIOError,
    KdumperError,
    NoSpaceError,
    PageIncompleteError,
    TruncatedDumpError,
)
from tests.kdump_memdump import make_dump

REC = struct.Struct(">qq")
END = REC.pack(-1, -1)


def stream(records: list[tuple[int, bytes]], end: bool = True) -> bytes:
    out = flat_header() + b"".join(REC.pack(off, len(d)) + d for off, d in records)
    return out + (END if end else b"")


def apply(records: list[tuple[int, bytes]]) -> bytes:
    """The reassembled file, by the definition: records written in order (later wins)."""
    out = bytearray()
    for off, data in records:
        if off + len(data) > len(out):
            out.extend(bytes(off + len(data) - len(out)))
        out[off : off + len(data)] = data
    return bytes(out)


def records_of(raw: bytes) -> list[tuple[int, int]]:
    pos, out = FLAT_HEADER_SIZE, []
    while True:
        off, size = REC.unpack_from(raw, pos)
        out.append((off, size))
        if off == -1:
            return out
        pos += 16 + size


def flat_source(raw: bytes) -> FlatSource:
    return FlatSource(BytesSource(raw, path="test.flat"))


def test_header_layout() -> None:
    head = flat_header()
    assert len(head) == 4096 and head[:16] == b"makedumpfile\0\0\0\0"
    assert struct.unpack_from(">qq", head, 16) == (1, 1) and head[32:] == bytes(4064)
    assert is_flattened(head) and not is_flattened(b"KDUMP   " + bytes(100))


def test_sink_coalesces_adjacent_writes() -> None:
    buf = io.BytesIO()
    sink = FlatSink(buf, name="x")
    assert not sink.seekable
    sink.write_at(0, b"a" * 100)
    sink.write_at(100, memoryview(b"b" * 50))
    sink.write_at(150, b"")
    sink.write_at(4096, b"c" * 10)  # not adjacent: a new record
    sink.write_at(0, b"Z")  # rewriting: a later record
    big = bytes(range(256)) * (RECORD_LIMIT // 256 * 2 + 3)
    sink.write_at(10_000, big)
    sink.finish()
    raw = buf.getvalue()
    recs = records_of(raw)
    assert recs[:3] == [(0, 150), (4096, 10), (0, 1)]
    assert [s for _, s in recs[3:-1]] == [RECORD_LIMIT, RECORD_LIMIT, len(big) - 2 * RECORD_LIMIT]
    assert recs[-1] == (-1, -1) and sink.bytes_written == len(raw)
    src = flat_source(raw)
    assert src.complete and src.pread(0, 151) == b"Z" + b"a" * 99 + b"b" * 50 + b"\0"
    assert src.pread(10_000, len(big)) == big and src.size == 10_000 + len(big)


def test_abort_leaves_no_end_marker() -> None:
    buf = io.BytesIO()
    sink = FlatSink(buf)
    sink.write_at(0, b"x" * 10)
    sink.abort()
    raw = buf.getvalue()
    assert raw.endswith(b"x" * 10) and not raw.endswith(END)
    src = flat_source(raw)
    assert not src.complete and "end marker" in (src.problem or "")
    assert src.pread(0, 10) == b"x" * 10
    with pytest.raises(DumpIOError):
        sink.write_at(10, b"y")


@pytest.mark.parametrize("seed", range(6))
def test_overlapping_records_later_wins(seed: int) -> None:
    rng = random.Random(seed)
    recs = []
    for i in range(rng.randint(1, 60)):
        off = rng.choice([0, rng.randrange(0, 5000), rng.randrange(0, 100) * 64])
        recs.append((off, bytes([i % 251 + 1]) * rng.randint(1, 700)))
    want = apply(recs)
    src = flat_source(stream(recs))
    assert src.complete and src.size == len(want) and src.records == len(recs)
    assert src.pread(0, len(want)) == want
    for _ in range(200):
        a = rng.randrange(0, len(want))
        n = rng.randint(0, len(want) - a)
        assert src.pread(a, n) == want[a : a + n]
    with pytest.raises(TruncatedDumpError):
        src.pread(len(want) - 1, 2)


def test_holes_read_as_zeros() -> None:
    src = flat_source(stream([(8192, b"B" * 10), (100, b"A" * 5)]))
    assert src.size == 8202
    assert src.pread(0, 8202) == bytes(100) + b"A" * 5 + bytes(8087) + b"B" * 10


def test_an_absurd_elf_header_in_a_sparse_stream_is_an_error_not_a_huge_read() -> None:
    """A flattened stream's file can be mostly holes: an ELF header there that claims a
    4 GiB program header table (65535 entries of 65535 bytes, all of it "inside" the file) is
    refused without reading it (a fuzzer's input once took 8 GiB of memory here)."""
    from kdumper.dump.open import open_source

    ehdr = bytearray(64)
    ehdr[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 4, 62, 1, 0, 64, 0, 0, 64, 0xFFFF, 0xFFFE, 0, 0, 0)
    raw = stream([(0, bytes(ehdr)), (1 << 40, b"x")])  # a logical file of 1 TiB
    with pytest.raises(DumpFormatError, match=r"program header table .* is absurd"):
        open_source(BytesSource(raw, path="test.flat"))


def test_cut_stream_is_readable_and_flagged() -> None:
    raw = stream([(0, b"a" * 100), (100, b"b" * 100)])
    for cut, last in ((len(raw) - 16, 200), (len(raw) - 16 - 40, 160), (len(raw) - 16 - 108, 100)):
        src = flat_source(raw[:cut])
        assert not src.complete and src.problem and src.size == last
        assert src.pread(0, last) == (b"a" * 100 + b"b" * 100)[:last]


def test_data_after_end_marker_is_noted() -> None:
    src = flat_source(stream([(0, b"a")]) + b"junk")
    assert src.complete and "follow the end marker" in (src.problem or "")


@pytest.mark.parametrize(
    ("raw", "error", "text"),
    [
        (
            b"makedumpfile\0\0\0\0" + struct.pack(">qq", 2, 1) + bytes(4064),
            DumpFormatError,
            "type 2",
        ),
        (b"makedumpfilX" + bytes(4084), DumpFormatError, "signature"),
        (flat_header()[:100], TruncatedDumpError, "header is truncated"),
        (flat_header()[:20], TruncatedDumpError, "header is truncated"),
        (flat_header() + REC.pack(-5, 10) + bytes(10) + END, DumpFormatError, "offset -5"),
        (flat_header() + REC.pack(0, 0) + END, DumpFormatError, "size 0"),
        (flat_header() + REC.pack(0, -3) + END, DumpFormatError, "size -3"),
        (flat_header() + REC.pack(1 << 62, 10) + bytes(10) + END, DumpFormatError, "corrupt"),
    ],
    ids=[
        "type",
        "signature",
        "header-cut",
        "header-cut-early",
        "neg-offset",
        "size-0",
        "size-neg",
        "offset-absurd",
    ],
)
def test_bad_streams(raw: bytes, error: type[Exception], text: str, tmp_path: Path) -> None:
    with pytest.raises(error, match=text):
        flat_source(raw)
    src = tmp_path / "bad.flat"
    src.write_bytes(raw)
    with pytest.raises(error, match=text):
        reassemble_flat(str(src), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# -- reassembly -------------------------------------------------------------------------------


RECS = [(0, b"head" * 100), (65536, b"x" * 5000), (400, b"y" * 3000), (70000, b"z" * 10)]


def test_reassemble_from_path_and_stream(tmp_path: Path) -> None:
    flat = tmp_path / "in.flat"
    flat.write_bytes(stream(RECS))
    out = tmp_path / "out"
    reassemble_flat(str(flat), str(out))
    assert out.read_bytes() == apply(RECS) and oct(out.stat().st_mode & 0o777) == "0o600"
    out2 = tmp_path / "out2"
    with open(flat, "rb") as f:
        reassemble_flat(f, str(out2))
    assert out2.read_bytes() == apply(RECS)
    with pytest.raises(DumpIOError, match="already exists"):
        reassemble_flat(str(flat), str(out))
    reassemble_flat(str(flat), str(out), overwrite=True)


def test_reassemble_from_a_pipe_with_short_reads(tmp_path: Path) -> None:
    data = stream([(i * 7000, bytes([i]) * 6999) for i in range(40)])
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb", buffering=0) as f:
            for i in range(0, len(data), 777):
                f.write(data[i : i + 777])

    t = threading.Thread(target=feed)
    t.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        reassemble_flat(f, str(tmp_path / "out"))
    t.join()
    assert (tmp_path / "out").read_bytes() == apply(
        [(i * 7000, bytes([i]) * 6999) for i in range(40)]
    )


def test_reassemble_from_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = (
        "import sys; from kdumper.dump.flattened import reassemble_flat; "
        "reassemble_flat('-', sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], input=stream(RECS), check=True)
    assert out.read_bytes() == apply(RECS)


@pytest.mark.parametrize("cut", [4096 + 8, 4096 + 16 + 100, -8])
def test_reassemble_cut_stream_keeps_what_arrived(tmp_path: Path, cut: int) -> None:
    flat = tmp_path / "in.flat"
    flat.write_bytes(stream(RECS)[:cut])
    out = tmp_path / "out"
    with pytest.raises(TruncatedDumpError, match="incomplete"):
        reassemble_flat(str(flat), str(out))
    assert not out.exists() and (tmp_path / "out-incomplete").exists()


def test_reassemble_missing_input(tmp_path: Path) -> None:
    with pytest.raises(KdumperError, match="no such file"):
        reassemble_flat(str(tmp_path / "nope"), str(tmp_path / "out"))


class Broken(io.RawIOBase):
    def __init__(self, err: int, after: int) -> None:
        self.err, self.left = err, after

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        n = len(memoryview(b))  # type: ignore[arg-type]
        if self.left < n:
            raise OSError(self.err, os.strerror(self.err))
        self.left -= n
        return n


def test_sink_errors_map_to_kdumper_errors() -> None:
    with pytest.raises(NoSpaceError):
        sink = FlatSink(Broken(errno.ENOSPC, 5000))  # type: ignore[arg-type]
        sink.write_at(0, b"x" * RECORD_LIMIT)
    sink = FlatSink(Broken(errno.EPIPE, 5000))  # type: ignore[arg-type]
    with pytest.raises(DumpIOError, match="closed the pipe"):
        sink.write_at(0, b"x" * RECORD_LIMIT)


# -- kdump through the flattened format -------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(flattened, seekable) kdump files of the same dump."""
    d = tmp_path_factory.mktemp("flat")
    src = make_dump(6000, seed=4)
    flat, seek = d / "dump.flat", d / "dump.kdump"
    with open(flat, "wb") as f:
        sink = FlatSink(f)
        res = write_kdump(sink, src, codec="lzo")
        sink.finish()
    assert res.format == "flattened-kdump" and res.path == str(flat)
    with FileSink(seek) as s:
        write_kdump(s, src, codec="lzo")
    return flat, seek


def test_flattened_kdump_reads_like_the_file(pair: tuple[Path, Path]) -> None:
    flat, seek = pair
    a = KdumpDump(FlatSource(FileSource(flat)))
    b = KdumpDump(FileSource(seek))
    assert a.facts().format == "flattened-kdump" and not a.facts().incomplete
    assert a.facts().extra["flattened_records"] > 1
    assert a.dumped == b.dumped and a.present == b.present
    for pfn in a.dumped.pfns().tolist():
        assert a.read_pfn(pfn) == b.read_pfn(pfn)
    assert a.codec_counts() == b.codec_counts()


def test_reassembled_flattened_kdump_is_the_seekable_file(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    flat, seek = pair
    reassemble_flat(str(flat), str(tmp_path / "r"))
    assert (tmp_path / "r").read_bytes() == seek.read_bytes()


@pytest.mark.oracle
def test_makedumpfile_R_is_byte_identical(pair: tuple[Path, Path], tmp_path: Path) -> None:
    exe = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
    if not os.path.exists(exe):
        pytest.skip("makedumpfile is not installed")
    flat, seek = pair
    out = tmp_path / "mdf"
    with open(flat, "rb") as f:
        res = subprocess.run([exe, "-R", str(out)], stdin=f, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == seek.read_bytes()


def test_cut_flattened_kdump_is_incomplete(pair: tuple[Path, Path]) -> None:
    flat, seek = pair
    raw = flat.read_bytes()
    whole = KdumpDump(FileSource(seek))
    for cut in (len(raw) - 16, len(raw) // 2, len(raw) * 3 // 4 + 5):
        d = KdumpDump(flat_source(raw[:cut]))
        f = d.facts()
        assert f.incomplete and f.format == "flattened-kdump" and f.extra["warnings"]
        lost = 0
        for pfn in d.dumped.pfns().tolist():
            try:
                assert d.read_pfn(pfn) == whole.read_pfn(pfn)
            except PageIncompleteError:
                lost += 1
        assert (lost == 0) == (cut == len(raw) - 16)


def test_flat_sink_no_space_keeps_a_readable_prefix() -> None:
    src = make_dump(3000, seed=1)

    class Limited(io.BytesIO):
        def write(self, b: object) -> int:  # type: ignore[override]
            if self.tell() > 200_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)  # type: ignore[arg-type]

    buf = Limited()
    sink = FlatSink(buf)
    with pytest.raises(NoSpaceError):
        write_kdump(sink, src, codec="none")
    sink.abort()
    d = KdumpDump(flat_source(buf.getvalue()))
    assert d.facts().incomplete
    good = 0
    for pfn in d.dumped.pfns().tolist():
        try:
            assert d.read_pfn(pfn) == src.pages[pfn]
            good += 1
        except PageIncompleteError:
            pass
    assert good > 0
