"""The real Debian guest (vmharness.rootfs): image build, systemd boot, kdumper's own kdump cycle.

Default set (CI): the 6.1 guest builds (debootstrap ~50 s once, then cached), the per-run
overlay installs kdumper and the repository's units, and ONE boot of the 6.1 guest reaches the
ready unit after kdumper.service (~20 s under TCG). ``KDUMPER_VM_FULL=1`` adds the 6.12 guest.

The end-to-end cycle (armed by kdumper.service, crashed, captured by kdumper-capture.service,
back, the dump read on the host; about 1-1.5 minutes each): by default 6.1 to a local directory
(crashed with sysrq) and 6.12 to a raw disk (crashed by ``kdumper test --yes``, whose result the
next boot's ``kdumper status`` must report as passed); ``KDUMPER_VM_FULL=1`` runs both targets
on both kernels. The failure paths are in tests/vm/test_capture_failures.py.

The pure functions (serial-log parsing, unit placement, wheel unpacking) are tested without QEMU
and without the ``vm`` marker.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import oracles
from tests.vm.conftest import RootfsFactory
from vmharness import SerialLine, get_kernel, get_vmlinux
from vmharness.disk import list_files
from vmharness.errors import HarnessError
from vmharness.rootfs import (
    REPO_ROOT,
    CycleResult,
    _unit_wanted_by,
    boot_cycle,
    capture_section,
    capture_troubles,
    crash_time,
    cycle_timings,
    install_wheel,
    make_root_disk,
    parse_boots,
    parse_markers,
    systemd_destination,
)

vm = pytest.mark.vm

FULL = bool(os.environ.get("KDUMPER_VM_FULL"))
BOOT_KERNELS = ("6.1", "6.12") if FULL else ("6.1",)
E2E_CASES = (
    [(k, t) for k in ("6.1", "6.12") for t in ("local", "raw")]
    if FULL
    else [("6.1", "local"), ("6.12", "raw")]
)

#: the panic line of a sysrq crash, as the dump's kernel log has it
SYSRQ_PANIC = "Kernel panic - not syncing: sysrq triggered crash"


def _explain(result: CycleResult) -> str:
    return f"{result.problems}; serial log {result.serial_log}; timings {result.timings}"


# --- building ---------------------------------------------------------------------------------


@vm
@pytest.mark.parametrize("kernel", BOOT_KERNELS)
def test_rootfs_builds(rootfs_factory: RootfsFactory, kernel: str) -> None:
    """debootstrap + Python deps + the kernel dpkg-installed with its own initramfs-tools initrd."""
    image = rootfs_factory(kernel)
    tree = image.tree
    assert image.release.startswith(kernel + ".")
    assert image.vmlinuz.is_file() and image.initrd.is_file()
    assert image.initrd.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # COMPRESS=zstd
    assert (tree / "usr/lib/systemd/systemd").is_file()
    assert (tree / "usr/sbin/init").is_symlink()  # systemd-sysv
    assert image.python == "3.11"
    site = tree / f"usr/local/lib/python{image.python}/dist-packages"
    for package in ("zstandard", "lzallright", "cramjam"):
        assert (site / package).is_dir(), package
    assert (tree / "usr/lib/python3/dist-packages/numpy").is_dir()
    assert {w.split("-")[0] for w in image.wheels} == {"zstandard", "lzallright", "cramjam"}
    dpkg = (tree / "var/lib/dpkg/status").read_text()
    assert f"Package: {image.kernel_package}\nStatus: install ok installed" in dpkg
    assert "Package: kexec-tools" not in dpkg and "Package: makedumpfile" not in dpkg
    assert (tree / "etc/initramfs-tools/conf.d/kdguest.conf").read_text().count("MODULES=list")


def _cat(image: Path, path: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


@vm
def test_root_disk_overlay(rootfs_factory: RootfsFactory, tmp_path: Path) -> None:
    """The per-run overlay: kdumper from the working tree, the repo's units, config, crash plan."""
    image = rootfs_factory("6.1")
    config = '[target]\npath = "/var/crash"\n'
    disk, installed = make_root_disk(
        image, tmp_path / "root.img", config=config, plan={"CRASH": "none"}
    )
    assert _cat(disk, "/etc/kdumper/kdumper.toml") == config
    assert _cat(disk, "/etc/hostname") == "kdguest\n"
    script = _cat(disk, "/usr/local/bin/kdumper")
    # the console script of pyproject.toml (kdumper.cli.main:run)
    assert script.startswith("#!/usr/bin/python3\n") and "import run\n" in script
    site = f"/usr/local/lib/python{image.python}/dist-packages"
    assert "main.py" in list_files(disk, f"{site}/kdumper/cli")
    assert any(n.endswith(".pyc") for n in list_files(disk, f"{site}/kdumper/cli/__pycache__"))
    assert "CRASH=none" in _cat(disk, "/etc/kdguest/plan")
    wants = list_files(disk, "/etc/systemd/system/multi-user.target.wants")
    assert "kdguest-ready.service" in wants
    units = sorted(p.name for p in (REPO_ROOT / "systemd").glob("*.service"))
    in_guest = list_files(disk, "/etc/systemd/system")
    assert set(units) <= set(in_guest)
    if "kdumper.service" in units:
        assert "kdumper.service" in wants
        assert "/etc/systemd/system/multi-user.target.wants/kdumper.service" in installed["enabled"]
    # the cached tree is untouched: the overlay went into a hard-linked copy
    assert not (image.tree / "etc/kdumper/kdumper.toml").exists()
    assert not (image.tree / "usr/local/bin/kdumper").exists()


