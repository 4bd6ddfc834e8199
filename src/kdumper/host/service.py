"""Arming the machine: load, unload, reload and test the capture kernel; their state files.

State files (in ``HostPaths.state_dir``, ``/var/lib/kdumper``):

* ``loaded.json`` — what ``kdumper load`` loaded (kernel, initrd, command line, time): the kernel
  does not report the loaded command line, and ``status`` shows it from here.
* ``test-status.json`` — the pending ``kdumper test``: its id, when, and the boot it was started
  in. The test id also goes on the capture command line as ``kdumper.test_id=<id>``; the capture
  writes it into the dump directory as a file ``test-id`` (:data:`TEST_ID_FILE`). At the next
  boot ``status`` finds that directory and reports the test as passed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, ssh_destination
from ..errors import DumpIOError, ExitCode, KdumperError
from ..handoff import TEST_ID_FILE
from . import kexec
from .boot import LoadPlan, plan_load
from .crashkernel import current_reservation, parse_iomem, system_ram
from .paths import HostPaths, read_int, read_text


class MissingKernelError(KdumperError):
    """The kernel image or initrd to load is not there."""

    exit_code = ExitCode.NOT_FOUND


LOADED_STATE = "loaded.json"
TEST_STATE = "test-status.json"


@dataclass(frozen=True)
class Host:
    """The machine the host commands act on: paths, release, architecture, the syscall."""

    paths: HostPaths = field(default_factory=HostPaths)
    release: str = field(default_factory=platform.release)
    arch: str = field(default_factory=platform.machine)
    syscall: kexec.SyscallFn | None = None  # None: the real kexec_file_load

    def kexec_call(self) -> kexec.SyscallFn:
        """The syscall to use; the real one only for the real paths (a fake machine tree
        never reaches the running kernel)."""
        if self.syscall is not None:
            return self.syscall
        if self.paths != HostPaths():
            raise kexec.KexecError(
                "refusing to call the real kexec_file_load for a fake machine tree "
                f"(state files under {os.path.dirname(self.paths.state_dir)})"
            )
        return kexec.real_syscall(self.arch)


def ram_size(paths: HostPaths) -> int | None:
    """System RAM in bytes: top-level ``System RAM`` of /proc/iomem, else MemTotal plus the
    reservation (non-root readers see zero addresses in /proc/iomem)."""
    iomem = read_text(paths.proc_iomem)
    if iomem:
        ram = system_ram(parse_iomem(iomem))
        if ram:
            return ram
    meminfo = read_text(paths.proc_meminfo) or ""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            try:
                total = int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
            res = current_reservation(iomem, read_text(paths.kexec_crash_size))
            return total + res.size
    return None


def _write_json(path: str, data: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DumpIOError(f"cannot write state file: {e.strerror}", path=path) from None


def read_json(path: str) -> dict[str, Any] | None:
    """A state file, or None when missing or unreadable."""
    text = read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class LoadOutcome:
    """What a load did."""

    plan: LoadPlan
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"loaded": True, **self.plan.to_dict(), "warnings": list(self.warnings)}


def check_plan(plan: LoadPlan) -> None:
    """Refuse a plan without a kernel, or without the initrd it needs."""
    if plan.kernel is None:
        looked = ", ".join(plan.kernel_candidates)
        raise MissingKernelError(
            f"no kernel image found for {plan.release} (looked at {looked}); set [load] kernel"
        )
    if plan.initrd_wanted and plan.initrd is None:
        raise MissingKernelError(
            f'no initrd found for {plan.release} in /boot; set [load] initrd, or initrd = "" '
            "to load without one"
        )


def load_capture(cfg: Config, host: Host, *, test_id: str | None = None) -> LoadOutcome:
    """Load the capture kernel for ``cfg`` (replacing a loaded one); raises
    :class:`kexec.KexecError` with a diagnosis when the kernel refuses."""
    paths = host.paths
    plan = plan_load(cfg.load, paths, release=host.release, arch=host.arch, test_id=test_id)
    state = kexec.read_state(paths)
    if not state.supported:
        raise kexec.KexecError(
            f"this kernel has no kdump support ({paths.kexec_crash_loaded} is missing: built "
            "without CONFIG_KEXEC_FILE / CONFIG_CRASH_DUMP)",
            errno.ENOSYS,
        )
    if not state.crash_size:
        msg = kexec.diagnose(errno.EADDRNOTAVAIL, state=state)
        raise kexec.KexecError(f"cannot load the capture kernel: {msg}", errno.EADDRNOTAVAIL)
    check_plan(plan)
    assert plan.kernel is not None
    req = kexec.LoadRequest(plan.kernel, plan.initrd, plan.cmdline)
    kexec.load(req, syscall=host.kexec_call(), paths=paths, arch=host.arch, ram=ram_size(paths))
    warnings = []
    if read_int(paths.kexec_crash_loaded) == 0:
        warnings.append(f"the load succeeded but {paths.kexec_crash_loaded} still reads 0")
    if cfg.load.panic_on_oops:
        try:
            with open(paths.panic_on_oops, "w", encoding="ascii") as f:
                f.write("1\n")
        except OSError as e:
            warnings.append(f"could not set kernel.panic_on_oops=1: {e.strerror}")
    _write_json(
        os.path.join(paths.state_dir, LOADED_STATE),
        {
            "kernel": plan.kernel,
            "initrd": plan.initrd,
            "cmdline": plan.cmdline,
            "release": plan.release,
            "loaded_at": int(time.time()),
            "test_id": test_id,
        },
    )
    return LoadOutcome(plan, tuple(warnings))


def unload_capture(host: Host) -> bool:
    """Unload the capture kernel; returns whether one was loaded."""
    was = read_int(host.paths.kexec_crash_loaded)
    kexec.unload(syscall=host.kexec_call(), paths=host.paths, arch=host.arch)
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(host.paths.state_dir, LOADED_STATE))
    return bool(was)


def reload_capture(cfg: Config, host: Host, *, if_loaded: bool = False) -> LoadOutcome | None:
    """Load again (new kernel, config or hotplugged memory); None when ``if_loaded`` and nothing
    is loaded. The kernel frees the old image first: a failed reload leaves none loaded."""
    if if_loaded and not read_int(host.paths.kexec_crash_loaded):
        return None
    return load_capture(cfg, host)


def loaded_record(paths: HostPaths) -> dict[str, Any] | None:
    """``loaded.json``: what was loaded last."""
    return read_json(os.path.join(paths.state_dir, LOADED_STATE))


# ---------------------------------------------------------------------------------------------
# kdumper test


def new_test_id(now: float | None = None) -> str:
    """A test id: ``<unix time>-<8 hex digits>``."""
    return f"{int(now if now is not None else time.time())}-{secrets.token_hex(4)}"


def boot_id(paths: HostPaths) -> str | None:
    """This boot's id (changes at every boot)."""
    text = read_text(paths.boot_id)
    return text.strip() if text else None


