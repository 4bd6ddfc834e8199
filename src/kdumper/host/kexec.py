"""``kexec_file_load(2)`` through ctypes: load and unload the capture kernel, read the state.

Only the file-based syscall is used: the kernel itself parses the image, checks its signature,
builds the ELF core header and places everything inside the ``Crash kernel`` reservation. Every
errno becomes a diagnosis a user can act on (:func:`diagnose`; errno meanings from
kernel/kexec_file.c, reference/service.md §4.1).

The syscall is injectable (a :data:`SyscallFn`): tests pass a fake that raises ``OSError`` with
the errno under test, so nothing here needs a real kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputNotFoundError, KernelError
from .crashkernel import MiB, mib, recommend
from .paths import HostPaths, read_int, read_text

# kexec_file_load syscall numbers (kexec-tools kexec/kexec-syscall.h; asm-generic for arm64,
# riscv64 and loongarch64)
SYSCALL_NUMBERS = {
    "x86_64": 320,
    "aarch64": 294,
    "ppc64le": 382,
    "ppc64": 382,
    "s390x": 381,
    "riscv64": 294,
    "loongarch64": 294,
}
KEXEC_FILE_UNLOAD = 0x1
KEXEC_FILE_ON_CRASH = 0x2
KEXEC_FILE_NO_INITRAMFS = 0x4
# COMMAND_LINE_SIZE per arch (arch/*/include/uapi/asm/setup.h); the x86 bzImage loader also
# needs room for the "elfcorehdr=0x...K" it appends (MAX_ELFCOREHDR_STR_LEN = 30).
COMMAND_LINE_SIZE = {
    "x86_64": 2048,
    "aarch64": 2048,
    "ppc64le": 2048,
    "ppc64": 2048,
    "s390x": 4096,
    "riscv64": 1024,
    "loongarch64": 4096,
}
ELFCOREHDR_ROOM = 30
SIGNATURE_ERRNOS = {
    errno.EKEYREJECTED,
    errno.ENOKEY,
    errno.EBADMSG,
    errno.ENOPKG,
    errno.ELIBBAD,
    errno.EMSGSIZE,
}

SyscallFn = Callable[[int, int, bytes | None, int], None]
"""``(kernel_fd, initrd_fd, cmdline, flags)``; ``cmdline`` includes its trailing NUL (its length
is the syscall's ``cmdline_len``). Returns on success, raises ``OSError`` with the errno."""


class KexecError(KernelError):
    """The kernel refused a kexec load or unload; the message says why and what to do."""

    template = "{msg}"

    def __init__(self, msg: str, err: int = 0) -> None:
        super().__init__(msg)
        self.errno = err


def machine() -> str:
    """``uname -m``."""
    return platform.machine()


def real_syscall(arch: str | None = None) -> SyscallFn:
    """The real ``kexec_file_load`` of this machine through libc's ``syscall(2)``."""
    arch = arch or machine()
    nr = SYSCALL_NUMBERS.get(arch)
    if nr is None:
        raise KexecError(f"kexec_file_load: no syscall number known for {arch}", errno.ENOSYS)
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.syscall
    fn.restype = ctypes.c_long
    fn.argtypes = [
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_char_p,
        ctypes.c_ulong,
    ]

    def call(kernel_fd: int, initrd_fd: int, cmdline: bytes | None, flags: int) -> None:
        length = len(cmdline) if cmdline is not None else 0
        if fn(nr, kernel_fd, initrd_fd, length, cmdline, flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


# ---------------------------------------------------------------------------------------------
# State


def lockdown_mode(text: str | None) -> str | None:
    """The active mode of ``/sys/kernel/security/lockdown`` (``[none] integrity ...``)."""
    if not text:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


@dataclass(frozen=True)
class KexecState:
    """What the kernel reports about kdump (None: the file is missing)."""

    loaded: bool | None
    crash_size: int | None
    elfcorehdr_size: int | None
    cpu_hotplug: bool | None  # the kernel updates the loaded image on CPU hotplug itself
    memory_hotplug: bool | None
    lockdown: str | None
    load_disabled: bool | None
    load_limit_panic: int | None

    @property
    def supported(self) -> bool:
        """Whether the kernel has kexec crash support at all."""
        return self.loaded is not None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return dict(self.__dict__)


def _flag(path: str) -> bool | None:
    value = read_int(path)
    return None if value is None else value != 0


def read_state(paths: HostPaths) -> KexecState:
    """Read the kdump state files of ``paths``."""
    return KexecState(
        loaded=_flag(paths.kexec_crash_loaded),
        crash_size=read_int(paths.kexec_crash_size),
        elfcorehdr_size=read_int(paths.crash_elfcorehdr_size),
        cpu_hotplug=_flag(paths.cpu_crash_hotplug),
        memory_hotplug=_flag(paths.memory_crash_hotplug),
        lockdown=lockdown_mode(read_text(paths.lockdown)),
        load_disabled=_flag(paths.kexec_load_disabled),
        load_limit_panic=read_int(paths.kexec_load_limit_panic),
    )


# ---------------------------------------------------------------------------------------------
# Sizes

_SETUP = struct.Struct("<4sH")  # "HdrS", boot protocol version, at 0x202
_INIT_SIZE = struct.Struct("<I")  # at 0x260 (protocol 2.10+)


def image_memory(path: str) -> int:
    """Memory the kernel image occupies once loaded: the bzImage ``init_size`` (x86), else the
    file size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(0x264)
    except OSError:
        return 0
    if len(head) >= 0x264:
        magic, version = _SETUP.unpack_from(head, 0x202)
        if magic == b"HdrS" and version >= 0x020A:
            init_size: int = _INIT_SIZE.unpack_from(head, 0x260)[0]
            return max(size, init_size)
    return size


def load_need(kernel: str, initrd: str | None) -> int:
    """Bytes the load itself needs in the reservation: image, initrd, purgatory and headers."""
    need = image_memory(kernel) + 2 * MiB  # purgatory, boot parameters, elfcorehdr, alignment
    if initrd:
        with contextlib.suppress(OSError):
            need += os.path.getsize(initrd)
    return need


# ---------------------------------------------------------------------------------------------
# Diagnosis


@dataclass(frozen=True)
class LoadRequest:
    """One capture kernel load."""

    kernel: str
    initrd: str | None
    cmdline: str


def _size_hint(state: KexecState, req: LoadRequest | None, ram: int | None) -> str:
    reserved = state.crash_size or 0
    if reserved == 0:
        return (
            "no memory is reserved for a crash kernel (no crashkernel= on the kernel command "
            "line, or the kernel could not reserve it); run `kdumper crashkernel --set auto` "
            "and reboot"
        )
    parts = [f"the crash kernel reservation ({mib(reserved)}) is too small"]
    if req is not None:
        need = load_need(req.kernel, req.initrd)
        parts.append(f"loading this kernel and initrd needs at least {mib(need)}")
    if ram:
        rec = recommend(ram)
        if rec.size:
            parts.append(f"a capture needs about {mib(rec.size)} on this machine")
    return "; ".join(parts) + "; run `kdumper crashkernel --set auto` and reboot"


def diagnose(
    err: int,
    *,
    state: KexecState,
    req: LoadRequest | None = None,
    euid: int | None = None,
    ram: int | None = None,
    unload: bool = False,
) -> str:
    """What an errno from ``kexec_file_load`` means here and what to do about it."""
    kernel = req.kernel if req is not None else "the kernel image"
    if err == errno.EADDRNOTAVAIL:
        return _size_hint(state, req, ram)
    if err == errno.ENOMEM:
        return "the kernel ran out of memory for the load (ENOMEM): " + _size_hint(state, req, ram)
    if err == errno.EPERM:
        if euid not in (None, 0):
            return "permission denied: loading a crash kernel needs root (CAP_SYS_BOOT)"
        if state.load_disabled:
            return (
                "kexec is switched off until the next reboot (kernel.kexec_load_disabled = 1); "
                "remove that sysctl setting and reboot"
            )
        if state.load_limit_panic == 0:
            return (
                "no crash kernel loads are left (kernel.kexec_load_limit_panic = 0); "
                "raise it or reboot"
            )
        if state.lockdown in ("integrity", "confidentiality"):
            return (
                f"the kernel is locked down ({state.lockdown}, usually because of Secure Boot) "
                f"and refused {kernel}: it only loads images signed with a key it trusts; load "
                "the distribution's signed kernel (check [load] kernel), or enrol the signing "
                "key with mokutil"
            )
        return (
            "the kernel refused the load (EPERM): kexec may be disabled or a security policy "
            "refused it; check dmesg"
        )
    if err in SIGNATURE_ERRNOS:
        lock = f" (lockdown: {state.lockdown})" if state.lockdown else ""
        return (
            f"the signature check of {kernel} failed ({errno.errorcode.get(err, err)}){lock}: "
            "this kernel only loads signed images; load the distribution's signed kernel, or "
            "enrol the signing key with mokutil"
        )
    if err == errno.EACCES:
        return (
            f"a security module (IMA or another LSM) refused {kernel}; check dmesg for 'ima:' "
            "and the appraisal policy"
        )
    if err == errno.ENOEXEC:
        return (
            f"{kernel} is not a kernel image this kernel can load (x86_64 needs a bzImage such "
            "as /boot/vmlinuz-*, not an ELF vmlinux; arm64 an Image or vmlinuz.efi)"
        )
    if err == errno.EINVAL:
        if unload:
            return "the kernel rejected the unload request (EINVAL)"
        size = len(req.cmdline) + 1 if req is not None else 0
        return (
            "the kernel rejected the load (EINVAL): the kernel image or initrd is damaged or "
            f"of a kind it cannot load, or the command line ({size} bytes) is too long"
        )
    if err in (errno.EOPNOTSUPP, errno.ENOTSUP):
        return (
            "kexec is not supported here (a confidential VM such as TDX or SEV-ES, or an image "
            "type this kernel cannot load)"
        )
    if err == errno.ENOSYS:
        return (
            "this kernel has no kexec_file_load(2) (built without CONFIG_KEXEC_FILE); kdumper "
            "needs it"
        )
    if err == errno.EBUSY:
        return (
            "kexec is busy: another load or unload is running, or the kernel is updating the "
            "loaded crash kernel after a hotplug event; try again in a moment"
        )
    if err == errno.EFBIG:
        return f"{kernel} or its initrd is too large to load"
    if err == errno.ETXTBSY:
        return (
            f"{kernel} or its initrd is open for writing (a kernel update still running?); "
            "try again when it has finished"
        )
    name = errno.errorcode.get(err, str(err))
    return f"kexec_file_load failed: {os.strerror(err)} ({name})"


# ---------------------------------------------------------------------------------------------
# Load and unload


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputNotFoundError(path) from None
    except PermissionError:
        raise KexecError(f"{path}: permission denied (run as root)", errno.EACCES) from None
    except OSError as e:
        raise KexecError(f"{path}: cannot open: {e.strerror}", e.errno or 0) from None


def check_cmdline(cmdline: str, arch: str) -> bytes:
    """The NUL-terminated command line; refuses one the kernel would (too long, NUL inside)."""
    data = cmdline.encode()
    if b"\0" in data:
        raise KexecError("the capture command line contains a NUL byte", errno.EINVAL)
    limit = COMMAND_LINE_SIZE.get(arch, 2048) - (ELFCOREHDR_ROOM if arch == "x86_64" else 0)
    if len(data) + 1 > limit:
        raise KexecError(
            f"the capture command line is {len(data) + 1} bytes; {arch} kernels take at most "
            f"{limit} (trim [load] append_extra or use [load] cmdline)",
            errno.EINVAL,
        )
    return data + b"\0"


def load(
    req: LoadRequest,
    *,
    syscall: SyscallFn | None = None,
    paths: HostPaths | None = None,
    arch: str | None = None,
    ram: int | None = None,
) -> None:
    """Load ``req`` as the crash kernel (``KEXEC_FILE_ON_CRASH``); raises :class:`KexecError`.

    Loading replaces a crash kernel that is already loaded (the kernel frees the old one first,
    so a failed load leaves none).
    """
    paths = paths or HostPaths()
    arch = arch or machine()
    data = check_cmdline(req.cmdline, arch)
    call = syscall or real_syscall(arch)
    flags = KEXEC_FILE_ON_CRASH
    kfd = _open(req.kernel)
    ifd = -1
    try:
        if req.initrd:
            ifd = _open(req.initrd)
        else:
            flags |= KEXEC_FILE_NO_INITRAMFS
        try:
            call(kfd, ifd, data, flags)
        except OSError as e:
            err = e.errno or 0
            state = read_state(paths)
            msg = diagnose(err, state=state, req=req, euid=os.geteuid(), ram=ram)
            raise KexecError(f"cannot load the capture kernel: {msg}", err) from None
    finally:
        os.close(kfd)
        if ifd >= 0:
            os.close(ifd)


def unload(
    *, syscall: SyscallFn | None = None, paths: HostPaths | None = None, arch: str | None = None
) -> None:
    """Unload the crash kernel (a no-op when none is loaded)."""
    paths = paths or HostPaths()
    call = syscall or real_syscall(arch)
    try:
        call(-1, -1, None, KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH)
    except OSError as e:
        err = e.errno or 0
        msg = diagnose(err, state=read_state(paths), euid=os.geteuid(), unload=True)
        raise KexecError(f"cannot unload the capture kernel: {msg}", err) from None
