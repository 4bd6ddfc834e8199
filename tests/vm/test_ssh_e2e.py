"""The ssh target end to end: a real Debian guest's capture kernel streams its dump to a real
OpenSSH server on this machine's loopback.

The server is tests/sshd.py's (own host key, own user ``kdumper-test``, own port on 127.0.0.1).
The guest (vmharness.rootfs, ``target="ssh"``) has a virtio NIC on QEMU's user network with
``restrict=on``: it reaches nothing but ``10.0.2.100:22``, which QEMU relays to the server's port
(:func:`vmharness.rootfs.ssh_network_args`). systemd-networkd configures the NIC by DHCP in the
first kernel and in the capture kernel, where kdumper-capture.service waits for
network-online.target.

The guest's ``/etc/kdumper`` is what ``kdumper propagate`` makes on a real machine: propagate runs
here against the server (kdumper's own ed25519 key created, the server's host key recorded, the
public key installed into the test user's ``~/.ssh/authorized_keys`` with the bootstrap key, a
test write), and the files it wrote go into the guest (the key 0600); only the host name in
known_hosts is the one the guest sees (``10.0.2.100``, port 22), since the guest cannot reach
127.0.0.1 of this machine. The capture logs in with ``StrictHostKeyChecking=yes`` against it.

Default set (CI): one 6.1 cycle, crashed with sysrq; the remote directory, the checksum,
``kdumper verify``/``info``/``dmesg`` on ``vmcore.flat``, makedumpfile's ``-R`` and
``--dump-dmesg`` on the same stream, drgn with the -dbg vmlinux, and the guest back afterwards.
``KDUMPER_VM_FULL=1`` adds the 6.12 cycle and the failure case (sshd stopped before the crash:
the capture retries for about four minutes, then ``failure_action = "dump_to_rootfs"`` saves the
dump on the guest's own disk).
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdumper.collect.targets.ssh import SshTarget
from kdumper.host.propagate import propagate, record_host_keys, recorded_host_keys
from tests import oracles
from tests.sshd import SshServer, sshd_server
from tests.vm import test_rootfs
from tests.vm.conftest import RootfsFactory
from vmharness import get_kernel, get_vmlinux
from vmharness.rootfs import (
    DATA_DIR,
    SSH_GUEST_ADDR,
    USERNET_HOST_ADDR,
    CycleResult,
    boot_cycle,
    ssh_network_args,
)

vm = pytest.mark.vm

FULL = bool(os.environ.get("KDUMPER_VM_FULL"))
KERNELS = ("6.1", "6.12") if FULL else ("6.1",)

SYSRQ_PANIC = test_rootfs.SYSRQ_PANIC

GUEST_IDENTITY = "/etc/kdumper/id_ed25519"
GUEST_KNOWN_HOSTS = "/etc/kdumper/known_hosts"
_SENT = re.compile(r"dump sent: vmcore\.flat \(([\d.]+) MiB in ([\d.]+) s, (\d+) attempts?\)")


@pytest.fixture
def sshd() -> Iterator[SshServer]:
    with sshd_server() as server:
        yield server


def propagated_files(server: SshServer, stage: Path) -> dict[str, tuple[bytes, int]]:
    """``kdumper propagate`` against ``server``; the guest files it leaves (path → content, mode).

    The key and the test user's authorized_keys entry are propagate's own work; the guest's
    known_hosts holds the host keys propagate recorded, under the name the guest connects to.
    """
    stage.mkdir(mode=0o700)
    here = SshTarget(
        host="127.0.0.1",
        user=server.user,
        port=server.port,
        path=str(server.remote),
        identity=str(stage / "id_ed25519"),
        known_hosts=str(stage / "known_hosts.host"),
        connect_timeout=5,
        retries=1,
        retry_delay=0.2,
    )
    done = propagate(
        here,
        confirm=lambda scanned, changed: not changed,
        bootstrap_identity=str(server.bootstrap_key),
        comment="kdumper@kdguest",
    )
    assert done.key_created and done.key_installed, done
    guest = SshTarget(
        host=SSH_GUEST_ADDR,
        user=server.user,
        path=str(server.remote),
        identity=str(stage / "id_ed25519"),
        known_hosts=str(stage / "known_hosts"),
    )
    record_host_keys(guest, recorded_host_keys(here))
    files = {}
    for name, guest_path in (
        ("id_ed25519", GUEST_IDENTITY),
        ("id_ed25519.pub", GUEST_IDENTITY + ".pub"),
        ("known_hosts", GUEST_KNOWN_HOSTS),
    ):
        path = stage / name
        files[guest_path] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    assert files[GUEST_IDENTITY][1] == 0o600
    # what the guest's network must (fwd) and must not (direct: restrict=on) reach
    checks = f"fwd {SSH_GUEST_ADDR} 22\ndirect {USERNET_HOST_ADDR} {server.port}\n"
    files["/etc/kdguest/netcheck"] = (checks.encode(), 0o644)
    return files


def guest_config(server: SshServer) -> str:
    """The guest's kdumper.toml: the ssh target as an administrator writes it after propagate."""
    return (
        "# tests/vm/test_ssh_e2e.py: dumps to the host's sshd, through QEMU's guestfwd\n"
        'failure_action = "dump_to_rootfs"\n'
        "[target.ssh]\n"
        f'destination = "{server.user}@{SSH_GUEST_ADDR}"\n'
        f'path = "{server.remote}"\n'
        f'identity_file = "{GUEST_IDENTITY}"\n'
        f'known_hosts = "{GUEST_KNOWN_HOSTS}"\n'
    )


