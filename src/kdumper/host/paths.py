"""Where the host side reads and writes: every kernel interface path in one dataclass.

Tests build a fake tree with :meth:`HostPaths.under` and simulate any machine state; the real
machine uses the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class HostPaths:
    """Paths of the kernel interfaces and state files kdumper's host side uses."""

    proc_cmdline: str = "/proc/cmdline"
    proc_iomem: str = "/proc/iomem"
    proc_meminfo: str = "/proc/meminfo"
    sysrq_trigger: str = "/proc/sysrq-trigger"
    boot_id: str = "/proc/sys/kernel/random/boot_id"
    kexec_crash_loaded: str = "/sys/kernel/kexec_crash_loaded"
    kexec_crash_size: str = "/sys/kernel/kexec_crash_size"
    crash_elfcorehdr_size: str = "/sys/kernel/crash_elfcorehdr_size"
    cpu_crash_hotplug: str = "/sys/devices/system/cpu/crash_hotplug"
    memory_crash_hotplug: str = "/sys/devices/system/memory/crash_hotplug"
    lockdown: str = "/sys/kernel/security/lockdown"
    kexec_load_disabled: str = "/proc/sys/kernel/kexec_load_disabled"
    kexec_load_limit_panic: str = "/proc/sys/kernel/kexec_load_limit_panic"
    panic_on_oops: str = "/proc/sys/kernel/panic_on_oops"
    efivars: str = "/sys/firmware/efi/efivars"
    boot_dir: str = "/boot"
    modules_dir: str = "/lib/modules"
    state_dir: str = "/var/lib/kdumper"
    default_grub: str = "/etc/default/grub"
    default_grub_d: str = "/etc/default/grub.d"

    @classmethod
    def under(cls, root: str) -> HostPaths:
        """The same paths below ``root`` (a fake machine for tests)."""
        base = cls()
        return cls(
            **{f.name: os.path.join(root, getattr(base, f.name).lstrip("/")) for f in fields(cls)}
        )

    @property
    def test_state_file(self) -> str:
        """The ``kdumper test`` state file."""
        return os.path.join(self.state_dir, "test-status.json")


def read_text(path: str) -> str | None:
    """A small kernel file's text, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_int(path: str) -> int | None:
    """A kernel file holding one integer, or None."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None
