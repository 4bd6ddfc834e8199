"""ELF vmcore reader and writer: hand-packed cores, round trips, bad input, drgn/libkdumpfile."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdumper.dump import elf as elfmod
from kdumper.dump.base import Dump
from kdumper.dump.elf import ElfDump, write_elf
from kdumper.dump.io import BytesSource, FileSink, FileSource, Sink
from kdumper.dump.notes import Note
from kdumper.errors import (
    DumpFormatError,
    KdumperError,
    NoSpaceError,
    PageExcludedError,
    PageIncompleteError,
    PageNotPresentError,
    TruncatedDumpError,
    UnknownFormatError,
    UnsupportedError,
)
from kdumper.kernel.utsname import read_utsname
from tests.elf_helpers import (
    DIRECT_MAP,
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


def open_bytes(raw: bytes, **kw: bool) -> ElfDump:
    return ElfDump(BytesSource(raw, path="test.elf"), **kw)


def note_keys(notes: list[Note]) -> list[tuple[str, int, bytes]]:
    return [(n.name, n.type, n.desc) for n in notes]


def all_pages(dump: Dump) -> dict[int, bytes]:
    return {p: dump.read_pfn(p) for p in dump.dumped.pfns().tolist()}


# -- reader: layouts --------------------------------------------------------------------------


def test_basic_core() -> None:
    raw = pack_elf([Load(0x100000, pages_bytes(range(256, 272)))])
    d = open_bytes(raw)
    assert d.arch.name == "x86_64" and d.page_size == PAGE and d.max_pfn == 272
    assert d.present.pfns().tolist() == list(range(256, 272))
    assert d.dumped == d.present
    assert d.read_pfn(256) == page_pattern(256) and d.read_pfn(271) == page_pattern(271)
    assert d.read_phys(0x100000 + 4090, 12) == (page_pattern(256)[4090:] + page_pattern(257)[:6])
    with pytest.raises(PageNotPresentError):
        d.read_pfn(255)
    with pytest.raises(PageNotPresentError):
        d.read_pfn(272)
    f = d.facts()
    assert (f.format, f.nr_cpus, f.crash_time, f.phys_base, f.incomplete) == (
        "elf",
        2,
        1700000000,
        0,
        False,
    )
    assert f.extra["pt_loads"] == 1
    assert d.vmcoreinfo is not None and d.vmcoreinfo.osrelease == "6.1.0-test"
    assert len(d.prstatus) == 2 and d.prstatus[1].pc(d.arch) == 0xFFFFFFFF81000001


def test_unaligned_segments_and_straddling_pages() -> None:
    # RAM from 0x1800 to 0x9fc00 (the BIOS area shape) and a second segment continuing it at
    # 0x9fc00 whose data sits *before* the first one in the file.
    a_data = bytes(range(256)) * ((0x9FC00 - 0x1800) // 256)
    b_data = b"\xab" * (0x2400 + 0x1000)
    raw = pack_elf(
        [Load(0x1800, a_data, offset=0x20000), Load(0x9FC00, b_data, offset=0x4000)],
        data_align=PAGE,
    )
    d = open_bytes(raw)
    assert d.present.pfns().tolist() == list(range(1, 0xA3))
    assert d.dumped == d.present
    assert d.read_pfn(1) == bytes(0x800) + a_data[:0x800]  # hole before the first byte
    page = d.read_pfn(0x9F)  # 0x9f000..0x9fc00 from a, 0x9fc00..0xa0000 from b
    assert page == a_data[0x9F000 - 0x1800 :] + b"\xab" * 0x400
    assert d.read_pfn(0xA2) == b"\xab" * 0x1000
    last = d.read_pfn(0xA2)
    assert len(last) == PAGE
    with pytest.raises(PageNotPresentError):
        d.read_pfn(0)


def test_partial_last_page_counts_as_present() -> None:
    raw = pack_elf([Load(0x10000, b"\x11" * (PAGE + 100))])
    d = open_bytes(raw)
    assert d.present.pfns().tolist() == [16, 17]
    assert d.read_pfn(17) == b"\x11" * 100 + bytes(PAGE - 100)


def test_nodata_range_is_not_dumped_and_reads_zero() -> None:
    # makedumpfile -E: the trailing excluded pages of a segment are [p_filesz, p_memsz)
    raw = pack_elf([Load(0, pages_bytes(range(4)), memsz=8 * PAGE)])
    d = open_bytes(raw)
    assert d.present.count() == 8 and d.dumped.pfns().tolist() == [0, 1, 2, 3]
    assert d.read_pfn(5) == bytes(PAGE)
    strict = open_bytes(raw, nodata_zero=False)
    with pytest.raises(PageExcludedError):
        strict.read_pfn(5)
    assert strict.read_pfn(3) == page_pattern(3)


def test_kernel_text_view_prefers_ram() -> None:
    ram = pages_bytes(range(64))
    text = b"\xee" * (8 * PAGE)  # deliberately different: the RAM segment must win
    raw = pack_elf([
        Load(16 * PAGE, text, vaddr=KERNEL_MAP + 0x1000000),
        Load(0, ram),
    ])  # fmt: skip
    d = open_bytes(raw)
    assert d.read_pfn(20) == page_pattern(20)
    assert d.present.count() == 64
    assert len(d.views) == 1 and d.views[0].vaddr == KERNEL_MAP + 0x1000000
    assert d.facts().extra["views"] == 1


def test_partial_overlap_same_data_is_trimmed() -> None:
    raw = pack_elf([Load(0, pages_bytes(range(8))), Load(4 * PAGE, pages_bytes(range(4, 12)))])
    d = open_bytes(raw)
    assert all_pages(d) == {p: page_pattern(p) for p in range(12)}
    assert any("identical" in w for w in d.warnings)


def test_partial_overlap_different_data_is_an_error() -> None:
    raw = pack_elf([Load(0, pages_bytes(range(8))), Load(4 * PAGE, b"\x01" * 8 * PAGE)])
    with pytest.raises(DumpFormatError, match=r"overlap.*different contents"):
        open_bytes(raw)


def test_truncated_copy_is_readable_and_incomplete() -> None:
    raw = pack_elf([Load(0, pages_bytes(range(16)))])
    cut = raw[: len(raw) - 5 * PAGE - 100]
    d = open_bytes(cut)
    f = d.facts()
    assert f.incomplete and any("truncated" in w for w in f.extra["warnings"])
    assert d.present.count() == 16 and d.dumped.count() == 16  # lost pages stay "dumped"
    assert d.read_pfn(9) == page_pattern(9)
    for pfn in (10, 15):
        with pytest.raises(PageIncompleteError):
            d.read_pfn(pfn)


def test_several_note_segments_and_incomplete_flag() -> None:
    notes = default_notes(cpus=3)
    raw = pack_elf([Load(0, pages_bytes(range(2)))], notes, note_segments=2, e_flags=1)
    d = open_bytes(raw)
    assert [n.name for n in d.notes] == ["CORE", "CORE", "CORE", "VMCOREINFO"]
    f = d.facts()
    assert f.nr_cpus == 3 and f.incomplete and f.crash_time == 1700000000


def test_elf32_core() -> None:
    raw = pack_elf([Load(0x2000, pages_bytes(range(2, 6)), vaddr=0xC0002000)], bits=32)
    d = open_bytes(raw)
    assert d.elf_class == 32 and d.arch.name == "x86_64"
    assert all_pages(d) == {p: page_pattern(p) for p in range(2, 6)}


def test_big_endian_s390x_core() -> None:
    vi = vmcoreinfo_note("OSRELEASE=6.1.0-s390\nPAGESIZE=4096\n")
    raw = pack_elf([Load(0, pages_bytes(range(3)), vaddr=0)], [vi], endian=">", machine=22)
    d = open_bytes(raw)
    assert d.arch.name == "s390x" and d.vmcoreinfo is not None
    assert d.vmcoreinfo.osrelease == "6.1.0-s390"
    assert d.read_pfn(2) == page_pattern(2)


def test_qemu_style_core_without_vmcoreinfo() -> None:
    # dump-guest-memory without paging: p_vaddr 0, notes CORE + QEMU, no VMCOREINFO
    notes = [n for n in default_notes() if n.name == "CORE"] + [Note("QEMU", 0, bytes(0x1B8))]
    raw = pack_elf([Load(0, pages_bytes(range(4)), vaddr=0), Load(0x100000, pages_bytes(
        range(256, 260)), vaddr=0)], notes)  # fmt: skip
    d = open_bytes(raw)
    assert d.vmcoreinfo is None and d.page_size == PAGE and d.facts().crash_time is None
    assert d.dumped.count() == 8 and d.read_pfn(257) == page_pattern(257)


def test_pn_xnum_program_header_count() -> None:
    raw = bytearray(pack_elf([Load(0, pages_bytes(range(2)))]))
    # move the real count (2) into section header 0, put PN_XNUM in e_phnum
    shoff = len(raw)
    raw += struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 1, 0, 2, 0, 0)
    struct.pack_into("<Q", raw, 40, shoff)
    struct.pack_into("<HHH", raw, 56, 0xFFFF, 64, 1)
    d = open_bytes(bytes(raw))
    assert d.read_pfn(1) == page_pattern(1)


# -- reader: bad input ------------------------------------------------------------------------


GOOD = pack_elf([Load(0, pages_bytes(range(4)))])


@pytest.mark.parametrize(
    ("raw", "error", "text"),
    [
        (b"PK\x03\x04" + bytes(100), UnknownFormatError, "not an ELF"),
        (GOOD[:10], TruncatedDumpError, "identification"),
        (GOOD[:40], TruncatedDumpError, "ELF header"),
        (GOOD[:100], TruncatedDumpError, "program headers"),
        (GOOD[:4] + b"\x05" + GOOD[5:], DumpFormatError, "invalid class"),
        (GOOD[:5] + b"\x07" + GOOD[6:], DumpFormatError, "invalid byte order"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_headers(raw: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        open_bytes(raw)


def patched(offset: int, fmt: str, *values: int, base: bytes = GOOD) -> bytes:
    out = bytearray(base)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


PH_LOAD = 64 + 56  # the PT_LOAD program header of GOOD (after the PT_NOTE one)


@pytest.mark.parametrize(
    ("raw", "error", "text"),
    [
        (patched(16, "<H", 2), UnknownFormatError, "vmlinux"),
        (patched(18, "<H", 243), UnsupportedError, "RISC-V"),
        (patched(56, "<H", 60000), TruncatedDumpError, "absurd"),
        (patched(56, "<H", 0), DumpFormatError, "no program headers"),
        (patched(54, "<H", 20), DumpFormatError, "e_phentsize"),
        (patched(56, "<H", 0xFFFF), DumpFormatError, "PN_XNUM"),
        (patched(PH_LOAD + 32, "<Q", 5 * PAGE), DumpFormatError, "p_filesz is larger"),
        (patched(PH_LOAD + 40, "<Q", 1 << 60), DumpFormatError, "absurd size"),
        (patched(PH_LOAD + 24, "<Q", (1 << 52) - 1), DumpFormatError, "absurd size"),
        (patched(64 + 8, "<Q", 1 << 40), TruncatedDumpError, "PT_NOTE"),
        (patched(64 + 32, "<Q", 1 << 40), DumpFormatError, "PT_NOTE.*absurd"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_program_headers(raw: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        open_bytes(raw)


def test_segment_past_eof_is_incomplete_not_an_error() -> None:
    d = open_bytes(patched(PH_LOAD + 8, "<Q", 1 << 40))  # p_offset far past the end
    assert d.facts().incomplete and d.dumped.count() == 4 and d.present.count() == 4
    with pytest.raises(PageIncompleteError):
        d.read_pfn(0)


def test_random_corruption_never_leaks_a_raw_exception() -> None:
    rng = np.random.default_rng(1)
    header_len = 64 + 56 * 2 + 200
    for _ in range(400):
        raw = bytearray(GOOD)
        for _ in range(int(rng.integers(1, 6))):
            raw[int(rng.integers(0, header_len))] = int(rng.integers(0, 256))
        cut = int(rng.integers(0, len(raw) + 1)) if rng.random() < 0.3 else len(raw)
        try:
            d = open_bytes(bytes(raw[:cut]))
            d.facts()
            if d.max_pfn > 1 << 20:  # a corrupt p_paddr far out: no bitmaps here
                continue
            for pfn in d.present.pfns()[:8].tolist():
                with contextlib.suppress(KdumperError):
                    d.read_pfn(pfn)
        except KdumperError:
            pass


# -- writer -----------------------------------------------------------------------------------


def write_to(tmp_path: Path, dump: Dump, name: str = "out.elf", **kw: object) -> Path:
    out = tmp_path / name
    sink = FileSink(out)
    try:
        result = write_elf(sink, dump, **kw)  # type: ignore[arg-type]
    except BaseException:
        sink.abort()
        raise
    sink.finish()
    assert result.bytes_out == out.stat().st_size
    return out


def test_write_roundtrip_with_holes_and_excluded_pages(tmp_path: Path) -> None:
    src = mem_dump([(0, 40), (256, 300)], missing={5, 6, 7, 39, 256, 257}, zero={10, 11})
    out = write_to(tmp_path, src, min_gap=1)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    back = ElfDump(FileSource(out))
    assert back.present == src.present  # the RAM map survives the cut-out pages
    assert back.dumped == src.dumped
    assert all_pages(back) == all_pages(src)
    assert back.read_pfn(6) == bytes(PAGE)  # excluded pages read as zeros (nodata)
    f = back.facts()
    assert not f.incomplete and f.nr_cpus == 2 and note_keys(back.notes) == note_keys(src.notes)
    # RAM run 0..40: [0,5)+gap, [8,39)+gap; RAM run 256..300: leading gap, [258,300)
    assert f.extra["pt_loads"] == 4
    # p_vaddr 0 when the direct map is unknown
    assert np.all(back._vaddr == 0)


def test_write_exclude_zero(tmp_path: Path) -> None:
    src = mem_dump([(0, 32)], zero={3, 4, 31})
    out = tmp_path / "z.elf"
    with FileSink(out) as sink:
        result = write_elf(sink, src, exclude_zero=True, min_gap=1)
    assert (result.pages, result.zero_pages, result.format) == (29, 3, "elf")
    back = ElfDump(FileSource(out))
    assert back.dumped.count() == 29 and not back.dumped.test(3) and back.present.count() == 32
    assert back.read_pfn(4) == bytes(PAGE) and back.read_pfn(5) == page_pattern(5)


def test_write_short_gaps_like_makedumpfile(tmp_path: Path) -> None:
    # makedumpfile -E cuts out only runs of >= 256 excluded pages; shorter ones are written
    zero = set(range(10, 12)) | set(range(100, 400)) | set(range(590, 600))
    src = mem_dump([(0, 600), (700, 710)], zero=zero, missing={700, 701})
    out = tmp_path / "gaps.elf"
    with FileSink(out) as sink:
        result = write_elf(sink, src, exclude_zero=True)
    assert result.zero_pages == 300 + 10  # the 2-page run is written, the others cut
    back = ElfDump(FileSource(out))
    assert back.present == src.present
    assert back.facts().extra["pt_loads"] == 3  # [0,100)+gap, [400,590)+tail gap, [700,710)
    cut = back.present.copy()
    cut.bits &= ~back.dumped.bits
    assert cut.pfns().tolist() == [*range(100, 400), *range(590, 600)]
    assert back.read_pfn(700) == bytes(PAGE)  # a short excluded run reads as zeros
    assert all(back.read_pfn(p) == src.read_pfn(p) for p in src.dumped.pfns().tolist())


def test_write_pages_subset_and_vaddr_base(tmp_path: Path) -> None:
    src = mem_dump([(0, 16)])
    keep = src.dumped.copy()
    keep.set_range(8, 16, False)
    out = write_to(tmp_path, src, pages=keep, vaddr_base=DIRECT_MAP, min_gap=1)
    back = ElfDump(FileSource(out))
    assert back.dumped.pfns().tolist() == list(range(8))
    assert back.vaddr_regions() == [(0, 16, DIRECT_MAP)]


def test_write_from_elf_keeps_vaddr_mapping_and_views(tmp_path: Path) -> None:
    raw = pack_elf([
        Load(16 * PAGE, pages_bytes(range(16, 24)), vaddr=KERNEL_MAP + 0x1000000),
        Load(0, pages_bytes(range(64))),
        Load(0x100000, pages_bytes(range(256, 260)), vaddr=0),
    ])  # fmt: skip
    src = open_bytes(raw)
    out = write_to(tmp_path, src)
    back = ElfDump(FileSource(out))
    assert all_pages(back) == all_pages(src)
    assert back.vaddr_regions() == [(0, 64, DIRECT_MAP), (256, 260, None)]
    assert [(v.paddr, v.memsz, v.vaddr) for v in back.views] == [
        (16 * PAGE, 8 * PAGE, KERNEL_MAP + 0x1000000)
    ]


def test_write_big_endian_and_notes(tmp_path: Path) -> None:
    vi = vmcoreinfo_note("OSRELEASE=6.1.0-s390\nPAGESIZE=4096\n")
    src = open_bytes(pack_elf([Load(0, pages_bytes(range(3)), vaddr=0)], [vi], endian=">",
                              machine=22))  # fmt: skip
    back = ElfDump(FileSource(write_to(tmp_path, src)))
    assert back.arch.name == "s390x" and note_keys(back.notes) == note_keys(src.notes)
    assert all_pages(back) == all_pages(src)


def test_write_pn_xnum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elfmod, "XNUM_THRESHOLD", 4)
    src = mem_dump([(0, 40)], missing=set(range(1, 40, 3)))
    out = write_to(tmp_path, src, min_gap=1)
    raw = out.read_bytes()
    assert struct.unpack_from("<H", raw, 56)[0] == 0xFFFF
    back = ElfDump(FileSource(out))
    assert all_pages(back) == all_pages(src) and back.present == src.present


class FullSink(Sink):
    """A seekable in-memory sink that runs out of space after ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.name = "full.elf"
        self.limit = limit
        self.buf = bytearray()

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        end = offset + len(data)
        if end > self.limit:
            raise NoSpaceError("write failed: no space left", path=self.name)
        if end > len(self.buf):
            self.buf += bytes(end - len(self.buf))
        self.buf[offset:end] = data


