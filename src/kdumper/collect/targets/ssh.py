"""The ssh target: save the kernel log and a flattened dump on a remote host with the system ssh.

No SSH library: the capture path runs the ``ssh`` binary (OpenSSH) as kdump-utils and kdump-tools
do, always non-interactive and strict about host keys::

    ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<kdumper's own>
        -o IdentitiesOnly=yes -i <key> -o ConnectTimeout=N -o ServerAliveInterval=... -p PORT

The remote side needs only a POSIX shell with ``cat``, ``mkdir``, ``mv`` (and ``rm`` for the
probe); kdumper is not installed there. Every path in a remote command comes from the
configuration and is quoted with :func:`shlex.quote`.

On the remote host one crash gives one directory ``<path>/<dir>/`` (mode 0700, files 0600)::

    vmcore-dmesg.txt        the kernel log, sent first (``save_dmesg``)
    vmcore-incomplete       the flattened dump while it streams; renamed when the stream ended
    vmcore.flat             cleanly (ssh exit 0 and the writer finished): ``kdumper reassemble``
    vmcore.flat.blake2b     or ``makedumpfile -R`` turns it into a kdump-compressed file;
                            ``b2sum -c vmcore.flat.blake2b`` checks it

Failures: a connection that cannot be made, or drops mid-transfer, is retried with exponential
backoff (``retry_delay`` doubling up to ``retry_delay_max``, ``retries`` times) and the whole
stream starts again; after the last retry :class:`TargetUnreachableError`. A host key that is
unknown or changed, or a key the remote refuses, is not retried (:class:`HostKeyError`,
:class:`AuthenticationError`: run ``kdumper propagate``). A remote disk that fills up leaves
``vmcore-incomplete`` behind (never renamed) and raises :class:`RemoteNoSpaceError` naming it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import math
import os
import posixpath
import re
import select
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, NamedTuple, TypeVar, cast

from ...errors import (
    ConfigError,
    DumpIOError,
    ExitCode,
    KdumperError,
    MissingDependencyError,
    NoSpaceError,
    UsageError,
)
from ...logs import get_logger
from .stream import CHECKSUM_TOOLS, DEFAULT_CHECKSUM, HashingPipe, checksum_line

log = get_logger(__name__)

DEFAULT_PATH = "/var/crash"
DEFAULT_IDENTITY = "/etc/kdumper/id_ed25519"
DEFAULT_KNOWN_HOSTS = "/etc/kdumper/known_hosts"
DEFAULT_USER = "root"
DEFAULT_PORT = 22

DMESG_NAME = "vmcore-dmesg.txt"
INCOMPLETE_NAME = "vmcore-incomplete"
DUMP_NAME = "vmcore.flat"

# Debian's kdump-tools retries 16 times 3 s apart (SSH_KDUMP_RETRY); with doubling delays capped
# at a minute, 8 retries wait about 4 minutes in all: long enough for a network or a remote host
# that reboots, short enough that failure_action still runs in a capture kernel.
DEFAULT_RETRIES = 8
DEFAULT_RETRY_DELAY = 2.0
DEFAULT_RETRY_DELAY_MAX = 60.0
DEFAULT_CONNECT_TIMEOUT = 10
# a dead peer is noticed after interval x count seconds without an answer (ssh exits, the pipe
# breaks, the transfer is retried)
DEFAULT_ALIVE_INTERVAL = 15
DEFAULT_ALIVE_COUNT = 4
# short remote commands (mkdir, the kernel log, rename) must end within this much time after
# the connection is made
COMMAND_TIMEOUT = 120.0
_STDERR_KEEP = 1 << 16  # the last bytes of ssh's stderr kept for the error message

_HOST_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_HOST_FAILED = "Host key verification failed"
_AUTH_FAILED = "Permission denied ("
_NO_SPACE = ("No space left on device", "Disk quota exceeded", "File too large")
_PRELUDE = "LC_ALL=C; export LC_ALL; umask 077"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._:@+-]+$")

T = TypeVar("T")


# ---- errors ----------------------------------------------------------------------------------


class SshTargetError(DumpIOError):
    """Sending to the ssh target failed; ``path`` is ``user@host:remote-path``."""


class TargetUnreachableError(SshTargetError):
    """The target could not be reached, or the connection kept dropping, after every retry."""


class RemoteCommandError(SshTargetError):
    """A command on the remote host failed (a directory not writable, a missing tool)."""


class RemoteNoSpaceError(SshTargetError, NoSpaceError):
    """The remote filesystem is full; what arrived is kept as ``vmcore-incomplete``."""


class HostKeyError(SshTargetError):
    """The target's host key is not the one kdumper trusts; nothing was sent."""

    exit_code = ExitCode.CONFIG
    template = "{msg}"


