"""Real kdump cycles of Debian kernels in QEMU, checked with independent tools.

The default matrix builds five vmcores (each ~20-40 s under TCG, cached afterwards):
6.1 and 6.12 "busy" with sysrq (opened with drgn and the -dbg vmlinux), and "minimal" ones with
oopses from the test module (NULL dereference, BUG(), WARN() + panic_on_warn), checked through
``makedumpfile --dump-dmesg``. ``KDUMPER_VM_FULL=1`` adds every trigger on both kernels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmharness import QemuConfig, QemuVM, VmcoreArtifacts
from vmharness.procfs import parse_buddyinfo, parse_meminfo, parse_vmstat
from vmharness.pytest_plugin import VmcoreFactory

pytestmark = pytest.mark.vm

KERNELS = ("6.1", "6.12")

#: (kernel, trigger) crashed in the "minimal" scenario; checked through the kernel log
OOPS_CASES: list[tuple[str, str]] = [("6.1", "null"), ("6.12", "bug"), ("6.1", "warn")]
if os.environ.get("KDUMPER_VM_FULL"):
    OOPS_CASES = [(k, t) for k in KERNELS for t in ("null", "bug", "warn", "softlockup", "panic")]

#: lines each trigger must leave in the dump's kernel log. An oops with oops=panic goes to the
#: capture kernel from oops_end(), before panic() prints "Kernel panic - not syncing".
EXPECTED_DMESG: dict[str, tuple[str, ...]] = {
    "sysrq": ("Kernel panic - not syncing: sysrq triggered crash", "sysrq_handle_crash"),
    "null": ("BUG: kernel NULL pointer dereference", "kdumper_crash_null", "Oops:"),
    "bug": ("kernel BUG at", "kdumper_crash_bug", "invalid opcode"),
    "warn": (
        "WARNING:",
        "kdumper_crash: WARN() requested",
        "Kernel panic - not syncing: kernel: panic_on_warn set",
    ),
    "softlockup": ("BUG: soft lockup", "Kernel panic - not syncing: softlockup: hung tasks"),
    "panic": ("Kernel panic - not syncing: kdumper_crash: panic requested",),
}

DRGN_SCRIPT = r"""
import json, sys
import drgn
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
try:
    prog.load_debug_info([sys.argv[2]])
except drgn.MissingDebugInfoError:
    pass
thread = prog.crashed_thread()
print(json.dumps({
    "tid": thread.tid,
    "frames": [frame.name for frame in thread.stack_trace() if frame.name],
    "release": prog["init_uts_ns"].name.release.string_().decode(),
    "totalram_pages": int(prog["_totalram_pages"].counter.value_()),
}))
"""


def test_qemu_qmp_and_cleanup(tmp_path: Path) -> None:
    """A real QEMU (paused, nothing to boot) answers QMP and is gone after stop()."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 missing: run scripts/vm-deps.sh")
    config = QemuConfig(mem_mib=64, vmcoreinfo=False, extra_args=("-S",))
    with QemuVM(config, tmp_path, accel="tcg") as vm:
        assert vm.qmp("query-status")["status"] == "prelaunch"
        vm.dump_guest_memory(tmp_path / "mem.elf")
        pid = vm.pid
    assert (tmp_path / "mem.elf").read_bytes()[:4] == b"\x7fELF"
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def busy_sysrq(factory: VmcoreFactory, kernel: str) -> VmcoreArtifacts:
    """The vmcore the drgn and page-class tests share (one cycle per kernel)."""
    return factory(kernel=kernel, scenario="busy", trigger="sysrq", dbg=True)


