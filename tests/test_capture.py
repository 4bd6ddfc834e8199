"""``kdumper capture`` on a synthetic vmcore standing for /proc/vmcore: the kernel log first, the
dump, report.json, the test id, retention, hooks, the free-space guard (a tiny tmpfs), actions
(recorded by an injected runner), a capture killed midway, and the ssh target."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import kdumper
from kdumper.collect import capture as capmod
from kdumper.collect.capture import (
    CaptureEnv,
    CaptureResult,
    NotInCaptureKernelError,
    capture,
    cmdline_test_id,
    estimate_size,
    file_size_limit,
    system_action,
)
from kdumper.collect.retention import create_dump_dir, list_dump_dirs, prune
from kdumper.config import (
    Config,
    DumpConfig,
    HooksConfig,
    RetentionConfig,
    SpaceLimit,
    TargetConfig,
)
from kdumper.dump.io import FileSink
from kdumper.errors import DumpIOError, KernelError, NoSpaceError, PageIncompleteError
from kdumper.host.service import TEST_ID_FILE, find_test_dump
from kdumper.triage.report import triage_json
from tests.synth import make_vmcore

NAME = "synth-host-" + time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(1_718_000_000))


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MiB synthetic x86_64 vmcore (about 5800 pages kept at level 31, 7.5 MiB zlib)."""
    path = tmp_path_factory.mktemp("vmcore") / "vmcore.elf"
    make_vmcore(path, mem_mib=64, seed=11, nodename="synth-host")
    return path


@pytest.fixture(scope="module")
def dmesg_text(vmcore: Path) -> bytes:
    """What ``kdumper dmesg`` prints for the vmcore."""
    proc = subprocess.run(
        [sys.executable, "-m", "kdumper", "dmesg", str(vmcore)], capture_output=True, check=True
    )
    return proc.stdout


def config(path: Path, **changes: Any) -> Config:
    """The default configuration with ``path`` as the target and no min_free."""
    cfg = Config(
        target=TargetConfig(path=str(path)), retention=RetentionConfig(min_free=SpaceLimit(0))
    )
    return replace(cfg, **changes)


class Recorder:
    """Stands in for the reboot: records the actions and the progress lines."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.lines: list[str] = []

    def action(self, name: str) -> None:
        self.actions.append(name)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def index(self, text: str) -> int:
        return next(i for i, line in enumerate(self.lines) if text in line)


def env_for(
    vmcore: Path, tmp_path: Path, rec: Recorder, cmdline: str = "", **kw: Any
) -> CaptureEnv:
    cmd = tmp_path / "cmdline"
    cmd.write_text(cmdline + "\n")
    values: dict[str, Any] = {
        "vmcore": str(vmcore),
        "cmdline": str(cmd),
        "rootfs_dir": str(tmp_path / "rootfs"),
        "run_action": rec.action,
        "say": rec.say,
        "triage": triage_json,
    }
    values.update(kw)
    return CaptureEnv(**values)


def only_dir(base: Path) -> Path:
    dirs = [p for p in base.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def assert_same_pages(source: Path, saved: Path, *, limit: int | None = None) -> int:
    """Every page the saved dump holds equals the source's; returns how many were compared."""
    with kdumper.open(str(source)) as a, kdumper.open(str(saved)) as b:
        pfns = b.dumped.pfns()
        if limit is not None:
            pfns = pfns[:limit]
        compared = 0
        for pfn in pfns.tolist():
            try:
                page = b.read_pfn(pfn)
            except PageIncompleteError:
                continue
            assert page == a.read_pfn(pfn), f"pfn {pfn:#x} differs"
            compared += 1
        return compared


# ---- the whole capture, local directory -------------------------------------------------------


