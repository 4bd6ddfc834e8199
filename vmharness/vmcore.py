"""One full kdump cycle in QEMU, cached by content: boot, load, crash, capture, extract.

The first kernel boots the harness initramfs with ``crashkernel=``, loads the capture kernel with
``kexec -s -p``, runs the scenario's workload, prints ``/proc`` counters and crashes with the
trigger. The capture kernel's ``/init`` writes ``makedumpfile --dump-dmesg``, ``makedumpfile -d 31
-c`` (and ``-z`` with 1.7.6) and a raw copy of ``/proc/vmcore`` to an ext4 dump disk, then powers
off; the host pulls the files out with ``debugfs``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import kernels
from .cache import cache_dir, content_key, ensure_dir, file_digest
from .disk import extract_files, make_ext4_image
from .errors import GuestError, HarnessError
from .initramfs import MAKEDUMPFILE_SUITES, build_guest_initramfs, guest_script_digest
from .qemu import Disk, QemuConfig, QemuVM, SerialLine

#: Bump when the artifacts change meaning (invalidates every cached vmcore).
HARNESS_VERSION = "1"

SCENARIOS: tuple[str, ...] = ("minimal", "busy")

#: trigger -> extra kernel command line of the first kernel
TRIGGERS: dict[str, str] = {
    "sysrq": "",
    "null": "oops=panic",
    "bug": "oops=panic",
    "warn": "panic_on_warn=1",
    "softlockup": "softlockup_panic=1 watchdog_thresh=1",
    "panic": "",
}

#: The panic line each trigger leaves in the kernel log.
EXPECTED_LOG: dict[str, str] = {
    "sysrq": "sysrq triggered crash",
    "null": "BUG: kernel NULL pointer dereference",
    "bug": "kernel BUG at",
    "warn": "kdumper_crash: WARN() requested",
    "softlockup": "soft lockup",
    "panic": "kdumper_crash: panic requested",
}

#: /proc files printed by the guest just before the crash (cut out of the serial log).
SECTIONS: tuple[str, ...] = ("meminfo", "vmstat", "buddyinfo", "zoneinfo", "slabinfo")

DEFAULT_CRASHKERNEL = "256M"

#: files written by the capture kernel's /init on the dump disk
DUMP_FILES: tuple[str, ...] = (
    "vmcore.elf",
    "vmcore.d31c",
    "vmcore.d31z",
    "dmesg.txt",
    "makedumpfile-version.txt",
    "makedumpfile-dmesg.log",
    "makedumpfile-d31c.log",
    "makedumpfile-d31z.log",
    "dd.log",
    "capture-cmdline.txt",
)


@dataclass(frozen=True)
class VmcoreArtifacts:
    """Everything one kdump cycle left behind (all paths inside one cache directory)."""

    directory: Path
    elf: Path
    """Raw copy of the capture kernel's ``/proc/vmcore`` (ELF64 core; sparse on disk)."""
    makedumpfile_d31: Path
    """``makedumpfile -d 31 -c`` output (kdump-compressed, zlib) made in the guest."""
    makedumpfile_d31_zstd: Path | None
    """``makedumpfile -d 31 -z`` output when the makedumpfile used has zstd (1.7.6)."""
    dmesg: Path
    """``makedumpfile --dump-dmesg`` text."""
    meminfo: Path
    vmstat: Path
    buddyinfo: Path
    zoneinfo: Path
    slabinfo: Path
    serial_log: Path
    """Serial console of both kernels; every line prefixed with host seconds since start."""
    timings_json: Path
    timings: dict[str, float]
    kernel: str
    """The kernel name asked for (``6.1``, ``6.12`` or a package)."""
    kernel_package: str
    kernel_version: str
    kernel_release: str
    makedumpfile_version: str
    scenario: str
    trigger: str
    mem_mib: int
    vmlinuz: Path
    modules_dir: Path
    vmlinux: Path | None = None
    """The ``-dbg`` vmlinux with debug info (only with ``dbg=True``)."""
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (paths as strings)."""
        out = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def parse_mem(mem: str | int) -> int:
    """Guest memory in MiB from ``1G``, ``1536M``, ``2048`` or an int (MiB)."""
    if isinstance(mem, int):
        return mem
    m = re.fullmatch(r"\s*(\d+)\s*([MmGg]i?[Bb]?)?\s*", mem)
    if not m:
        raise HarnessError(f"bad memory size {mem!r} (use e.g. 1G or 1536M)")
    value = int(m.group(1))
    return value * 1024 if (m.group(2) or "M").upper().startswith("G") else value


def default_makedumpfile(kernel: kernels.Kernel) -> str:
    """bookworm's 1.7.2 for 5.10/6.1, trixie's 1.7.6 (knows newer kernels, has zstd) otherwise."""
    return "1.7.6" if kernel.suite not in ("bullseye", "bookworm") else "1.7.2"


def _cut_section(lines: list[SerialLine], name: str) -> str:
    begin = f"KDUMPER: BEGIN {name}"
    end = f"KDUMPER: END {name}"
    out: list[str] = []
    inside = False
    for line in lines:
        text = line.text
        if text.strip() == begin:
            inside, out = True, []
        elif text.strip() == end and inside:
            return "\n".join(out) + "\n"
        elif inside and not re.match(r"\[\s*\d+\.\d+\]", text):
            out.append(text)
    raise HarnessError(f"section {name} not found in the serial log")


def _marker_time(lines: list[SerialLine], marker: str, after: float = -1.0) -> float | None:
    for line in lines:
        if line.time >= after and line.text.startswith(marker):
            return line.time
    return None


def _timings(lines: list[SerialLine], exit_time: float) -> dict[str, float]:
    def t(marker: str, after: float = -1.0) -> float | None:
        return _marker_time(lines, marker, after)

    init = t("KDUMPER: init-start")
    loaded = t("KDUMPER: capture-kernel-loaded")
    workload_done = t("KDUMPER: workload-done")
    crash = t("KDUMPER: crash ")
    capture_start = t("KDUMPER: capture-start")
    capture_done = t("KDUMPER: capture-done")
    result: dict[str, float] = {}
    if init is not None:
        result["boot"] = init
    if init is not None and loaded is not None:
        result["arm"] = loaded - init
    if loaded is not None and workload_done is not None:
        result["workload"] = workload_done - loaded
    if crash is not None and capture_start is not None:
        banner = None
        for line in lines:
            if line.time >= crash and "Linux version" in line.text:
                banner = line.time
                break
        if banner is not None:
            result["panic_to_capture_kernel"] = banner - crash
        result["crash"] = capture_start - crash
    if capture_start is not None and capture_done is not None:
        result["capture"] = capture_done - capture_start
        previous = capture_start
        for line in lines:
            m = re.match(r"KDUMPER: step (\S+) rc=\d+", line.text)
            if m and line.time >= capture_start:
                result[f"capture_{m.group(1)}"] = line.time - previous
                previous = line.time
    if capture_done is not None:
        result["shutdown"] = exit_time - capture_done
    result["qemu_total"] = exit_time
    return {k: round(v, 3) for k, v in result.items()}


def _step_codes(lines: list[SerialLine]) -> dict[str, int]:
    codes = {}
    for line in lines:
        m = re.match(r"KDUMPER: step (\S+) rc=(\d+)", line.text)
        if m:
            codes[m.group(1)] = int(m.group(2))
    return codes


def vmcore_key(
    kernel: kernels.Kernel,
    scenario: str,
    trigger: str,
    mem_mib: int,
    makedumpfile: str,
    zstd: bool,
    crashkernel: str,
    boot: int = 0,
) -> str:
    """The content key of one cycle's artifacts."""
    from .module import MODULE_SOURCES

    extra: dict[str, object] = {"boot": boot} if boot else {}  # boot 0 keeps the old keys
    return content_key(
        {
            **extra,
            "harness": HARNESS_VERSION,
            "kernel": [kernel.package.name, kernel.package.version],
            "scenario": scenario,
            "trigger": trigger,
            "mem": mem_mib,
            "makedumpfile": makedumpfile,
            "zstd": zstd,
            "crashkernel": crashkernel,
            "guest": guest_script_digest(),
            "module": file_digest(*MODULE_SOURCES) if trigger != "sysrq" else None,
        }
    )


