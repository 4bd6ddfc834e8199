"""Kernel crash report parsing (kdumper.triage.oops) and the ``kdumper oops`` command.

The corpus is ``tests/data/oops/*.txt`` (sources in ``tests/data/oops/SOURCES.md``): real reports
from the kernel documentation, syzbot, ABRT and public bug trackers, plus synthetic Debian 6.1 /
6.12 reports of the harness's crash module. ``EXPECTED`` pins, for every file, what the parser
must find; titles and guilty frames are pinned in ``test_triage_signature.py``.
"""

# ruff: noqa: E501  (the expectation tables are one row per corpus file)

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from kdumper.errors import DumpIOError, InputNotFoundError, UnsupportedError
from kdumper.triage.oops import (
    Kind,
    LogLine,
    Report,
    lines_from_records,
    lines_from_text,
    parse_log,
    primary,
    report_to_dict,
    split_prefix,
)

DATA = Path(__file__).parent / "data" / "oops"


class E(NamedTuple):
    """What the parser must find in one corpus file (about its primary report)."""

    reports: int  # reports found in the file
    primary: int  # index of the primary report
    kind: str
    cpu: int | None
    pid: int | None
    comm: str | None
    taint: str | None  # "" = Not tainted
    release: str | None
    rip: str | None  # function of the RIP line
    frames: int  # frames in the main stack
    unreliable: int  # of which printed with "?"
    modules: int | None  # names on "Modules linked in:"


