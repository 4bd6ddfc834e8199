"""Debian's own kdump stack (kdump-tools + makedumpfile) in the same guest as kdumper's cycle.

The timing comparison of issue 6 needs the reference capture in the *same* machine: the same
debootstrap guest (:mod:`vmharness.rootfs`), kernel, memory, ``crashkernel=``, dump disk, dump
level and codec. This module adds one cached layer on top of the guest's kernel layer:

* bookworm's ``kdump-tools``, ``kexec-tools`` and ``makedumpfile`` installed with ``apt-get`` in
  a chroot (the same mirror as the base), maintainer scripts run, services not started;
* ``/etc/default/kdump-tools`` edited the way a Debian administrator does: ``USE_KDUMP=1``,
  ``KDUMP_COREDIR=/var/crash`` (the dump disk) and ``MAKEDUMP_ARGS="-c -d 31"`` (Debian's own
  default, zlib at level 31 - kdumper's default too; kdump-config adds ``-F``);
* the kdump initrd ``/var/lib/kdump/initrd.img-<release>`` and the ``vmlinuz``/``initrd.img``
  links made by ``kdump-config symlinks`` (its kernel hook skips nothing in a chroot, but the
  guest would otherwise build it at its first boot, under TCG, before every crash);
* a drop-in that prints the harness's ``capture-start`` marker before
  ``kdump-tools-dump.service`` runs, exactly as ``kdumper-capture.service`` gets one.

kdumper is still copied in by :func:`vmharness.rootfs.make_root_disk` (the ready unit calls
``kdumper status``), but its units are masked on the kernel command line
(:data:`MASK_KDUMPER`): ``kdump-tools.service`` arms the machine, ``kdump-tools-dump.service``
saves the dump in the capture kernel (which boots the same root filesystem) and reboots.

:func:`capture_cycle` runs either tool through :func:`vmharness.rootfs.boot_cycle`;
:func:`capture_timing` reads the serial log (host timestamps) into crash → capture kernel,
crash → capture service, crash → dump saved and crash → machine back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .cache import cache_dir, content_key, ensure_dir
from .errors import HarnessError
from .qemu import SerialLine
from .rootfs import (
    _CRASH_LINE,
    _RESTART,
    DEFAULT_SUITE,
    CycleResult,
    RootfsImage,
    _first,
    _put,
    _run,
    boot_cycle,
    build_rootfs,
    crash_time,
    in_chroot,
    parse_boots,
    parse_markers,
)

#: Bump when the layer changes meaning (forces a rebuild).
LAYER_VERSION = "1"

#: What a Debian administrator installs for kdump (bookworm: kdump-tools 1:1.8.1,
#: makedumpfile 1:1.7.2, kexec-tools 1:2.0.25); makedumpfile is only a Recommends.
PACKAGES: tuple[str, ...] = ("kdump-tools", "kexec-tools", "makedumpfile")

#: The dump level and codec of the comparison: Debian's default ``-c -d 31`` (zlib, level 31),
#: which is also kdumper's default (``[dump] level = 31``, ``codec = "zlib"``).
MAKEDUMP_ARGS = "-c -d 31"
LEVEL = 31
CODEC = "zlib"

#: ``/etc/default/kdump-tools`` settings written over the shipped file (key -> value).
DEFAULTS: dict[str, str] = {
    "USE_KDUMP": "1",
    "KDUMP_COREDIR": '"/var/crash"',
    "MAKEDUMP_ARGS": f'"{MAKEDUMP_ARGS}"',
}

#: kdumper's units in the kdump-tools guest: never arm, never reload over kdump-tools' load
#: (kdumper-reload.service runs on the CPU "add" events of udev's coldplug).
MASK_KDUMPER = "systemd.mask=kdumper.service systemd.mask=kdumper-reload.service"

#: The harness's marker before the capture service, like kdumper-capture.service's drop-in.
DUMP_DROPIN = (
    "# vmharness test guest: mark the start of the capture on the serial console\n"
    "[Service]\nExecStartPre=-/usr/local/sbin/kdguest-mark capture-start\n"
)
DUMP_DROPIN_PATH = "/etc/systemd/system/kdump-tools-dump.service.d/kdguest.conf"

TOOLS: tuple[str, ...] = ("kdumper", "kdump-tools")


def configure_defaults(shipped: str, settings: dict[str, str] | None = None) -> str:
    """``/etc/default/kdump-tools`` with ``settings`` set: a commented-out or existing
    ``KEY=`` line is replaced in place, a missing key is appended."""
    text = shipped
    for key, value in (DEFAULTS if settings is None else settings).items():
        pattern = re.compile(rf"^#?\s*{key}=.*$", re.MULTILINE)
        line = f"{key}={value}"
        text, count = pattern.subn(line, text, count=1)
        if count == 0:
            text = text.rstrip("\n") + f"\n{line}\n"
    return text


# --- the cached layer ---------------------------------------------------------------------------


def layer_key(image: RootfsImage) -> str:
    """The content key of the kdump-tools layer on top of ``image``'s kernel layer."""
    return content_key(
        {
            "version": LAYER_VERSION,
            "kernel_layer": image.tree.parent.name,
            "packages": PACKAGES,
            "defaults": DEFAULTS,
            "dropin": DUMP_DROPIN,
        }
    )


