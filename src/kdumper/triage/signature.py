"""Crash titles and signatures: what to call a report, and which reports are the same bug.

The title is short and stable, in the style of syzbot (``BUG: kernel NULL pointer dereference in
ext4_fill_super``, ``WARNING in drop_nlink``, ``KASAN: use-after-free Read in tcp_close``,
``INFO: task hung in p9_fd_close``, ``sysrq triggered crash``, ``Kernel panic: VFS: Unable to
mount root fs on unknown-block(NUM,NUM)``). The function in it is the *guilty frame*: the first
frame that is not part of the machinery that reported the crash (see :data:`GENERIC_FRAMES`).

The signature is the SHA-256 (hex) of the kind, the title and the names of the guilty frame and
the next non-generic frames below it (:data:`SIGNATURE_FRAMES` in all). Everything that changes
from one occurrence of a bug to the next is left out: addresses and KASLR offsets, function
offsets and sizes (they change with every build), PIDs, CPUs, time stamps, comm names, module
names, line numbers, and compiler suffixes (``.isra.0``, ``.constprop.0``, ``.cold``,
``.part.0``, ``.llvm.123``). So one bug seen in two dumps (another boot, another build of the
same code, another CPU) gets one signature; a crash in another function, or reached along
another path, gets another. OOM kills and SysRq crashes are grouped by title alone: their stacks
say where memory ran out or who pressed the key, not what the bug is.

Design choices (a fleet wants the same answer every time, so they are fixed here):

* frames printed with ``?`` are skipped (they are stack garbage the unwinder could not vouch
  for), unless a trace has no reliable frame at all (old kernels without frame pointers);
* a fault *inside* a generic helper is blamed on its caller: a NULL pointer passed to
  ``memcpy``, ``kfree``, ``mutex_lock`` or ``refcount_inc`` is the caller's bug;
* ``handle_mm_fault`` and the rest of mm are **not** generic: a crash there is an mm bug; only
  the architecture's fault *reporting* path (``exc_page_fault``, ``page_fault_oops``,
  ``do_user_addr_fault``, ...) is;
* system call entry points are kept but renamed to one spelling (``__x64_sys_read``,
  ``__arm64_sys_read``, ``__se_sys_read``, ``__do_sys_read`` → ``sys_read``), so the same bug
  reached from a syscall on two architectures or kernel versions matches; the entry glue around
  them (``do_syscall_64``, ``entry_SYSCALL_64_after_hwframe``) is generic;
* for lockups and stalls the detector's own frames (timer interrupt, NMI, watchdog) are skipped
  and the interrupted context (the register dump inside the trace) is what counts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .oops import Frame, Kind, Report

__all__ = [
    "GENERIC_FRAMES",
    "SIGNATURE_FRAMES",
    "Crash",
    "describe",
    "guilty_frame",
    "is_generic",
    "normalize_function",
    "normalize_text",
    "signature",
    "title",
]

#: frames hashed into a signature: the guilty frame and the next non-generic ones below it
SIGNATURE_FRAMES = 5
_VERSION = "kdumper-signature-1"  # change when the rules change: old signatures stop matching

#: generic frames, by category: a frame whose normalised name fully matches one of the patterns
#: is not blamed for a crash (the caller is). Categories ``report``, ``trap``, ``sched``, ``irq``
#: and ``sanitizer`` are never blamed; when a trace has nothing else, the first frame of another
#: category is (``INFO: task hung in kthread`` rather than ``... in __schedule``).
GENERIC_FRAMES: dict[str, tuple[str, ...]] = {
    # the report machinery itself
    "report": (
        r"dump_stack\w*|show_stack\w*|show_trace_log_lvl|_*show_regs\w*|dump_backtrace\w*",
        r"sched_show_task|print_\w+|_?printk\w*|vprintk\w*|__warn_printk",
        r"v?panic|nmi_panic|check_panic_on_\w+|__warn|warn_slowpath\w*|warn_alloc\w*",
        r"report_bug|handle_bug|fixup_bug|__report_bug|bug_handler|__schedule_bug",
        r"save_stack\w*|stack_trace_save\w*|stack_depot_\w+|arch_stack_walk|unwind_\w+",
        r"check_preemption_disabled|debug_smp_processor_id|__this_cpu_preempt_check",
        r"spin_dump|spin_bug|rwlock_bug|debug_check_no_\w+|usercopy_(?:warn|abort)",
    ),
    # exception entry and the architecture's fault *reporting* path (not mm: handle_mm_fault
    # and what it calls are real code where real bugs are)
    "trap": (
        r"do_\w*trap|do_invalid_op|do_int3\w*|math_error|exc_\w+|asm_exc_\w+",
        r"__die\w*|die|die_addr|oops_\w+|page_fault_oops|no_context|_*bad_area\w*",
        r"do_user_addr_fault|do_kern_addr_fault|spurious_kernel_fault",
        r"kernelmode_fixup_or_oops|fixup_exception",
        r"__do_page_fault|do_page_fault|page_fault|async_page_fault|error_entry",
        r"general_protection|invalid_op|do_general_protection",
    ),
    # sanitizers and debugging checks
    "sanitizer": (
        r"_*k?asan_\w+|_*kfence_\w+|_*kmsan_\w+|__msan_\w+|_*kcsan_\w+|__tsan_\w+",
        r"_*ubsan_\w+|__sanitizer_\w+|check_memory_region\w*",
        r"debug_object\w*|debug_print_object|\w+_is_static_object",
        r"_*might_\w+|__might_resched|___might_sleep|might_fault|might_sleep",
        r"handle_(?:overflow|null_ptr_deref|misaligned_access|object_size_mismatch)",
        r"__?check_heap_object|_*check_object_size",
    ),
    # refcount/list checkers: the WARN or BUG is about the caller's object
    "checker": (r"refcount_\w+|kref_\w+|__list_\w+_valid\w*|list_(?:add|del)\w*",),
    # locking primitives and lockdep: a deadlock or a bad lock is the caller's
    "lock": (
        r"lock_acquire\w*|lock_release|lock_acquired|lock_contended|__lock_acquire",
        r"lock_is_held\w*|mark_lock\w*|mark_held_locks|validate_chain|check_prevs?_add",
        r"check_noncircular|check_irq_usage|lockdep_\w+|__lockdep_\w+|find_held_lock",
        r"rcu_lock_acquire|register_lock_class|look_up_lock_class|debug_locks_off",
        r"(?:_raw|__raw|do_raw)_(?:spin|read|write)_(?:try)?(?:un)?lock\w*",
        r"(?:native_|__pv_)?queued_(?:spin|read|write)_lock\w*|spin_(?:un)?lock\w*",
        r"_*mutex_(?:un)?lock\w*|mutex_trylock\w*|_*rt_mutex_\w+|_*rwsem_\w+",
        r"osq_(?:un)?lock|ldsem_(?:down|up)_\w+|call_rwsem_\w+",
        r"down|down_(?:read|write|interruptible|killable|timeout|trylock)\w*|__down\w*",
        r"up|up_read|up_write|_*percpu_(?:down|up)_\w+|_*rcu_read_(?:un)?lock\w*",
        r"lock_sock\w*|__lock_sock\w*|release_sock",
    ),
    # sleeping and waiting: a hung task is blamed on what it waits for, not on the scheduler
    "sched": (
        r"__schedule|schedule\w*|preempt_schedule\w*|_*cond_resched\w*|context_switch",
        r"__switch_to\w*|io_schedule\w*|wait_for_completion\w*|_*wait_for_common\w*",
        r"wait_woken|prepare_to_wait\w*|finish_wait|_*wait_on_bit\w*|bit_wait\w*",
        r"out_of_line_wait_on_bit\w*|folio_wait\w*|__folio_lock\w*|wait_on_page\w*",
        r"_*lock_page\w*|_*flush_work|__wait_rcu_gp|wait_rcu_gp|synchronize_rcu\w*",
        r"__synchronize_srcu|synchronize_(?:sched|srcu|net)\w*|rcu_barrier\w*",
        r"_*flush_workqueue|drain_workqueue|kthread_park|__kthread_parkme|kthread_stop\w*",
        r"_*wait_var_event\w*|_*filemap_fdatawait\w*|filemap_write_and_wait\w*",
        r"\w+_wait_writeback",
    ),
    # interrupt, timer and NMI plumbing (what a lockup or stall detector runs in)
    "irq": (
        r"_*sysvec_\w+|asm_sysvec_\w+|asm_common_interrupt|common_interrupt|_*irq_exit\w*",
        r"__do_softirq|do_softirq\w*|handle_softirqs|_*hrtimer_run_queues|hrtimer_interrupt",
        r"tick_\w+|update_process_times|watchdog_timer_fn|watchdog_overflow_callback",
        r"_*perf_event_overflow|\w+_pmu_handle_irq|perf_event_nmi_handler|nmi_handle\w*",
        r"default_do_nmi|do_nmi|exc_nmi|asm_exc_nmi|end_repeat_nmi|nmi_\w*backtrace\w*",
        r"arch_trigger_cpumask_backtrace|rcu_dump_cpu_stacks|check_cpu_stall|rcu_pending",
        r"rcu_sched_clock_irq|rcu_check_callbacks|smp_apic_timer_interrupt",
        r"apic_timer_interrupt",
    ),
    # syscall entry glue, thread and CPU start-up (system calls themselves are kept)
    "entry": (
        r"entry_SYSCALL\w*|entry_SYSENTER\w*|entry_INT80\w*|do_syscall_\w+|x64_sys_call",
        r"_*do_fast_syscall_32|do_int80_syscall_32|ia32_sys_call",
        r"syscall_exit_to_user_mode\w*|exit_to_user_mode\w*|exit_to_usermode_loop",
        r"prepare_exit_to_usermode|irqentry_\w+",
        r"ret_from_fork\w*|kthread|worker_thread|process_one_work|process_scheduled_works",
        r"smpboot_thread_fn|start_secondary|secondary_startup_64\w*|cpu_startup_entry",
        r"do_idle|__x86_indirect_\w+|\w+_indirect_thunk_\w+|__x86_return_thunk|__pfx_\w+",
    ),
    # memory/string helpers: the caller passed the bad pointer or length
    "helper": (
        r"_*mem(?:cpy|set|move|cmp|chr|dup)\w*|rep_movs_alternative",
        r"_*copy_(?:to|from)_user\w*|_*(?:get|put)_user\w*|strncpy_from_user",
        r"check_copy_size|str(?:n?cpy|n?cmp|n?len|r?chr|scpy|lcpy|n?cat|dup)\w*",
    ),
    # allocator entry points: a fault or a KASAN report there is about the caller's pointer
    "alloc": (
        r"_*kmalloc(?:_node)?(?:_track_caller)?(?:_noprof)?|__kmalloc_\w+",
        r"kmalloc_(?:trace|large|node|array|order)\w*|kmem_cache_(?:alloc|free|zalloc)\w*",
        r"kfree(?:_sensitive|_const|_skb\w*)?|kvfree\w*|kvmalloc\w*|kvzalloc\w*",
        r"kzalloc\w*|krealloc\w*|_*slab_(?:alloc|free)\w*|___slab_alloc",
    ),
}
_NEVER_BLAMED = ("report", "trap", "sched", "irq", "sanitizer")


def _alternation(categories: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for c in categories for p in GENERIC_FRAMES[c]))


_GENERIC = _alternation(tuple(GENERIC_FRAMES))
_WEAK = _alternation(_NEVER_BLAMED)

_SYSCALL = re.compile(
    r"^(?:__(?:x64|ia32|x32|arm64|riscv|s390x?|powerpc|se|do)_)+(?:compat_)?sys_(\w+)$"
)


def normalize_function(name: str) -> str:
    """A function name without compiler suffixes, with one spelling for syscall entry points."""
    base = name.split(".", 1)[0]
    base = base.removeprefix("__pfx_") if base != "__pfx_" else base
    m = _SYSCALL.match(base)
    if m is not None:
        return f"sys_{m.group(1)}"
    if base.startswith(("SyS_", "sys_")) and len(base) > 4:
        return "sys_" + base[4:]
    return base


def is_generic(name: str) -> bool:
    """Whether a function belongs to the reporting, locking, scheduling or entry machinery."""
    return bool(_GENERIC.fullmatch(normalize_function(name)))


_TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"([\w.$]+)\+0x[0-9a-fA-F]+/0x[0-9a-fA-F]+"), r"\1"),
    (re.compile(r"(\.(?:c|h|S|rs)):\d+(?::\d+)?"), r"\1:LINE"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "ADDR"),
    (re.compile(r"\b[0-9a-fA-F]{8,}\b"), "ADDR"),
    (re.compile(r"(?<![\w.])\d+(?![\w.])"), "NUM"),
    (re.compile(r"\s+"), " "),
)


def normalize_text(text: str) -> str:
    """Free text of a title (a panic reason) without addresses, numbers and offsets."""
    for pattern, repl in _TEXT_RULES:
        text = pattern.sub(repl, text)
    text = "".join(c for c in text if c.isprintable()).strip()
    return text[:120].rstrip()


# --------------------------------------------------------------------------------------------
# the guilty frame


_DETECTOR_KINDS = frozenset({Kind.SOFT_LOCKUP, Kind.HARD_LOCKUP, Kind.RCU_STALL})
_DETECTOR_CONTEXTS = frozenset({"irq", "nmi", "softirq"})
_LOCKDEP_AT = re.compile(
    r"^\s*(?:\S+\s+)?\(.*\)(?:\{[^}]*\})?(?:-\{[^}]*\})?, at: (?:\[<[0-9a-f]+>\] )?"
    r"(?P<func>[\w$.]+)\+0x"
)


def _candidates(report: Report) -> list[Frame]:
    """The frames the guilty frame is chosen from, innermost first."""
    frames = list(report.frames)
    kind = report.kind
    detector = kind in _DETECTOR_KINDS or (report.panic and report.rip is not None)
    if detector:
        regs = [k for k, f in enumerate(frames) if f.regs]
        if regs:
            frames = frames[regs[0] :]  # the interrupted context
        else:
            frames = [f for f in frames if f.context not in _DETECTOR_CONTEXTS]
    out: list[Frame] = []
    rip = report.rip
    if rip is not None and not (rip.regs and frames):  # an embedded RIP is among the frames
        out.append(rip)
    usable = [f for f in frames if f.function and f.reliable]
    if not usable:  # every frame is a guess: better than nothing
        usable = [f for f in frames if f.function]
    out += usable
    return out


def _named(name: str | None, candidates: Sequence[Frame]) -> tuple[Frame | None, int]:
    """The frame named on a report's header line, and where it is among the candidates."""
    if not name:
        return None, 0
    target = normalize_function(name)
    for k, f in enumerate(candidates):
        if normalize_function(f.function) == target:
            return f, k
    return Frame(function=name), -1


