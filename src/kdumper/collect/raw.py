"""The raw device target: a dump written straight onto a block device, recovered at the next boot.

Layout of the kdumper area, starting at ``[target] raw_offset`` of the device::

    +0        header block (4096 bytes, RAW_HEADER below; little-endian; CRC-32 at its end)
    +4096     the kernel log (makedumpfile --dump-dmesg text), written and fsynced first
    +N        the dump as a makedumpfile flattened stream (N = 4096-aligned end of the log)

The flattened stream is what kdump-utils writes to raw devices, so the area also yields to
``dd if=DEV bs=4096 skip=... | makedumpfile -R vmcore``. The header makes the area findable and
self-describing: magic, version, status, the offsets and lengths of the log and the stream, the
stream's CRC-32, crash time, host, kernel release, the dump directory name and the test id of
``kdumper test``. Status goes ``writing`` (set before anything else is written; the stream length
is updated every :data:`HEADER_UPDATE_EVERY` bytes, so a capture killed midway leaves an area
that still describes what landed) → ``complete`` or ``incomplete`` (the device filled up, or
the writer failed) → ``recovered`` (rewritten by :func:`recover`, so a dump is copied once).

:func:`recover` (``kdumper recover-raw``, and ``kdumper load --boot``) rebuilds the ordinary
kdump-compressed file from the stream into ``<path>/<name>/vmcore`` with bounded memory
(``reassemble_flat`` over a length-bounded reader of the device), next to the log; a cut stream
stays ``vmcore-incomplete`` with the incomplete flag set in its kdump header.

Before the first write the capture refuses a device whose area starts with a filesystem, swap,
LUKS or partition-table signature (a configuration naming ``/dev/sda`` instead of a spare
partition must not destroy it); an area holding a kdumper or makedumpfile stream is fine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ..dump.flattened import FLAT_SIGNATURE, reassemble_flat
from ..errors import (
    DumpFormatError,
    DumpIOError,
    InputNotFoundError,
    KdumperError,
    NoSpaceError,
)

if TYPE_CHECKING:
    from .retention import TriageFn

RAW_MAGIC = b"KDUMPER-RAWDUMP\0"
RAW_VERSION = 1
HEADER_BLOCK = 4096
ALIGN = 4096
# the stream length in the header is brought up to date this often while writing (one 4 KiB
# write and an fsync: nothing next to the stream itself)
HEADER_UPDATE_EVERY = 64 << 20
WRITE_BUFFER = 1 << 20  # the stream is written to the device in pieces of this size
COPY_CHUNK = 1 << 20

STATUS_WRITING = 1
STATUS_COMPLETE = 2
STATUS_INCOMPLETE = 3
STATUS_RECOVERED = 4
STATUS_NAMES = {
    STATUS_WRITING: "writing",
    STATUS_COMPLETE: "complete",
    STATUS_INCOMPLETE: "incomplete",
    STATUS_RECOVERED: "recovered",
}

# magic, version, status, header size, flags, crash time, written at, updated at, recovered at,
# dmesg offset, dmesg length, dump offset, dump length, dump crc32, (pad), dump format, dump level,
# codec, directory name, nodename, release, test id -- then the CRC-32 of all of these
_FIELDS = struct.Struct("<16sIIIIqqqqQQQQII16sI16s128s65s65s64s")
_CRC = struct.Struct("<I")
RAW_HEADER_SIZE = _FIELDS.size + _CRC.size

# (offset in the area, bytes, what): signatures of things a raw dump must not overwrite
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"XFSB", "an XFS filesystem"),
    (1080, b"\x53\xef", "an ext2/ext3/ext4 filesystem"),
    (65600, b"_BHRfS_M", "a btrfs filesystem"),
    (0, b"LUKS\xba\xbe", "a LUKS volume"),
    (4086, b"SWAPSPACE2", "swap space"),
    (4086, b"SWAP-SPACE", "swap space"),
    (512, b"EFI PART", "a GPT partition table"),
    (510, b"\x55\xaa", "a boot sector or MBR partition table"),
)


class RawTargetError(DumpIOError):
    """The raw target device cannot be used."""


class RawDeviceMissingError(InputNotFoundError):
    """The raw target device does not exist."""

    template = "raw target {path}: no such device"


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _bytes(text: str, size: int) -> bytes:
    return text.encode()[: size - 1]


@dataclass
class RawHeader:
    """The header block of a kdumper raw area."""

    status: int = STATUS_WRITING
    crash_time: int = 0
    written_at: int = 0
    updated_at: int = 0
    recovered_at: int = 0
    dmesg_offset: int = 0  # relative to the area start
    dmesg_length: int = 0
    dump_offset: int = 0
    dump_length: int = 0
    dump_crc32: int = 0
    dump_format: str = "flattened-kdump"
    dump_level: int = 0
    codec: str = ""
    name: str = ""  # the dump directory to recover into
    nodename: str = ""
    release: str = ""
    test_id: str = ""
    flags: int = 0

    @property
    def status_name(self) -> str:
        """``writing``, ``complete``, ``incomplete`` or ``recovered``."""
        return STATUS_NAMES.get(self.status, f"unknown ({self.status})")

    def pack(self) -> bytes:
        """The header block (4096 bytes)."""
        fields = _FIELDS.pack(
            RAW_MAGIC,
            RAW_VERSION,
            self.status,
            HEADER_BLOCK,
            self.flags,
            self.crash_time,
            self.written_at,
            self.updated_at,
            self.recovered_at,
            self.dmesg_offset,
            self.dmesg_length,
            self.dump_offset,
            self.dump_length,
            self.dump_crc32 & 0xFFFFFFFF,
            0,
            _bytes(self.dump_format, 16),
            self.dump_level,
            _bytes(self.codec, 16),
            _bytes(self.name, 128),
            _bytes(self.nodename, 65),
            _bytes(self.release, 65),
            _bytes(self.test_id, 64),
        )
        return (fields + _CRC.pack(zlib.crc32(fields))).ljust(HEADER_BLOCK, b"\0")

    @classmethod
    def unpack(cls, raw: bytes, path: str) -> RawHeader | None:
        """The header in ``raw`` (the first bytes of the area); None when there is none."""
        if raw[:16] != RAW_MAGIC:
            return None
        if len(raw) < RAW_HEADER_SIZE:
            raise DumpFormatError("the kdumper raw header is truncated", path=path)
        f = _FIELDS.unpack_from(raw)
        (crc,) = _CRC.unpack_from(raw, _FIELDS.size)
        if zlib.crc32(raw[: _FIELDS.size]) != crc:
            raise DumpFormatError(
                "the kdumper raw header is corrupt (checksum mismatch); nothing was recovered",
                path=path,
            )
        if f[1] != RAW_VERSION:
            raise DumpFormatError(
                f"kdumper raw header version {f[1]} is not supported (this kdumper reads "
                f"version {RAW_VERSION})",
                path=path,
            )
        return cls(
            status=f[2],
            flags=f[4],
            crash_time=f[5],
            written_at=f[6],
            updated_at=f[7],
            recovered_at=f[8],
            dmesg_offset=f[9],
            dmesg_length=f[10],
            dump_offset=f[11],
            dump_length=f[12],
            dump_crc32=f[13],
            dump_format=_text(f[15]),
            dump_level=f[16],
            codec=_text(f[17]),
            name=_text(f[18]),
            nodename=_text(f[19]),
            release=_text(f[20]),
            test_id=_text(f[21]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**self.__dict__, "status": self.status_name}


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class RawArea:
    """The kdumper area of a raw device (or of a regular file standing for one) at ``offset``.

    A block device has a fixed capacity; a regular file grows (tests, images). Anything else is
    refused.
    """

    def __init__(self, path: str, offset: int = 0, *, writable: bool) -> None:
        self.path = path
        self.offset = offset
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags)
        except FileNotFoundError:
            raise RawDeviceMissingError(path) from None
        except OSError as e:
            raise RawTargetError(f"cannot open the raw target: {e.strerror}", path=path) from None
        st = os.fstat(self._fd)
        self.is_block = stat.S_ISBLK(st.st_mode)
        self.capacity: int | None
        if self.is_block:
            self.capacity = max(0, os.lseek(self._fd, 0, os.SEEK_END) - offset)
        elif stat.S_ISREG(st.st_mode):
            self.capacity = None
        else:
            os.close(self._fd)
            raise RawTargetError("the raw target is not a block device (nor a file)", path=path)

    def close(self) -> None:
        """Close the device."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RawArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plain I/O (offsets relative to the area) --------------------------------------------

    def pread(self, rel: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``rel`` (fewer at the end of the device)."""
        try:
            return os.pread(self._fd, length, self.offset + rel)
        except OSError as e:
            raise DumpIOError(
                f"read error at {self.offset + rel:#x}: {e.strerror}", path=self.path
            ) from None

    def pwrite(self, rel: int, data: bytes | memoryview) -> None:
        """Write all of ``data`` at ``rel``; :class:`NoSpaceError` past the capacity."""
        if self.capacity is not None and rel + len(data) > self.capacity:
            raise NoSpaceError(
                f"the raw target is full ({self.capacity} bytes from offset {self.offset})",
                path=self.path,
            )
        view = memoryview(data)
        pos = self.offset + rel
        while view:
            try:
                n = os.pwrite(self._fd, view, pos)
            except OSError as e:
                raise _io_error(e, self.path, f"write failed at {pos:#x}") from None
            if n == 0:
                raise NoSpaceError(f"write failed at {pos:#x}: end of device", path=self.path)
            view, pos = view[n:], pos + n

    def sync(self) -> None:
        """fsync the device."""
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise _io_error(e, self.path, "fsync failed") from None

    # ---- the header --------------------------------------------------------------------------

    def read_header(self) -> RawHeader | None:
        """The kdumper header of the area, or None when the area holds none."""
        return RawHeader.unpack(self.pread(0, HEADER_BLOCK), self.path)

    def write_header(self, header: RawHeader, *, now: float | None = None) -> None:
        """Write ``header`` (its ``updated_at`` set to now) and fsync."""
        header.updated_at = int(now if now is not None else time.time())
        self.pwrite(0, header.pack())
        self.sync()

    def foreign_content(self) -> str | None:
        """What the area holds that a dump must not overwrite (None: nothing known, a kdumper
        area, or a flattened stream)."""
        head = self.pread(0, 65600 + 16)
        if head[:16] == RAW_MAGIC or head[:12] == FLAT_SIGNATURE:
            return None
        if not head.strip(b"\0"):
            return None
        for where, magic, what in SIGNATURES:
            if head[where : where + len(magic)] == magic:
                return what
        return None

    # ---- capture -----------------------------------------------------------------------------

    def begin(self, header: RawHeader, dmesg: bytes | None) -> RawHeader:
        """Mark the area ``writing``, then write the kernel log after the header (fsynced);
        returns the header with the log and dump offsets filled in."""
        h = replace(header, status=STATUS_WRITING, dump_length=0, dump_crc32=0)
        h.dmesg_offset = HEADER_BLOCK
        h.dmesg_length = 0
        h.dump_offset = HEADER_BLOCK
        self.write_header(h)
        if dmesg:
            self.pwrite(HEADER_BLOCK, dmesg)
            h.dmesg_length = len(dmesg)
            h.dump_offset = _align(HEADER_BLOCK + len(dmesg))
            self.sync()
            self.write_header(h)
        return h

    def dump_capacity(self, header: RawHeader) -> int | None:
        """Bytes the stream may take (None: unbounded)."""
        if self.capacity is None:
            return None
        return max(0, self.capacity - header.dump_offset)

    def write_dump(self, header: RawHeader, write_fn: Callable[[BinaryIO], object]) -> RawHeader:
        """Let ``write_fn(stream)`` write the flattened stream into the area, then record its
        length, CRC and status. On failure the header says ``incomplete`` (with what landed) and
        the error is re-raised."""
        stream = RawStream(self, header)
        try:
            write_fn(cast(BinaryIO, stream))
            stream.flush()
        except BaseException:
            with contextlib.suppress(KdumperError, OSError):
                stream.flush()
            header.status = STATUS_INCOMPLETE
            header.dump_length, header.dump_crc32 = stream.position, stream.crc
            with contextlib.suppress(KdumperError, OSError):
                self.sync()
                self.write_header(header)
            raise
        self.sync()
        header.status = STATUS_COMPLETE
        header.dump_length, header.dump_crc32 = stream.position, stream.crc
        self.write_header(header)
        return header


def _io_error(e: OSError, path: str, doing: str) -> DumpIOError:
    if e.errno in (errno.ENOSPC, errno.EFBIG):
        return NoSpaceError(f"{doing}: no space left ({e.strerror})", path=path)
    return DumpIOError(f"{doing}: {e.strerror or e}", path=path)


class RawStream:
    """A write-only binary stream into the dump part of a raw area (what ``FlatSink`` writes
    to): buffered, CRC-32 as it goes, the header's length kept up to date, ``ENOSPC`` at the end
    of the device (``FlatSink`` turns it into :class:`NoSpaceError`)."""

    def __init__(self, area: RawArea, header: RawHeader) -> None:
        self.area = area
        self.header = header
        self.name = area.path
        self.limit = area.dump_capacity(header)
        self.position = 0  # bytes on the device
        self.crc = 0
        self._buf = bytearray()
        self._next_update = HEADER_UPDATE_EVERY

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data``; raises ``OSError(ENOSPC)`` when the area cannot hold it."""
        n = len(data)
        if self.limit is not None and self.position + len(self._buf) + n > self.limit:
            self.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._buf += data
        if len(self._buf) >= WRITE_BUFFER:
            self.flush()
        return n

    def flush(self) -> None:
        """Write the buffer to the device (raises ``OSError`` for ``FlatSink`` to classify)."""
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        try:
            self.area.pwrite(self.header.dump_offset + self.position, data)
        except NoSpaceError as e:
            raise OSError(errno.ENOSPC, str(e)) from None
        except DumpIOError as e:
            raise OSError(errno.EIO, str(e)) from None
        self.crc = zlib.crc32(data, self.crc)
        self.position += len(data)
        if self.position >= self._next_update:
            self._next_update = self.position + HEADER_UPDATE_EVERY
            self.header.dump_length, self.header.dump_crc32 = self.position, self.crc
            try:
                self.area.write_header(self.header)
            except DumpIOError as e:
                raise OSError(errno.EIO, str(e)) from None


# ---- recovery ----------------------------------------------------------------------------------


class _AreaReader:
    """Reads ``length`` bytes of an area from ``start``, sequentially, with a running CRC-32."""

    def __init__(self, area: RawArea, start: int, length: int) -> None:
        self.area = area
        self.name = area.path
        self.pos = start
        self.end = start + length
        self.crc = 0

    def read(self, n: int = -1) -> bytes:
        left = self.end - self.pos
        n = left if n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = self.area.pread(self.pos, min(n, COPY_CHUNK))
        self.pos += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return data

    def readinto(self, view: memoryview) -> int:
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


@dataclass
class RecoverResult:
    """What :func:`recover` did."""

    device: str
    found: bool = False  # the area holds a kdumper header
    header: RawHeader | None = None
    status: str = "none"  # none | already | complete | incomplete
    dump_dir: str | None = None
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "device": self.device,
            "found": self.found,
            "status": self.status,
            "dump_dir": self.dump_dir,
            "files": self.files,
            "warnings": self.warnings,
            "header": self.header.to_dict() if self.header else None,
        }


