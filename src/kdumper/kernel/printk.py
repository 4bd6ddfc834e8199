"""The kernel log of the crashed kernel, from VMCOREINFO alone.

Two layouts, chosen once per dump from the VMCOREINFO keys present:

* the lockless ``printk_ringbuffer`` (Linux 5.10, commit 896fbe20b4e2 "printk: use the lockless
  ringbuffer"): ``SYMBOL(prb)`` and the ``prb_desc_ring`` / ``prb_data_ring`` / ``printk_info``
  offsets;
* the variable-length ``struct printk_log`` records in ``log_buf`` (Linux 3.5 "printk: convert
  byte-buffer to variable-length record buffer", until 5.9): ``SYMBOL(log_buf)``,
  ``SYMBOL(log_first_idx)``, ``SYMBOL(log_next_idx)``, ``SIZE(printk_log)``.

Corruption never hangs or raises: iteration is bounded by the ring size, broken records are
skipped, and :attr:`KernelLog.problems` says what was wrong.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..dump.base import Dump
from ..dump.vmcoreinfo import VmcoreInfo
from ..errors import KdumperError, UnsupportedError
from .memory import KernelMemory, kernel_memory

_MAX_RING_BYTES = 1 << 28  # a text ring larger than 256 MiB is corruption
_MAX_DESCS = 1 << 22
_CALLER_CPU = 0x80000000


class LogRecord(NamedTuple):
    """One kernel log record."""

    seq: int  #: sequence number (lockless ring: from printk_info.seq; legacy: position)
    ts_nsec: int  #: timestamp, nanoseconds since boot (local_clock)
    level: int  #: console log level 0-7 (``KERN_EMERG`` .. ``KERN_DEBUG``)
    facility: int  #: syslog facility (0 = kernel)
    caller_id: int | None  #: ``0x80000000 | cpu`` or a task pid; None when not recorded
    text: bytes  #: the message without prefix (continuation lines separated by ``\n``)
    subsystem: str = ""  #: dev_printk subsystem (``pci``, ...)
    device: str = ""  #: dev_printk device (``+pci:0000:00:01.0``, ...)

    def caller(self) -> str:
        """``T<pid>`` or ``C<cpu>`` as the kernel prints caller ids."""
        if self.caller_id is None:
            return ""
        kind = "C" if self.caller_id & _CALLER_CPU else "T"
        return f"{kind}{self.caller_id & ~_CALLER_CPU}"


@dataclass
class KernelLog:
    """The records of the log, oldest first, and what was wrong with the ring, if anything."""

    records: list[LogRecord]
    layout: str  # "lockless" or "printk_log"
    has_caller_id: bool
    problems: list[str] = field(default_factory=list)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _need(info: VmcoreInfo, getter: Callable[..., int | None], *args: str) -> int:
    value = getter(*args)
    if value is None:
        raise UnsupportedError(f"VMCOREINFO lacks {getter.__name__.upper()}({'.'.join(args)})")
    return value


def _lockless(mem: KernelMemory, info: VmcoreInfo) -> KernelLog:
    off, size = info.offset, info.size
    prb = mem.read_u64(_need(info, info.symbol, "prb"))
    rb = mem.read(prb, _need(info, size, "printk_ringbuffer"))
    counter = _need(info, off, "atomic_long_t", "counter")
    desc_ring = _need(info, off, "printk_ringbuffer", "desc_ring")
    data_ring = _need(info, off, "printk_ringbuffer", "text_data_ring")

    def word(base: int, struct_name: str, member: str, fmt: str = "<Q") -> int:
        pos = base + _need(info, off, struct_name, member)
        return int(struct.unpack_from(fmt, rb, pos)[0])

    problems: list[str] = []
    count_bits = word(desc_ring, "prb_desc_ring", "count_bits", "<I")
    size_bits = word(data_ring, "prb_data_ring", "size_bits", "<I")
    if count_bits > 22 or (1 << size_bits) > _MAX_RING_BYTES:
        raise UnsupportedError(
            f"printk ring sizes are absurd (count_bits={count_bits}, size_bits={size_bits})"
        )
    count, text_size = 1 << count_bits, 1 << size_bits
    desc_size = _need(info, size, "prb_desc")
    info_size = _need(info, size, "printk_info")
    descs = mem.read(word(desc_ring, "prb_desc_ring", "descs"), count * desc_size)
    infos = mem.read(word(desc_ring, "prb_desc_ring", "infos"), count * info_size)
    text = mem.read(word(data_ring, "prb_data_ring", "data"), text_size)
    tail_pos = desc_ring + _need(info, off, "prb_desc_ring", "tail_id") + counter
    head_pos = desc_ring + _need(info, off, "prb_desc_ring", "head_id") + counter
    tail_id, head_id = (
        struct.unpack_from("<Q", rb, tail_pos)[0],
        struct.unpack_from("<Q", rb, head_pos)[0],
    )

    id_mask = (1 << 62) - 1
    state_off = _need(info, off, "prb_desc", "state_var") + counter
    lpos_off = _need(info, off, "prb_desc", "text_blk_lpos")
    begin_off = lpos_off + _need(info, off, "prb_data_blk_lpos", "begin")
    next_off = lpos_off + _need(info, off, "prb_data_blk_lpos", "next")
    seq_off = _need(info, off, "printk_info", "seq")
    ts_off = _need(info, off, "printk_info", "ts_nsec")
    len_off = _need(info, off, "printk_info", "text_len")
    caller_off = info.offset("printk_info", "caller_id")
    dev_off = info.offset("printk_info", "dev_info")
    subsys_off = info.offset("dev_printk_info", "subsystem") or 0
    device_off = info.offset("dev_printk_info", "device") or 16
    subsys_len = info.length("printk_info_subsystem") or 16
    device_len = info.length("printk_info_device") or 48

    span = (head_id - tail_id) & id_mask
    if span >= count:
        problems.append(
            f"descriptor ring ids are inconsistent (tail {tail_id:#x}, head {head_id:#x}); "
            f"reading the last {count} records only"
        )
        tail_id = (head_id - count + 1) & id_mask
        span = count - 1
    records: list[LogRecord] = []
    foreign = misplaced = 0  # descriptors / text blocks that do not belong where they are
    for step in range(span + 1):
        rid = (tail_id + step) & id_mask
        d = (rid % count) * desc_size
        state_var = struct.unpack_from("<Q", descs, d + state_off)[0]
        if state_var & id_mask != rid:
            foreign += 1  # between tail and head every descriptor carries its own id
            continue
        if (state_var >> 62) not in (1, 2):
            continue  # reserved (being written) or reusable: not a record (makedumpfile skips)
        raw_begin = struct.unpack_from("<Q", descs, d + begin_off)[0]
        raw_next = struct.unpack_from("<Q", descs, d + next_off)[0]
        if raw_begin == raw_next:
            continue  # data-less record (NO_LPOS, FAILED_LPOS)
        if (raw_next - raw_begin) & ((1 << 64) - 1) > text_size:
            misplaced += 1  # a block larger than the ring (the kernel's get_data rejects it)
            continue
        begin, nxt = raw_begin % text_size, raw_next % text_size
        if begin > nxt:
            begin = 0  # the block wrapped: its data starts at the beginning of the ring
        if struct.unpack_from("<Q", text, begin)[0] & id_mask != rid:
            misplaced += 1  # the block's id word names another record: overwritten or corrupt
            continue
        begin += 8  # skip the block's id word
        i = (rid % count) * info_size
        text_len = struct.unpack_from("<H", infos, i + len_off)[0]
        if nxt < begin:
            problems.append(f"record {rid:#x}: text block is shorter than its header")
            continue
        text_len = min(text_len, nxt - begin)
        facility, flags_level = infos[i + len_off + 2], infos[i + len_off + 3]
        subsystem = device = ""
        if dev_off is not None:
            base = i + dev_off
            subsystem = _cstr(infos[base + subsys_off : base + subsys_off + subsys_len])
            device = _cstr(infos[base + device_off : base + device_off + device_len])
        records.append(
            LogRecord(
                seq=struct.unpack_from("<Q", infos, i + seq_off)[0],
                ts_nsec=struct.unpack_from("<Q", infos, i + ts_off)[0],
                level=flags_level >> 5,
                facility=facility,
                caller_id=(
                    struct.unpack_from("<I", infos, i + caller_off)[0]
                    if caller_off is not None
                    else None
                ),
                text=text[begin : begin + text_len],
                subsystem=subsystem,
                device=device,
            )
        )
    if foreign:
        problems.append(
            f"{foreign} descriptor(s) between the ring's tail and head belong to no record "
            "(corrupt or overwritten): their records are lost"
        )
    if misplaced:
        problems.append(
            f"{misplaced} record(s) point at text that is not theirs (corrupt text ring): skipped"
        )
    return KernelLog(records, "lockless", caller_off is not None, problems)


def _legacy(mem: KernelMemory, info: VmcoreInfo) -> KernelLog:
    """``struct printk_log`` records (3.5–5.9): u64 ts_nsec, u16 len, text_len, dict_len, ..."""
    buf_addr = mem.read_u64(_need(info, info.symbol, "log_buf"))
    buf_len = mem.read_u32(_need(info, info.symbol, "log_buf_len"))
    first = mem.read_u32(_need(info, info.symbol, "log_first_idx"))
    last = mem.read_u32(_need(info, info.symbol, "log_next_idx"))
    hdr = _need(info, info.size, "printk_log")
    ts_off = _need(info, info.offset, "printk_log", "ts_nsec")
    len_off = _need(info, info.offset, "printk_log", "len")
    text_len_off = _need(info, info.offset, "printk_log", "text_len")
    caller_off = info.offset("printk_log", "caller_id")
    if not 0 < buf_len <= _MAX_RING_BYTES or first >= buf_len or last >= buf_len:
        raise UnsupportedError(
            f"log_buf is corrupt (len {buf_len:#x}, first {first:#x}, next {last:#x})"
        )
    buf = mem.read(buf_addr, buf_len)
    records: list[LogRecord] = []
    problems: list[str] = []
    pos, seq = first, 0
    for _ in range(buf_len // max(hdr, 1) + 2):
        if pos == last:
            break
        if pos + hdr > buf_len:
            problems.append(f"index {pos:#x} outside log_buf: the log is corrupt, output cut here")
            break
        rec_len = struct.unpack_from("<H", buf, pos + len_off)[0]
        if rec_len == 0:  # end-of-buffer marker: continue at the start
            pos = 0
            continue
        if rec_len < hdr:
            problems.append(f"record at {pos:#x} is shorter than its header: output cut here")
            break
        text_len = struct.unpack_from("<H", buf, pos + text_len_off)[0]
        dict_pos = text_len_off + 4  # dict_len, then facility and flags:5/level:3
        facility, flags_level = buf[pos + dict_pos], buf[pos + dict_pos + 1]
        records.append(
            LogRecord(
                seq=seq,
                ts_nsec=struct.unpack_from("<Q", buf, pos + ts_off)[0],
                level=flags_level >> 5,
                facility=facility,
                caller_id=(
                    struct.unpack_from("<I", buf, pos + caller_off)[0]
                    if caller_off is not None
                    else None
                ),
                text=buf[pos + hdr : pos + hdr + min(text_len, rec_len - hdr)],
            )
        )
        seq += 1
        pos += rec_len
    else:
        problems.append("cycle in log_buf records: the log is corrupt, output cut here")
    return KernelLog(records, "printk_log", caller_off is not None, problems)


def read_log(dump: Dump) -> KernelLog:
    """The kernel log of ``dump``; :class:`UnsupportedError` when neither layout is exported."""
    info = dump.vmcoreinfo
    if info is None:
        raise UnsupportedError(f"{dump.path}: no VMCOREINFO, so the kernel log cannot be found")
    mem = kernel_memory(dump)
    try:
        if info.symbol("prb") is not None:
            return _lockless(mem, info)
        if info.symbol("log_buf") is not None and info.symbol("log_first_idx") is not None:
            return _legacy(mem, info)
    except struct.error:
        raise UnsupportedError(f"{dump.path}: the printk structures are truncated") from None
    except UnsupportedError as e:
        raise UnsupportedError(f"{dump.path}: kernel log: {e}") from None
    except KdumperError as e:
        # keep the class (its exit code); constructors differ, so reword in place
        e.args = (f"kernel log unreadable: {e}",)
        raise
    raise UnsupportedError(f"{dump.path}: VMCOREINFO exports no known kernel log layout")


# bytes that C-locale isprint() || isspace() rejects: makedumpfile prints them as \\xNN
_UNPRINTABLE = re.compile(rb"[^\x20-\x7e\t\n\x0b\x0c\r]")


def _escape(match: re.Match[bytes]) -> bytes:
    byte = match.group()[0]
    # printf("%02x", *p) of a signed char: bytes >= 0x80 are sign-extended to an int
    return b"\\xffffff%02x" % byte if byte >= 0x80 else b"\\x%02x" % byte


def format_makedumpfile(records: Iterable[LogRecord], *, caller_id: bool) -> bytes:
    """The log exactly as ``makedumpfile --dump-dmesg`` writes it.

    ``caller_id=True`` is the 1.7.5+ form (``[    T123] `` after the time stamp, when the
    kernel records caller ids); False is the 1.7.4-and-older form.
    """
    out = bytearray()
    for rec in records:
        secs, nsec = divmod(rec.ts_nsec, 1_000_000_000)
        prefix = f"[{secs:5d}.{nsec // 1000:06d}] "
        if caller_id and rec.caller_id is not None:
            prefix += f"[{rec.caller():>8s}] "
        out += prefix.encode()
        indent = b"\n" + b" " * len(prefix)
        out += _UNPRINTABLE.sub(_escape, rec.text).replace(b"\n", indent)
        out += b"\n"
    return bytes(out)
