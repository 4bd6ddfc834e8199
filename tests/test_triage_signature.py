"""Crash titles, guilty frames and signatures (kdumper.triage.signature).

Each corpus file (``tests/data/oops``, see ``SOURCES.md``) has its title and guilty frame pinned
in ``TITLES``. The dedup properties are checked by rewriting the corpus the way a second
occurrence of the same bug differs (another KASLR offset, another build, other PIDs, CPUs and time
stamps, another log format) and the way a different bug differs (another function, another path,
another kind).
"""

# ruff: noqa: E501  (the expectation tables are one row per corpus file)

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from kdumper.triage.oops import Kind, Report, lines_from_text, parse_log, primary
from kdumper.triage.signature import (
    GENERIC_FRAMES,
    SIGNATURE_FRAMES,
    describe,
    guilty_frame,
    is_generic,
    normalize_function,
    normalize_text,
    signature,
    title,
)

DATA = Path(__file__).parent / "data" / "oops"

# fmt: off
TITLES: dict[str, tuple[str, str | None]] = {
    "abrt-panic-on-oom-rhel7.txt": ("out of memory", None),
    "abrt-warning-3.0-i686.txt": ("WARNING in check_unmap", "check_unmap"),
    "issue-hard-lockup-panic-rhel7.txt": ("hard lockup", None),  # excerpt ends inside the NMI
    "issue-hard-lockup-warn-debian-3.16.txt": ("hard lockup", None),
    "issue-hung-task-5.10.txt": ("INFO: task hung in kthread", "kthread"),
    "issue-null-deref-mptcp-5.4.txt": ("BUG: kernel NULL pointer dereference in tcp_v4_send_reset", "tcp_v4_send_reset"),
    "issue-null-deref-qubes-6.1.txt": ("BUG: kernel NULL pointer dereference in __wake_up_common", "__wake_up_common"),
    "issue-null-deref-zfs-journal-5.17.txt": ("BUG: kernel NULL pointer dereference in dbuf_sync_list", "dbuf_sync_list"),
    "issue-oom-compulsory-panic-debian-3.16.txt": ("out of memory", None),
    "issue-oom-deadlocked-5.10.txt": ("out of memory", None),
    "issue-soft-lockup-panic-arch-6.5.txt": ("soft lockup in __do_softirq", "__do_softirq"),
    "kasan-doc-slab-oob-4.19.txt": ("KASAN: slab-out-of-bounds Write in kmalloc_oob_right", "kmalloc_oob_right"),
    "kfence-doc-uaf-read-5.8.txt": ("KFENCE: use-after-free read in test_use_after_free_read", "test_use_after_free_read"),
    "lkml-oom-kill-5.7-wrapped.txt": ("out of memory", None),
    "pagefault-doc-klogd-2.0.txt": ("BUG: unable to handle page fault", None),
    "synthetic-debian61-null.txt": ("BUG: kernel NULL pointer dereference in kdumper_crash_null", "kdumper_crash_null"),
    "synthetic-debian61-panic.txt": ("Kernel panic: kdumper_crash: panic requested", "kdumper_crash_panic"),
    "synthetic-debian61-softlockup-panic.txt": ("soft lockup in kdumper_crash_softlockup", "kdumper_crash_softlockup"),
    "synthetic-debian612-bug.txt": ("kernel BUG in kdumper_crash_bug", "kdumper_crash_bug"),
    "synthetic-debian612-null.txt": ("BUG: kernel NULL pointer dereference in kdumper_crash_null", "kdumper_crash_null"),
    "synthetic-debian612-sysrq.txt": ("sysrq triggered crash", "sysrq_handle_crash"),
    "synthetic-debian612-warn-panic.txt": ("WARNING in kdumper_crash_warn", "kdumper_crash_warn"),
    "synthetic-oom-kill-5.7-unwrapped.txt": ("out of memory", None),
    "synthetic-serial-console-null-6.1.txt": ("BUG: kernel NULL pointer dereference in kdumper_crash_null", "kdumper_crash_null"),
    "syzbot-gpf-6.14.txt": ("general protection fault in sys_mremap", "__se_sys_mremap"),
    "syzbot-hung-task-6.0.txt": ("INFO: task hung in netdev_run_todo", "netdev_run_todo"),
    "syzbot-kasan-slab-uaf-6.13.txt": ("KASAN: slab-use-after-free Read in lock_timer_base", "lock_timer_base"),
    "syzbot-kernel-bug-6.15.txt": ("kernel BUG in folio_unlock", "folio_unlock"),
    "syzbot-kfence.txt": ("KFENCE: use-after-free read in find_uprobe", "find_uprobe"),
    "syzbot-lockdep-circular-6.15.txt": ("possible deadlock in _Z8fakeNameiii", "_Z8fakeNameiii"),
    "syzbot-lockdep-inconsistent-6.1.txt": ("inconsistent lock state in sync_info_debugfs_show", "sync_info_debugfs_show"),
    "syzbot-null-deref-old-4.13.txt": ("BUG: kernel NULL pointer dereference in process_one_work", "process_one_work"),
    "syzbot-page-fault-6.13.txt": ("BUG: unable to handle page fault in lock_timer_base", "lock_timer_base"),
    "syzbot-panic-kill-init.txt": ("Kernel panic: Attempted to kill init! exitcode=ADDR", "do_exit"),
    "syzbot-rcu-stall-detected.txt": ("INFO: rcu detected stall in xa_find", "xa_find"),
    "syzbot-rcu-stall-self-detected-4.18.txt": ("INFO: rcu detected stall in balance_dirty_pages_ratelimited", "balance_dirty_pages_ratelimited"),
    "syzbot-soft-lockup-5.8.txt": ("soft lockup in smp_call_function_single", "smp_call_function_single"),
    "syzbot-sysrq-gpf-4.20.txt": ("sysrq triggered crash", "sysrq_handle_crash"),
    "syzbot-sysrq-panic-4.20.txt": ("sysrq triggered crash", "sysrq_handle_crash"),
    "syzbot-ubsan-array-index-5.9.txt": ("UBSAN: array-index-out-of-bounds in arch_uprobe_analyze_insn", "arch_uprobe_analyze_insn"),
    "syzbot-warning-6.12-panic-on-warn.txt": ("WARNING in drop_nlink", "drop_nlink"),
    "ubsan-doc-shift-4.4.txt": ("UBSAN: undefined-behaviour in _mix_pool_bytes", "_mix_pool_bytes"),
    "warning-doc-bug-hunting-i386-4.8.txt": ("WARNING in module_put", "module_put"),
}
# fmt: on

