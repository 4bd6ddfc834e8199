"""Facts about the crash read from the dump without debug info: :func:`crash_info`.

Where each fact comes from, best source first (the source is recorded next to each value):

* **kernel** (``utsname``): ``init_uts_ns.name`` in memory (``SYMBOL(init_uts_ns)`` +
  ``OFFSET(uts_namespace.name)``), else VMCOREINFO ``OSRELEASE`` (release only);
* **crash time**: VMCOREINFO ``CRASHTIME`` (written by ``crash_save_vmcoreinfo()`` at panic);
* **uptime**: the time stamp of the last kernel log record (``local_clock()`` when it was
  printed: the crash path prints, so this is the crash's uptime to within milliseconds). The
  ``jiffies`` counter is not used: turning it into seconds needs ``CONFIG_HZ``, which is not
  exported; ``tk_core`` needs struct offsets that are not exported either;
* **panic CPU**: the kernel's ``panic_cpu`` variable when kallsyms is exported (Linux 6.0+, see
  :mod:`kdumper.kernel.kallsyms`); else the ``CPU: N PID: N Comm: X`` line of the crash report
  in the log; else the only NT_PRSTATUS note whose task is not the idle task (pid 0);
* **task** (pid, comm): the report line of the log; pid also from the panic CPU's NT_PRSTATUS;
* **registers**: every CPU's NT_PRSTATUS note; note *i* is taken to be CPU *i* (true when every
  possible CPU was online: offline CPUs save no note and shift the numbering; a pid mismatch
  between the log and the note is reported in :attr:`CrashInfo.notes`);
* **taint**: ``tainted_mask`` via kallsyms when exported (it also has the flags added after the
  report was printed, such as ``D``), else the ``Tainted:`` letters of the report line;
* **panic message**: the ``Kernel panic - not syncing: ...`` line of the log.

The kernel-side layer must not depend on :mod:`kdumper.triage`, so the few log lines needed are
matched here with small patterns; :mod:`kdumper.triage.report` adds the full oops analysis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dump.base import Dump, Utsname
from ..errors import KdumperError
from .kallsyms import Kallsyms, kallsyms
from .printk import KernelLog, LogRecord, read_log
from .utsname import utsname_and_source

PANIC_CPU_INVALID = -1

#: taint letters (``kernel/panic.c`` ``taint_flags``): letter → TAINT_* name, in bit order
TAINT_FLAGS: dict[str, str] = {
    "P": "PROPRIETARY_MODULE",
    "F": "FORCED_MODULE",
    "S": "CPU_OUT_OF_SPEC",
    "R": "FORCED_RMMOD",
    "M": "MACHINE_CHECK",
    "B": "BAD_PAGE",
    "U": "USER",
    "D": "DIE",
    "A": "OVERRIDDEN_ACPI_TABLE",
    "W": "WARN",
    "C": "CRAP",
    "I": "FIRMWARE_WORKAROUND",
    "O": "OOT_MODULE",
    "E": "UNSIGNED_MODULE",
    "L": "SOFTLOCKUP",
    "K": "LIVEPATCH",
    "X": "AUX",
    "T": "RANDSTRUCT",
    "N": "TEST",
    "J": "FWCTL",
}
_TAINT_BITS = tuple(TAINT_FLAGS)  # bit n ↔ letter n


# --------------------------------------------------------------------------------------------
# the crash itself


@dataclass(frozen=True)
class CpuState:
    """One CPU's registers at the crash (its NT_PRSTATUS note)."""

    cpu: int  #: index of the note (the CPU number when every possible CPU was online)
    pid: int  #: the task running on it (0: idle)
    registers: dict[str, int]  #: register name → value, in the note's order
    pc: int  #: program counter
    sp: int  #: stack pointer
    symbol: str | None = None  #: the pc as ``function+0xoff/0xsize`` (kallsyms), when known


