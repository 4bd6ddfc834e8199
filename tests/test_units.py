"""The systemd units, udev rules and kernel install hooks in systemd/.

``systemd-analyze verify`` (Debian package ``systemd``) checks the units with ``kdumper``
resolvable: systemd looks a bare command name up in its fixed search path
(/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin), not $PATH, so when kdumper is installed
elsewhere (a virtualenv, pyenv) the copies under test name the installed script's full path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICES = ("kdumper.service", "kdumper-capture.service", "kdumper-reload.service")
SYSTEMD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin")


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _kdumper_for_systemd() -> str | None:
    for d in SYSTEMD_PATH:
        if os.access(os.path.join(d, "kdumper"), os.X_OK):
            return None  # the bare name resolves as it will on a real install
    found = shutil.which("kdumper")
    if found is None:
        pytest.skip("kdumper is not installed as a command (pip install -e .)")
    return found


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (apt-get install systemd)")
    full = _kdumper_for_systemd()
    copies = []
    for name in SERVICES:
        text = (UNITS / name).read_text()
        if full is not None:
            text = re.sub(r"^(Exec\w+=-?)kdumper ", rf"\g<1>{full} ", text, flags=re.M)
        (tmp_path / name).write_text(text)
        copies.append(str(tmp_path / name))
    proc = subprocess.run(
        [analyze, "verify", *copies], capture_output=True, text=True, timeout=60, check=False
    )
    # unknown keys and bad values are only warnings (exit 0): require silence
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_arming_unit() -> None:
    u = _unit("kdumper.service")
    svc = u["Service"]
    assert svc["Type"] == ["oneshot"] and svc["RemainAfterExit"] == ["yes"]
    assert svc["ExecStart"] == ["kdumper load --boot"]
    assert svc["ExecStop"] == ["kdumper unload"] and svc["ExecReload"] == ["kdumper reload"]
    assert "kexec_crash_size" in svc["ExecCondition"][0]
    assert u["Unit"]["ConditionPathExists"] == ["!/proc/vmcore"]
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize(("size", "runs"), [("0", False), ("268435456", True), (None, False)])
def test_exec_condition_skips_without_reservation(
    tmp_path: Path, size: str | None, runs: bool
) -> None:
    cond = _unit("kdumper.service")["Service"]["ExecCondition"][0]
    argv = cond.split(" ", 2)
    assert argv[:2] == ["/bin/sh", "-c"]
    script = argv[2].strip("'").replace("$$", "$")
    sysfs = tmp_path / "kexec_crash_size"
    if size is not None:
        sysfs.write_text(size + "\n")
    script = script.replace("/sys/kernel/kexec_crash_size", str(sysfs))
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, timeout=10, check=False)
    assert (proc.returncode == 0) is runs
    assert 1 <= proc.returncode <= 254 or runs  # 1..254 skips the unit; 255 would fail it


def test_capture_unit() -> None:
    u = _unit("kdumper-capture.service")
    assert u["Unit"]["ConditionPathExists"] == ["/proc/vmcore"]
    assert "DefaultDependencies" not in u["Unit"]  # needs sysinit/local-fs: see the unit
    assert u["Unit"]["FailureAction"] == ["reboot-force"]
    assert u["Service"]["ExecStart"] == ["kdumper capture"]
    assert u["Service"]["TimeoutStartSec"] == ["infinity"]
    assert "Install" not in u  # only ever started by systemd.unit= in the capture kernel
    from kdumper.config import CAPTURE_UNIT, default_append

    assert CAPTURE_UNIT == "kdumper-capture.service"
    assert f"systemd.unit={CAPTURE_UNIT}" in default_append("x86_64")


_RULE = re.compile(r'^\s*([A-Z_]+)(\{[^}]+\})?\s*(==|!=|\+=|=|:=)\s*"([^"]*)"\s*$')


def test_udev_rules() -> None:
    gotos, labels = set(), set()
    keys = set()
    for line in (UNITS / "98-kdumper.rules").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        for part in line.split(", "):
            m = _RULE.match(part)
            assert m, f"not a udev key: {part!r}"
            key, attr, op, value = m.groups()
            keys.add(key + (attr or ""))
            if key == "GOTO":
                gotos.add(value)
            if key == "LABEL":
                labels.add(value)
            if key == "RUN":
                assert op == "+=" and value.split()[0].startswith("/")
                assert "kdumper-reload.service" in value
    assert gotos == labels == {"kdumper_end"}
    assert "ATTRS{crash_hotplug}" in keys  # the kernel updates the image itself: do nothing
    analyze = shutil.which("udevadm")
    if (
        analyze
        and subprocess.run(
            [analyze, "verify", "--help"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        proc = subprocess.run(
            [analyze, "verify", str(UNITS / "98-kdumper.rules")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr


HOOKS = ("kernel/postinst.d/kdumper", "kernel/install.d/92-kdumper.install")


def _fake_kdumper(tmp_path: Path, rc: int = 0) -> tuple[dict[str, str], Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    script = bindir / "kdumper"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {rc}\n')
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin", KDUMPER_SYSFS=str(tmp_path / "sys"))
    return env, log


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_scripts(tmp_path: Path, hook: str) -> None:
    path = UNITS / hook
    assert os.access(path, os.X_OK)
    assert subprocess.run(["/bin/sh", "-n", str(path)], check=False).returncode == 0
    args = ["add", "6.1.0-19-amd64", "/boot/x", "/boot/vmlinuz-6.1.0-19-amd64"]
    if hook.startswith("kernel/postinst.d"):
        args = ["6.1.0-19-amd64", "/boot/vmlinuz-6.1.0-19-amd64"]
    env, log = _fake_kdumper(tmp_path)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(path), *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )

    # no kdump support: nothing
    assert run().returncode == 0 and not log.exists()
    loaded = tmp_path / "sys/kernel/kexec_crash_loaded"
    loaded.parent.mkdir(parents=True)
    loaded.write_text("0\n")
    assert run().returncode == 0 and not log.exists()
    loaded.write_text("1\n")
    proc = run()
    if proc.returncode == 0 and not log.exists():
        pytest.skip("running in a chroot (systemd-detect-virt --chroot): the hook does nothing")
    assert proc.returncode == 0 and log.read_text() == "reload --if-loaded\n"


def test_hook_never_fails_the_install(tmp_path: Path) -> None:
    env, log = _fake_kdumper(tmp_path, rc=9)
    loaded = tmp_path / "sys/kernel/kexec_crash_loaded"
    loaded.parent.mkdir(parents=True)
    loaded.write_text("1\n")
    proc = subprocess.run(
        [str(UNITS / HOOKS[0]), "6.1.0-19-amd64"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0
    if log.exists():
        assert (
            "reloading the capture kernel after installing kernel 6.1.0-19-amd64 failed"
            in proc.stderr
        )