def mark_kdump_incomplete(path: str) -> bool:
    """Set the incomplete flag in the header of the kdump-compressed file ``path``; False when
    the file is not one (or too damaged to tell)."""
    from ..dump.diskdump import STATUS_INCOMPLETE, KdumpDump
    from ..dump.io import FileSource

    try:
        with FileSource(path) as src:
            d = KdumpDump(src)
            h = d.header
            raw = d.layout.header.pack(*h._replace(status=h.status | STATUS_INCOMPLETE))
    except KdumperError:
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, raw, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


Say = Callable[[str], None]


def recover(
    area: RawArea,
    target_dir: str,
    *,
    extra_files: Callable[[str, RawHeader, str], list[str]] | None = None,
    say: Say = lambda _m: None,
    now: Callable[[], float] = time.time,
) -> RecoverResult:
    """Copy the dump of ``area`` (not yet recovered) into ``target_dir/<name>/`` and mark the area
    recovered. ``extra_files(dump_dir, header, vmcore_path)`` may add files (report.json,
    test-id) and returns their names; its failures are the caller's to report."""
    from .retention import create_dump_dir, write_file

    res = RecoverResult(device=area.path)
    header = area.read_header()
    if header is None:
        return res
    res.found, res.header = True, header
    if header.status == STATUS_RECOVERED:
        res.status = "already"
        return res
    name = header.name or f"raw-{time.strftime('%Y-%m-%d-%H-%M-%S', time.localtime(now()))}"
    dump_dir = create_dump_dir(target_dir, name)
    res.dump_dir = dump_dir
    say(f"recovering the {header.status_name} dump on {area.path} into {dump_dir}")
    if header.dmesg_length:
        log = area.pread(header.dmesg_offset, header.dmesg_length)
        write_file(os.path.join(dump_dir, "vmcore-dmesg.txt"), log)
        res.files.append("vmcore-dmesg.txt")
        if len(log) < header.dmesg_length:
            res.warnings.append("the kernel log on the device is cut short")
    vmcore = os.path.join(dump_dir, "vmcore")
    complete = header.status == STATUS_COMPLETE
    if header.dump_length:
        reader = _AreaReader(area, header.dump_offset, header.dump_length)
        try:
            reassemble_flat(cast(BinaryIO, reader), vmcore)
        except DumpFormatError as e:  # cut (killed, disk full) or damaged stream
            complete = False
            res.warnings.append(str(e))
        if complete and header.dump_crc32 != reader.crc:
            complete = False
            res.warnings.append(
                f"the stream on the device does not match its checksum "
                f"({reader.crc:#010x}, header says {header.dump_crc32:#010x}): data damaged"
            )
            os.replace(vmcore, vmcore + "-incomplete")
        if not complete:
            path = vmcore + "-incomplete"
            if os.path.exists(path) and not mark_kdump_incomplete(path):
                res.warnings.append(f"{path} is too damaged to be marked incomplete")
        res.files.append("vmcore" if complete else "vmcore-incomplete")
    else:
        complete = False
        res.warnings.append("the device holds no dump data (the capture stopped before it)")
    if extra_files is not None:
        res.files += extra_files(dump_dir, header, vmcore if complete else vmcore + "-incomplete")
    res.status = "complete" if complete else "incomplete"
    header.status = STATUS_RECOVERED
    header.recovered_at = int(now())
    area.write_header(header)
    return res


