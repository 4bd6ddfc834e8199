"""The triage report: the page a kernel engineer wants first when a dump arrives.

:func:`build_report` gathers, from the dump alone (no debug info): the kernel, crash time,
uptime, panic reason, the primary crash report of the log with its normalised title, signature
and call trace, the panic CPU's registers, taint, the last lines of the log, memory composition
by page class (when the ``struct page`` classifier understands the kernel), and the commands to
run next (``crash``/``drgn`` with the distribution's debug-info package). It is rendered as
aligned text (:func:`render_text`), JSON with stable keys (:func:`report_to_json`, schema
``kdumper-report-1``) or one self-contained HTML page (:func:`render_html`: inline CSS and SVG,
no scripts, no external resources; every piece of log text is escaped).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..dump.base import Dump
from ..errors import KdumperError
from ..kernel.crashinfo import TAINT_FLAGS, CpuState, CrashInfo, cpu_to_dict, crash_info
from ..kernel.printk import KernelLog, format_makedumpfile, read_log
from .oops import Report, lines_from_records, parse_log, primary, report_to_dict
from .signature import Crash, describe

SCHEMA = "kdumper-report-1"
LOG_LINES = 50
TRACE_FRAMES = 24  # call trace frames shown in text and HTML (JSON has them all)

# page classes of kernel.pages (dump level 31) in display order: key, label, colour
_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("kernel", "kernel & other", "#4e79a7"),
    ("user", "user (anonymous)", "#f28e2b"),
    ("cache", "page cache", "#59a14f"),
    ("cache_private", "page cache (private)", "#8cd17d"),
    ("free", "free", "#bab0ac"),
    ("hwpoison", "hwpoison", "#e15759"),
    ("offline", "offline", "#b07aa1"),
)


@dataclass
class MemoryComposition:
    """RAM by page class (makedumpfile's ``-d 31`` classes; the rest is kernel & other)."""

    page_size: int
    total_pages: int  #: RAM pages in the dump (present)
    pages: dict[str, int]  #: class key → pages, keys as in ``_CLASSES``

    def mib(self, key: str) -> float:
        """The size of one class in MiB."""
        return self.pages.get(key, 0) * self.page_size / (1 << 20)


@dataclass
class NextSteps:
    """What to run next, with the debug info this kernel needs."""

    distro: str  #: ``debian``, ``ubuntu``, ``fedora``, ``suse`` or ``unknown``
    debug_package: str | None
    install: str | None  #: the command that installs it
    vmlinux: str  #: where the package puts the vmlinux with debug info
    commands: list[tuple[str, str]]  #: (what it does, command line)


@dataclass
class TriageReport:
    """Everything the report shows; render with :func:`render_text` / JSON / HTML."""

    paths: list[str]
    format: str
    info: CrashInfo
    log: KernelLog | None
    reports: list[Report]
    primary_index: int | None
    crash: Crash | None
    last_lines: list[str]
    memory: MemoryComposition | None
    memory_note: str | None
    next_steps: NextSteps
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> Report | None:
        """The report that is the crash."""
        return None if self.primary_index is None else self.reports[self.primary_index]

    @property
    def title(self) -> str:
        """The crash title (normalised), or what is known without a report."""
        if self.crash is not None:
            return self.crash.title
        if self.info.panic_message:
            return f"Kernel panic: {self.info.panic_message}"
        return "no crash report in the kernel log"


# --------------------------------------------------------------------------------------------
# gathering


def memory_composition(dump: Dump) -> MemoryComposition:
    """Pages per class from the ``struct page`` classifier (:mod:`kdumper.kernel.pages`)."""
    import numpy as np

    from ..kernel.pages import CLASS_NAMES, Classifier, exclusion_windows

    classifier = Classifier(dump)
    counts = np.zeros(256, np.int64)
    total = 0
    for _start, present, (classes,) in exclusion_windows(classifier, [31]):
        counts += np.bincount(classes[present], minlength=256)[:256]
        total += int(present.sum())
    pages = {name: int(counts[int(value)]) for value, name in CLASS_NAMES.items()}
    pages["kernel"] = total - sum(pages.values())
    return MemoryComposition(page_size=dump.page_size, total_pages=total, pages=pages)


_FEDORA = re.compile(r"\.(?:el\d+|fc\d+)")
_UBUNTU = re.compile(
    r"-(?:generic|generic-64k|generic-lpae|lowlatency|aws|azure|gcp|gke|gkeop|kvm|oracle|ibm|"
    r"nvidia|raspi|realtime|intel-iotg)$"
)
_DEBIAN = re.compile(r"\+deb\d+|\+bpo|-(?:cloud-)?(?:amd64|arm64|rt-amd64|686|686-pae|armmp)$")
_SUSE = re.compile(r"-(?:default|azure|rt|64kb)$")


def next_steps(release: str | None, paths: list[str], dump_format: str) -> NextSteps:
    """Debug-info package and ``crash``/``drgn`` command lines for ``release``."""
    rel = release or "RELEASE"
    vmlinux = f"/usr/lib/debug/boot/vmlinux-{rel}"
    if release and _FEDORA.search(release):
        distro, pkg = "fedora", f"kernel-debuginfo-{release}"
        install = f"dnf debuginfo-install kernel-{release}"
        vmlinux = f"/usr/lib/debug/lib/modules/{release}/vmlinux"
    elif release and _UBUNTU.search(release):
        distro, pkg = "ubuntu", f"linux-image-unsigned-{release}-dbgsym"
        install = f"apt install {pkg}  # needs the ddebs.ubuntu.com archive"
    elif release and _DEBIAN.search(release):
        distro, pkg = "debian", f"linux-image-{release}-dbg"
        install = f"apt install {pkg}"
    elif release and _SUSE.search(release):
        flavour = release.rsplit("-", 1)[1]
        distro, pkg = "suse", f"kernel-{flavour}-debuginfo"
        install = f"zypper install {pkg}  # the version matching {release}"
        vmlinux = f"/usr/lib/debug/boot/vmlinux-{release}.debug"
    else:
        distro, pkg, install = "unknown", None, None
    dump = " ".join(_shell_quote(p) for p in paths)
    commands: list[tuple[str, str]] = []
    crash_dump = dump
    if dump_format.startswith("flattened") or len(paths) > 1:
        single = _shell_quote(paths[0] + ".kdump")
        what = "reassemble the flattened stream" if len(paths) == 1 else "join the split parts"
        commands.append(
            (f"{what} into one file (crash and drgn read only seekable single files)",
             f"kdumper reassemble {dump} {single}")
        )  # fmt: skip
        crash_dump = single
    if install:
        commands.append(("install the kernel's debug info", install))
    commands.append(("open the dump in crash (then: bt, log, ps, kmem -i)",
                     f"crash {vmlinux} {crash_dump}"))  # fmt: skip
    commands.append(
        ("open the dump in drgn (then: prog.crashed_thread().stack_trace())",
         f"drgn -c {crash_dump} -s {vmlinux}")
    )  # fmt: skip
    commands.append(("the whole kernel log", f"kdumper dmesg {dump}"))
    return NextSteps(distro, pkg, install, vmlinux, commands)


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def build_report(
    dump: Dump,
    paths: list[str] | None = None,
    *,
    memory: bool = True,
    log_lines: int = LOG_LINES,
    use_kallsyms: bool = True,
) -> TriageReport:
    """Gather the triage report of ``dump``; missing pieces become notes, never exceptions."""
    paths = paths or [dump.path]
    notes: list[str] = []
    log: KernelLog | None = None
    try:
        log = read_log(dump)
    except KdumperError as e:
        notes.append(f"kernel log unreadable: {e}")
    info = crash_info(dump, log, use_kallsyms=use_kallsyms)
    reports: list[Report] = []
    index: int | None = None
    crash: Crash | None = None
    last: list[str] = []
    if log is not None:
        reports = parse_log(lines_from_records(log.records))
        index = primary(reports)
        if index is not None:
            crash = describe(reports[index])
            _complete_from_report(info, reports[index])
        text = format_makedumpfile(log.records[-log_lines:], caller_id=log.has_caller_id)
        last = text.decode("utf-8", "replace").splitlines()[-log_lines:] if log_lines else []
    comp: MemoryComposition | None = None
    memory_note: str | None = None
    if memory:
        try:
            comp = memory_composition(dump)
        except KdumperError as e:
            memory_note = f"memory composition unavailable: {e}"
        except Exception as e:  # an optional section must not sink the report
            memory_note = f"memory composition failed: {type(e).__name__}: {e}"
    else:
        memory_note = "memory composition not computed (--no-memory)"
    return TriageReport(
        paths=paths,
        format=dump.format,
        info=info,
        log=log,
        reports=reports,
        primary_index=index,
        crash=crash,
        last_lines=last,
        memory=comp,
        memory_note=memory_note,
        next_steps=next_steps(info.release, paths, dump.format),
        notes=notes + info.notes,
    )


_RSP = re.compile(r"^\s*RSP: [0-9a-f]{4}:(?P<sp>[0-9a-f]{16})\b")


def _name_pc_from_report(info: CrashInfo, report: Report) -> None:
    """Name the panic CPU's pc after the report's RIP when kallsyms cannot (module code).

    An oops with ``oops=panic`` goes to the capture kernel with the oops's own registers: when
    the stack pointer of the NT_PRSTATUS note is the report's ``RSP``, its pc is the report's
    ``RIP`` (``kdumper_crash_null+0x19/0x25 [kdumper_crash]``).
    """
    state = info.panic_cpu_state
    if state is None or state.symbol is not None or report.rip is None:
        return
    for line in report.registers:
        m = _RSP.match(line)
        if m is not None and int(m.group("sp"), 16) == state.sp:
            named = replace(state, symbol=report.rip.symbol())
            info.cpus = tuple(named if c is state else c for c in info.cpus)
            return


def _complete_from_report(info: CrashInfo, report: Report) -> None:
    """Fill what crash_info could not find from the parsed primary report."""
    _name_pc_from_report(info, report)
    if info.panic_cpu is None and report.cpu is not None:
        info.panic_cpu, info.panic_cpu_source = report.cpu, "log"
    if info.pid is None and report.pid is not None:
        info.pid, info.comm, info.task_source = report.pid, report.comm, "log"
    elif info.comm is None and report.comm is not None and report.pid == info.pid:
        info.comm = report.comm
    if info.taint is None and report.taint is not None:
        info.taint, info.taint_source = report.taint, "log"


# --------------------------------------------------------------------------------------------
# JSON


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    try:
        return (
            datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
    except (OverflowError, OSError, ValueError):
        return None


def report_to_json(r: TriageReport) -> dict[str, Any]:
    """The report as a JSON-ready dict with stable keys (``schema``: ``kdumper-report-1``)."""
    info = r.info
    base = info.to_dict()
    prim = r.primary
    primary_doc: dict[str, Any] | None = None
    if prim is not None and r.crash is not None:
        primary_doc = {
            "index": r.primary_index,
            "title": r.crash.title,
            "signature": r.crash.signature,
            "signature_frames": list(r.crash.frames),
            "guilty": r.crash.guilty.symbol() if r.crash.guilty else None,
        }
        primary_doc.update(report_to_dict(prim))
    state = info.panic_cpu_state
    mem: dict[str, Any] = {"available": r.memory is not None, "note": r.memory_note}
    if r.memory is not None:
        m = r.memory
        mem.update(
            page_size=m.page_size,
            total_pages=m.total_pages,
            total_mib=round(m.total_pages * m.page_size / (1 << 20), 1),
            classes=[
                {
                    "name": key,
                    "label": label,
                    "pages": m.pages.get(key, 0),
                    "mib": round(m.mib(key), 1),
                }
                for key, label, _ in _CLASSES
            ],
        )  # fmt: skip
    log = r.log
    return {
        "schema": SCHEMA,
        "kdumper_version": __version__,
        "dump": {"paths": list(r.paths), "format": r.format},
        "kernel": base["kernel"],
        "crash_time": info.crash_time,
        "crash_time_utc": _iso(info.crash_time),
        "uptime": info.uptime,
        "uptime_source": info.uptime_source,
        "boot_time_utc": _iso(info.boot_time),
        "title": r.title,
        "signature": r.crash.signature if r.crash else None,
        "kind": prim.kind.value if prim is not None else None,
        "panic": {
            "message": info.panic_message,
            "cpu": info.panic_cpu,
            "cpu_source": info.panic_cpu_source,
            "pid": info.pid,
            "comm": info.comm,
            "task_source": info.task_source,
        },
        "taint": {"letters": info.taint, "flags": info.taint_names(), "source": info.taint_source},
        "primary_report": primary_doc,
        "reports": [
            {
                "index": k,
                "kind": rep.kind.value,
                "first_line": rep.first_line,
                "time": rep.time,
                "primary": k == r.primary_index,
            }
            for k, rep in enumerate(r.reports)
        ],
        "registers": cpu_to_dict(state) if state is not None else None,
        "cpus": base["cpus"],
        "log": {
            "layout": log.layout if log else None,
            "records": len(log.records) if log else 0,
            "has_caller_id": log.has_caller_id if log else None,
            "complete": (not log.problems) if log else False,
            "problems": list(log.problems) if log else [],
            "last_lines": list(r.last_lines),
        },
        "memory": mem,
        "next_steps": {
            "distro": r.next_steps.distro,
            "debug_package": r.next_steps.debug_package,
            "install": r.next_steps.install,
            "vmlinux": r.next_steps.vmlinux,
            "commands": [{"what": w, "command": c} for w, c in r.next_steps.commands],
        },
        "notes": list(r.notes),
    }


def triage_json(dump: Dump, paths: list[str]) -> dict[str, Any]:
    """The JSON report of ``dump`` without the memory census: what a capture writes into
    ``report.json`` (:data:`kdumper.collect.retention.TriageFn`)."""
    return report_to_json(build_report(dump, paths, memory=False))


# --------------------------------------------------------------------------------------------
# text

# x86_64 registers as the kernel's __show_regs() groups them
_X86_ROWS: tuple[tuple[str, ...], ...] = (
    ("rsp", "eflags", "orig_rax"),
    ("rax", "rbx", "rcx"),
    ("rdx", "rsi", "rdi"),
    ("rbp", "r8", "r9"),
    ("r10", "r11", "r12"),
    ("r13", "r14", "r15"),
    ("cs", "ss", "fs_base"),
    ("gs_base", "ds", "es"),
)


def register_lines(state: CpuState) -> list[str]:
    """The registers of one CPU, three per line (x86_64 in the kernel's order)."""
    regs = dict(state.registers)
    pc_name = "rip" if "rip" in regs else "pc"
    head = f"{pc_name.upper():>8}: {state.pc:016x}"
    if state.symbol:
        head += f" {state.symbol}"
    lines = [head]
    rows: list[tuple[str, ...]]
    if pc_name == "rip":
        rows = [tuple(n for n in row if n in regs) for row in _X86_ROWS]
    else:
        names = [n for n in regs if n != pc_name]
        rows = [tuple(names[i : i + 3]) for i in range(0, len(names), 3)]
    for row in rows:
        if row:
            lines.append("  ".join(f"{n.upper():>8}: {regs[n]:016x}" for n in row))
    return lines


def _taint_text(info: CrashInfo) -> str | None:
    if info.taint is None:
        return None
    if not info.taint:
        return f"not tainted ({info.taint_source})"
    names = ", ".join(f"{c} {TAINT_FLAGS.get(c, '?')}" for c in info.taint)
    return f"{names} ({info.taint_source})"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{secs + seconds - whole:.3f}s" if not parts else f"{secs}s")
    return " ".join(parts)


def summary_rows(r: TriageReport) -> list[tuple[str, str]]:
    """The key facts as (label, value) rows, in display order (unknown ones left out)."""
    info = r.info
    uts = info.utsname
    rows: list[tuple[str, str | None]] = [
        ("title", r.title),
        ("signature", r.crash.signature if r.crash else None),
        ("kind", r.primary.kind.value if r.primary else None),
        ("panic", info.panic_message),
        ("kernel", uts.release if uts else None),
        ("version", uts.version if uts and uts.version else None),
        ("machine", uts.machine if uts and uts.machine else None),
        ("hostname", uts.nodename if uts and uts.nodename else None),
        (
            "crashed",
            f"{_iso(info.crash_time)} (epoch {info.crash_time})" if info.crash_time else None,
        ),
        (
            "uptime",
            f"{_duration(info.uptime)} (booted {_iso(info.boot_time)})"
            if info.uptime is not None and info.boot_time is not None
            else (_duration(info.uptime) if info.uptime is not None else None),
        ),
        ("task", _task_text(info)),
        ("taint", _taint_text(info)),
        ("RIP", r.primary.rip.symbol() if r.primary and r.primary.rip else None),
        ("guilty", r.crash.guilty.symbol() if r.crash and r.crash.guilty else None),
        ("dump", f"{' '.join(r.paths)} ({r.format})"),
        ("log", _log_text(r)),
    ]
    return [(k, v) for k, v in rows if v]


def _task_text(info: CrashInfo) -> str | None:
    parts = []
    if info.comm:
        parts.append(info.comm)
    if info.pid is not None:
        parts.append(f"(PID {info.pid})")
    if info.panic_cpu is not None:
        parts.append(f"on CPU {info.panic_cpu}")
    return " ".join(parts) or None


def _log_text(r: TriageReport) -> str | None:
    if r.log is None:
        return "unreadable"
    text = f"{len(r.log.records)} records ({r.log.layout} ring)"
    if r.log.problems:
        text += f", INCOMPLETE: {'; '.join(r.log.problems)}"
    return text


def _memory_lines(m: MemoryComposition) -> list[str]:
    total_mib = m.total_pages * m.page_size / (1 << 20)
    out = [f"{m.total_pages} pages ({total_mib:.1f} MiB) of RAM in the dump"]
    for key, label, _ in _CLASSES:
        pages = m.pages.get(key, 0)
        if pages or key in ("kernel", "user", "cache", "free"):
            share = 100 * pages / m.total_pages if m.total_pages else 0.0
            out.append(f"{label:<22} {pages:>10} pages {m.mib(key):>10.1f} MiB {share:5.1f}%")
    return out


def _trace_lines(report: Report) -> list[str]:
    if not report.stacks:
        return []
    stack = report.stacks[0]
    frames = [f for f in stack.frames if f.reliable]
    lines = [f"{'' if f.reliable else '? '}{f.symbol()}" for f in frames[:TRACE_FRAMES]]
    if len(frames) > TRACE_FRAMES:
        lines.append(f"... {len(frames) - TRACE_FRAMES} more")
    return lines


def render_text(r: TriageReport) -> str:
    """The report as aligned text: the summary first (one screen), the log last."""
    out: list[str] = []
    rows = summary_rows(r)
    width = max(len(k) for k, _ in rows) + 1
    out += [f"{k + ':':<{width}} {v}" for k, v in rows]

    def section(title: str, lines: list[str]) -> None:
        if lines:
            out.append("")
            out.append(f"{title}:")
            out.extend(f"  {line}" for line in lines)

    state = r.info.panic_cpu_state
    if state is not None:
        section(f"registers of CPU {state.cpu} (pid {state.pid})", register_lines(state))
    prim = r.primary
    if prim is not None:
        label = prim.stacks[0].label if prim.stacks else "call trace"
        section(f"{label} ({prim.first_line.strip()})", _trace_lines(prim))
    if r.memory is not None:
        section("memory", _memory_lines(r.memory))
    elif r.memory_note:
        section("memory", [r.memory_note])
    ns = r.next_steps
    section("next steps", [line for what, cmd in ns.commands for line in (f"# {what}", cmd)])
    if r.notes:
        section("notes", list(r.notes))
    section(f"last {len(r.last_lines)} log lines", list(r.last_lines))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;
color:#1d2430}
header{background:#1d2430;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px;word-break:break-word}
header .sig{font:12px ui-monospace,monospace;color:#c9d1dc;word-break:break-all}
.badge{display:inline-block;background:#e15759;color:#fff;border-radius:4px;padding:1px 8px;
font-size:12px;margin-right:8px;vertical-align:middle}
main{padding:18px 28px;max-width:1180px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:0 0 16px;
padding:12px 16px}
section h2{font-size:15px;margin:0 0 8px;color:#34495e}
table.kv td{padding:2px 14px 2px 0;vertical-align:top}
table.kv td:first-child{color:#5b6675;white-space:nowrap}
pre{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;margin:0;white-space:pre-wrap;
word-break:break-all;background:#f7f8fa;padding:8px;border-radius:4px}
table.mem td{padding:1px 12px 1px 0}
table.mem td.n{text-align:right;font-variant-numeric:tabular-nums}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px}
.note{color:#8a5a00}
footer{color:#7b8594;font-size:12px;padding:0 28px 18px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _svg_bar(m: MemoryComposition) -> str:
    """A horizontal stacked bar of the page classes (inline SVG)."""
    width, height = 1000, 34
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        'width="100%" style="display:block;margin:4px 0 10px" role="img" '
        'aria-label="memory composition">'
    ]
    x = 0.0
    for key, label, colour in _CLASSES:
        pages = m.pages.get(key, 0)
        if not pages or not m.total_pages:
            continue
        w = width * pages / m.total_pages
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{colour}">'
            f"<title>{_e(label)}: {pages} pages</title></rect>"
        )
        if w > 60:
            parts.append(
                f'<text x="{x + w / 2:.2f}" y="{height / 2 + 5:.1f}" text-anchor="middle" '
                f'font-size="13" fill="#fff" font-family="sans-serif">'
                f"{100 * pages / m.total_pages:.0f}%</text>"
            )
        x += w
    parts.append("</svg>")
    return "".join(parts)


def _kv_table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def render_html(r: TriageReport) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, nothing fetched)."""
    info = r.info
    prim = r.primary
    body: list[str] = []
    rows = [(k, v) for k, v in summary_rows(r) if k not in ("title", "signature")]
    body.append(f"<section><h2>Summary</h2>{_kv_table(rows)}</section>")
    if prim is not None:
        trace = "\n".join(_trace_lines(prim))
        label = prim.stacks[0].label if prim.stacks else "Call Trace"
        body.append(
            f"<section><h2>{_e(label)} &mdash; {_e(prim.first_line.strip())}</h2>"
            f"<pre>{_e(trace) or '(no stack trace in the report)'}</pre></section>"
        )
    state = info.panic_cpu_state
    if state is not None:
        regs = "\n".join(register_lines(state))
        body.append(
            f"<section><h2>Registers of CPU {state.cpu} (pid {state.pid})</h2>"
            f"<pre>{_e(regs)}</pre></section>"
        )
    if r.memory is not None:
        m = r.memory
        legend = "".join(
            f'<tr><td><span class="sw" style="background:{colour}"></span>{_e(label)}</td>'
            f'<td class="n">{m.pages.get(key, 0)}</td><td class="n">{m.mib(key):.1f} MiB</td>'
            f'<td class="n">{100 * m.pages.get(key, 0) / max(m.total_pages, 1):.1f}%</td></tr>'
            for key, label, colour in _CLASSES
        )
        total_mib = m.total_pages * m.page_size / (1 << 20)
        body.append(
            f"<section><h2>Memory ({m.total_pages} pages, {total_mib:.1f} MiB)</h2>"
            f'{_svg_bar(m)}<table class="mem"><tr><td></td><td class="n">pages</td>'
            f'<td class="n">size</td><td class="n">share</td></tr>{legend}</table></section>'
        )
    elif r.memory_note:
        body.append(f'<section><h2>Memory</h2><p class="note">{_e(r.memory_note)}</p></section>')
    if prim is not None:
        body.append(
            f"<section><h2>Primary report (log lines {prim.start + 1}&ndash;{prim.end})</h2>"
            f"<pre>{_e(chr(10).join(prim.lines))}</pre></section>"
        )
    steps = "\n".join(f"# {what}\n{cmd}" for what, cmd in r.next_steps.commands)
    body.append(f"<section><h2>Next steps</h2><pre>{_e(steps)}</pre></section>")
    if r.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in r.notes)
        body.append(f'<section><h2>Notes</h2><ul class="note">{items}</ul></section>')
    body.append(
        f"<section><h2>Last {len(r.last_lines)} log lines</h2>"
        f"<pre>{_e(chr(10).join(r.last_lines))}</pre></section>"
    )
    kind = f'<span class="badge">{_e(prim.kind.value)}</span>' if prim is not None else ""
    sig = _e(r.crash.signature) if r.crash else "no signature"
    release = info.release or "unknown kernel"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(r.title)} — {_e(release)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{kind}{_e(r.title)}</h1><div class="sig">signature {sig}</div></header>'
        f"<main>{''.join(body)}</main>"
        f"<footer>kdumper {_e(__version__)} report of {_e(' '.join(r.paths))}</footer>"
        "</body></html>\n"
    )