# corpus files whose primary reports are (rightly) one bug each
SAME_BUG = [
    {"synthetic-debian61-null.txt", "synthetic-debian612-null.txt",
     "synthetic-serial-console-null-6.1.txt"},
    {"synthetic-debian612-sysrq.txt", "syzbot-sysrq-gpf-4.20.txt", "syzbot-sysrq-panic-4.20.txt"},
    {"abrt-panic-on-oom-rhel7.txt", "issue-oom-compulsory-panic-debian-3.16.txt",
     "issue-oom-deadlocked-5.10.txt", "lkml-oom-kill-5.7-wrapped.txt",
     "synthetic-oom-kill-5.7-unwrapped.txt"},
    {"issue-hard-lockup-panic-rhel7.txt", "issue-hard-lockup-warn-debian-3.16.txt"},
]  # fmt: skip


def the_crash(text: str) -> Report:
    reports = parse_log(lines_from_text(text))
    k = primary(reports)
    assert k is not None
    return reports[k]


def corpus(name: str) -> str:
    return (DATA / name).read_text(errors="replace")


def test_titles_cover_the_corpus() -> None:
    assert sorted(TITLES) == sorted(p.name for p in DATA.glob("*.txt"))


@pytest.mark.parametrize("name", sorted(TITLES))
def test_title_and_guilty_frame(name: str) -> None:
    want_title, want_guilty = TITLES[name]
    report = the_crash(corpus(name))
    crash = describe(report)
    assert crash.title == want_title == title(report)
    guilty = guilty_frame(report)
    assert (guilty.function if guilty else None) == want_guilty
    assert (crash.guilty.function if crash.guilty else None) == want_guilty
    assert re.fullmatch(r"[0-9a-f]{64}", crash.signature) and crash.signature == signature(report)
    assert len(crash.frames) <= SIGNATURE_FRAMES
    if want_guilty is not None and report.kind not in (Kind.SYSRQ, Kind.OOM):
        assert crash.frames[0] == normalize_function(want_guilty)
    # no numbers that change between occurrences leak into a title
    assert not re.search(r"0x[0-9a-f]|\+0x|\d{4,}", crash.title)