# --- booting ----------------------------------------------------------------------------------


@vm
@pytest.mark.parametrize("kernel", BOOT_KERNELS)
def test_guest_boots_to_ready(rootfs_factory: RootfsFactory, kernel: str, tmp_path: Path) -> None:
    """The guest boots its own initrd into systemd; kdumper.service runs; the ready unit reports.

    With the repository's kdumper.service present, the real unit must have armed the machine.
    """
    image = rootfs_factory(kernel)
    result = boot_cycle(image, tmp_path, crash="none", timeout=420)
    assert result.ok, _explain(result)
    assert result.ready and result.powered_off and not result.crashed
    assert [b.capture for b in result.boots] == [False]
    ready = next(m for m in result.markers if m.name == "ready")
    assert ready.fields["boot"] == "1"
    assert ready.fields["crash_size"] == str(256 << 20)
    assert result.guest_state is not None and (result.guest_state / "journal-1.log").exists()
    if (REPO_ROOT / "systemd" / "kdumper.service").exists():
        assert ready.fields["kdumper"] == "active", _explain(result)
        assert result.armed, _explain(result)
        assert result.status is not None  # `kdumper status --json` in the guest gave JSON
    assert result.timings["boot"] > 0


# --- the whole cycle --------------------------------------------------------------------------


def _kdumper(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdumper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
    )


def _saved_dump(result: CycleResult, target: str) -> Path:
    """The dump the capture saved: the largest complete ``vmcore*`` under /var/crash; for the
    raw target, that (if the next boot recovered the stream into /var/crash) or the raw disk."""
    assert result.dump_dir is not None
    vmcores = [
        result.dump_dir / f
        for f in result.dump_files
        if Path(f).name.startswith("vmcore") and "incomplete" not in f
    ]
    if vmcores:
        return max(vmcores, key=lambda p: p.stat().st_size)
    assert target == "raw", f"no vmcore under /var/crash: {result.dump_files}; {_explain(result)}"
    assert result.raw_disk is not None
    return result.raw_disk


def _check_test_passed(result: CycleResult) -> None:
    """``kdumper status`` of the boot after ``kdumper test``: the test passed, and its id is the
    one the capture wrote into the dump directory (from ``kdumper.test_id=``)."""
    assert result.status is not None and result.dump_dir is not None, _explain(result)
    test = result.status["test"]
    assert test is not None and test["result"] == "passed", result.status
    saved = [f for f in result.dump_files if f.endswith("/test-id")]
    assert len(saved) == 1, result.dump_files
    assert (result.dump_dir / saved[0]).read_text().strip() == test["id"]
    assert test["dump_dir"] == "/var/crash/" + saved[0].rsplit("/", 1)[0], test