# fmt: off
EXPECTED: dict[str, E] = {
    "abrt-panic-on-oom-rhel7.txt": E(1, 0, "oom", 0, 35943, "webservice", "", "3.10.0-327.28.2.el7.x86_64", None, 13, 1, None),
    "abrt-warning-3.0-i686.txt": E(1, 0, "warning", None, 202, "modprobe", "", "3.0.0-3.fc16.i686.PAE", None, 36, 16, 9),
    "issue-hard-lockup-panic-rhel7.txt": E(1, 0, "hard_lockup", 74, 218268, "sh", "PWOEK", "xxxxxxxxxxxx", None, 13, 5, None),
    "issue-hard-lockup-warn-debian-3.16.txt": E(1, 0, "hard_lockup", 3, 0, "swapper/3", "GWO", "3.16.0-4-amd64", None, 5, 5, 12),
    "issue-hung-task-5.10.txt": E(1, 0, "hung_task", None, 27835, "cas_cache1_stop", "GSWIO", "5.10.32.x86_64", None, 7, 2, None),
    "issue-null-deref-mptcp-5.4.txt": E(1, 0, "null_deref", 2, 3166, "tokio-runtime-w", "PO", "5.4.181+", "tcp_v4_send_reset", 0, 0, None),
    "issue-null-deref-qubes-6.1.txt": E(1, 0, "null_deref", 1, 144, "xenbus", "GW", "6.1.43-1.qubes.12.fc37.x86_64", "__wake_up_common", 0, 0, None),
    "issue-null-deref-zfs-journal-5.17.txt": E(1, 0, "null_deref", 20, 1214, "dp_sync_taskq", "PIO", "5.17.4-gentoo", "dbuf_sync_list", 0, 0, None),
    "issue-oom-compulsory-panic-debian-3.16.txt": E(1, 0, "oom", 1, 243, "kworker/1:2", "GCO", "3.16.0-6-amd64", None, 0, 0, None),
    "issue-oom-deadlocked-5.10.txt": E(1, 0, "oom", 3, 724, "systemd-userdbd", "GWOE", "5.10.35perf+", None, 3, 1, None),
    "issue-soft-lockup-panic-arch-6.5.txt": E(2, 0, "soft_lockup", 3, 0, "swapper/3", "GL", "6.5.3-arch1-1", "__do_softirq", 10, 1, None),
    "kasan-doc-slab-oob-4.19.txt": E(1, 0, "kasan", 1, 2760, "insmod", "", "4.19.0-rc3+", None, 13, 0, None),
    "kfence-doc-uaf-read-5.8.txt": E(1, 0, "kfence", 4, 109, "kunit_try_catch", "GW", "5.8.0-rc6+", None, 5, 0, None),
    "lkml-oom-kill-5.7-wrapped.txt": E(1, 0, "oom", None, None, None, None, None, None, 0, 0, None),
    "pagefault-doc-klogd-2.0.txt": E(1, 0, "page_fault", None, None, None, None, None, None, 0, 0, None),
    "synthetic-debian61-null.txt": E(1, 0, "null_deref", 0, 1, "init", "GOE", "6.1.0-27-cloud-amd64", "kdumper_crash_null", 13, 7, 26),
    "synthetic-debian61-panic.txt": E(1, 0, "panic", 0, 1, "init", "GOE", "6.1.0-27-cloud-amd64", None, 9, 0, None),
    "synthetic-debian61-softlockup-panic.txt": E(2, 0, "soft_lockup", 0, 1, "init", "GOE", "6.1.0-27-cloud-amd64", "kdumper_crash_softlockup", 6, 0, 26),
    "synthetic-debian612-bug.txt": E(1, 0, "bug", 0, 1, "init", "GOE", "6.12.12-cloud-amd64", "kdumper_crash_bug", 15, 9, 15),
    "synthetic-debian612-null.txt": E(1, 0, "null_deref", 1, 187, "sh", "GOE", "6.12.12-cloud-amd64", "kdumper_crash_null", 13, 7, 15),
    "synthetic-debian612-sysrq.txt": E(1, 0, "sysrq", 0, 1, "init", "", "6.12.12-cloud-amd64", None, 10, 0, None),
    "synthetic-debian612-warn-panic.txt": E(2, 0, "warning", 0, 1, "init", "GOE", "6.12.12-cloud-amd64", "kdumper_crash_warn", 13, 7, 15),
    "synthetic-oom-kill-5.7-unwrapped.txt": E(1, 0, "oom", 2, 391, "mkfs.ext4", "", "5.7.0-rc6-next-20200521", None, 25, 6, None),
    "synthetic-serial-console-null-6.1.txt": E(1, 0, "null_deref", 0, 1, "init", "GOE", "6.1.0-27-cloud-amd64", "kdumper_crash_null", 13, 7, 26),
    "syzbot-gpf-6.14.txt": E(2, 0, "gpf", 1, 5827, "syz-executor187", "", "6.14.0-syzkaller-12456-gacc4d5ff0b61", "__se_sys_mremap", 11, 9, 0),
    "syzbot-hung-task-6.0.txt": E(1, 0, "hung_task", None, 5166, "kworker/u4:6", "", "6.0.0-syzkaller-09589-g55be6084c8e0", None, 15, 0, None),
    "syzbot-kasan-slab-uaf-6.13.txt": E(2, 0, "kasan", 0, 5994, "kworker/0:4", "", "6.13.0-rc5-syzkaller-00004-gccb98ccef0e5", None, 85, 51, None),
    "syzbot-kernel-bug-6.15.txt": E(2, 0, "bug", 1, 1059, "kworker/u8:6", "", "6.15.0-next-20250606-syzkaller", "folio_unlock", 45, 33, 0),
    "syzbot-kfence.txt": E(1, 0, "kfence", 1, 9991, "syz-executor.4", "", "5.11.0-rc6-next-20210201-syzkaller", "find_uprobe", 14, 0, None),
    "syzbot-lockdep-circular-6.15.txt": E(1, 0, "lockdep", 0, 24950, "syz.5.7376", "", "6.15.0-rc7-dirty", None, 56, 34, None),
    "syzbot-lockdep-inconsistent-6.1.txt": E(1, 0, "lockdep", 1, 12429, "syz-executor.0", "", "6.1.0-rc5-next-20221114-syzkaller", None, 13, 0, None),
    "syzbot-null-deref-old-4.13.txt": E(2, 0, "null_deref", 1, 3289, "kworker/u4:7", "", "4.13.0-rc5-next-20170817+", None, 4, 0, 0),
    "syzbot-page-fault-6.13.txt": E(2, 0, "page_fault", 1, 51, "kworker/1:1", "", "6.13.0-rc3-syzkaller", "do_raw_spin_lock", 49, 40, 0),
    "syzbot-panic-kill-init.txt": E(1, 0, "panic", 1, 1, "init", "", "4.15.0-rc3-next-20171214+", None, 13, 4, None),
    "syzbot-rcu-stall-detected.txt": E(1, 0, "rcu_stall", None, None, None, None, None, "kasan_check_range", 77, 49, None),
    "syzbot-rcu-stall-self-detected-4.18.txt": E(1, 0, "rcu_stall", 0, 30128, "syz-executor6", "", "4.18.0+", "lock_acquire", 30, 0, None),
    "syzbot-soft-lockup-5.8.txt": E(2, 0, "soft_lockup", 0, 2970, "syz-executor.1", "", "5.8.0-rc3-syzkaller", "smp_call_function_single", 8, 0, 0),
    "syzbot-sysrq-gpf-4.20.txt": E(2, 0, "sysrq", 3, 5855, "bash", "", "4.20.0-next-20190102+", "sysrq_handle_crash", 26, 17, 0),
    "syzbot-sysrq-panic-4.20.txt": E(1, 0, "sysrq", 0, 5831, "bash", "", "4.20.0-next-20190102", None, 12, 0, None),
    "syzbot-ubsan-array-index-5.9.txt": E(1, 0, "ubsan", 2, 13309, "syz-executor.3", "", "5.9.0-rc5-next-20200916", None, 19, 7, None),
    "syzbot-warning-6.12-panic-on-warn.txt": E(2, 0, "warning", 1, 5830, "syz-executor175", "", "6.12.0-rc7-syzkaller-00012-g3022e9d00ebe", "drop_nlink", 25, 19, 0),
    "ubsan-doc-shift-4.4.txt": E(1, 0, "ubsan", 0, 0, "swapper", "", "4.4.0-rc1+", None, 18, 7, None),
    "warning-doc-bug-hunting-i386-4.8.txt": E(1, 0, "warning", 1, 28102, "rmmod", "PWCO", "4.8.4-build.1", None, 23, 23, 15),
}
# fmt: on