def test_signatures_group_exactly_the_same_bugs() -> None:
    sigs = {name: describe(the_crash(corpus(name))).signature for name in TITLES}
    groups: dict[str, set[str]] = {}
    for name, sig in sigs.items():
        groups.setdefault(sig, set()).add(name)
    multi = sorted((g for g in groups.values() if len(g) > 1), key=sorted)
    assert multi == sorted(SAME_BUG, key=sorted)


# --------------------------------------------------------------------------------------------
# the same bug, seen again


def kaslr_and_friends(text: str, seed: int) -> str:
    """``text`` as another boot of another build would print it."""
    rng = random.Random(seed)
    kaslr = rng.randrange(1, 0x1F0) << 21
    direct_map = rng.randrange(1, 0x400) << 30

    def address(m: re.Match[str]) -> str:
        value = int(m.group(0), 16)
        if value >> 31 == 0x1FFFFFFFF:  # kernel image and modules: the KASLR slide
            value = (value + kaslr) & (2**64 - 1)
        elif value >> 47 == 0x1FFFF:  # direct map, vmalloc, vmemmap: their own random base
            value = (value + direct_map) & (2**64 - 1)
        return f"{value:016x}"

    def rebuilt(m: re.Match[str]) -> str:  # another compiler run: other offsets and sizes
        off, size = int(m.group(1), 16), int(m.group(2), 16)
        return f"+{off + rng.randrange(0, 0x30):#x}/{size + 0x40:#x}"

    later = rng.uniform(10, 90000)
    pid, cpu = rng.randrange(2, 4_000_000), rng.randrange(0, 256)
    text = re.sub(r"\b[0-9a-f]{16}\b", address, text)
    text = re.sub(r"\+0x([0-9a-f]+)/0x([0-9a-f]+)", rebuilt, text)
    text = re.sub(r"\[\s*(\d+\.\d+)\]", lambda m: f"[{float(m.group(1)) + later:12.6f}]", text)
    text = re.sub(r"\bPID: \d+", f"PID: {pid}", text)
    text = re.sub(r"\bpid:\s*\d+", f"pid:{pid}", text)
    text = re.sub(r"\bCPU: \d+", f"CPU: {cpu}", text)
    text = re.sub(r"CPU#\d+", f"CPU#{cpu}", text)
    text = re.sub(r"\[\s*T\d+\]", f"[T{pid}]", text)
    return text


@pytest.mark.parametrize("name", sorted(TITLES))
def test_same_bug_same_signature(name: str) -> None:
    text = corpus(name)
    want = describe(the_crash(text))
    for seed in range(3):
        again = describe(the_crash(kaslr_and_friends(text, seed)))
        assert (again.title, again.frames) == (want.title, want.frames)
        assert again.signature == want.signature


@pytest.mark.parametrize(
    "name",
    ["synthetic-debian61-null.txt", "syzbot-kasan-slab-uaf-6.13.txt", "issue-hung-task-5.10.txt"],
)
def test_log_format_does_not_matter(name: str) -> None:
    text = corpus(name)
    want = signature(the_crash(text))
    bare = "\n".join(
        re.sub(r"^\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])? ?", "", x) for x in text.splitlines()
    )
    journal = "\n".join(f"Nov 26 08:00:00 host kernel: {x}" for x in bare.splitlines())
    assert signature(the_crash(bare)) == want
    assert signature(the_crash(journal)) == want


def test_compiler_suffixes_do_not_matter() -> None:
    text = corpus("synthetic-debian61-null.txt")
    want = describe(the_crash(text))
    for suffix in (".isra.0", ".constprop.0", ".cold", ".part.0", ".llvm.1234567890"):
        changed = text.replace("kdumper_crash_write+", f"kdumper_crash_write{suffix}+")
        changed = changed.replace("kdumper_crash_null+", f"kdumper_crash_null{suffix}+")
        got = describe(the_crash(changed))
        assert got.signature == want.signature and got.title == want.title


