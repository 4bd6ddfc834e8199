"""``kdumper status``: is this machine protected, and if not, why and what to do.

:func:`collect_status` reads everything through :class:`~kdumper.host.paths.HostPaths` (and an
injectable ``statvfs``), so tests simulate each state with a fake tree: no reservation,
reserved but not loaded, loaded, lockdown, target missing.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..collect.targets.ssh import SshTarget
from ..collect.targets.ssh import TargetStatus as SshTargetStatus
from ..config import Config, ssh_destination
from .boot import LoadPlan, plan_load
from .crashkernel import (
    CrashkernelError,
    compute_reservation,
    current_reservation,
    mib,
    parse_cmdline,
    recommend,
)
from .kexec import KexecState, read_state
from .paths import read_text
from .service import Host, TestResult, check_test, loaded_record, ram_size

StatVfs = Callable[[str], os.statvfs_result]
SshProbe = Callable[[SshTarget], SshTargetStatus]


@dataclass(frozen=True)
class Problem:
    """Something that stops (``blocking``) or weakens protection, and the fix."""

    what: str
    fix: str
    blocking: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"what": self.what, "fix": self.fix, "blocking": self.blocking}


@dataclass(frozen=True)
class TargetStatus:
    """The dump target as seen from here."""

    kind: str
    location: str
    exists: bool | None  # None: not checked (remote)
    free: int | None = None
    size: int | None = None
    min_free: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class LastDump:
    """The newest dump directory in the target."""

    path: str
    mtime: int
    incomplete: bool
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**self.__dict__, "files": list(self.files)}


@dataclass
class HostStatus:
    """Everything ``kdumper status`` reports."""

    operational: bool = False
    ram: int | None = None
    cmdline_crashkernel: str = ""
    reserved: int = 0
    reserved_ranges: tuple[tuple[int, int], ...] = ()
    expected: int | None = None  # what the command line should reserve on this RAM
    recommended: int | None = None
    pending_crashkernel: str | None = None  # bootloader config differs from /proc/cmdline
    state: KexecState | None = None
    loaded: dict[str, Any] | None = None  # loaded.json
    plan: LoadPlan | None = None
    target: TargetStatus | None = None
    config_files: tuple[str, ...] = ()
    config_error: str | None = None
    last_dump: LastDump | None = None
    test: TestResult | None = None
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "operational": self.operational,
            "ram": self.ram,
            "crashkernel": {
                "cmdline": self.cmdline_crashkernel,
                "reserved": self.reserved,
                "ranges": [list(r) for r in self.reserved_ranges],
                "expected": self.expected,
                "recommended": self.recommended,
                "pending": self.pending_crashkernel,
            },
            "kexec": self.state.to_dict() if self.state else None,
            "loaded": self.loaded,
            "would_load": self.plan.to_dict() if self.plan else None,
            "target": self.target.to_dict() if self.target else None,
            "config": {"files": list(self.config_files), "error": self.config_error},
            "last_dump": self.last_dump.to_dict() if self.last_dump else None,
            "test": self.test.to_dict() if self.test else None,
            "problems": [p.to_dict() for p in self.problems],
        }


_GRUB_VAR = re.compile(r"^\s*(?:export\s+)?GRUB_CMDLINE_LINUX(?:_DEFAULT)?=(.*)$")


def pending_crashkernel(grub_text: str | None, running: str) -> str | None:
    """The ``crashkernel=`` of /etc/default/grub when it differs from the running kernel's."""
    if grub_text is None:
        return None
    params: list[str] = []
    for line in grub_text.splitlines():
        m = _GRUB_VAR.match(line)
        if m:
            params += re.findall(r"crashkernel=[^\s\"']+", m.group(1))
    configured = " ".join(params)
    return configured if configured and configured != running else None


#: file names that make a directory a dump directory: kdumper's and kdump-utils' ``vmcore``,
#: ``vmcore-incomplete``, ``vmcore-dmesg.txt``; kdump-tools' ``dump.<stamp>``, ``dump-incomplete``,
#: ``dmesg.<stamp>``
DUMP_FILE_PREFIXES = ("vmcore", "dump", "dmesg")


