"""The crashed kernel's ``utsname``, from its memory or VMCOREINFO.

Kept apart from :mod:`kdumper.kernel.crashinfo` so that the collector, which only needs the name
for the dump header, does not import the log and symbol readers (4 ms of every ``kdumper
save``).
"""

from __future__ import annotations

from ..dump.base import UTS_LEN, Dump, Utsname
from ..errors import KdumperError

UTS_SIZE = 6 * UTS_LEN
X86_64_START_KERNEL_MAP = 0xFFFFFFFF80000000
PPC64_KERNELBASE = 0xC000000000000000


def kernel_image_pa(dump: Dump, vaddr: int) -> int | None:
    """Physical address of a kernel-image virtual address (``__pa_symbol``), None if unknown."""
    info = dump.vmcoreinfo
    if info is None:
        return None
    arch = dump.arch.name
    if arch == "x86_64":
        if not X86_64_START_KERNEL_MAP <= vaddr < X86_64_START_KERNEL_MAP + (1 << 31):
            return None
        return vaddr - X86_64_START_KERNEL_MAP + (info.number("phys_base") or 0)
    if arch == "aarch64":
        voffset = info.number("kimage_voffset")
        return None if voffset is None else (vaddr - voffset) & ((1 << 64) - 1)
    if arch == "ppc64le":
        return vaddr - PPC64_KERNELBASE if vaddr >= PPC64_KERNELBASE else None
    if arch == "s390x":
        return vaddr  # the kernel image is identity-mapped (before Linux 6.5's relocatable image)
    return None


def _plausible(uts: Utsname) -> bool:
    fields = (uts.release, uts.version, uts.machine)
    return (
        uts.sysname == "Linux"
        and bool(uts.release)
        and all(f.isprintable() and "\ufffd" not in f for f in fields)
    )


def utsname_and_source(dump: Dump) -> tuple[Utsname | None, str | None]:
    """The utsname and where it came from (``memory`` or ``vmcoreinfo``), or (None, None)."""
    info = dump.vmcoreinfo
    if info is None:
        return None, None
    try:
        sym = info.symbol("init_uts_ns")
        off = info.offset("uts_namespace", "name")
    except KdumperError:
        sym = off = None
    if sym is not None and off is not None:
        paddr = kernel_image_pa(dump, sym + off)
        if paddr is not None:
            try:
                uts = Utsname.unpack(dump.read_phys(paddr, UTS_SIZE))
            except KdumperError:
                uts = None
            if uts is not None and _plausible(uts):
                return uts, "memory"
    release = info.osrelease
    if not release:
        return None, None
    return Utsname(sysname="Linux", release=release.strip(), machine=dump.arch.name), "vmcoreinfo"


def read_utsname(dump: Dump) -> Utsname | None:
    """The crashed kernel's ``init_uts_ns.name``; falls back to VMCOREINFO OSRELEASE + arch.

    Memory is read at ``SYMBOL(init_uts_ns) + OFFSET(uts_namespace.name)``; the bytes must look
    like a utsname (sysname ``Linux``, printable fields), else the fallback is used. None when
    neither memory nor VMCOREINFO names the kernel release.
    """
    return utsname_and_source(dump)[0]
