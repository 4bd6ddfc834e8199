"""The ``crashkernel=`` boot parameter: grammar, the reservation it gives, and how much to reserve.

Grammar (kernel/crash_reserve.c ``parse_crashkernel``, Documentation/admin-guide/kdump/kdump.rst,
kernel-parameters.txt)::

    crashkernel=size[KMG][@offset[KMG]]                       simple
    crashkernel=start-[end]:size[,start-[end]:size...][@offset] ranges, chosen by RAM size
    crashkernel=size[KMG],high   [+ crashkernel=size[KMG],low] may sit above 4 GiB
    crashkernel=size[KMG],cma                                  an extra CMA region (2025 kernels)
    crashkernel=auto                                           RHEL 8 kernels only

Numbers are the kernel's ``memparse``: ``simple_strtoull`` with base 0 (``0x`` hex, a leading
``0`` is octal) and an optional K/M/G/T/P/E suffix in either case. The kernel uses the LAST
``crashkernel=`` of each kind (plain, ``,high``, ``,low``, ``,cma``); a plain one wins over
``,high``. The ranges form is chosen when a ``:`` comes before the end of the value. RAM is rounded
UP to 128 MiB before matching ranges (``start <= ram < end``, empty end = no limit, first match
wins); an entry whose size is >= that RAM is an error, even if it does not match; no match means
nothing is reserved. A result >= RAM is refused.

The recommended size (:func:`recommend`) is documented there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import ExitCode, KdumperError
from ..handoff import split_cmdline

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

RAM_ROUNDING = 128 * MiB  # parse_crashkernel_mem: roundup(system_ram, SZ_128M)
SUFFIXES = ("high", "low", "cma")
HIGH_ARCHES = ("x86_64", "aarch64", "riscv64", "loongarch64")  # generic reservation arches
# DEFAULT_CRASH_KERNEL_LOW_SIZE: x86_64 max(swiotlb + 8M, 256M)
# (arch/x86/include/asm/crash_reserve.h); arm64, riscv and loongarch 128M.
DEFAULT_LOW = {"x86_64": 256 * MiB, "aarch64": 128 * MiB, "riscv64": 128 * MiB}
DEFAULT_LOW_OTHER = 128 * MiB

# crashkernel=auto of RHEL 8 kernels, per arch (RHEL 8 "Minimum amount of reserved memory
# required for kdump" table, the crashkernel=auto era). Upstream kernels reject "auto".
AUTO_TABLES = {
    "x86_64": "1G-4G:160M,4G-64G:192M,64G-1T:256M,1T-:512M",
    "s390x": "1G-4G:160M,4G-64G:192M,64G-1T:256M,1T-:512M",
    "aarch64": "2G-:448M",
    "ppc64le": "2G-4G:384M,4G-16G:512M,16G-64G:1G,64G-128G:2G,128G-:4G",
}

_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


class CrashkernelError(KdumperError):
    """A ``crashkernel=`` value the kernel would refuse."""

    exit_code = ExitCode.USAGE
    template = "crashkernel={value}: {msg}"

    def __init__(self, msg: str, value: str) -> None:
        super().__init__(msg, value=value)


def memparse(text: str, pos: int = 0) -> tuple[int, int]:
    """The kernel's ``memparse`` at ``pos``: (value, position after it); ValueError if no number."""
    m = _NUMBER.match(text, pos)
    if m is None:
        raise ValueError("memory value expected")
    digits = m.group()
    if digits.startswith(("0x", "0X")):
        value = int(digits, 16)
    elif len(digits) > 1 and digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    end = m.end()
    if end < len(text) and text[end].lower() in _SHIFT:
        value <<= _SHIFT[text[end].lower()]
        end += 1
    return value, end


def format_size(n: int) -> str:
    """A byte count in the largest unit that divides it exactly: ``256M``, ``1G``, ``4096``."""
    for unit, shift in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def mib(n: int) -> str:
    """``192 MiB`` (rounded) for messages."""
    return f"{n / MiB:.0f} MiB" if n % MiB else f"{n // MiB} MiB"


