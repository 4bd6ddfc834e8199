"""The capture: what ``kdumper capture`` does inside the capture kernel.

``kdumper-capture.service`` runs it when the capture kernel boots the machine's own root
filesystem. One plain line per step goes to the ``say`` callback (the journal and the serial
console show them); nothing here prints. The steps:

1. open ``/proc/vmcore``; choose the dump directory name ``<host>-YYYY-MM-DD-HH-MM-SS``
   (:mod:`kdumper.collect.retention`: crashed kernel's nodename, crash time) — one naming for
   local, raw (recovered at boot) and ssh targets;
2. ``[hooks] pre`` (environment: ``KDUMPER_STAGE=pre``, ``KDUMPER_VMCORE``, ``KDUMPER_TARGET``,
   ``KDUMPER_TARGET_PATH``, ``KDUMPER_DUMP_NAME``, ``KDUMPER_TEST_ID``); a failing hook is
   reported and the capture goes on (the dump matters more than the hook);
3. the kernel log FIRST: ``vmcore-dmesg.txt`` (0600, fsynced, renamed), byte-identical to
   ``kdumper dmesg``; on a raw device, the log goes right after the header;
4. free-space guard (local and raw): estimate the dump from the pages the level keeps and a
   compressed sample of them; when it does not fit in the free space minus ``[retention]
   min_free``, first delete old dumps beyond ``keep``, then filter harder (dump level 31; zlib for
   none/lzo/snappy; ELF becomes kdump-compressed), and if it still may not fit, write anyway with
   a hard limit at the free space: the writer stops cleanly there and the dump stays
   ``vmcore-incomplete``, marked incomplete in its header and readable;
5. the dump into ``vmcore-incomplete``, renamed ``vmcore`` when complete (level, codec, format
   of ``[dump]``; flattened for raw and ssh);
6. ``report.json``: the triage report (``kdumper report --json`` of the crashed kernel, without
   the memory composition, which would cost a second pass over ``struct page``; the page
   counts per class of the capture are under ``capture``);
7. the ``test-id`` file when the command line has ``kdumper.test_id=`` (``kdumper test``);
   written once the dump has been attempted, so ``kdumper status`` sees a failed test dump as
   incomplete or missing, never as passed;
8. retention: keep the newest ``[retention] keep`` dump directories (kdumper's names only; never
   the new one), after a complete local dump only — an incomplete dump never costs an old one;
9. ``[hooks] post`` (``KDUMPER_STAGE=post``, ``KDUMPER_STATUS=complete|incomplete|failed``,
   ``KDUMPER_DUMP_DIR``, ``KDUMPER_DUMP_FILE``, ...);
10. ``final_action`` after a complete dump (or one that only lacks pages the source lost);
    ``failure_action`` when the target failed or filled up. ``dump_to_rootfs`` saves the dump
    again into :data:`ROOTFS_DIR` on the root filesystem (unless the failed target is that
    filesystem already), then takes ``final_action``.

Whatever was saved stays saved: a failed dump keeps the log, a failed report keeps the dump.
An unexpected error in a step is reported as a failure of that step, never skips the action.

Actions (:func:`system_action`): ``reboot``/``halt``/``poweroff`` sync, then run ``systemctl
--force <action>`` under systemd (units are not stopped, processes are killed, filesystems are
unmounted or remounted read-only: the dump is fsynced already) and ``<action> -f`` elsewhere;
if that fails, ``reboot``/``poweroff`` fall back to ``/proc/sysrq-trigger``. ``shell`` starts
``emergency.target`` without waiting (``systemctl --no-block start``). Once an action has been
started ``kdumper capture`` exits 0, so that the unit's ``FailureAction=reboot-force`` neither
races a halt nor reboots under the shell.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import resource
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ..config import Config
from ..errors import (
    ExitCode,
    InputNotFoundError,
    KdumperError,
    KernelError,
    NoSpaceError,
)
from ..handoff import TEST_ID_FILE, TEST_ID_PARAM, split_cmdline
from ..records import replace
from .retention import TriageFn, create_dump_dir, dump_dir_name, prune, write_file

if TYPE_CHECKING:
    from ..collect.pipeline import SaveOptions, SaveResult
    from ..collect.targets.ssh import SshTarget
    from ..dump.base import Dump

ROOTFS_DIR = "/var/crash"  # where dump_to_rootfs writes (on the root filesystem)
PROC_VMCORE = "/proc/vmcore"
DMESG_NAME = "vmcore-dmesg.txt"
VMCORE_NAME = "vmcore"
REPORT_NAME = "report.json"
HOOK_TIMEOUT = 600.0  # a hook that hangs must not keep the machine in the capture kernel
# room kept for report.json and the small files after the dump
SMALL_FILES_RESERVE = 1 << 20
# below this much room no dump is attempted (header, bitmaps and the first pages need it)
MIN_DUMP_ROOM = 1 << 20
# the size estimate compresses this many kept pages, spread over the pfn space
SAMPLE_WINDOWS = 64
SAMPLE_PER_WINDOW = 4
SAMPLE_WINDOW_PFNS = 4096
# estimates are multiplied by this: a sample of a few hundred pages misjudges by 10% easily
ESTIMATE_MARGIN = 1.15
PROGRESS_STEP = 10  # percent between progress lines
PROGRESS_SECONDS = 2.0  # and at least this long

Say = Callable[[str], None]
ActionRunner = Callable[[str], None]


class NotInCaptureKernelError(InputNotFoundError):
    """``/proc/vmcore`` is missing: this is not a capture kernel."""

    template = "{path} does not exist: this is not a capture kernel, nothing was done"


# ---- results -----------------------------------------------------------------------------------


@dataclass
class TargetResult:
    """What one target (the configured one, or the root filesystem) got."""

    kind: str  # local | raw | ssh | rootfs
    location: str  # the dump directory, user@host:dir, or the device
    status: str = "failed"  # complete | incomplete | failed
    files: list[str] = field(default_factory=list)
    error: str | None = None
    exit_code: int = ExitCode.OK
    save: dict[str, Any] | None = None  # SaveResult.summary() of the dump
    dump_file: str | None = None  # local path of vmcore / vmcore-incomplete

    @property
    def target_failed(self) -> bool:
        """The target failed or filled up (``failure_action``); an incomplete dump without an
        error only lacks pages the source had lost."""
        return self.status == "failed" or (self.status == "incomplete" and self.error is not None)

    def fail(self, err: BaseException, status: str = "failed") -> None:
        """Record ``err`` as this target's failure."""
        self.status = status
        if isinstance(err, KdumperError):
            self.error, self.exit_code = str(err), int(err.exit_code)
        elif isinstance(err, MemoryError):
            self.error, self.exit_code = "out of memory", int(ExitCode.ERROR)
        else:
            self.error = f"internal error: {type(err).__name__}: {err} (please report)"
            self.exit_code = int(ExitCode.ERROR)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


