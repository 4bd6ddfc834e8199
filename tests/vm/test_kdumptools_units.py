"""The kdump-tools comparison's pure parts (vmharness.kdumptools): no QEMU, no downloads.

The serial lines are real ones, cut from cycles of the 6.1 guest (kdump-tools 1:1.8.1 with
makedumpfile 1.7.2, and kdumper), with the host timestamps they had.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmharness.errors import HarnessError
from vmharness.kdumptools import (
    DEFAULTS,
    capture_timing,
    configure_defaults,
    crash_moment,
    read_serial_log,
)
from vmharness.qemu import SerialLine

BANNER = (
    "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) "
    "(gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) "
    "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)"
)
FIRST_CMDLINE = (
    "[    0.000000] Command line: root=/dev/vda rw console=ttyS0 crashkernel=256M panic=5"
)
READY = (
    "KDGUEST: ready boot={n} loaded=1 crash_size=268435456 kdumper=inactive result=success "
    "arm_ms=- uptime=19.54"
)

KDUMP_TOOLS_LOG = [
    SerialLine(0.533, BANNER),
    SerialLine(0.533, FIRST_CMDLINE),
    SerialLine(16.340, "[   15.731507] kdump-tools[254]: Starting kdump-tools:"),
    SerialLine(18.136, "[   17.526047] kdump-tools[262]: loaded kdump kernel."),
    SerialLine(20.168, READY.format(n=1)),
    SerialLine(25.152, "KDGUEST: crash sysrq"),
    SerialLine(26.190, "[   25.608466] sysrq: Trigger a crash"),
    SerialLine(26.190, "[   25.608763] Kernel panic - not syncing: sysrq triggered crash"),
    SerialLine(27.293, BANNER),
    SerialLine(
        27.293,
        "[    0.000000] Command line: root=/dev/vda rw console=ttyS0 panic=5 "
        "systemd.mask=kdumper.service systemd.mask=kdumper-reload.service reset_devices "
        "systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb "
        "acpi_rsdp=0xf59c0 elfcorehdr=1031540K",
    ),
    SerialLine(
        41.183, "KDGUEST: capture-start uptime=13.78 mem_total_kb=220032 mem_available_kb=176248"
    ),
    SerialLine(42.185, "[   14.970797] kdump-tools[246]: Starting kdump-tools:"),
    SerialLine(
        42.207,
        "[   15.002129] kdump-tools[251]: running makedumpfile --dump-dmesg /proc/vmcore "
        "/var/crash/202611261114/dmesg.202611261114.",
    ),
    SerialLine(42.248, "[   15.043061] kdump-tools[267]: The kernel version is not supported."),
    SerialLine(
        42.263,
        "[   15.058037] kdump-tools[251]: kdump-tools: saved dmesg content in "
        "/var/crash/202611261114.",
    ),
    SerialLine(
        42.357,
        "[   15.148756] kdump-tools[251]: running makedumpfile -c -d 31 -F /proc/vmcore | "
        "compress > /var/crash/202611261114/dump-incomplete.",
    ),
    SerialLine(46.241, "[   19.034260] kdump-tools[270]: The dumpfile is saved to STDOUT."),
    SerialLine(46.243, "[   19.037419] kdump-tools[270]: makedumpfile Completed."),
    SerialLine(
        46.272,
        "[   19.062844] kdump-tools[251]: kdump-tools: saved vmcore in /var/crash/202611261114.",
    ),
    SerialLine(46.455, "[   19.279690] reboot: Restarting system"),
    SerialLine(49.772, BANNER),
    SerialLine(49.772, FIRST_CMDLINE),
    SerialLine(63.271, "[   13.521401] kdump-tools[264]: loaded kdump kernel."),
    SerialLine(65.039, READY.format(n=2)),
    SerialLine(67.900, "KDGUEST: back boot=2"),
]

KDUMPER_LOG = [
    *KDUMP_TOOLS_LOG[:9],
    SerialLine(
        27.293,
        "[    0.000000] Command line: elfcorehdr=0x25000000 root=/dev/vda rw console=ttyS0 "
        "nr_cpus=1 irqpoll usbcore.nousb reset_devices systemd.unit=kdumper-capture.service",
    ),
    KDUMP_TOOLS_LOG[10],
    SerialLine(
        42.763,
        "[   15.444928] kdumper[263]: kdumper: kernel log saved: vmcore-dmesg.txt (41033 bytes)",
    ),
    SerialLine(
        42.775,
        "[   15.455551] kdumper[263]: kdumper: saving the dump: level 31, zlib, kdump format",
    ),
    SerialLine(
        49.125,
        "[   21.807632] kdumper[263]: kdumper: dump saved: vmcore (49.4 MiB from 133.6 MiB of "
        "kept pages, 6.3 s)",
    ),
    SerialLine(50.658, "[   23.343266] kdumper[263]: kdumper: final_action: reboot"),
    SerialLine(51.231, "[   23.941089] reboot: Restarting system"),
    SerialLine(73.390, BANNER),
    SerialLine(73.390, FIRST_CMDLINE),
    SerialLine(84.724, READY.format(n=2)),
]


def test_kdump_tools_timing() -> None:
    assert crash_moment(KDUMP_TOOLS_LOG) == 26.190  # the kernel's line, not the marker
    t = capture_timing(KDUMP_TOOLS_LOG, "kdump-tools")
    assert t == pytest.approx(
        {
            "capture_kernel": 1.103,
            "capture_start": 14.993,
            "dmesg_saved": 16.073,
            "dump_saved": 20.082,
            "reboot": 20.265,
            "back": 38.849,
        }
    )


def test_kdumper_timing() -> None:
    t = capture_timing(KDUMPER_LOG, "kdumper")
    assert t["dmesg_saved"] == pytest.approx(16.573)
    assert t["dump_saved"] == pytest.approx(22.935)
    assert t["reboot"] == pytest.approx(25.041)
    assert t["back"] == pytest.approx(58.534)


def test_the_other_tools_lines_do_not_count() -> None:
    # a kdump-tools log read as kdumper's: no "dump saved" (the bench reports that run failed)
    t = capture_timing(KDUMP_TOOLS_LOG, "kdumper")
    assert "dump_saved" not in t and "dmesg_saved" not in t
    assert t["back"] == pytest.approx(38.849)
    with pytest.raises(HarnessError, match="unknown tool"):
        capture_timing(KDUMP_TOOLS_LOG, "makedumpfile")


def test_no_crash_no_timing() -> None:
    booted_only = [line for line in KDUMP_TOOLS_LOG if line.time < 21]
    assert crash_moment(booted_only) is None
    assert capture_timing(booted_only, "kdump-tools") == {}


def test_lost_kernel_line_falls_back_to_marker() -> None:
    log = [line for line in KDUMP_TOOLS_LOG if "sysrq" not in line.text or "KDGUEST" in line.text]
    log = [line for line in log if "Kernel panic" not in line.text]
    assert crash_moment(log) == 25.152


def test_read_serial_log(tmp_path: Path) -> None:
    path = tmp_path / "serial.log"
    path.write_text("".join(f"[{x.time:9.3f}] {x.text}\n" for x in KDUMP_TOOLS_LOG) + "junk\n")
    assert read_serial_log(path) == KDUMP_TOOLS_LOG


SHIPPED = """\
# kdump-tools configuration
USE_KDUMP=0
KDUMP_KERNEL=/var/lib/kdump/vmlinuz
KDUMP_COREDIR="/var/crash"
#KDUMP_FAIL_CMD="reboot -f"
# MAKEDUMP_ARGS - extra arguments passed to makedumpfile (8).  The default,
#MAKEDUMP_ARGS="-c -d 31"
"""


def test_configure_defaults() -> None:
    text = configure_defaults(SHIPPED)
    lines = text.splitlines()
    assert "USE_KDUMP=1" in lines and "USE_KDUMP=0" not in lines
    assert 'MAKEDUMP_ARGS="-c -d 31"' in lines
    assert "#MAKEDUMP_ARGS" not in text
    # the comment that merely mentions the key stays a comment
    assert "# MAKEDUMP_ARGS - extra arguments passed to makedumpfile (8).  The default," in lines
    assert lines.count('KDUMP_COREDIR="/var/crash"') == 1
    assert '#KDUMP_FAIL_CMD="reboot -f"' in lines
    assert configure_defaults("", {"KDUMP_NUM_DUMPS": "2"}) == "\nKDUMP_NUM_DUMPS=2\n"
    assert set(DEFAULTS) == {"USE_KDUMP", "KDUMP_COREDIR", "MAKEDUMP_ARGS"}
