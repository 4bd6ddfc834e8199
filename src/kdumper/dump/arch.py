"""Per-architecture facts a dump reader or writer needs: one table entry per architecture.

Adding an architecture is adding an :class:`Arch` to :data:`ARCHES`; nothing else in ``dump/``
branches on the architecture.
"""

from __future__ import annotations

from typing import Literal

from ..records import record

ByteOrder = Literal["little", "big"]

EM_386 = 3
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183


@record(frozen=True)
class Arch:
    """How one architecture lays out its dumps."""

    name: str  # utsname.machine, as crash and libkdumpfile expect it
    e_machine: int
    byteorder: ByteOrder
    bits: int  # word size: 32 or 64
    page_size: int  # the usual PAGE_SIZE (VMCOREINFO PAGESIZE wins when present)
    # struct elf_prstatus: where pr_reg starts, its register names in order, total size
    prstatus_size: int
    prstatus_reg_offset: int
    registers: tuple[str, ...]
    pc_register: str
    sp_register: str

    @property
    def endian(self) -> str:
        """The ``struct`` module prefix for this byte order."""
        return "<" if self.byteorder == "little" else ">"


# x86_64 user_regs_struct (arch/x86/include/asm/user_64.h); elf_prstatus: 336 bytes, pr_reg at 112.
X86_64 = Arch(
    name="x86_64",
    e_machine=EM_X86_64,
    byteorder="little",
    bits=64,
    page_size=4096,
    prstatus_size=336,
    prstatus_reg_offset=112,
    registers=(
        "r15",
        "r14",
        "r13",
        "r12",
        "rbp",
        "rbx",
        "r11",
        "r10",
        "r9",
        "r8",
        "rax",
        "rcx",
        "rdx",
        "rsi",
        "rdi",
        "orig_rax",
        "rip",
        "cs",
        "eflags",
        "rsp",
        "ss",
        "fs_base",
        "gs_base",
        "ds",
        "es",
        "fs",
        "gs",
    ),
    pc_register="rip",
    sp_register="rsp",
)

# arm64 user_pt_regs: x0..x30, sp, pc, pstate; elf_prstatus is 392 bytes, pr_reg at 112.
AARCH64 = Arch(
    name="aarch64",
    e_machine=EM_AARCH64,
    byteorder="little",
    bits=64,
    page_size=4096,
    prstatus_size=392,
    prstatus_reg_offset=112,
    registers=(*(f"x{i}" for i in range(31)), "sp", "pc", "pstate"),
    pc_register="pc",
    sp_register="sp",
)

# ppc64 pt_regs as exported in ELF_NGREG=48 slots; elf_prstatus is 504 bytes, pr_reg at 112.
PPC64LE = Arch(
    name="ppc64le",
    e_machine=EM_PPC64,
    byteorder="little",
    bits=64,
    page_size=65536,
    prstatus_size=504,
    prstatus_reg_offset=112,
    registers=(
        *(f"r{i}" for i in range(32)),
        "nip",
        "msr",
        "orig_gpr3",
        "ctr",
        "link",
        "xer",
        "ccr",
        "softe",
        "trap",
        "dar",
        "dsisr",
        "result",
        "pad0",
        "pad1",
        "pad2",
        "pad3",
    ),
    pc_register="nip",
    sp_register="r1",
)

# s390x s390_regs: psw (mask, addr), 16 gprs, 16 acrs (4 bytes each), orig_gpr2; pr_reg at 112.
S390X = Arch(
    name="s390x",
    e_machine=EM_S390,
    byteorder="big",
    bits=64,
    page_size=4096,
    prstatus_size=408,
    prstatus_reg_offset=112,
    registers=("psw_mask", "psw_addr", *(f"r{i}" for i in range(16))),
    pc_register="psw_addr",
    sp_register="r15",
)

ARCHES: tuple[Arch, ...] = (X86_64, AARCH64, PPC64LE, S390X)


def arch_for_elf(e_machine: int, byteorder: ByteOrder) -> Arch | None:
    """The architecture of an ELF core, or None when kdumper does not know it."""
    for arch in ARCHES:
        if arch.e_machine == e_machine and arch.byteorder == byteorder:
            return arch
    return None


def arch_for_name(name: str) -> Arch | None:
    """The architecture for a utsname.machine string (``x86_64``, ``aarch64``, ...)."""
    name = name.strip()
    aliases = {"ppc64": "ppc64le", "arm64": "aarch64", "amd64": "x86_64"}
    name = aliases.get(name, name)
    for arch in ARCHES:
        if arch.name == name:
            return arch
    return None
