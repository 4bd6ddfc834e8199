"""Open a dump of any format: sniff the first bytes, pick the reader (``kdumper.open``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import DumpFormatError, UnknownFormatError, UsageError
from .base import Dump
from .elf import ElfDump, is_elf
from .io import ByteSource, FileSource

SNIFF_SIZE = 4096

# (offset, magic, what it is); checked in order after the dump formats
_KNOWN_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1f\x8b", "gzip-compressed: decompress it first (gunzip)"),
    (0, b"\xfd7zXZ\x00", "xz-compressed: decompress it first (unxz)"),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed: decompress it first (unzstd)"),
    (0, b"BZh", "bzip2-compressed: decompress it first (bunzip2)"),
    (0, b"\x04\x22\x4d\x18", "lz4-compressed: decompress it first (unlz4)"),
    (0, b"PK\x03\x04", "a zip archive? unpack it first"),
    (257, b"ustar", "a tar archive? unpack it first"),
    (0, b"QEVM", "a QEMU savevm/migration stream, not a memory dump (use dump-guest-memory)"),
    (0, b"PAGEDU64", "a Windows crash dump, not a Linux one"),
    (0, b"PAGEDUMP", "a Windows crash dump, not a Linux one"),
    (0, b"makedumpfile", "a makedumpfile flattened stream with a bad header"),
    (0, b"\x7fELF", "an ELF file"),
)


def describe_head(head: bytes) -> str:
    """Say what the first bytes of a file look like, for an "unknown format" message."""
    if not head:
        return "the file is empty (0 bytes)"
    if not head.strip(b"\0"):
        return f"not a dump: the first {len(head)} bytes are all zero (a wiped or sparse file?)"
    for offset, magic, what in _KNOWN_MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return f"not a dump: starts with {_show(head[: max(4, offset + len(magic))])} ({what})"
    sample = head[:256]
    if all(32 <= b < 127 or b in b"\t\r\n" for b in sample):
        line = sample.decode("ascii").strip().splitlines()[0][:40] if sample.strip() else ""
        return f"not a dump: a text file (starts with {line!r})"
    return f"not a dump: starts with {_show(head[:8])} (unknown format)"


def _show(data: bytes) -> str:
    """``'PK\\x03\\x04'``: bytes as a Python literal without the ``b``."""
    return repr(data[:16])[1:] + ("..." if len(data) > 16 else "")


def open_dump(path: str | os.PathLike[str], *more: str | os.PathLike[str]) -> Dump:
    """Open ``path`` (ELF, kdump-compressed or flattened); several paths: a split set."""
    if more:
        return _open_split([os.fspath(path), *(os.fspath(p) for p in more)])
    path = os.fspath(path)
    _check_not_directory(path)
    src = FileSource(path)
    try:
        return open_source(src)
    except BaseException:
        src.close()
        raise


def open_source(src: ByteSource) -> Dump:
    """The dump in ``src``, recognised from its first bytes."""
    head = src.pread_upto(0, SNIFF_SIZE)
    if is_elf(head):
        return ElfDump(src)
    from .diskdump import KdumpDump, is_kdump

    if is_kdump(head):
        return KdumpDump(src)
    from .flattened import FlatSource, is_flattened

    if is_flattened(head):
        flat = FlatSource(src)
        inner = flat.pread_upto(0, SNIFF_SIZE)
        if is_kdump(inner):
            return KdumpDump(flat)  # format "flattened-kdump"
        if is_elf(inner):
            dump = ElfDump(flat)
            dump.format = "flattened-elf"
            return dump
        what = describe_head(inner).removeprefix("not a dump: ")
        raise UnknownFormatError(
            f"a makedumpfile flattened stream, but what it holds is neither kdump-compressed "
            f"nor ELF: {what}",
            path=src.path,
        )
    raise UnknownFormatError(describe_head(head), path=src.path)


def _check_not_directory(path: str) -> None:
    if not os.path.isdir(path):
        return
    hint = ""
    try:
        names = sorted(n for n in os.listdir(path) if n.startswith(("vmcore", "dump")))
    except OSError:
        names = []
    if names:
        hint = f"; did you mean {os.path.join(path, names[0])}?"
    raise UnknownFormatError(f"is a directory, not a dump file{hint}", path=path)


def _open_split(paths: Sequence[str]) -> Dump:
    """The parts of a makedumpfile ``--split`` set, in any order."""
    if len(set(map(os.path.realpath, paths))) != len(paths):
        raise UsageError("the same file is named twice in a split set")
    from .diskdump import KdumpDump, is_kdump
    from .flattened import is_flattened
    from .split import SplitDump, open_part

    parts: list[KdumpDump] = []
    try:
        for path in paths:
            _check_not_directory(path)
            with FileSource(path) as probe:
                head = probe.pread_upto(0, SNIFF_SIZE)
            if not (is_kdump(head) or is_flattened(head)):
                what = "an ELF core" if is_elf(head) else describe_head(head)
                raise DumpFormatError(
                    f"cannot be part of a split set ({what}); only kdump-compressed files "
                    "(makedumpfile --split parts) form one",
                    path=path,
                )
            parts.append(open_part(path))
        return SplitDump(parts)
    except BaseException:
        for part in parts:
            part.close()
        raise
