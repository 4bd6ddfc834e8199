"""`kdumper status` in each state of a fake machine, and the `kdumper test` result check."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

from kdumper.cli.main import main
from kdumper.config import Config, LoadConfig, RetentionConfig, SpaceLimit, TargetConfig
from kdumper.errors import ExitCode
from kdumper.host.service import TEST_ID_FILE, Host, check_test
from kdumper.host.status import HostStatus, collect_status, last_dump, pending_crashkernel
from tests.fakehost import make_host

MiB, GiB = 1 << 20, 1 << 30


class FakeVfs:
    def __init__(self, free: int, size: int = 100 * GiB) -> None:
        self.free, self.size = free, size

    def __call__(self, path: str) -> os.statvfs_result:
        bs = 4096
        return os.statvfs_result(
            (bs, bs, self.size // bs, self.free // bs, self.free // bs, 1000, 500, 500, 0, 255)
        )


def status(
    host: Host,
    target: Path,
    *,
    free: int = 10 * GiB,
    cfg: Config | None = None,
    error: str | None = None,
) -> HostStatus:
    if cfg is None and error is None:
        cfg = Config(target=TargetConfig(path=str(target)))
    return collect_status(cfg, host, config_error=error, statvfs=FakeVfs(free))


def whats(st: HostStatus) -> list[str]:
    return [p.what for p in st.problems]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    d = tmp_path / "crash"
    d.mkdir()
    return d


def test_loaded_is_operational(tmp_path: Path, target: Path) -> None:
    st = status(make_host(tmp_path / "r", "loaded"), target)
    assert st.operational, whats(st)
    assert st.problems == []
    assert st.reserved == 256 * MiB and st.expected == 256 * MiB and st.recommended == 256 * MiB
    assert st.cmdline_crashkernel == "crashkernel=256M"
    assert st.loaded is not None and st.loaded["kernel"].endswith("vmlinuz-6.1.0-18-cloud-amd64")
    assert st.plan is not None and st.plan.kernel and st.plan.initrd
    assert st.target is not None and st.target.exists and st.target.free == 10 * GiB
    assert st.state is not None and st.state.cpu_hotplug
    json.dumps(st.to_dict())


def test_no_crashkernel(tmp_path: Path, target: Path) -> None:
    st = status(make_host(tmp_path / "r", "none"), target)
    assert not st.operational
    assert whats(st) == [
        "no memory is reserved for a crash kernel (no crashkernel= on the kernel command line)"
    ]
    assert st.problems[0].fix == "kdumper crashkernel --set auto, then reboot"
    assert st.recommended == 256 * MiB


def test_crashkernel_that_reserved_nothing(tmp_path: Path, target: Path) -> None:
    host = make_host(tmp_path / "r", "none", cmdline="ro crashkernel=2G-:256M")  # 1 GiB machine
    st = status(host, target)
    assert (
        "crashkernel=2G-:256M is on the kernel command line but no memory was reserved"
        in whats(st)[0]
    )
    assert st.expected == 0


def test_pending_bootloader_change(tmp_path: Path, target: Path) -> None:
    host = make_host(
        tmp_path / "r", "none", grub='GRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=256M"\n'
    )
    st = status(host, target)
    assert st.pending_crashkernel == "crashkernel=256M"
    assert st.problems[0].fix.endswith(
        "the bootloader already has crashkernel=256M: reboot to use it"
    )
    assert pending_crashkernel('GRUB_CMDLINE_LINUX="crashkernel=256M"', "crashkernel=256M") is None
    assert pending_crashkernel(None, "") is None


def test_reserved_not_loaded(tmp_path: Path, target: Path) -> None:
    st = status(make_host(tmp_path / "r", "reserved"), target)
    assert not st.operational
    assert whats(st) == ["the capture kernel is not loaded"]
    assert "systemctl enable --now kdumper.service" in st.problems[0].fix


def test_lockdown(tmp_path: Path, target: Path) -> None:
    st = status(make_host(tmp_path / "r", "lockdown"), target)
    assert not st.operational
    assert st.state is not None and st.state.lockdown == "integrity"
    assert "locked down (integrity): it loads only signed kernels" in whats(st)[0]


def test_no_kdump_in_kernel(tmp_path: Path, target: Path) -> None:
    st = status(make_host(tmp_path / "r", "nokdump"), target)
    assert not st.operational
    assert "this kernel cannot kdump" in whats(st)[0]


def test_target_missing(tmp_path: Path) -> None:
    st = status(make_host(tmp_path / "r", "loaded"), tmp_path / "nope")
    assert not st.operational
    assert whats(st) == [
        f"the target directory {tmp_path / 'nope'} does not exist, so a dump would not be saved"
    ]
    assert st.target is not None and st.target.exists is False


def test_target_full(tmp_path: Path, target: Path) -> None:
    cfg = Config(
        target=TargetConfig(path=str(target)),
        retention=RetentionConfig(min_free=SpaceLimit(percent=10)),
    )
    st = collect_status(
        cfg, make_host(tmp_path / "r", "loaded"), statvfs=FakeVfs(5 * GiB, 100 * GiB)
    )
    assert not st.operational
    assert "has 5120 MiB free, not more than [retention] min_free (10%)" in whats(st)[0]


def test_raw_and_ssh_targets(tmp_path: Path) -> None:
    host = make_host(tmp_path / "r", "loaded")
    st = collect_status(Config(target=TargetConfig(raw=str(tmp_path / "vdb"))), host)
    assert f"the raw target {tmp_path / 'vdb'} does not exist" in whats(st)
    (tmp_path / "vdb").write_bytes(b"")
    st = collect_status(Config(target=TargetConfig(raw=str(tmp_path / "vdb"))), host)
    assert "is not a block device" in whats(st)[0]
    from kdumper.collect.targets.ssh import SshTarget

    ssh = SshTarget.from_spec("kdump@backup:2222", identity=str(tmp_path / "id"))
    st = collect_status(Config(target=TargetConfig(ssh=ssh)), host)
    assert st.target is not None and st.target.exists is None
    assert st.target.location == "kdump@backup:2222:/var/crash"
    assert f"the ssh identity file {tmp_path / 'id'} does not exist" in whats(st)
    (tmp_path / "id").write_text("key")
    assert collect_status(Config(target=TargetConfig(ssh=ssh)), host).operational


def test_ssh_target_probed_over_the_network(tmp_path: Path) -> None:
    """A real sshd on loopback: reachable -> no problem; down -> a warning, still operational."""
    from kdumper.collect.targets.ssh import check_target
    from tests.sshd import sshd_server

    host = make_host(tmp_path / "r", "loaded")
    with sshd_server() as server:
        target = server.target(tmp_path / "client")
        cfg = Config(target=TargetConfig(ssh=target))
        st = collect_status(cfg, host, probe_ssh=check_target)
        assert st.operational, whats(st)
        assert st.target is not None and st.target.exists is True
        assert not any("ssh target" in w for w in whats(st))
        server.stop()
        st = collect_status(cfg, host, probe_ssh=check_target)
        warning = [p for p in st.problems if "cannot take a dump now" in p.what]
        assert warning and not warning[0].blocking
        assert st.operational and st.target is not None and st.target.exists is False


def test_config_error_is_reported(tmp_path: Path) -> None:
    st = status(
        make_host(tmp_path / "r", "loaded"),
        tmp_path,
        error="k.toml:2: dump.level: 40 is out of range 0..31",
    )
    assert not st.operational
    assert whats(st) == [
        "the configuration does not load: k.toml:2: dump.level: 40 is out of range 0..31"
    ]


def test_small_reservation_is_a_warning(tmp_path: Path, target: Path) -> None:
    st = status(make_host(tmp_path / "r", "loaded", crash_size=128 * MiB), target)
    assert st.operational
    assert (
        st.problems[0].blocking is False and "below the 256 MiB recommended" in st.problems[0].what
    )


def test_missing_kernel_files(tmp_path: Path, target: Path) -> None:
    st = status(make_host(tmp_path / "r", "reserved", kernel=False), target)
    assert "no kernel image found for 6.1.0-18-cloud-amd64 (set [load] kernel)" in whats(st)
    # loaded already: only a warning (the next reload would fail)
    st = status(make_host(tmp_path / "l", "loaded", initrd=False), target)
    assert st.operational and not st.problems[0].blocking
    st = status(
        make_host(tmp_path / "n", "loaded", initrd=False),
        target,
        cfg=Config(target=TargetConfig(path=str(target)), load=LoadConfig(initrd="")),
    )
    assert st.problems == []


def test_kernel_changed_after_load(tmp_path: Path, target: Path) -> None:
    host = make_host(tmp_path / "r", "loaded")
    record = Path(host.paths.state_dir) / "loaded.json"
    data = json.loads(record.read_text())
    data["loaded_at"] -= 100
    record.write_text(json.dumps(data))
    st = status(host, target)
    assert st.operational
    assert whats(st) == [f"{data['kernel']} changed or went away after it was loaded"]


def test_last_dump(tmp_path: Path, target: Path) -> None:
    old = target / "127.0.0.1-2024-01-01-10:00:00"
    new = target / "127.0.0.1-2024-02-01-10:00:00"
    for d, t in ((old, 1_700_000_000), (new, 1_700_100_000)):
        d.mkdir()
        (d / "vmcore-dmesg.txt").write_text("x")
        os.utime(d, (t, t))
    (new / "vmcore-incomplete").write_bytes(b"")
    os.utime(new, (1_700_100_000, 1_700_100_000))
    found = last_dump(str(target))
    assert found is not None and found.path == str(new) and found.incomplete
    assert last_dump(str(tmp_path / "none")) is None


# ---- the kdumper test result ------------------------------------------------------------------


def _record_test(host: Host, tid: str, boot: str) -> None:
    Path(host.paths.test_state_file).write_text(
        json.dumps({"id": tid, "status": "pending", "requested_at": 1, "boot_id": boot})
    )


def test_test_status(tmp_path: Path, target: Path) -> None:
    host = make_host(tmp_path / "r", "loaded")
    cfg = Config(target=TargetConfig(path=str(target)))
    assert check_test(cfg, host.paths) is None
    # same boot: the crash has not happened
    _record_test(host, "1-aa", "3f1c1c2e-0000-4000-8000-000000000001")
    got = check_test(cfg, host.paths)
    assert got is not None and got.result == "pending"
    # next boot, nothing saved
    _record_test(host, "1-aa", "another-boot")
    got = check_test(cfg, host.paths)
    assert got is not None and got.result == "failed" and "journalctl -b -1" in got.message
    st = status(host, target)
    assert st.operational and "the last `kdumper test` (1-aa) failed" in whats(st)[0]
    # the capture wrote the test id into the dump directory
    d = target / "127.0.0.1-2024-01-01-10:00:00"
    d.mkdir()
    (d / TEST_ID_FILE).write_text("1-aa\n")
    (d / "vmcore-incomplete").write_bytes(b"")
    got = check_test(cfg, host.paths)
    assert got is not None and got.result == "incomplete"
    (d / "vmcore-incomplete").rename(d / "vmcore")
    got = check_test(cfg, host.paths)
    assert got is not None and got.result == "passed" and got.dump_dir == str(d)
    assert status(host, target).problems == []


# ---- the command ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("loaded", ExitCode.OK),
        ("reserved", ExitCode.NOT_OPERATIONAL),
        ("none", ExitCode.NOT_OPERATIONAL),
        ("lockdown", ExitCode.NOT_OPERATIONAL),
        ("nokdump", ExitCode.NOT_OPERATIONAL),
    ],
)
def test_cli_exit_codes(
    tmp_path: Path,
    target: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    state: str,
    code: int,
) -> None:
    make_host(tmp_path / "r", state, release=platform.release())
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[target]\npath = "{target}"\n')
    monkeypatch.setenv("KDUMPER_HOST_ROOT", str(tmp_path / "r"))
    assert main(["status", "--config", str(cfg)]) == code
    out = capsys.readouterr().out
    assert out.startswith(
        "kdumper: this machine is " + ("protected" if code == 0 else "NOT protected")
    )
    assert main(["--config", str(cfg), "status", "--json"]) == code
    data = json.loads(capsys.readouterr().out)
    assert data["operational"] is (code == 0)


def test_cli_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_host(tmp_path / "r", "loaded", release=platform.release())
    cfg = tmp_path / "k.toml"
    cfg.write_text("[dump]\nlevel = 40\n")
    monkeypatch.setenv("KDUMPER_HOST_ROOT", str(tmp_path / "r"))
    monkeypatch.setenv("KDUMPER_CONFIG", str(cfg))
    assert main(["status"]) == ExitCode.NOT_OPERATIONAL
    out = capsys.readouterr().out
    assert f"the configuration does not load: {cfg}:2: dump.level: 40 is out of range" in out
    assert "config:" in out and "ERROR" in out
