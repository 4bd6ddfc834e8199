"""One exception root for kdumper; every error carries a stable exit code.

The library raises these; only ``kdumper.cli`` turns them into a message line and an exit code.
Each class has a message template filled from keyword arguments, so the text of an error is
decided in one place (the borg style).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar


class ExitCode(IntEnum):
    """Process exit codes of the ``kdumper`` command (listed in the README)."""

    OK = 0
    ERROR = 1  # unexpected internal error (a bug: please report it)
    USAGE = 2  # wrong command line
    NOT_OPERATIONAL = 3  # `kdumper status`: the machine is not protected
    BAD_DUMP = 4  # a dump file is corrupt, truncated or of an unknown format
    NOT_FOUND = 5  # a file, device or page that was asked for does not exist
    IO = 6  # reading or writing failed (disk full, broken pipe, I/O error)
    MISSING_DEPENDENCY = 7  # an optional library or tool is not installed
    CONFIG = 8  # the configuration is wrong
    KERNEL = 9  # the kernel refused (kexec, sysfs, permissions)
    INCOMPLETE = 10  # the work finished but the result is incomplete (dump truncated)
    UNSUPPORTED = 11  # valid input that this version cannot handle


class KdumperError(Exception):
    """Root of every error kdumper raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.ERROR
    template: ClassVar[str] = "{msg}"

    def __init__(self, msg: str = "", **fields: Any) -> None:
        self.fields = dict(fields, msg=msg)
        try:
            text = self.template.format(**self.fields)
        except (KeyError, IndexError):
            text = msg or self.template
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt without calling __init__ (subclasses take other arguments), so an error raised
        # in a compression worker process reaches the parent with its class, text and fields
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[KdumperError], args: tuple[Any, ...], state: dict[str, Any]) -> KdumperError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class UsageError(KdumperError):
    """The command line or an argument is wrong."""

    exit_code = ExitCode.USAGE


class DumpFormatError(KdumperError):
    """A dump file is corrupt, truncated, or not a dump at all."""

    exit_code = ExitCode.BAD_DUMP
    template = "{path}: {msg}"

    def __init__(self, msg: str, path: str = "dump", **fields: Any) -> None:
        super().__init__(msg, path=path, **fields)


class TruncatedDumpError(DumpFormatError):
    """A structure of the dump lies past the end of the file."""


class UnknownFormatError(DumpFormatError):
    """The file is not in any dump format kdumper knows."""


class PageNotPresentError(KdumperError):
    """A physical page outside the crashed machine's RAM was asked for."""

    exit_code = ExitCode.NOT_FOUND
    template = "pfn {pfn:#x} is not present in the dump (not RAM)"

    def __init__(self, pfn: int) -> None:
        super().__init__("", pfn=pfn)
        self.pfn = pfn


class PageExcludedError(PageNotPresentError):
    """A page of RAM that the dump does not contain (filtered out or lost)."""

    template = "pfn {pfn:#x} was excluded from the dump"


class PageIncompleteError(PageNotPresentError):
    """A page whose data was lost because the dump was cut short."""

    template = "pfn {pfn:#x} is missing: the dump is incomplete"


class MissingDependencyError(KdumperError):
    """An optional library or program is needed but not installed."""

    exit_code = ExitCode.MISSING_DEPENDENCY
    template = "{what} needs {package}, which is not installed ({hint})"

    def __init__(self, what: str, package: str, hint: str) -> None:
        super().__init__("", what=what, package=package, hint=hint)


class DumpIOError(KdumperError):
    """Reading or writing a dump failed at the operating-system level."""

    exit_code = ExitCode.IO
    template = "{path}: {msg}"

    def __init__(self, msg: str, path: str = "", **fields: Any) -> None:
        super().__init__(msg, path=path, **fields)


class NoSpaceError(DumpIOError):
    """The target ran out of space; what was written is still readable."""


class InputNotFoundError(KdumperError):
    """A file or device named by the user does not exist."""

    exit_code = ExitCode.NOT_FOUND
    template = "{path}: no such file or device"

    def __init__(self, path: str) -> None:
        super().__init__("", path=path)


class UnsupportedError(KdumperError):
    """Valid input that this version of kdumper cannot handle."""

    exit_code = ExitCode.UNSUPPORTED


class ConfigError(KdumperError):
    """The configuration is wrong; the message names file, line and key."""

    exit_code = ExitCode.CONFIG


class KernelError(KdumperError):
    """The running kernel refused an operation."""

    exit_code = ExitCode.KERNEL


class AddressNotMappedError(KdumperError):
    """A kernel virtual address that the crashed kernel's page tables do not map."""

    exit_code = ExitCode.NOT_FOUND
    template = "virtual address {vaddr:#x} is not mapped ({msg})"

    def __init__(self, vaddr: int, msg: str = "no page table entry") -> None:
        super().__init__(msg, vaddr=vaddr)
        self.vaddr = vaddr