@dataclass
class CrashInfo:
    """What the dump says about the crash (see the module docstring for the sources)."""

    utsname: Utsname | None = None
    utsname_source: str | None = None  #: ``memory`` or ``vmcoreinfo``
    crash_time: int | None = None  #: seconds since the epoch (VMCOREINFO CRASHTIME)
    uptime: float | None = None  #: seconds since boot at the crash
    uptime_source: str | None = None
    panic_message: str | None = None  #: what follows ``Kernel panic - not syncing:``
    panic_cpu: int | None = None
    panic_cpu_source: str | None = None
    pid: int | None = None  #: the crashing task
    comm: str | None = None
    task_source: str | None = None
    taint: str | None = None  #: taint letters (``"GW"`` style without ``G``); "" untainted
    taint_source: str | None = None
    cpus: tuple[CpuState, ...] = ()
    log_records: int = 0
    log_problems: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)  #: what could not be found, and why

    @property
    def release(self) -> str | None:
        """``uname -r`` of the crashed kernel."""
        return self.utsname.release if self.utsname and self.utsname.release else None

    @property
    def boot_time(self) -> float | None:
        """Seconds since the epoch when the kernel booted (crash time minus uptime)."""
        if self.crash_time is None or self.uptime is None:
            return None
        return self.crash_time - self.uptime

    @property
    def panic_cpu_state(self) -> CpuState | None:
        """The registers of the panic CPU."""
        for state in self.cpus:
            if state.cpu == self.panic_cpu:
                return state
        return None

    def taint_names(self) -> list[str]:
        """The taint flags as ``TAINT_*`` names (without the prefix)."""
        return [TAINT_FLAGS[c] for c in self.taint or "" if c in TAINT_FLAGS]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys."""
        uts = self.utsname
        return {
            "kernel": {
                "release": uts.release if uts else None,
                "version": uts.version if uts else None,
                "machine": uts.machine if uts else None,
                "nodename": uts.nodename if uts else None,
                "source": self.utsname_source,
            },
            "crash_time": self.crash_time,
            "uptime": self.uptime,
            "uptime_source": self.uptime_source,
            "boot_time": self.boot_time,
            "panic_message": self.panic_message,
            "panic_cpu": self.panic_cpu,
            "panic_cpu_source": self.panic_cpu_source,
            "pid": self.pid,
            "comm": self.comm,
            "task_source": self.task_source,
            "taint": self.taint,
            "taint_flags": self.taint_names(),
            "taint_source": self.taint_source,
            "cpus": [cpu_to_dict(c) for c in self.cpus],
            "log_records": self.log_records,
            "log_problems": list(self.log_problems),
            "notes": list(self.notes),
        }


def cpu_to_dict(state: CpuState) -> dict[str, Any]:
    """A CPU's registers as a JSON-ready dict (register values as ``0x`` hex strings)."""
    return {
        "cpu": state.cpu,
        "pid": state.pid,
        "pc": f"{state.pc:#018x}",
        "sp": f"{state.sp:#018x}",
        "symbol": state.symbol,
        "registers": {k: f"{v:#018x}" for k, v in state.registers.items()},
    }


def taint_from_mask(mask: int) -> str:
    """Taint letters of a ``tainted_mask`` value, in bit order."""
    letters = [c for bit, c in enumerate(_TAINT_BITS) if mask >> bit & 1]
    unknown = mask >> len(_TAINT_BITS)
    return "".join(letters) + ("?" if unknown else "")


# the report line: "CPU: 1 PID: 1 Comm: init Kdump: loaded Not tainted 6.1.0-56-cloud-amd64 #1"
# (6.12: "CPU: 0 UID: 0 PID: 1 Comm: ..."; old: "Pid: 1, comm: init Not tainted ...")
_CPU_LINE = re.compile(
    r"^\s*CPU: (?P<cpu>\d+)(?: UID: \d+)? PID: (?P<pid>\d+) Comm: (?P<comm>.{0,64}?)"
    r"(?: Kdump: loaded)? (?:Not tainted|Tainted: (?P<flags>[A-Z \-]*?))\s+\S+(?:\s+#.*)?\s*$"
)
_PANIC_LINE = re.compile(r"^\s*Kernel panic - not syncing: ?(?P<msg>.*?)\s*$")
_AFTER_PANIC = 4  # panic()'s own dump_stack prints its CPU line this many records later at most


@dataclass(frozen=True)
class LogFacts:
    """The crash facts the kernel log states (from :func:`log_facts`)."""

    panic_message: str | None = None
    cpu: int | None = None
    pid: int | None = None
    comm: str | None = None
    taint: str | None = None  #: letters without ``G``/spaces; "" for ``Not tainted``


def _letters(flags: str | None) -> str:
    if flags is None:
        return ""
    return "".join(sorted({c for c in flags if c in TAINT_FLAGS}, key=_TAINT_BITS.index))


def log_facts(records: Sequence[LogRecord]) -> LogFacts:
    """Panic message and the crashing CPU/task/taint from the report line nearest the panic.

    With a ``Kernel panic`` line: the report line printed by ``panic()`` itself (just after it,
    same caller), else the last one before it (an oops printed it, then ``panic("Fatal
    exception")``). Without one (kdump went straight from the oops to the capture kernel): the
    last report line of the log.
    """
    lines: list[tuple[int, str, int | None]] = []
    for k, rec in enumerate(records):
        for part in rec.text.decode("utf-8", "replace").split("\n"):
            lines.append((k, part, rec.caller_id))
    panic_at: int | None = None
    message: str | None = None
    reports: list[tuple[int, re.Match[str], int | None]] = []
    for i, (_, text, caller) in enumerate(lines):
        m = _PANIC_LINE.match(text)
        if m is not None and panic_at is None:
            panic_at, message = i, m.group("msg")
            continue
        c = _CPU_LINE.match(text)
        if c is not None:
            reports.append((i, c, caller))
    chosen: re.Match[str] | None = None
    if panic_at is not None:
        panic_caller = lines[panic_at][2]
        after = [
            c
            for i, c, caller in reports
            if panic_at < i <= panic_at + _AFTER_PANIC and caller in (panic_caller, None)
        ]
        before = [c for i, c, _ in reports if i < panic_at]
        chosen = after[0] if after else (before[-1] if before else None)
    elif reports:
        chosen = reports[-1][1]
    if chosen is None:
        return LogFacts(panic_message=message)
    taint = _letters(chosen.group("flags"))
    return LogFacts(
        panic_message=message,
        cpu=int(chosen.group("cpu")),
        pid=int(chosen.group("pid")),
        comm=chosen.group("comm"),
        taint=taint,
    )