@dataclass
class CaptureResult:
    """What :func:`capture` did."""

    vmcore: str
    name: str | None = None
    test_id: str | None = None
    target: TargetResult | None = None
    rootfs: TargetResult | None = None
    action: str | None = None  # the final or failure action chosen
    action_taken: bool = False  # it was performed (False with --no-action)
    action_error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The configured target's status."""
        return self.target.status if self.target else "failed"

    @property
    def exit_code(self) -> int:
        """0 complete, 10 incomplete, else the failure's exit code."""
        t = self.target
        if t is None:
            return int(ExitCode.ERROR)
        if t.status == "complete":
            return int(ExitCode.OK)
        if t.status == "incomplete":
            return int(ExitCode.INCOMPLETE)
        return t.exit_code or int(ExitCode.ERROR)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "vmcore": self.vmcore,
            "name": self.name,
            "status": self.status,
            "test_id": self.test_id,
            "target": self.target.to_dict() if self.target else None,
            "rootfs": self.rootfs.to_dict() if self.rootfs else None,
            "action": self.action,
            "action_taken": self.action_taken,
            "action_error": self.action_error,
            "warnings": self.warnings,
        }


# ---- the environment ---------------------------------------------------------------------------


def _quiet(_message: str) -> None:
    pass


def _sysrq(action: str) -> None:
    key = {"reboot": "b", "poweroff": "o"}.get(action)
    if key is None:
        return
    with contextlib.suppress(OSError), open("/proc/sysrq-trigger", "w", encoding="ascii") as f:
        f.write(key)


def system_action(action: str) -> None:
    """Perform ``action`` (reboot, halt, poweroff, shell) on this machine, now.

    Only in a capture kernel: without ``/proc/vmcore`` (``kdumper capture --vmcore FILE`` tried
    on a workstation) it refuses with :class:`KernelError` instead of rebooting the machine.
    """
    if not os.path.exists(PROC_VMCORE):
        raise KernelError(f"not a capture kernel ({PROC_VMCORE} is missing): {action} not done")
    systemd = os.path.isdir("/run/systemd/system")
    if action == "shell":
        if not systemd:
            return  # without systemd the caller's init script decides what comes next
        argv = ["systemctl", "--no-block", "start", "emergency.target"]
    elif action in ("reboot", "halt", "poweroff"):
        os.sync()
        argv = ["systemctl", "--force", action] if systemd else [action, "-f"]
    else:
        raise KernelError(f"unknown action {action!r}")
    try:
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=120, check=False).returncode
        why = f"exit status {rc}"
    except (OSError, subprocess.TimeoutExpired) as e:
        rc, why = -1, str(e)
    if rc != 0:
        _sysrq(action)
        raise KernelError(f"{shlex.join(argv)} failed ({why})")


