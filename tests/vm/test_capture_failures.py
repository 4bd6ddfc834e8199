"""The capture's failure paths for real, in the Debian guest (vmharness.rootfs.boot_cycle).

Each cycle crashes the guest with sysrq, lets ``kdumper-capture.service`` meet the failure in
the capture kernel, follows ``failure_action`` (or the unit's ``FailureAction=``) back into the
first kernel, and checks what the dump disk holds and what ``kdumper status --json`` of the next
boot says (``kdguest-ready`` stores it as ``status-<boot>.json``).

Default set (CI, two cycles on 6.1, about 70 s each under TCG):

* ``test_target_too_small``: a 20 MiB ext4 dump disk, ``[dump] level = 1, codec = "lzo"``
  (estimated 113-120 MiB; the guard filters harder to level 31 zlib, still ~27 MiB for the 1 GiB
  guest), ``min_free = "0"``, ``failure_action = "reboot"``, ``final_action = "poweroff"`` (so a
  guest that comes back proves that the failure action, not the final one, was taken).
* ``test_missing_device_killed``: ``raw = "/dev/vdz"`` (no such disk), ``failure_action =
  "dump_to_rootfs"``; the dump goes to ``/var/crash`` instead, and the test guest's
  ``kdguest-kill-capture`` kills ``kdumper capture`` with SIGKILL once that file has grown past
  8 MiB: the unit's ``FailureAction=reboot-force`` brings the guest back, with the log, the cut
  dump and an earlier dump (seeded on the dump disk; ``keep = 1``) all still there.

``KDUMPER_VM_FULL=1`` adds the two halves of the second case on their own (the dump to the root
filesystem completing; a plain local capture killed midway) and the too-small case on 6.12.
``kdumper test`` run by the guest is covered by tests/vm/test_rootfs.py (its 6.12 raw cycle).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

import kdumper
from tests.vm import test_rootfs
from tests.vm.conftest import RootfsFactory
from vmharness.rootfs import CycleResult, boot_cycle

vm = pytest.mark.vm
FULL = test_rootfs.FULL
SYSRQ_PANIC = test_rootfs.SYSRQ_PANIC

TOO_SMALL_MIB = 20
TOO_SMALL_CONFIG = """\
# vmharness: a dump disk far too small for the dump
failure_action = "reboot"
final_action = "poweroff"
[target]
path = "/var/crash"
[dump]
level = 1
codec = "lzo"
[retention]
min_free = "0"
"""

MISSING_DEVICE = "/dev/vdz"
MISSING_DEVICE_CONFIG = f"""\
# vmharness: a raw target that does not exist in the guest
failure_action = "dump_to_rootfs"
[target]
raw = "{MISSING_DEVICE}"
[retention]
keep = 1
"""

#: a local capture slow enough to be killed (kdump format, no compression: ~117 MiB)
KILLED_CONFIG = """\
# vmharness: a capture killed midway
[target]
path = "/var/crash"
[dump]
codec = "none"
[retention]
keep = 1
"""
KILL_AFTER_KIB = 8192

EARLIER = "kdguest-2001-02-03-04-05-06"
EARLIER_FILES = {
    "vmcore-dmesg.txt": b"[    0.000000] an earlier crash\n",
    "vmcore": b"KDUMP   " + bytes(4088),
    "report.json": b"{}\n",
}

TOO_SMALL_KERNELS = ("6.1", "6.12") if FULL else ("6.1",)


def _explain(result: CycleResult) -> str:
    return test_rootfs._explain(result)


def _seed(tmp_path: Path) -> Path:
    """A dump disk's content with one earlier kdumper dump (old mtimes)."""
    seed = tmp_path / "seed"
    earlier = seed / EARLIER
    earlier.mkdir(parents=True)
    earlier.chmod(0o700)
    for name, data in EARLIER_FILES.items():
        (earlier / name).write_bytes(data)
        (earlier / name).chmod(0o600)
        os.utime(earlier / name, (981_000_000, 981_000_000))
    os.utime(earlier, (981_000_000, 981_000_000))
    return seed


def _capture_lines(result: CycleResult) -> list[str]:
    """The capture's own ``kdumper: ...`` lines from the capture kernel's console."""
    assert result.capture_log is not None, _explain(result)
    out = []
    for line in result.capture_log.read_text(errors="replace").splitlines():
        m = re.search(r"kdumper\[\d+\]: kdumper: (.*)", line)
        if m:
            out.append(m.group(1).strip())
    return out


