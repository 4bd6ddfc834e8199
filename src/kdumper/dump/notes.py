"""ELF notes of a vmcore: parse and build the note stream; NT_PRSTATUS registers per CPU."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import field

from ..errors import DumpFormatError
from ..records import record
from .arch import Arch

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_PRPSINFO = 3
NT_TASKSTRUCT = 4
NT_AUXV = 6
VMCOREINFO_NOTE_NAME = "VMCOREINFO"
VMCOREINFO_NOTE_TYPE = 0
ERASEINFO_NOTE_NAME = "ERASEINFO"

_MAX_NOTE_FIELD = 1 << 30  # a name or desc larger than this is corruption, not data


@record(frozen=True)
class Note:
    """One ELF note. ``desc_offset`` is where ``desc`` lies inside the note segment."""

    name: str
    type: int
    desc: bytes
    desc_offset: int = 0


@record(frozen=True)
class PrStatus:
    """One CPU's NT_PRSTATUS: the registers at the time of the crash."""

    cpu: int  # index of the note among the NT_PRSTATUS notes
    pid: int
    signal: int
    registers: dict[str, int] = field(default_factory=dict)

    def pc(self, arch: Arch) -> int:
        """The program counter."""
        return self.registers.get(arch.pc_register, 0)

    def sp(self, arch: Arch) -> int:
        """The stack pointer."""
        return self.registers.get(arch.sp_register, 0)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_notes(data: bytes, endian: str = "<", path: str = "dump") -> list[Note]:
    """Parse a PT_NOTE segment (4-byte aligned Elf64_Nhdr records); stops at zero padding."""
    hdr = struct.Struct(endian + "III")
    notes: list[Note] = []
    pos = 0
    while pos + hdr.size <= len(data):
        namesz, descsz, ntype = hdr.unpack_from(data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break  # padding at the end of the segment (/proc/vmcore pads with zeros)
        if namesz > _MAX_NOTE_FIELD or descsz > _MAX_NOTE_FIELD:
            raise DumpFormatError(f"ELF note at {pos:#x} has an absurd size", path=path)
        name_at = pos + hdr.size
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > len(data):
            raise DumpFormatError(
                f"ELF note at {pos:#x} runs past the end of the note segment", path=path
            )
        name = data[name_at : name_at + namesz].rstrip(b"\0").decode("ascii", "replace")
        notes.append(Note(name, ntype, bytes(data[desc_at : desc_at + descsz]), desc_at))
        pos = end
    return notes


def build_notes(notes: Iterable[Note], endian: str = "<") -> bytes:
    """The PT_NOTE bytes for ``notes`` (names NUL-terminated, both fields 4-byte aligned)."""
    out = bytearray()
    hdr = struct.Struct(endian + "III")
    for note in notes:
        name = note.name.encode() + b"\0"
        out += hdr.pack(len(name), len(note.desc), note.type)
        out += name.ljust(_align4(len(name)), b"\0")
        out += note.desc.ljust(_align4(len(note.desc)), b"\0")
    return bytes(out)


def parse_prstatus(notes: Sequence[Note], arch: Arch) -> list[PrStatus]:
    """The registers of every CPU from the ``CORE`` NT_PRSTATUS notes, in note order."""
    word = "Q" if arch.bits == 64 else "I"
    wsize = arch.bits // 8
    result: list[PrStatus] = []
    for note in notes:
        if note.type != NT_PRSTATUS or note.name != "CORE":
            continue
        desc = note.desc
        signal = struct.unpack_from(arch.endian + "h", desc, 12)[0] if len(desc) >= 14 else 0
        pid = struct.unpack_from(arch.endian + "i", desc, 32)[0] if len(desc) >= 36 else 0
        regs: dict[str, int] = {}
        for i, name in enumerate(arch.registers):
            off = arch.prstatus_reg_offset + i * wsize
            if off + wsize > len(desc):
                break
            regs[name] = struct.unpack_from(arch.endian + word, desc, off)[0]
        result.append(PrStatus(cpu=len(result), pid=pid, signal=signal, registers=regs))
    return result


def build_prstatus(arch: Arch, pid: int, registers: dict[str, int], signal: int = 0) -> Note:
    """An NT_PRSTATUS ``CORE`` note with ``registers`` (missing ones are 0)."""
    word = "Q" if arch.bits == 64 else "I"
    wsize = arch.bits // 8
    desc = bytearray(arch.prstatus_size)
    struct.pack_into(arch.endian + "h", desc, 12, signal)
    struct.pack_into(arch.endian + "i", desc, 32, pid)
    for i, name in enumerate(arch.registers):
        struct.pack_into(
            arch.endian + word, desc, arch.prstatus_reg_offset + i * wsize, registers.get(name, 0)
        )
    return Note("CORE", NT_PRSTATUS, bytes(desc))


def find_vmcoreinfo_note(notes: Sequence[Note]) -> Note | None:
    """The VMCOREINFO note (the kernel's, or the one QEMU adds from its vmcoreinfo device)."""
    for note in notes:
        if note.name == VMCOREINFO_NOTE_NAME:
            return note
    return None
