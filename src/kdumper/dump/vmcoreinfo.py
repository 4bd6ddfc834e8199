"""VMCOREINFO text (``KEY=VALUE`` lines the crashed kernel exported) → typed lookups.

Parsing is lenient (a malformed line is recorded in :attr:`VmcoreInfo.problems` and skipped) and
lookups are strict (asking for a value that is present but malformed raises
:class:`DumpFormatError`), so one bad line does not hide the rest of a dump.
Key forms, as the kernel writes them (kernel/vmcore_info.c): ``SYMBOL(name)`` hex without 0x,
``SIZE``/``OFFSET``/``LENGTH`` decimal, ``NUMBER`` signed decimal, plus plain keys.
"""

from __future__ import annotations

from dataclasses import field

from ..errors import DumpFormatError
from ..records import record

MAX_VMCOREINFO = 1 << 20  # the kernel's note is one page; QEMU caps its copy at 1 MiB


def _int(text: str, base: int) -> int:
    text = text.strip()
    try:
        return int(text, base)
    except ValueError:
        # makedumpfile retries decimal fields as hex and accepts an explicit 0x
        return int(text, 16 if base == 10 else 0)


@record
class VmcoreInfo:
    """The parsed VMCOREINFO; the first occurrence of a key wins (as in makedumpfile)."""

    entries: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    raw: str = ""

    @classmethod
    def parse(cls, data: bytes | str) -> VmcoreInfo:
        """Parse the note text; NUL padding and malformed lines are tolerated."""
        if isinstance(data, bytes):
            data = data[:MAX_VMCOREINFO].split(b"\0", 1)[0].decode("utf-8", "replace")
        info = cls(raw=data)
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key or key != key.strip():
                info.problems.append(f"line {lineno}: not KEY=VALUE: {line[:60]!r}")
                continue
            info.entries.setdefault(key, value)
        return info

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> str | None:
        """The raw value of ``key``."""
        return self.entries.get(key)

    def _typed(self, key: str, base: int) -> int | None:
        value = self.entries.get(key)
        if value is None:
            return None
        try:
            return _int(value, base)
        except ValueError:
            raise DumpFormatError(
                f"VMCOREINFO {key} has a malformed value {value[:40]!r}"
            ) from None

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``: a run-time virtual address (KASLR applied)."""
        return self._typed(f"SYMBOL({name})", 16)

    def size(self, name: str) -> int | None:
        """``SIZE(name)``: sizeof a type."""
        return self._typed(f"SIZE({name})", 10)

    def offset(self, struct_name: str, member: str) -> int | None:
        """``OFFSET(struct.member)``."""
        return self._typed(f"OFFSET({struct_name}.{member})", 10)

    def length(self, name: str) -> int | None:
        """``LENGTH(name)``: an array length."""
        return self._typed(f"LENGTH({name})", 10)

    def number(self, name: str) -> int | None:
        """``NUMBER(name)``: a signed constant."""
        return self._typed(f"NUMBER({name})", 10)

    @property
    def osrelease(self) -> str | None:
        """``OSRELEASE``: the kernel release (``uname -r``)."""
        return self.entries.get("OSRELEASE")

    @property
    def page_size(self) -> int | None:
        """``PAGESIZE`` in bytes."""
        return self._typed("PAGESIZE", 10)

    @property
    def crashtime(self) -> int | None:
        """``CRASHTIME``: seconds since the epoch when the kernel crashed."""
        return self._typed("CRASHTIME", 10)

    @property
    def kerneloffset(self) -> int | None:
        """``KERNELOFFSET``: the KASLR slide of the kernel image (hex)."""
        return self._typed("KERNELOFFSET", 16)

    @property
    def build_id(self) -> str | None:
        """``BUILD-ID`` of vmlinux (hex), when exported (5.9+)."""
        return self.entries.get("BUILD-ID")

    def text(self) -> str:
        """The text as the kernel wrote it."""
        return self.raw