def _choose(report: Report) -> tuple[Frame | None, list[Frame]]:
    """The guilty frame, and the candidate frames from it on (for the signature)."""
    if report.kind is Kind.OOM:  # the stack says who asked for memory, not what used it up
        return None, []
    cands = _candidates(report)
    start = 0
    named: str | None = None
    if report.kind in (Kind.WARNING, Kind.KASAN, Kind.KFENCE, Kind.KMSAN):
        named = report.function
    elif report.kind is Kind.LOCKDEP:
        for text in report.lines[1:40]:
            m = _LOCKDEP_AT.match(text)
            if m is not None:
                named = m.group("func")
                break
    if named:
        frame, pos = _named(named, cands)
        if frame is not None and not is_generic(frame.function):
            rest = cands[pos + 1 :] if pos >= 0 else cands
            return frame, [frame, *rest]
        start = max(pos, 0)
    for k in range(start, len(cands)):
        if not is_generic(cands[k].function):
            return cands[k], cands[k:]
    if named:  # the header names a generic function and the trace has nothing better
        frame, pos = _named(named, cands)
        return frame, [frame] if frame is not None else []
    # only generic frames: the first that is not report/scheduler/interrupt machinery
    for k in range(start, len(cands)):
        if not _WEAK.fullmatch(normalize_function(cands[k].function)):
            return cands[k], cands[k:]
    return (cands[start], cands[start:]) if start < len(cands) else (None, [])