def test_local_capture_complete(vmcore: Path, dmesg_text: bytes, tmp_path: Path) -> None:
    rec = Recorder()
    res = capture(config(tmp_path / "crash"), env_for(vmcore, tmp_path, rec))
    assert res.status == "complete" and res.exit_code == 0
    d = only_dir(tmp_path / "crash")
    assert d.name == NAME
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == ["report.json", "vmcore", "vmcore-dmesg.txt"]
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    # the kernel log first, equal to `kdumper dmesg`
    assert (d / "vmcore-dmesg.txt").read_bytes() == dmesg_text
    assert rec.index("kernel log saved") < rec.index("saving the dump")
    # the dump: kdump-compressed, complete, the same pages
    with kdumper.open(str(d / "vmcore")) as saved:
        facts = saved.facts()
        assert saved.format == "kdump" and not facts.incomplete and facts.dump_level == 31
    assert assert_same_pages(vmcore, d / "vmcore") > 4000
    report = json.loads((d / "report.json").read_text())
    assert report["schema"].startswith("kdumper-report")
    assert report["capture"]["status"] == "complete"
    assert report["capture"]["save"]["pages"]["kept"] > 0
    assert rec.actions == ["reboot"] and res.action_taken
    assert res.target is not None and res.target.dump_file == str(d / "vmcore")


