"""``kdumper propagate``: set up the ssh target once, on the first kernel.

Like ``kdumpctl propagate`` / ``kdump-config propagate`` (which run ``ssh-keygen`` and
``ssh-copy-id``), in four steps, each skipped when already done:

1. a dedicated key for kdumper: ``ssh-keygen -t ed25519 -N "" -f /etc/kdumper/id_ed25519
   -C kdumper@<hostname>`` (never the administrator's own keys);
2. the target's host key, scanned with ``ssh-keyscan`` and recorded in kdumper's OWN known_hosts
   (``/etc/kdumper/known_hosts``): trust on first use, but only after the caller confirmed the
   fingerprint (``confirm`` callback: ``--yes`` or an interactive question); a key that differs
   from the recorded one needs the same confirmation again;
3. the public key appended to the remote ``~/.ssh/authorized_keys`` (0600, ``~/.ssh`` 0700), over
   a first login that may use a password (interactive), the agent or the user's own keys, or a
   given bootstrap key — skipped when kdumper's key is accepted already;
4. a test write with kdumper's key, exactly as the capture will log in: a small file is written
   into the remote dump path, read back, compared and removed.

Nothing here prints: the result says what was done; the CLI shows it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import posixpath
import secrets
import shlex
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from ..collect.targets.ssh import (
    AuthenticationError,
    RetryableError,
    SshTarget,
    TargetUnreachableError,
    matching_host_lines,
    remote_script,
    run_remote,
    run_with_retries,
)
from ..errors import ConfigError, DumpIOError, ExitCode, KdumperError, MissingDependencyError

KEYSCAN_TYPES = "ed25519,ecdsa,rsa"


class HostKeyNotTrustedError(KdumperError):
    """The administrator did not confirm the target's host key; nothing was changed."""

    exit_code = ExitCode.CONFIG


class KeyInstallError(KdumperError):
    """kdumper's public key could not be installed on the target."""

    exit_code = ExitCode.CONFIG


class TestWriteError(DumpIOError):
    """The test write into the remote dump path did not read back what was written."""


@dataclass(frozen=True)
class HostKey:
    """One key of the target as ``ssh-keyscan`` reported it."""

    line: str  # the known_hosts line: "[host]:port ssh-ed25519 AAAA..."
    key_type: str  # "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"
    fingerprint: str  # "SHA256:..." as ``ssh-keygen -lf`` prints it

    @property
    def key(self) -> tuple[str, str]:
        """(type, base64 blob): what identifies the key regardless of the host field."""
        fields = self.line.split()
        return fields[1], fields[2]


def fingerprint(blob_b64: str) -> str:
    """The SHA256 fingerprint of a base64 public key blob (``ssh-keygen -l`` format)."""
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"not a base64 public key: {blob_b64[:20]}...") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _host_key(line: str) -> HostKey | None:
    fields = line.split()
    if len(fields) < 3 or fields[0].startswith(("#", "@")):
        return None
    try:
        return HostKey(
            line=" ".join(fields[:3]), key_type=fields[1], fingerprint=fingerprint(fields[2])
        )
    except ConfigError:
        return None


@dataclass
class PropagateResult:
    """What :func:`propagate` did."""

    target: str  # user@host:port
    path: str  # the remote dump path
    identity: str
    key_created: bool
    key_fingerprint: str
    known_hosts: str
    host_keys: list[HostKey]
    host_keys_recorded: str  # "new", "unchanged" or "replaced"
    key_installed: bool  # False: the target accepted kdumper's key already
    test_write: str  # the remote file written, read back and removed
    notes: list[str] = field(default_factory=list)


def _tool(name: str, argv: list[str], *, data: bytes = b"", timeout: float = 60) -> bytes:
    try:
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise MissingDependencyError(
            "kdumper propagate", name, "install openssh-client (apt install openssh-client)"
        ) from None
    except subprocess.TimeoutExpired:
        raise DumpIOError(f"{name} did not finish within {timeout:.0f} s", path=argv[-1]) from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DumpIOError(
            f"{name} failed: {err[-1] if err else f'exit status {proc.returncode}'}",
            path=argv[-1],
        )
    return proc.stdout


def default_comment() -> str:
    """``kdumper@<hostname>``, the comment of kdumper's key."""
    return f"kdumper@{socket.gethostname() or 'localhost'}"