def prepare_test(cfg: Config, host: Host, *, test_id: str | None = None) -> str:
    """Record a pending test and reload the capture kernel with its id; returns the id.

    Needs a loaded capture kernel (so that a crash is caught)."""
    paths = host.paths
    if not read_int(paths.kexec_crash_loaded):
        raise kexec.KexecError(
            "the capture kernel is not loaded, so a crash now would not be saved; run "
            "`kdumper load` first (`kdumper status` says what is missing)"
        )
    tid = test_id or new_test_id()
    _write_json(
        paths.test_state_file,
        {
            "id": tid,
            "status": "pending",
            "requested_at": int(time.time()),
            "boot_id": boot_id(paths),
            "target": cfg.target.kind,
            "path": cfg.target.ssh.path if cfg.target.ssh else cfg.target.path,
        },
    )
    load_capture(cfg, host, test_id=tid)
    return tid


def trigger_crash(paths: HostPaths, *, sync: Callable[[], None] = os.sync) -> None:
    """Flush the filesystems and crash the kernel through ``/proc/sysrq-trigger``."""
    sync()
    try:
        with open(paths.sysrq_trigger, "w", encoding="ascii") as f:
            f.write("c")
    except OSError as e:
        raise kexec.KexecError(
            f"cannot write {paths.sysrq_trigger}: {e.strerror}", e.errno or 0
        ) from None


@dataclass(frozen=True)
class TestResult:
    """The result of the last ``kdumper test``."""

    id: str
    result: str  # pending | passed | incomplete | failed | unverified
    message: str
    requested_at: int | None = None
    dump_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def find_test_dump(directory: str, test_id: str) -> str | None:
    """The dump directory under ``directory`` whose ``test-id`` file holds ``test_id``."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    for name in names:
        full = os.path.join(directory, name)
        text = read_text(os.path.join(full, TEST_ID_FILE))
        if text is not None and text.strip() == test_id:
            return full
    return None


def _incomplete(directory: str) -> bool:
    try:
        return any("incomplete" in name for name in os.listdir(directory))
    except OSError:
        return False


def check_test(cfg: Config, paths: HostPaths) -> TestResult | None:
    """Whether the last ``kdumper test`` saved its dump (None: no test was run)."""
    state = read_json(paths.test_state_file)
    if state is None or not isinstance(state.get("id"), str):
        return None
    tid = state["id"]
    when = state.get("requested_at") if isinstance(state.get("requested_at"), int) else None
    if state.get("boot_id") and state.get("boot_id") == boot_id(paths):
        return TestResult(
            tid,
            "pending",
            "started in this boot; the machine has not crashed "
            "since (was the confirmation declined?)",
            when,
        )
    if cfg.target.kind == "ssh" and cfg.target.ssh is not None:
        return TestResult(
            tid,
            "unverified",
            f"dumps go to {ssh_destination(cfg.target.ssh)}; look for a directory with a "
            f"'{TEST_ID_FILE}' file holding {tid} under {cfg.target.ssh.path} there",
            when,
        )
    found = find_test_dump(cfg.target.path, tid)
    if found is None:
        hint = " (raw dumps are copied there at boot)" if cfg.target.kind == "raw" else ""
        return TestResult(
            tid,
            "failed",
            f"the machine rebooted but no dump of test {tid} is in {cfg.target.path}{hint}; "
            "see the capture's messages with `journalctl -b -1 -u kdumper-capture`",
            when,
        )
    if _incomplete(found):
        return TestResult(tid, "incomplete", f"{found} holds an incomplete dump", when, found)
    return TestResult(tid, "passed", f"saved in {found}", when, found)