@vm
@pytest.mark.parametrize(("kernel", "target"), E2E_CASES)
def test_kdumper_cycle(
    rootfs_factory: RootfsFactory, kernel: str, target: str, tmp_path: Path
) -> None:
    """kdumper alone in the guest (no kexec-tools, no makedumpfile): armed by kdumper.service,
    crashed with sysrq, captured by kdumper-capture.service, rebooted by its final action, back;
    the saved dump opens with kdumper and its log has the panic. The raw cycles crash the way an
    administrator tests kdump, with ``kdumper test --yes`` (test id, reload, sysrq): the next
    boot's ``kdumper status`` must report that test's dump as saved."""
    import kdumper

    image = rootfs_factory(kernel)
    crash = "kdumper-test" if target == "raw" else "sysrq"
    result = boot_cycle(image, tmp_path, target=target, crash=crash, timeout=900)
    assert result.ok, _explain(result)
    assert result.armed and result.crashed and result.capture_kernel_booted
    assert result.capture_started and result.back
    kinds = [b.capture for b in result.boots]
    assert kinds == [False, True, False], kinds
    if crash == "kdumper-test":
        _check_test_passed(result)

    path = _saved_dump(result, target)
    with kdumper.open(str(path)) as dump:
        assert dump.vmcoreinfo is not None
        assert dump.vmcoreinfo.osrelease == image.release
    dmesg = _kdumper("dmesg", str(path))
    assert dmesg.returncode == 0, dmesg.stderr
    assert SYSRQ_PANIC in dmesg.stdout
    if path.name.startswith("vmcore"):
        # the log equals what makedumpfile extracts from the same file (1.7.6 prints caller ids
        # as kdumper does; Debian 12's 1.7.2 cannot: compare it with the --no-caller-id form)
        version = "1.7.6" if oracles.makedumpfile_path("1.7.6") else "1.7.2"
        theirs = tmp_path / "makedumpfile-dmesg.txt"
        oracles.makedumpfile(version, "--dump-dmesg", path, theirs)
        ours = dmesg if version == "1.7.6" else _kdumper("dmesg", "--no-caller-id", str(path))
        assert theirs.read_text() == ours.stdout
    report = _kdumper("report", "--json", str(path))
    assert report.returncode == 0, report.stderr
    assert "sysrq" in json.dumps(json.loads(report.stdout)).lower()
    try:
        import drgn
    except ImportError:
        return
    # drgn with the -dbg vmlinux (cached by the harness's own vmcore tests): the crashed
    # thread's stack is the sysrq handler's
    vmlinux = get_vmlinux(get_kernel(image.kernel))
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    prog.load_debug_info([str(vmlinux)])
    assert prog["init_uts_ns"].name.release.string_().decode() == image.release
    frames = [f.name for f in prog.crashed_thread().stack_trace() if f.name]
    assert "sysrq_handle_crash" in frames, frames


# --- pure functions (no QEMU) -----------------------------------------------------------------


def _lines(*pairs: tuple[float, str]) -> list[SerialLine]:
    return [SerialLine(t, text) for t, text in pairs]


CYCLE_LOG = _lines(
    (0.7, "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)"),
    (0.7, "[    0.000000] Command line: root=/dev/vda rw console=ttyS0 crashkernel=256M panic=5"),
    (2.2, "[    1.5] Run /init as init process"),
    (3.9, "Welcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!"),
    (13.0, "KDGUEST: ready boot=1 loaded=1 crash_size=268435456 kdumper=active arm_ms=3466"),
    (17.4, "[   16.9] sysrq: Trigger a crash"),
    (17.5, "KDGUEST: crash sysrq"),
    (18.4, "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)"),
    (18.4, "[    0.000000] Command line: elfcorehdr=0x2f000000 root=/dev/vda rw console=ttyS0"),
    (29.5, "KDGUEST: capture-start uptime=10.96 mem_total_kb=220680 mem_available_kb=181084"),
    (32.4, "[   14.153288] reboot: Restarting system"),
    (33.2, "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)"),
    (33.2, "[    0.000000] Command line: root=/dev/vda rw console=ttyS0 crashkernel=256M panic=5"),
    (45.8, "KDGUEST: ready boot=2 loaded=1 crash_size=268435456 kdumper=active arm_ms=2936"),
    (47.8, "some systemd noiseKDGUEST: back boot=2"),
    (48.0, "KDGUEST: poweroff"),
)