def get_vmcore(
    kernel: str = "6.1",
    scenario: str = "busy",
    trigger: str = "sysrq",
    mem: str | int = "1G",
    dbg: bool = False,
    makedumpfile: str | None = None,
    zstd: bool | None = None,
    crashkernel: str = DEFAULT_CRASHKERNEL,
    accel: str = "auto",
    rebuild: bool = False,
    boot: int = 0,
) -> VmcoreArtifacts:
    """Crash ``kernel`` in QEMU and return its vmcore artifacts (built once, then cached).

    ``kernel``: ``"6.1"``, ``"6.12"`` or a package name; ``scenario``: one of
    :data:`SCENARIOS`; ``trigger``: one of :data:`TRIGGERS`; ``mem``: guest memory (``"1G"``);
    ``dbg``: also fetch the ``-dbg`` vmlinux (~300 MB download); ``makedumpfile``: ``"1.7.2"`` or
    ``"1.7.6"`` (default by kernel); ``zstd``: also write ``-d 31 -z`` (default with 1.7.6);
    ``accel``: ``auto`` (KVM only when a cached probe shows it boots), ``tcg`` or ``kvm``;
    ``boot``: another number gives another boot of the same configuration (its own KASLR slide,
    PIDs and times), cached separately: the same crash seen twice.
    """
    if scenario not in SCENARIOS:
        raise HarnessError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    if trigger not in TRIGGERS:
        raise HarnessError(f"unknown trigger {trigger!r}; choose from {', '.join(TRIGGERS)}")
    mem_mib = parse_mem(mem)
    started = time.monotonic()
    kern = kernels.get_kernel(kernel)
    download_s = time.monotonic() - started
    mdf = makedumpfile or default_makedumpfile(kern)
    if mdf not in MAKEDUMPFILE_SUITES:
        raise HarnessError(
            f"makedumpfile {mdf} not in the guest; choose {list(MAKEDUMPFILE_SUITES)}"
        )
    use_zstd = (mdf == "1.7.6") if zstd is None else zstd
    if use_zstd and mdf == "1.7.2":
        raise HarnessError("makedumpfile 1.7.2 has no zstd: use makedumpfile='1.7.6'")
    key = vmcore_key(kern, scenario, trigger, mem_mib, mdf, use_zstd, crashkernel, boot)
    final = cache_dir("vmcores") / f"{kern.release}-{scenario}-{trigger}-{mem_mib}M-{key}"
    if rebuild and final.exists():
        shutil.rmtree(final)

    def build(tmp: Path) -> None:
        try:
            _run_cycle(
                tmp,
                kern,
                scenario,
                trigger,
                mem_mib,
                mdf,
                use_zstd,
                crashkernel,
                accel,
                download_s,
            )
        except BaseException as exc:
            _keep_failure(tmp, final.name, exc)
            raise

    ensure_dir(final, build)
    shutil.rmtree(cache_dir("failures") / final.name, ignore_errors=True)
    vmlinux = None
    if dbg:
        vmlinux = kernels.get_vmlinux(kern)
    return load_artifacts(final, kernel_name=kernel, vmlinux=vmlinux, kern=kern)