def corpus(name: str) -> str:
    return (DATA / name).read_text(errors="replace")


def parse(text: str) -> list[Report]:
    return parse_log(lines_from_text(text))


def the_crash(text: str) -> Report:
    reports = parse(text)
    k = primary(reports)
    assert k is not None
    return reports[k]


def test_every_corpus_file_is_expected_and_cited() -> None:
    files = sorted(p.name for p in DATA.glob("*.txt"))
    assert files == sorted(EXPECTED)
    sources = (DATA / "SOURCES.md").read_text()
    for name in files:
        assert f"`{name}`" in sources, f"{name} is not cited in SOURCES.md"
    kinds = {e.kind for e in EXPECTED.values()}
    wanted = {
        "panic", "page_fault", "null_deref", "gpf", "bug", "warning", "kasan", "kfence", "ubsan",
        "lockdep", "hung_task", "soft_lockup", "hard_lockup", "rcu_stall", "oom", "sysrq",
    }  # fmt: skip
    assert wanted <= kinds


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name: str) -> None:
    want = EXPECTED[name]
    reports = parse(corpus(name))
    assert len(reports) == want.reports
    k = primary(reports)
    assert k == want.primary
    r = reports[want.primary]
    got = (
        r.kind.value, r.cpu, r.pid, r.comm, r.taint, r.release,
        r.rip.function if r.rip else None,
        len(r.frames), sum(not f.reliable for f in r.frames),
        len(r.modules) if r.modules is not None else None,
    )  # fmt: skip
    assert got == (
        want.kind, want.cpu, want.pid, want.comm, want.taint, want.release, want.rip,
        want.frames, want.unreliable, want.modules,
    )  # fmt: skip
    # the report's line range covers its header; every report's range is ordered and disjoint
    assert r.start <= r.header < r.end
    assert r.first_line in [line.strip() for line in r.lines]
    for a, b in itertools.pairwise(reports):
        assert a.end <= b.start
    json.dumps([report_to_dict(x) for x in reports])