def _dump_files(path: str) -> tuple[str, ...] | None:
    """The files of ``path`` when it is a dump directory (None: it holds no dump file)."""
    try:
        names = tuple(sorted(os.listdir(path)))
    except OSError:
        return None
    return names if any(n.startswith(DUMP_FILE_PREFIXES) for n in names) else None


def last_dump(directory: str) -> LastDump | None:
    """The newest dump directory of ``directory``: a subdirectory holding a dump or its log
    (:data:`DUMP_FILE_PREFIXES`), so ``lost+found`` and other directories are never taken for
    one."""
    best: tuple[float, str, tuple[str, ...]] | None = None
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
                if best is not None and mtime <= best[0]:
                    continue
                files = _dump_files(entry.path)
                if files is not None:
                    best = (mtime, entry.path, files)
    except OSError:
        return None
    if best is None:
        return None
    mtime, path, files = best
    return LastDump(path, int(mtime), any("incomplete" in f for f in files), files)


def _target(
    cfg: Config, statvfs: StatVfs, problems: list[Problem], probe_ssh: SshProbe | None
) -> TargetStatus:
    t = cfg.target
    if t.kind == "ssh" and t.ssh is not None:
        where = f"{ssh_destination(t.ssh)}:{t.ssh.path}"
        if not os.path.isfile(t.ssh.identity):
            problems.append(
                Problem(
                    f"the ssh identity file {t.ssh.identity} does not exist",
                    f"kdumper propagate --target {ssh_destination(t.ssh)} (creates the key, "
                    "installs it and pins the host key)",
                )
            )
        elif probe_ssh is not None:
            probe = probe_ssh(t.ssh)
            if probe.problem is not None:
                # the target may come back before the next crash: a warning, not a blocker
                problems.append(
                    Problem(
                        f"the ssh target {where} cannot take a dump now: {probe.problem}",
                        "fix the target or the network; kdumper propagate re-checks it",
                        blocking=False,
                    )
                )
            return TargetStatus("ssh", where, probe.ok)
        return TargetStatus("ssh", where, None)
    if t.kind == "raw" and t.raw:
        try:
            mode = os.stat(t.raw).st_mode
        except OSError:
            problems.append(
                Problem(
                    f"the raw target {t.raw} does not exist", "check [target] raw (a block device)"
                )
            )
            return TargetStatus("raw", t.raw, False)
        if not stat.S_ISBLK(mode):
            problems.append(
                Problem(f"the raw target {t.raw} is not a block device", "check [target] raw")
            )
        return TargetStatus("raw", t.raw, True)
    if not os.path.isdir(t.path):
        problems.append(
            Problem(
                f"the target directory {t.path} does not exist, so a dump would not be saved",
                f"mkdir -p {t.path} (or set [target] path)",
            )
        )
        return TargetStatus("local", t.path, False)
    try:
        st = statvfs(t.path)
    except OSError:
        return TargetStatus("local", t.path, True)
    free = st.f_bavail * st.f_frsize
    size = st.f_blocks * st.f_frsize
    need = cfg.retention.min_free.required(size)
    if free <= need:
        problems.append(
            Problem(
                f"{t.path} has {mib(free)} free, not more than [retention] min_free "
                f"({cfg.retention.min_free}): a dump would not fit",
                "free some space, lower min_free, or set [retention] keep",
            )
        )
    return TargetStatus("local", t.path, True, free, size, need)


