"""A real OpenSSH server on 127.0.0.1 for the ssh target tests (a pytest plugin module).

Use it from a test module through a fixture of its own: ``with sshd_server() as server: yield
server`` (importing a fixture into a test module trips ruff's F811).

Each ``sshd`` fixture gets its own directory under /tmp (0755, so the test user can reach it),
its own ed25519 host key, an ``sshd_config`` listening on 127.0.0.1 on a free port, and runs
``/usr/sbin/sshd -D -f <cfg> -E <log>`` as a child process, ended by its PID (and the PIDs of
its per-connection children) at teardown. Logins are for one dedicated user, ``kdumper-test``
(created with ``useradd --system`` if absent, unlocked with password ``*``: no password login is
possible). The account is shared by every test run on the machine and never changed per test:
each server sets ``HOME=<dir>/home`` for its sessions (``SetEnv``) and reads
``AuthorizedKeysFile <dir>/bootstrap_keys <dir>/home/.ssh/authorized_keys``, so tests log in with
a bootstrap key, and propagate installs kdumper's own key into the session's
``~/.ssh/authorized_keys``, as on a real host.

Needs root (sshd changes user; useradd; tmpfs mounts). When not root, or sshd is not installed,
the tests are skipped with the reason — except under CI (``CI`` set), where that is a failure.
``scripts/ssh-deps.sh`` installs the packages.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SSHD = "/usr/sbin/sshd"
TEST_USER = "kdumper-test"
# The test user's home in /etc/passwd: "/" exists (no "Could not chdir" noise) and the user
# cannot write there. Sessions get HOME=<fixture dir>/home from sshd's SetEnv instead, so test
# runs that happen at the same time never change the shared account.
USER_HOME = "/"
START_TIMEOUT = 10.0


def unavailable_reason() -> str | None:
    """Why a real sshd cannot run here, or None."""
    if os.geteuid() != 0:
        return "the ssh tests need root (they start sshd and create the user kdumper-test)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing: run scripts/ssh-deps.sh (installs openssh-server)"
    for tool in ("ssh", "ssh-keygen", "ssh-keyscan"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/ssh-deps.sh (installs openssh-client)"
    return None


def require_sshd() -> None:
    """Skip (fail under CI) when a real sshd cannot run."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the ssh tests: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _locked(name: str) -> bool:
    """Whether the account's password field is locked ('!'), which sshd without PAM refuses."""
    with open("/etc/shadow", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == name:
                return len(fields) < 2 or fields[1].startswith("!")
    return True


def ensure_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """The dedicated test user, created (system user, home "/", /bin/sh) if absent.

    Changes the account only when it is not as wanted, so test runs at the same time do not
    race on /etc/passwd.
    """
    try:
        pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", USER_HOME,
             "--shell", "/bin/sh", name],
            capture_output=True, text=True,
        )  # fmt: skip
        if made.returncode not in (0, 9):  # 9: made by another test run meanwhile
            raise RuntimeError(f"useradd {name} failed: {made.stderr.strip()}") from None
    if pwd.getpwnam(name).pw_dir != USER_HOME:  # made by an older version of this module
        subprocess.run(["usermod", "-d", USER_HOME, name], check=True, capture_output=True)
    if _locked(name):
        # '*' matches no password: the account stays key-only, but is not "locked"
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def _children(pid: int) -> list[int]:
    """Descendants of ``pid`` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def keygen(path: Path, comment: str = "kdumper-test") -> str:
    """A new ed25519 key pair at ``path``; returns the public key line."""
    for p in (path, Path(f"{path}.pub")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


class SshServer:
    """One private sshd on 127.0.0.1 and the files around it."""

    def __init__(self, base: Path, user: pwd.struct_passwd) -> None:
        self.base = base
        self.user = user.pw_name
        self.uid, self.gid = user.pw_uid, user.pw_gid
        self.port = free_port()
        self.home = base / "home"  # $HOME of the test user's sessions on this server
        self.remote = base / "remote"  # a directory the test user may write: dump paths go here
        self.host_key = base / "ssh_host_ed25519_key"
        self.bootstrap_key = base / "bootstrap_ed25519"
        self.config = base / "sshd_config"
        self.log = base / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._mounts: list[Path] = []
        for d in (self.home, self.remote):
            d.mkdir(mode=0o700)
            os.chown(d, self.uid, self.gid)
        keygen(self.host_key, "kdumper-test-host")
        (base / "bootstrap_keys").write_text(keygen(self.bootstrap_key) + "\n")
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {base / 'sshd.pid'}",
                    f"AuthorizedKeysFile {base / 'bootstrap_keys'} "
                    f"{self.home / '.ssh' / 'authorized_keys'}",
                    f"SetEnv HOME={self.home}",
                    f"AllowUsers {self.user}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin no",
                    "X11Forwarding no",
                    "AllowTcpForwarding no",
                    "PrintMotd no",
                    "LoginGraceTime 30",
                    "MaxStartups 50",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    # ---- process ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start sshd and wait until its port accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "sshd is running already"
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not listen on port {self.port}: {self.log_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End sshd and every session it forked (by PID), as a crash of the server would."""
        if self.proc is None:
            return
        pids = [self.proc.pid, *_children(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in pids[1:]:  # reap nothing (not our children); wait until they are gone
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
                    if f.read().rpartition(")")[2].split()[0] == "Z":
                        break
                time.sleep(0.01)

    def stop(self) -> None:
        """End sshd and its sessions gently (SIGTERM)."""
        self.kill(signal.SIGTERM)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def regenerate_host_key(self) -> None:
        """Give the server a new host key (takes effect at the next start)."""
        keygen(self.host_key, "kdumper-test-host-new")

    def log_text(self) -> str:
        """The sshd log so far."""
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    # ---- what clients need -----------------------------------------------------------------

    @property
    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA... comment`` of the current host key."""
        return Path(f"{self.host_key}.pub").read_text().strip()

    def known_hosts_line(self) -> str:
        """The known_hosts line for this server's current host key."""
        key_type, blob = self.host_public_key.split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {blob}"

    def client_files(self, where: Path) -> tuple[Path, Path]:
        """(identity, known_hosts) for a client that logs in with the bootstrap key."""
        where.mkdir(parents=True, exist_ok=True)
        known = where / "known_hosts"
        known.write_text(self.known_hosts_line() + "\n")
        return self.bootstrap_key, known

    def target(self, where: Path, path: Path | None = None, **options: Any) -> Any:
        """An ``SshTarget`` for this server: bootstrap key, its own known_hosts, short retries."""
        from kdumper.collect.targets.ssh import SshTarget

        identity, known = self.client_files(where)
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "user": self.user,
            "port": self.port,
            "path": str(path if path is not None else self.remote),
            "identity": str(identity),
            "known_hosts": str(known),
            "connect_timeout": 5,
            "retries": 2,
            "retry_delay": 0.1,
            "retry_delay_max": 1.0,
            "server_alive_interval": 2,
            "server_alive_count_max": 3,
        }
        values.update(options)
        return SshTarget(**values)

    def user_dir(self, path: Path, mode: int = 0o700) -> Path:
        """A directory owned by the test user."""
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        os.chown(path, self.uid, self.gid)
        return path

    def mount_tmpfs(self, path: Path, size: str = "1m") -> Path:
        """A tiny tmpfs owned by the test user at ``path`` (unmounted at teardown)."""
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size},mode=0700,uid={self.uid},gid={self.gid}"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "kdumper-test", str(path)],
            check=True,
            capture_output=True,
        )
        self._mounts.append(path)
        return path

    def close(self) -> None:
        """Stop sshd, unmount, remove the directory."""
        self.stop()
        for m in reversed(self._mounts):
            if subprocess.run(["umount", str(m)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(m)], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def sshd_server() -> Iterator[SshServer]:
    """A running sshd on 127.0.0.1 (own host key, own port) for user ``kdumper-test``."""
    require_sshd()
    user = ensure_user()
    base = Path(tempfile.mkdtemp(prefix="kdumper-sshd-", dir="/tmp"))
    base.chmod(0o755)
    server = SshServer(base, user)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def sshd() -> Iterator[SshServer]:
    """The ``sshd_server()`` of one test (a test module can also import this fixture)."""
    with sshd_server() as server:
        yield server