def _keep_failure(tmp: Path, name: str, exc: BaseException) -> None:
    """Copy the logs of a failed cycle to ``<cache>/failures/<name>`` for inspection."""
    dest = cache_dir("failures") / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for log in ("serial.log", ".work/qemu.stderr", ".work/qemu-cmdline.json"):
        if (tmp / log).exists():
            shutil.copy2(tmp / log, dest / Path(log).name)
    (dest / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
    if isinstance(exc, HarnessError):
        exc.args = (f"{exc} (logs kept in {dest})",)


def load_artifacts(
    directory: Path,
    kernel_name: str = "",
    vmlinux: Path | None = None,
    kern: kernels.Kernel | None = None,
) -> VmcoreArtifacts:
    """Read a finished artifact directory back into :class:`VmcoreArtifacts`."""
    info = json.loads((directory / "info.json").read_text())
    timings = json.loads((directory / "timings.json").read_text())
    zstd_path = directory / "vmcore.d31z"
    return VmcoreArtifacts(
        directory=directory,
        elf=directory / "vmcore.elf",
        makedumpfile_d31=directory / "vmcore.d31c",
        makedumpfile_d31_zstd=zstd_path if zstd_path.exists() else None,
        dmesg=directory / "dmesg.txt",
        meminfo=directory / "meminfo.txt",
        vmstat=directory / "vmstat.txt",
        buddyinfo=directory / "buddyinfo.txt",
        zoneinfo=directory / "zoneinfo.txt",
        slabinfo=directory / "slabinfo.txt",
        serial_log=directory / "serial.log",
        timings_json=directory / "timings.json",
        timings=timings,
        kernel=kernel_name or info["kernel_release"],
        kernel_package=info["kernel_package"],
        kernel_version=info["kernel_version"],
        kernel_release=info["kernel_release"],
        makedumpfile_version=info["makedumpfile_version"],
        scenario=info["scenario"],
        trigger=info["trigger"],
        mem_mib=info["mem_mib"],
        vmlinuz=kern.vmlinuz if kern else Path(info["vmlinuz"]),
        modules_dir=kern.modules_dir if kern else Path(info["modules_dir"]),
        vmlinux=vmlinux,
        info=info,
    )


def _run_cycle(
    out: Path,
    kern: kernels.Kernel,
    scenario: str,
    trigger: str,
    mem_mib: int,
    mdf: str,
    zstd: bool,
    crashkernel: str,
    accel: str,
    download_s: float,
) -> None:
    timings: dict[str, float] = {"download": round(download_s, 3)}
    crash_module = None
    if trigger != "sysrq":
        from .module import build_crash_module

        t = time.monotonic()
        crash_module = build_crash_module(kern)
        timings["module_build"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    image = build_guest_initramfs(kern, crash_module, HARNESS_VERSION)
    timings["initramfs"] = round(time.monotonic() - t, 3)

    work = out / ".work"
    work.mkdir()
    t = time.monotonic()
    dump_img = make_ext4_image(
        work / "dump.img", mem_mib * 3 // 2 + 256, journal=False, label="kdumper-dump"
    )
    disks = [Disk(dump_img)]
    if scenario == "busy":
        work_img = make_ext4_image(work / "work.img", max(256, mem_mib // 2), label="kdumper-work")
        disks.append(Disk(work_img))
    timings["disks"] = round(time.monotonic() - t, 3)

    append = " ".join(
        part
        for part in (
            "console=ttyS0",
            f"crashkernel={crashkernel}",
            "panic=5",
            f"kdumper.scenario={scenario}",
            f"kdumper.trigger={trigger}",
            f"kdumper.mdf={mdf}",
            f"kdumper.zstd={int(zstd)}",
            TRIGGERS[trigger],
        )
        if part
    )
    config = QemuConfig(
        kernel=kern.vmlinuz,
        initrd=image.initrd,
        append=append,
        mem_mib=mem_mib,
        disks=tuple(disks),
        accel=accel,
    )
    serial_log = out / "serial.log"
    timeout = 240 + 90 * max(1, mem_mib // 1024)
    with QemuVM(config, work, serial_log=serial_log) as vm:
        done = vm.wait_for(r"^KDUMPER: capture-done", timeout, abort=r"^KDUMPER: FAIL")
        if done is None:
            stderr = vm.stderr_tail()
            detail = f": {stderr}" if stderr else ""
            raise GuestError(f"QEMU exited before the capture finished{detail}", serial_log)
        code = vm.wait_exit(60)
        exit_time = vm.elapsed()
        lines = list(vm.lines)
        used_accel = vm.accel
    if code != 0:
        raise GuestError(f"QEMU exited with status {code}", serial_log)
    timings.update(_timings(lines, exit_time))

    t = time.monotonic()
    extracted = extract_files(dump_img, {f"/{name}": out / name for name in DUMP_FILES})
    timings["extract"] = round(time.monotonic() - t, 3)
    for required in ("vmcore.elf", "vmcore.d31c", "dmesg.txt"):
        if f"/{required}" not in extracted or (out / required).stat().st_size == 0:
            raise GuestError(f"the capture did not write {required}", serial_log)
    with (out / "vmcore.elf").open("rb") as f:
        if f.read(4) != b"\x7fELF":
            raise GuestError("vmcore.elf is not an ELF file", serial_log)
    with (out / "vmcore.d31c").open("rb") as f:
        if f.read(8) != b"KDUMP   ":
            raise GuestError("vmcore.d31c is not a kdump-compressed file", serial_log)
    for name in SECTIONS:
        (out / f"{name}.txt").write_text(_cut_section(lines, name))
    shutil.rmtree(work)

    version_text = (out / "makedumpfile-version.txt").read_text()
    m = re.search(r"version\s+(\S+)", version_text)
    info = {
        "harness_version": HARNESS_VERSION,
        "guest_digest": guest_script_digest(),
        "kernel_package": kern.package.name,
        "kernel_version": kern.package.version,
        "kernel_suite": kern.package.suite,
        "kernel_release": kern.release,
        "vmlinuz": str(kern.vmlinuz),
        "modules_dir": str(kern.modules_dir),
        "scenario": scenario,
        "trigger": trigger,
        "mem_mib": mem_mib,
        "crashkernel": crashkernel,
        "makedumpfile": mdf,
        "makedumpfile_version": m.group(1) if m else mdf,
        "zstd": zstd,
        "accel": used_accel,
        "append": append,
        "step_exit_codes": _step_codes(lines),
        "initramfs": image.manifest,
        "crash_module": str(crash_module) if crash_module else None,
        "sizes": {
            name: (out / name).stat().st_size for name in DUMP_FILES if (out / name).exists()
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")


def cached_vmcores() -> list[dict[str, Any]]:
    """Summaries of the vmcores in the cache (current and stale ones)."""
    current = guest_script_digest()
    result = []
    for info_path in sorted(cache_dir("vmcores").glob("*/info.json")):
        info = json.loads(info_path.read_text())
        result.append(
            {
                "directory": str(info_path.parent),
                "kernel_release": info["kernel_release"],
                "scenario": info["scenario"],
                "trigger": info["trigger"],
                "mem_mib": info["mem_mib"],
                "created": info.get("created", ""),
                "stale": info.get("harness_version") != HARNESS_VERSION
                or info.get("guest_digest") != current,
            }
        )
    return result


def clean_cache() -> list[Path]:
    """Remove failure logs, stale vmcores and initramfs images; returns what was removed."""
    removed: list[Path] = []
    for entry in cached_vmcores():
        if entry["stale"]:
            removed.append(Path(entry["directory"]))
    current = guest_script_digest()
    for manifest in cache_dir("initramfs").glob("*/manifest.json"):
        if json.loads(manifest.read_text()).get("guest") != current:
            removed.append(manifest.parent)
    removed += [p for p in cache_dir("failures").iterdir() if p.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