class HostKeyChangedError(HostKeyError):
    """The target presented a different host key than the one recorded by propagate."""


class HostKeyUnknownError(HostKeyError):
    """kdumper's known_hosts has no key for the target."""


class AuthenticationError(SshTargetError):
    """The target refused kdumper's key (not propagated, or removed)."""

    exit_code = ExitCode.CONFIG
    template = "{msg}"


class RetryableError(Exception):
    """A failure worth retrying (connection refused, timed out, dropped); internal: callers see
    :class:`TargetUnreachableError` once the retries are spent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---- configuration ---------------------------------------------------------------------------


class SshSpec(NamedTuple):
    """The parts of ``user@host:port``; None where the spec leaves a part out."""

    user: str | None
    host: str
    port: int | None
    path: str | None = None  # only from ``ssh://user@host:port/path``


def parse_ssh_spec(spec: str) -> SshSpec:
    """Parse ``[ssh://][user@]host[:port][/path]``; IPv6 as ``[addr]:port`` or bare ``addr``.

    A ``/path`` part is accepted only in the ``ssh://`` URL form. Raises :class:`ConfigError`.
    """
    text = spec.strip()
    path: str | None = None
    if text.startswith("ssh://"):
        text = text[len("ssh://") :]
        slash = text.find("/")
        if slash >= 0:
            text, path = text[:slash], text[slash:] or None
    if not text:
        raise ConfigError(f"ssh target {spec!r}: empty; expected user@host[:port]")
    user: str | None = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise ConfigError(f"ssh target {spec!r}: empty user name before '@'")
    port: int | None = None
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"ssh target {spec!r}: '[' without ']' around the address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"ssh target {spec!r}: unexpected {rest!r} after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, IPv4, or a bare IPv6 address (no port)
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"ssh target {spec!r}: port {port_text!r} is not 1..65535")
        port = int(port_text)
    _check_host(host, spec)
    if user is not None:
        _check_user(user, spec)
    return SshSpec(user, host, port, path)


def _check_host(host: str, spec: str) -> None:
    if not host or host.startswith("-") or not _SAFE_NAME.match(host.replace("%", "")):
        raise ConfigError(f"ssh target {spec!r}: {host!r} is not a host name or address")


def _check_user(user: str, spec: str) -> None:
    if user.startswith("-") or not _SAFE_NAME.match(user) or "@" in user:
        raise ConfigError(f"ssh target {spec!r}: {user!r} is not a user name")


def _check_ssh_path(value: str, what: str) -> None:
    # ssh splits option values on whitespace and expands % and ~ in file names
    if not value or any(c.isspace() for c in value) or any(c in value for c in "\"'%\0"):
        raise ConfigError(
            f"ssh {what} {value!r}: must be a path without spaces, quotes or '%' characters"
        )


@dataclass(frozen=True)
class SshTarget:
    """Where and how to send dumps over ssh (``[target] ssh = ...`` in the configuration).

    ``retries`` is the number of attempts after the first; between attempts the delay starts at
    ``retry_delay`` seconds and doubles up to ``retry_delay_max``.
    """

    host: str
    user: str = DEFAULT_USER
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    identity: str = DEFAULT_IDENTITY
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    retry_delay_max: float = DEFAULT_RETRY_DELAY_MAX
    server_alive_interval: int = DEFAULT_ALIVE_INTERVAL
    server_alive_count_max: int = DEFAULT_ALIVE_COUNT
    checksum: str = DEFAULT_CHECKSUM
    ciphers: str | None = None  # ssh -c: e.g. "aes128-gcm@openssh.com" on CPUs with AES-NI
    ssh_config: str | None = None  # ssh -F (None: the system's and the user's ssh_config)
    ssh_binary: str = "ssh"

    def __post_init__(self) -> None:
        spec = self.spec
        _check_host(self.host, spec)
        _check_user(self.user, spec)
        if not 0 < self.port < 65536:
            raise ConfigError(f"ssh target {spec}: port {self.port} is not 1..65535")
        if not self.path or "\0" in self.path or "\n" in self.path:
            raise ConfigError(f"ssh target {spec}: remote path {self.path!r} is not a path")
        _check_ssh_path(self.identity, "identity file")
        _check_ssh_path(self.known_hosts, "known_hosts file")
        if self.ssh_config is not None:
            _check_ssh_path(self.ssh_config, "config file")
        if self.retries < 0:
            raise ConfigError(f"ssh target {spec}: retries must be 0 or more, not {self.retries}")
        for name in ("connect_timeout", "retry_delay_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ssh target {spec}: {name} must be positive")
        if self.retry_delay < 0:
            raise ConfigError(f"ssh target {spec}: retry_delay must not be negative")
        if self.server_alive_interval < 1 or self.server_alive_count_max < 1:
            raise ConfigError(f"ssh target {spec}: server alive interval and count must be >= 1")
        if self.checksum not in CHECKSUM_TOOLS:
            raise ConfigError(
                f"ssh target {spec}: checksum {self.checksum!r} is not one of "
                f"{', '.join(CHECKSUM_TOOLS)}"
            )
        if self.ciphers is not None and not re.fullmatch(r"[A-Za-z0-9@.,+-]+", self.ciphers):
            raise ConfigError(f"ssh target {spec}: ciphers {self.ciphers!r} is not a cipher list")

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> SshTarget:
        """A target from ``user@host[:port]`` (see :func:`parse_ssh_spec`) and other fields."""
        parsed = parse_ssh_spec(spec)
        values: dict[str, Any] = {"host": parsed.host}
        if parsed.user is not None:
            values["user"] = parsed.user
        if parsed.port is not None:
            values["port"] = parsed.port
        if parsed.path is not None:
            values["path"] = parsed.path
        values.update({k: v for k, v in options.items() if v is not None})
        return cls(**values)

    def with_options(self, **changes: Any) -> SshTarget:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def host_display(self) -> str:
        """The host as written in specs and known_hosts (IPv6 in brackets when a port follows)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def spec(self) -> str:
        """``user@host:port``."""
        return f"{self.user}@{self.host_display}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name ssh looks the host key up by: ``host``, or ``[host]:port`` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def remote(self, *parts: str) -> str:
        """A remote path under the target directory."""
        return posixpath.join(self.path, *parts)

    def where(self, remote_path: str | None = None) -> str:
        """``user@host:/remote/path`` for messages."""
        return f"{self.user}@{self.host_display}:{remote_path or self.path}"

    def delays(self) -> list[float]:
        """The waits before each retry."""
        return [min(self.retry_delay_max, self.retry_delay * (2**i)) for i in range(self.retries)]


def ssh_options(target: SshTarget, *, batch: bool = True, identity: bool = True) -> list[str]:
    """The ``ssh`` options kdumper always uses (``-l user -p port``, no host, no command).

    ``batch=False`` and ``identity=False`` are for ``kdumper propagate``'s first login, which may
    ask for a password or use the user's own keys.
    """
    opts: dict[str, str] = {
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": target.known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "ConnectTimeout": str(max(1, math.ceil(target.connect_timeout))),
        "ServerAliveInterval": str(target.server_alive_interval),
        "ServerAliveCountMax": str(target.server_alive_count_max),
        "ConnectionAttempts": "1",  # kdumper retries itself, with backoff
        "ControlMaster": "no",
        "ControlPath": "none",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "Compression": "no",  # the dump is compressed already
        "RequestTTY": "no",
        "SendEnv": "-*",
        "IPQoS": "throughput",
    }
    if batch:
        opts["BatchMode"] = "yes"
    if identity:
        opts["IdentitiesOnly"] = "yes"
    argv: list[str] = []
    if target.ssh_config is not None:
        argv += ["-F", target.ssh_config]
    for key, value in opts.items():
        argv += ["-o", f"{key}={value}"]
    if identity:
        argv += ["-i", target.identity]
    if target.ciphers:
        argv += ["-c", target.ciphers]
    argv += ["-l", target.user, "-p", str(target.port)]
    return argv


def ssh_argv(
    target: SshTarget, script: str, *, batch: bool = True, identity: bool = True
) -> list[str]:
    """The whole ``ssh`` command line that runs ``script`` (POSIX sh) on the target."""
    return [
        target.ssh_binary,
        *ssh_options(target, batch=batch, identity=identity),
        "--",
        target.host,
        script,
    ]


def remote_script(*commands: str) -> str:
    """Remote commands joined with ``&&`` after a C locale and ``umask 077``."""
    return " && ".join((_PRELUDE, *commands))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(LC_ALL="C", LANG="C")
    return env


# ---- running ssh -----------------------------------------------------------------------------


def _last_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("@")]
    return lines[-1] if lines else ""