def guilty_frame(report: Report) -> Frame | None:
    """The first frame of ``report`` that is not crash-reporting or generic machinery."""
    return _choose(report)[0]


# --------------------------------------------------------------------------------------------
# title and signature

_LOCKDEP_TITLES = {
    "possible circular locking dependency detected": "possible deadlock",
    "possible recursive locking detected": "possible deadlock",
    "possible deadlock detected": "possible deadlock",
    "inconsistent lock state": "inconsistent lock state",
    "possible irq lock inversion dependency detected": "possible irq lock inversion",
}


def _in(prefix: str, frame: Frame | None) -> str:
    return f"{prefix} in {normalize_function(frame.function)}" if frame else prefix


def _kind_word(text: str | None) -> str:
    """A sanitizer bug type as one lower-case word (``Undefined behaviour`` → ``undefined-..``)."""
    return re.sub(r"\s+", "-", (text or "").strip().lower())


def _title(report: Report, guilty: Frame | None) -> str:
    kind = report.kind
    if kind is Kind.SYSRQ:
        return "sysrq triggered crash"
    if kind is Kind.OOM:
        memcg = report.bug_type == "memory cgroup"
        return "memory cgroup out of memory" if memcg else "out of memory"
    if kind is Kind.PANIC:
        reason = normalize_text(report.message.rstrip(". \n")) or "unknown reason"
        return f"Kernel panic: {reason}"
    if kind is Kind.NULL_DEREF:
        return _in("BUG: kernel NULL pointer dereference", guilty)
    if kind is Kind.PAGE_FAULT:
        return _in("BUG: unable to handle page fault", guilty)
    if kind is Kind.GPF:
        return _in("general protection fault", guilty)
    if kind is Kind.BUG:
        return _in("kernel BUG", guilty)
    if kind is Kind.OOPS:
        return _in(normalize_text(report.bug_type or "Oops"), guilty)
    if kind is Kind.WARNING:
        if report.bug_type:
            return _in(f"WARNING: {normalize_text(report.bug_type)}", guilty)
        return _in("WARNING", guilty)
    if kind is Kind.KASAN:
        access = f" {report.access.capitalize()}" if report.access else ""
        return _in(f"KASAN: {_kind_word(report.bug_type)}{access}", guilty)
    if kind is Kind.UBSAN:
        return _in(f"UBSAN: {_kind_word(report.bug_type)}", guilty)
    if kind in (Kind.KFENCE, Kind.KMSAN):
        return _in(f"{kind.value.upper()}: {normalize_text(report.bug_type or '')}", guilty)
    if kind is Kind.KCSAN:
        where = normalize_text(report.first_line.split(" in ", 1)[-1])
        return f"KCSAN: {_kind_word(report.bug_type)} in {where}"
    if kind is Kind.LOCKDEP:
        msg = (report.bug_type or "locking bug").rstrip("!. ")
        said = re.search(r"\b(BUG|INFO|WARNING):", report.first_line)
        prefix = said.group(1) if said else "WARNING"
        short = re.sub(r" detected$", "", msg)
        return _in(_LOCKDEP_TITLES.get(msg, f"{prefix}: {normalize_text(short)}"), guilty)
    if kind is Kind.HUNG_TASK:
        return _in("INFO: task hung", guilty)
    if kind is Kind.SOFT_LOCKUP:
        return _in("soft lockup", guilty)
    if kind is Kind.HARD_LOCKUP:
        return _in("hard lockup", guilty)
    if kind is Kind.RCU_STALL:
        return _in("INFO: rcu detected stall", guilty)
    # OTHER_BUG: "BUG: scheduling while atomic: comm/pid/0x..." → its first clause
    return _in(f"BUG: {_first_clause(report.bug_type or report.first_line)}", guilty)