def ssh_cycle(
    image: Any, server: SshServer, workdir: Path, *, timeout: float = 900, stop_server: bool = False
) -> CycleResult:
    """One crash of the guest with the ssh target pointed at ``server`` (``stop_server``: the
    server is stopped once the key is propagated, before the guest boots)."""
    files = propagated_files(server, workdir / "propagate")
    if stop_server:
        server.stop()
    return boot_cycle(
        image,
        workdir / "cycle",
        target="ssh",
        crash="sysrq",
        config=guest_config(server),
        extra_files=files,
        extra_qemu_args=ssh_network_args(server.port),
        timeout=timeout,
    )


def _explain(result: CycleResult, server: SshServer) -> str:
    return f"{test_rootfs._explain(result)}\nsshd log:\n{server.log_text()[-1500:]}"


def kdumper(
    *args: str | os.PathLike[str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdumper", *(os.fspath(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def capture_numbers(result: CycleResult) -> dict[str, float]:
    """From the capture kernel's console: crash → ``dump sent`` (s), the transfer's size,
    seconds and throughput as the guest measured them."""
    assert result.capture_log is not None, "no capture kernel on the console"
    lines = result.capture_log.read_text(errors="replace").splitlines()
    stamped = [(float(ln[1:10]), ln[12:]) for ln in lines if ln.startswith("[")]
    banner = stamped[0][0]
    crash = banner - result.timings["crash_to_capture_kernel"]
    sent = next(((t, _SENT.search(text)) for t, text in stamped if _SENT.search(text)), None)
    assert sent is not None and sent[1] is not None, "no 'dump sent' line on the capture console"
    mib, seconds = float(sent[1].group(1)), float(sent[1].group(2))
    return {
        "crash_to_dump_sent_s": round(sent[0] - crash, 1),
        "dump_mib": mib,
        "transfer_s": seconds,
        "throughput_mib_s": round(mib / seconds, 2) if seconds else 0.0,
        "attempts": int(sent[1].group(3)),
    }


def makedumpfile_dmesg(flat: Path, out: Path) -> bytes:
    """``makedumpfile -R`` of the stream, then ``--dump-dmesg`` of the file it made.

    1.7.6 prints caller ids as kdumper's vmcore-dmesg.txt does; 1.7.2 (Debian 12's) cannot, so
    with it the comparison is against ``kdumper dmesg --no-caller-id``.
    """
    version = "1.7.6" if oracles.makedumpfile_path("1.7.6") else "1.7.2"
    with flat.open("rb") as f:
        oracles.makedumpfile(version, "-R", out, stdin=f)
    text = out.with_suffix(".dmesg")
    oracles.makedumpfile(version, "--dump-dmesg", out, text)
    return text.read_bytes()


@vm
@pytest.mark.parametrize("kernel", KERNELS)
def test_ssh_cycle(
    rootfs_factory: RootfsFactory, sshd: SshServer, kernel: str, tmp_path: Path
) -> None:
    """Crash → the capture kernel streams to the host's sshd → the dump is whole, verified and
    read by kdumper, makedumpfile and drgn; the guest came back."""
    image = rootfs_factory(kernel)
    result = ssh_cycle(image, sshd, tmp_path)
    assert result.ok, _explain(result, sshd)
    assert result.armed and result.crashed and result.capture_kernel_booted, _explain(result, sshd)
    assert result.capture_started and result.back, _explain(result, sshd)
    assert [b.capture for b in result.boots] == [False, True, False]
    # the guest's network: a DHCP address; the forwarded sshd, and nothing else of this host
    net = next(m for m in result.markers if m.name == "net")
    assert net.fields["addr"].startswith("10.0.2."), net
    assert net.fields["fwd"] == "ssh" and net.fields["direct"] == "closed", net
    # the first kernel's `kdumper status` probed the target over the guest's network
    assert result.status is not None
    assert result.status["target"]["kind"] == "ssh"
    assert result.status["target"]["exists"] is True, result.status
    # nothing was saved on the guest's own disk (no dump_to_rootfs)
    assert not any("vmcore" in f for f in result.dump_files), result.dump_files

    dirs = [p for p in sshd.remote.iterdir() if not p.name.startswith(".")]
    assert len(dirs) == 1 and re.fullmatch(r"kdguest-\d{4}(-\d\d){5}", dirs[0].name), dirs
    remote = dirs[0]
    names = sorted(p.name for p in remote.iterdir())
    assert names == [
        "report.json",
        "vmcore-dmesg.txt",
        "vmcore.flat",
        "vmcore.flat.blake2b",
    ], names
    assert stat.S_IMODE(remote.stat().st_mode) == 0o700
    for p in remote.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert p.stat().st_uid == sshd.uid, p
    flat = remote / "vmcore.flat"
    sums = (remote / "vmcore.flat.blake2b").read_text().split()
    assert sums[1:] == ["vmcore.flat"], sums

    # kdumper reads the stream as it arrived: verify (checksum + structure), info, dmesg
    verify = kdumper("verify", "--json", flat)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    info = kdumper("info", "--json", flat)
    assert info.returncode == 0, info.stderr
    assert image.release in info.stdout
    dmesg = kdumper("dmesg", flat)
    assert dmesg.returncode == 0, dmesg.stderr
    saved_log = (remote / "vmcore-dmesg.txt").read_text()
    assert dmesg.stdout == saved_log
    assert SYSRQ_PANIC in saved_log

    # makedumpfile: -R rebuilds the kdump file from the stream; its log is ours
    rebuilt = tmp_path / "vmcore.kdump"
    theirs = makedumpfile_dmesg(flat, rebuilt)
    if oracles.makedumpfile_path("1.7.6"):
        assert theirs.decode() == saved_log
    else:
        ours = kdumper("dmesg", "--no-caller-id", flat)
        assert theirs.decode() == ours.stdout

    report = json.loads((remote / "report.json").read_text())
    assert report["capture"]["target"] == "ssh" and report["capture"]["status"] == "complete"

    numbers = capture_numbers(result)
    numbers["cycle_s"] = result.timings.get("total", 0.0)
    (tmp_path / "numbers.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"ssh e2e {kernel}: {json.dumps(numbers)}; timings {result.timings}")
    assert numbers["attempts"] == 1

    # drgn with the -dbg vmlinux on the reassembled dump: the crashed thread is sysrq's
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(rebuilt))
    prog.load_debug_info([str(get_vmlinux(get_kernel(image.kernel)))])
    assert prog["init_uts_ns"].name.release.string_().decode() == image.release
    frames = [f.name for f in prog.crashed_thread().stack_trace() if f.name]
    assert "sysrq_handle_crash" in frames, frames


@vm
@pytest.mark.skipif(not FULL, reason="about 6 minutes: KDUMPER_VM_FULL=1")
def test_ssh_unreachable_dumps_to_rootfs(
    rootfs_factory: RootfsFactory, sshd: SshServer, tmp_path: Path
) -> None:
    """sshd stopped before the crash: the capture retries, gives up, and failure_action
    dump_to_rootfs saves the log and the dump on the guest's own disk; nothing arrives."""
    image = rootfs_factory("6.1")
    result = ssh_cycle(image, sshd, tmp_path, timeout=1200, stop_server=True)
    assert result.ok, _explain(result, sshd)
    assert result.capture_started and result.back
    assert not [p for p in sshd.remote.iterdir() if not p.name.startswith(".")]
    saved = [f for f in result.dump_files if f.endswith(("/vmcore", "/vmcore-dmesg.txt"))]
    assert len(saved) == 2 and saved[0].startswith("kdguest-"), result.dump_files
    assert result.capture_log is not None
    console = result.capture_log.read_text(errors="replace")
    assert "retrying in" in console or "attempt" in console, console[-3000:]
    assert "dump_to_rootfs: saving to /var/crash instead" in console, console[-3000:]
    status = result.status
    assert status is not None and status["target"]["exists"] is False, status


# --- the host side of the guest network, without QEMU ------------------------------------------


def test_ssh_network_args() -> None:
    args = ssh_network_args(2222)
    assert args[0] == "-netdev" and args[2:] == ["-device", "virtio-net-pci,netdev=kdnet"]
    opts = args[1].split(",")
    assert opts[:3] == ["user", "id=kdnet", "restrict=on"]
    assert opts[3] == (
        f"guestfwd=tcp:{SSH_GUEST_ADDR}:22-cmd:{sys.executable} {DATA_DIR / 'guestfwd-relay'} "
        "127.0.0.1 2222"
    )


def _relay(port: int) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """guestfwd-relay as QEMU runs it: the guest's connection on stdin, stdout and stderr."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, str(DATA_DIR / "guestfwd-relay"), "127.0.0.1", str(port)],
        stdin=theirs.fileno(),
        stdout=theirs.fileno(),
        stderr=theirs.fileno(),
    )
    theirs.close()
    ours.settimeout(20)
    return proc, ours


def test_guestfwd_relay(tmp_path: Path) -> None:
    """Both directions, 4 MiB each way, and each side's end of file passed on."""
    payload = os.urandom(4 << 20)
    server = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello\n" + payload)
            conn.shutdown(socket.SHUT_WR)
            chunks = []
            while data := conn.recv(1 << 16):
                chunks.append(data)
            got.append(b"".join(chunks))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    proc, guest = _relay(server.getsockname()[1])
    with guest:
        guest.sendall(payload[::-1])
        guest.shutdown(socket.SHUT_WR)
        chunks = []
        while data := guest.recv(1 << 16):
            chunks.append(data)
    assert b"".join(chunks) == b"hello\n" + payload
    assert proc.wait(timeout=20) == 0
    thread.join(timeout=20)
    server.close()
    assert got == [payload[::-1]]


def test_guestfwd_relay_nothing_listening() -> None:
    """A closed port: the guest's connection ends at once, nothing is written to it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, guest = _relay(port)
    with guest:
        assert guest.recv(100) == b""
    assert proc.wait(timeout=20) == 1
