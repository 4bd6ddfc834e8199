"""Kernel crash reports in a kernel log: oops, panic, BUG, WARNING, sanitizers, lockups, OOM.

The input is the kernel log as lines: from a dump (:func:`lines_from_records` over
:class:`kdumper.kernel.printk.LogRecord`), or from text (:func:`lines_from_text`: a saved dmesg with
or without ``[    1.234567]`` time stamps and ``[  T123]`` / ``[   C1]`` caller ids, syslog or
journal lines ``Nov 26 08:00:00 host kernel: ...``, ``/dev/kmsg`` records, a serial console capture
with noise between and inside the kernel's lines). :func:`parse_log` finds every report and
returns typed :class:`Report` records; :func:`primary` says which one is *the* crash.

How a report is found:

* a header line starts it (``BUG: kernel NULL pointer dereference``, ``kernel BUG at``,
  ``WARNING: CPU:``, ``Kernel panic - not syncing:``, ``watchdog: BUG: soft lockup``, ...; the
  table is ``_PATTERNS``); the ``cut here`` / ``=====`` line just before it is included;
* the body is every following line until the next header, an end marker (``---[ end trace``,
  the closing ``=====`` of a sanitizer report, ``---[ end Kernel panic``), or, once a stack has
  been seen, a run of lines that do not look like part of a report (a log going on with its
  business). The ``Oops: 0002 [#1]`` / ``invalid opcode: 0000 [#1]`` line that follows a
  ``BUG:`` header belongs to it rather than starting a new report;
* when the log records caller ids, lines of other callers (another CPU or task printing at the
  same time) are skipped, so interleaved reports come apart cleanly.

Nothing here raises on odd input: an unparsable line is noise, a truncated report is still a
report with the fields it has. Known limits: two CPUs printing at once without caller ids mix
their lines (nothing can separate them); lines a mail client wrapped lose what follows the wrap;
kmemleak and KCSAN reports get generic handling; arm64, arm, powerpc and riscv traces are parsed
but only x86_64 output is pinned by tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "Frame",
    "Kind",
    "LogLine",
    "Report",
    "Stack",
    "lines_from_records",
    "lines_from_text",
    "parse_log",
    "primary",
    "report_to_dict",
    "split_prefix",
]


class Kind(StrEnum):
    """The kind of a report: what the kernel detected."""

    PANIC = "panic"  #: ``Kernel panic - not syncing: ...`` with no more specific cause
    PAGE_FAULT = "page_fault"  #: ``BUG: unable to handle page fault for address`` (paging request)
    NULL_DEREF = "null_deref"  #: ``BUG: kernel NULL pointer dereference``
    GPF = "gpf"  #: ``general protection fault``
    BUG = "bug"  #: ``kernel BUG at file:line!`` (``BUG()`` / ``BUG_ON()``)
    OOPS = "oops"  #: another CPU exception: divide error, invalid opcode, double fault, ...
    WARNING = "warning"  #: ``WARNING: CPU: N PID: N at file:line func`` (``WARN()``)
    KASAN = "kasan"  #: ``BUG: KASAN: use-after-free in ...``
    KFENCE = "kfence"  #: ``BUG: KFENCE: out-of-bounds read in ...``
    KMSAN = "kmsan"  #: ``BUG: KMSAN: uninit-value in ...``
    KCSAN = "kcsan"  #: ``BUG: KCSAN: data-race in ...``
    UBSAN = "ubsan"  #: ``UBSAN: array-index-out-of-bounds in ...``
    LOCKDEP = "lockdep"  #: lockdep: circular dependency, inconsistent lock state, ...
    HUNG_TASK = "hung_task"  #: ``INFO: task X:PID blocked for more than N seconds.``
    SOFT_LOCKUP = "soft_lockup"  #: ``watchdog: BUG: soft lockup - CPU#N stuck for 22s!``
    HARD_LOCKUP = "hard_lockup"  #: ``Watchdog detected hard LOCKUP on cpu N``
    RCU_STALL = "rcu_stall"  #: ``rcu: INFO: rcu_preempt detected stalls on CPUs/tasks``
    OOM = "oom"  #: the OOM killer ran (``invoked oom-killer``, ``Out of memory: Killed process``)
    SYSRQ = "sysrq"  #: a crash asked for with SysRq-c (``sysrq triggered crash``)
    OTHER_BUG = "other_bug"  #: another ``BUG: ...`` (scheduling while atomic, bad page state, ...)


#: kinds that are a CPU exception the kernel died in (``die()``: an "Oops")
OOPS_KINDS = frozenset(
    {Kind.PAGE_FAULT, Kind.NULL_DEREF, Kind.GPF, Kind.BUG, Kind.OOPS, Kind.SYSRQ}
)
#: kinds reported through ``check_panic_on_warn()`` (they panic when ``panic_on_warn`` is set)
WARN_KINDS = frozenset(
    {
        Kind.WARNING,
        Kind.KASAN,
        Kind.KFENCE,
        Kind.KMSAN,
        Kind.KCSAN,
        Kind.UBSAN,
        Kind.LOCKDEP,
        Kind.OTHER_BUG,
        Kind.HARD_LOCKUP,
    }
)


# --------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class LogLine:
    """One line of the kernel log, its prefixes removed."""

    text: str  #: the kernel's text, without time stamp, caller id or syslog prefix
    caller: str | None = None  #: ``T123`` (task) or ``C1`` (CPU) when the log records caller ids
    time: float | None = None  #: seconds since boot, when the line had a time stamp


@dataclass(frozen=True)
class Frame:
    """One frame of a stack trace (or the faulting instruction of a register dump)."""

    function: str  #: symbol as printed, suffixes included (``foo.isra.0``); "" if only an address
    offset: int | None = None  #: offset into the function (``+0x12``)
    size: int | None = None  #: the function's size (``/0x40``)
    module: str | None = None  #: module the function is in (``[ext4]``); None for the kernel image
    reliable: bool = True  #: False when the unwinder printed it with ``?`` (a guess)
    context: str = ""  #: stack section: ``task``, ``irq``, ``softirq``, ``nmi``, ``exception``, ""
    address: int | None = None  #: the address when printed (``[<ffffffff81234567>]``)
    source: str | None = None  #: ``file.c:123`` when the trace was symbolized
    inline: bool = False  #: a symbolized inlined frame (``[inline]``)
    regs: bool = False  #: taken from a register dump (``RIP: 0010:...``) inside the trace

    def symbol(self) -> str:
        """``function+0xoff/0xsize [module]`` as the kernel prints it."""
        text = self.function or (f"{self.address:#x}" if self.address is not None else "?")
        if self.offset is not None and self.size is not None:
            text += f"+{self.offset:#x}/{self.size:#x}"
        if self.module:
            text += f" [{self.module}]"
        return text


@dataclass(frozen=True)
class Stack:
    """One stack trace of a report."""

    label: str  #: the line that introduced it (``Call Trace``, ``Freed by task 815``, ...)
    frames: tuple[Frame, ...]  #: innermost first, as printed


@dataclass(frozen=True)
class Report:
    """One crash report found in a kernel log."""

    kind: Kind  #: what was detected
    first_line: str  #: the report's header line (``BUG: kernel NULL pointer dereference, ...``)
    start: int  #: index of the report's first line in the parsed lines (``cut here`` included)
    end: int  #: index one past the report's last line
    header: int  #: index of :attr:`first_line`
    lines: tuple[str, ...]  #: the report's lines (other callers' interleaved lines left out)
    message: str = ""  #: what the header says: panic reason, BUG/WARN location, sanitizer bug
    panic: bool = False  #: the report is the kernel's ``Kernel panic - not syncing`` message
    time: float | None = None  #: time stamp of the header line (seconds since boot)
    caller: str | None = None  #: caller id of the header line (``T123`` / ``C1``)
    rip: Frame | None = None  #: the faulting kernel instruction (``RIP: 0010:foo+0x12/0x40``)
    stacks: tuple[Stack, ...] = ()  #: every stack trace, the main one first
    modules: tuple[str, ...] | None = None  #: ``Modules linked in:`` names (taint marks removed)
    last_unloaded: str | None = None  #: ``[last unloaded: mod]``
    taint: str | None = None  #: taint letters (``GWOE``); "" for ``Not tainted``; None unknown
    cpu: int | None = None  #: CPU the report was printed for
    pid: int | None = None  #: PID of the task (the blocked task for a hung task report)
    uid: int | None = None  #: UID of the task (6.12+ ``CPU: 1 UID: 0 PID: ...``)
    comm: str | None = None  #: command name of the task
    hardware: str | None = None  #: ``Hardware name:`` (machine model, firmware)
    release: str | None = None  #: kernel release (``6.1.0-27-cloud-amd64``)
    build: str | None = None  #: rest of the version line (``#1  Debian 6.1.115-1``)
    registers: tuple[str, ...] = ()  #: the first register dump (``RIP:``, ``Code:``, ``RSP:``..)
    address: int | None = None  #: faulting address (page fault, NULL pointer, sanitizer access)
    access: str | None = None  #: ``read``/``write``/``instruction fetch`` (``Read``/``Write``)
    bug_type: str | None = None  #: sanitizer bug type, lockdep message, exception name
    location: str | None = None  #: source location on the header (``mm/filemap.c:1498``)
    function: str | None = None  #: function named on the header (WARNING, KASAN, KFENCE)
    caused_by: int | None = None  #: index (in parse_log's list) of the report this one follows
    stack_from: int | None = None  #: index of the panic whose stack (and kernel facts) was used

    @property
    def frames(self) -> tuple[Frame, ...]:
        """The frames of the main stack trace."""
        return self.stacks[0].frames if self.stacks else ()


# --------------------------------------------------------------------------------------------
# input: text lines and dump records

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB012]")
_SYSLOG = re.compile(
    r"^(?:<\d+>)?(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r" \S+ kernel: ?"
)
_KMSG = re.compile(r"^\d+,\d+,\d+,[-c][^;]*;")
_LEVEL = re.compile(r"^<\d>")
_DMESG_T = re.compile(r"^\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\] ?")
_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]")
_CALLER = re.compile(r"^ ?\[\s*([TC]\d+)\]")
_EMBEDDED_STAMP = re.compile(r"\[\s*(\d+\.\d{6})\](?: ?\[\s*([TC]\d+)\])? ?")


def split_prefix(raw: str) -> LogLine:
    """One raw log line → its text, caller id and time stamp (see :func:`lines_from_text`)."""
    text = _ANSI.sub("", raw.rstrip("\r\n")).replace("\r", "")
    m = _SYSLOG.match(text)
    if m:
        text = text[m.end() :]
    m = _KMSG.match(text)
    if m:
        text = text[m.end() :]
    m = _LEVEL.match(text)
    if m:
        text = text[m.end() :]
    m = _DMESG_T.match(text)
    if m:
        text = text[m.end() :]
    stamp: float | None = None
    caller: str | None = None
    m = _STAMP.match(text)
    if m is None or _EMBEDDED_STAMP.search(text, m.end()) is not None:
        # a serial console line that starts with noise (a login prompt, another program's
        # output), or two messages that ran together: the kernel's text is after the last stamp
        last = None
        for e in _EMBEDDED_STAMP.finditer(text, 1):
            last = e
        if last is not None:
            return LogLine(text[last.end() :], last.group(2), float(last.group(1)))
    if m is not None:
        stamp = float(m.group(1))
        text = text[m.end() :]
    c = _CALLER.match(text)
    if c is not None:
        caller = c.group(1)
        text = text[c.end() :]
    if stamp is not None or caller is not None:
        text = text.removeprefix(" ")
    return LogLine(text, caller, stamp)


def lines_from_text(text: str) -> list[LogLine]:
    """The lines of a text log, prefixes removed, one :class:`LogLine` per input line.

    Understood prefixes: dmesg time stamps (``[    1.234567]``) and caller ids (``[  T123]``,
    ``[    C1]``, also the makedumpfile ``[    1.234567] [    T123]`` form), ``dmesg -T`` dates,
    syslog and journal prefixes (``Nov 26 08:00:00 host kernel: ``, ISO 8601 dates),
    ``/dev/kmsg`` and netconsole extended records (``6,123,4567,-;``), console levels (``<4>``),
    and a time stamp after noise on a serial console line. Line order and count are kept, so
    report indices are line numbers minus one.
    """
    return [split_prefix(line) for line in text.splitlines()]


class _Record(Protocol):
    """What :func:`lines_from_records` needs of a log record (``kernel.printk.LogRecord``)."""

    @property
    def ts_nsec(self) -> int: ...

    @property
    def text(self) -> bytes: ...

    @property
    def caller_id(self) -> int | None: ...


_CALLER_CPU = 0x80000000


def lines_from_records(records: Iterable[_Record]) -> list[LogLine]:
    """The lines of kernel log records read from a dump (one per line of a multi-line record)."""
    out: list[LogLine] = []
    for rec in records:
        cid = rec.caller_id
        caller = None
        if cid is not None:
            caller = f"C{cid & ~_CALLER_CPU}" if cid & _CALLER_CPU else f"T{cid}"
        stamp = rec.ts_nsec / 1e9
        for part in rec.text.decode("utf-8", "replace").split("\n"):
            out.append(LogLine(part, caller, stamp))
    return out


# --------------------------------------------------------------------------------------------
# line patterns

_FUNC = r"[A-Za-z_$][\w$.]*"
_OFFSZ = r"\+0x(?P<off>[0-9a-f]+)/0x(?P<size>[0-9a-f]+)"
_MOD = r"(?:\s+\[(?P<mod>[\w\-]+)\])?"
_FRAME = re.compile(
    r"^\s*(?:\[<(?P<addr>[0-9a-f]+)>\]\s+)?(?P<unrel>\?\s+)?(?::(?P<oldmod>[\w\-]+):)?"
    rf"(?P<func>{_FUNC}){_OFFSZ}{_MOD}"
    r"(?:\s+\(?(?P<src>[\w/.\-]+:\d+)\)?(?:\s+\[inline\])?)?\s*(?:\(\))?\s*$"
)
_FRAME_PPC = re.compile(
    rf"^\s*\[[0-9a-f]+\]\s+\[(?P<addr>[0-9a-f]+)\]\s+(?P<func>{_FUNC}){_OFFSZ}{_MOD}"
    r"(?P<unrel>\s+\(unreliable\))?\s*$"
)
_FRAME_INLINE = re.compile(
    rf"^\s*(?P<func>{_FUNC})\s+(?P<src>[\w/.\-]+\.\w+:\d+)(?P<inline>\s+\[inline\])?\s*$"
)
_FRAME_ADDR = re.compile(
    r"^\s*(?:\[<(?P<addr>[0-9a-f]+)>\]\s+)?(?P<unrel>\?\s+)?0x(?P<a2>[0-9a-f]+)\s*$"
)
_FRAME_ARM_OLD = re.compile(
    rf"^\s*\[<(?P<addr>[0-9a-f]+)>\]\s+\((?P<func>{_FUNC})(?:{_OFFSZ})?{_MOD}\)\s+from\s+\[<"
)
_FRAME_ARM_NEW = re.compile(rf"^\s*(?P<func>{_FUNC}){_MOD} from {_FUNC}\+0x")
_MARKER = re.compile(r"^\s*<(?P<close>/?)(?P<name>IRQ|NMI|TASK|SOFTIRQ|EOI|EOE|#[A-Z]{2})>\s*")
_MARKER_CONTEXT = {
    "IRQ": "irq",
    "NMI": "nmi",
    "TASK": "task",
    "SOFTIRQ": "softirq",
    "EOI": "",
    "EOE": "",
}
_STACK_LABELS = re.compile(
    r"^\s*(?:Call [Tt]race|stack backtrace|Backtrace)\s*:"
    r"|^\s*(?:Allocated|Freed|freed) by task \d+:"
    r"|^\s*(?:Second to last|Last) potentially related work creation:"
    r"|^\s*Uninit was (?:created|stored to memory) at:"
    r"|^\s*(?:Out-of-bounds|Use-after-free) (?:read|write) at .*:\s*$"
    r"|^\s*Invalid (?:read|write) at .*:\s*$|^\s*Invalid free of .*:\s*$"
    r"|^\s*Corrupted memory at .*:\s*$|^\s*kfence-#\d+ .* by task \d+.*:\s*$"
    r"|^\s*(?:read|write)(?: \(marked\))? to .* by (?:task|interrupt) .*:\s*$"
    r"|^\s*-> #\d+ .*:\s*$|^\s*\{[\w-]+\} state was registered at:"
)
_RIP = re.compile(
    r"^\s*(?:(?:RIP|EIP|IP|NIP|pc|epc)\s*:|(?:PC|EIP|RIP) is at|NIP(?=\s*\[))\s*(?P<rest>.*)$"
)
_RIP_SYMBOL = re.compile(rf"(?P<func>{_FUNC}){_OFFSZ}{_MOD}")
_RIP_OLD_END = re.compile(r"^\s*(?:RIP|EIP)\s+\[<[0-9a-f]+>\]")
_REGISTER = re.compile(
    r"^\s*(?:(?:RIP|EIP|RSP|ESP|IP|NIP|LR|CTR|REGS|MSR|CFAR|RAX|RBX|RCX|RDX|RSI|RDI|RBP|"
    r"R\d{1,2}|EAX|EBX|ECX|EDX|ESI|EDI|EBP|FS|GS|CS|DS|ES|SS|CR\d|DR\d|PKRU|EFLAGS|"
    r"ORIG_RAX|GPR\d\d|pc|lr|sp|x\d{1,2}|r\d{1,2}|ip|fp|psr|pstate|epc|ra|gp|tp|t\d|s\d{1,2}|"
    r"a\d|status|badaddr|cause|Code)\s*:"
    r"|(?:PC is at|LR is at|RIP is at|EIP is at)\b)"
)
_CPU_LINE = re.compile(
    r"^\s*CPU: (?P<cpu>\d+)(?: UID: (?P<uid>\d+))? PID: (?P<pid>\d+) Comm: (?P<comm>.{0,64}?)"
    r"(?: Kdump: loaded)? (?:(?P<not>Not tainted)|Tainted: (?P<flags>[A-Z \-]*?))"
    r"\s+(?P<release>\S+)(?:\s+(?P<build>#.*?))?\s*$"
)
_PID_LINE = re.compile(
    r"^\s*Pid: (?P<pid>\d+), comm: (?P<comm>.{0,64}?) (?:(?P<not>Not tainted)|Tainted: "
    r"(?P<flags>[A-Z ]*?))\s+(?P<release>\S+)(?:\s+(?P<build>#.*?))?\s*$"
)
_TAINT_LINE = re.compile(
    r"^\s*(?:(?P<not>Not tainted)|Tainted: (?P<flags>[A-Z ]*?))\s+(?P<release>\S+)"
    r"(?:\s+(?P<build>#.*?))?\s*$"
)
_HARDWARE = re.compile(r"^\s*Hardware name: (?P<hw>.*?)\s*$")
_MODULES = re.compile(r"^\s*Modules linked in:(?P<mods>.*)$")
_MODULE_TOKEN = re.compile(r"^[\w\-]+(?:\([A-Z+\-]+\))?$")
_LAST_UNLOADED = re.compile(r"\[last unloaded: (?P<mod>[\w\-]+)\]")
_END_TRACE = re.compile(r"^\s*---\[ end trace")
_END_PANIC = re.compile(r"^\s*---\[ end Kernel panic")
_RULER = re.compile(r"^\s*={10,}\s*$")
_CUT_HERE = re.compile(r"^\s*-+\[ cut here \]-+\s*$")
_DIE = re.compile(
    r"^\s*(?:Oops: )*(?:(?P<what>[a-z][a-z_ \-]*[a-z])(?:, probably for [^:]*)?: )?"
    r"(?P<code>[0-9a-f]{4}) \[#(?P<n>\d+)\]"
    r"|^\s*Oops(?: - [\w ]+)?(?:: [0-9a-f]+)? \[#(?P<n2>\d+)\]"
)
_DIE_ARM = re.compile(r"^\s*Internal error: (?P<what>.*?): (?P<code>[0-9a-f]+) \[#(?P<n>\d+)\]")
_PF_ACCESS = re.compile(r"^\s*#PF: \w+ (?P<access>read|write|instruction fetch) access")
_SANITIZER_ACCESS = re.compile(
    r"^\s*(?P<access>Read|Write)(?: of size (?P<size>\d+))? (?:at addr (?P<addr>[0-9a-f]+)|by task)"
)

# lines that belong to a report even though they are not frames (used to tell where one ends)
_BODY = re.compile(
    r"^\s*(?:Oops|#PF|PGD |P4D |PUD |PMD |PTE |\*pde|\*pdpt|Modules linked in|CPU:|Pid:|Hardware"
    r" name|Workqueue|task:|Tainted|Not tainted|Kernel Offset|Rebooting in|---\[|Dumping ftrace|"
    r"\(ftrace buffer empty\)|irq event stamp|hardirqs last|softirqs last|NMI backtrace|"
    r"Sending NMI|rcu:|\(detected by|\(t=\d+|All QSes|Stack:|Call [Tt]race|Mem-Info|"
    r"Tasks state|oom-kill:|Out of memory|oom_reaper|Memory cgroup|Node \d|lowmem_reserve|"
    r"\d+ (?:total pagecache|pages)|Free swap|Total swap|Swap cache|Showing|\d+ locks? held|"
    r"#\d+: |INFO: lockdep|other info that|Possible unsafe|Chain exists|\*\*\* DEADLOCK|"
    r"the existing dependency|but task is already|which lock already|is trying to acquire|"
    r"and (?:this task|the holder)|lock\(|\(?&|CPU\d|-{4,}|inconsistent \{|\{IN-|\[ *\d+\]|"
    r"The buggy address|Memory state around|which belongs to|page:|page_type:|head:|flags:|"
    r"raw:|memcg:|page dumped because|page_owner|\^|[>]?[0-9a-f]{8,16}:|Allocated by|Freed by|"
    r"freed by|Last potentially|Second to last|kfence-#|Corrupted memory|Invalid|Out-of-bounds|"
    r"Use-after-free|Read of size|Write of size|index \d|shift exponent|signed integer|load of|"
    r"\"echo 0 >|\S+ [RSDTtXZI]  ?\d|in_atomic|preempt_count|caller is|RCU nest depth|"
    r"Preemption disabled|Bad RIP|Code:|KASAN:|kasan:|Unable to access|Internal error|Mem abort|"
    r"ESR|EC = |SET = |FSC = |Data abort|CM = |user pgtable|swapper pgtable|\[[0-9a-f]{16}\]|"
    r"Process |Exception stack|Backtrace|Function entered at|Unwind|Call trace|Trace|Kdump)"
)
_HEXDUMP = re.compile(r"^\s*(?:[0-9a-f]{8,16}\s+){2,}[0-9a-f]{8,16}\s*$")


@dataclass
class _Header:
    kind: Kind
    groups: dict[str, str | None]
    die: bool = False  # a die() line ("Oops: 0002 [#1]", "invalid opcode: 0000 [#1]")
    generic: bool = False  # a catch-all pattern: dropped when the report has no stack


_PATTERNS: list[tuple[Kind, re.Pattern[str], bool]] = [
    (Kind.PANIC, re.compile(r"^\s*Kernel panic - not syncing: ?(?P<reason>.*?)\s*$"), False),
    (
        Kind.HUNG_TASK,
        re.compile(
            r"^\s*INFO: task (?P<comm>.*):(?P<pid>\d+) (?:blocked(?: in I/O wait)?|can't die) "
            r"for more than "
            r"(?P<secs>\d+) seconds"
        ),
        False,
    ),
    (
        Kind.SOFT_LOCKUP,
        re.compile(
            r"^\s*(?:(?:NMI )?watchdog: )?BUG: soft lockup - CPU#(?P<cpu>\d+) stuck for "
            r"(?P<secs>\d+)s! \[(?P<comm>.*):(?P<pid>\d+)\]"
        ),
        False,
    ),
    (
        Kind.HARD_LOCKUP,
        re.compile(
            r"^\s*(?:(?:NMI )?watchdog: )?(?:Watchdog detected hard LOCKUP on cpu (?P<cpu>\d+)"
            r"|Watchdog CPU:(?P<cpu2>\d+) Hard LOCKUP)"
        ),
        False,
    ),
    (
        Kind.RCU_STALL,
        re.compile(
            r"^\s*(?:rcu: )?INFO: (?P<flavor>rcu\w*) (?P<what>detected (?:expedited )?stalls? on "
            r"(?:CPUs/)?tasks|self-detected stall on CPU)"
        ),
        False,
    ),
    (
        Kind.KASAN,
        re.compile(
            r"^\s*BUG: KASAN: (?P<type>.+?) (?:in (?P<where>\S+)|on address\s+(?P<addr>\S+))"
        ),
        False,
    ),
    (Kind.KFENCE, re.compile(r"^\s*BUG: KFENCE: (?P<type>.+?) in (?P<where>\S+)"), False),
    (Kind.KMSAN, re.compile(r"^\s*BUG: KMSAN: (?P<type>.+?) in (?P<where>\S+)"), False),
    (Kind.KCSAN, re.compile(r"^\s*BUG: KCSAN: (?P<type>.+?) in (?P<where>.+?)\s*$"), False),
    (Kind.UBSAN, re.compile(r"^\s*UBSAN: (?P<type>.+?) in (?P<where>\S+)"), False),
    (
        Kind.NULL_DEREF,
        re.compile(
            r"^\s*(?:BUG: kernel NULL pointer dereference, address: (?P<addr>[0-9a-fx]+)"
            r"|BUG: unable to handle kernel NULL pointer dereference at\s+(?P<addr2>\S+)"
            r"|Unable to handle kernel NULL pointer dereference at virtual address "
            r"(?P<addr3>[0-9a-fx]+))"
        ),
        False,
    ),
    (
        Kind.PAGE_FAULT,
        re.compile(
            r"^\s*(?:BUG: unable to handle page fault for address: (?P<addr>[0-9a-fx]+)"
            r"|BUG: unable to handle kernel paging request at (?P<addr2>[0-9a-fx]+)"
            r"|Unable to handle kernel paging request at virtual address (?P<addr3>[0-9a-fx]+)"
            r"|BUG: unable to handle kernel (?P<what>.+?) at (?P<addr4>[0-9a-fx]+)"
            r"|Unable to handle kernel (?P<what2>.+?) at virtual address (?P<addr5>[0-9a-fx]+))"
        ),
        False,
    ),
    (
        Kind.BUG,
        re.compile(r"^\s*(?:kernel BUG at (?P<loc>.+?)!|Kernel BUG at (?P<loc2>\S+))"),
        False,
    ),
    (
        Kind.LOCKDEP,
        re.compile(
            r"^\s*(?:\[ )?(?:WARNING|INFO): (?P<msg>possible circular locking dependency detected"
            r"|possible recursive locking detected|inconsistent lock state"
            r"|possible irq lock inversion dependency detected|[\w-]+ -> [\w-]+ lock order detected"
            r"|\S+-safe -> \S+-unsafe lock order detected|suspicious RCU usage"
            r"|bad unlock balance detected!|held lock freed!"
            r"|lock held when returning to user space!"
            r"|.* still has locks held!|nested lock was not taken|lock held at task exit time!"
            r"|bad contention detected!|possible deadlock detected"
            r"|trying to register non-static key)"
        ),
        False,
    ),
    (
        Kind.WARNING,
        re.compile(
            r"^\s*WARNING: (?:CPU: (?P<cpu>\d+) PID: (?P<pid>\d+) at |at )"
            r"(?P<loc>\S+)(?:\s+(?P<func>[\w$.]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[(?P<mod>[\w\-]+)\])?)?"
        ),
        False,
    ),
    (
        Kind.GPF,
        re.compile(r"^\s*(?:Oops: )?(?:segment-related )?general protection fault(?P<rest>.*)$"),
        False,
    ),
    (Kind.LOCKDEP, re.compile(r"^\s*\[ (?P<prefix>BUG|INFO|WARNING): (?P<msg>.+?) \]\s*$"), False),
    (
        Kind.OOM,
        re.compile(
            r"^\s*(?:(?P<comm>.+?) invoked oom-killer: "
            r"|(?P<memcg>Memory cgroup )?[Oo]ut of memory: Kill(?:ed)? process (?P<pid>\d+) "
            r"\((?P<victim>.*?)\)"
            r"|oom-kill:constraint=(?P<constraint>\w+))"
        ),
        False,
    ),
    (Kind.OOPS, re.compile(r"^\s*PANIC: (?P<what>double fault)"), False),
    (Kind.WARNING, re.compile(r"^\s*WARNING: (?P<msg>\S.*?)\s*$"), True),
    (Kind.OTHER_BUG, re.compile(r"^\s*BUG: (?P<msg>\S.*?)\s*$"), False),
]
_QUICK = re.compile(
    r"Kernel panic|INFO: |BUG|Watchdog|WARNING|UBSAN|Unable to handle|general protection|"
    r"oom-kill|[Oo]ut of memory|\[#\d+\]|PANIC: "
)


def _match_header(text: str) -> _Header | None:
    if not _QUICK.search(text):
        return None
    for kind, pattern, generic in _PATTERNS:
        m = pattern.match(text)
        if m is not None:
            return _Header(kind, m.groupdict(), die=kind is Kind.GPF, generic=generic)
    m = _DIE.match(text) or _DIE_ARM.match(text)
    if m is not None:
        return _Header(Kind.OOPS, m.groupdict(), die=True)
    return None


# --------------------------------------------------------------------------------------------
# finding where a report ends


_MAX_REPORT = 20000  # lines; a report (an OOM task list) longer than this is cut
_MAX_GAP = 4  # unrecognised lines in a row that end a report once it has a stack
_MAX_GAP_BEFORE_STACK = 40  # ... before its first stack (messages, OOM memory info)
_DIE_CONTINUES = frozenset(
    {Kind.PAGE_FAULT, Kind.NULL_DEREF, Kind.BUG, Kind.OTHER_BUG, Kind.KFENCE, Kind.SYSRQ}
)


def _is_body(text: str) -> bool:
    if not text.strip():
        return True
    return bool(
        _FRAME.match(text)
        or _MARKER.match(text)
        or _REGISTER.match(text)
        or _BODY.match(text)
        or _FRAME_INLINE.match(text)
        or _FRAME_PPC.match(text)
        or _FRAME_ADDR.match(text)
        or _HEXDUMP.match(text)
        or _FRAME_ARM_NEW.match(text)
        or text[:1] in ("\t",)
    )


def _collect(log: Sequence[LogLine], head: int, hdr: _Header) -> tuple[int, list[int], _Header]:
    """Indices of the lines of the report whose header is at ``head``; returns (end, lines)."""
    caller = log[head].caller
    kind = hdr.kind
    included = [head]
    last = head  # last line that certainly belongs
    gap = 0
    seen_stack = False
    seen_cpu = False
    after_end = False  # after "---[ end trace": only the repeated register dump follows
    n = min(len(log), head + _MAX_REPORT)
    j = head + 1
    while j < n:
        line = log[j]
        if caller is not None and line.caller is not None and line.caller != caller:
            j += 1
            continue
        text = line.text
        nxt = _match_header(text)
        if after_end:
            if nxt is None and (_REGISTER.match(text) or not text.strip()):
                included.append(j)
                last = j
                j += 1
                continue
            break
        if nxt is not None:
            if nxt.die and kind in _DIE_CONTINUES and not seen_cpu:
                pass  # the "Oops: 0002 [#1]" line of this very report
            elif nxt.kind is Kind.HARD_LOCKUP and kind is Kind.WARNING and j - head <= 3:
                kind = Kind.HARD_LOCKUP  # 3.x-4.x: the hard lockup detector used WARN()
                hdr = _Header(Kind.HARD_LOCKUP, {**hdr.groups, **nxt.groups})
            elif kind is Kind.OOM and nxt.kind is Kind.OOM and not _OOM_START.match(text):
                pass  # "oom-kill:" and "Out of memory: Killed process" end the OOM report
            elif nxt.generic and kind in (Kind.LOCKDEP, Kind.RCU_STALL) and not seen_stack:
                pass
            else:
                break
        if _SYSRQ_OTHER.match(text):
            break  # the output of another SysRq command (show state, show memory) follows
        if _CPU_LINE.match(text) or _PID_LINE.match(text):
            seen_cpu = True
        if _FRAME.match(text) or _FRAME_INLINE.match(text) or _FRAME_PPC.match(text):
            seen_stack = True
        if _END_PANIC.match(text):
            included.append(j)
            last = j
            j += 1
            break
        if _END_TRACE.match(text):
            included.append(j)
            last = j
            after_end = True
            j += 1
            continue
        if (
            _RULER.match(text)
            and kind in (Kind.KASAN, Kind.KFENCE, Kind.KMSAN, Kind.KCSAN, Kind.UBSAN)
            and j - head > 1
        ):
            included.append(j)
            last = j
            j += 1
            break
        if kind is Kind.OOM and _OOM_END.match(text):
            included.append(j)
            last = j
            j += 1
            # the oom_reaper line right after belongs too
            if j < n and log[j].text.lstrip().startswith("oom_reaper:"):
                included.append(j)
                last = j
                j += 1
            break
        if _is_body(text):
            included.append(j)
            if text.strip():
                last = j
            gap = 0
        else:
            gap += 1
            limit = _MAX_GAP if seen_stack and kind is not Kind.OOM else _MAX_GAP_BEFORE_STACK
            if kind is Kind.OOM and not seen_stack:
                limit = _MAX_REPORT
            if gap > limit:
                break
            included.append(j)
        j += 1
    end = last + 1
    return end, [i for i in included if i < end], hdr


_SYSRQ_OTHER = re.compile(r"^\s*(?:sysrq: |SysRq : )(?!.*Trigger a crash)")
_OOM_START = re.compile(r"^\s*.+? invoked oom-killer: ")
_OOM_END = re.compile(r"^\s*(?:Memory cgroup )?[Oo]ut of memory: Kill(?:ed)? process")


def _preamble(log: Sequence[LogLine], head: int, floor: int) -> tuple[int, list[str]]:
    """Start of the report (a ``cut here`` or ``=====`` line just before) and WARN messages."""
    caller = log[head].caller
    messages: list[str] = []
    i = head - 1
    seen = 0
    while i >= floor and seen < 4:
        line = log[i]
        if caller is not None and line.caller is not None and line.caller != caller:
            i -= 1
            continue
        if _CUT_HERE.match(line.text) or _RULER.match(line.text):
            return i, list(reversed(messages))
        if _match_header(line.text) is not None or not line.text.strip():
            break
        messages.append(line.text.strip())
        seen += 1
        i -= 1
    return head, []


# --------------------------------------------------------------------------------------------
# fields of a report


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def _address(text: str | None) -> int | None:
    if text is None:
        return None
    if text in ("(null)", "null"):
        return 0
    return _int(text.removeprefix("0x"), 16)


def _frame_from(m: re.Match[str], *, reliable: bool, context: str, regs: bool = False) -> Frame:
    g = m.groupdict()
    module = g.get("mod") or g.get("oldmod")
    return Frame(
        function=g["func"],
        offset=_int(g.get("off"), 16),
        size=_int(g.get("size"), 16),
        module=module,
        reliable=reliable,
        context=context,
        address=_int(g.get("addr"), 16),
        source=g.get("src"),
        inline=bool(g.get("inline")),
        regs=regs,
    )


def _parse_frame(text: str, context: str) -> Frame | None:
    m = _FRAME.match(text)
    if m is not None:
        return _frame_from(m, reliable=not m.group("unrel"), context=context)
    m = _FRAME_PPC.match(text)
    if m is not None:
        return _frame_from(m, reliable=not m.group("unrel"), context=context)
    m = _FRAME_INLINE.match(text)
    if m is not None:
        return Frame(
            function=m.group("func"),
            context=context,
            source=m.group("src"),
            inline=bool(m.group("inline")),
        )
    m = _FRAME_ARM_OLD.match(text) or _FRAME_ARM_NEW.match(text)
    if m is not None:
        return _frame_from(m, reliable=True, context=context)
    m = _FRAME_ADDR.match(text)
    if m is not None:
        return Frame(
            function="",
            reliable=not m.group("unrel"),
            context=context,
            address=_int(m.group("a2"), 16),
        )
    return None


def _rip_frame(text: str, context: str, *, regs: bool) -> Frame | None:
    """The kernel function of a ``RIP:``/``EIP:``/``pc :`` line; None for user mode or no symbol."""
    m = _RIP.match(text)
    if m is None:
        return None
    rest = m.group("rest")
    if re.match(r"(?:0033|0023|002b|0073):", rest):  # user-mode code segment
        return None
    s = _RIP_SYMBOL.search(rest)
    if s is None:
        return None
    addr = re.search(r"\[<([0-9a-f]+)>\]", rest)
    return Frame(
        function=s.group("func"),
        offset=_int(s.group("off"), 16),
        size=_int(s.group("size"), 16),
        module=s.group("mod"),
        reliable=True,
        context=context,
        address=_int(addr.group(1), 16) if addr else None,
        regs=regs,
    )


@dataclass
class _Stacks:
    stacks: list[Stack] = field(default_factory=list)
    rip: Frame | None = None
    registers: list[str] = field(default_factory=list)


# kinds whose own CPU is dumped as the first "NMI backtrace" (rcu self-detected stall)
_OWN_NMI_BACKTRACE = frozenset({Kind.RCU_STALL, Kind.HARD_LOCKUP, Kind.SOFT_LOCKUP})
_MAIN_STACK = re.compile(r"^(?:Call [Tt]race|stack backtrace|Backtrace)$")


def _parse_stacks(lines: Sequence[str], kind: Kind) -> _Stacks:
    """Stacks, the faulting RIP and the first register dump of a report's lines.

    The RIP is the first kernel-mode one, but not from the backtraces of *other* CPUs that some
    reports append (``Sending NMI from CPU 0 to CPUs 1:`` / ``NMI backtrace for cpu 1``).
    """
    out = _Stacks()
    label: str | None = None  # open stack's label; None when no stack is open
    frames: list[Frame] = []
    context = ""
    reg_block = False  # inside the first register dump
    nmi_sections = 0  # "NMI backtrace for cpu N" / "Sending NMI" lines seen

    def close() -> None:
        nonlocal label, frames, context
        if label is not None and frames:
            out.stacks.append(Stack(label, tuple(frames)))
        label, frames, context = None, [], ""

    for text in lines:
        if _STACK_LABELS.match(text):
            close()
            label = text.strip().rstrip(":").strip()
            continue
        m = _MARKER.match(text)
        if m is not None:
            name = m.group("name")
            if m.group("close"):
                context = ""
                if name == "TASK":
                    close()
                    continue
            else:
                context = _MARKER_CONTEXT.get(name, "exception")
            if label is None:
                label = ""
            text = text[m.end() :]
            if not text.strip():
                continue
        if _RIP_OLD_END.match(text):
            close()
            continue
        stripped = text.lstrip()
        if stripped.startswith(("NMI backtrace for", "Sending NMI")):
            nmi_sections += 1
        rip = _RIP.match(text)
        if rip is not None and not _FRAME.match(text):
            in_stack = label is not None
            frame = _rip_frame(text, context, regs=in_stack)
            own = nmi_sections == 0 or (nmi_sections == 1 and kind in _OWN_NMI_BACKTRACE)
            if out.rip is None and frame is not None and own:
                out.rip = frame
                if not out.registers:
                    reg_block = True
            elif not out.registers and frame is None and not in_stack:
                reg_block = True
            if in_stack and frame is not None:
                frames.append(frame)
            if reg_block:
                out.registers.append(text.strip())
            continue
        frame = _parse_frame(text, context)
        if frame is not None:
            reg_block = False
            if label is None:
                label = ""
            frames.append(frame)
            continue
        if reg_block:
            if _REGISTER.match(text):
                out.registers.append(text.strip())
                continue
            reg_block = False
        if (
            _END_TRACE.match(text)
            or _MODULES.match(text)
            or _CPU_LINE.match(text)
            or _PID_LINE.match(text)
            or text.lstrip().startswith(("NMI backtrace for", "Sending NMI", "task:"))
            or _match_header(text) is not None
        ):
            close()
    close()
    if kind is Kind.LOCKDEP:  # the lock chains come first; the main stack is "stack backtrace"
        main = [k for k, st in enumerate(out.stacks) if _MAIN_STACK.match(st.label)]
        if main:
            out.stacks.insert(0, out.stacks.pop(main[0]))
    return out


def _parse_modules(lines: Sequence[str]) -> tuple[tuple[str, ...] | None, str | None]:
    for i, text in enumerate(lines):
        m = _MODULES.match(text)
        if m is None:
            continue
        raw = m.group("mods")
        k = i + 1
        while k < len(lines):  # wrapped continuation lines: module names only
            cont = lines[k]
            tokens = _LAST_UNLOADED.sub("", cont).split()
            if not cont[:1].isspace() or not tokens:
                break
            if not all(_MODULE_TOKEN.match(t) for t in tokens):
                break
            raw += " " + cont.strip()
            k += 1
        last = _LAST_UNLOADED.search(raw)
        raw = _LAST_UNLOADED.sub("", raw)
        names = tuple(t.split("(", 1)[0] for t in raw.split() if _MODULE_TOKEN.match(t))
        return names, last.group("mod") if last else None
    return None, None


def _taint(groups: dict[str, str | None]) -> str:
    if groups.get("not"):
        return ""
    return (groups.get("flags") or "").replace(" ", "").replace("-", "")


@dataclass
class _Who:
    cpu: int | None = None
    pid: int | None = None
    uid: int | None = None
    comm: str | None = None
    taint: str | None = None
    release: str | None = None
    build: str | None = None
    hardware: str | None = None


def _parse_who(lines: Sequence[str]) -> _Who:
    who = _Who()
    for text in lines:
        if who.cpu is None and who.pid is None:
            m = _CPU_LINE.match(text) or _PID_LINE.match(text)
            if m is not None:
                g = m.groupdict()
                who.cpu = _int(g.get("cpu"))
                who.pid = _int(g.get("pid"))
                who.uid = _int(g.get("uid"))
                who.comm = (g.get("comm") or "").strip() or None
                who.taint = _taint(g)
                who.release = g.get("release")
                who.build = (g.get("build") or "").strip() or None
                continue
        if who.taint is None:
            m = _TAINT_LINE.match(text)
            if m is not None:
                who.taint = _taint(m.groupdict())
                who.release = m.group("release")
                who.build = (m.group("build") or "").strip() or None
        if who.hardware is None:
            h = _HARDWARE.match(text)
            if h is not None:
                who.hardware = h.group("hw")
    return who


def _strip_func(where: str | None) -> str | None:
    """``foo+0x12/0x40`` → ``foo``; a path or range → None."""
    if not where:
        return None
    m = re.match(rf"^({_FUNC})\+0x[0-9a-f]+/0x[0-9a-f]+", where)
    return m.group(1) if m else None


def _build(
    log: Sequence[LogLine],
    start: int,
    end: int,
    head: int,
    idx: list[int],
    hdr: _Header,
    messages: list[str],
) -> Report:
    first = log[head].text.strip()
    lines = [log[i].text for i in idx]
    body = _parse_stacks(lines, hdr.kind)
    who = _parse_who(lines)
    modules, last_unloaded = _parse_modules(lines)
    g = hdr.groups
    kind = hdr.kind
    message = ""
    address = access = bug_type = location = function = None
    panic = False
    cpu, pid, comm = who.cpu, who.pid, who.comm

    if kind is Kind.PANIC:
        panic = True
        message = g.get("reason") or ""
    elif kind in (Kind.NULL_DEREF, Kind.PAGE_FAULT):
        address = _address(
            g.get("addr") or g.get("addr2") or g.get("addr3") or g.get("addr4") or g.get("addr5")
        )
        message = first
    elif kind is Kind.GPF:
        message = first
        bug_type = "general protection fault"
        m = re.search(r"non-canonical address (0x[0-9a-f]+)", first)
        if m:
            address = _address(m.group(1))
    elif kind is Kind.BUG:
        location = g.get("loc") or g.get("loc2")
        message = f"kernel BUG at {location}"
    elif kind is Kind.OOPS:
        bug_type = (g.get("what") or "Oops").strip().replace("_", " ")
        message = first
    elif kind is Kind.WARNING:
        location = g.get("loc")
        function = g.get("func")
        if g.get("msg") is not None:  # "WARNING: <message>" without CPU/location
            bug_type = g.get("msg")
            location = None
        message = " ".join(messages) if messages else first
        if g.get("cpu") is not None and cpu is None:
            cpu, pid = _int(g.get("cpu")), _int(g.get("pid"))
    elif kind in (Kind.KASAN, Kind.KFENCE, Kind.KMSAN, Kind.KCSAN, Kind.UBSAN):
        bug_type = (g.get("type") or "").strip()
        where = g.get("where")
        function = _strip_func(where)
        if kind is Kind.UBSAN:
            location = where
        if g.get("addr"):
            address = _address(g.get("addr"))
        message = first
        for text in lines[1:12]:
            a = _SANITIZER_ACCESS.match(text)
            if a is not None:
                access = a.group("access")
                if a.group("addr"):
                    address = _int(a.group("addr"), 16)
                break
            k = re.match(
                r"^\s*(?:Out-of-bounds|Use-after-free|Invalid) (read|write) at (0x[0-9a-f]+)", text
            )
            if k is not None:
                access, address = k.group(1), _address(k.group(2))
                break
        if kind is Kind.KFENCE and access is None:
            k2 = re.search(r"\b(read|write)\b", bug_type)
            access = k2.group(1) if k2 else None
    elif kind is Kind.LOCKDEP:
        # "[ BUG: syz-executor/31761 still has locks held! ]": the task is not part of the bug
        bug_type = re.sub(r"^\S+/\d+ ", "", (g.get("msg") or "").strip())
        message = bug_type
    elif kind is Kind.HUNG_TASK:
        comm, pid = g.get("comm"), _int(g.get("pid"))
        cpu = None
        message = first
    elif kind is Kind.SOFT_LOCKUP:
        cpu, comm, pid = _int(g.get("cpu")), g.get("comm"), _int(g.get("pid"))
        message = first
    elif kind is Kind.HARD_LOCKUP:
        cpu = _int(g.get("cpu") or g.get("cpu2")) if cpu is None else cpu
        found = [t.strip() for t in lines if "hard LOCKUP" in t or "Hard LOCKUP" in t]
        message = found[0] if found else first
    elif kind is Kind.RCU_STALL:
        bug_type = g.get("flavor")
        message = first
    elif kind is Kind.OOM:
        message = first
        for text in lines:
            k3 = re.match(
                r"^\s*(?:(Memory cgroup )?[Oo]ut of memory: Kill(?:ed)? process (\d+) \((.*?)\))",
                text,
            )
            if k3 is not None:
                bug_type = "memory cgroup" if k3.group(1) else "global"
                message = text.strip()
                break
            if "oom-kill:constraint=CONSTRAINT_MEMCG" in text:
                bug_type = "memory cgroup"
    elif kind is Kind.OTHER_BUG:
        bug_type = g.get("msg")
        message = first
    for text in lines[:8]:  # the page fault's access type
        pf = _PF_ACCESS.match(text)
        if pf is not None and access is None:
            access = pf.group("access")
            break
    stamp = log[head].time
    return Report(
        kind=kind,
        first_line=first,
        start=start,
        end=end,
        header=head,
        lines=tuple(lines),
        message=message,
        panic=panic,
        time=stamp,
        caller=log[head].caller,
        rip=body.rip,
        stacks=tuple(body.stacks),
        modules=modules,
        last_unloaded=last_unloaded,
        taint=who.taint,
        cpu=cpu,
        pid=pid,
        uid=who.uid,
        comm=comm,
        hardware=who.hardware,
        release=who.release,
        build=who.build,
        registers=tuple(body.registers),
        address=address,
        access=access,
        bug_type=bug_type,
        location=location,
        function=function,
    )


# --------------------------------------------------------------------------------------------
# after parsing: what caused what


def _reclassify(report: Report) -> Report:
    """A panic with a known reason gets a more specific kind; sysrq crashes become SYSRQ."""
    kind = report.kind
    reason = report.message.lower()
    if report.panic:
        if "sysrq triggered crash" in reason:
            kind = Kind.SYSRQ
        elif "out of memory" in reason or "deadlocked on memory" in reason:
            kind = Kind.OOM
        elif "hard lockup" in reason:
            kind = Kind.HARD_LOCKUP
    functions = [report.rip.function] if report.rip else []
    functions += [f.function for f in report.frames[:12]]
    if kind is Kind.OTHER_BUG and any(_DIE.match(t) or _DIE_ARM.match(t) for t in report.lines[:8]):
        kind = Kind.OOPS  # "BUG: unable to handle kernel ..." + "Oops: 0000 [#1]": the CPU died
    if kind in OOPS_KINDS and any(f.split(".")[0] == "sysrq_handle_crash" for f in functions):
        kind = Kind.SYSRQ  # kernels before 5.x crashed by writing through a NULL pointer
    if kind is report.kind:
        return report
    return _replace(report, kind=kind)


def _replace(report: Report, **changes: Any) -> Report:
    from dataclasses import replace

    return replace(report, **changes)


def _cause(reports: Sequence[Report], i: int) -> int | None:
    """Index of the report that made panic report ``i`` happen, if the log shows it."""
    report = reports[i]
    reason = report.message.lower()
    if "panic_on_warn" in reason:
        wanted = WARN_KINDS
    elif "fatal exception" in reason or "attempted to kill" in reason or "machine halted" in reason:
        wanted = OOPS_KINDS
    elif "softlockup" in reason or "soft lockup" in reason:
        wanted = frozenset({Kind.SOFT_LOCKUP})
    elif "hung_task" in reason or "hung task" in reason or "blocked tasks" in reason:
        wanted = frozenset({Kind.HUNG_TASK})
    elif "rcu stall" in reason:
        wanted = frozenset({Kind.RCU_STALL})
    elif "hard lockup" in reason:
        wanted = frozenset({Kind.HARD_LOCKUP})
    elif report.kind is Kind.OOM:
        wanted = frozenset({Kind.OOM})
    else:
        # "BUG: scheduling while atomic" + "Kernel panic - not syncing: scheduling while atomic"
        if i > 0 and not reports[i - 1].panic and reason[:20] in reports[i - 1].first_line.lower():
            return i - 1
        return None
    for k in range(i - 1, -1, -1):
        if reports[k].panic:
            break
        if reports[k].kind in wanted:
            if "attempted to kill" in reason and reports[k].pid not in (1, None):
                return None
            return k
    return None


def parse_log(lines: Iterable[str | LogLine]) -> list[Report]:
    """Every crash report in a kernel log, in log order.

    ``lines`` are :class:`LogLine` (from :func:`lines_from_text` / :func:`lines_from_records`) or
    plain strings (raw log lines: their prefixes are removed here). Report indices
    (:attr:`Report.start`, :attr:`Report.end`, :attr:`Report.header`) refer to this sequence.
    """
    log = [x if isinstance(x, LogLine) else split_prefix(x) for x in lines]
    reports: list[Report] = []
    i = 0
    floor = 0
    while i < len(log):
        hdr = _match_header(log[i].text)
        if hdr is None:
            i += 1
            continue
        end, idx, hdr = _collect(log, i, hdr)
        start, messages = _preamble(log, i, floor)
        if start < i:
            caller = log[i].caller
            pre = [k for k in range(start, i) if caller is None or log[k].caller in (None, caller)]
            idx = pre + idx
        report = _build(log, start, end, i, idx, hdr, messages)
        if hdr.generic and not report.stacks and report.cpu is None and report.rip is None:
            i += 1  # a "WARNING:"/"BUG:" line that is just a message, not a report
            continue
        reports.append(report)
        floor = end
        i = max(end, i + 1)
    out = [_reclassify(report) for report in reports]
    for k, report in enumerate(out):
        if report.panic:
            cause = _cause(out, k)
            if cause is not None:
                out[k] = _replace(report, caused_by=cause)
                before = out[cause]
                if not before.stacks and before.rip is None and (report.stacks or report.rip):
                    # the cause printed no stack (a truncated log, or an older kernel whose
                    # panic_on_warn panicked before the WARNING's registers): the panic's stack
                    # shows the same task at the same point
                    out[cause] = _replace(
                        before,
                        stacks=report.stacks,
                        rip=report.rip,
                        stack_from=k,
                        taint=report.taint if before.taint is None else before.taint,
                        release=before.release or report.release,
                        build=before.build or report.build,
                        hardware=before.hardware or report.hardware,
                    )
    return out


_SEVERITY = [
    frozenset({Kind.KASAN, Kind.KFENCE, Kind.KMSAN, Kind.UBSAN, Kind.KCSAN}),
    frozenset({Kind.HARD_LOCKUP, Kind.SOFT_LOCKUP, Kind.RCU_STALL}),
    frozenset({Kind.OTHER_BUG, Kind.WARNING, Kind.LOCKDEP}),
    frozenset({Kind.HUNG_TASK}),
    frozenset({Kind.PANIC, Kind.OOM}),
]


_SANITIZER_KINDS = frozenset({Kind.KASAN, Kind.KFENCE, Kind.KMSAN, Kind.UBSAN, Kind.KCSAN})
_CAUSE_WINDOW = 10.0  # seconds: a sanitizer report this close before an oops is its cause


def primary(reports: Sequence[Report]) -> int | None:
    """Index of *the* crash among ``reports`` (as :func:`parse_log` returned them), or None.

    The fatal report is the first panic, followed back along :attr:`Report.caused_by` (NULL
    dereference + ``Fatal exception`` → the NULL dereference; ``panic_on_warn`` → the WARNING; a
    sysrq crash → the sysrq panic); without a panic (with kdump loaded an oops goes straight to
    the capture kernel, so the panic line is never printed) the last oops. Then the root: when
    the fatal oops says an earlier oops already killed a task (taint ``D``), the first oops of
    the log; when a sanitizer report (KASAN, KFENCE, ...) came just before it, that report.
    With neither a panic nor an oops (a log saved from a running system): the first report of
    the most severe class (sanitizer, lockup, BUG/WARNING, hung task, OOM).
    """
    if not reports:
        return None
    panics = [k for k, r in enumerate(reports) if r.panic]
    oopses = [k for k, r in enumerate(reports) if r.kind in OOPS_KINDS and not r.panic]
    if panics:
        k = panics[0]
        seen = {k}
        while (cause := reports[k].caused_by) is not None and cause not in seen:
            k = cause
            seen.add(k)
    elif oopses:
        k = oopses[-1]
    else:
        for group in _SEVERITY:
            for e, r in enumerate(reports):
                if r.kind in group:
                    return e
        return 0
    root = reports[k]
    if root.kind in OOPS_KINDS and root.taint and "D" in root.taint:
        earlier = [e for e in oopses if e < k]
        if earlier:
            k = earlier[0]
            root = reports[k]
    if root.kind in OOPS_KINDS and k > 0 and reports[k - 1].kind in _SANITIZER_KINDS:
        before = reports[k - 1]
        if root.time is None or before.time is None or root.time - before.time <= _CAUSE_WINDOW:
            return k - 1
    return k


def report_to_dict(report: Report) -> dict[str, Any]:
    """A JSON-ready dict of every field of ``report`` (frames as dicts, the kind as a string)."""

    def frame(f: Frame | None) -> dict[str, Any] | None:
        if f is None:
            return None
        return {
            "function": f.function,
            "offset": f.offset,
            "size": f.size,
            "module": f.module,
            "reliable": f.reliable,
            "context": f.context,
            "address": f.address,
            "source": f.source,
            "inline": f.inline,
            "regs": f.regs,
            "symbol": f.symbol(),
        }

    return {
        "kind": report.kind.value,
        "first_line": report.first_line,
        "message": report.message,
        "panic": report.panic,
        "start": report.start,
        "end": report.end,
        "header": report.header,
        "time": report.time,
        "caller": report.caller,
        "cpu": report.cpu,
        "pid": report.pid,
        "uid": report.uid,
        "comm": report.comm,
        "taint": report.taint,
        "release": report.release,
        "build": report.build,
        "hardware": report.hardware,
        "rip": frame(report.rip),
        "address": report.address,
        "access": report.access,
        "bug_type": report.bug_type,
        "location": report.location,
        "function": report.function,
        "modules": list(report.modules) if report.modules is not None else None,
        "last_unloaded": report.last_unloaded,
        "registers": list(report.registers),
        "stacks": [
            {"label": s.label, "frames": [frame(f) for f in s.frames]} for s in report.stacks
        ],
        "caused_by": report.caused_by,
        "stack_from": report.stack_from,
        "lines": list(report.lines),
    }