# --------------------------------------------------------------------------------------------
# details of particular reports


def test_null_deref_6_1_fields() -> None:
    r = the_crash(corpus("synthetic-debian61-null.txt"))
    assert r.kind is Kind.NULL_DEREF
    assert r.address == 0 and r.access == "write"
    assert r.first_line == "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    assert r.rip is not None and r.rip.symbol() == "kdumper_crash_null+0x19/0x20 [kdumper_crash]"
    assert (r.rip.offset, r.rip.size, r.rip.module) == (0x19, 0x20, "kdumper_crash")
    assert r.build == "#1  Debian 6.1.115-1"
    assert r.hardware is not None and r.hardware.startswith("QEMU Standard PC (i440FX + PIIX")
    assert r.modules is not None and r.modules[0] == "kdumper_crash"  # "(OE)" removed
    assert r.registers[0].startswith("RIP: 0010:kdumper_crash_null")
    assert any(x.startswith("CR2: ") for x in r.registers)
    reliable = [f.function for f in r.frames if f.reliable]
    assert reliable[:3] == ["kdumper_crash_write", "proc_reg_write", "vfs_write"]
    assert {f.context for f in r.frames} == {"task"}  # all inside <TASK>
    assert r.start == 1 and r.end == 45 and r.time == pytest.approx(14.872032)


def test_6_12_uid_and_oops_prefix() -> None:
    r = the_crash(corpus("synthetic-debian612-null.txt"))
    assert (r.cpu, r.uid, r.pid, r.comm) == (1, 0, 187, "sh")
    bug = the_crash(corpus("synthetic-debian612-bug.txt"))
    assert bug.kind is Kind.BUG
    assert bug.location == "/build/kdumper/vmharness/guest/crashmod/kdumper_crash.c:31"
    assert len(parse(corpus("synthetic-debian612-bug.txt"))) == 1  # "Oops: invalid opcode" joins


def test_warning_with_panic_on_warn() -> None:
    reports = parse(corpus("synthetic-debian612-warn-panic.txt"))
    warn, panic = reports
    assert warn.kind is Kind.WARNING and panic.panic and panic.kind is Kind.PANIC
    assert panic.caused_by == 0 and primary(reports) == 0
    assert warn.message == "kdumper_crash: WARN() requested"  # the WARN() text before the line
    assert warn.function == "kdumper_crash_warn"
    assert warn.start == 0  # the "cut here" line
    assert panic.message == "kernel: panic_on_warn set ..."
    regs = [f for f in panic.frames if f.regs]  # the exception frame inside the panic's trace
    assert [f.function for f in regs] == ["kdumper_crash_warn"]


def test_soft_lockup_panic_contexts() -> None:
    reports = parse(corpus("synthetic-debian61-softlockup-panic.txt"))
    lockup, panic = reports
    assert lockup.kind is Kind.SOFT_LOCKUP and (lockup.cpu, lockup.comm, lockup.pid) == (
        0,
        "init",
        1,
    )
    assert panic.caused_by == 0 and panic.taint == "GOEL"
    contexts = [f.context for f in panic.frames]
    assert contexts[:6] == ["irq"] * 6 and contexts[-1] == "task"
    assert lockup.rip is not None and lockup.rip.function == "kdumper_crash_softlockup"


def test_sysrq_variants() -> None:
    modern = the_crash(corpus("synthetic-debian612-sysrq.txt"))
    assert modern.kind is Kind.SYSRQ and modern.panic and modern.message == "sysrq triggered crash"
    old = the_crash(
        corpus("syzbot-sysrq-gpf-4.20.txt")
    )  # < 5.x: a NULL write in sysrq_handle_crash
    assert old.kind is Kind.SYSRQ and old.bug_type == "general protection fault"


