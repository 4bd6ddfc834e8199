"""Split kdump-compressed sets (makedumpfile ``--split`` / ``--reassemble``).

Each part is a complete kdump-compressed file: the same header, notes and full bitmaps, with
``split = 1`` and its own pfn range ``[start_pfn_64, end_pfn_64)`` in the sub-header. Its
descriptor table is sized for the *global* number of dumpable pages, so page data starts at the
same offset in every part, and each part carries its own copy of the shared zero page
(reference/makedumpfile.md §1.13).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..codecs import codec_for_status
from ..errors import DumpFormatError, KdumperError, NoSpaceError, PageNotPresentError
from .base import Dump, DumpFacts, Utsname, WriteResult
from .bitmap import Bitmap
from .diskdump import (
    DUMP_LEVEL_ZERO,
    STATUS_INCOMPLETE,
    KdumpDump,
    pack_sub_header,
    section_ranks,
    write_kdump,
)
from .flattened import FlatSource, is_flattened
from .io import ByteSource, FileSink, FileSource

_COPY_LIMIT = 1 << 20  # bytes of page data copied per read/write while reassembling
_DESC_CHUNK = 1 << 12  # descriptors handled per step while reassembling


def split_ranges(pages: Bitmap, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous pfn ranges covering ``[0, pages.nbits)`` with about equal set bits."""
    if parts < 1:
        raise ValueError("a split set needs at least one part")
    n = pages.nbits
    ranks = section_ranks(pages.bits)
    total = int(ranks[-1])
    bounds = [0]
    for i in range(1, parts):
        if total == 0:
            bounds.append(max(bounds[-1], n * i // parts))
            continue
        target = (total * i + parts // 2) // parts  # pages before the boundary
        if target <= 0:
            bounds.append(bounds[-1])
            continue
        # the section holding the target-th set bit, then the exact pfn inside it
        sect = int(np.searchsorted(ranks, target, side="left")) - 1
        base = sect * 4096
        window = pages.window(base, base + 4096)
        inside = target - int(ranks[sect])
        pfn = base + int(np.flatnonzero(window)[inside - 1]) + 1
        bounds.append(max(bounds[-1], min(pfn, n)))
    bounds.append(n)
    return list(itertools.pairwise(bounds))


def write_split(
    paths: Sequence[str],
    dump: Dump,
    *,
    codec: str = "zlib",
    exclude_zero: bool = True,
    dump_level: int | None = None,
    utsname: Utsname | None = None,
    pages: Bitmap | None = None,
    overwrite: bool = False,
) -> list[WriteResult]:
    """Write ``dump`` as ``len(paths)`` split parts with about equal numbers of pages each.

    Every part is a complete kdump-compressed file (as ``makedumpfile --split``); each is
    written as ``path-incomplete`` and renamed when done.
    """
    if not paths:
        raise ValueError("write_split needs at least one output path")
    n = dump.max_pfn
    chosen = _fit(dump.dumped, n) & _fit(dump.present, n)
    if pages is not None:
        chosen = _fit(pages, n) & chosen
    total = chosen.count()
    results = []
    for path, rng in zip(paths, split_ranges(chosen, len(paths)), strict=True):
        sink = FileSink(path, overwrite=overwrite)
        try:
            res = write_kdump(
                sink,
                dump,
                pages=chosen,
                codec=codec,
                dump_level=dump_level,
                exclude_zero=exclude_zero,
                utsname=utsname,
                split_range=rng,
                desc_slots=total,
            )
        except BaseException:
            sink.abort()
            raise
        sink.finish()
        res.path = path
        results.append(res)
    return results


def _fit(bm: Bitmap, nbits: int) -> Bitmap:
    return bm if bm.nbits == nbits else Bitmap(bm.bits[: (nbits + 7) // 8].copy(), nbits)


def open_part(path: str) -> KdumpDump:
    """One kdump-compressed file (plain or flattened) as a :class:`KdumpDump`."""
    src: ByteSource = FileSource(path)
    try:
        if is_flattened(src.pread_upto(0, 16)):
            src = FlatSource(src)
        return KdumpDump(src)
    except BaseException:
        src.close()
        raise


def _span(part: KdumpDump) -> tuple[int, int]:
    return part.split_range or (0, part.max_pfn)


class SplitDump(Dump):
    """The parts of a split set read as one dump; each pfn goes to the part whose range holds it."""

    def __init__(self, parts: Sequence[KdumpDump]) -> None:
        if not parts:
            raise ValueError("SplitDump needs at least one part")
        parts = sorted(parts, key=lambda p: _span(p)[0])
        self.parts = parts
        first = parts[0]
        self.path = first.path
        self.format = "split-kdump"
        self.arch = first.arch
        self.page_size = first.page_size
        self.max_pfn = first.max_pfn
        self.notes = first.notes
        self._check()
        self._starts = [_span(p)[0] for p in parts]

    def _check(self) -> None:
        parts, first = self.parts, self.parts[0]
        if len(parts) == 1:
            start, end = _span(first)
            if (start, end) != (0, first.max_mapnr):
                raise DumpFormatError(
                    f"this is one part of a split dump (pfns {start:#x}-{end:#x} of "
                    f"{first.max_mapnr:#x}): the other parts are needed; open them together",
                    path=first.path,
                )
            return
        for p in parts:
            if p.split_range is None:
                raise DumpFormatError("not a part of a split dump (split flag clear)", path=p.path)
            same = (p.block_size, p.max_mapnr, p.layout.byteorder, p.num_dumpable)
            if same != (
                first.block_size,
                first.max_mapnr,
                first.layout.byteorder,
                first.num_dumpable,
            ):
                raise DumpFormatError(
                    f"does not belong to the same split dump as {first.path} "
                    "(block size, max_mapnr, byte order or page count differ)",
                    path=p.path,
                )
        have = ", ".join(f"{p.path} [{_span(p)[0]:#x}-{_span(p)[1]:#x})" for p in parts)
        pos = 0
        for p in parts:
            start, end = _span(p)
            if start > pos:
                raise DumpFormatError(
                    f"no part covers pfns {pos:#x}-{start:#x}: a part of the split dump is "
                    f"missing (have {have})",
                    path=first.path,
                )
            if start < pos:
                raise DumpFormatError(
                    f"parts overlap at pfn {start:#x} (the same part given twice?) ({have})",
                    path=p.path,
                )
            pos = end
        if pos != first.max_mapnr:
            raise DumpFormatError(
                f"no part covers pfns {pos:#x}-{first.max_mapnr:#x}: a part of the split dump "
                f"is missing (have {have})",
                path=first.path,
            )

    def _part(self, pfn: int) -> KdumpDump:
        if not 0 <= pfn < self.max_pfn:
            raise PageNotPresentError(pfn)
        return self.parts[bisect.bisect_right(self._starts, pfn) - 1]

    @property
    def present(self) -> Bitmap:
        return self.parts[0].present

    @property
    def dumped(self) -> Bitmap:
        return self.parts[0].dumped

    def read_pfn(self, pfn: int) -> bytes:
        return self._part(pfn).read_pfn(pfn)

    def is_zero_pfn(self, pfn: int) -> bool:
        return 0 <= pfn < self.max_pfn and self._part(pfn).is_zero_pfn(pfn)

    def codec_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.parts:
            for k, v in p.codec_counts().items():
                counts[k] = counts.get(k, 0) + v
        return counts

    def header_part(self) -> KdumpDump:
        """The part whose header reassembly keeps: the first incomplete one, else the last."""
        for p in self.parts:
            if p.header.status & STATUS_INCOMPLETE:
                return p
        return self.parts[-1]

    def facts(self) -> DumpFacts:
        base = self.header_part().facts()
        base.format = self.format
        base.split = None
        base.parts = len(self.parts)
        base.incomplete = any(p.incomplete for p in self.parts)
        base.extra["parts"] = [
            {"path": p.path, "start_pfn": _span(p)[0], "end_pfn": _span(p)[1]} for p in self.parts
        ]
        warnings = [w for p in self.parts for w in p.warnings]
        if warnings:
            base.extra["warnings"] = list(dict.fromkeys(warnings))
        return base

    def close(self) -> None:
        for p in self.parts:
            p.close()


def reassemble_split(parts: Sequence[str], out: str, *, overwrite: bool = False) -> WriteResult:
    """Join the parts of a split set into one kdump-compressed file (``makedumpfile --reassemble``).

    Compressed page data is copied as stored; zero-page descriptors are folded into one shared
    zero page. The header comes from the first incomplete part, else the last; the sub-header,
    notes and bitmaps from part 0 with the split fields cleared.
    """
    opened: list[KdumpDump] = []
    try:
        for path in parts:
            opened.append(open_part(path))
        whole = SplitDump(opened)
        sink = FileSink(out, overwrite=overwrite)
        try:
            result = _Reassembler(whole, sink).run()
        except BaseException:
            sink.abort()
            raise
        sink.finish()
        return result
    finally:
        for p in opened:
            p.close()


class _Reassembler:
    def __init__(self, whole: SplitDump, sink: FileSink) -> None:
        self.whole = whole
        self.sink = sink
        self.p0 = whole.parts[0]
        self.bs = self.p0.block_size
        hp = whole.header_part()
        self.header = bytearray(hp.source.pread(0, hp.layout.header.size))
        self.status = hp.header.status
        self.result = WriteResult(path=sink.name, format="kdump")
        self.result.codec = codec_for_status(self.status)
        self.zero = bool(self.p0.sub.dump_level & DUMP_LEVEL_ZERO)
        self.data_pos = self.p0.data_offset + (self.bs if self.zero else 0)
        self.desc_pos = self.p0.desc_offset
        self.lost = 0

    def _write(self, offset: int, data: bytes | memoryview) -> None:
        self.sink.write_at(offset, data)
        self.result.bytes_out = max(self.result.bytes_out, offset + len(data))

    def _header_bytes(self) -> bytes:
        lay = self.p0.layout
        fields = list(lay.header.unpack(bytes(self.header)))
        fields[5] = self.status
        return lay.header.pack(*fields)

    def run(self) -> WriteResult:
        p0, bs = self.p0, self.bs
        self._write(0, self._header_bytes().ljust(bs, b"\0"))
        # sub-header blocks (sub-header + notes) and bitmaps: part 0's, copied as they are
        area = p0.source.pread(bs, p0.bitmap_offset - bs) if p0.bitmap_offset > bs else b""
        self._write(bs, area)
        bm_len = p0.desc_offset - p0.bitmap_offset
        for pos in range(0, bm_len, _COPY_LIMIT):
            n = min(_COPY_LIMIT, bm_len - pos)
            self._write(p0.bitmap_offset + pos, p0.source.pread(p0.bitmap_offset + pos, n))
        if self.zero:
            self._write(p0.data_offset, bytes(bs))
        for part in self.whole.parts:
            for descs in part.iter_descs(_DESC_CHUNK):
                self._copy_chunk(part, descs)
        self._write_subheader_and_eraseinfo()
        if self.lost:
            self.status |= STATUS_INCOMPLETE
            self.result.incomplete = True
            self._write(0, self._header_bytes())
        return self.result

    def _copy_chunk(self, part: KdumpDump, descs: npt.NDArray[Any]) -> None:
        off = descs["offset"].astype(np.int64)
        size = descs["size"].astype(np.int64)
        lost = (off <= 0) | (off + size > part.source.size)
        zero = (off == part.data_offset) & self.zero & ~lost
        stored = ~lost & ~zero
        out = descs.copy()
        out[lost] = np.zeros(1, dtype=descs.dtype)
        if self.zero:
            out["offset"][zero] = self.p0.data_offset
            out["size"][zero] = self.bs
            out["flags"][zero] = 0
        s_off, s_size = off[stored], size[stored]
        new = self.data_pos + np.cumsum(s_size) - s_size
        out["offset"][stored] = new
        try:
            self._write(self.desc_pos, out.tobytes())  # descriptors before their data
            self._copy_data(part, s_off, s_size, new)
        except NoSpaceError as e:
            with contextlib.suppress(KdumperError):
                out[stored] = np.zeros(1, dtype=descs.dtype)
                self.sink.write_at(self.desc_pos, out.tobytes())
                self.status |= STATUS_INCOMPLETE
                self.sink.write_at(0, self._header_bytes())
            self.result.incomplete = True
            e.result = self.result  # type: ignore[attr-defined]
            raise
        self.desc_pos += out.nbytes
        self.data_pos += int(s_size.sum())
        self.lost += int(lost.sum())
        self.result.pages += int((~lost).sum())
        self.result.zero_pages += int(zero.sum())

    def _copy_data(
        self,
        part: KdumpDump,
        src: npt.NDArray[np.int64],
        size: npt.NDArray[np.int64],
        dst: npt.NDArray[np.int64],
    ) -> None:
        """Copy stored pages, one read and write per run that is contiguous in the source."""
        if not src.size:
            return
        breaks = np.flatnonzero(src[1:] != src[:-1] + size[:-1]) + 1
        starts = np.concatenate(([0], breaks))
        stops = np.concatenate((breaks, [src.size]))
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            lo = int(src[a])
            hi = int(src[b - 1] + size[b - 1])
            out = int(dst[a])
            for pos in range(lo, hi, _COPY_LIMIT):
                n = min(_COPY_LIMIT, hi - pos)
                self._write(out + (pos - lo), part.source.pread(pos, n))

    def _write_subheader_and_eraseinfo(self) -> None:
        p0, bs = self.p0, self.bs
        erase = b"".join(p.eraseinfo for p in self.whole.parts)
        sub = p0.sub._replace(split=0, start_pfn=0, end_pfn=0, start_pfn_64=0, end_pfn_64=0)
        if erase and p0.header_version >= 5:
            sub = sub._replace(offset_eraseinfo=self.data_pos, size_eraseinfo=len(erase))
            self._write(self.data_pos, erase)
        elif p0.header_version >= 5:
            sub = sub._replace(offset_eraseinfo=0, size_eraseinfo=0)
        if p0.header.sub_hdr_size:
            self._write(bs, pack_sub_header(p0.layout, sub, p0.header_version))
