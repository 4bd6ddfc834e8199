"""Fast checks of the harness's pure functions (no QEMU, no downloads)."""

from __future__ import annotations

import gzip
import io
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from vmharness.debian import compare_versions
from vmharness.errors import GuestStalledError, HarnessError
from vmharness.initramfs import CpioWriter, gzip_cpio
from vmharness.procfs import parse_buddyinfo, parse_meminfo, parse_vmstat
from vmharness.qemu import QemuConfig, QemuVM, SerialLine
from vmharness.vmcore import _cut_section, _timings, parse_mem


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    entries = {}
    off = 0
    while True:
        assert data[off : off + 6] == b"070701"
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off : off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body)


def test_cpio_newc_roundtrip() -> None:
    raw = io.BytesIO()
    w = CpioWriter(raw)
    w.add_file("a/b/c.txt", b"hello", 0o600)
    w.add_symlink("bin/sh", "busybox")
    w.add_chardev("dev/console", 5, 1)
    w.close()
    entries = _read_newc(raw.getvalue())
    assert set(entries) == {"a", "a/b", "a/b/c.txt", "bin", "bin/sh", "dev", "dev/console"}
    assert entries["a/b/c.txt"] == (stat.S_IFREG | 0o600, b"hello")
    assert entries["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert stat.S_ISDIR(entries["a/b"][0])


def test_gzip_cpio_is_deterministic() -> None:
    def fill(w: CpioWriter) -> None:
        w.add_file("x", b"1" * 1000)

    first = gzip_cpio(fill)
    assert first == gzip_cpio(fill)
    assert _read_newc(gzip.decompress(first))["x"][1] == b"1" * 1000


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("1:1.7.6-1", "1:1.7.2-1", 1),
        ("1.7.6-1", "1:1.7.2-1", -1),
        ("6.1.192-2", "6.1.192-10", -1),
        ("1.0~rc1", "1.0", -1),
        ("6.12.118-1", "6.12.117-1~deb12u1", 1),
        ("2.41-12+deb13u5", "2.41-12", 1),
        ("6.1.176-1", "6.1.176-1", 0),
    ],
)
def test_compare_versions(a: str, b: str, sign: int) -> None:
    result = compare_versions(a, b)
    assert (result > 0) - (result < 0) == sign


def test_parse_mem() -> None:
    assert parse_mem("1G") == 1024
    assert parse_mem("2GiB") == 2048
    assert parse_mem("1536M") == 1536
    assert parse_mem(768) == 768
    with pytest.raises(Exception, match="bad memory size"):
        parse_mem("lots")


def _lines(*texts: str) -> list[SerialLine]:
    return [SerialLine(float(i), t) for i, t in enumerate(texts)]


def test_cut_section_skips_kernel_lines() -> None:
    lines = _lines(
        "KDUMPER: BEGIN meminfo",
        "MemTotal:  1000 kB",
        "[    1.234] random: crng init done",
        "MemFree:  500 kB",
        "KDUMPER: END meminfo",
    )
    assert _cut_section(lines, "meminfo") == "MemTotal:  1000 kB\nMemFree:  500 kB\n"


def test_timings_from_markers() -> None:
    lines = _lines(
        "[ 0.0] Linux version 6.1",
        "KDUMPER: init-start 1.0",
        "KDUMPER: capture-kernel-loaded 2.0",
        "KDUMPER: workload-done 3.0",
        "KDUMPER: crash sysrq 4.0",
        "[ 0.0] Linux version 6.1",
        "KDUMPER: capture-start 1.0",
        "KDUMPER: step dmesg rc=0 2.0",
        "KDUMPER: step elf rc=0 3.0",
        "KDUMPER: capture-done 4.0",
    )
    t = _timings(lines, 10.0)
    assert t["boot"] == 1.0
    assert t["crash"] == 2.0
    assert t["panic_to_capture_kernel"] == 1.0
    assert t["capture"] == 3.0
    assert t["capture_dmesg"] == 1.0 and t["capture_elf"] == 1.0
    assert t["shutdown"] == 1.0


