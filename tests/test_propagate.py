"""``kdumper propagate`` against a real OpenSSH server on 127.0.0.1 (tests/sshd.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdumper.cli.main import main
from kdumper.collect.targets.ssh import (
    HostKeyChangedError,
    SshTarget,
    TargetUnreachableError,
    check_target,
    matching_host_lines,
    save_dmesg,
)
from kdumper.errors import ExitCode
from kdumper.host.propagate import (
    HostKey,
    HostKeyNotTrustedError,
    KeyInstallError,
    fingerprint,
    propagate,
    record_host_keys,
)
from tests.sshd import SshServer, sshd_server


@pytest.fixture
def sshd() -> Iterator[SshServer]:
    with sshd_server() as server:
        yield server


def _target(sshd: SshServer, tmp_path: Path, **options: Any) -> SshTarget:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "user": sshd.user,
        "port": sshd.port,
        "path": str(sshd.remote / "crash"),
        "identity": str(tmp_path / "etc" / "id_ed25519"),
        "known_hosts": str(tmp_path / "etc" / "known_hosts"),
        "connect_timeout": 5,
        "retries": 1,
        "retry_delay": 0.1,
    }
    values.update(options)
    return SshTarget(**values)


class Confirm:
    """A recording confirm callback."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls: list[tuple[list[HostKey], list[HostKey]]] = []

    def __call__(self, scanned: list[HostKey], recorded: list[HostKey]) -> bool:
        self.calls.append((scanned, recorded))
        return self.answer


def _ssh_keygen_fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True)
    return out.stdout.split()[1]


def test_propagate_first_time_then_again(sshd: SshServer, tmp_path: Path) -> None:
    target = _target(sshd, tmp_path)
    confirm = Confirm(True)
    result = propagate(target, confirm=confirm, bootstrap_identity=str(sshd.bootstrap_key))
    # 1. a dedicated key, created with ssh-keygen, 0600 in a 0700 directory
    identity = Path(target.identity)
    assert result.key_created and identity.is_file()
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.parent.stat().st_mode) == 0o700
    public = Path(f"{identity}.pub").read_text().strip()
    assert public.startswith("ssh-ed25519 ") and public.endswith(" kdumper@" + os.uname().nodename)
    assert result.key_fingerprint == _ssh_keygen_fingerprint(Path(f"{identity}.pub"))
    # 2. the host key, confirmed once with its fingerprint, recorded in kdumper's own file
    assert len(confirm.calls) == 1 and confirm.calls[0][1] == []
    shown = {k.fingerprint for k in confirm.calls[0][0]}
    assert _ssh_keygen_fingerprint(Path(f"{sshd.host_key}.pub")) in shown
    assert result.host_keys_recorded == "new"
    lines = matching_host_lines(target.known_hosts, f"[127.0.0.1]:{sshd.port}")
    assert sshd.known_hosts_line() in lines
    # 3. the key installed in the remote ~/.ssh/authorized_keys (0600 in 0700)
    assert result.key_installed
    auth = sshd.home / ".ssh" / "authorized_keys"
    assert auth.read_text().splitlines() == [public]
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700
    assert auth.stat().st_uid == sshd.uid
    # 4. the test write went through and left nothing behind
    assert result.test_write.startswith(str(sshd.remote / "crash" / ".kdumper-test-"))
    assert os.listdir(sshd.remote / "crash") == []
    # kdumper's own key now works for the capture path (not the bootstrap key)
    save_dmesg(target, "h-1", b"log\n")
    assert check_target(target).ok
    assert f"found at {auth}" in sshd.log_text() or ".ssh/authorized_keys" in sshd.log_text()

    # again: nothing to create, confirm, install
    again = Confirm(False)
    result = propagate(target, confirm=again, bootstrap_identity=str(sshd.bootstrap_key))
    assert (result.key_created, result.key_installed) == (False, False)
    assert result.host_keys_recorded == "unchanged" and again.calls == []
    assert auth.read_text().splitlines() == [public]  # not appended twice


