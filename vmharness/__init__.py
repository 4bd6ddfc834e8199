"""kdumper's VM harness: crash real Debian kernels in QEMU and keep their vmcores.

Typical use::

    from vmharness import get_vmcore
    art = get_vmcore(kernel="6.1", scenario="busy", trigger="sysrq", mem="1G", dbg=True)
    art.elf, art.makedumpfile_d31, art.dmesg, art.meminfo, art.vmlinux

A real Debian guest (debootstrap, systemd, kdumper from the working tree) for kdumper's own
kdump cycle::

    from vmharness import boot_cycle, build_rootfs
    result = boot_cycle(build_rootfs("6.1"), target="local", crash="sysrq")
    result.armed, result.capture_started, result.back, result.dump_dir, result.timings

Everything downloaded or built is cached under ``~/.cache/kdumper`` (``$KDUMPER_CACHE``).
``scripts/vm-deps.sh`` installs the host packages the harness needs.
"""

from __future__ import annotations

from .cache import cache_root
from .errors import GuestError, HarnessError
from .kernels import Kernel, cached_kernels, get_kernel, get_vmlinux
from .qemu import Disk, QemuConfig, QemuVM, SerialLine, kvm_works
from .rootfs import CycleResult, RootfsImage, boot_cycle, build_rootfs, make_root_disk
from .vmcore import (
    EXPECTED_LOG,
    HARNESS_VERSION,
    SCENARIOS,
    TRIGGERS,
    VmcoreArtifacts,
    get_vmcore,
    parse_mem,
)

__all__ = [
    "EXPECTED_LOG",
    "HARNESS_VERSION",
    "SCENARIOS",
    "TRIGGERS",
    "CycleResult",
    "Disk",
    "GuestError",
    "HarnessError",
    "Kernel",
    "QemuConfig",
    "QemuVM",
    "RootfsImage",
    "SerialLine",
    "VmcoreArtifacts",
    "boot_cycle",
    "build_rootfs",
    "cache_root",
    "cached_kernels",
    "get_kernel",
    "get_vmcore",
    "get_vmlinux",
    "kvm_works",
    "make_root_disk",
    "parse_mem",
]
