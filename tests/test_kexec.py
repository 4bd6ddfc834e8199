"""kexec_file_load through an injected syscall: flags, errno diagnoses, load/unload/reload/test,
the capture command line and kernel/initrd discovery. The real syscall is never called."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from kdumper.cli.main import main
from kdumper.config import Config, LoadConfig, default_append
from kdumper.errors import ExitCode, InputNotFoundError
from kdumper.host import kexec, service
from kdumper.host.boot import capture_cmdline, kernel_candidates, plan_load
from kdumper.host.kexec import (
    KEXEC_FILE_NO_INITRAMFS,
    KEXEC_FILE_ON_CRASH,
    KEXEC_FILE_UNLOAD,
    KexecError,
    KexecState,
    LoadRequest,
    diagnose,
    image_memory,
    lockdown_mode,
)
from kdumper.host.paths import HostPaths
from tests.fakehost import RELEASE, FakeKexec, make_host, with_syscall

MiB = 1 << 20
REAL_SYSCALL = kexec.real_syscall  # built (never called) in test_real_syscall_wrapper


@pytest.fixture(autouse=True)
def no_real_kexec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in these tests may reach the running kernel."""

    def refuse(arch: str | None = None) -> kexec.SyscallFn:
        raise AssertionError("the real kexec_file_load must not be called in tests")

    monkeypatch.setattr(kexec, "real_syscall", refuse)


def state(**kw: object) -> KexecState:
    base: dict[str, object] = dict(
        loaded=False,
        crash_size=256 * MiB,
        elfcorehdr_size=None,
        cpu_hotplug=None,
        memory_hotplug=None,
        lockdown="none",
        load_disabled=False,
        load_limit_panic=-1,
    )
    base.update(kw)
    return KexecState(**base)  # type: ignore[arg-type]


# ---- the syscall's arguments ------------------------------------------------------------------