def _cpu_states(dump: Dump, symbolize: Callable[[int], str | None] | None) -> tuple[CpuState, ...]:
    states = []
    for ps in dump.prstatus:
        pc, sp = ps.pc(dump.arch), ps.sp(dump.arch)
        states.append(
            CpuState(
                cpu=ps.cpu,
                pid=ps.pid,
                registers=dict(ps.registers),
                pc=pc,
                sp=sp,
                symbol=symbolize(pc) if symbolize is not None else None,
            )
        )
    return tuple(states)


def crash_info(dump: Dump, log: KernelLog | None = None, *, use_kallsyms: bool = True) -> CrashInfo:
    """Everything :class:`CrashInfo` holds, from any dump; never raises for missing facts.

    ``log``: the already-read kernel log (read here when None). ``use_kallsyms``: read the
    kernel's symbol table when VMCOREINFO exports it (about 0.4 s on a 6.12 kernel) for
    ``panic_cpu``, ``tainted_mask`` and symbolic program counters.
    """
    ci = CrashInfo()
    ci.utsname, ci.utsname_source = utsname_and_source(dump)
    info = dump.vmcoreinfo
    if info is None:
        ci.notes.append("the dump has no VMCOREINFO: kernel, crash time and log are unknown")
    else:
        try:
            ci.crash_time = info.crashtime
        except KdumperError as e:
            ci.notes.append(str(e))
        if ci.crash_time is None:
            ci.notes.append("VMCOREINFO has no CRASHTIME")
    if log is None and info is not None:
        try:
            log = read_log(dump)
        except KdumperError as e:
            ci.notes.append(f"kernel log unreadable: {e}")
    facts = LogFacts()
    if log is not None:
        ci.log_records = len(log.records)
        ci.log_problems = tuple(log.problems)
        if log.records:
            ci.uptime = log.records[-1].ts_nsec / 1e9
            ci.uptime_source = "log"
        facts = log_facts(log.records)
    ci.panic_message = facts.panic_message

    syms = None
    if use_kallsyms and info is not None:
        syms = kallsyms(dump)
    try:
        ci.cpus = _cpu_states(dump, syms.symbolize if syms is not None else None)
    except KdumperError as e:
        ci.notes.append(f"CPU registers unreadable: {e}")

    if syms is not None:
        _from_kallsyms(dump, syms, ci)
    if ci.panic_cpu is None and facts.cpu is not None:
        ci.panic_cpu, ci.panic_cpu_source = facts.cpu, "log"
    if ci.panic_cpu is None:
        busy = [c for c in ci.cpus if c.pid != 0]
        if len(busy) == 1:
            ci.panic_cpu, ci.panic_cpu_source = busy[0].cpu, "prstatus"
        elif ci.cpus:
            ci.notes.append("the panic CPU is unknown (no report line in the log)")
    if facts.pid is not None:
        ci.pid, ci.comm, ci.task_source = facts.pid, facts.comm, "log"
    state = ci.panic_cpu_state
    if state is not None:
        if ci.pid is None:
            ci.pid, ci.task_source = state.pid, "prstatus"
        elif state.pid != ci.pid and ci.panic_cpu_source != "kallsyms":
            ci.notes.append(
                f"CPU {state.cpu}'s NT_PRSTATUS note has pid {state.pid}, the log says "
                f"{ci.pid}: the notes may not be numbered by CPU"
            )
    if ci.taint is None and facts.taint is not None:
        ci.taint, ci.taint_source = facts.taint, "log"
    return ci


def _from_kallsyms(dump: Dump, syms: Kallsyms, ci: CrashInfo) -> None:
    from .memory import kernel_memory

    mem = kernel_memory(dump)
    addr = syms.lookup("panic_cpu")
    if addr is not None:
        try:
            raw = mem.read_u32(addr)
            value = raw - (1 << 32) if raw >= 1 << 31 else raw
            if value != PANIC_CPU_INVALID and 0 <= value < 1 << 16:
                ci.panic_cpu, ci.panic_cpu_source = value, "kallsyms"
        except KdumperError as e:
            ci.notes.append(f"panic_cpu unreadable: {e}")
    addr = syms.lookup("tainted_mask")
    if addr is not None:
        try:
            ci.taint, ci.taint_source = taint_from_mask(mem.read_u64(addr)), "kallsyms"
        except KdumperError as e:
            ci.notes.append(f"tainted_mask unreadable: {e}")