def test_kasan_fields_and_stacks() -> None:
    r = the_crash(corpus("kasan-doc-slab-oob-4.19.txt"))
    assert (r.bug_type, r.access, r.function) == (
        "slab-out-of-bounds",
        "Write",
        "kmalloc_oob_right",
    )
    assert r.address == 0xFFFF8801F44EC37B
    assert [s.label for s in r.stacks] == [
        "Call Trace",
        "Allocated by task 2760",
        "Freed by task 815",
    ]
    assert r.frames[4].module == "test_kasan"
    assert r.end == 70  # through the closing ruler


def test_kfence_stacks() -> None:
    r = the_crash(corpus("kfence-doc-uaf-read-5.8.txt"))
    assert (r.bug_type, r.access) == ("use-after-free read", "read")
    assert r.stacks[0].label.startswith("Use-after-free read at 0xffffffffb673dfe0")
    assert r.stacks[2].label == "freed by task 507"


def test_lockdep_main_stack_first() -> None:
    r = the_crash(corpus("syzbot-lockdep-circular-6.15.txt"))
    assert r.bug_type == "possible circular locking dependency detected"
    assert r.stacks[0].label == "Call Trace"
    assert [s.label[:5] for s in r.stacks[1:]] == ["-> #2", "-> #1", "-> #0"]


def test_hung_task_stops_at_other_sysrq_output() -> None:
    r = the_crash(corpus("issue-hung-task-5.10.txt"))
    assert (r.comm, r.pid, r.cpu) == ("cas_cache1_stop", 27835, None)
    assert len(r.stacks) == 1 and r.end == 13  # "sysrq: Show State" is not part of it


def test_hard_lockup_from_warn() -> None:
    r = the_crash(corpus("issue-hard-lockup-warn-debian-3.16.txt"))
    assert r.message == "Watchdog detected hard LOCKUP on cpu 3"
    assert r.frames[0].context == "nmi" and not r.frames[0].reliable
    assert r.frames[0].address == 0xFFFFFFFF8150B4C5


def test_oom_reports() -> None:
    r = the_crash(corpus("synthetic-oom-kill-5.7-unwrapped.txt"))
    assert r.kind is Kind.OOM and r.bug_type == "global"
    assert r.message.startswith("Out of memory: Killed process 348 (polkitd)")
    assert r.lines[-1].startswith("oom_reaper: reaped process 348")
    panic = the_crash(corpus("abrt-panic-on-oom-rhel7.txt"))
    assert panic.kind is Kind.OOM and panic.panic


def test_fatal_exception_links_to_the_oops() -> None:
    reports = parse(corpus("syzbot-page-fault-6.13.txt"))
    assert reports[1].panic and reports[1].message == "Fatal exception"
    assert reports[1].caused_by == 0 and primary(reports) == 0
    assert reports[0].address == 0xFFFFFFFF9175C704 and reports[0].access == "read"
    assert reports[0].end == reports[1].start  # the repeated registers after "end trace" belong


def test_stack_borrowed_from_the_panic() -> None:
    reports = parse(corpus("issue-soft-lockup-panic-arch-6.5.txt"))
    assert reports[0].stack_from == 1 and reports[0].frames == reports[1].frames


def test_old_formats() -> None:
    old = the_crash(corpus("warning-doc-bug-hunting-i386-4.8.txt"))
    assert old.last_unloaded == "rc_core" and "nvidia" in (old.modules or ())
    assert all(not f.reliable and f.address is not None for f in old.frames)
    pid = the_crash(corpus("abrt-warning-3.0-i686.txt"))  # "Pid: 202, comm: modprobe"
    assert pid.location == "lib/dma-debug.c:800" and pid.function == "check_unmap"
    assert any(f.function == "" and f.address == 0xF7A38FFF for f in pid.frames)
    klogd = the_crash(corpus("pagefault-doc-klogd-2.0.txt"))
    assert klogd.address == 0xF15E97CC


# --------------------------------------------------------------------------------------------
# input forms