def drgn_crash_info(dump: Path, vmlinux: Path) -> dict[str, object]:
    """Open ``dump`` with drgn in a subprocess and describe the crashed thread."""
    pytest.importorskip("drgn")
    proc = subprocess.run(
        [sys.executable, "-c", DRGN_SCRIPT, str(dump), str(vmlinux)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fmt", ["elf", "kdump-zlib", "kdump-zstd"])
def test_drgn_finds_sysrq_crash(vmcore_factory: VmcoreFactory, kernel: str, fmt: str) -> None:
    art = busy_sysrq(vmcore_factory, kernel)
    dumps = {
        "elf": art.elf,
        "kdump-zlib": art.makedumpfile_d31,
        "kdump-zstd": art.makedumpfile_d31_zstd,
    }
    dump = dumps[fmt]
    if dump is None:
        pytest.skip(f"makedumpfile {art.makedumpfile_version} has no zstd")
    assert art.vmlinux is not None and art.vmlinux.is_file()
    info = drgn_crash_info(dump, art.vmlinux)
    assert info["release"] == art.kernel_release
    frames = info["frames"]
    assert isinstance(frames, list)
    assert "sysrq_handle_crash" in frames, frames
    assert "panic" in frames, frames


@pytest.mark.parametrize("kernel", KERNELS)
def test_sysrq_dmesg(vmcore_factory: VmcoreFactory, kernel: str) -> None:
    art = busy_sysrq(vmcore_factory, kernel)
    text = art.dmesg.read_text(errors="replace")
    assert "Kernel panic - not syncing: sysrq triggered crash" in text
    assert "kdumper: crash trigger=sysrq scenario=busy" in text
    assert f"Linux version {art.kernel_release}" in text


@pytest.mark.parametrize("kernel", KERNELS)
def test_busy_page_classes(vmcore_factory: VmcoreFactory, kernel: str) -> None:
    """The busy workload left every page class in memory, by the kernel's own counters."""
    art = busy_sysrq(vmcore_factory, kernel)
    mem = parse_meminfo(art.meminfo)
    total = mem["MemTotal"]
    assert mem["AnonPages"] > total * 0.15  # random + zero + repeat hogs (21%)
    assert mem["Shmem"] > total * 0.08  # tmpfs file + SysV segment (11%)
    assert mem["Cached"] - mem["Shmem"] > total * 0.10  # ext4 file pages (17%)
    assert mem["Dirty"] > total * 0.03  # the unsynced file (6%)
    assert mem["Mapped"] > total * 0.02  # the mmap'ed file (3%)
    assert mem["Slab"] > 20 * 1024  # 25000 inodes and dentries
    assert mem["MemFree"] > total * 0.10
    vmstat = parse_vmstat(art.vmstat)
    assert vmstat["nr_free_pages"] * 4 == pytest.approx(mem["MemFree"], rel=0.05)
    assert vmstat["nr_dirty"] > 0
    zones = parse_buddyinfo(art.buddyinfo)
    assert {z.zone for z in zones} >= {"DMA", "DMA32"}
    buddy_kib = sum(z.free_pages for z in zones) * 4
    # per-CPU free lists are not in buddyinfo
    assert 0.8 * mem["MemFree"] < buddy_kib < 1.05 * mem["MemFree"]
    serial = art.serial_log.read_text(errors="replace")
    m = re.search(r"KDUMPER: processes (\d+)", serial)
    assert m and int(m.group(1)) > 64
    # filtering (-d 31) drops cache, user, free and zero pages: far smaller than the raw copy
    assert art.makedumpfile_d31.stat().st_size < art.elf.stat().st_size / 10


@pytest.mark.parametrize(("kernel", "trigger"), OOPS_CASES)
def test_oops_in_dmesg(vmcore_factory: VmcoreFactory, kernel: str, trigger: str) -> None:
    art = vmcore_factory(kernel=kernel, scenario="minimal", trigger=trigger)
    text = art.dmesg.read_text(errors="replace")
    for expected in EXPECTED_DMESG[trigger]:
        assert expected in text, f"{expected!r} not in {art.dmesg}"
    assert f"kdumper: crash trigger={trigger}" in text


def _built(factory: VmcoreFactory) -> list[VmcoreArtifacts]:
    cases = [busy_sysrq(factory, k) for k in KERNELS]
    cases += [factory(kernel=k, scenario="minimal", trigger=t) for k, t in OOPS_CASES]
    return cases


def test_artifacts_complete(vmcore_factory: VmcoreFactory) -> None:
    """Every built cycle has all files, the right formats, versions and timings."""
    for art in _built(vmcore_factory):
        with art.elf.open("rb") as f:
            assert f.read(4) == b"\x7fELF"
        with art.makedumpfile_d31.open("rb") as f:
            assert f.read(8) == b"KDUMP   "
        expected_mdf = "1.7.2" if art.kernel_release.startswith("6.1.") else "1.7.6"
        assert art.makedumpfile_version == expected_mdf
        assert (art.makedumpfile_d31_zstd is not None) == (expected_mdf == "1.7.6")
        assert all(code == 0 for code in art.info["step_exit_codes"].values())
        for path in (art.meminfo, art.vmstat, art.buddyinfo, art.serial_log, art.dmesg):
            assert path.stat().st_size > 0
        assert parse_meminfo(art.meminfo)["MemTotal"] > 0
        assert len(parse_buddyinfo(art.buddyinfo)) >= 2
        timings = json.loads(art.timings_json.read_text())
        for step in ("boot", "crash", "capture", "qemu_total"):
            assert timings[step] > 0, (art.directory, step)
        assert art.vmlinuz.is_file() and art.modules_dir.is_dir()