@dataclass(frozen=True)
class RangeEntry:
    """One ``start-[end]:size`` entry: reserve ``size`` when ``start <= RAM < end``."""

    start: int
    end: int | None  # None: no upper limit
    size: int

    def __str__(self) -> str:
        end = format_size(self.end) if self.end is not None else ""
        return f"{format_size(self.start)}-{end}:{format_size(self.size)}"


@dataclass(frozen=True)
class CrashkernelValue:
    """One parsed ``crashkernel=`` value."""

    text: str  # as written after "crashkernel="
    size: int | None = None  # simple and suffixed forms
    ranges: tuple[RangeEntry, ...] = ()
    offset: int | None = None
    suffix: str = ""  # "", "high", "low" or "cma"
    auto: bool = False

    @property
    def kind(self) -> str:
        """``simple``, ``ranges``, ``auto``, ``high``, ``low`` or ``cma``."""
        if self.suffix:
            return self.suffix
        return "auto" if self.auto else "ranges" if self.ranges else "simple"

    def canonical(self) -> str:
        """The value in canonical spelling (sizes in the largest exact unit)."""
        at = f"@{format_size(self.offset)}" if self.offset is not None else ""
        if self.auto:
            return "auto"
        if self.suffix:
            return f"{format_size(self.size or 0)},{self.suffix}"
        if self.ranges:
            return ",".join(str(r) for r in self.ranges) + at
        return f"{format_size(self.size or 0)}{at}"

    def size_for(self, ram: int, arch: str = "x86_64") -> int:
        """The size this value reserves on a machine with ``ram`` bytes (0: none)."""
        if self.auto:
            table = AUTO_TABLES.get(arch)
            return parse_value(table).size_for(ram, arch) if table else 0
        if not self.ranges:
            return self.size or 0
        total = -(-ram // RAM_ROUNDING) * RAM_ROUNDING
        for entry in self.ranges:
            if entry.size >= total:
                raise CrashkernelError(
                    f"range {entry} reserves {mib(entry.size)}, not less than the RAM "
                    f"({mib(total)} rounded up to 128 MiB): the kernel refuses it",
                    self.text,
                )
            if entry.start <= total and (entry.end is None or total < entry.end):
                return entry.size
        return 0


def _suffix_of(value: str) -> str:
    for suffix in SUFFIXES:
        if value.endswith("," + suffix):
            return suffix
    return ""


def parse_value(value: str) -> CrashkernelValue:
    """Parse the text after ``crashkernel=`` strictly; raises :class:`CrashkernelError`."""
    text = value.strip()
    if not text:
        raise CrashkernelError("empty value", value)
    if text == "auto":
        return CrashkernelValue(text=text, auto=True)
    try:
        suffix = _suffix_of(text)
        if suffix:
            size, pos = memparse(text)
            if pos != len(text) - len(suffix) - 1:
                raise ValueError(f"unexpected {text[pos]!r}: ,{suffix} takes a plain size")
            return CrashkernelValue(text=text, size=size, suffix=suffix)
        if ":" in text:
            return _parse_ranges(text)
        size, pos = memparse(text)
        offset = None
        if pos < len(text) and text[pos] == "@":
            offset, pos = memparse(text, pos + 1)
        if pos != len(text):
            raise ValueError(f"unrecognized character {text[pos]!r}")
        return CrashkernelValue(text=text, size=size, offset=offset)
    except ValueError as e:
        raise CrashkernelError(str(e), value) from None


def _parse_ranges(text: str) -> CrashkernelValue:
    entries: list[RangeEntry] = []
    pos = 0
    while True:
        start, pos = memparse(text, pos)
        if pos >= len(text) or text[pos] != "-":
            raise ValueError(f"'-' expected after {format_size(start)}")
        pos += 1
        end: int | None = None
        if pos < len(text) and text[pos] != ":":
            end, pos = memparse(text, pos)
            if end <= start:
                raise ValueError(f"range end {format_size(end)} <= start {format_size(start)}")
        if pos >= len(text) or text[pos] != ":":
            raise ValueError("':' expected in a range")
        size, pos = memparse(text, pos + 1)
        entries.append(RangeEntry(start, end, size))
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        break
    offset = None
    if pos < len(text) and text[pos] == "@":
        offset, pos = memparse(text, pos + 1)
    if pos != len(text):
        raise ValueError(f"unrecognized character {text[pos]!r}")
    return CrashkernelValue(text=text, ranges=tuple(entries), offset=offset)


@dataclass(frozen=True)
class CrashkernelArgs:
    """The ``crashkernel=`` parameters of one command line: the last of each kind."""

    main: CrashkernelValue | None = None
    high: CrashkernelValue | None = None
    low: CrashkernelValue | None = None
    cma: CrashkernelValue | None = None
    all_values: tuple[str, ...] = ()  # every crashkernel= value, in order
    errors: tuple[str, ...] = ()  # values that do not parse (the kernel ignores or refuses them)

    @property
    def present(self) -> bool:
        """Whether any ``crashkernel=`` is on the command line."""
        return bool(self.all_values)

    def text(self) -> str:
        """The effective parameters, space separated (``crashkernel=512M,high crashkernel=...``)."""
        parts = [v.text for v in (self.main, self.high, self.low, self.cma) if v is not None]
        return " ".join(f"crashkernel={p}" for p in parts)


def parse_cmdline(cmdline: str | Iterable[str]) -> CrashkernelArgs:
    """Find the ``crashkernel=`` parameters of a command line (before any ``--``)."""
    params = split_cmdline(cmdline) if isinstance(cmdline, str) else list(cmdline)
    found: dict[str, CrashkernelValue] = {}
    values: list[str] = []
    errors: list[str] = []
    for param in params:
        if param == "--":
            break
        if not param.startswith("crashkernel="):
            continue
        raw = param[len("crashkernel=") :].strip('"')
        values.append(raw)
        try:
            value = parse_value(raw)
        except CrashkernelError as e:
            errors.append(str(e))
            found.pop(_suffix_of(raw) or "main", None)  # the last one of its kind is what counts
            continue
        found[value.suffix or "main"] = value
    return CrashkernelArgs(
        main=found.get("main"),
        high=found.get("high"),
        low=found.get("low"),
        cma=found.get("cma"),
        all_values=tuple(values),
        errors=tuple(errors),
    )


@dataclass(frozen=True)
class Reservation:
    """What a command line reserves on a machine (the kernel's view at boot)."""

    size: int  # the main region, bytes (0: nothing reserved)
    low: int = 0  # the extra region below 4 GiB for ``,high``
    cma: int = 0
    offset: int | None = None
    high: bool = False
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Bytes taken from the first kernel (main + low; CMA stays usable)."""
        return self.size + self.low


def compute_reservation(args: CrashkernelArgs, ram: int, arch: str = "x86_64") -> Reservation:
    """The reservation ``args`` give on a machine with ``ram`` bytes of System RAM.

    Raises :class:`CrashkernelError` where the kernel refuses the value (and reserves nothing).
    """
    notes: list[str] = []
    cma = args.cma.size or 0 if args.cma is not None else 0
    if args.main is not None:
        value = args.main
        if value.auto:
            if arch in AUTO_TABLES:
                notes.append(
                    f"'auto' is understood by RHEL 8 kernels only ({AUTO_TABLES[arch]}); "
                    "upstream kernels reserve nothing"
                )
            else:
                notes.append("'auto' is not understood by upstream kernels: nothing is reserved")
        if args.high is not None:
            notes.append("crashkernel=...,high is ignored because a plain crashkernel= is given")
        size = value.size_for(ram, arch)
        if size == 0:
            notes.append("crashkernel size resulted in zero bytes: no range matches this RAM")
            return Reservation(0, cma=cma, notes=tuple(notes))
        if size >= ram:
            raise CrashkernelError(
                f"{mib(size)} is not less than the RAM ({mib(ram)}): the kernel refuses it",
                value.text,
            )
        if arch in HIGH_ARCHES and value.offset is None:
            notes.append(
                "if no room is found below 4 GiB the kernel places it higher and adds "
                f"{mib(DEFAULT_LOW.get(arch, DEFAULT_LOW_OTHER))} below 4 GiB"
            )
        return Reservation(size, offset=value.offset, cma=cma, notes=tuple(notes))
    if args.high is not None:
        if arch not in HIGH_ARCHES:
            notes.append(f"crashkernel=...,high is not supported on {arch}")
            return Reservation(0, notes=tuple(notes))
        size = args.high.size or 0
        if size == 0:
            raise CrashkernelError("a ,high size of zero reserves nothing", args.high.text)
        if size >= ram:
            raise CrashkernelError(
                f"{mib(size)} is not less than the RAM ({mib(ram)})", args.high.text
            )
        if args.low is not None:
            low = args.low.size or 0
        else:
            low = DEFAULT_LOW.get(arch, DEFAULT_LOW_OTHER)
            notes.append(f"no crashkernel=...,low: the kernel adds {mib(low)} below 4 GiB")
        return Reservation(size, low=low, cma=cma, high=True, notes=tuple(notes))
    if args.low is not None:
        notes.append("crashkernel=...,low alone is ignored (it only goes with ,high)")
    return Reservation(0, cma=cma, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# The reservation in force now

_IOMEM_LINE = re.compile(r"^(\s*)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


@dataclass(frozen=True)
class IomemRange:
    """One ``/proc/iomem`` line."""

    start: int
    end: int  # inclusive, as printed
    name: str
    depth: int

    @property
    def size(self) -> int:
        """Bytes in the range (0 when the addresses are hidden from non-root readers)."""
        return self.end - self.start + 1 if self.end >= self.start and self.end else 0


def parse_iomem(text: str) -> list[IomemRange]:
    """All ranges of ``/proc/iomem`` text (nesting depth from the indentation)."""
    out = []
    for line in text.splitlines():
        m = _IOMEM_LINE.match(line)
        if m:
            out.append(
                IomemRange(
                    int(m.group(2), 16),
                    int(m.group(3), 16),
                    m.group(4).strip(),
                    len(m.group(1)) // 2,
                )
            )
    return out


def system_ram(iomem: Iterable[IomemRange]) -> int:
    """Bytes of top-level ``System RAM`` (what the kernel matches ranges against)."""
    return sum(r.size for r in iomem if r.name == "System RAM" and r.depth == 0)


@dataclass(frozen=True)
class CurrentReservation:
    """The crash kernel memory reserved in the running kernel."""

    size: int  # /sys/kernel/kexec_crash_size (bytes; 0 = none); falls back to /proc/iomem
    ranges: tuple[tuple[int, int], ...] = ()  # "Crash kernel" ranges from /proc/iomem
    addresses_hidden: bool = False  # /proc/iomem read without root shows zeros
    source: str = ""

    @property
    def reserved(self) -> bool:
        """Whether any memory is reserved."""
        return self.size > 0 or any(end > start for start, end in self.ranges)


def current_reservation(iomem_text: str | None, crash_size_text: str | None) -> CurrentReservation:
    """The reservation now, from ``/proc/iomem`` text and ``/sys/kernel/kexec_crash_size`` text.

    Either may be None (file missing). ``kexec_crash_size`` counts the main region only; the
    ``,low`` region shows up in ``/proc/iomem`` as a second "Crash kernel" line.
    """
    ranges: list[tuple[int, int]] = []
    hidden = False
    if iomem_text is not None:
        for r in parse_iomem(iomem_text):
            if r.name == "Crash kernel":
                ranges.append((r.start, r.end))
                hidden = hidden or (r.start == 0 and r.end == 0)
    size = 0
    source = ""
    if crash_size_text is not None and crash_size_text.strip():
        try:
            size = int(crash_size_text.strip(), 0)
            source = "kexec_crash_size"
        except ValueError:
            size = 0
    if not size and ranges and not hidden:
        size = sum(end - start + 1 for start, end in ranges)
        source = "iomem"
    return CurrentReservation(size, tuple(ranges), hidden, source)


# ---------------------------------------------------------------------------------------------
# How much to reserve

ALIGN = 16 * MiB  # x86_64 CRASH_ALIGN; the other arches need less (arm64 2 MiB)
MIN_RAM = 1 * GiB  # below this, 256 MiB would take over a quarter of the machine
BASE_ROOTFS = 256 * MiB
BASE_LARGE = 512 * MiB
LARGE_RAM = 64 * GiB
PER_TIB = 64 * MiB
USERSPACE_ROOTFS = 96 * MiB
KERNEL_FACTOR = 6
RUNTIME = 16 * MiB


@dataclass(frozen=True)
class Recommendation:
    """A recommended reservation and how it was worked out."""

    size: int  # bytes; 0 = do not reserve (too little RAM)
    value: str  # the crashkernel= value to write
    table_size: int
    footprint: int | None
    reason: str
    parts: dict[str, int] = field(default_factory=dict)


def table_size(ram: int) -> int:
    """The RAM-based part of :func:`recommend` (0 below 1 GiB)."""
    ram = -(-ram // RAM_ROUNDING) * RAM_ROUNDING  # as the kernel matches ranges
    if ram < MIN_RAM:
        return 0
    if ram < LARGE_RAM:
        return BASE_ROOTFS
    return BASE_LARGE + PER_TIB * (ram // TiB)


def footprint(kernel_size: int, initrd_size: int) -> int:
    """Estimated memory the capture environment needs (see :func:`recommend`)."""
    need = KERNEL_FACTOR * kernel_size + 3 * initrd_size + USERSPACE_ROOTFS + RUNTIME
    return -(-need // ALIGN) * ALIGN


def auto_value(ram: int) -> str:
    """The ranges value of the RAM table, open-ended past this machine's bracket."""
    entries = ["1G-64G:256M"]
    if ram >= LARGE_RAM:
        entries.append("64G-1T:512M")
        tib = 1
        while ram >= tib * TiB:
            size = table_size(tib * TiB)
            entries.append(f"{tib}T-{tib + 1}T:{format_size(size)}")
            tib += 1
        last = entries.pop()
        entries.append(last.split("-")[0] + "-:" + last.split(":")[1])
    else:
        entries.append("64G-:512M")
    return ",".join(entries)


def recommend(
    ram: int, *, kernel_size: int | None = None, initrd_size: int | None = None
) -> Recommendation:
    """How much to reserve for kdumper's capture on a machine with ``ram`` bytes of RAM.

    kdumper captures in "rootfs" mode: the capture kernel boots the machine's own initrd and root
    filesystem and runs systemd, Python, numpy and kdumper. The size is the larger of

    * the RAM table (RAM rounded up to 128 MiB, as the kernel does): 256 MiB from 1 GiB to
      64 GiB of RAM, 512 MiB from 64 GiB, plus 64 MiB for each whole TiB. 256 MiB is what the
      project's QEMU harness captures with (the capture kernel then sees ~215 MiB; 80 MiB is
      the measured minimum for a busybox initramfs, 72 MiB failed), and it is Fedora's current
      x86_64 default (raised from 192 MiB after NFS captures needed 238 MiB). 512 MiB from
      64 GiB is Fedora's and RHEL's step for large machines (more CPUs, devices and queues).
      +64 MiB per TiB follows RHEL 8's 1T step and covers the per-RAM metadata the capture
      kernel keeps for the old memory (vmcore segment list, page tables mapping it,
      mem_section);
    * the measured footprint, when the kernel and initrd sizes are known:
      6 x kernel image (decompressed kernel, bss and early allocations: Debian's estimator
      factor for x86) + 3 x initrd (unpacked into tmpfs, as kdumpctl estimate counts it)
      + 96 MiB user space (systemd, journald and udevd ~30 MiB; Python 3.11 with numpy and the
      codecs ~45 MiB; the pipeline's bounded compression buffers ~16 MiB) + 16 MiB runtime,
      rounded up to 16 MiB.

    Below 1 GiB of RAM nothing is recommended (size 0).
    """
    table = table_size(ram)
    fp = None
    parts: dict[str, int] = {"ram": ram, "table": table}
    if kernel_size is not None and initrd_size is not None:
        fp = footprint(kernel_size, initrd_size)
        parts.update(kernel=kernel_size, initrd=initrd_size, footprint=fp)
    if table == 0:
        return Recommendation(
            0,
            "",
            0,
            fp,
            f"{mib(ram)} of RAM is less than 1 GiB: a capture environment with systemd and "
            "Python needs 256 MiB, over a quarter of this machine",
            parts,
        )
    if fp is not None and fp > table:
        return Recommendation(
            fp,
            format_size(fp),
            table,
            fp,
            f"the capture environment's footprint ({mib(fp)}) is larger than the RAM table's "
            f"{mib(table)}",
            parts,
        )
    return Recommendation(
        table,
        auto_value(ram),
        table,
        fp,
        f"{mib(table)} for {mib(ram)} of RAM (RAM table)",
        parts,
    )