def recover_device(
    device: str,
    offset: int,
    target_dir: str,
    *,
    keep: int = 0,
    say: Say = lambda _m: None,
    now: Callable[[], float] = time.time,
    triage: TriageFn | None = None,
) -> RecoverResult:
    """:func:`recover` the area of ``device`` at ``offset`` into ``target_dir``, with
    ``report.json`` (``triage``'s analysis and the raw header's facts) and the ``test-id``
    file, then keep the newest ``keep`` dumps (after a complete recovery only).
    :class:`RawDeviceMissingError` when the device does not exist."""
    from ..handoff import TEST_ID_FILE
    from .retention import prune, write_file

    warnings: list[str] = []

    def extras(dump_dir: str, header: RawHeader, vmcore: str) -> list[str]:
        names = []
        if header.test_id:
            try:
                write_file(os.path.join(dump_dir, TEST_ID_FILE), f"{header.test_id}\n".encode())
                names.append(TEST_ID_FILE)
            except KdumperError as e:
                warnings.append(f"the test id could not be saved: {e}")
        if os.path.exists(vmcore):
            try:
                write_file(os.path.join(dump_dir, "report.json"), _report(vmcore, header, triage))
                names.append("report.json")
            except Exception as e:  # the report is optional: the dump is what matters
                warnings.append(f"the triage report could not be saved: {type(e).__name__}: {e}")
        return names

    with RawArea(device, offset, writable=True) as area:
        res = recover(area, target_dir, extra_files=extras, say=say, now=now)
    res.warnings += warnings
    if res.status == "complete" and keep > 0 and res.dump_dir:
        try:
            for path in prune(target_dir, keep, protect=res.dump_dir):
                say(f"deleted old dump {path} (keep = {keep})")
        except KdumperError as e:
            res.warnings.append(f"old dumps could not be deleted: {e}")
    return res


def _report(vmcore: str, header: RawHeader, triage: TriageFn | None) -> bytes:
    import json

    from .. import open as open_dump

    doc: dict[str, Any] = {}
    if triage is not None:
        with open_dump(vmcore) as dump:
            doc = triage(dump, [vmcore])
    doc["capture"] = {
        "status": header.status_name,
        "target": "raw",
        "name": header.name,
        "dump_level": header.dump_level,
        "codec": header.codec,
        "written_at": header.written_at,
        "bytes": header.dump_length,
    }
    return (json.dumps(doc, indent=2, default=str) + "\n").encode()