def _new_dumps(result: CycleResult) -> dict[str, list[str]]:
    """The dump directories the capture wrote (not the seeded one): name -> sorted files."""
    dirs: dict[str, list[str]] = {}
    for f in result.dump_files:
        parts = f.split("/")
        if len(parts) == 2 and parts[0] not in (EARLIER, "lost+found"):
            dirs.setdefault(parts[0], []).append(parts[1])
    return {k: sorted(v) for k, v in dirs.items()}


def _status_of_boot(result: CycleResult, boot: int) -> dict[str, Any]:
    assert result.guest_state is not None, _explain(result)
    path = result.guest_state / f"status-{boot}.json"
    assert path.is_file(), f"no {path.name}: {_explain(result)}"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _check_back_after_capture(result: CycleResult) -> None:
    assert result.armed and result.crashed and result.capture_started, _explain(result)
    assert result.back, _explain(result)
    kinds = [b.capture for b in result.boots]
    assert kinds == [False, True, False], kinds


def _check_incomplete_dump(
    result: CycleResult, directory: str, *, status_boot: int = 2
) -> tuple[Path, dict[str, Any]]:
    """The cut dump is still a dump (kdumper info opens it, flags it incomplete), the log saved
    before it is whole, and the next boot's status reports the last dump as incomplete."""
    assert result.dump_dir is not None
    d = result.dump_dir / directory
    log = (d / "vmcore-dmesg.txt").read_text()
    assert SYSRQ_PANIC in log, log[-2000:]
    cut = d / "vmcore-incomplete"
    assert cut.stat().st_mode & 0o777 == 0o600
    with kdumper.open(str(cut)) as dump:
        assert dump.vmcoreinfo is not None and dump.vmcoreinfo.osrelease
    info = test_rootfs._kdumper("info", "--json", str(cut))
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["incomplete"] is True, info.stdout
    # the kernel log lives in the dump's last pages: when they were cut off, `kdumper dmesg`
    # says so in one line (vmcore-dmesg.txt has the log); when not, it prints the same log
    dmesg = test_rootfs._kdumper("dmesg", str(cut))
    if dmesg.returncode == 0:
        assert SYSRQ_PANIC in dmesg.stdout
    else:
        assert "Traceback" not in dmesg.stderr, dmesg.stderr
        assert "incomplete" in dmesg.stderr and len(dmesg.stderr.splitlines()) == 1, dmesg.stderr
    status = _status_of_boot(result, status_boot)
    last = status["last_dump"]
    assert last is not None and last["path"] == f"/var/crash/{directory}", last
    assert last["incomplete"] is True, last
    return d, status


def _check_earlier_dump_kept(result: CycleResult) -> None:
    assert result.dump_dir is not None
    earlier = result.dump_dir / EARLIER
    for name, data in EARLIER_FILES.items():
        assert (earlier / name).read_bytes() == data, name


# --- a target too small -----------------------------------------------------------------------


@vm
@pytest.mark.parametrize("kernel", TOO_SMALL_KERNELS)
def test_target_too_small(rootfs_factory: RootfsFactory, kernel: str, tmp_path: Path) -> None:
    """A dump disk too small for the dump: the log is saved first, the guard filters harder,
    the dump stops at the free space as vmcore-incomplete (readable, flagged incomplete in its
    header and in report.json), failure_action reboots, the next boot reports it."""
    image = rootfs_factory(kernel)
    result = boot_cycle(
        image,
        tmp_path,
        config=TOO_SMALL_CONFIG,
        crash="sysrq",
        dump_disk_mib=TOO_SMALL_MIB,
        timeout=900,
    )
    # final_action would have powered the guest off: it came back, so failure_action ran
    assert result.ok, _explain(result)
    _check_back_after_capture(result)
    dumps = _new_dumps(result)
    assert len(dumps) == 1, dumps
    ((name, files),) = dumps.items()
    assert files == ["report.json", "vmcore-dmesg.txt", "vmcore-incomplete"], files
    d, status = _check_incomplete_dump(result, name)
    report = json.loads((d / "report.json").read_text())
    assert report["capture"]["status"] == "incomplete", report["capture"]
    assert SYSRQ_PANIC in json.dumps(report)  # the triage read the crashed kernel itself
    lines = _capture_lines(result)
    assert any(x.startswith("kernel log saved: vmcore-dmesg.txt") for x in lines), lines
    assert any(
        x.startswith("the dump may not fit: filtering harder (level 31, zlib") for x in lines
    )
    assert any(x.startswith("the dump did not fit:") for x in lines), lines
    assert "failure_action: reboot" in lines, lines
    assert not any(x.startswith("final_action") for x in lines), lines
    # the disk is full up to the limit (min_free 0): the dump used what there was
    assert d.joinpath("vmcore-incomplete").stat().st_size > (TOO_SMALL_MIB - 8) << 20
    assert status["target"]["free"] < 4 << 20, status["target"]


