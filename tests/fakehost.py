"""A fake machine for the host-side tests: /proc, /sys, /boot and /etc below a temp directory.

:func:`make_host` writes the kernel interface files of one state (no reservation, reserved,
loaded, lockdown, no kdump support); :class:`FakeKexec` stands in for ``kexec_file_load`` and
updates ``kexec_crash_loaded`` the way the kernel would. Nothing here touches the real kernel.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from kdumper.host.paths import HostPaths
from kdumper.host.service import Host

RELEASE = "6.1.0-18-cloud-amd64"
GiB = 1 << 30
MiB = 1 << 20
BOOT_ID = "3f1c1c2e-0000-4000-8000-000000000001"

# A 1 GiB guest with crashkernel=256M (the layout the project's QEMU harness shows).
IOMEM_RESERVED = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-3ffdffff : System RAM
  0f000000-1effffff : Crash kernel
  2a000000-2b001e26 : Kernel code
  2b200000-2bb40fff : Kernel rodata
3ffe0000-3fffffff : Reserved
fffc0000-ffffffff : Reserved
"""
IOMEM_NONE = IOMEM_RESERVED.replace("  0f000000-1effffff : Crash kernel\n", "")
CMDLINE = f"BOOT_IMAGE=/boot/vmlinuz-{RELEASE} root=UUID=1234 ro console=ttyS0 quiet"


def fake_bzimage(init_size: int = 24 * MiB, size: int = 8 * MiB) -> bytes:
    """A file with an x86 bzImage setup header (boot protocol 2.15) and ``init_size``."""
    head = bytearray(0x264)
    struct.pack_into("<4sH", head, 0x202, b"HdrS", 0x020F)
    struct.pack_into("<I", head, 0x260, init_size)
    return bytes(head) + b"\0" * (size - len(head))


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def make_host(
    root: Path,
    state: str = "loaded",
    *,
    release: str = RELEASE,
    cmdline: str | None = None,
    crash_size: int = 256 * MiB,
    lockdown: str = "[none] integrity confidentiality",
    kernel: bool = True,
    initrd: bool = True,
    grub: str | None = None,
) -> Host:
    """A fake machine in ``root``: state is ``none`` (no crashkernel=), ``reserved``,
    ``loaded``, ``lockdown`` (reserved, locked down, not loaded) or ``nokdump``."""
    reserved = state in ("reserved", "loaded", "lockdown")
    if cmdline is None:
        cmdline = CMDLINE + (" crashkernel=256M" if reserved else "")
    _write(root / "proc/cmdline", cmdline + "\n")
    _write(root / "proc/iomem", IOMEM_RESERVED if reserved else IOMEM_NONE)
    _write(root / "proc/meminfo", "MemTotal:         754000 kB\nMemFree:          500000 kB\n")
    _write(root / "proc/sys/kernel/random/boot_id", BOOT_ID + "\n")
    _write(root / "proc/sys/kernel/panic_on_oops", "0\n")
    _write(root / "proc/sys/kernel/kexec_load_disabled", "0\n")
    _write(root / "proc/sys/kernel/kexec_load_limit_panic", "-1\n")
    _write(root / "proc/sysrq-trigger", "")
    if state != "nokdump":
        _write(root / "sys/kernel/kexec_crash_loaded", "1\n" if state == "loaded" else "0\n")
        _write(root / "sys/kernel/kexec_crash_size", f"{crash_size if reserved else 0}\n")
        _write(root / "sys/kernel/crash_elfcorehdr_size", "69632\n")
        _write(root / "sys/devices/system/cpu/crash_hotplug", "1\n")
        _write(root / "sys/devices/system/memory/crash_hotplug", "1\n")
    if state == "lockdown":
        lockdown = "none [integrity] confidentiality"
    _write(root / "sys/kernel/security/lockdown", lockdown + "\n")
    if kernel:
        _write(root / f"boot/vmlinuz-{release}", fake_bzimage())
    if initrd:
        _write(root / f"boot/initrd.img-{release}", b"\x1f\x8b" + b"\0" * (30 * MiB))
    (root / "var/lib/kdumper").mkdir(parents=True, exist_ok=True)
    if grub is not None:
        _write(root / "etc/default/grub", grub)
    host = Host(paths=HostPaths.under(str(root)), release=release, arch="x86_64")
    if state == "loaded":
        # as `kdumper load` leaves it
        kpath = os.path.join(host.paths.boot_dir, f"vmlinuz-{release}")
        record = {
            "kernel": kpath,
            "initrd": None,
            "cmdline": "x",
            "release": release,
            "loaded_at": int(os.path.getmtime(kpath)) + 10,
        }
        _write(root / "var/lib/kdumper/loaded.json", json.dumps(record))
    return host


@dataclass
class FakeKexec:
    """A stand-in for kexec_file_load: records calls, fails with ``fail`` (an errno) or
    succeeds and sets ``kexec_crash_loaded`` like the kernel."""

    paths: HostPaths
    fail: int | None = None
    calls: list[tuple[int, int, bytes | None, int]] = field(default_factory=list)
    kernels: list[bytes] = field(default_factory=list)

    def __call__(self, kernel_fd: int, initrd_fd: int, cmdline: bytes | None, flags: int) -> None:
        self.calls.append((kernel_fd, initrd_fd, cmdline, flags))
        if kernel_fd >= 0:
            self.kernels.append(os.pread(kernel_fd, 8, 0x202))
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        loaded = "0\n" if flags & 0x1 else "1\n"
        Path(self.paths.kexec_crash_loaded).write_text(loaded)


def with_syscall(host: Host, fake: FakeKexec) -> Host:
    """``host`` using ``fake`` as its kexec_file_load."""
    return Host(paths=host.paths, release=host.release, arch=host.arch, syscall=fake)


ERRNOS = {
    "EADDRNOTAVAIL": errno.EADDRNOTAVAIL,
    "ENOMEM": errno.ENOMEM,
    "EPERM": errno.EPERM,
    "EKEYREJECTED": errno.EKEYREJECTED,
    "EBADMSG": errno.EBADMSG,
    "ENOEXEC": errno.ENOEXEC,
    "EINVAL": errno.EINVAL,
    "EBUSY": errno.EBUSY,
    "ENOSYS": errno.ENOSYS,
}