def test_load_passes_fds_cmdline_and_flags(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved")
    fake = FakeKexec(host.paths)
    kernel = f"{host.paths.boot_dir}/vmlinuz-{RELEASE}"
    initrd = f"{host.paths.boot_dir}/initrd.img-{RELEASE}"
    kexec.load(
        LoadRequest(kernel, initrd, "root=/dev/vda ro"),
        syscall=fake,
        paths=host.paths,
        arch="x86_64",
    )
    (kfd, ifd, cmdline, flags) = fake.calls[0]
    assert kfd >= 0 and ifd >= 0 and kfd != ifd
    assert fake.kernels == [b"HdrS\x0f\x02\x00\x00"]  # the kernel image fd, readable
    assert cmdline == b"root=/dev/vda ro\0"  # cmdline_len = len(cmdline) includes the NUL
    assert flags == KEXEC_FILE_ON_CRASH
    with pytest.raises(OSError):
        os.fstat(kfd)  # closed again
    fake.calls.clear()
    kexec.load(LoadRequest(kernel, None, "x"), syscall=fake, paths=host.paths, arch="x86_64")
    assert (
        fake.calls[0][1] == -1 and fake.calls[0][3] == KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS
    )


def test_unload_flags(tmp_path: Path) -> None:
    host = make_host(tmp_path, "loaded")
    fake = FakeKexec(host.paths)
    kexec.unload(syscall=fake, paths=host.paths)
    assert fake.calls == [(-1, -1, None, KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH)]


def test_real_syscall_wrapper() -> None:
    # the ctypes wrapper can be built for the known arches; it is not called here
    assert callable(REAL_SYSCALL("x86_64"))
    with pytest.raises(KexecError, match="no syscall number known for sparc64"):
        REAL_SYSCALL("sparc64")


def test_syscall_numbers() -> None:
    assert kexec.SYSCALL_NUMBERS["x86_64"] == 320
    assert kexec.SYSCALL_NUMBERS["aarch64"] == 294
    assert kexec.SYSCALL_NUMBERS["ppc64le"] == 382
    assert kexec.SYSCALL_NUMBERS["s390x"] == 381


def test_cmdline_checks() -> None:
    assert kexec.check_cmdline("a b", "x86_64") == b"a b\0"
    kexec.check_cmdline("x" * 2017, "x86_64")  # 2048 minus room for elfcorehdr=
    with pytest.raises(KexecError, match="2019 bytes"):
        kexec.check_cmdline("x" * 2018, "x86_64")
    kexec.check_cmdline("x" * 2040, "aarch64")
    with pytest.raises(KexecError, match="NUL"):
        kexec.check_cmdline("a\0b", "x86_64")


def test_missing_files(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved")
    fake = FakeKexec(host.paths)
    with pytest.raises(InputNotFoundError, match="no such file"):
        kexec.load(LoadRequest(str(tmp_path / "nope"), None, "x"), syscall=fake, paths=host.paths)
    assert fake.calls == []


def test_image_memory(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved")
    assert image_memory(f"{host.paths.boot_dir}/vmlinuz-{RELEASE}") == 24 * MiB  # init_size
    plain = tmp_path / "Image"
    plain.write_bytes(b"\0" * 5000)
    assert image_memory(str(plain)) == 5000
    assert image_memory(str(tmp_path / "missing")) == 0


def test_lockdown_mode() -> None:
    assert lockdown_mode("[none] integrity confidentiality\n") == "none"
    assert lockdown_mode("none [integrity] confidentiality") == "integrity"
    assert lockdown_mode(None) is None


# ---- errno → diagnosis ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "kw", "expect"),
    [
        (errno.EADDRNOTAVAIL, {"crash_size": 0}, "no memory is reserved for a crash kernel"),
        (errno.EADDRNOTAVAIL, {"crash_size": 64 * MiB}, "reservation (64 MiB) is too small"),
        (errno.ENOMEM, {"crash_size": 64 * MiB}, "ran out of memory for the load (ENOMEM)"),
        (
            errno.EPERM,
            {"lockdown": "integrity"},
            "locked down (integrity, usually because of Secure Boot)",
        ),
        (errno.EPERM, {"load_disabled": True}, "kernel.kexec_load_disabled = 1"),
        (errno.EPERM, {"load_limit_panic": 0}, "kexec_load_limit_panic = 0"),
        (errno.EPERM, {}, "kexec may be disabled or a security policy refused it"),
        (
            errno.EKEYREJECTED,
            {"lockdown": "integrity"},
            "signature check of /boot/vmlinuz failed (EKEYREJECTED) (lockdown: integrity)",
        ),
        (errno.EBADMSG, {}, "signature check of /boot/vmlinuz failed (EBADMSG)"),
        (errno.ENOKEY, {}, "only loads signed images"),
        (errno.EACCES, {}, "IMA or another LSM"),
        (errno.ENOEXEC, {}, "/boot/vmlinuz is not a kernel image this kernel can load"),
        (errno.EINVAL, {}, "rejected the load (EINVAL): the kernel image or initrd is damaged"),
        (errno.EBUSY, {}, "kexec is busy"),
        (errno.ENOSYS, {}, "built without CONFIG_KEXEC_FILE"),
        (errno.EOPNOTSUPP, {}, "confidential VM"),
        (errno.EFBIG, {}, "too large"),
        (errno.ETXTBSY, {}, "open for writing"),
        (errno.EIO, {}, "kexec_file_load failed: Input/output error (EIO)"),
    ],
)
def test_diagnose(err: int, kw: dict[str, object], expect: str) -> None:
    req = LoadRequest("/boot/vmlinuz", None, "ro")
    msg = diagnose(err, state=state(**kw), req=req, euid=0, ram=8 << 30)
    assert expect in msg, msg


def test_diagnose_not_root_first() -> None:
    msg = diagnose(errno.EPERM, state=state(lockdown="integrity"), euid=1000)
    assert msg == "permission denied: loading a crash kernel needs root (CAP_SYS_BOOT)"


def test_too_small_says_the_sizes(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved", crash_size=32 * MiB)
    fake = FakeKexec(host.paths, fail=errno.EADDRNOTAVAIL)
    with pytest.raises(KexecError) as info:
        service.load_capture(Config(), with_syscall(host, fake))
    msg = str(info.value)
    assert info.value.exit_code == ExitCode.KERNEL and info.value.errno == errno.EADDRNOTAVAIL
    # init_size 24 MiB + initrd 30 MiB + 2 MiB
    assert "the crash kernel reservation (32 MiB) is too small" in msg
    assert "loading this kernel and initrd needs at least 56 MiB" in msg
    assert "a capture needs about 256 MiB on this machine" in msg
    assert "kdumper crashkernel --set auto" in msg


@pytest.mark.parametrize("err", [errno.EPERM, errno.EKEYREJECTED, errno.ENOEXEC, errno.EBUSY])
def test_load_errors_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], err: int
) -> None:
    import platform

    host = make_host(tmp_path / "r", "lockdown", release=platform.release())
    fake = FakeKexec(host.paths, fail=err)
    monkeypatch.setattr(service.Host, "kexec_call", lambda self: fake)
    monkeypatch.setenv("KDUMPER_HOST_ROOT", str(tmp_path / "r"))
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("KDUMPER_CONFIG", str(tmp_path / "empty.toml"))
    assert main(["load"]) == ExitCode.KERNEL
    out = capsys.readouterr().err
    assert out.startswith("kdumper: error: cannot load the capture kernel: ")
    assert out.count("\n") == 1 and "Traceback" not in out


# ---- load / unload / reload / test --------------------------------------------------------


def test_load_capture_records_and_sets_panic_on_oops(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved")
    fake = FakeKexec(host.paths)
    outcome = service.load_capture(Config(), with_syscall(host, fake))
    assert outcome.warnings == ()
    assert Path(host.paths.kexec_crash_loaded).read_text() == "1\n"
    assert Path(host.paths.panic_on_oops).read_text() == "1\n"
    record = json.loads((Path(host.paths.state_dir) / "loaded.json").read_text())
    assert record["kernel"].endswith(f"vmlinuz-{RELEASE}")
    assert record["initrd"].endswith(f"initrd.img-{RELEASE}")
    assert "systemd.unit=kdumper-capture.service" in record["cmdline"]
    assert "crashkernel=" not in record["cmdline"] and " quiet" not in record["cmdline"]
    cmdline = fake.calls[0][2]
    assert cmdline is not None and cmdline.decode().rstrip("\0") == record["cmdline"]
    # panic_on_oops off
    cfg = Config(load=LoadConfig(panic_on_oops=False))
    Path(host.paths.panic_on_oops).write_text("0\n")
    service.load_capture(cfg, with_syscall(host, fake))
    assert Path(host.paths.panic_on_oops).read_text() == "0\n"


def test_load_refusals_before_the_syscall(tmp_path: Path) -> None:
    fake_calls: list[object] = []
    for st, match in (
        ("none", "no memory is reserved"),
        ("nokdump", "this kernel has no kdump support"),
    ):
        host = make_host(tmp_path / st, st)
        fake = FakeKexec(host.paths)
        with pytest.raises(KexecError, match=match):
            service.load_capture(Config(), with_syscall(host, fake))
        fake_calls += fake.calls
    host = make_host(tmp_path / "nokernel", "reserved", kernel=False)
    with pytest.raises(Exception, match="no kernel image found for"):
        service.load_capture(Config(), with_syscall(host, FakeKexec(host.paths)))
    host = make_host(tmp_path / "noinitrd", "reserved", initrd=False)
    with pytest.raises(Exception, match=r"no initrd found .* initrd = \"\""):
        service.load_capture(Config(), with_syscall(host, FakeKexec(host.paths)))
    cfg = Config(load=LoadConfig(initrd=""))
    fake = FakeKexec(host.paths)
    service.load_capture(cfg, with_syscall(host, fake))
    assert fake.calls[0][3] & KEXEC_FILE_NO_INITRAMFS
    assert fake_calls == []


def test_fake_tree_never_reaches_the_real_syscall(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved")
    with pytest.raises(KexecError, match="refusing to call the real kexec_file_load"):
        service.load_capture(Config(), host)
    with pytest.raises(KexecError, match="refusing"):
        service.unload_capture(host)


def test_unload_and_reload(tmp_path: Path) -> None:
    host = make_host(tmp_path, "loaded")
    fake = FakeKexec(host.paths)
    h = with_syscall(host, fake)
    assert service.unload_capture(h) is True
    assert Path(host.paths.kexec_crash_loaded).read_text() == "0\n"
    assert not (Path(host.paths.state_dir) / "loaded.json").exists()
    assert service.reload_capture(Config(), h, if_loaded=True) is None
    assert len(fake.calls) == 1  # only the unload
    assert service.reload_capture(Config(), h) is not None
    assert service.reload_capture(Config(), h, if_loaded=True) is not None
    assert [c[3] for c in fake.calls] == [3, 2, 2]


def test_kdumper_test_records_reloads_and_crashes(tmp_path: Path) -> None:
    host = make_host(tmp_path, "loaded")
    fake = FakeKexec(host.paths)
    cfg = Config()
    tid = service.prepare_test(cfg, with_syscall(host, fake), test_id="1700000000-abcd0123")
    assert tid == "1700000000-abcd0123"
    state_file = json.loads(Path(host.paths.test_state_file).read_text())
    assert state_file["id"] == tid and state_file["status"] == "pending"
    assert state_file["boot_id"].startswith("3f1c1c2e")
    cmdline = fake.calls[-1][2]
    assert cmdline is not None and b" kdumper.test_id=1700000000-abcd0123\0" in cmdline
    synced: list[bool] = []
    service.trigger_crash(host.paths, sync=lambda: synced.append(True))
    assert synced == [True]
    assert Path(host.paths.sysrq_trigger).read_text() == "c"


def test_kdumper_test_needs_a_loaded_kernel(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved")
    with pytest.raises(KexecError, match="not loaded, so a crash now would not be saved"):
        service.prepare_test(Config(), with_syscall(host, FakeKexec(host.paths)))


def test_cli_test_refuses_without_terminal_or_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import platform

    host = make_host(tmp_path / "r", "loaded", release=platform.release())
    fake = FakeKexec(host.paths)
    monkeypatch.setattr(service.Host, "kexec_call", lambda self: fake)
    monkeypatch.setenv("KDUMPER_HOST_ROOT", str(tmp_path / "r"))
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("KDUMPER_CONFIG", str(tmp_path / "empty.toml"))
    assert main(["test"]) == ExitCode.USAGE
    assert "add --yes" in capsys.readouterr().err
    assert Path(host.paths.sysrq_trigger).read_text() == ""
    monkeypatch.setattr(os, "sync", lambda: None)
    assert main(["test", "--yes"]) == 0
    assert Path(host.paths.sysrq_trigger).read_text() == "c"
    assert json.loads(Path(host.paths.test_state_file).read_text())["status"] == "pending"


def test_cli_load_unload_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import platform

    host = make_host(tmp_path / "r", "reserved", release=platform.release())
    fake = FakeKexec(host.paths)
    monkeypatch.setattr(service.Host, "kexec_call", lambda self: fake)
    monkeypatch.setenv("KDUMPER_HOST_ROOT", str(tmp_path / "r"))
    cfg = tmp_path / "k.toml"
    cfg.write_text('[load]\nappend_extra = ["console=ttyS1"]\n')
    monkeypatch.setenv("KDUMPER_CONFIG", str(cfg))
    assert main(["reload", "--if-loaded"]) == 0
    assert "nothing to reload" in capsys.readouterr().out and fake.calls == []
    assert main(["load", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "console=ttyS1" in out and fake.calls == []
    assert main(["load", "--boot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("loaded ") and "capture command line:" in out
    assert main(["reload", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loaded"] is True
    assert main(["unload"]) == 0
    assert "unloaded" in capsys.readouterr().out
    assert [c[3] for c in fake.calls] == [2, 2, 3]


# ---- capture command line and kernel discovery -------------------------------------------------


def test_capture_cmdline() -> None:
    base = (
        "BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet splash crashkernel=256M crashkernel=1G,high "
        'panic=1 nr_cpus=8 foo="a b" -- single'
    )
    out = capture_cmdline(
        base,
        ["crashkernel", "quiet", "splash", "nr_cpus"],
        ["reset_devices", "panic=10", "nr_cpus=1", "ro"],
    )
    assert (
        out
        == 'BOOT_IMAGE=/vmlinuz root=UUID=x ro foo="a b" reset_devices panic=10 nr_cpus=1 -- single'
    )


def test_default_capture_cmdline(tmp_path: Path) -> None:
    host = make_host(
        tmp_path,
        "reserved",
        cmdline=f"BOOT_IMAGE=/vmlinuz-{RELEASE} root=/dev/vda1 ro quiet crashkernel=256M "
        "hugepages=64 resume=/dev/vda2 systemd.unit=graphical.target",
    )
    plan = plan_load(LoadConfig(), host.paths, release=RELEASE, arch="x86_64")
    params = plan.cmdline.split()
    assert params[:3] == [f"BOOT_IMAGE=/vmlinuz-{RELEASE}", "root=/dev/vda1", "ro"]
    assert params[3:] == list(default_append("x86_64"))
    assert plan.cmdline.count("systemd.unit=") == 1
    plan = plan_load(
        LoadConfig(cmdline="root=/dev/sda1", append=("x",), append_extra=("y=1",)),
        host.paths,
        release=RELEASE,
        arch="x86_64",
        test_id="t-1",
    )
    assert plan.cmdline == "root=/dev/sda1 x y=1 kdumper.test_id=t-1"


def test_kernel_discovery(tmp_path: Path) -> None:
    paths = HostPaths.under(str(tmp_path))
    cands = kernel_candidates(
        "6.8.5-301.fc40.x86_64", paths, "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-6.8.5-301.fc40.x86_64 ro"
    )
    assert cands[0] == f"{paths.boot_dir}/vmlinuz-6.8.5-301.fc40.x86_64"
    assert f"{paths.modules_dir}/6.8.5-301.fc40.x86_64/vmlinuz" in cands
    # Fedora names its initrd initramfs-<ver>.img; kernel found in /lib/modules
    (tmp_path / "lib/modules/6.8.5-301.fc40.x86_64").mkdir(parents=True)
    (tmp_path / "lib/modules/6.8.5-301.fc40.x86_64/vmlinuz").write_bytes(b"k")
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/initramfs-6.8.5-301.fc40.x86_64.img").write_bytes(b"i")
    plan = plan_load(LoadConfig(), paths, release="6.8.5-301.fc40.x86_64", arch="x86_64")
    assert plan.kernel == f"{paths.modules_dir}/6.8.5-301.fc40.x86_64/vmlinuz"
    assert plan.initrd == f"{paths.boot_dir}/initramfs-6.8.5-301.fc40.x86_64.img"
    assert "unreadable" in plan.notes[0]  # no /proc/cmdline in this tree