_CLAUSE_END = re.compile(r": | at | in process | on CPU| - | \(| \[(?!ADDR\])|, | \S+:\S")


def _first_clause(message: str) -> str:
    """``using __this_cpu_read() in preemptible [00000000] code: sh/1`` → ``... code``."""
    text = normalize_text(message).replace(" [ADDR]", "")
    m = _CLAUSE_END.search(text)
    return (text[: m.start()] if m else text).strip() or text


def title(report: Report) -> str:
    """The normalised title of ``report`` (no addresses, offsets, PIDs or numbers)."""
    return _title(report, guilty_frame(report))


@dataclass(frozen=True)
class Crash:
    """What a report is called and how it is grouped."""

    title: str  #: normalised title (``WARNING in drop_nlink``)
    signature: str  #: SHA-256 hex of kind, title and the guilty frames
    guilty: Frame | None  #: the frame the crash is blamed on
    frames: tuple[str, ...]  #: normalised function names that went into the signature


def _signature_frames(report: Report, chain: Sequence[Frame]) -> tuple[str, ...]:
    if report.kind in (Kind.OOM, Kind.SYSRQ):
        return ()
    names: list[str] = []
    for f in chain:
        name = normalize_function(f.function)
        if not name or (names and is_generic(name)) or (names and names[-1] == name):
            continue
        names.append(name)
        if len(names) == SIGNATURE_FRAMES:
            break
    return tuple(names)


def describe(report: Report) -> Crash:
    """Title, signature and guilty frame of ``report``."""
    guilty, chain = _choose(report)
    text = _title(report, guilty)
    frames = _signature_frames(report, chain)
    digest = hashlib.sha256(
        "\n".join([_VERSION, report.kind.value, text, *frames]).encode()
    ).hexdigest()
    return Crash(title=text, signature=digest, guilty=guilty, frames=frames)


def signature(report: Report) -> str:
    """The deduplication signature of ``report`` (SHA-256 hex)."""
    return describe(report).signature