@pytest.mark.parametrize(
    ("raw", "text", "caller", "stamp"),
    [
        ("[   14.872032] BUG: x", "BUG: x", None, 14.872032),
        ("[   14.872032]  dump_stack+0x1/0x2", " dump_stack+0x1/0x2", None, 14.872032),
        ("[  202.652969][ T9969] BUG: x", "BUG: x", "T9969", 202.652969),
        ("[  202.652969][    C0] BUG: x", "BUG: x", "C0", 202.652969),
        ("[    1.234567] [    T123] BUG: x", "BUG: x", "T123", 1.234567),
        ("May 02 10:57:39 r610.maze kernel: BUG: x", "BUG: x", None, None),
        ("May  2 10:57:39 host kernel: [ 1234.567890] BUG: x", "BUG: x", None, 1234.56789),
        ("2025-05-02T10:57:39.123456+02:00 host kernel: BUG: x", "BUG: x", None, None),
        ("4,5011,12915312290,-; </IRQ>", " </IRQ>", None, None),
        ("<0>[1401585.395801] NMI watchdog: x", "NMI watchdog: x", None, 1401585.395801),
        ("[Mon Dec  8 17:51:31 2025] Out of memory: x", "Out of memory: x", None, None),
        ("nas3 login: [86185.341902] ------------[ cut here ]", "------------[ cut here ]",
         None, 86185.341902),
        ("\x1b[0;32mBUG: x\x1b[0m\r", "BUG: x", None, None),
        ("plain line", "plain line", None, None),
        ("", "", None, None),
    ],
)  # fmt: skip
def test_split_prefix(raw: str, text: str, caller: str | None, stamp: float | None) -> None:
    line = split_prefix(raw)
    assert (line.text, line.caller) == (text, caller)
    assert line.time == (pytest.approx(stamp) if stamp is not None else None)


def test_lines_from_text_keeps_count_and_order() -> None:
    text = corpus("synthetic-serial-console-null-6.1.txt")
    lines = lines_from_text(text)
    assert len(lines) == len(text.splitlines())
    r = the_crash(text)
    assert r.start == 7 and lines[r.header].text.startswith("BUG: kernel NULL pointer")
    assert "[  OK  ] Started getty@tty1.service." in r.lines  # console noise inside: kept as is
    assert r.frames == the_crash(corpus("synthetic-debian61-null.txt")).frames