def test_dmesg_is_kept_when_the_dump_fails(
    vmcore: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise DumpIOError("write failed: I/O error", path="vmcore-incomplete")

    monkeypatch.setattr("kdumper.collect.pipeline.save", broken)
    rec = Recorder()
    cfg = config(tmp_path / "crash", failure_action="halt")
    res = capture(cfg, env_for(vmcore, tmp_path, rec))
    assert res.status == "failed" and res.exit_code == 6
    d = only_dir(tmp_path / "crash")
    assert (d / "vmcore-dmesg.txt").stat().st_size > 0
    assert (d / "report.json").exists()  # the triage stands on its own
    assert not (d / TEST_ID_FILE).exists()
    assert rec.actions == ["halt"]


def test_interrupted_capture_takes_no_action(
    vmcore: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_a: Any, **_k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("kdumper.collect.pipeline.save", interrupted)
    rec = Recorder()
    with pytest.raises(KeyboardInterrupt):
        capture(config(tmp_path / "crash"), env_for(vmcore, tmp_path, rec))
    assert rec.actions == []
    assert (only_dir(tmp_path / "crash") / "vmcore-dmesg.txt").exists()


def test_report_failure_keeps_the_dump(
    vmcore: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("report bug")

    monkeypatch.setattr("kdumper.triage.report.build_report", broken)
    rec = Recorder()
    res = capture(config(tmp_path / "crash"), env_for(vmcore, tmp_path, rec))
    assert res.status == "complete"
    d = only_dir(tmp_path / "crash")
    assert (d / "vmcore").exists() and not (d / "report.json").exists()
    assert any("triage report could not be saved" in w for w in res.warnings)
    assert rec.actions == ["reboot"]


def test_test_id_handshake(vmcore: Path, tmp_path: Path) -> None:
    rec = Recorder()
    cmdline = "BOOT_IMAGE=/vmlinuz root=/dev/vda1 kdumper.test_id=1718000000-abcd1234 nr_cpus=1"
    res = capture(config(tmp_path / "crash"), env_for(vmcore, tmp_path, rec, cmdline))
    assert res.test_id == "1718000000-abcd1234"
    d = only_dir(tmp_path / "crash")
    assert (d / TEST_ID_FILE).read_text().strip() == "1718000000-abcd1234"
    assert find_test_dump(str(tmp_path / "crash"), "1718000000-abcd1234") == str(d)


def test_test_id_from_the_command_line() -> None:
    assert cmdline_test_id("ro quiet") is None
    assert cmdline_test_id("kdumper.test_id=1-a x kdumper.test_id=2-b") == "2-b"
    assert cmdline_test_id('a="b c" kdumper.test_id="9-z"') == "9-z"


def test_hooks_run_with_their_environment(vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    out.mkdir()
    pre = ("/bin/sh", "-c", f"env | grep ^KDUMPER_ | sort > {out}/pre")
    post = ("/bin/sh", "-c", f"env | grep ^KDUMPER_ | sort > {out}/post")
    failing = ("/bin/false",)
    hooks = HooksConfig(pre=(pre, failing, ("/nonexistent/hook",)), post=(post,))
    rec = Recorder()
    res = capture(config(tmp_path / "crash", hooks=hooks), env_for(vmcore, tmp_path, rec))
    assert res.status == "complete"
    d = only_dir(tmp_path / "crash")
    pre_env = dict(line.split("=", 1) for line in (out / "pre").read_text().splitlines())
    post_env = dict(line.split("=", 1) for line in (out / "post").read_text().splitlines())
    assert pre_env["KDUMPER_STAGE"] == "pre"
    assert pre_env["KDUMPER_DUMP_NAME"] == NAME
    assert pre_env["KDUMPER_TARGET"] == "local"
    assert pre_env["KDUMPER_TARGET_PATH"] == str(tmp_path / "crash")
    assert pre_env["KDUMPER_VMCORE"] == str(vmcore)
    assert post_env["KDUMPER_STAGE"] == "post"
    assert post_env["KDUMPER_STATUS"] == "complete"
    assert post_env["KDUMPER_DUMP_DIR"] == str(d)
    assert post_env["KDUMPER_DUMP_FILE"] == str(d / "vmcore")
    # the pre hook ran before the directory existed; failing hooks are reported, not fatal
    assert rec.index("pre hook") < rec.index("dump directory")
    assert len(res.warnings) == 2
    assert "exit status 1" in res.warnings[0] and "not found" in res.warnings[1]


# ---- retention ---------------------------------------------------------------------------------


def test_retention_keeps_the_newest(vmcore: Path, tmp_path: Path) -> None:
    base = tmp_path / "crash"
    for name in (
        "old-2020-01-01-00-00-00",
        "old-2021-06-01-12-00-00",
        "other-2022-01-01-00-00-00.1",
        "zzz-2019-01-01-00-00-00",
    ):
        (base / name).mkdir(parents=True)
        (base / name / "vmcore").write_bytes(b"x")
    (base / "lost+found").mkdir()
    (base / "notes-2018").mkdir()
    (base / "2010-01-01-00-00-00").mkdir()  # not kdumper's name: no host part
    rec = Recorder()
    cfg = config(base, retention=RetentionConfig(keep=3, min_free=SpaceLimit(0)))
    res = capture(cfg, env_for(vmcore, tmp_path, rec))
    assert res.status == "complete"
    left = sorted(p.name for p in base.iterdir())
    assert left == sorted(
        [
            "2010-01-01-00-00-00",
            "lost+found",
            "notes-2018",
            NAME,  # the new one (2024) is kept
            "old-2021-06-01-12-00-00",
            "other-2022-01-01-00-00-00.1",
        ]
    )


def test_prune_never_deletes_the_protected_one(tmp_path: Path) -> None:
    for name in ("a-2020-01-01-00-00-00", "b-2021-01-01-00-00-00", "c-2022-01-01-00-00-00"):
        (tmp_path / name).mkdir()
    # the protected directory is the OLDEST by name (a clock that went back): still kept
    deleted = prune(str(tmp_path), 1, protect=str(tmp_path / "a-2020-01-01-00-00-00"))
    assert sorted(Path(p).name for p in deleted) == [
        "b-2021-01-01-00-00-00",
        "c-2022-01-01-00-00-00",
    ]
    assert [e.name for e in list_dump_dirs(str(tmp_path))] == ["a-2020-01-01-00-00-00"]
    assert prune(str(tmp_path), 0) == []


def test_dump_dir_names_do_not_collide(tmp_path: Path) -> None:
    a = create_dump_dir(str(tmp_path / "new"), "h-2024-01-01-00-00-00")
    b = create_dump_dir(str(tmp_path / "new"), "h-2024-01-01-00-00-00")
    assert Path(b).name == "h-2024-01-01-00-00-00.1" and a != b
    assert [e.seq for e in list_dump_dirs(str(tmp_path / "new"))] == [0, 1]


# ---- free space --------------------------------------------------------------------------------


def test_file_size_limit_turns_into_no_space(tmp_path: Path) -> None:
    import resource

    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    sink = FileSink(str(tmp_path / "f"))
    with file_size_limit(10000) as active:
        assert active
        sink.write_at(0, b"a" * 9000)
        with pytest.raises(NoSpaceError):
            sink.write_at(9000, b"b" * 2000)
        sink.write_at(0, b"c" * 100)  # rewriting inside the limit still works
    sink.abort()
    assert resource.getrlimit(resource.RLIMIT_FSIZE) == before
    assert (tmp_path / "f-incomplete").stat().st_size == 10000


def fake_statvfs(free: int, size: int = 1 << 40) -> Any:
    def statvfs(_path: str) -> os.statvfs_result:
        return os.statvfs_result(
            (4096, 4096, size // 4096, free // 4096, free // 4096, 0, 0, 0, 0, 255)
        )

    return statvfs


def test_space_guard_filters_harder(vmcore: Path, tmp_path: Path) -> None:
    with kdumper.open(str(vmcore)) as dump:
        loose = estimate_size(dump, 0, "none", "kdump")
        tight = estimate_size(dump, 31, "zlib", "kdump")
    assert tight.bytes < loose.bytes / 2
    room = tight.bytes + (4 << 20)
    rec = Recorder()
    cfg = config(tmp_path / "crash", dump=DumpConfig(level=0, codec="none"))
    env = env_for(vmcore, tmp_path, rec, statvfs=fake_statvfs(room + capmod.SMALL_FILES_RESERVE))
    res = capture(cfg, env)
    assert res.status == "complete"
    assert any("filtering harder" in line for line in rec.lines)
    with kdumper.open(str(only_dir(tmp_path / "crash") / "vmcore")) as saved:
        facts = saved.facts()
        assert facts.dump_level == 31 and facts.compression == "zlib"


def test_space_guard_leaves_a_big_disk_alone(vmcore: Path, tmp_path: Path) -> None:
    rec = Recorder()
    cfg = config(tmp_path / "crash", dump=DumpConfig(level=1, codec="lzo"))
    res = capture(cfg, env_for(vmcore, tmp_path, rec, statvfs=fake_statvfs(1 << 40)))
    assert res.status == "complete"
    assert not any("estimated" in line for line in rec.lines)
    with kdumper.open(str(only_dir(tmp_path / "crash") / "vmcore")) as saved:
        assert saved.facts().dump_level == 1 and saved.facts().compression == "lzo"


def test_space_guard_makes_room_by_deleting_old_dumps(vmcore: Path, tmp_path: Path) -> None:
    base = tmp_path / "crash"
    old = base / "old-2020-01-01-00-00-00"
    old.mkdir(parents=True)
    frees = iter([1 << 20, 1 << 40])  # full until the old dump goes

    def statvfs(_path: str) -> os.statvfs_result:
        free = next(frees, 1 << 40)
        return os.statvfs_result((4096, 4096, 1 << 30, free // 4096, free // 4096, 0, 0, 0, 0, 255))

    rec = Recorder()
    cfg = config(base, retention=RetentionConfig(keep=2, min_free=SpaceLimit(0)))
    # keep = 2: the new dump and one old one may stay, so nothing is deleted up front ...
    res = capture(cfg, env_for(vmcore, tmp_path, rec, statvfs=statvfs))
    assert old.exists() and res.status == "failed"  # 1 MiB minus the reserve: no room at all
    frees = iter([3 << 20, 1 << 40])
    cfg = config(base, retention=RetentionConfig(keep=1, min_free=SpaceLimit(0)))
    rec = Recorder()
    res = capture(cfg, env_for(vmcore, tmp_path, rec, statvfs=statvfs))
    assert res.status == "complete"
    assert not old.exists()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "kdumper-test", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)


def test_target_too_small(vmcore: Path, tmp_path: Path, tiny_tmpfs: Path) -> None:
    rec = Recorder()
    cfg = config(
        tiny_tmpfs,
        failure_action="poweroff",
        retention=RetentionConfig(min_free=SpaceLimit(256 << 10)),
    )
    res = capture(cfg, env_for(vmcore, tmp_path, rec))
    assert res.status == "incomplete" and res.exit_code == 10
    assert res.target is not None and res.target.target_failed
    d = only_dir(tiny_tmpfs)
    names = sorted(p.name for p in d.iterdir())
    assert "vmcore-dmesg.txt" in names and "vmcore-incomplete" in names and "vmcore" not in names
    # the limit held: min_free is still free
    st = os.statvfs(tiny_tmpfs)
    assert st.f_bavail * st.f_frsize >= 256 << 10
    with kdumper.open(str(d / "vmcore-incomplete")) as cut:
        assert cut.facts().incomplete
    assert assert_same_pages(vmcore, d / "vmcore-incomplete") > 100
    assert rec.actions == ["poweroff"]
    assert any("reached its limit" in line for line in rec.lines)


# ---- failures, actions -------------------------------------------------------------------------


def test_not_a_capture_kernel(tmp_path: Path) -> None:
    rec = Recorder()
    env = env_for(tmp_path / "no-vmcore", tmp_path, rec)
    with pytest.raises(NotInCaptureKernelError, match="not a capture kernel"):
        capture(config(tmp_path / "crash"), env)
    assert rec.actions == []


def test_unreadable_vmcore_takes_the_failure_action(tmp_path: Path) -> None:
    bad = tmp_path / "vmcore"
    bad.write_bytes(b"garbage" * 1000)
    rec = Recorder()
    res = capture(config(tmp_path / "crash", failure_action="halt"), env_for(bad, tmp_path, rec))
    assert res.status == "failed" and res.exit_code == 4
    assert rec.actions == ["halt"]


def test_missing_raw_device_dumps_to_rootfs(vmcore: Path, tmp_path: Path) -> None:
    rec = Recorder()
    target = TargetConfig(path=str(tmp_path / "crash"), raw=str(tmp_path / "no-such-device"))
    cfg = config(
        tmp_path / "crash", target=target, failure_action="dump_to_rootfs", final_action="poweroff"
    )
    res = capture(cfg, env_for(vmcore, tmp_path, rec))
    assert res.status == "failed" and res.exit_code == 5
    assert any("no such device" in line for line in rec.lines)
    assert res.rootfs is not None and res.rootfs.status == "complete"
    d = only_dir(tmp_path / "rootfs")
    assert (d / "vmcore").exists() and (d / "vmcore-dmesg.txt").exists()
    assert rec.actions == ["poweroff"]  # dump_to_rootfs, then final_action


def test_no_action(vmcore: Path, tmp_path: Path) -> None:
    rec = Recorder()
    res = capture(config(tmp_path / "crash"), env_for(vmcore, tmp_path, rec, act=False))
    assert rec.actions == [] and res.action == "reboot" and not res.action_taken
    assert any("skipped (--no-action)" in line for line in rec.lines)


def test_failing_action_is_reported(vmcore: Path, tmp_path: Path) -> None:
    def broken(_action: str) -> None:
        raise KernelError("systemctl --force reboot failed (exit status 1)")

    rec = Recorder()
    res = capture(config(tmp_path / "crash"), env_for(vmcore, tmp_path, rec, run_action=broken))
    assert res.action_error and "exit status 1" in res.action_error


def test_system_action_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Done:
        returncode = 0

    def run(argv: list[str], **_k: Any) -> Done:
        calls.append(argv)
        return Done()

    monkeypatch.setattr(capmod.subprocess, "run", run)
    monkeypatch.setattr(capmod.os, "sync", lambda: None)
    with pytest.raises(KernelError, match="not a capture kernel"):
        system_action("reboot")  # no /proc/vmcore here: refused
    assert calls == []
    monkeypatch.setattr(capmod, "PROC_VMCORE", "/")
    monkeypatch.setattr(capmod.os.path, "isdir", lambda p: p == "/run/systemd/system")
    for action in ("reboot", "halt", "poweroff", "shell"):
        system_action(action)
    assert calls == [
        ["systemctl", "--force", "reboot"],
        ["systemctl", "--force", "halt"],
        ["systemctl", "--force", "poweroff"],
        ["systemctl", "--no-block", "start", "emergency.target"],
    ]
    calls.clear()
    monkeypatch.setattr(capmod.os.path, "isdir", lambda p: False)
    system_action("reboot")
    system_action("shell")  # without systemd: nothing to start
    assert calls == [["reboot", "-f"]]


# ---- the command -------------------------------------------------------------------------------


def kdumper_cmd(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdumper", *args], capture_output=True, text=True, check=False, **kw
    )


def test_cli_capture(vmcore: Path, tmp_path: Path) -> None:
    conf = tmp_path / "kdumper.toml"
    conf.write_text(f'failure_action = "halt"\n[target]\npath = "{tmp_path / "crash"}"\n')
    proc = kdumper_cmd(
        "capture", "--vmcore", str(vmcore), "--config", str(conf), "--no-action", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "complete" and out["action"] == "reboot" and not out["action_taken"]
    lines = proc.stderr.splitlines()
    assert all(line.startswith("kdumper: ") for line in lines)
    assert "Traceback" not in proc.stderr
    assert (Path(out["target"]["location"]) / "vmcore").exists()
    # the CLI hands the triage to the capture: report.json has the analysis, not only the summary
    report = json.loads((Path(out["target"]["location"]) / "report.json").read_text())
    assert report["schema"].startswith("kdumper-report") and report["kernel"]
    assert report["capture"]["status"] == "complete"


def test_cli_never_reboots_outside_a_capture_kernel(vmcore: Path, tmp_path: Path) -> None:
    if os.path.exists("/proc/vmcore"):
        pytest.skip("this IS a capture kernel")
    conf = tmp_path / "kdumper.toml"
    conf.write_text(f'[target]\npath = "{tmp_path / "crash"}"\n')
    proc = kdumper_cmd("capture", "--vmcore", str(vmcore), "--config", str(conf))
    assert proc.returncode == 0, proc.stderr  # the result of the capture: complete
    assert "final_action reboot failed: not a capture kernel" in proc.stderr


def test_cli_not_a_capture_kernel(tmp_path: Path) -> None:
    proc = kdumper_cmd("capture", "--vmcore", str(tmp_path / "nope"), "--no-action")
    assert proc.returncode == 5
    assert proc.stderr.strip().splitlines() == [
        f"kdumper: error: {tmp_path / 'nope'} does not exist: this is not a capture kernel, "
        "nothing was done"
    ]


def test_capture_imports_only_stdlib_numpy_and_codecs(vmcore: Path, tmp_path: Path) -> None:
    """The capture kernel has little memory: nothing beyond the standard library, numpy and the
    codec libraries may be imported on the capture path."""
    conf = tmp_path / "kdumper.toml"
    conf.write_text(f'[target]\npath = "{tmp_path / "crash"}"\n')
    code = (
        "import sys\n"
        "from kdumper.cli.main import main\n"
        f"rc = main(['capture', '--vmcore', {str(vmcore)!r}, '--config', {str(conf)!r}, "
        "'--no-action'])\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    top = set(proc.stdout.split())
    stdlib = set(sys.stdlib_module_names) | {"__main__", "_distutils_hack", "sitecustomize"}
    allowed = {"kdumper", "numpy", "zstandard", "lzallright", "cramjam", "certifi"}
    assert top - stdlib - allowed == set(), sorted(top - stdlib - allowed)


def test_killed_midway_leaves_an_incomplete_dump(tmp_path: Path) -> None:
    """SIGKILL after the log is saved and the dump started: the directory holds the log and
    ``vmcore-incomplete``, and ``kdumper status`` at the next boot reports an incomplete dump."""
    from kdumper.host.status import collect_status
    from tests.fakehost import make_host

    big = tmp_path / "big.elf"
    make_vmcore(big, mem_mib=160, populated_mib=160, seed=3)
    base = tmp_path / "crash"
    conf = tmp_path / "kdumper.toml"
    conf.write_text(
        f'[target]\npath = "{base}"\n[dump]\nlevel = 0\ncodec = "zlib"\nthreads = 1\n'
        '[retention]\nmin_free = "0"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdumper", "capture", "--vmcore", str(big), "--config", str(conf),
         "--no-action"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            cut = list(base.glob("*/vmcore-incomplete"))
            if cut and cut[0].stat().st_size > 1 << 20:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
    if not killed:
        pytest.skip("the capture finished before it could be killed (machine too fast)")
    assert proc.returncode == -signal.SIGKILL
    d = only_dir(base)
    names = sorted(p.name for p in d.iterdir())
    assert names == ["vmcore-dmesg.txt", "vmcore-incomplete"], names
    assert (d / "vmcore-dmesg.txt").stat().st_size > 0
    # the next boot
    host = make_host(tmp_path / "host", "loaded", initrd=False)
    cfg = Config(target=TargetConfig(path=str(base)))
    st = collect_status(cfg, host)
    assert st.last_dump is not None and st.last_dump.incomplete
    assert st.last_dump.path == str(d)


# ---- ssh ---------------------------------------------------------------------------------------


@pytest.fixture
def sshd() -> Iterator[Any]:
    from tests.sshd import sshd_server

    with sshd_server() as server:
        yield server


def test_ssh_target(vmcore: Path, dmesg_text: bytes, tmp_path: Path, sshd: Any) -> None:
    from kdumper.dump.flattened import reassemble_flat

    target = sshd.target(tmp_path / "client")
    cfg = config(
        tmp_path / "unused", target=TargetConfig(path=str(tmp_path / "unused"), ssh=target)
    )
    rec = Recorder()
    res = capture(cfg, env_for(vmcore, tmp_path, rec, "kdumper.test_id=77-ssh"))
    assert res.status == "complete", res.target
    remote = sshd.remote / NAME
    names = sorted(p.name for p in remote.iterdir())
    assert names == [
        "report.json",
        TEST_ID_FILE,
        "vmcore-dmesg.txt",
        "vmcore.flat",
        f"vmcore.flat.{target.checksum}",
    ]
    assert (remote / "vmcore-dmesg.txt").read_bytes() == dmesg_text
    assert (remote / TEST_ID_FILE).read_text().strip() == "77-ssh"
    assert json.loads((remote / "report.json").read_text())["capture"]["status"] == "complete"
    out = tmp_path / "vmcore"
    reassemble_flat(str(remote / "vmcore.flat"), str(out))
    assert assert_same_pages(vmcore, out, limit=2000) > 1000
    assert rec.actions == ["reboot"]
    assert not (tmp_path / "unused").exists()


def test_ssh_unreachable_dumps_to_rootfs(vmcore: Path, tmp_path: Path, sshd: Any) -> None:
    target = sshd.target(tmp_path / "client", retries=0)
    sshd.stop()
    cfg = config(
        tmp_path / "unused",
        target=TargetConfig(path=str(tmp_path / "unused"), ssh=target),
        failure_action="dump_to_rootfs",
    )
    rec = Recorder()
    res: CaptureResult = capture(cfg, env_for(vmcore, tmp_path, rec))
    assert res.status == "failed" and res.rootfs is not None and res.rootfs.status == "complete"
    assert (only_dir(tmp_path / "rootfs") / "vmcore").exists()
    assert rec.actions == ["reboot"]