def _classify(
    target: SshTarget, rc: int, stderr: str, remote_path: str
) -> KdumperError | RetryableError | None:
    """What an ssh exit status and stderr mean: None (success), retry, or a final error."""
    if rc == 0:
        return None
    host = target.host_display
    if _HOST_CHANGED in stderr:
        return HostKeyChangedError(
            f"host key of {host} changed: refusing to send the dump; if the change is expected "
            "run kdumper propagate again",
            path=target.where(),
        )
    if _HOST_FAILED in stderr:
        return HostKeyUnknownError(
            f"host key of {host} is not in {target.known_hosts}: refusing to send the dump; "
            "run kdumper propagate to record it",
            path=target.where(),
        )
    if rc == 255 and _AUTH_FAILED in stderr:
        return AuthenticationError(
            f"{target.user}@{host} refused kdumper's key {target.identity} "
            f"({_last_line(stderr)}): run kdumper propagate",
            path=target.where(),
        )
    if rc == 255 or rc < 0:
        why = _last_line(stderr) or (f"ssh killed by signal {-rc}" if rc < 0 else "ssh failed")
        return RetryableError(why)
    why = _last_line(stderr) or f"exit status {rc}"
    if any(s in stderr for s in _NO_SPACE):
        return RemoteNoSpaceError(
            f"the remote filesystem is full ({why})", path=target.where(remote_path)
        )
    return RemoteCommandError(f"the remote command failed: {why}", path=target.where(remote_path))