def _reprefix(text: str, style: str) -> str:
    """The same log in another saved form."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\[\s*(\d+)\.(\d+)\](?:\[\s*[TC]\d+\])? ?(.*)$", line)
        body = m.group(3) if m else line
        if style == "bare":
            out.append(body)
        elif style == "syslog":
            out.append(f"Nov 26 08:00:00 guest kernel: {body}")
        elif style == "journal":
            out.append(f"2025-11-26T08:00:00.000000+0000 guest kernel: {body}")
        elif style == "kmsg":
            out.append(f"4,{len(out)},{len(out) * 1000},-;{body}")
        elif style == "caller":
            sec = f"{int(m.group(1)):5d}.{m.group(2)}" if m else "    0.000000"
            out.append(f"[{sec}] [    T1] {body}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("style", ["bare", "syslog", "journal", "kmsg", "caller"])
@pytest.mark.parametrize(
    "name",
    ["synthetic-debian61-null.txt", "syzbot-kasan-slab-uaf-6.13.txt", "issue-hung-task-5.10.txt"],
)
def test_prefix_styles_parse_alike(name: str, style: str) -> None:
    plain = parse(corpus(name))
    other = parse(_reprefix(corpus(name), style))
    assert [(r.kind, r.first_line, r.start, r.end) for r in other] == [
        (r.kind, r.first_line, r.start, r.end) for r in plain
    ]
    assert [r.frames for r in other] == [r.frames for r in plain]


def test_interleaved_callers_are_separated() -> None:
    text = corpus("syzbot-warning-6.12-panic-on-warn.txt")
    noise = [
        "[   62.200000][ T9999] ------------[ cut here ]------------",
        "[   62.200001][ T9999]  other_func+0x1/0x2",
        "[   62.200002][    C1] eth0: link up",
        "[   62.200003][ T9999] Modules linked in: bogus",
    ]
    lines = text.splitlines()
    mixed: list[str] = []
    for k, line in enumerate(lines):
        mixed.append(line)
        if 3 <= k < 60:
            mixed.append(noise[k % len(noise)])
    plain = parse(text)
    got = parse("\n".join(mixed))
    assert [r.frames for r in got] == [r.frames for r in plain]
    assert got[0].modules == () and got[0].caller == "T5830"


class FakeRecord(NamedTuple):
    ts_nsec: int
    text: bytes
    caller_id: int | None


def test_lines_from_records() -> None:
    recs = [
        FakeRecord(1_500_000_000, b"hello", None),
        FakeRecord(2_000_000_000, b"Call Trace:\n <TASK>", 5),
        FakeRecord(3_000_000_000, b"caf\xc3\xa9 \xff", 0x80000003),
    ]
    lines = lines_from_records(recs)
    assert lines == [
        LogLine("hello", None, 1.5),
        LogLine("Call Trace:", "T5", 2.0),
        LogLine(" <TASK>", "T5", 2.0),
        LogLine("café \ufffd", "C3", 3.0),
    ]


def test_lines_from_real_log_records() -> None:
    from kdumper.kernel.printk import LogRecord

    text = corpus("synthetic-debian612-warn-panic.txt")
    recs = []
    for k, line in enumerate(text.splitlines()):
        m = re.match(r"^\[\s*(\d+)\.(\d+)\] (.*)$", line)
        assert m is not None
        ts = int(m.group(1)) * 10**9 + int(m.group(2)) * 1000
        recs.append(LogRecord(k, ts, 4, 0, 1, m.group(3).encode()))
    reports = parse_log(lines_from_records(recs))
    assert [r.kind for r in reports] == [Kind.WARNING, Kind.PANIC]
    assert reports[0].caller == "T1" and reports[0].time == pytest.approx(17.400836)


# --------------------------------------------------------------------------------------------
# primary report selection


def test_primary_rules() -> None:
    assert primary([]) is None
    assert parse("") == [] and parse("just\nsome\nlines\n") == []
    # kdump loaded: no panic line after an oops; a KASAN report just before it is the cause
    kasan = corpus("kasan-doc-slab-oob-4.19.txt")
    oops = corpus("synthetic-debian61-null.txt")
    reports = parse(kasan + oops)
    assert [r.kind for r in reports] == [Kind.KASAN, Kind.NULL_DEREF]
    assert primary(reports) == 0
    # an earlier oops already killed a task (taint D): the first oops is the root
    second = oops.replace("Tainted: G           OE", "Tainted: G      D    OE")
    second = second.replace("[   14.", "[   99.")
    reports = parse(corpus("syzbot-null-deref-old-4.13.txt").split("Kernel panic")[0] + second)
    assert [r.kind for r in reports] == [Kind.NULL_DEREF, Kind.NULL_DEREF] and primary(reports) == 0
    # without D, the last oops is the one the machine did not survive
    reports = parse(corpus("syzbot-null-deref-old-4.13.txt").split("Kernel panic")[0] + oops)
    assert primary(reports) == 1
    # no panic and no oops: the most severe class first (here the hung task, not the OOM)
    reports = parse(
        corpus("synthetic-oom-kill-5.7-unwrapped.txt") + corpus("issue-hung-task-5.10.txt")
    )
    assert [r.kind for r in reports] == [Kind.OOM, Kind.HUNG_TASK] and primary(reports) == 1


def test_lone_warning_line_is_not_a_report() -> None:
    text = "WARNING: The mand mount option is deprecated\nBUG: Bad rss-counter state mm:00 idx:1\n"
    reports = parse(text)
    assert [r.kind for r in reports] == [Kind.OTHER_BUG]


# --------------------------------------------------------------------------------------------
# robustness


def test_garbage_never_raises() -> None:
    rng = random.Random(1234)
    pieces = []
    for name in sorted(EXPECTED)[:12]:
        pieces += corpus(name).splitlines()
    for _ in range(200):
        sample = rng.sample(pieces, k=min(len(pieces), rng.randrange(1, 80)))
        sample = [s[: rng.randrange(0, len(s) + 1)] for s in sample]
        if rng.random() < 0.3:
            sample.append(bytes(rng.randrange(256) for _ in range(40)).decode("latin-1"))
        for r in parse("\n".join(sample)):
            report_to_dict(r)


def test_large_log_is_fast() -> None:
    filler = [f"[{k / 1000:12.6f}] eth0: some ordinary message number {k}" for k in range(60000)]
    text = (
        "\n".join(filler[:30000])
        + "\n"
        + corpus("synthetic-debian61-null.txt")
        + "\n".join(filler[30000:])
    )
    t0 = time.perf_counter()
    reports = parse(text)
    assert time.perf_counter() - t0 < 10
    assert len(reports) == 1 and reports[0].start == 30001 and reports[0].end == 30045


# --------------------------------------------------------------------------------------------
# the command


def _run(argv: list[str], stdin: bytes | None = None) -> tuple[int, str]:
    from kdumper.cli import oops_cmd

    parser = argparse.ArgumentParser()
    oops_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["oops", *argv])
    out = io.StringIO()
    old_out, old_in = sys.stdout, sys.stdin
    sys.stdout = out
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = args.func(args)
    finally:
        sys.stdout, sys.stdin = old_out, old_in
    return code, out.getvalue()


def test_cli_text() -> None:
    code, out = _run([str(DATA / "synthetic-debian612-warn-panic.txt")])
    assert code == 0
    assert out.startswith("report 1 of 2, primary: WARNING in kdumper_crash_warn\n")
    assert "report 2 of 2: Kernel panic: kernel: panic_on_warn set" in out
    assert "  task:" in out and "init (PID 1, UID 0, CPU 0)" in out
    assert "    kdumper_crash_write+0xbd/0xd0 [kdumper_crash]\n" in out
    assert "? __warn" not in out and "(13 frames, 7 marked '?' not shown):" in out
    assert "caused by:  report 1" in out
    code, out = _run(["--unreliable", str(DATA / "synthetic-debian612-warn-panic.txt")])
    assert "    ? __warn+0x89/0x130\n" in out


def test_cli_json_and_stdin() -> None:
    data = (DATA / "synthetic-debian61-null.txt").read_bytes()
    code, out = _run(["--json", "-"], stdin=data)
    assert code == 0
    objs: list[dict[str, Any]] = json.loads(out)
    assert len(objs) == 1 and objs[0]["primary"] is True
    o = objs[0]
    assert o["title"] == "BUG: kernel NULL pointer dereference in kdumper_crash_null"
    assert len(o["signature"]) == 64 and o["kind"] == "null_deref" and o["pid"] == 1
    assert o["rip"]["symbol"] == "kdumper_crash_null+0x19/0x20 [kdumper_crash]"
    assert o["stacks"][0]["frames"][0] == {
        "function": "__die_body.cold", "offset": 0x1A, "size": 0x1F, "module": None,
        "reliable": False, "context": "task", "address": None, "source": None, "inline": False,
        "regs": False, "symbol": "__die_body.cold+0x1a/0x1f",
    }  # fmt: skip


def test_cli_primary_only_and_nothing_found(tmp_path: Path) -> None:
    code, out = _run(["--primary", "--frames", "0", str(DATA / "syzbot-gpf-6.14.txt")])
    assert code == 0 and out.count("report ") == 1 and "... " not in out
    empty = tmp_path / "empty.log"
    empty.write_text("[    0.000000] Linux version 6.1.0\n")
    assert _run([str(empty)]) == (0, "no kernel crash reports found\n")
    assert _run(["--json", str(empty)]) == (0, "[]\n")


def test_cli_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        _run([str(tmp_path / "missing.log")])
    with pytest.raises(DumpIOError):
        _run([str(tmp_path)])
    binary = tmp_path / "vmcore"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\0" + bytes(100))
    with pytest.raises(UnsupportedError):
        _run([str(binary)])
