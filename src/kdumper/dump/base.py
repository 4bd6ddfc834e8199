"""The dump object every reader returns: physical pages, bitmaps, notes, VMCOREINFO,
header facts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from functools import cached_property
from typing import Any

from ..errors import KdumperError, PageNotPresentError
from ..records import record
from .arch import Arch
from .bitmap import Bitmap
from .notes import Note, PrStatus, find_vmcoreinfo_note, parse_prstatus
from .vmcoreinfo import VmcoreInfo

UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
UTS_LEN = 65


@record(frozen=True)
class Utsname:
    """``struct new_utsname`` of the crashed kernel."""

    sysname: str = ""
    nodename: str = ""
    release: str = ""
    version: str = ""
    machine: str = ""
    domainname: str = ""

    @classmethod
    def unpack(cls, raw: bytes) -> Utsname:
        """Six NUL-padded 65-byte fields."""
        vals = [
            raw[i * UTS_LEN : (i + 1) * UTS_LEN].split(b"\0", 1)[0].decode("utf-8", "replace")
            for i in range(6)
        ]
        return cls(*vals)

    def pack(self) -> bytes:
        """The 390-byte on-disk form."""
        return b"".join(
            getattr(self, f).encode()[: UTS_LEN - 1].ljust(UTS_LEN, b"\0") for f in UTS_FIELDS
        )


@record
class DumpFacts:
    """What a dump's headers say about it (``kdumper info``)."""

    format: str  # "elf", "kdump", "flattened-kdump", "flattened-elf", "split-kdump", ...
    header_version: int | None = None
    utsname: Utsname | None = None
    crash_time: int | None = None  # seconds since the epoch
    nr_cpus: int | None = None
    dump_level: int | None = None
    status: int | None = None  # the raw kdump-compressed status word
    compression: str | None = None  # header-level codec ("zlib", "lzo", "snappy", "zstd", "none")
    incomplete: bool = False
    phys_base: int | None = None
    split: tuple[int, int] | None = None  # (start_pfn, end_pfn) of one part
    parts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@record
class WriteResult:
    """What a writer produced."""

    path: str
    format: str  # "kdump", "elf", "flattened-kdump", ...
    pages: int = 0  # pages recorded in the output (zero pages included)
    zero_pages: int = 0  # pages stored as the shared zero page (kdump) or cut out (ELF)
    raw_pages: int = 0  # pages stored uncompressed because compression did not shrink them
    bytes_in: int = 0  # page bytes read from the source
    bytes_out: int = 0  # size of the output
    incomplete: bool = False  # the output was cut short and is marked so in its header
    codec: str = "none"


class Dump(ABC):
    """A crash dump of any format, seen as physical pages of the crashed machine.

    Subclasses set ``path``, ``arch``, ``page_size``, ``max_pfn``, ``notes`` and implement
    ``present``, ``dumped``, ``read_pfn`` and ``facts``.
    """

    path: str
    format: str
    arch: Arch
    page_size: int
    max_pfn: int  # pfns are in [0, max_pfn)
    notes: list[Note]

    @property
    @abstractmethod
    def present(self) -> Bitmap:
        """Pfns of the crashed machine's RAM (kdump-compressed 1st bitmap; ELF PT_LOAD ranges)."""

    @property
    @abstractmethod
    def dumped(self) -> Bitmap:
        """Pfns whose contents the dump holds (2nd bitmap; ELF file-backed ranges)."""

    @abstractmethod
    def read_pfn(self, pfn: int) -> bytes:
        """One page; ``PageNotPresentError``, ``PageExcludedError`` or ``PageIncompleteError``."""

    @abstractmethod
    def facts(self) -> DumpFacts:
        """The header facts."""

    def is_zero_pfn(self, pfn: int) -> bool:
        """Whether the format records ``pfn`` as a zero page without reading it (kdump)."""
        return False

    def codec_counts(self) -> dict[str, int]:
        """Pages per storage kind ("zlib", "raw", "zero", ...) where the format records it."""
        return {}

    @cached_property
    def vmcoreinfo(self) -> VmcoreInfo | None:
        """The parsed VMCOREINFO, or None when the dump has none."""
        note = find_vmcoreinfo_note(self.notes)
        return VmcoreInfo.parse(note.desc) if note is not None else None

    @cached_property
    def prstatus(self) -> list[PrStatus]:
        """Registers of each CPU from the NT_PRSTATUS notes."""
        return parse_prstatus(self.notes, self.arch)

    def read_pages(self, pfn: int, count: int) -> bytes:
        """``count`` consecutive pages from ``pfn`` on (formats override this with bulk reads)."""
        return b"".join(self.read_pfn(p) for p in range(pfn, pfn + count))

    def read_phys_many(self, addrs: list[int], size: int) -> list[bytes | None]:
        """``size`` bytes at each physical address; None where they cannot be read."""
        out: list[bytes | None] = []
        for addr in addrs:
            try:
                out.append(self.read_phys(addr, size))
            except KdumperError:
                out.append(None)
        return out

    def read_pages_into(self, pfn: int, count: int, out: memoryview) -> None:
        """Fill ``out`` (``count`` pages) with the pages from ``pfn`` on; as :meth:`read_pages`."""
        out[:] = self.read_pages(pfn, count)

    def read_phys(self, addr: int, size: int) -> bytes:
        """``size`` bytes of physical memory at ``addr`` (may span pages)."""
        if size <= 0:
            return b""
        ps = self.page_size
        first = addr // ps
        data = self.read_pages(first, (addr + size - 1) // ps - first + 1)
        start = addr - first * ps
        return data[start : start + size]

    def check_pfn(self, pfn: int) -> None:
        """Raise :class:`PageNotPresentError` unless ``pfn`` is RAM in this dump."""
        if not self.present.test(pfn):
            raise PageNotPresentError(pfn)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and maps."""

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