def test_no_space_marks_incomplete(tmp_path: Path) -> None:
    src = mem_dump([(0, 600)])
    sink = FullSink(300 * PAGE)
    with pytest.raises(NoSpaceError):
        write_elf(sink, src)
    back = open_bytes(bytes(sink.buf))
    f = back.facts()
    assert f.incomplete and f.extra["e_flags"] & 1
    assert back.read_pfn(10) == page_pattern(10)
    with pytest.raises(PageIncompleteError):
        back.read_pfn(599)


# -- oracles ----------------------------------------------------------------------------------

DRGN_VMCOREINFO = (
    "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nKERNELOFFSET=0\nNUMBER(phys_base)=0\n"
    "SYMBOL(init_top_pgt)=ffffffff82a0a000\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\n"
    "NUMBER(pgtable_l5_enabled)=0\nCRASHTIME=1700000000\n"
)


@pytest.mark.oracle
def test_drgn_reads_our_elf(tmp_path: Path) -> None:
    drgn = pytest.importorskip("drgn")
    src = mem_dump([(0, 64), (256, 320)], missing={7, 8}, zero={12}, notes=default_notes(
        vmcoreinfo=DRGN_VMCOREINFO))  # fmt: skip
    out = write_to(tmp_path, src, exclude_zero=True)
    prog = drgn.Program()
    prog.set_core_dump(str(out))
    for pfn in (0, 1, 12, 13, 63, 256, 319):
        assert prog.read(pfn * PAGE, PAGE, True) == src.read_pfn(pfn), pfn
    assert prog.read(12 * PAGE, PAGE, True) == bytes(PAGE)  # a cut-out zero page reads as zero