def collect_status(
    cfg: Config | None,
    host: Host,
    *,
    config_error: str | None = None,
    statvfs: StatVfs = os.statvfs,
    probe_ssh: SshProbe | None = None,
) -> HostStatus:
    """Gather the state of the machine (``cfg`` None: the configuration did not load).

    ``probe_ssh`` (e.g. :func:`kdumper.collect.targets.ssh.check_target`) checks an ssh target
    over the network; without it only the local key file is checked.
    """
    paths = host.paths
    st = HostStatus(config_error=config_error)
    problems = st.problems
    if cfg is not None:
        st.config_files = cfg.files
    else:
        problems.append(
            Problem(
                f"the configuration does not load: {config_error}",
                "fix it; `kdumper config check` shows the problem",
            )
        )
    state = read_state(paths)
    st.state = state
    st.ram = ram_size(paths)
    cmdline = read_text(paths.proc_cmdline) or ""
    args = parse_cmdline(cmdline)
    st.cmdline_crashkernel = " ".join(f"crashkernel={v}" for v in args.all_values)
    res = current_reservation(read_text(paths.proc_iomem), read_text(paths.kexec_crash_size))
    st.reserved, st.reserved_ranges = res.size, res.ranges
    if st.ram:
        try:
            st.expected = compute_reservation(args, st.ram, host.arch).size
        except CrashkernelError:
            st.expected = 0
        rec = recommend(st.ram)
        st.recommended = rec.size or None
    st.pending_crashkernel = pending_crashkernel(
        read_text(paths.default_grub), st.cmdline_crashkernel
    )
    pending = (
        f"; the bootloader already has {st.pending_crashkernel}: reboot to use it"
        if st.pending_crashkernel
        else ""
    )

    if not state.supported:
        problems.append(
            Problem(
                f"this kernel cannot kdump ({paths.kexec_crash_loaded} is missing)",
                "boot a kernel built with CONFIG_KEXEC_FILE and CONFIG_CRASH_DUMP "
                "(distribution kernels are)",
            )
        )
    elif not res.reserved:
        if args.present:
            problems.append(
                Problem(
                    f"{st.cmdline_crashkernel} is on the kernel command line but no memory was "
                    "reserved (the value gives nothing for this much RAM, or the kernel found no "
                    "room: see `dmesg | grep -i crashkernel`)",
                    "kdumper crashkernel --set auto, then reboot" + pending,
                )
            )
        else:
            problems.append(
                Problem(
                    "no memory is reserved for a crash kernel (no crashkernel= on the kernel "
                    "command line)",
                    "kdumper crashkernel --set auto, then reboot" + pending,
                )
            )
    elif st.recommended and res.size and res.size < st.recommended:
        problems.append(
            Problem(
                f"the reservation ({mib(res.size)}) is below the {mib(st.recommended)} recommended "
                "for this machine: the capture may run out of memory",
                "kdumper crashkernel --set auto, then reboot" + pending,
                blocking=False,
            )
        )

    if cfg is not None:
        plan = plan_load(cfg.load, paths, release=host.release, arch=host.arch)
        st.plan = plan
        st.target = _target(cfg, statvfs, problems, probe_ssh)
        if cfg.target.kind != "ssh":
            st.last_dump = last_dump(cfg.target.path)
        st.test = check_test(cfg, paths)
        missing = []
        if plan.kernel is None:
            missing.append("no kernel image found for " + plan.release + " (set [load] kernel)")
        if plan.initrd_wanted and plan.initrd is None:
            missing.append("no initrd found for " + plan.release + " (set [load] initrd)")
        for m in missing:
            problems.append(
                Problem(
                    m,
                    "install the kernel's files in /boot or set them in [load]",
                    blocking=not state.loaded,
                )
            )

    record = loaded_record(paths)
    if state.loaded:
        st.loaded = record
        if record and record.get("kernel") and isinstance(record.get("loaded_at"), int):
            try:
                changed = os.path.getmtime(record["kernel"]) > record["loaded_at"]
            except OSError:
                changed = True
            if changed:
                problems.append(
                    Problem(
                        f"{record['kernel']} changed or went away after it was loaded",
                        "kdumper reload",
                        blocking=False,
                    )
                )
    elif state.supported and res.reserved:
        lock = ""
        if state.lockdown in ("integrity", "confidentiality"):
            lock = (
                f"; the kernel is locked down ({state.lockdown}): it loads only signed "
                "kernels, so use the distribution's signed one"
            )
        problems.append(
            Problem(
                "the capture kernel is not loaded" + lock,
                "systemctl enable --now kdumper.service (`kdumper load` shows why a load fails)",
            )
        )
    if st.test is not None and st.test.result in ("failed", "incomplete"):
        problems.append(
            Problem(
                f"the last `kdumper test` ({st.test.id}) {st.test.result}: {st.test.message}",
                "fix the cause and run `kdumper test` again",
                blocking=False,
            )
        )
    st.operational = bool(state.loaded) and not any(p.blocking for p in problems)
    return st
