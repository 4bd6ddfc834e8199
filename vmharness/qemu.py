"""Run QEMU guests: serial console with host timestamps, QMP control, reliable cleanup.

``QemuVM`` is generic (a kernel + initrd boot, or any extra arguments such as a disk image to
boot a full system); the vmcore cycle in :mod:`vmharness.vmcore` is one user. Every QEMU process
is ended by its own PID (SIGTERM, then SIGKILL) on success, failure and timeout, and gets
``PR_SET_PDEATHSIG`` so it also dies with the Python process. Only one harness QEMU runs at a
time on the machine (a lock file in the cache), since the machines have two cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from .cache import cache_dir, content_key
from .errors import GuestStalledError, HarnessError

QEMU = "qemu-system-x86_64"
TCG_ACCEL = "tcg,thread=multi"


@dataclass(frozen=True)
class Disk:
    """A disk attached to the guest (``-drive``)."""

    path: Path
    format: str = "raw"
    interface: str = "virtio"
    readonly: bool = False

    def args(self) -> list[str]:
        """The QEMU arguments for this disk."""
        spec = f"file={self.path},format={self.format},if={self.interface}"
        if self.readonly:
            spec += ",readonly=on"
        return ["-drive", spec]


@dataclass(frozen=True)
class QemuConfig:
    """What to boot and with which virtual hardware."""

    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    mem_mib: int = 1024
    smp: int = 2
    disks: tuple[Disk, ...] = ()
    accel: str = "tcg"
    """``tcg``, ``kvm`` or ``auto`` (KVM only when :func:`kvm_works` says so)."""
    vmcoreinfo: bool = True
    """Add ``-device vmcoreinfo`` (lets QEMU's dump-guest-memory write a VMCOREINFO note)."""
    extra_args: tuple[str, ...] = ()
    qemu: str = QEMU
    no_reboot: bool = True
    """Add ``-no-reboot`` (a guest reset ends QEMU); off for guests that must reboot."""

    def argv(self, qmp_socket: Path, accel: str) -> list[str]:
        """The full QEMU command line."""
        args = [
            self.qemu,
            "-accel",
            TCG_ACCEL if accel == "tcg" else accel,
            "-smp",
            str(self.smp),
            "-m",
            str(self.mem_mib),
            "-display",
            "none",
            *(["-no-reboot"] if self.no_reboot else []),
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-nodefaults",
            "-qmp",
            f"unix:{qmp_socket},server=on,wait=off",
        ]
        if self.kernel is not None:
            args += ["-kernel", str(self.kernel)]
        if self.initrd is not None:
            args += ["-initrd", str(self.initrd)]
        if self.append:
            args += ["-append", self.append]
        for disk in self.disks:
            args += disk.args()
        if self.vmcoreinfo:
            args += ["-device", "vmcoreinfo"]
        return args + list(self.extra_args)


class SerialLine(NamedTuple):
    """One line of the guest's serial console."""

    time: float
    """Seconds since QEMU was started (host monotonic clock)."""
    text: str


@contextlib.contextmanager
def qemu_slot(exclusive: bool = True) -> Iterator[None]:
    """Hold the machine-wide "one harness QEMU at a time" lock."""
    if not exclusive:
        yield
        return
    path = cache_dir("locks") / "qemu.lock"
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class QemuVM:
    """One QEMU process. Use as a context manager: ``with QemuVM(cfg, workdir) as vm: ...``."""

    config: QemuConfig
    workdir: Path
    serial_log: Path | None = None
    exclusive: bool = True
    accel: str = ""
    lines: list[SerialLine] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None
    _reader: threading.Thread | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _log: IO[str] | None = None
    _start: float = 0.0
    _slot: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _qmp: socket.socket | None = None
    _qmp_file: IO[str] | None = None

    @property
    def pid(self) -> int | None:
        """The QEMU process id (``None`` before start)."""
        return self._proc.pid if self._proc else None

    _sockdir: Path | None = None

    @property
    def qmp_socket(self) -> Path:
        """Path of the QMP unix socket (in a short private directory: the limit is 107 bytes)."""
        if self._sockdir is None:
            self._sockdir = Path(tempfile.mkdtemp(prefix="vmharness-"))
        return self._sockdir / "qmp.sock"

    def stderr_tail(self, lines: int = 5) -> str:
        """The last lines QEMU wrote to its standard error."""
        path = self.workdir / "qemu.stderr"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def elapsed(self) -> float:
        """Seconds since QEMU was started."""
        return time.monotonic() - self._start

    def __enter__(self) -> QemuVM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start QEMU (waits for the machine-wide QEMU slot first)."""
        if shutil.which(self.config.qemu) is None:
            raise HarnessError(f"{self.config.qemu} not found: run scripts/vm-deps.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.qmp_socket.unlink(missing_ok=True)
        self._slot.enter_context(qemu_slot(self.exclusive))
        accel = self.accel or self.config.accel
        if accel == "auto":
            accel = "kvm" if kvm_works(self.config) else "tcg"
        self.accel = accel
        argv = self.config.argv(self.qmp_socket, accel)
        (self.workdir / "qemu-cmdline.json").write_text(json.dumps(argv, indent=1) + "\n")
        log_path = self.serial_log or self.workdir / "serial.log"
        self._log = log_path.open("w", encoding="utf-8", errors="replace")
        stderr = (self.workdir / "qemu.stderr").open("wb")
        self._start = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._slot.close()
            raise
        finally:
            stderr.close()
        self._reader = threading.Thread(target=self._read_serial, daemon=True)
        self._reader.start()

    def _read_serial(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        pending = b""
        stream = self._proc.stdout
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            self._add_lines(complete)
        if pending:
            self._add_lines([pending])
        with self._cond:
            self._cond.notify_all()

    def _add_lines(self, raw: list[bytes]) -> None:
        now = self.elapsed()
        new = [SerialLine(now, r.decode("utf-8", "replace").rstrip("\r")) for r in raw]
        with self._cond:
            self.lines.extend(new)
            if self._log is not None:
                for line in new:
                    self._log.write(f"[{line.time:9.3f}] {line.text}\n")
                self._log.flush()
            self._cond.notify_all()

    def running(self) -> bool:
        """Whether the QEMU process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        abort: str | None = None,
        start: int = 0,
        silence: float | None = None,
        wedged: str | None = None,
    ) -> SerialLine | None:
        """Wait until a serial line matches ``pattern`` (a regex, searched).

        Only lines from index ``start`` of :attr:`lines` on are considered. Returns the line, or
        ``None`` when QEMU exited first. Raises :class:`HarnessError` on timeout or when a line
        matches ``abort``, and :class:`GuestStalledError` when ``silence`` is given and the
        console has printed nothing for that many seconds, or when a line matches ``wedged``
        (a hung guest).
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        abort_re = re.compile(abort) if abort else None
        wedged_re = re.compile(wedged) if wedged else None
        deadline = time.monotonic() + timeout
        seen = start
        last_output = time.monotonic()
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if regex.search(line.text):
                        return line
                    if abort_re is not None and abort_re.search(line.text):
                        raise HarnessError(f"guest reported: {line.text.strip()}")
                    if wedged_re is not None and wedged_re.search(line.text):
                        raise GuestStalledError(f"the guest is wedged: {line.text.strip()}")
                now = time.monotonic()
                if len(self.lines) > seen:
                    last_output = now
                seen = len(self.lines)
                reader_done = self._reader is None or not self._reader.is_alive()
                if reader_done and not self.running():
                    return None
                if silence is not None and now - last_output > silence:
                    raise GuestStalledError(
                        f"the guest printed nothing for {silence:.0f}s while waiting for "
                        f"{regex.pattern!r}"
                    )
                left = deadline - now
                if left <= 0:
                    raise HarnessError(
                        f"timeout after {timeout:.0f}s waiting for {regex.pattern!r}"
                    )
                self._cond.wait(min(left, 0.5))

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit by itself; returns its exit code, raises on timeout."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(
                f"QEMU (pid {self._proc.pid}) still running after {timeout:.0f}s"
            ) from exc
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` value."""
        if self._qmp_file is None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.connect(str(self.qmp_socket))
                    break
                except OSError:
                    sock.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            sock.settimeout(600)
            self._qmp = sock
            self._qmp_file = sock.makefile("rw", encoding="utf-8")
            json.loads(self._qmp_file.readline())  # greeting
            self._qmp_call("qmp_capabilities", {})
        return self._qmp_call(command, arguments)

    def _qmp_call(self, command: str, arguments: dict[str, Any]) -> Any:
        assert self._qmp_file is not None
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._qmp_file.write(json.dumps(msg) + "\n")
        self._qmp_file.flush()
        while True:
            reply = json.loads(self._qmp_file.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise HarnessError(f"QMP {command}: {reply['error'].get('desc')}")
            # asynchronous events are skipped

    def dump_guest_memory(self, path: Path, fmt: str = "elf") -> None:
        """Write the guest's memory with QEMU's own ``dump-guest-memory`` (QMP, synchronous).

        ``fmt`` is ``elf``, ``kdump-zlib``, ``kdump-lzo``, ``kdump-snappy`` (QEMU 7.2 writes the
        kdump formats flattened) or ``win-dmp``.
        """
        self.qmp("stop")
        self.qmp("dump-guest-memory", paging=False, protocol=f"file:{path}", format=fmt)

    def stop(self) -> None:
        """End QEMU by its PID (SIGTERM, then SIGKILL) and release the QEMU slot."""
        try:
            if self._qmp_file is not None:
                with contextlib.suppress(OSError):
                    self._qmp_file.close()
                if self._qmp is not None:
                    self._qmp.close()
                self._qmp_file = self._qmp = None
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if self._reader is not None:
                self._reader.join(timeout=10)
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._sockdir is not None:
                shutil.rmtree(self._sockdir, ignore_errors=True)
                self._sockdir = None
        finally:
            self._slot.close()


def qemu_version(qemu: str = QEMU) -> str:
    """``qemu-system-x86_64 --version``'s first line."""
    out = subprocess.run(
        [qemu, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return out.splitlines()[0] if out else ""


#: Seconds a KVM boot may take to reach the probe marker before KVM is declared unusable.
KVM_PROBE_TIMEOUT = 20.0
KVM_PROBE_MARKER = "KDUMPER: PROBE-OK"


def kvm_precheck() -> bool | None:
    """The cheap part of :func:`kvm_works`: ``True``/``False`` when ``KDUMPER_ACCEL``, a missing
    ``/dev/kvm`` or the CPU flags decide, ``None`` when only a probe boot can tell."""
    forced = os.environ.get("KDUMPER_ACCEL")
    if forced in ("tcg", "kvm"):
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    # Without vmx/svm the /dev/kvm here is a software implementation (kvm_pvm) under which
    # Debian kernels did not boot in 530 s (reference/vm.md): do not even probe.
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.MULTILINE):
            return False
    return None


def kvm_works(config: QemuConfig) -> bool:
    """Whether a kernel boots under KVM here; probed once per host kernel and QEMU, then cached.

    The probe boots ``config``'s kernel and initrd with ``kdumper.mode=probe`` appended (the
    harness's ``/init`` prints :data:`KVM_PROBE_MARKER` and powers off); it needs ``/dev/kvm``.
    ``KDUMPER_ACCEL=tcg|kvm`` in the environment overrides the probe.
    """
    decided = kvm_precheck()
    if decided is not None:
        return decided
    key = content_key([os.uname().release, qemu_version(config.qemu)])
    record = cache_dir("probes") / f"kvm-{key}.json"
    if record.exists():
        return bool(json.loads(record.read_text())["works"])
    probe = QemuConfig(
        kernel=config.kernel,
        initrd=config.initrd,
        append=f"console=ttyS0 panic=-1 kdumper.mode=probe {config.append}".strip(),
        mem_mib=512,
        smp=1,
        accel="kvm",
        vmcoreinfo=False,
        qemu=config.qemu,
    )
    workdir = cache_dir("probes") / f"kvm-{key}.run"
    works = False
    started = time.monotonic()
    # The caller may already hold the QEMU slot: the probe runs without taking it again.
    with QemuVM(probe, workdir, exclusive=False, accel="kvm") as vm:
        try:
            works = vm.wait_for(re.escape(KVM_PROBE_MARKER), KVM_PROBE_TIMEOUT) is not None
        except HarnessError:
            works = False
    record.write_text(
        json.dumps({"works": works, "seconds": round(time.monotonic() - started, 1)}) + "\n"
    )
    return works