def test_syscall_spellings_match() -> None:
    text = corpus("syzbot-warning-6.12-panic-on-warn.txt")
    want = signature(the_crash(text))
    for spelling in ("__arm64_sys_rmdir", "__se_sys_rmdir", "__do_sys_rmdir", "__ia32_sys_rmdir"):
        assert signature(the_crash(text.replace("__x64_sys_rmdir", spelling))) == want


def test_frames_past_the_window_do_not_matter() -> None:
    text = corpus("syzbot-kasan-slab-uaf-6.13.txt")
    crash = describe(the_crash(text))
    assert crash.frames == (
        "lock_timer_base", "__try_to_del_timer_sync", "__timer_delete_sync", "sk_stop_timer_sync",
        "mptcp_pm_del_add_timer",
    )  # fmt: skip
    changed = text.replace(" tcp_data_queue+", " tcp_data_queue_renamed+")
    assert changed != text
    assert signature(the_crash(changed)) == crash.signature


# --------------------------------------------------------------------------------------------
# a different bug


def test_other_function_other_signature() -> None:
    text = corpus("synthetic-debian612-null.txt")
    base = describe(the_crash(text))
    renamed = describe(the_crash(text.replace("kdumper_crash_null", "kdumper_crash_nul1")))
    assert renamed.title == "BUG: kernel NULL pointer dereference in kdumper_crash_nul1"
    assert renamed.signature != base.signature


def test_other_path_same_title_other_signature() -> None:
    text = corpus("synthetic-debian612-null.txt")
    base = describe(the_crash(text))
    other = describe(the_crash(text.replace("proc_reg_write+", "proc_reg_write_iter+")))
    assert other.title == base.title and other.signature != base.signature


def test_other_kind_other_signature() -> None:
    text = corpus("synthetic-debian612-null.txt")
    base = describe(the_crash(text))
    fault = text.replace(
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "BUG: unable to handle page fault for address: ffffffffc0401000",
    )
    got = describe(the_crash(fault))
    assert got.title == "BUG: unable to handle page fault in kdumper_crash_null"
    assert got.frames == base.frames and got.signature != base.signature


def test_warning_in_a_helper_keeps_callers_apart() -> None:
    text = corpus("syzbot-warning-6.12-panic-on-warn.txt")
    base = describe(the_crash(text))
    other = describe(the_crash(text.replace("udf_rmdir", "ext4_rmdir")))
    assert base.title == other.title == "WARNING in drop_nlink"
    assert base.signature != other.signature


# --------------------------------------------------------------------------------------------
# the rules themselves


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("foo.isra.0", "foo"),
        ("foo.constprop.0.isra.0", "foo"),
        ("foo.cold", "foo"),
        ("__x64_sys_read", "sys_read"),
        ("__arm64_sys_openat", "sys_openat"),
        ("__se_sys_mremap", "sys_mremap"),
        ("__do_sys_init_module", "sys_init_module"),
        ("__ia32_compat_sys_ioctl", "sys_ioctl"),
        ("SyS_delete_module", "sys_delete_module"),
        ("__pfx_vfs_write", "vfs_write"),
        ("sys_read", "sys_read"),
        ("ext4_fill_super", "ext4_fill_super"),
    ],
)
def test_normalize_function(name: str, normal: str) -> None:
    assert normalize_function(name) == normal


@pytest.mark.parametrize(
    "name",
    [
        "dump_stack_lvl", "panic", "__warn", "warn_slowpath_fmt", "report_bug", "kasan_report",
        "__asan_load8", "kasan_check_range", "exc_page_fault", "asm_exc_invalid_op",
        "page_fault_oops", "__die_body.cold", "_raw_spin_lock_irqsave", "mutex_lock_nested",
        "down_write", "__schedule", "schedule_timeout", "wait_for_completion_killable",
        "asm_sysvec_apic_timer_interrupt", "watchdog_timer_fn", "do_syscall_64",
        "entry_SYSCALL_64_after_hwframe", "ret_from_fork", "kthread", "memcpy", "kfree",
        "refcount_warn_saturate", "__ubsan_handle_out_of_bounds.cold", "ubsan_epilogue",
    ],
)  # fmt: skip
def test_generic(name: str) -> None:
    assert is_generic(name)