@pytest.mark.oracle
def test_libkdumpfile_reads_our_elf(tmp_path: Path) -> None:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import kdumpfile"], capture_output=True)
    if not os.path.exists("/usr/bin/python3") or probe.returncode:
        pytest.skip("python3-libkdumpfile is not installed")
    src = mem_dump([(0, 64)], missing={7}, notes=default_notes(vmcoreinfo=DRGN_VMCOREINFO))
    out = write_to(tmp_path, src)
    pfns = [0, 6, 8, 63]
    script = (
        "import kdumpfile, sys, json\n"
        "k = kdumpfile.kdumpfile(sys.argv[1])\n"
        "k.attr['addrxlat.ostype'] = 'linux'\n"
        "out = {}\n"
        "for p in json.loads(sys.argv[2]):\n"
        "    out[p] = k.read(kdumpfile.KDUMP_MACHPHYSADDR, p * 4096, 4096).hex()\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run(
        ["/usr/bin/python3", "-c", script, str(out), json.dumps(pfns)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    for p in pfns:
        assert bytes.fromhex(got[str(p)]) == src.read_pfn(p)


def test_write_from_truncated_source_marks_lost_pages(tmp_path: Path) -> None:
    src = open_bytes(pack_elf([Load(0, pages_bytes(range(16)))])[: -4 * PAGE])
    out = tmp_path / "lost.elf"
    with FileSink(out) as sink:
        result = write_elf(sink, src, exclude_zero=True)
    assert result.incomplete and result.zero_pages == 0  # lost pages are not "zero pages"
    back = ElfDump(FileSource(out))
    assert back.facts().incomplete and back.e_flags & 1
    assert back.read_pfn(11) == page_pattern(11) and back.read_pfn(12) == bytes(PAGE)


# -- the synthetic /proc/vmcore (tests/synth.py) and makedumpfile -E ---------------------------


@pytest.mark.oracle
def test_reads_synthetic_vmcore(synth: Any) -> None:
    from tests import oracles

    with ElfDump(FileSource(synth.path)) as d:
        assert len(d.views) == 1  # the kernel-image PT_LOAD over RAM
        assert np.array_equal(d.present.window(0, d.max_pfn), synth.ref.present[: d.max_pfn])
        assert oracles.assert_pages(d, synth.ref) == d.dumped.count() == d.present.count()
        assert read_utsname(d) == synth.info.utsname


@pytest.mark.oracle
def test_reads_makedumpfile_elf_d31(synth: Any, tmp_path: Path) -> None:
    from tests import oracles

    out = tmp_path / "m31.elf"
    oracles.makedumpfile("1.7.2", "-E", "-d", "31", synth.path, out, stdout=subprocess.DEVNULL)
    with ElfDump(FileSource(out)) as d:
        assert d.present == ElfDump(FileSource(synth.path)).present
        want = synth.info.expected_dumpable(31)[: d.max_pfn]
        got = d.dumped.window(0, d.max_pfn)
        assert not (want & ~got).any()  # makedumpfile also writes short excluded runs
        oracles.assert_pages(d, synth.ref)
        cut = np.flatnonzero(d.present.window(0, d.max_pfn) & ~got)
        assert cut.size > 256 and all(d.read_pfn(p) == bytes(PAGE) for p in cut[:300].tolist())


@pytest.mark.oracle
def test_vmcore_dmesg_reads_our_elf(synth: Any, tmp_path: Path) -> None:
    if not os.path.exists("/usr/sbin/vmcore-dmesg"):
        pytest.skip("vmcore-dmesg (kexec-tools) is not installed")
    out = tmp_path / "ours.elf"
    with FileSink(out) as sink:
        write_elf(sink, ElfDump(FileSource(synth.path)), exclude_zero=True)
    want = subprocess.run(["/usr/sbin/vmcore-dmesg", str(synth.path)], capture_output=True)
    got = subprocess.run(["/usr/sbin/vmcore-dmesg", str(out)], capture_output=True)
    assert want.returncode == 0 and want.stdout
    assert got.stdout == want.stdout, got.stderr
