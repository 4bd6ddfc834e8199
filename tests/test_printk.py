"""The kernel log reader and ``kdumper dmesg`` on synthetic rings: lockless and legacy layouts.

Lockless rings are built by ``tests/synth.py`` (``build_printk_ring``: the kernel's own
eviction); legacy ``struct printk_log`` buffers (Linux 3.5-5.9) are built here and written into
the kernel image of a synthetic vmcore, with VMCOREINFO saying what a 5.x kernel says. Damaged
rings must give what can be recovered, a clear problem per damage, exit code 10, and never hang
(every run has a timeout). Where makedumpfile 1.7.2 / 1.7.6 is installed, its ``--dump-dmesg``
output is the reference, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import kdumper
from kdumper.errors import ExitCode, KdumperError, UnsupportedError
from kdumper.kernel.printk import KernelLog, format_makedumpfile, read_log
from tests import oracles
from tests.synth import PrintkRecord, SynthInfo, make_vmcore

TIMEOUT = 60  # seconds: a reader that loops on a damaged ring fails instead of hanging
MIB = 32
CPU = 0x8000_0000


# ------------------------------------------------------------------------------------- helpers


@contextmanager
def deadline(seconds: int = TIMEOUT) -> Iterator[None]:
    """Fail the test when the block runs longer than ``seconds``."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: the reader hangs")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def read(path: str | os.PathLike[str]) -> KernelLog:
    with deadline(), kdumper.open(os.fspath(path)) as dump:
        return read_log(dump)


def cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    """``kdumper ARGS`` in a subprocess (with a timeout: a hang is a failure)."""
    return subprocess.run(
        [sys.executable, "-m", "kdumper", *map(os.fspath, args)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "surrogateescape").splitlines()


def image_pa(info: SynthInfo, va: int) -> int:
    """Physical address of a kernel-image virtual address of the synthetic kernel."""
    return info.kernel_phys + va - info.symbols["_text"]


def patch(info: SynthInfo, va: int, data: bytes) -> None:
    """Overwrite kernel memory at ``va`` in the vmcore file."""
    with open(info.path, "r+b") as f:
        f.seek(info.file_offset(image_pa(info, va)))
        f.write(data)


def peek(info: SynthInfo, va: int, size: int) -> bytes:
    return info.read_phys(image_pa(info, va), size)


def ring_records(n: int, *, start: int = 0, width: int = 0) -> list[PrintkRecord]:
    """``n`` records of varying length, callers alternating between tasks and CPUs."""
    out = []
    for i in range(start, start + n):
        text = f"record {i} " + "x" * ((i * 7 + width) % 53)
        caller = (CPU | (i % 3)) if i % 4 == 0 else 100 + i
        out.append(PrintkRecord(text, ts_nsec=1_000_000 * i + 123, level=i % 8, caller_id=caller))
    return out


# prb / desc ring fields of the synthetic 6.1 layout (see tests/synth.py _vmcoreinfo)
PRB_DESC = 24  # SIZE(prb_desc)
OFF_HEAD_ID, OFF_TAIL_ID = 24, 32  # OFFSET(prb_desc_ring.head_id / tail_id)


def prb_addr(info: SynthInfo) -> int:
    return info.symbols["printk_rb_static"]


def desc_array(info: SynthInfo) -> int:
    return struct.unpack("<Q", peek(info, prb_addr(info) + 8, 8))[0]


def text_array(info: SynthInfo) -> int:
    return struct.unpack("<Q", peek(info, prb_addr(info) + 48 + 8, 8))[0]


def ring_ids(info: SynthInfo) -> tuple[int, int, int]:
    """(count_bits, head_id, tail_id) of the synthetic ring."""
    count_bits = struct.unpack("<I", peek(info, prb_addr(info), 4))[0]
    head, tail = struct.unpack("<QQ", peek(info, prb_addr(info) + OFF_HEAD_ID, 16))
    return count_bits, head, tail


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("printk")


Maker = Callable[..., SynthInfo]


@pytest.fixture
def make(tmp_path: Path) -> Maker:
    """``make(name, **make_vmcore_kwargs)``: a small synthetic vmcore in the test's directory."""

    def build(name: str = "vmcore", **kw: Any) -> SynthInfo:
        kw.setdefault("mem_mib", MIB)
        kw.setdefault("seed", 3)
        return make_vmcore(tmp_path / name, **kw)

    return build


# ------------------------------------------------------------------------ lockless: intact rings


def test_default_boot_log(make: Maker) -> None:
    info = make()
    log = read(info.path)
    assert log.layout == "lockless" and log.has_caller_id and not log.problems
    out = format_makedumpfile(log.records, caller_id=True)
    assert lines(out) == info.expected_dmesg(caller_id=True)
    assert lines(format_makedumpfile(log.records, caller_id=False)) == info.expected_dmesg()


def test_empty_ring(make: Maker) -> None:
    info = make(dmesg=[])
    log = read(info.path)
    assert log.records == [] and not log.problems
    res = cli("dmesg", info.path)
    assert res.returncode == 0 and res.stdout == b"" and res.stderr == b""
    doc = json.loads(cli("dmesg", "--json", info.path).stdout)
    assert doc["records"] == [] and doc["complete"] is True


@pytest.mark.parametrize("shift", [12, 13])
def test_full_ring_no_eviction(make: Maker, shift: int) -> None:
    """As many records as there are descriptors: every descriptor in use, nothing evicted."""
    count = 1 << (shift - 5)
    recs = [PrintkRecord(f"m{i:03d}", ts_nsec=i * 1000, caller_id=i) for i in range(count)]
    info = make(dmesg=recs, log_buf_shift=shift)
    assert len(info.printk_records) == count  # the builder kept them all
    log = read(info.path)
    assert [r.text.decode() for r in log.records] == [r.text for r in recs]
    assert [r.seq for r in log.records] == list(range(count))
    assert lines(format_makedumpfile(log.records, caller_id=True)) == info.expected_dmesg(
        caller_id=True
    )


@pytest.mark.parametrize("n", [200, 1500])
def test_wrapped_ring(make: Maker, n: int) -> None:
    """Many more records than fit: the oldest are gone, text blocks wrap around the ring."""
    info = make(dmesg=ring_records(n), log_buf_shift=12)
    kept = info.printk_records
    assert 0 < len(kept) < n
    log = read(info.path)
    assert not log.problems
    assert [r.text.decode() for r in log.records] == [r.text for r in kept]
    assert log.records[0].seq == n - len(kept) and log.records[-1].seq == n - 1
    res = cli("dmesg", info.path)
    assert res.returncode == 0, res.stderr
    assert lines(res.stdout) == info.expected_dmesg(caller_id=True)
    res = cli("dmesg", "--no-caller-id", info.path)
    assert lines(res.stdout) == info.expected_dmesg(caller_id=False)


def test_text_escaping_and_continuation_lines(make: Maker) -> None:
    recs = [
        PrintkRecord("tab\there, bell\a, esc\x1b[1m, del\x7f", ts_nsec=5),
        PrintkRecord("first line\nsecond line\n  third", ts_nsec=1_234_567_890_123),
        PrintkRecord("utf-8: grüße ☃", ts_nsec=7, caller_id=CPU | 5),
        PrintkRecord("dev message", subsystem="pci", device="+pci:0000:00:01.0"),
    ]
    info = make(dmesg=recs)
    log = read(info.path)
    assert lines(format_makedumpfile(log.records, caller_id=True)) == info.expected_dmesg(
        caller_id=True
    )
    assert log.records[3].subsystem == "pci" and log.records[3].device == "+pci:0000:00:01.0"
    assert log.records[2].caller() == "C5"
    doc = json.loads(cli("dmesg", "--json", info.path).stdout)
    texts = [r["text"] for r in doc["records"]]
    assert texts[2] == "utf-8: grüße ☃" and texts[1].count("\n") == 2
    assert doc["records"][2]["caller"] == "C5" and doc["records"][2]["caller_id"] == CPU | 5
    assert set(doc["records"][0]) == {
        "seq", "ts_nsec", "level", "facility", "caller_id", "caller", "text", "subsystem", "device"
    }  # fmt: skip


def test_undecodable_bytes_escaped_in_json(make: Maker) -> None:
    info = make(dmesg=["plain"])
    # put a raw 0xff byte into the text of the only record
    text = text_array(info)
    block = peek(info, text, 32)
    at = block.index(b"plain")
    patch(info, text + at, b"pl\xffin")
    doc = json.loads(cli("dmesg", "--json", info.path).stdout)
    assert doc["records"][0]["text"] == "pl\\xffin"
    out = cli("dmesg", "--no-caller-id", info.path).stdout
    assert out.endswith(b"pl\\xffffffffin\n")  # makedumpfile's sign-extended escape


def test_output_file_is_private_and_complete(make: Maker, tmp_path: Path) -> None:
    info = make()
    target = tmp_path / "vmcore-dmesg.txt"
    target.write_text("old contents\n")
    res = cli("dmesg", "-o", target, info.path)
    assert res.returncode == 0 and res.stdout == b""
    assert lines(target.read_bytes()) == info.expected_dmesg(caller_id=True)
    assert target.stat().st_mode & 0o777 == 0o600
    assert not Path(f"{target}-incomplete").exists()


def test_caller_id_flags_are_exclusive(make: Maker) -> None:
    info = make(dmesg=["x"])
    res = cli("dmesg", "--caller-id", "--no-caller-id", info.path)
    assert res.returncode == ExitCode.USAGE


def test_kdump_and_flattened_inputs(make: Maker, tmp_path: Path) -> None:
    """The same log from ELF, kdump-compressed (-d 31), flattened and split inputs."""
    from kdumper.dump.diskdump import write_kdump
    from kdumper.dump.flattened import FlatSink
    from kdumper.dump.io import FileSink
    from kdumper.dump.split import write_split

    info = make(dmesg=ring_records(300), log_buf_shift=12)
    want = cli("dmesg", info.path).stdout
    kd, flat = tmp_path / "v.kdump", tmp_path / "v.flat"
    with kdumper.open(info.path) as dump:
        with FileSink(kd) as sink:
            write_kdump(sink, dump, codec="zlib", dump_level=31)
        with open(flat, "wb") as stream:
            sink2 = FlatSink(stream)
            write_kdump(sink2, dump, codec="zlib")
            sink2.finish()
        parts = [str(tmp_path / f"v.part{i}") for i in range(3)]
        write_split(parts, dump, codec="zlib")
    for args in ([kd], [flat], parts):
        res = cli("dmesg", *args)
        assert res.returncode == 0, res.stderr
        assert res.stdout == want, args


# ----------------------------------------------------------------- makedumpfile as the oracle


@pytest.mark.oracle
@pytest.mark.parametrize(("version", "flag"), [("1.7.2", "--no-caller-id"), ("1.7.6", None)])
def test_matches_makedumpfile(make: Maker, tmp_path: Path, version: str, flag: str | None) -> None:
    """Byte-identical to ``makedumpfile --dump-dmesg`` on a wrapped ring with odd bytes."""
    recs = ring_records(700)
    recs[-3] = PrintkRecord("odd \x01\x7f\xe9 bytes\nand a continuation", ts_nsec=10**12)
    info = make(dmesg=recs, log_buf_shift=12)
    out = tmp_path / f"mdf-{version}.txt"
    oracles.makedumpfile(version, "--dump-dmesg", info.path, out)
    ours = cli("dmesg", *([flag] if flag else []), info.path)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == out.read_bytes()


# ------------------------------------------------------------------------- lockless: damage


def test_inconsistent_head_and_tail(make: Maker) -> None:
    """head - tail beyond the descriptor count: the last ``count`` ids are read, with a note."""
    info = make(dmesg=ring_records(40), log_buf_shift=12)
    count_bits, head, _tail = ring_ids(info)
    bogus_tail = (head - (5 << count_bits)) & ((1 << 62) - 1)
    patch(info, prb_addr(info) + OFF_TAIL_ID, struct.pack("<Q", bogus_tail))
    log = read(info.path)
    assert any("inconsistent" in p for p in log.problems)
    assert [r.text.decode() for r in log.records] == [r.text for r in info.printk_records]
    res = cli("dmesg", info.path)
    assert res.returncode == ExitCode.INCOMPLETE
    assert b"kdumper: warning: kernel log: descriptor ring ids are inconsistent" in res.stderr
    assert lines(res.stdout) == info.expected_dmesg(caller_id=True)


def test_corrupt_descriptor_state(make: Maker) -> None:
    """Descriptors that carry another id: their records are lost, the rest is printed."""
    info = make(dmesg=ring_records(60), log_buf_shift=12)
    count_bits, head, _ = ring_ids(info)
    descs = desc_array(info)
    lost = [head - 10, head - 11, head - 30]
    for rid in lost:
        slot = (rid % (1 << count_bits)) * PRB_DESC
        patch(info, descs + slot, struct.pack("<Q", (2 << 62) | 0x1234))
    log = read(info.path)
    assert any("3 descriptor(s)" in p for p in log.problems), log.problems
    want = [r.text for r in info.printk_records]
    got = [r.text.decode() for r in log.records]
    assert len(got) == len(want) - 3 and set(got) < set(want)
    res = cli("dmesg", info.path)
    assert res.returncode == ExitCode.INCOMPLETE
    assert res.stderr.count(b"kdumper: warning:") == 1
    assert b"incomplete" in res.stderr
    # --json says so too
    doc = json.loads(cli("dmesg", "--json", info.path).stdout)
    assert doc["complete"] is False and doc["problems"] == log.problems


def test_corrupt_text_blocks(make: Maker) -> None:
    """A text block whose id word names another record, and one with absurd positions."""
    info = make(dmesg=ring_records(30), log_buf_shift=12)
    count_bits, head, _ = ring_ids(info)
    descs, text = desc_array(info), text_array(info)
    size = 1 << 12
    # record head-2: overwrite its block's id word
    slot = ((head - 2) % (1 << count_bits)) * PRB_DESC
    begin = struct.unpack("<Q", peek(info, descs + slot + 8, 8))[0] % size
    patch(info, text + begin, struct.pack("<Q", 0xDEAD))
    # record head-5: a block that claims to be larger than the ring
    slot = ((head - 5) % (1 << count_bits)) * PRB_DESC
    patch(info, descs + slot + 8, struct.pack("<QQ", 0x100, 0x100 + 3 * size))
    log = read(info.path)
    assert any("2 record(s) point at text" in p for p in log.problems), log.problems
    assert len(log.records) == len(info.printk_records) - 2
    assert cli("dmesg", info.path).returncode == ExitCode.INCOMPLETE


def test_garbage_descriptor_array_never_hangs(make: Maker) -> None:
    info = make(dmesg=ring_records(100), log_buf_shift=12)
    count_bits, _, _ = ring_ids(info)
    noise = os.urandom(PRB_DESC << count_bits)
    patch(info, desc_array(info), noise)
    res = cli("dmesg", info.path)  # the timeout is the assertion that matters
    assert res.returncode in (ExitCode.OK, ExitCode.INCOMPLETE)
    assert b"Traceback" not in res.stderr


def test_garbage_text_ring_never_hangs(make: Maker) -> None:
    info = make(dmesg=ring_records(100), log_buf_shift=12)
    patch(info, text_array(info), os.urandom(1 << 12))
    res = cli("dmesg", info.path)
    assert res.returncode == ExitCode.INCOMPLETE
    assert b"Traceback" not in res.stderr


def test_absurd_ring_size_is_one_error_line(make: Maker) -> None:
    info = make(dmesg=["x"])
    patch(info, prb_addr(info), struct.pack("<I", 40))  # count_bits
    with pytest.raises(UnsupportedError, match="absurd"):
        read(info.path)
    res = cli("dmesg", info.path)
    assert res.returncode == ExitCode.UNSUPPORTED
    assert res.stderr.startswith(b"kdumper: error: ") and res.stderr.count(b"\n") == 1


def test_ring_pointer_unmapped_is_one_error_line(make: Maker) -> None:
    info = make(dmesg=["x"])
    patch(info, info.symbols["prb"], struct.pack("<Q", 0xFFFF_C900_DEAD_0000))
    with pytest.raises(KdumperError):
        read(info.path)
    res = cli("dmesg", info.path)
    assert res.returncode not in (ExitCode.OK, ExitCode.ERROR)
    assert res.stderr.startswith(b"kdumper: error: ") and res.stderr.count(b"\n") == 1


def test_no_log_layout(make: Maker) -> None:
    info = make(dmesg=["x"], vmcoreinfo_drop=["SYMBOL(prb)"])
    res = cli("dmesg", info.path)
    assert res.returncode == ExitCode.UNSUPPORTED
    assert b"no known kernel log layout" in res.stderr


# ----------------------------------------------------------------- legacy struct printk_log

LOG_ALIGN = 8


def legacy_buffer(
    records: Sequence[tuple[int, bytes, int]],
    size: int,
    *,
    caller: bool = False,
) -> tuple[bytes, int, int, list[tuple[int, bytes, int]]]:
    """A 3.5-5.9 ``log_buf`` holding ``records`` ((ts_nsec, text, caller_id)), oldest evicted.

    ``struct printk_log``: u64 ts_nsec, u16 len, u16 text_len, u16 dict_len, u8 facility,
    u8 flags:5/level:3, [u32 caller_id] (CONFIG_PRINTK_CALLER, 5.1+); a record is padded to
    LOG_ALIGN; a record that does not fit at the end leaves a zero ``len`` there and starts
    at 0. Returns (buffer, first_idx, next_idx, records kept).
    """
    hdr = 24 if caller else 16
    buf = bytearray(size)
    nxt = 0
    live: list[tuple[int, int, tuple[int, bytes, int]]] = []  # (idx, len, record), oldest first

    def evict(lo: int, hi: int) -> None:
        # the oldest records lie just after the newest: drop those starting in [lo, hi)
        while live and lo <= live[0][0] < hi:
            live.pop(0)

    for rec in records:
        ts, text, cid = rec
        length = (hdr + len(text) + LOG_ALIGN - 1) // LOG_ALIGN * LOG_ALIGN
        if nxt + length + hdr > size:  # no room at the end: a zero header, then from 0
            evict(nxt, size)
            struct.pack_into("<QH", buf, nxt, 0, 0)
            nxt = 0
        evict(nxt, nxt + length + hdr)  # log_has_space(): room for the record and a header
        struct.pack_into("<QHHHBB", buf, nxt, ts, length, len(text), 0, 0, 6 << 5)
        if caller:
            struct.pack_into("<I", buf, nxt + 16, cid)
        buf[nxt + hdr : nxt + hdr + len(text)] = text
        live.append((nxt, length, rec))
        nxt += length
    first = live[0][0] if live else nxt
    return bytes(buf), first, nxt, [r for _, _, r in live]


def legacy_vmcore(
    make: Maker, records: Sequence[tuple[int, bytes, int]], *, size: int, caller: bool = False
) -> tuple[SynthInfo, list[tuple[int, bytes, int]]]:
    """A synthetic vmcore whose VMCOREINFO describes a 5.x ``log_buf`` instead of ``prb``."""
    probe = make("probe", dmesg=[])
    base = probe.symbols["_printk_rb_static_descs"]  # unused bss area of the same image
    syms = {
        "log_buf": base,
        "log_buf_len": base + 8,
        "log_first_idx": base + 16,
        "log_next_idx": base + 24,
    }
    buffer_va = base + 0x100
    extra = {f"SYMBOL({k})": f"{v:x}" for k, v in syms.items()}
    extra.update(
        {
            "SIZE(printk_log)": str(24 if caller else 16),
            "OFFSET(printk_log.ts_nsec)": "0",
            "OFFSET(printk_log.len)": "8",
            "OFFSET(printk_log.text_len)": "10",
        }
    )
    if caller:
        extra["OFFSET(printk_log.caller_id)"] = "16"
    drop = [
        line.split("=", 1)[0]
        for line in probe.vmcoreinfo.splitlines()
        if "prb" in line or "printk_info" in line or "printk_ringbuffer" in line
    ]
    info = make("legacy", dmesg=[], vmcoreinfo_drop=drop, vmcoreinfo_extra=extra)
    assert info.symbols["_printk_rb_static_descs"] == base  # same seed: same layout
    buf, first, nxt, kept = legacy_buffer(records, size, caller=caller)
    patch(info, syms["log_buf"], struct.pack("<Q", buffer_va))
    patch(info, syms["log_buf_len"], struct.pack("<I", size))
    patch(info, syms["log_first_idx"], struct.pack("<I", first))
    patch(info, syms["log_next_idx"], struct.pack("<I", nxt))
    patch(info, buffer_va, buf)
    return info, kept


def legacy_records(n: int) -> list[tuple[int, bytes, int]]:
    return [(1_000_003 * i, f"legacy {i} {'y' * (i * 5 % 41)}".encode(), 200 + i) for i in range(n)]


def expected_legacy(kept: Sequence[tuple[int, bytes, int]], caller: bool) -> bytes:
    out = bytearray()
    for ts, text, cid in kept:
        prefix = f"[{ts // 10**9:5d}.{ts % 10**9 // 1000:06d}] "
        if caller:
            prefix += f"[{'T' + str(cid):>8}] "
        out += prefix.encode() + text + b"\n"
    return bytes(out)


@pytest.mark.parametrize("caller", [False, True])
def test_legacy_log_buf(make: Maker, caller: bool) -> None:
    info, kept = legacy_vmcore(make, legacy_records(20), size=4096, caller=caller)
    log = read(info.path)
    assert log.layout == "printk_log" and log.has_caller_id is caller and not log.problems
    assert [r.text for r in log.records] == [t for _, t, _ in kept]
    res = cli("dmesg", info.path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == expected_legacy(kept, caller)


def test_legacy_log_buf_wrapped(make: Maker) -> None:
    info, kept = legacy_vmcore(make, legacy_records(400), size=4096)
    assert 0 < len(kept) < 400
    log = read(info.path)
    assert not log.problems
    assert [r.text for r in log.records] == [t for _, t, _ in kept]
    assert cli("dmesg", info.path).stdout == expected_legacy(kept, False)


@pytest.mark.oracle
def test_legacy_matches_makedumpfile(make: Maker, tmp_path: Path) -> None:
    info, _ = legacy_vmcore(make, legacy_records(400), size=4096)
    out = tmp_path / "mdf.txt"
    oracles.makedumpfile("1.7.2", "--dump-dmesg", info.path, out)
    assert cli("dmesg", info.path).stdout == out.read_bytes()


def test_legacy_corrupt_indices(make: Maker) -> None:
    info, _ = legacy_vmcore(make, legacy_records(20), size=4096)
    patch(info, info.symbols["_printk_rb_static_descs"] + 16, struct.pack("<I", 1 << 20))
    res = cli("dmesg", info.path)
    assert res.returncode == ExitCode.UNSUPPORTED
    assert b"log_buf is corrupt" in res.stderr


def test_legacy_short_record_cuts_output(make: Maker) -> None:
    info, kept = legacy_vmcore(make, legacy_records(20), size=4096)
    buffer_va = info.symbols["_printk_rb_static_descs"] + 0x100
    buf, first, _, _ = legacy_buffer(legacy_records(20), 4096)
    # the 6th record's len becomes 4: shorter than its header
    pos = first
    for _ in range(5):
        pos += struct.unpack_from("<H", buf, pos + 8)[0]
    patch(info, buffer_va + pos + 8, struct.pack("<H", 4))
    log = read(info.path)
    assert len(log.records) == 5 and any("shorter than its header" in p for p in log.problems)
    res = cli("dmesg", info.path)
    assert res.returncode == ExitCode.INCOMPLETE
    assert res.stdout == expected_legacy(kept[:5], False)


def test_legacy_garbage_never_hangs(make: Maker) -> None:
    info, _ = legacy_vmcore(make, legacy_records(50), size=4096)
    buffer_va = info.symbols["_printk_rb_static_descs"] + 0x100
    patch(info, buffer_va, bytes([8, 0, 0, 0, 0, 0, 0, 0, 8, 0]) * 409)  # 8-byte records forever
    res = cli("dmesg", info.path)
    assert res.returncode in (ExitCode.OK, ExitCode.INCOMPLETE)
    assert b"Traceback" not in res.stderr
