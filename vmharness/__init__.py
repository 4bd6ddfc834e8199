"""kdumper's VM harness: crash real Debian kernels in QEMU and keep their vmcores.

Typical use::

    from vmharness import get_vmcore
    art = get_vmcore(kernel="6.1", scenario="busy", trigger="sysrq", mem="1G", dbg=True)
    art.elf, art.makedumpfile_d31, art.dmesg, art.meminfo, art.vmlinux

Everything downloaded or built is cached under ``~/.cache/kdumper`` (``$KDUMPER_CACHE``).
``scripts/vm-deps.sh`` installs the host packages the harness needs.
"""

from __future__ import annotations

from .cache import cache_root
from .errors import GuestError, HarnessError
from .kernels import Kernel, cached_kernels, get_kernel, get_vmlinux
from .qemu import Disk, QemuConfig, QemuVM, SerialLine, kvm_works
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
    "Disk",
    "GuestError",
    "HarnessError",
    "Kernel",
    "QemuConfig",
    "QemuVM",
    "SerialLine",
    "VmcoreArtifacts",
    "cache_root",
    "cached_kernels",
    "get_kernel",
    "get_vmcore",
    "get_vmlinux",
    "kvm_works",
    "parse_mem",
]