@pytest.mark.parametrize(
    "name",
    [
        "handle_mm_fault", "__handle_mm_fault", "ext4_fill_super", "sys_read", "__x64_sys_read",
        "kmalloc_oob_right", "kdumper_crash_null", "tcp_v4_send_reset", "folio_unlock",
        "console_unlock", "drop_nlink", "start_kernel", "downgrade_write", "update_curr",
    ],
)  # fmt: skip
def test_not_generic(name: str) -> None:
    assert not is_generic(name)


def test_generic_patterns_are_valid_and_categorised() -> None:
    assert set(GENERIC_FRAMES) >= {"report", "trap", "lock", "sched", "irq", "entry"}
    for patterns in GENERIC_FRAMES.values():
        for p in patterns:
            re.compile(p)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Attempted to kill init! exitcode=0x0000000b", "Attempted to kill init! exitcode=ADDR"),
        ("VFS: Unable to mount root fs on unknown-block(0,0)",
         "VFS: Unable to mount root fs on unknown-block(NUM,NUM)"),
        ("stack-protector: Kernel stack is corrupted in: udp4_lib_lookup2+0x1b/0x30",
         "stack-protector: Kernel stack is corrupted in: udp4_lib_lookup2"),
        ("corrupted at mm/slub.c:1234 ffff888012345678", "corrupted at mm/slub.c:LINE ADDR"),
        ("  a \t b  ", "a b"),
    ],
)  # fmt: skip
def test_normalize_text(text: str, normal: str) -> None:
    assert normalize_text(text) == normal


def test_lockdep_and_other_bug_titles() -> None:
    text = "\n".join(
        [
            "=====================================",
            "[ BUG: syz-executor/31761 still has locks held! ]",
            "4.8.0+ #30 Not tainted",
            "-------------------------------------",
            "1 lock held by syz-executor/31761:",
            " #0:  (&pipe->mutex/1){+.+.+.}, at: [<ffffffff81844c6b>] pipe_lock+0x5b/0x70",
            "",
            "stack backtrace:",
            "CPU: 1 PID: 31761 Comm: syz-executor Not tainted 4.8.0+ #30",
            "Call Trace:",
            " dump_stack+0x12e/0x185",
            " debug_check_no_locks_held+0x125/0x130",
            " do_exit+0x1b1/0x2c40",
        ]
    )
    assert title(the_crash(text)) == "BUG: still has locks held in pipe_lock"
    atomic = "\n".join(
        [
            "BUG: scheduling while atomic: syz-executor/4921/0x00000002",
            "CPU: 0 PID: 4921 Comm: syz-executor Not tainted 4.9.0 #1",
            "Call Trace:",
            " dump_stack+0x1/0x2",
            " __schedule_bug+0x1/0x2",
            " __schedule+0x1/0x2",
            " schedule+0x1/0x2",
            " pause+0x1/0x2",
        ]
    )
    assert title(the_crash(atomic)) == "BUG: scheduling while atomic in pause"
    preempt = "BUG: using __this_cpu_read() in preemptible [00000000] code: syz/123\n"
    assert title(the_crash(preempt)) == "BUG: using __this_cpu_read() in preemptible code"


# --------------------------------------------------------------------------------------------
# robustness over syzbot's whole report collection (a google/syzkaller checkout, if given)


@pytest.mark.skipif(
    not os.environ.get("KDUMPER_SYZKALLER_REPORTS"),
    reason="set KDUMPER_SYZKALLER_REPORTS to pkg/report/testdata/linux/report of a syzkaller tree",
)
def test_syzkaller_report_collection() -> None:
    root = Path(os.environ["KDUMPER_SYZKALLER_REPORTS"])
    found = total = 0
    for path in sorted(root.iterdir()):
        lines = path.read_text(errors="replace").split("\n")
        head = [x for x in lines if re.match(r"^[A-Z]+: ", x)]
        if not any(x.startswith("TITLE: ") and len(x) > 7 for x in head):
            continue
        body = "\n".join(lines[len(head) :]).split("\nREPORT:\n")[0]
        reports = parse_log(lines_from_text(body))
        total += 1
        if reports:
            found += 1
            k = primary(reports)
            assert k is not None
            describe(reports[k])
    assert total > 500 and found / total > 0.9