def test_procfs_parsers(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:  1000 kB\nHugePages_Total:       0\n")
    (tmp_path / "vmstat").write_text("nr_free_pages 10\nnr_dirty 2\n")
    (tmp_path / "buddyinfo").write_text(
        "Node 0, zone      DMA      1      0      2 \nNode 0, zone    DMA32      0      1 \n"
    )
    assert parse_meminfo(tmp_path / "meminfo") == {"MemTotal": 1000, "HugePages_Total": 0}
    assert parse_vmstat(tmp_path / "vmstat") == {"nr_free_pages": 10, "nr_dirty": 2}
    zones = parse_buddyinfo(tmp_path / "buddyinfo")
    assert [z.zone for z in zones] == ["DMA", "DMA32"]
    assert zones[0].free_pages == 1 + 2 * 4


def _fake_qemu(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-qemu"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone for our purposes
    status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    return status == "Z"


def test_qemu_vm_serial_markers_and_exit(tmp_path: Path) -> None:
    qemu = _fake_qemu(tmp_path, 'echo "boot"; echo "KDUMPER: capture-done 1.0\r"; exit 0')
    log = tmp_path / "serial.log"
    with QemuVM(QemuConfig(qemu=qemu), tmp_path / "w", serial_log=log, exclusive=False) as vm:
        line = vm.wait_for(r"^KDUMPER: capture-done", 10)
        assert line is not None and line.text == "KDUMPER: capture-done 1.0"
        assert vm.wait_exit(10) == 0
    assert "] boot" in log.read_text()


def test_qemu_vm_abort_and_timeout_end_the_process(tmp_path: Path) -> None:
    qemu = _fake_qemu(tmp_path, 'echo "KDUMPER: FAIL no disk"; exec sleep 600')
    vm = QemuVM(QemuConfig(qemu=qemu), tmp_path / "w", exclusive=False)
    with pytest.raises(HarnessError, match="FAIL no disk"), vm:
        vm.wait_for("never", 10, abort=r"^KDUMPER: FAIL")
    assert vm.pid is not None and _gone(vm.pid)

    qemu = _fake_qemu(tmp_path, "exec sleep 600")
    vm = QemuVM(QemuConfig(qemu=qemu), tmp_path / "w2", exclusive=False)
    with pytest.raises(HarnessError, match="timeout"), vm:
        vm.wait_for("never", 0.5)
    assert vm.pid is not None and _gone(vm.pid)


def test_qemu_vm_exit_before_marker(tmp_path: Path) -> None:
    qemu = _fake_qemu(tmp_path, 'echo "Kernel panic"; exit 1')
    with QemuVM(QemuConfig(qemu=qemu), tmp_path / "w", exclusive=False) as vm:
        assert vm.wait_for("capture-done", 10) is None


def test_qemu_vm_silence_is_a_stall(tmp_path: Path) -> None:
    """A guest that keeps printing is waited for; one that stops printing is a stall, raised
    long before the wait's own timeout (boot_cycle retries such a first boot)."""
    qemu = _fake_qemu(
        tmp_path, 'for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.3; done; exec sleep 600'
    )
    vm = QemuVM(QemuConfig(qemu=qemu), tmp_path / "w", exclusive=False)
    started = time.monotonic()
    with pytest.raises(GuestStalledError, match="printed nothing for 1s"), vm:
        assert vm.wait_for("line 6", 10, silence=1.0) is not None  # 1.8 s, never 1 s silent
        vm.wait_for("never", 60, silence=1.0)
    assert time.monotonic() - started < 10
    assert vm.pid is not None and _gone(vm.pid)


def test_qemu_vm_soft_lockup_is_a_stall(tmp_path: Path) -> None:
    """A guest that keeps printing lockup reports is wedged, not slow: raised at the report."""
    from vmharness.rootfs import FIRST_BOOT_WEDGED

    report = "[   52.410742] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [(udev-worker):207]"
    qemu = _fake_qemu(
        tmp_path, f'echo "booting"; sleep 0.2; echo "{report}"; while :; do echo x; sleep 0.1; done'
    )
    vm = QemuVM(QemuConfig(qemu=qemu), tmp_path / "w", exclusive=False)
    started = time.monotonic()
    with pytest.raises(GuestStalledError, match=r"wedged: .*soft lockup - CPU#0 stuck"), vm:
        vm.wait_for("KDGUEST: ready", 60, silence=30, wedged=FIRST_BOOT_WEDGED)
    assert time.monotonic() - started < 10
    assert vm.pid is not None and _gone(vm.pid)


def test_emulator_flake_is_an_int3_oops_from_the_capture_on(tmp_path: Path) -> None:
    """boot_cycle runs a cycle once more when TCG spoiled a boot from the capture kernel's on
    (seen once: the boot after the capture hit ``Oops: int3`` in a half-patched static branch
    and rebooted, one boot more than the cycle has)."""
    from types import SimpleNamespace

    from vmharness.rootfs import emulator_flake

    oops = "[    7.462024] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"
    first = "[    0.000000] Command line: root=/dev/vda rw console=ttyS0 crashkernel=256M\n"
    capture = "[    0.000000] Command line: elfcorehdr=0x2d000000 root=/dev/vda\n"

    def result(text: str, accel: str = "tcg", booted: bool = True) -> Any:
        log = tmp_path / f"serial-{len(list(tmp_path.iterdir()))}.log"
        log.write_text(text)
        return SimpleNamespace(serial_log=log, accel=accel, capture_kernel_booted=booted)

    assert emulator_flake(result(first + capture + oops + "\n")) == oops.split("] ", 1)[1]
    assert emulator_flake(result(first + capture + "all well\n")) is None
    assert emulator_flake(result(first + oops + "\n" + capture)) is None
    assert emulator_flake(result(first + capture + oops, accel="kvm")) is None
    assert emulator_flake(result(first + oops, booted=False)) is None