def _build_layer(tmp: Path, image: RootfsImage) -> None:
    tree = tmp / "root"
    log = tmp / "build.log"
    started = time.monotonic()
    _run(["cp", "-a", "--reflink=auto", str(image.tree), str(tree)], log=log)
    # maintainer scripts must not start services in the chroot (invoke-rc.d asks policy-rc.d)
    _put(tree, "/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    in_chroot(tree, "apt-get", "update", log=log, timeout=900)
    in_chroot(
        tree,
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        *PACKAGES,
        log=log,
        timeout=1800,
    )
    (tree / "usr/sbin/policy-rc.d").unlink()
    install_s = time.monotonic() - started

    defaults = tree / "etc/default/kdump-tools"
    if not defaults.is_file():
        raise HarnessError(f"kdump-tools installed no /etc/default/kdump-tools (log: {log})")
    _put(tree, "/etc/default/kdump-tools", configure_defaults(defaults.read_text()))
    kexec = tree / "etc/default/kexec"
    if kexec.is_file():  # kexec-tools must never turn the guest's reboots into kexecs
        text = re.sub(r"(?m)^LOAD_KEXEC=.*$", "LOAD_KEXEC=false", kexec.read_text())
        _put(tree, "/etc/default/kexec", text)

    # the kdump initrd and /var/lib/kdump/{vmlinuz,initrd.img}, as the kernel hook makes them
    t = time.monotonic()
    in_chroot(tree, "kdump-config", "symlinks", image.release, log=log, timeout=1800)
    kdump_dir = tree / "var/lib/kdump"
    initrd = kdump_dir / f"initrd.img-{image.release}"
    if not initrd.is_file() or not (kdump_dir / "vmlinuz").is_symlink():
        raise HarnessError(f"kdump-config symlinks made no kdump initrd (log: {log})")
    # kdump-config load deletes the initrd when /etc/kdump/sysctl.conf differs from this copy
    sysctl = tree / "etc/kdump/sysctl.conf"
    if sysctl.is_file():
        shutil.copy2(sysctl, kdump_dir / f"latest_sysctls-{image.release}")
    initrd_s = time.monotonic() - t

    _put(tree, DUMP_DROPIN_PATH, DUMP_DROPIN)
    if not (tree / "etc/systemd/system/basic.target.wants/kdump-tools.service").is_symlink():
        raise HarnessError(f"kdump-tools.service was not enabled (log: {log})")
    in_chroot(tree, "apt-get", "clean", log=log)
    versions = in_chroot(
        tree, "dpkg-query", "-W", "-f", "${Package}=${Version}\\n", *PACKAGES, log=log
    )
    manifest = {
        "layer": "kdump-tools",
        "kernel_layer": image.tree.parent.name,
        "suite": image.suite,
        "release": image.release,
        "packages": versions.split(),
        "defaults": DEFAULTS,
        "kdump_initrd_bytes": initrd.stat().st_size,
        "timings": {"install": round(install_s, 1), "kdump_initrd": round(initrd_s, 1)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def build_kdumptools(
    kernel: str = "6.1", suite: str = DEFAULT_SUITE, rebuild: bool = False
) -> RootfsImage:
    """The guest of :func:`vmharness.rootfs.build_rootfs` plus Debian's kdump-tools (cached).

    Same kernel, initrd and Python as the kdumper guest; :attr:`RootfsImage.info` is the
    layer's manifest (installed package versions, the kdump initrd's size).
    """
    image = build_rootfs(kernel, suite)
    final = cache_dir("kdump-tools") / f"{suite}-{image.release}-{layer_key(image)}"
    if rebuild and final.exists():
        shutil.rmtree(final)
    existed = final.is_dir()
    ensure_dir(final, lambda tmp: _build_layer(tmp, image))
    manifest = json.loads((final / "manifest.json").read_text())
    tree = final / "root"
    return replace(
        image,
        tree=tree,
        vmlinuz=tree / "boot" / image.vmlinuz.name,
        initrd=tree / "boot" / image.initrd.name,
        cached=image.cached and existed,
        info=manifest,
    )


# --- one cycle and its timing -------------------------------------------------------------------

#: The capture tools' own console lines (kdumper-capture.service and kdump-tools-dump.service
#: both log to journal+console). kdump-config: ``log_success_msg "$NAME: saved vmcore in DIR"``
#: with NAME=kdump-tools exported by /etc/init.d/kdump-tools.
SAVED: dict[str, re.Pattern[str]] = {
    "kdumper": re.compile(r"kdumper: dump saved: "),
    "kdump-tools": re.compile(r"kdump-tools: saved vmcore in "),
}
DMESG_SAVED: dict[str, re.Pattern[str]] = {
    "kdumper": re.compile(r"kdumper: kernel log saved: "),
    "kdump-tools": re.compile(r"kdump-tools: saved dmesg content in "),
}
#: The dump file in the dump directory: ``<host>-<date>/vmcore`` (kdumper),
#: ``<YYYYmmddHHMM>/dump.<YYYYmmddHHMM>`` (kdump-tools, flattened format).
DUMP_FILE: dict[str, re.Pattern[str]] = {
    "kdumper": re.compile(r"[^/]+/vmcore"),
    "kdump-tools": re.compile(r"\d{12}/dump\.\d{12}"),
}


def crash_moment(lines: Sequence[SerialLine]) -> float | None:
    """When the kernel crashed: its own ``sysrq: Trigger a crash`` / panic line after the first
    ``ready`` marker, else :func:`vmharness.rootfs.crash_time` (the guest's ``crash`` marker,
    which the ready script prints one second before it writes to ``/proc/sysrq-trigger``)."""
    ready = next((m for m in parse_markers(lines) if m.name == "ready"), None)
    panic = _first(lines, _CRASH_LINE, ready.time) if ready is not None else None
    return panic if panic is not None else crash_time(lines)


def capture_timing(lines: Sequence[SerialLine], tool: str) -> dict[str, float]:
    """Seconds from the crash (:func:`crash_moment`) to: the capture
    kernel's banner (``capture_kernel``), the ``capture-start`` marker (``capture_start``), the
    tool's "kernel log saved" and "dump saved" lines (``dmesg_saved``, ``dump_saved``), the
    capture kernel's ``reboot:`` line (``reboot``) and the next first-kernel ``ready`` marker
    (``back``: the machine is up and armed again). Missing events are left out."""
    if tool not in TOOLS:
        raise HarnessError(f"unknown tool {tool!r}; choose from {', '.join(TOOLS)}")
    crashed = crash_moment(lines)
    if crashed is None:
        return {}
    out: dict[str, float] = {}
    capture = next((b for b in parse_boots(lines) if b.capture and b.time >= crashed), None)
    if capture is not None:
        out["capture_kernel"] = capture.time - crashed
        start = next(
            (
                m
                for m in parse_markers(lines)
                if m.name == "capture-start" and m.time >= capture.time
            ),
            None,
        )
        if start is not None:
            out["capture_start"] = start.time - crashed
        for name, regex in (("dmesg_saved", DMESG_SAVED[tool]), ("dump_saved", SAVED[tool])):
            seen = _first(lines, regex, capture.time)
            if seen is not None:
                out[name] = seen - crashed
        restart = _first(lines, _RESTART, capture.time)
        if restart is not None:
            out["reboot"] = restart - crashed
    back = next((m for m in parse_markers(lines) if m.name == "ready" and m.time > crashed), None)
    if back is not None:
        out["back"] = back.time - crashed
    return {k: round(v, 3) for k, v in out.items()}


_LOG_LINE = re.compile(r"\[\s*(\d+\.\d+)\] ?(.*)")


def read_serial_log(path: Path) -> list[SerialLine]:
    """The lines of a ``serial.log`` written by :class:`vmharness.qemu.QemuVM`
    (``[   12.345] text``, host seconds since QEMU started)."""
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(raw)
        if m:
            out.append(SerialLine(float(m.group(1)), m.group(2)))
    return out


@dataclass
class CaptureRun:
    """One crash of one tool's guest, timed."""

    tool: str
    kernel: str
    release: str
    ok: bool
    timing: dict[str, float]
    """:func:`capture_timing` of the run's serial log."""
    dump_file: str | None
    """The dump, relative to the dump disk's ``/var/crash``."""
    dump_bytes: int | None
    workdir: Path
    problems: list[str] = field(default_factory=list)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """The host's load average when the run started."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        out = asdict(self)
        out["workdir"] = str(self.workdir)
        return out


def find_dump(result: CycleResult, tool: str) -> Path | None:
    """The dump file ``tool`` saved in the cycle (``None`` when there is none)."""
    if result.dump_dir is None:
        return None
    regex = DUMP_FILE[tool]
    name = next((f for f in result.dump_files if regex.fullmatch(f)), None)
    return result.dump_dir / name if name else None


def capture_cycle(
    image: RootfsImage, tool: str, workdir: Path | None = None, **kwargs: Any
) -> tuple[CaptureRun, CycleResult]:
    """Crash ``image``'s guest once with ``tool`` armed and time its capture.

    ``image`` is :func:`vmharness.rootfs.build_rootfs`'s for ``kdumper`` and
    :func:`build_kdumptools`'s for ``kdump-tools`` (whose cycle gets :data:`MASK_KDUMPER` on
    the command line). Target ``local`` (the ext4 dump disk on ``/var/crash``), crash by sysrq;
    ``kwargs`` go to :func:`vmharness.rootfs.boot_cycle` (``mem``, ``crashkernel``, ...).
    """
    if tool not in TOOLS:
        raise HarnessError(f"unknown tool {tool!r}; choose from {', '.join(TOOLS)}")
    has_kdump_tools = image.info.get("layer") == "kdump-tools"
    if has_kdump_tools != (tool == "kdump-tools"):
        raise HarnessError(f"{tool}: wrong guest image ({image.tree})")
    if workdir is None:
        workdir = cache_dir("capture-runs") / f"{image.release}-{tool}"
        shutil.rmtree(workdir, ignore_errors=True)
    if tool == "kdump-tools":
        kwargs["append"] = " ".join(p for p in (kwargs.get("append", ""), MASK_KDUMPER) if p)
    loadavg = _loadavg()
    result = boot_cycle(image, workdir, target="local", crash="sysrq", **kwargs)
    timing = capture_timing(read_serial_log(result.serial_log), tool)
    dump = find_dump(result, tool)
    problems = list(result.problems)
    if dump is None:
        problems.append(f"{tool} saved no dump in /var/crash: {result.dump_files}")
    if "dump_saved" not in timing:
        problems.append(f"no '{SAVED[tool].pattern}' line on the capture kernel's console")
    run = CaptureRun(
        tool=tool,
        kernel=image.kernel,
        release=image.release,
        ok=not problems,
        timing=timing,
        dump_file=dump.relative_to(result.dump_dir).as_posix()
        if dump and result.dump_dir
        else None,
        dump_bytes=dump.stat().st_size if dump else None,
        workdir=workdir,
        problems=problems,
        loadavg=loadavg,
    )
    (workdir / "capture-run.json").write_text(json.dumps(run.to_json(), indent=2) + "\n")
    return run, result


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


__all__ = [
    "MASK_KDUMPER",
    "PACKAGES",
    "TOOLS",
    "CaptureRun",
    "build_kdumptools",
    "capture_cycle",
    "capture_timing",
    "configure_defaults",
    "crash_moment",
    "find_dump",
    "read_serial_log",
]