def ensure_identity(identity: str, comment: str | None = None) -> tuple[bool, str]:
    """Create kdumper's ed25519 key at ``identity`` unless it exists; ``(created, public key)``.

    The directory is created 0700; a missing ``.pub`` is derived from the private key.
    """
    pub = identity + ".pub"
    created = False
    if not os.path.exists(identity):
        parent = os.path.dirname(os.path.abspath(identity))
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as e:
            raise DumpIOError(f"cannot create the directory: {e.strerror}", path=parent) from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pub)  # a stale public key of another private key
        _tool(
            "ssh-keygen",
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment or default_comment(),
             "-f", identity],
        )  # fmt: skip
        created = True
    if not os.path.exists(pub):
        text = _tool("ssh-keygen", ["ssh-keygen", "-y", "-f", identity]).decode()
        try:
            fd = os.open(pub, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text.strip() + "\n")
        except OSError as e:
            raise DumpIOError(f"cannot write: {e.strerror}", path=pub) from None
    try:
        with open(pub, encoding="utf-8") as f:
            public = f.read().strip()
    except OSError as e:
        raise DumpIOError(f"cannot read: {e.strerror}", path=pub) from None
    if len(public.split()) < 2 or "\n" in public:
        raise ConfigError(f"{pub}: not an OpenSSH public key")
    return created, public


def scan_host_keys(target: SshTarget) -> list[HostKey]:
    """The target's host keys from ``ssh-keyscan -p PORT -T TIMEOUT host``."""
    timeout = max(1, int(target.connect_timeout))
    argv = ["ssh-keyscan", "-p", str(target.port), "-T", str(timeout), "-t", KEYSCAN_TYPES,
            target.host]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout * 4 + 10, check=False)
    except FileNotFoundError:
        raise MissingDependencyError(
            "kdumper propagate", "ssh-keyscan", "install openssh-client"
        ) from None
    except subprocess.TimeoutExpired:
        proc = None
    keys = (
        [] if proc is None else [k for k in map(_host_key, proc.stdout.decode().splitlines()) if k]
    )
    if not keys:
        raise TargetUnreachableError(
            f"no host key from {target.host_display} port {target.port} (ssh-keyscan got no "
            "answer: is sshd running and the port reachable?)",
            path=target.where(),
        )
    return keys


def recorded_host_keys(target: SshTarget) -> list[HostKey]:
    """The keys kdumper's known_hosts holds for the target."""
    lines = matching_host_lines(target.known_hosts, target.known_hosts_name)
    return [k for k in map(_host_key, lines) if k]