# --- a missing target device, and a capture killed midway ------------------------------------


def _check_missing_device_lines(lines: list[str]) -> None:
    named = [x for x in lines if MISSING_DEVICE in x and "no such device" in x]
    assert named, lines
    assert "dump_to_rootfs: saving to /var/crash instead" in lines, lines


@vm
def test_missing_device_killed(rootfs_factory: RootfsFactory, tmp_path: Path) -> None:
    """raw = /dev/vdz does not exist: one clear line naming it, no wait, dump_to_rootfs starts
    the dump in /var/crash; killed there with SIGKILL, the unit's FailureAction= reboots; the
    next boot reports an incomplete dump; the log and an earlier dump are still there."""
    image = rootfs_factory("6.1")
    result = boot_cycle(
        image,
        tmp_path,
        config=MISSING_DEVICE_CONFIG.replace("[retention]", '[dump]\ncodec = "none"\n[retention]'),
        crash="sysrq",
        kill_capture_kib=KILL_AFTER_KIB,
        dump_seed=_seed(tmp_path),
        timeout=900,
    )
    assert result.ok, _explain(result)
    _check_back_after_capture(result)
    lines = _capture_lines(result)
    _check_missing_device_lines(lines)
    assert not any(x.startswith(("failure_action", "final_action")) for x in lines), lines
    dumps = _new_dumps(result)
    assert len(dumps) == 1, dumps
    ((name, files),) = dumps.items()
    assert files == ["vmcore-dmesg.txt", "vmcore-incomplete"], files
    _, status = _check_incomplete_dump(result, name)
    _check_earlier_dump_kept(result)
    assert status["target"] == {**status["target"], "kind": "raw", "exists": False}
    assert any(MISSING_DEVICE in p["what"] for p in status["problems"]), status["problems"]


@vm
@pytest.mark.skipif(not FULL, reason="KDUMPER_VM_FULL=1: the default set kills this capture")
def test_missing_device_dump_to_rootfs(rootfs_factory: RootfsFactory, tmp_path: Path) -> None:
    """raw = /dev/vdz does not exist: dump_to_rootfs saves a complete dump in /var/crash, then
    final_action reboots; status reports the missing device and the complete dump."""
    image = rootfs_factory("6.1")
    result = boot_cycle(image, tmp_path, config=MISSING_DEVICE_CONFIG, crash="sysrq", timeout=900)
    assert result.ok, _explain(result)
    _check_back_after_capture(result)
    lines = _capture_lines(result)
    _check_missing_device_lines(lines)
    assert "dump_to_rootfs complete" in lines and "failure_action: reboot" in lines, lines
    dumps = _new_dumps(result)
    assert len(dumps) == 1, dumps
    ((name, files),) = dumps.items()
    assert files == ["report.json", "vmcore", "vmcore-dmesg.txt"], files
    assert result.dump_dir is not None
    dmesg = test_rootfs._kdumper("dmesg", str(result.dump_dir / name / "vmcore"))
    assert dmesg.returncode == 0 and SYSRQ_PANIC in dmesg.stdout, dmesg.stderr
    status = _status_of_boot(result, 2)
    assert status["last_dump"]["path"] == f"/var/crash/{name}", status["last_dump"]
    assert status["last_dump"]["incomplete"] is False
    assert any(MISSING_DEVICE in p["what"] for p in status["problems"]), status["problems"]


@vm
@pytest.mark.skipif(not FULL, reason="KDUMPER_VM_FULL=1 (the default set kills dump_to_rootfs)")
def test_capture_killed(rootfs_factory: RootfsFactory, tmp_path: Path) -> None:
    """A local capture killed with SIGKILL midway: FailureAction= reboots, the next boot reports
    an incomplete dump, the log and an earlier dump stay."""
    image = rootfs_factory("6.1")
    result = boot_cycle(
        image,
        tmp_path,
        config=KILLED_CONFIG,
        crash="sysrq",
        kill_capture_kib=KILL_AFTER_KIB,
        dump_seed=_seed(tmp_path),
        timeout=900,
    )
    assert result.ok, _explain(result)
    _check_back_after_capture(result)
    dumps = _new_dumps(result)
    assert len(dumps) == 1, dumps
    ((name, files),) = dumps.items()
    assert files == ["vmcore-dmesg.txt", "vmcore-incomplete"], files
    _check_incomplete_dump(result, name)
    _check_earlier_dump_kept(result)