def _missing_ssh(target: SshTarget) -> MissingDependencyError:
    return MissingDependencyError(
        "the ssh target", target.ssh_binary, "install openssh-client (apt install openssh-client)"
    )


def run_remote(
    target: SshTarget,
    script: str,
    *,
    data: bytes = b"",
    remote_path: str,
    timeout: float | None = None,
    batch: bool = True,
    identity: bool = True,
) -> bytes:
    """One ssh run of ``script``; returns its stdout; raises the classified failure."""
    argv = ssh_argv(target, script, batch=batch, identity=identity)
    limit = timeout if timeout is not None else target.connect_timeout + COMMAND_TIMEOUT
    try:
        proc = subprocess.run(
            argv,
            input=data,
            capture_output=True,
            timeout=limit,
            env=_env(),
            check=False,
        )
    except FileNotFoundError:
        raise _missing_ssh(target) from None
    except subprocess.TimeoutExpired:
        raise RetryableError(f"no answer within {limit:.0f} s") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    outcome = _classify(target, proc.returncode, stderr, remote_path)
    if outcome is not None:
        raise outcome
    return proc.stdout


def run_with_retries(target: SshTarget, what: str, attempt: Callable[[], T]) -> tuple[T, int]:
    """Call ``attempt`` until it does not fail transiently; returns its result and the attempts.

    Waits :meth:`SshTarget.delays` between attempts; after the last one raises
    :class:`TargetUnreachableError` naming ``what`` and the last ssh error.
    """
    delays = target.delays()
    for number in range(1, len(delays) + 2):
        try:
            return attempt(), number
        except RetryableError as e:
            if number > len(delays):
                raise TargetUnreachableError(
                    f"cannot {what} after {number} attempt{'s' if number > 1 else ''}: {e.reason}",
                    path=target.where(),
                ) from None
            delay = delays[number - 1]
            log.warning(
                "%s: %s (attempt %d of %d); retrying in %.1f s",
                target.where(),
                e.reason,
                number,
                len(delays) + 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or any(c in name for c in "\0\n"):
        raise UsageError(f"dump directory name {name!r} must be one path component")


def dump_dir_name(host_tag: str, when: float | None = None) -> str:
    """``<host_tag>-YYYY-MM-DD-HH-MM-SS`` (local time), the remote directory of one crash."""
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", host_tag) or "host"
    return f"{tag}-{time.strftime('%Y-%m-%d-%H-%M-%S', time.localtime(when))}"


# ---- saving ----------------------------------------------------------------------------------


@dataclass
class DmesgResult:
    """Where :func:`save_dmesg` put the kernel log."""

    remote_path: str
    bytes: int
    attempts: int


def save_dmesg(target: SshTarget, dump_dir_name: str, data: bytes) -> DmesgResult:
    """Send the kernel log first: ``<path>/<dir>/vmcore-dmesg.txt`` (0600; directory 0700).

    Written as ``vmcore-dmesg.txt.tmp`` and renamed, so sending it again (after a retry) is
    harmless. Retries like :func:`stream_dump`.
    """
    _check_name(dump_dir_name)
    remote_dir = target.remote(dump_dir_name)
    final = posixpath.join(remote_dir, DMESG_NAME)
    tmp = final + ".tmp"
    q = shlex.quote
    script = remote_script(
        f"mkdir -p -m 0700 -- {q(remote_dir)}",
        f"cat > {q(tmp)}",
        f"mv -f -- {q(tmp)} {q(final)}",
    )

    def attempt() -> None:
        run_remote(target, script, data=data, remote_path=final)

    _, attempts = run_with_retries(target, f"send the kernel log to {target.where(final)}", attempt)
    return DmesgResult(remote_path=final, bytes=len(data), attempts=attempts)


@dataclass
class StreamResult:
    """What :func:`stream_dump` sent."""

    remote_path: str  # .../vmcore.flat
    checksum_path: str  # .../vmcore.flat.blake2b
    algorithm: str  # "blake2b" (b2sum), "sha256" (sha256sum), ...
    digest: str  # hex digest of the stream as sent
    bytes: int  # bytes of the stream (the last, successful attempt)
    seconds: float  # duration of the successful attempt, connection set-up included
    attempts: int  # 1 + the number of retries it took
    retry_reasons: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Bytes per second of the successful attempt."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


class _StderrReader(threading.Thread):
    """Drains a child's stderr (a pipe it owns) so ssh never blocks; keeps the last 64 KiB."""

    def __init__(self, fd: int) -> None:
        super().__init__(name="ssh-stderr", daemon=True)
        self._fd = fd
        self._buf = bytearray()

    def run(self) -> None:
        try:
            with contextlib.suppress(OSError):
                while chunk := os.read(self._fd, 4096):
                    self._buf += chunk
                    if len(self._buf) > 2 * _STDERR_KEEP:
                        del self._buf[:-_STDERR_KEEP]
        finally:
            os.close(self._fd)

    def text(self) -> str:
        self.join(timeout=5)
        return bytes(self._buf[-_STDERR_KEEP:]).decode("utf-8", "replace")


@dataclass
class _Attempt:
    bytes: int
    digest: str
    seconds: float


WriteFn = Callable[[BinaryIO], object]
READY = b"kdumper-ready"  # the remote shell prints this once the directory exists and cat starts


def _wait_ready(fd: int, timeout: float) -> str:
    """``"ready"`` once the remote side printed :data:`READY`; ``"eof"`` if ssh closed its
    output first (it failed or ended); ``"timeout"`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    seen = b""
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return "eof"
        seen = (seen + chunk)[-4096:]  # a chatty login shell may print before the marker
        if READY + b"\n" in seen:
            return "ready"
    return "timeout"


def _stream_once(target: SshTarget, script: str, remote_path: str, write_fn: WriteFn) -> _Attempt:
    """One connection: wait until the remote ``cat`` runs, then let ``write_fn`` fill the pipe.

    ``write_fn`` is only called once the connection is up, so an unreachable target or a bad
    host key costs no work of the writer (and sends nothing).
    """
    argv = ssh_argv(target, script)
    started = time.monotonic()
    in_r, in_w = os.pipe()  # our own pipes: each descriptor is closed exactly once
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen(argv, stdin=in_r, stdout=out_w, stderr=err_w, env=_env())
    except FileNotFoundError:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise _missing_ssh(target) from None
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    reader = _StderrReader(err_r)
    reader.start()
    pipe = HashingPipe(in_w, target.checksum, name=target.where(remote_path))
    writer_error: BaseException | None = None
    wait_limit = target.connect_timeout + COMMAND_TIMEOUT
    state = "eof"
    try:
        state = _wait_ready(out_r, wait_limit)
        if state == "ready":
            write_fn(cast(BinaryIO, pipe))
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    except BaseException as e:  # the writer's own failure, or the pipe broke under it
        writer_error = e
    finally:
        pipe.close()  # end of file for the remote cat
    ready = state == "ready"
    if state == "timeout":
        proc.kill()
    # the remote cat is finishing the file; a dead peer is noticed by ServerAlive* in ssh
    limit = target.server_alive_interval * target.server_alive_count_max + COMMAND_TIMEOUT
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc, state, wait_limit = -9, "timeout", limit
    finally:
        os.close(out_r)
    seconds = time.monotonic() - started
    stderr = reader.text()
    if writer_error is not None and not pipe.broken:
        # not a transport problem: the remote keeps what arrived as vmcore-incomplete
        raise writer_error
    if ready and writer_error is None and pipe.ends_flattened_stream() is False:
        raise DumpIOError(
            "the writer returned without ending the flattened stream (no end marker: was "
            "FlatSink.finish() called?); the dump is left incomplete",
            path=target.where(remote_path),
        )
    if state == "timeout":
        raise RetryableError(f"no answer from the remote side within {wait_limit:.0f} s")
    outcome = _classify(target, rc, stderr, remote_path)
    if outcome is None and not ready:
        outcome = RetryableError("the remote side did not start receiving")
    if outcome is None and writer_error is not None:
        outcome = RetryableError(f"the connection broke while sending ({writer_error})")
    if outcome is not None:
        raise outcome
    return _Attempt(bytes=pipe.bytes_written, digest=pipe.hexdigest(), seconds=seconds)


def stream_dump(target: SshTarget, dump_dir_name: str, write_fn: WriteFn) -> StreamResult:
    """Stream a flattened dump into ``<path>/<dir>/vmcore-incomplete``, then rename it.

    ``write_fn(stream)`` writes the whole flattened dump into the binary ``stream`` (e.g.
    ``sink = FlatSink(stream)``, ``write_kdump(sink, dump)``, ``sink.finish()``; or
    ``collect.pipeline.save(dump, stream, SaveOptions(format="flat"))``); a flattened stream
    without its end marker is not renamed (:class:`DumpIOError`). ``write_fn`` MUST be
    re-runnable: when the connection drops, the transfer starts again from the beginning and
    ``write_fn`` is called again with a new stream.
    An exception from ``write_fn`` that is not caused by the broken pipe is re-raised at once
    (no retry); the remote file stays ``vmcore-incomplete``.

    Only when ssh exits 0 after the writer finished is the file renamed to ``vmcore.flat``, with
    its checksum (computed while streaming) beside it as ``vmcore.flat.<algorithm>``.
    """
    _check_name(dump_dir_name)
    remote_dir = target.remote(dump_dir_name)
    incomplete = posixpath.join(remote_dir, INCOMPLETE_NAME)
    q = shlex.quote
    script = remote_script(
        f"mkdir -p -m 0700 -- {q(remote_dir)}",
        f"echo {READY.decode()}",
        f"exec cat > {q(incomplete)}",
    )
    reasons: list[str] = []

    def attempt() -> _Attempt:
        try:
            return _stream_once(target, script, incomplete, write_fn)
        except RetryableError as e:
            reasons.append(e.reason)
            raise

    sent, attempts = run_with_retries(
        target, f"send the dump to {target.where(incomplete)}", attempt
    )
    final = posixpath.join(remote_dir, DUMP_NAME)
    sum_path = f"{final}.{target.checksum}"
    sum_tmp = posixpath.join(remote_dir, f".{DUMP_NAME}.{target.checksum}.tmp")
    # idempotent: a retried rename finds vmcore.flat already in place
    publish = remote_script(
        f"cat > {q(sum_tmp)}",
        f"mv -f -- {q(sum_tmp)} {q(sum_path)}",
        f"{{ if [ -f {q(incomplete)} ]; then mv -f -- {q(incomplete)} {q(final)}; "
        f"else [ -f {q(final)} ] || {{ echo 'kdumper: {INCOMPLETE_NAME} is missing' >&2; "
        "exit 1; }; fi; }",
    )
    line = checksum_line(sent.digest, DUMP_NAME).encode()

    def rename() -> None:
        run_remote(target, publish, data=line, remote_path=final)

    run_with_retries(target, f"rename the dump to {target.where(final)}", rename)
    return StreamResult(
        remote_path=final,
        checksum_path=sum_path,
        algorithm=target.checksum,
        digest=sent.digest,
        bytes=sent.bytes,
        seconds=sent.seconds,
        attempts=attempts,
        retry_reasons=reasons,
    )


# ---- status probe ----------------------------------------------------------------------------


@dataclass
class TargetStatus:
    """What :func:`check_target` found, for ``kdumper status``; None = not checked."""

    target: str  # user@host:port
    path: str
    identity_present: bool
    host_key_known: bool
    reachable: bool | None = None  # a TCP connection to the ssh port succeeded
    authenticated: bool | None = None  # the host key matched and kdumper's key was accepted
    path_writable: bool | None = None  # a file could be created and removed in the remote path
    problem: str | None = None  # the first thing wrong, with what to do about it

    @property
    def ok(self) -> bool:
        """Whether a dump could be sent now."""
        return self.problem is None and bool(self.path_writable)


def _glob(pattern: str) -> re.Pattern[str]:
    """ssh's host patterns: ``*`` and ``?`` are wildcards, everything else is literal."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    )


def _pattern_matches(patterns: str, name: str) -> bool:
    """Whether a known_hosts host field (``a,b,[c]:22``, ``|1|salt|hash``, ``*.x``) names
    ``name``; a matching ``!pattern`` excludes it."""
    found = False
    for pat in patterns.split(","):
        if pat.startswith("|1|"):
            parts = pat.split("|")
            if len(parts) != 4:
                continue
            try:
                salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            except (binascii.Error, ValueError):
                continue
            mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
            found = found or hmac.compare_digest(mac, digest)
            continue
        negated = pat.startswith("!")
        pat = pat[1:] if negated else pat
        hit = _glob(pat).fullmatch(name.lower()) is not None
        if hit and negated:
            return False
        found = found or hit
    return found


def matching_host_lines(known_hosts: str, name: str) -> list[str]:
    """The lines of ``known_hosts`` holding keys for ``name`` (plain, wildcard or hashed);
    ``@cert-authority``/``@revoked`` lines are left out. A missing file has none."""
    try:
        with open(known_hosts, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise DumpIOError(f"cannot read: {e.strerror}", path=known_hosts) from None
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@")):
            continue
        if _pattern_matches(fields[0], name):
            found.append(line.strip())
    return found


def _tcp_reachable(target: SshTarget) -> tuple[bool, str]:
    try:
        with socket.create_connection((target.host, target.port), timeout=target.connect_timeout):
            return True, ""
    except OSError as e:
        return False, e.strerror or str(e)


def check_target(target: SshTarget) -> TargetStatus:
    """Probe the target once, no retries: key present? host key known? reachable? writable?

    Creates and removes one empty file ``.kdumper-probe-<pid>`` in the remote path. Never raises
    for a problem of the target: it is described in :attr:`TargetStatus.problem`.
    """
    identity = os.path.isfile(target.identity)
    known = bool(matching_host_lines(target.known_hosts, target.known_hosts_name))
    status = TargetStatus(
        target=target.spec, path=target.path, identity_present=identity, host_key_known=known
    )
    status.reachable, why = _tcp_reachable(target)
    problems: list[str] = []
    if not identity:
        problems.append(f"kdumper's ssh key {target.identity} is missing: run kdumper propagate")
    if not known:
        problems.append(
            f"no host key for {target.known_hosts_name} in {target.known_hosts}: "
            "run kdumper propagate"
        )
    if not status.reachable:
        problems.append(f"{target.host_display} port {target.port} is not reachable ({why})")
    if problems:
        status.problem = problems[0]
        return status
    q = shlex.quote
    probe = posixpath.join(target.path, ".kdumper-probe-")
    script = remote_script(
        f"mkdir -p -m 0700 -- {q(target.path)}",
        f"t={q(probe)}$$",
        ': > "$t"',
        'rm -f -- "$t"',
    )
    try:
        run_remote(target, script, remote_path=target.path, timeout=target.connect_timeout + 30)
    except RetryableError as e:
        status.reachable = False
        status.problem = f"{target.where()}: {e.reason}"
    except (HostKeyError, AuthenticationError) as e:
        status.authenticated = False
        status.problem = str(e)
    except SshTargetError as e:
        status.authenticated = True
        status.path_writable = False
        status.problem = str(e)
    else:
        status.authenticated = status.path_writable = True
    return status


__all__: Sequence[str] = (
    "AuthenticationError",
    "DmesgResult",
    "HostKeyChangedError",
    "HostKeyError",
    "HostKeyUnknownError",
    "RemoteCommandError",
    "RemoteNoSpaceError",
    "SshSpec",
    "SshTarget",
    "SshTargetError",
    "StreamResult",
    "TargetStatus",
    "TargetUnreachableError",
    "check_target",
    "dump_dir_name",
    "matching_host_lines",
    "parse_ssh_spec",
    "save_dmesg",
    "stream_dump",
)