def record_host_keys(target: SshTarget, keys: list[HostKey]) -> None:
    """Replace the target's entries in kdumper's known_hosts by ``keys`` (atomic rewrite)."""
    path = target.known_hosts
    name = target.known_hosts_name
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            old = f.read().splitlines()
    except FileNotFoundError:
        old = []
    except OSError as e:
        raise DumpIOError(f"cannot read: {e.strerror}", path=path) from None
    drop = set(matching_host_lines(path, name)) if old else set()
    kept = [ln for ln in old if ln.strip() not in drop]
    lines = kept + [f"{name} {k.key_type} {k.key[1]}" for k in keys]
    parent = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(ln + "\n" for ln in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise DumpIOError(f"cannot write: {e.strerror}", path=path) from None


def install_key(
    target: SshTarget,
    public_key: str,
    *,
    bootstrap_identity: str | None = None,
    interactive: bool = False,
) -> None:
    """Append ``public_key`` to the remote ``~/.ssh/authorized_keys`` unless it is there.

    The login uses ``bootstrap_identity`` if given; else the agent and the user's default keys,
    and a password prompt when ``interactive`` (stdin is a terminal).
    """
    q = shlex.quote
    keys = '"$HOME/.ssh/authorized_keys"'
    script = remote_script(
        'mkdir -p -- "$HOME/.ssh"',
        'chmod 0700 -- "$HOME/.ssh"',
        f"touch -- {keys}",
        f"chmod 0600 -- {keys}",
        f'{{ if [ -s {keys} ] && [ -n "$(tail -c 1 -- {keys})" ]; then echo >> {keys}; fi; }}',
        f"{{ grep -qxF -- {q(public_key)} {keys} || printf '%s\\n' {q(public_key)} >> {keys}; }}",
        f'{{ ! command -v restorecon >/dev/null 2>&1 || restorecon -F -- "$HOME/.ssh" {keys} '
        "|| true; }",
    )
    boot = target
    if bootstrap_identity is not None:
        boot = target.with_options(identity=bootstrap_identity)
    try:
        if interactive and bootstrap_identity is None:
            _interactive(boot, script)
        else:
            run_remote(
                boot,
                script,
                remote_path="~/.ssh/authorized_keys",
                batch=True,
                identity=bootstrap_identity is not None,
            )
    except AuthenticationError as e:
        how = (
            f"the bootstrap key {bootstrap_identity}"
            if bootstrap_identity
            else "the agent, your own keys or a password"
        )
        raise KeyInstallError(
            f"cannot log in to {target.user}@{target.host_display} with {how} to install "
            f"kdumper's key ({e.fields.get('msg', e)}); append {target.identity}.pub to "
            "~/.ssh/authorized_keys there by hand, then run kdumper propagate again"
        ) from None
    except RetryableError as e:
        raise TargetUnreachableError(
            f"cannot install kdumper's key: {e.reason}", path=target.where()
        ) from None


def _interactive(target: SshTarget, script: str) -> None:
    """Run ``script`` with the terminal attached (ssh may ask for a password)."""
    from ..collect.targets.ssh import ssh_argv

    argv = ssh_argv(target, script, batch=False, identity=False)
    try:
        rc = subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        raise MissingDependencyError("kdumper propagate", "ssh", "install openssh-client") from None
    if rc == 255:
        raise AuthenticationError("the login failed (see ssh's message above)", path=target.where())
    if rc != 0:
        raise KeyInstallError(f"installing kdumper's key on {target.where()} failed (exit {rc})")


def test_write(target: SshTarget) -> str:
    """Write a small file into the remote dump path with kdumper's key, read it back, remove it.

    Returns the remote file's path; raises the target's error (host key, key refused, path not
    writable, unreachable after retries) or :class:`TestWriteError` if what came back differs.
    """
    token = secrets.token_hex(16)
    name = posixpath.join(target.path, f".kdumper-test-{token[:8]}")
    q = shlex.quote
    script = remote_script(
        f"mkdir -p -m 0700 -- {q(target.path)}",
        f"cat > {q(name + '.tmp')}",
        f"mv -f -- {q(name + '.tmp')} {q(name)}",
        f"cat -- {q(name)}",
        f"rm -f -- {q(name)}",
    )
    payload = f"kdumper test write {token}\n".encode()

    def attempt() -> bytes:
        return run_remote(target, script, data=payload, remote_path=name)

    back, _ = run_with_retries(target, f"test-write {target.where(name)}", attempt)
    if back != payload:
        raise TestWriteError(
            f"the test file read back {len(back)} bytes that differ from the {len(payload)} "
            "written",
            path=target.where(name),
        )
    return name


ConfirmFn = Callable[[list[HostKey], list[HostKey]], bool]


def propagate(
    target: SshTarget,
    *,
    confirm: ConfirmFn,
    bootstrap_identity: str | None = None,
    interactive: bool = False,
    comment: str | None = None,
) -> PropagateResult:
    """Set up ``target``: key, host key, authorized_keys, test write (see the module docs).

    ``confirm(scanned, changed)`` is asked before a host key is trusted: ``changed`` is empty
    the first time (or when only new key types appeared) and holds the recorded keys the target
    no longer presents when its keys changed. It is not asked when the scanned keys are recorded
    already. Returning False raises
    :class:`HostKeyNotTrustedError` with nothing changed on either side.
    """
    notes: list[str] = []
    scanned = scan_host_keys(target)
    recorded = recorded_host_keys(target)
    seen = {k.key for k in scanned}
    if recorded and seen <= {k.key for k in recorded}:
        state = "unchanged"
    else:
        # keys the target no longer presents for a type it still offers: it changed
        types = {k.key_type for k in scanned}
        changed = [k for k in recorded if k.key not in seen and k.key_type in types]
        if not confirm(scanned, changed):
            raise HostKeyNotTrustedError(
                f"host key of {target.host_display} not trusted: nothing was changed "
                "(check the fingerprint, then run again with --yes or answer yes)"
            )
        record_host_keys(target, scanned)
        state = "replaced" if recorded else "new"
    created, public = ensure_identity(target.identity, comment)
    fields = public.split()
    installed = False
    try:
        written = test_write(target)
        notes.append("kdumper's key was accepted already")
    except AuthenticationError:
        install_key(target, public, bootstrap_identity=bootstrap_identity, interactive=interactive)
        installed = True
        written = test_write(target)
    return PropagateResult(
        target=target.spec,
        path=target.path,
        identity=target.identity,
        key_created=created,
        key_fingerprint=fingerprint(fields[1]),
        known_hosts=target.known_hosts,
        host_keys=scanned,
        host_keys_recorded=state,
        key_installed=installed,
        test_write=written,
        notes=notes,
    )