def cmdline_test_id(cmdline: str) -> str | None:
    """The ``kdumper.test_id=`` value of a kernel command line (the last one wins)."""
    found = None
    for param in split_cmdline(cmdline):
        key, sep, value = param.partition("=")
        if key == TEST_ID_PARAM and sep:
            found = value.strip('"') or None
    return found


@dataclass
class CaptureEnv:
    """What the capture touches beyond the configuration; tests replace any of it."""

    vmcore: str = PROC_VMCORE
    cmdline: str = "/proc/cmdline"
    rootfs_dir: str = ROOTFS_DIR
    act: bool = True  # take the final/failure action (False: --no-action, only recorded)
    run_action: ActionRunner = system_action
    say: Say = _quiet
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs
    now: Callable[[], float] = time.time
    hostname: Callable[[], str] = socket.gethostname
    hook_timeout: float = HOOK_TIMEOUT
    # report.json's analysis of the crashed kernel (the CLI passes triage.report's); None: the
    # report holds only the capture's own summary
    triage: TriageFn | None = None


# ---- helpers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def file_size_limit(limit: int | None) -> Iterator[bool]:
    """Cap the size of every file this process writes at ``limit`` bytes (``ulimit -f``).

    The pipeline opens its output file itself; with this cap the kernel refuses writes past the
    limit with EFBIG, which the writers treat as a full disk (the dump is marked incomplete and
    stays readable). SIGXFSZ is ignored meanwhile. Only in the main thread (signal handlers);
    yields whether the cap is in force.
    """
    if limit is None or threading.current_thread() is not threading.main_thread():
        yield False
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    new = max(0, limit)
    if hard != resource.RLIM_INFINITY:
        new = min(new, hard)
    if soft != resource.RLIM_INFINITY:
        new = min(new, soft)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (new, hard))
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


@dataclass
class SizeEstimate:
    """How big a dump at a level and codec will be, from a compressed sample."""

    dump_level: int
    codec: str
    format: str
    kept_pages: int
    sampled: int
    bytes: int