def test_changed_host_key_needs_confirmation(sshd: SshServer, tmp_path: Path) -> None:
    target = _target(sshd, tmp_path)
    propagate(target, confirm=Confirm(True), bootstrap_identity=str(sshd.bootstrap_key))
    before = Path(target.known_hosts).read_text()
    sshd.regenerate_host_key()
    sshd.restart()
    with pytest.raises(HostKeyChangedError, match="run kdumper propagate again"):
        save_dmesg(target, "h-1", b"log\n")
    refuse = Confirm(False)
    with pytest.raises(HostKeyNotTrustedError, match="not trusted") as e:
        propagate(target, confirm=refuse)
    assert e.value.exit_code == ExitCode.CONFIG
    assert refuse.calls and refuse.calls[0][1]  # the old keys were shown too
    assert Path(target.known_hosts).read_text() == before  # nothing changed
    result = propagate(target, confirm=Confirm(True))
    assert result.host_keys_recorded == "replaced" and not result.key_installed
    assert sshd.known_hosts_line() in Path(target.known_hosts).read_text()
    assert before.strip() not in Path(target.known_hosts).read_text()
    save_dmesg(target, "h-1", b"log\n")


def test_record_host_keys_keeps_other_hosts(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIA7sQbr0tBeTh1gbwYm3Zm2Kux2K6b2s5f1Cq0dJnq1d"
    old = "AAAAC3NzaC1lZDI1NTE5AAAAIH3KzWTuHq2hA1Oe8jv5s8uJkA7yq6Qp2sH4Jp0mP8xI"
    known.write_text(f"other.example ssh-ed25519 {other}\n[dumps]:2222 ssh-ed25519 {old}\n")
    target = SshTarget(host="dumps", port=2222, known_hosts=str(known))
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIBAk0sVY0a1n8cG8HFsq8kQpW8nO8qk6Xf5Fv1yH3rGJ"
    key = HostKey(f"[dumps]:2222 ssh-ed25519 {blob}", "ssh-ed25519", fingerprint(blob))
    record_host_keys(target, [key])
    lines = known.read_text().splitlines()
    assert lines[0].startswith("other.example ")
    assert lines[1:] == [f"[dumps]:2222 ssh-ed25519 {blob}"]


def test_hashed_known_hosts_entries_match(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIBAk0sVY0a1n8cG8HFsq8kQpW8nO8qk6Xf5Fv1yH3rGJ"
    known.write_text(f"[127.0.0.1]:2222 ssh-ed25519 {blob}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    assert matching_host_lines(str(known), "[127.0.0.1]:2222")
    assert not matching_host_lines(str(known), "[127.0.0.1]:2223")


def test_install_fails_without_a_way_in(sshd: SshServer, tmp_path: Path) -> None:
    target = _target(sshd, tmp_path)
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)  # fmt: skip
    with pytest.raises(KeyInstallError, match="authorized_keys there by hand"):
        propagate(target, confirm=Confirm(True), bootstrap_identity=str(stranger))


def test_unreachable(sshd: SshServer, tmp_path: Path) -> None:
    target = _target(sshd, tmp_path, connect_timeout=2)
    sshd.stop()
    with pytest.raises(TargetUnreachableError, match="no host key"):
        propagate(target, confirm=Confirm(True))


def test_cli_propagate(sshd: SshServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    etc = tmp_path / "etc"
    args = [
        "propagate",
        "--target", f"{sshd.user}@127.0.0.1:{sshd.port}",
        "--path", str(sshd.remote / "crash"),
        "--identity", str(etc / "id_ed25519"),
        "--known-hosts", str(etc / "known_hosts"),
        "--bootstrap-identity", str(sshd.bootstrap_key),
        "--connect-timeout", "5",
    ]  # fmt: skip
    # stdin is not a terminal here: without --yes the host key is not trusted
    assert main(args) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "SHA256:" in err and "run again with --yes" in err
    assert err.strip().splitlines()[-1].startswith("kdumper: error: host key of 127.0.0.1 not")
    assert not (etc / "known_hosts").exists() and not (etc / "id_ed25519").exists()
    assert main([*args, "--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key_created"] is True  # not by the first, refused run
    assert out["host_keys_recorded"] == "new" and out["key_installed"] is True
    assert main([*args]) == 0  # known now: no question asked
    text = capsys.readouterr().out
    assert "kdumper's key was accepted already" in text and "test write: ok" in text
    assert main(["propagate"]) == ExitCode.USAGE