def test_parse_markers_and_boots() -> None:
    markers = parse_markers(CYCLE_LOG)
    assert [m.name for m in markers] == [
        "ready",
        "crash",
        "capture-start",
        "ready",
        "back",
        "poweroff",
    ]
    assert markers[0].fields["loaded"] == "1"
    assert markers[2].fields["mem_total_kb"] == "220680"
    boots = parse_boots(CYCLE_LOG)
    assert [b.capture for b in boots] == [False, True, False]
    assert boots[1].cmdline.startswith("elfcorehdr=")
    assert crash_time(CYCLE_LOG) == 17.4  # the kernel's line, before the marker


def test_cycle_timings() -> None:
    t = cycle_timings(CYCLE_LOG, exit_time=50.5)
    assert t["boot"] == 13.0
    assert t["boot_kernel"] == pytest.approx(1.5)
    assert t["boot_initrd"] == pytest.approx(1.7)
    assert t["arm"] == pytest.approx(3.466)
    assert t["crash_to_capture_kernel"] == pytest.approx(1.0)
    assert t["capture_kernel_boot"] == pytest.approx(11.1)
    assert t["capture"] == pytest.approx(2.9)
    assert t["reboot"] == pytest.approx(0.8)
    assert t["back"] == pytest.approx(14.6)
    assert t["poweroff"] == pytest.approx(2.5)
    assert t["total"] == 50.5


def test_crash_lost_marker_uses_kernel_line() -> None:
    log = [line for line in CYCLE_LOG if "KDGUEST: crash" not in line.text]
    assert crash_time(log) == 17.4
    no_crash = [line for line in log if "sysrq" not in line.text and line.time < 17]
    assert crash_time(no_crash) is None


def test_capture_troubles() -> None:
    assert capture_troubles(CYCLE_LOG) == []
    section = capture_section(CYCLE_LOG)
    assert section[0].time == 18.4 and section[-1].text.endswith("Restarting system")
    bad = [
        *CYCLE_LOG[:10],
        SerialLine(30.0, "[   28.69] kdumper invoked oom-killer: gfp_mask=0x140dca, order=0"),
        SerialLine(30.1, "[   28.81] Kernel panic - not syncing: System is deadlocked on memory"),
        *CYCLE_LOG[10:],
    ]
    troubles = capture_troubles(bad)
    assert troubles == [
        "the capture kernel panicked: Kernel panic - not syncing: System is deadlocked on memory",
        "out of memory in the capture kernel: kdumper invoked oom-killer: gfp_mask=0x140dca,"
        " order=0",
    ]
    # the first kernel's own panic line is not the capture kernel's
    assert capture_troubles([*CYCLE_LOG[:6], *CYCLE_LOG[6:]]) == []


def test_systemd_destinations() -> None:
    assert systemd_destination("kdumper.service") == ("/etc/systemd/system/kdumper.service", 0o644)
    assert systemd_destination("98-kdumper.rules") == ("/etc/udev/rules.d/98-kdumper.rules", 0o644)
    assert systemd_destination("kernel/postinst.d/kdumper") == (
        "/etc/kernel/postinst.d/kdumper",
        0o755,
    )
    assert systemd_destination("README.md") is None
    assert systemd_destination("kernel/README") is None
    unit = "[Unit]\nWantedBy=nope.target\n[Install]\nWantedBy=multi-user.target a.target\n"
    assert _unit_wanted_by(unit) == ["multi-user.target", "a.target"]
    assert _unit_wanted_by("[Service]\nExecStart=x\n") == []


def test_install_wheel(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as zf:
        zf.writestr("demo/__init__.py", "X = 1\n")
        zf.writestr("demo-1.0.data/platlib/demo_ext.so", b"\x7fELF")
        zf.writestr("demo-1.0.dist-info/METADATA", "Name: demo\nVersion: 1.0\n")
    wheel = tmp_path / "demo-1.0-cp311-cp311-manylinux2014_x86_64.whl"
    wheel.write_bytes(raw.getvalue())
    tree = tmp_path / "tree"
    assert install_wheel(wheel, tree, "/usr/local/lib/python3.11/dist-packages") == "demo-1.0"
    site = tree / "usr/local/lib/python3.11/dist-packages"
    assert (site / "demo/__init__.py").read_text() == "X = 1\n"
    assert (site / "demo_ext.so").read_bytes() == b"\x7fELF"
    assert (site / "demo-1.0.dist-info/INSTALLER").exists()

    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.py", "")
    with pytest.raises(HarnessError, match="unsafe"):
        install_wheel(bad, tree, "/site")
