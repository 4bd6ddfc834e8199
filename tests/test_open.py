"""open_dump: format sniffing, flattened and split sets, clear errors; read_utsname."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

import kdumper
from kdumper.dump.base import Dump, Utsname
from kdumper.dump.elf import ElfDump, write_elf
from kdumper.dump.io import FileSink
from kdumper.dump.open import describe_head, open_dump
from kdumper.errors import DumpFormatError, InputNotFoundError, UnknownFormatError, UsageError
from kdumper.kernel.utsname import read_utsname
from tests.elf_helpers import (
    KERNEL_MAP,
    PAGE,
    Load,
    default_notes,
    mem_dump,
    pack_elf,
    page_pattern,
    pages_bytes,
    vmcoreinfo_note,
)


def same_pages(a: Dump, b: Dump) -> None:
    assert a.dumped == b.dumped
    for pfn in a.dumped.pfns().tolist():
        assert a.read_pfn(pfn) == b.read_pfn(pfn), pfn


@pytest.fixture
def elf_path(tmp_path: Path) -> Path:
    path = tmp_path / "vmcore"
    path.write_bytes(pack_elf([Load(0, pages_bytes(range(48))), Load(0x100000, bytes(8 * PAGE))]))
    return path


def test_open_elf(elf_path: Path) -> None:
    with kdumper.open(str(elf_path)) as d:
        assert isinstance(d, ElfDump) and d.format == "elf"
        assert d.read_pfn(3) == page_pattern(3)


def test_open_kdump_and_flattened_kdump(elf_path: Path, tmp_path: Path) -> None:
    from kdumper.dump.diskdump import write_kdump
    from kdumper.dump.flattened import FlatSink

    src = open_dump(elf_path)
    with FileSink(tmp_path / "k") as sink:
        write_kdump(sink, src)
    with open(tmp_path / "f", "wb") as stream:
        flat = FlatSink(stream)
        write_kdump(flat, src)
        flat.finish()
    for name, fmt in (("k", "kdump"), ("f", "flattened-kdump")):
        with open_dump(tmp_path / name) as d:
            assert d.format == fmt and d.facts().format == fmt
            same_pages(src, d)


def test_open_flattened_elf(elf_path: Path, tmp_path: Path) -> None:
    from kdumper.dump.flattened import FlatSink

    src = open_dump(elf_path)
    with open(tmp_path / "fe", "wb") as stream:
        sink = FlatSink(stream)
        write_elf(sink, src)
        sink.finish()
    with open_dump(tmp_path / "fe") as d:
        assert isinstance(d, ElfDump) and d.format == "flattened-elf"
        assert d.facts().format == "flattened-elf" and not d.facts().incomplete
        same_pages(src, d)


def test_cut_flattened_elf_is_incomplete(elf_path: Path, tmp_path: Path) -> None:
    from kdumper.dump.flattened import FlatSink

    with open(tmp_path / "fe", "wb") as stream:
        sink = FlatSink(stream)
        write_elf(sink, open_dump(elf_path))
        sink.abort()  # no end marker
    with open_dump(tmp_path / "fe") as d:
        assert d.facts().incomplete and d.warnings


def test_open_split_set_in_any_order(elf_path: Path, tmp_path: Path) -> None:
    from kdumper.dump.split import write_split

    src = open_dump(elf_path)
    parts = [str(tmp_path / f"part{i}") for i in range(3)]
    write_split(parts, src)
    random.Random(3).shuffle(parts)
    with open_dump(*parts) as d:
        assert d.facts().parts == 3
        same_pages(src, d)


def test_split_set_errors(elf_path: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="twice"):
        open_dump(elf_path, elf_path)
    other = tmp_path / "other"
    other.write_bytes(elf_path.read_bytes())
    with pytest.raises(DumpFormatError, match=r"split set \(an ELF core\)"):
        open_dump(elf_path, other)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", "empty"),
        (b"PK\x03\x04" + bytes(60), r"starts with 'PK\\x03\\x04' \(a zip archive"),
        (gzip.compress(b"x" * 100), "gunzip"),
        (b"\x28\xb5\x2f\xfd" + bytes(60), "unzstd"),
        (bytes(8192), "all zero"),
        (b"hello world\nsecond line\n", "a text file"),
        (b"QEVM\x00\x00\x00\x03" + bytes(100), "savevm"),
        (b"\x01\x02\x03\x04\xff\xfe" + bytes(100), "unknown format"),
        (b"makedumpfile\0\0\0\0" + bytes(100), "flattened"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_unknown_formats(tmp_path: Path, data: bytes, text: str) -> None:
    path = tmp_path / "junk"
    path.write_bytes(data)
    with pytest.raises(DumpFormatError, match=text):
        open_dump(path)


def test_flattened_stream_holding_junk(tmp_path: Path) -> None:
    from kdumper.dump.flattened import FlatSink

    with open(tmp_path / "fj", "wb") as stream:
        sink = FlatSink(stream)
        sink.write_at(0, b"PK\x03\x04" + bytes(100))
        sink.finish()
    with pytest.raises(UnknownFormatError, match=r"neither kdump-compressed nor ELF.*zip"):
        open_dump(tmp_path / "fj")


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnknownFormatError, match="is a directory"):
        open_dump(tmp_path)
    (tmp_path / "vmcore").write_bytes(b"x")
    with pytest.raises(UnknownFormatError, match=r"did you mean .*vmcore"):
        open_dump(tmp_path)
    with pytest.raises(InputNotFoundError):
        open_dump(tmp_path / "nope")


def test_describe_head_is_one_line() -> None:
    for head in (b"\x00\x01" * 10, b"abc\ndef", bytes(10), b"\x7fELF"):
        assert "\n" not in describe_head(head)


# -- kernel.utsname.read_utsname -------------------------------------------------------------------

UTS = Utsname("Linux", "crashhost", "6.1.0-13-amd64", "#1 SMP PREEMPT_DYNAMIC Debian", "x86_64")
UTS_VADDR = 0xFFFFFFFF82612000  # init_uts_ns


def uts_core(phys_base: int, payload: bytes, *, with_symbol: bool = True) -> ElfDump:
    paddr = UTS_VADDR - KERNEL_MAP + phys_base
    lines = f"OSRELEASE=6.1.0-fallback\nPAGESIZE=4096\nNUMBER(phys_base)={phys_base}\n"
    if with_symbol:
        lines += f"SYMBOL(init_uts_ns)={UTS_VADDR:x}\nOFFSET(uts_namespace.name)=4\n"
    page = bytearray(PAGE)
    page[4 : 4 + len(payload)] = payload
    notes = [*default_notes()[:2], vmcoreinfo_note(lines)]
    raw = pack_elf([Load(paddr, bytes(page)), Load(0, pages_bytes(range(4)))], notes)
    from kdumper.dump.io import BytesSource

    return ElfDump(BytesSource(raw))


@pytest.mark.parametrize("phys_base", [0, 0x1000000, -0x2000000 + 0x3000000])
def test_read_utsname_from_memory(phys_base: int) -> None:
    assert read_utsname(uts_core(phys_base, UTS.pack())) == UTS


def test_read_utsname_falls_back_on_garbage_or_missing_symbol() -> None:
    fallback = Utsname(sysname="Linux", release="6.1.0-fallback", machine="x86_64")
    assert read_utsname(uts_core(0, b"\xff" * 390)) == fallback
    assert read_utsname(uts_core(0, UTS.pack(), with_symbol=False)) == fallback
    bad = Utsname("Linux", "h", "6.1\x07bad", "v", "x86_64").pack()
    assert read_utsname(uts_core(0, bad)) == fallback


def test_read_utsname_symbol_page_absent() -> None:
    text = f"OSRELEASE=6.2.0\nSYMBOL(init_uts_ns)={UTS_VADDR:x}\nOFFSET(uts_namespace.name)=4\n"
    d = mem_dump([(0, 4)], notes=[vmcoreinfo_note(text)])
    assert read_utsname(d) == Utsname(sysname="Linux", release="6.2.0", machine="x86_64")


def test_read_utsname_without_vmcoreinfo() -> None:
    assert read_utsname(mem_dump([(0, 4)], notes=[])) is None