def estimate_size(dump: Dump, dump_level: int, codec: str, fmt: str) -> SizeEstimate:
    """Estimate the output of ``save`` at ``dump_level``/``codec``/``fmt``: the pages the level
    keeps (one classification pass) times the stored size of a sample of them, plus metadata."""
    from ..codecs import get_codec
    from .pipeline import build_filter

    filt = build_filter(dump, dump_level)
    kept = filt.kept
    ps = dump.page_size
    elf = fmt == "elf"
    c = get_codec("none" if elf else codec)
    zero = bytes(ps)
    n = dump.max_pfn
    step = max(1, n // SAMPLE_WINDOWS)
    stored: list[int] = []
    for lo in range(0, n, step):
        pfns = filt.pages.pfns(lo, min(lo + SAMPLE_WINDOW_PFNS, n))
        if not pfns.size:
            continue
        for pfn in pfns[:: max(1, pfns.size // SAMPLE_PER_WINDOW)][:SAMPLE_PER_WINDOW].tolist():
            try:
                page = dump.read_pfn(pfn)
            except KdumperError:
                continue
            if page == zero and dump_level & 1:
                stored.append(0)
            else:
                stored.append(ps if elf else min(ps, len(c.compress(page))))
    per_page = sum(stored) / len(stored) if stored else float(ps)
    bitmaps = 2 * math.ceil(n / 8 / ps) * ps
    meta = 64 * 1024 + (0 if elf else bitmaps + kept * 24)
    total = int(meta + kept * per_page * ESTIMATE_MARGIN)
    return SizeEstimate(dump_level, codec, fmt, kept, len(stored), total)


def _upper_bound(dump: Dump) -> int:
    """The output can never be larger than this (every present page stored raw)."""
    ps = dump.page_size
    present = dump.present.count()
    return 64 * 1024 + 2 * math.ceil(dump.max_pfn / 8 / ps) * ps + present * (ps + 24)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def run_hooks(
    stage: str,
    commands: Sequence[Sequence[str]],
    env_vars: dict[str, str],
    *,
    timeout: float,
    say: Say,
) -> list[str]:
    """Run each hook command with ``env_vars`` added to the environment; returns the failures."""
    failures = []
    env = {**os.environ, **env_vars, "KDUMPER_STAGE": stage}
    for argv in commands:
        text = shlex.join(argv)
        say(f"{stage} hook: {text}")
        try:
            rc = subprocess.run(
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=2,  # the hook's output goes where the capture's lines go (the journal)
                timeout=timeout,
                check=False,
            ).returncode
            problem = f"exit status {rc}" if rc else None
        except FileNotFoundError:
            problem = "command not found"
        except subprocess.TimeoutExpired:
            problem = f"still running after {timeout:.0f} s; killed"
        except OSError as e:
            problem = e.strerror or str(e)
        if problem:
            failures.append(f"{stage} hook {text}: {problem}")
            say(f"{stage} hook failed: {text}: {problem}")
    return failures


# ---- the capture -------------------------------------------------------------------------------


class _Capture:
    """One run of :func:`capture`: the dump, its name, and the steps per target."""

    def __init__(self, cfg: Config, env: CaptureEnv, res: CaptureResult) -> None:
        self.cfg = cfg
        self.env = env
        self.say = env.say
        self.res = res
        self.dump: Dump | None = None
        self.nodename = ""
        self.release = ""
        self.crash_time: int | None = None
        self.name = ""
        self._dmesg: bytes | None = None
        self._dmesg_read = False

    # -- naming --

    def open(self) -> None:
        """Open the vmcore and choose the dump directory name."""
        from .. import open as open_dump
        from ..kernel.utsname import read_utsname

        self.dump = dump = open_dump(self.env.vmcore)
        with contextlib.suppress(KdumperError):
            uts = read_utsname(dump)
            if uts is not None:
                self.nodename, self.release = uts.nodename, uts.release
        info = dump.vmcoreinfo
        if info is not None:
            with contextlib.suppress(KdumperError):
                self.crash_time = info.crashtime
            if not self.release:
                self.release = info.osrelease or ""
        self.name = self.choose_name()

    def choose_name(self) -> str:
        """``<host>-<crash time>``."""
        host = self.nodename.strip()
        if not host or host in ("(none)", "localhost"):
            with contextlib.suppress(OSError):
                host = self.env.hostname() or host
        when = self.crash_time if self.crash_time else self.env.now()
        return dump_dir_name(host or "localhost", when)

    # -- pieces shared by the targets --

    def dmesg_bytes(self) -> bytes | None:
        """The kernel log as ``kdumper dmesg`` prints it (None: disabled or unreadable)."""
        if self._dmesg_read:
            return self._dmesg
        self._dmesg_read = True
        if not self.cfg.dump.dmesg or self.dump is None:
            return None
        from ..kernel.printk import format_makedumpfile, read_log

        try:
            log = read_log(self.dump)
        except KdumperError as e:
            self.warn(f"the kernel log cannot be read: {e}")
            return None
        except Exception as e:  # a bug in the log reader must not stop the dump
            self.warn(f"the kernel log cannot be read: internal error: {type(e).__name__}: {e}")
            return None
        for problem in log.problems:
            self.warn(f"kernel log: {problem}")
        self._dmesg = format_makedumpfile(log.records, caller_id=log.has_caller_id)
        return self._dmesg

    def warn(self, message: str) -> None:
        """Record and say a warning."""
        self.res.warnings.append(message)
        self.say(f"warning: {message}")

    def save_options(self, fmt: str | None = None) -> SaveOptions:
        """The pipeline options of ``[dump]`` (``fmt`` forces a format)."""
        from .pipeline import SaveOptions

        d = self.cfg.dump
        return SaveOptions(
            dump_level=d.level,
            codec=d.codec,
            format=fmt or d.format,
            threads=d.threads or None,
            progress=self._progress(),
        )

    def _progress(self) -> Callable[[str, int, int], None]:
        """Progress lines: at each PROGRESS_STEP percent, at most every PROGRESS_SECONDS."""
        started = time.monotonic()
        state = {"next": PROGRESS_STEP, "said": started}

        def progress(phase: str, done: int, total: int) -> None:
            if phase != "write" or total <= 0:
                return
            pct = 100 * done // total
            now = time.monotonic()
            if pct >= state["next"] and (pct >= 100 or now - state["said"] >= PROGRESS_SECONDS):
                state["next"] = (pct // PROGRESS_STEP + 1) * PROGRESS_STEP
                state["said"] = now
                self.say(f"writing: {pct}% ({done} of {total} pages, {now - started:.0f} s)")

        return progress

    def fit(
        self,
        opts: SaveOptions,
        room: int | None,
        *,
        make_room: Callable[[], int | None] | None = None,
    ) -> tuple[SaveOptions, int | None]:
        """The free-space guard: ``opts`` (filtered harder when the dump may not fit ``room``)
        and the byte limit to write with (None: it fits for sure). ``make_room()`` deletes old
        dumps and returns the new room (None: nothing was deleted)."""
        dump = self.dump
        assert dump is not None
        if room is None:
            return opts, None
        if _upper_bound(dump) <= room:
            return opts, None
        est = estimate_size(dump, opts.dump_level, opts.codec, opts.format)
        self.say(
            f"estimated dump size {_mib(est.bytes)} (level {est.dump_level}, {est.codec}, "
            f"{est.kept_pages} pages kept); room {_mib(max(room, 0))}"
        )
        if est.bytes > room and make_room is not None:
            more = make_room()
            if more is not None:
                room = more
                self.say(f"room after deleting old dumps: {_mib(max(room, 0))}")
        if room < MIN_DUMP_ROOM:
            raise NoSpaceError(
                f"only {_mib(max(room, 0))} may be used (free space minus [retention] "
                "min_free and a reserve): no room for a dump",
                path=self.cfg.target.raw or self.cfg.target.path,
            )
        if est.bytes <= room:
            return opts, room
        stronger = replace(opts, dump_level=31)
        if opts.format == "elf":
            stronger = replace(stronger, format="kdump", codec="zlib")
        elif opts.codec in ("none", "lzo", "snappy"):
            stronger = replace(stronger, codec="zlib")
        changed = (stronger.dump_level, stronger.codec, stronger.format) != (
            opts.dump_level,
            opts.codec,
            opts.format,
        )
        if changed:
            est = estimate_size(dump, stronger.dump_level, stronger.codec, stronger.format)
            self.say(
                f"the dump may not fit: filtering harder (level {stronger.dump_level}, "
                f"{stronger.codec}, {stronger.format} format): estimated {_mib(est.bytes)}"
            )
            opts = stronger
        if est.bytes > room:
            self.say(
                f"the dump may still not fit: writing at most {_mib(room)}; if that is reached "
                "it stays vmcore-incomplete, marked incomplete and readable"
            )
        return opts, room

    def prune_for_room(self, base: str, directory: str) -> int | None:
        """Delete the old dumps beyond ``keep`` (the new one counts) to make room; the new
        room, or None when nothing was deleted."""
        keep = self.cfg.retention.keep
        if keep <= 0:
            return None
        try:
            deleted = prune(base, keep, protect=directory)
        except KdumperError as e:
            self.warn(f"old dumps could not be deleted: {e}")
            return None
        for path in deleted:
            self.say(f"deleted old dump {path} to make room (keep = {keep})")
        return self.local_room(directory) if deleted else None

    def local_room(self, directory: str) -> int | None:
        """Bytes a dump may take in ``directory`` (free space minus min_free and a reserve)."""
        try:
            st = self.env.statvfs(directory)
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        size = st.f_blocks * st.f_frsize
        return free - self.cfg.retention.min_free.required(size) - SMALL_FILES_RESERVE

    def report_bytes(self, summary: dict[str, Any] | None, status: str, saved: str | None) -> bytes:
        """report.json: the triage report of the crashed kernel (read from the source; its next
        steps name the ``saved`` file) plus the capture summary."""
        assert self.dump is not None
        triage = self.env.triage
        doc = triage(self.dump, [saved or self.env.vmcore]) if triage is not None else {}
        doc["capture"] = {
            "status": status,
            "target": self.cfg.target.kind,
            "name": self.name,
            "save": summary,
            "warnings": list(self.res.warnings),
        }
        return (json.dumps(doc, indent=2, default=str) + "\n").encode()

    def hook_env(self, tr: TargetResult | None = None) -> dict[str, str]:
        """The environment of the hooks."""
        t = self.cfg.target
        env = {
            "KDUMPER_VMCORE": self.env.vmcore,
            "KDUMPER_TARGET": t.kind,
            "KDUMPER_TARGET_PATH": (
                t.raw if t.kind == "raw" and t.raw else t.ssh.path if t.ssh else t.path
            ),
            "KDUMPER_DUMP_NAME": self.name,
        }
        if self.res.test_id:
            env["KDUMPER_TEST_ID"] = self.res.test_id
        if tr is not None:
            env["KDUMPER_STATUS"] = tr.status
            if tr.kind != "raw":
                env["KDUMPER_DUMP_DIR"] = tr.location
            if tr.dump_file:
                env["KDUMPER_DUMP_FILE"] = tr.dump_file
        return env

    # -- local directory --

    def local(self, base: str, kind: str = "local") -> TargetResult:
        """Dump into a new directory under ``base``."""
        from .pipeline import save

        dump = self.dump
        assert dump is not None
        tr = TargetResult(kind, base)
        try:
            directory = create_dump_dir(base, self.name)
        except KdumperError as e:
            tr.fail(e)
            self.say(f"cannot create the dump directory: {e}")
            return tr
        tr.location = directory
        self.say(f"dump directory {directory}")
        # (3) the kernel log first
        data = self.dmesg_bytes()
        if data is not None:
            try:
                write_file(os.path.join(directory, DMESG_NAME), data)
                tr.files.append(DMESG_NAME)
                self.say(f"kernel log saved: {DMESG_NAME} ({len(data)} bytes)")
            except KdumperError as e:
                self.warn(f"the kernel log could not be saved: {e}")
        # (4) free-space guard, (5) the dump
        vmcore = os.path.join(directory, VMCORE_NAME)
        summary: dict[str, Any] | None = None
        limit: int | None = None
        try:
            room = self.local_room(directory)
            opts, limit = self.fit(
                self.save_options(),
                room,
                make_room=lambda: self.prune_for_room(base, directory),
            )
            self.say(
                f"saving the dump: level {opts.dump_level}, {opts.codec}, {opts.format} format"
                + (f", at most {_mib(limit)}" if limit is not None else "")
            )
            with file_size_limit(limit):
                result = save(dump, vmcore, opts)
            summary = result.summary()
            tr.save = summary
            tr.dump_file = vmcore
            tr.files.append(VMCORE_NAME)
            if result.incomplete:
                tr.status = "incomplete"
                self.warn(f"{result.lost_pages} pages could not be read from the source")
            else:
                tr.status = "complete"
            self.say(
                f"dump saved: {VMCORE_NAME} ({_mib(result.bytes_out)} from "
                f"{_mib(result.bytes_in)} of kept pages, {result.seconds:.1f} s)"
            )
        except NoSpaceError as e:
            tr.fail(e, "incomplete" if os.path.exists(vmcore + "-incomplete") else "failed")
            if limit is not None and os.path.exists(vmcore + "-incomplete"):
                tr.error = (
                    f"the dump reached its limit of {_mib(limit)} (free space minus "
                    f"[retention] min_free): {vmcore}-incomplete is cut short"
                )
            self.say(f"the dump did not fit: {tr.error}")
        except Exception as e:  # any failure: recorded, the capture goes on
            tr.fail(e)
            self.say(f"the dump failed: {tr.error}")
        if tr.status != "complete" and os.path.exists(vmcore + "-incomplete"):
            tr.dump_file = vmcore + "-incomplete"
            tr.files.append(VMCORE_NAME + "-incomplete")
            if tr.status == "failed":
                tr.status = "incomplete"
        # (6) report.json (also when the dump failed: the triage stands on its own)
        try:
            report = self.report_bytes(summary, tr.status, tr.dump_file)
            write_file(os.path.join(directory, REPORT_NAME), report)
            tr.files.append(REPORT_NAME)
            self.say(f"triage report saved: {REPORT_NAME}")
        except Exception as e:  # any failure: recorded, the capture goes on
            self.warn(f"the triage report could not be saved: {type(e).__name__}: {e}")
        # (7) test id
        if self.res.test_id and tr.dump_file is not None:
            try:
                write_file(os.path.join(directory, TEST_ID_FILE), f"{self.res.test_id}\n".encode())
                tr.files.append(TEST_ID_FILE)
            except KdumperError as e:
                self.warn(f"the test id could not be saved: {e}")
        # (8) retention
        if tr.status == "complete" and self.cfg.retention.keep > 0:
            try:
                for path in prune(base, self.cfg.retention.keep, protect=directory):
                    self.say(f"deleted old dump {path} (keep = {self.cfg.retention.keep})")
            except KdumperError as e:
                self.warn(f"old dumps could not be deleted: {e}")
        return tr

    # -- raw device --

    def raw(self) -> TargetResult:
        """Dump onto the raw device (recovered by ``kdumper recover-raw`` at the next boot)."""
        from .pipeline import save
        from .raw import RawArea, RawHeader, RawTargetError

        t = self.cfg.target
        assert t.raw is not None and self.dump is not None
        dump = self.dump
        tr = TargetResult("raw", t.raw)
        try:
            with RawArea(t.raw, t.raw_offset, writable=True) as area:
                what = area.foreign_content()
                if what is not None:
                    raise RawTargetError(
                        f"refusing to overwrite {what} at offset {t.raw_offset}; if the device "
                        f"is meant for dumps, wipe it first (wipefs -a {t.raw})",
                        path=t.raw,
                    )
                opts = self.save_options(fmt="flat")
                header = RawHeader(
                    crash_time=self.crash_time or 0,
                    written_at=int(self.env.now()),
                    dump_level=opts.dump_level,
                    codec=opts.codec,
                    name=self.name,
                    nodename=self.nodename,
                    release=self.release,
                    test_id=self.res.test_id or "",
                )
                data = self.dmesg_bytes()
                header = area.begin(header, data)
                if data:
                    tr.files.append(DMESG_NAME)
                    self.say(f"kernel log saved on {t.raw} ({len(data)} bytes)")
                opts, _ = self.fit(opts, area.dump_capacity(header))
                self.say(
                    f"saving the dump to {t.raw} at offset {t.raw_offset + header.dump_offset}: "
                    f"level {opts.dump_level}, {opts.codec}, flattened"
                )
                header.dump_level, header.codec = opts.dump_level, opts.codec
                results: list[SaveResult] = []
                try:
                    area.write_dump(header, lambda s: results.append(save(dump, s, opts)))
                finally:
                    tr.files.append(VMCORE_NAME)
                result = results[0]
                tr.save = result.summary()
                tr.status = "incomplete" if result.incomplete else "complete"
                self.say(
                    f"dump saved on {t.raw} ({_mib(header.dump_length)}); it is copied to "
                    f"{t.path} at the next boot"
                )
        except NoSpaceError as e:
            tr.fail(e, "incomplete" if VMCORE_NAME in tr.files else "failed")
            self.say(f"the dump did not fit on {t.raw}: {e}")
        except Exception as e:  # any failure: recorded, the capture goes on
            tr.fail(e, "incomplete" if VMCORE_NAME in tr.files else "failed")
            self.say(f"the raw dump failed: {tr.error}")
        return tr

    # -- ssh --

    def ssh(self) -> TargetResult:
        """Send the log, the flattened dump, report.json and test-id over ssh."""
        from .pipeline import save
        from .targets.ssh import save_dmesg, stream_dump

        target = self.cfg.target.ssh
        assert target is not None and self.dump is not None
        dump = self.dump
        remote_dir = target.remote(self.name)
        tr = TargetResult("ssh", target.where(remote_dir))
        self.say(f"dump directory {tr.location}")
        data = self.dmesg_bytes()
        summary: dict[str, Any] | None = None
        try:
            if data is not None:
                save_dmesg(target, self.name, data)
                tr.files.append(DMESG_NAME)
                self.say(f"kernel log sent: {DMESG_NAME} ({len(data)} bytes)")
            opts = self.save_options(fmt="flat")
            self.say(f"sending the dump: level {opts.dump_level}, {opts.codec}, flattened")
            results: list[SaveResult] = []

            def write(stream: BinaryIO) -> None:
                results.clear()
                results.append(save(dump, stream, opts))

            sent = stream_dump(target, self.name, write)
            name = posixpath.basename(sent.remote_path)
            tr.files += [name, posixpath.basename(sent.checksum_path)]
            summary = results[-1].summary() if results else None
            tr.save = summary
            tr.status = "incomplete" if results and results[-1].incomplete else "complete"
            self.say(
                f"dump sent: {name} ({_mib(sent.bytes)} in {sent.seconds:.1f} s, "
                f"{sent.attempts} attempt{'s' if sent.attempts > 1 else ''})"
            )
        except Exception as e:  # any failure: recorded, the capture goes on
            tr.fail(e)
            self.say(f"the ssh dump failed: {tr.error}")
            return tr
        extras: list[tuple[str, Callable[[], bytes]]] = [
            (REPORT_NAME, lambda: self.report_bytes(summary, tr.status, None))
        ]
        if self.res.test_id:
            test_id = self.res.test_id
            extras.append((TEST_ID_FILE, lambda: f"{test_id}\n".encode()))
        for fname, make in extras:
            try:
                ssh_put(target, self.name, fname, make())
                tr.files.append(fname)
                self.say(f"{fname} sent")
            except Exception as e:  # any failure: recorded, the capture goes on
                self.warn(f"{fname} could not be sent: {type(e).__name__}: {e}")
        return tr


def ssh_put(target: SshTarget, dir_name: str, file_name: str, data: bytes) -> None:
    """Write a small file ``<path>/<dir>/<file>`` on the ssh target (0600, via a rename)."""
    from .targets.ssh import remote_script, run_remote, run_with_retries

    remote_dir = target.remote(dir_name)
    final = posixpath.join(remote_dir, file_name)
    tmp = final + ".tmp"
    q = shlex.quote
    script = remote_script(
        f"mkdir -p -m 0700 -- {q(remote_dir)}", f"cat > {q(tmp)}", f"mv -f -- {q(tmp)} {q(final)}"
    )
    run_with_retries(
        target,
        f"send {file_name} to {target.where(final)}",
        lambda: run_remote(target, script, data=data, remote_path=final),
    )


def _same_filesystem(a: str, b: str) -> bool:
    def dev(path: str) -> int | None:
        path = os.path.abspath(path)
        while True:
            try:
                return os.stat(path).st_dev
            except OSError:
                if path == os.path.dirname(path):
                    return None
                path = os.path.dirname(path)

    da, db = dev(a), dev(b)
    return da is not None and da == db


def capture(cfg: Config, env: CaptureEnv | None = None) -> CaptureResult:
    """Save the crashed kernel's dump as ``cfg`` says, then take the final or failure action
    (see the module documentation for the steps). Raises only when ``env.vmcore`` does not
    exist (:class:`NotInCaptureKernelError`: nothing is done, no action is taken)."""
    env = env or CaptureEnv()
    if not os.path.exists(env.vmcore):
        raise NotInCaptureKernelError(env.vmcore)
    say = env.say
    res = CaptureResult(vmcore=env.vmcore)
    with contextlib.suppress(OSError), open(env.cmdline, encoding="utf-8", errors="replace") as f:
        res.test_id = cmdline_test_id(f.read())
    run = _Capture(cfg, env, res)
    t = cfg.target
    kind = t.kind
    where = t.raw or "" if kind == "raw" else t.ssh.where() if t.ssh is not None else t.path
    say(f"capture started: {env.vmcore} -> {kind} target {where}")
    if res.test_id:
        say(f"kdumper test {res.test_id}")
    open_error: BaseException | None = None
    interrupted = False
    try:
        run.open()
        res.name = run.name
        say(f"crashed kernel {run.release or 'unknown'} on {run.nodename or 'unknown host'}")
    except Exception as e:  # any failure: recorded, the capture goes on
        open_error = e
        run.name = run.choose_name()
        res.name = run.name
        say(f"cannot open {env.vmcore}: {e}")
    try:
        # (2) pre hooks
        if cfg.hooks.pre:
            res.warnings += run_hooks(
                "pre", cfg.hooks.pre, run.hook_env(), timeout=env.hook_timeout, say=say
            )
        if open_error is not None:
            tr = TargetResult(kind, where)
            tr.fail(open_error)
        elif kind == "raw":
            tr = run.raw()
        elif kind == "ssh":
            tr = run.ssh()
        else:
            tr = run.local(cfg.target.path)
        res.target = tr
        say(f"capture {tr.status}" + (f": {tr.error}" if tr.error else ""))
        # dump_to_rootfs
        if tr.target_failed and cfg.failure_action == "dump_to_rootfs" and run.dump is not None:
            if kind == "local" and _same_filesystem(cfg.target.path, env.rootfs_dir):
                say(f"dump_to_rootfs: {cfg.target.path} is on the root filesystem already")
            else:
                say(f"dump_to_rootfs: saving to {env.rootfs_dir} instead")
                res.rootfs = run.local(env.rootfs_dir, kind="rootfs")
                say(f"dump_to_rootfs {res.rootfs.status}")
        # (9) post hooks
        if cfg.hooks.post:
            res.warnings += run_hooks(
                "post", cfg.hooks.post, run.hook_env(tr), timeout=env.hook_timeout, say=say
            )
    except BaseException:  # Ctrl-C, SystemExit: a person is there, do not reboot under them
        interrupted = True
        raise
    finally:
        if run.dump is not None:
            with contextlib.suppress(Exception):
                run.dump.close()
        if not interrupted:
            _take_action(cfg, env, res)
    return res


def _take_action(cfg: Config, env: CaptureEnv, res: CaptureResult) -> None:
    """(10) ``final_action``, or ``failure_action`` when the target failed."""
    tr = res.target
    failed = tr is None or tr.target_failed
    action = cfg.failure_action if failed else cfg.final_action
    if action == "dump_to_rootfs":
        action = cfg.final_action
    res.action = action
    which = "failure_action" if failed else "final_action"
    if not env.act:
        env.say(f"{which} {action} skipped (--no-action)")
        return
    env.say(f"{which}: {action}")
    try:
        env.run_action(action)
        res.action_taken = True
    except Exception as e:  # the action failed: say so (the unit's FailureAction= remains)
        res.action_error = str(e)
        env.say(f"{which} {action} failed: {e}")


__all__ = [
    "ROOTFS_DIR",
    "CaptureEnv",
    "CaptureResult",
    "NotInCaptureKernelError",
    "SizeEstimate",
    "TargetResult",
    "capture",
    "cmdline_test_id",
    "estimate_size",
    "file_size_limit",
    "run_hooks",
    "ssh_put",
    "system_action",
]
