"""The capture pipeline: classify pages, read the kept ones, compress them on every CPU, write.

Two passes over the dump, both in fixed-size windows so memory does not grow with the crashed
machine's RAM (beyond pfn bitmaps of one bit per page: 32 MiB per TiB):

1. :func:`build_filter` reads the ``struct page`` array window by window (``kernel.pages``) and
   clears the pages the dump level excludes from a bitmap. The bitmap must be whole before the
   kdump-compressed header is written (it holds both bitmaps and sizes the descriptor table), so
   this pass comes first, as makedumpfile's ``get_num_dumpable_cyclic()`` does. With more than
   one CPU the windows are classified by the worker processes of step 2, forked beforehand.
2. :func:`save` cuts the kept pages into batches of consecutive pfns. Each batch is read into a
   reused buffer, its zero pages found with numpy and the rest compressed; with more than one
   CPU, forked worker processes do that (:mod:`kdumper.collect.workers`: no GIL, payloads in
   shared memory), a bounded number of batches in flight, and the parent hands the results to
   the writer strictly in pfn order. The kernel image's pages may already be compressed:
   ``kdumper save`` starts a helper before it imports numpy (:mod:`kdumper.collect.early`);
   the writer takes the pages it finished from it, in their place in the order.

:func:`mem_usage` is ``makedumpfile --mem-usage``: the same classification, counted per class
and per dump level, with zero pages found from the page contents.

Nothing here prints: progress goes to a callback ``progress(phase, done, total)``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import field
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from ..codecs import Codec, get_codec
from ..dump.base import Dump, Utsname, WriteResult
from ..dump.bitmap import Bitmap
from ..dump.io import create_private, fsync_stream, split_paths
from ..errors import KdumperError, PageNotPresentError, UsageError
from ..kernel.pages import (
    ALWAYS_EXCLUDED,
    CLASS_NAMES,
    Classified,
    Classifier,
    LevelFilter,
    PageClass,
    WindowClassifier,
)
from ..records import as_dict, record
from .early import COMPRESSED, ENTRY, ZERO, EarlyPages, entry_fields, usable_cpus
from .encode import BatchEncoder, Encoded, zero_flags
from .workers import ClassifyFn, EncodeWorkers, can_fork

FORMATS = ("kdump", "elf", "flat")
MAX_DUMP_LEVEL = 31
# Pages per compression task: 256 pages = 1 MiB. Measured on 2 idle cores, 6.1 busy vmcore,
# -d 1, 2 threads (save only): lzo 64/256/1024 pages: 0.59/0.42/0.49 s; zlib 2.76/2.70/2.85 s
# (1024-page batches fall out of the L2 cache, small ones pay the per-task overhead); with two
# worker processes, -d 31 lzo: 128/256/512 pages 0.100/0.096/0.105 s.
BATCH_PAGES = 256
# pfn space per bitmap chunk handed out by the writer (1 bit -> one int64 pfn: 2 MiB of pfns)
PFN_CHUNK = 1 << 18
#: at most this much of the workers' payloads is copied out of their slots while the writer is
#: busy with the early helper's pages (see _Engine._write_parallel): a 6.1 4 GiB guest's
#: kernel image (~17 MiB of LZO payloads) took 10 ms to write, and the workers, their slots
#: full, sat idle for most of it. 4 MiB: some 16 more batches at -d 31, 4 at -d 1 (16 MiB
#: added 16 MiB to the peak RSS at -d 1 and nothing measurable to the speed)
TAKEN_BYTES = 4 << 20

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: phase "filter" counts pfns, "write" counts pages."""


#: Codecs that run in this process by default: without compression a batch is a copy, and
#: handing it to a worker costs as much as doing it (busy 6.1 vmcore, -d 31, save only: 1 GiB
#: 0.068 s in-process, 0.075 s with two workers; 4 GiB 0.148 / 0.144 s).
SINGLE_THREAD_CODECS = frozenset({"none"})


def default_threads(codec: str = "zlib") -> int:
    """Compression workers by default: the CPUs this process may run on (one, i.e. in-process,
    for the codecs that do not gain from workers, :data:`SINGLE_THREAD_CODECS`)."""
    return 1 if codec in SINGLE_THREAD_CODECS else usable_cpus()


# ---- pass 1: classification -------------------------------------------------------------------


@record
class FilterResult:
    """Which pages a dump level keeps, and why the others go."""

    dump_level: int
    pages: Bitmap  # present, in the source, not excluded by class (zero pages still in)
    total_pages: int  # present pages (RAM in the dump)
    not_in_source: int  # present but absent from the source (filtered out before)
    excluded: dict[str, int]  # pages excluded per class (cache, user, free, ...)
    layout: str | None  # the struct page rules used; None: pages were not classified
    unreadable: int  # present pages whose struct page could not be read (kept)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kept(self) -> int:
        """Pages in :attr:`pages`."""
        return self.pages.count()


def _check_level(dump_level: int) -> None:
    if not 0 <= dump_level <= MAX_DUMP_LEVEL:
        raise UsageError(f"dump level {dump_level}: dump levels are 0..{MAX_DUMP_LEVEL}")


def make_classifier(dump: Dump, warnings: list[str]) -> Classifier | None:
    """The page classifier of ``dump``, or None (and why, in ``warnings``) when unknown."""
    try:
        classifier = Classifier(dump)
    except KdumperError as e:  # UnknownLayoutError, UnsupportedError, unreadable mem_section...
        warnings.append(
            f"pages cannot be classified ({e}); keeping every page except zero pages "
            "(the dump is larger, nothing is lost)"
        )
        return None
    warnings.extend(classifier.warnings)
    return classifier


def build_filter(
    dump: Dump,
    dump_level: int,
    *,
    progress: ProgressFn | None = None,
    workers: EncodeWorkers | None = None,
    classified: tuple[Classifier | None, list[str]] | None = None,
) -> FilterResult:
    """Classify every page of ``dump`` and keep those ``dump_level`` does not exclude.

    HWPoison and offline pages go at every level. When the kernel's struct page layout is not
    known, nothing is excluded by class (a warning says so); zero pages are still found later.
    ``workers`` (started with a :meth:`WindowClassifier.alone` of this dump and level) classify
    the windows in parallel. ``classified``: what :func:`make_classifier` already returned for
    ``dump`` (the classifier and its warnings), so that it is not built twice.
    """
    _check_level(dump_level)
    started = time.monotonic()
    n = dump.max_pfn
    present = dump.present
    total = present.count()
    pages = dump.dumped & present  # a new bitmap
    not_in_source = total - pages.count()
    excluded = dict.fromkeys(CLASS_NAMES.values(), 0)
    if classified is None:
        warnings: list[str] = []
        classifier = make_classifier(dump, warnings)
    else:
        classifier, warnings = classified[0], list(classified[1])
    unreadable = 0
    if classifier is not None:
        wc = WindowClassifier(classifier, dump_level)
        spans = wc.windows()
        if workers is not None and workers.classifies:
            results = _classify_in_workers(wc, spans, workers)
        else:
            results = (wc.in_order(lo, hi) for lo, hi in spans)
        for r in results:
            unreadable += r.unreadable
            drop = r.cls != 0
            if drop.any():
                lo = r.start
                keep = pages.window(lo, lo + r.cls.size)
                # a page the source lacks was not counted by makedumpfile either
                if r.all_free:  # one class: count it without a histogram
                    excluded["free"] += int(np.count_nonzero(keep & drop[: keep.size]))
                else:
                    _count_classes(r.cls[: keep.size] * keep, excluded)
                pages.store_window(lo, keep & ~drop[: keep.size])
            if progress is not None:
                progress("filter", min(r.start + r.cls.size, n), n)
        if unreadable:
            warnings.append(f"{unreadable} pages have unreadable struct pages and are kept")
    return FilterResult(
        dump_level=dump_level,
        pages=pages,
        total_pages=total,
        not_in_source=not_in_source,
        excluded=excluded,
        layout=classifier.layout.variant if classifier is not None else None,
        unreadable=unreadable,
        warnings=warnings,
        seconds=time.monotonic() - started,
    )


def _classify_in_workers(
    wc: WindowClassifier, spans: list[tuple[int, int]], workers: EncodeWorkers
) -> Iterator[Classified]:
    """The windows classified by the workers, in order; a window that a range from an earlier
    one runs into (a compound page larger than a window) is classified again here, in order."""
    todo = iter(spans)
    sent: deque[tuple[int, int]] = deque()
    for span in todo:
        workers.submit_window(*span)
        sent.append(span)
        if len(sent) == workers.slots:
            break
    while sent:
        lo, hi = sent.popleft()
        r = workers.result_window()
        nxt = next(todo, None)
        if nxt is not None:
            workers.submit_window(*nxt)
            sent.append(nxt)
        if wc.filter.carry[0] > lo:
            r = wc.in_order(lo, hi)
        else:
            wc.filter.carry_over(r.carry)
        yield r


def _count_classes(cls: npt.NDArray[np.uint8], into: dict[str, int]) -> None:
    counts = np.bincount(cls, minlength=128)
    for value, name in CLASS_NAMES.items():
        into[name] += int(counts[value])


# ---- page reading ----------------------------------------------------------------------------


def _runs(pfns: npt.NDArray[np.int64]) -> tuple[list[int], list[int]]:
    """Runs of consecutive pfns: (starts, lengths)."""
    if pfns.size == 0:
        return [], []
    brk = np.flatnonzero(np.diff(pfns) != 1) + 1
    starts = pfns[np.concatenate(([0], brk))]
    lengths = np.diff(np.concatenate(([0], brk, [pfns.size])))
    return starts.tolist(), lengths.tolist()


def _batches(
    pfn_chunks: Iterator[npt.NDArray[np.int64]], batch: int
) -> Iterator[npt.NDArray[np.int64]]:
    """The pfns of ``pfn_chunks`` (ascending) in arrays of ``batch`` (the last one fewer)."""
    pending: list[npt.NDArray[np.int64]] = []
    size = 0
    for pfns in pfn_chunks:
        while pfns.size:
            take = pfns[: batch - size]
            pending.append(take)
            size += take.size
            pfns = pfns[take.size :]
            if size == batch:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, size = [], 0
    if pending:
        yield np.concatenate(pending)


class PageReader:
    """Reads batches of page runs into one buffer it reuses: the pages are copied once, from the
    source into it (one ``preadv`` per run of a vmcore file), and nothing is allocated per batch.
    """

    def __init__(self, dump: Dump, batch_pages: int = 0) -> None:
        self.dump = dump
        self.page_size = dump.page_size
        self._into = getattr(dump, "read_pages_into", None)
        # allocated at the first read: in a worker process, not in the parent it was forked from
        # (whose pages it would copy on the first write)
        self._size = batch_pages * self.page_size
        self._buffer = bytearray()

    def read(self, pfns: npt.NDArray[np.int64]) -> tuple[memoryview, list[int]]:
        """The pages of ``pfns`` (ascending) back to back (valid until the next call), and the
        batch indexes of pages the source lost; a lost page (truncated source,
        :class:`PageIncompleteError`) reads as zeros."""
        ps = self.page_size
        pieces = zip(*_runs(pfns), strict=True)
        need = pfns.size * ps
        if len(self._buffer) < need:
            self._buffer = bytearray(max(need, self._size))
        view = memoryview(self._buffer)
        lost: list[int] = []
        index = 0
        for pfn, count in pieces:
            part = view[index * ps : (index + count) * ps]
            done = False
            if self._into is not None:
                with contextlib.suppress(PageNotPresentError):
                    self._into(pfn, count, part)
                    done = True
            if not done:
                part[:] = self._one_by_one(pfn, count, index, lost)
            index += count
        return view[: index * ps], lost

    def _one_by_one(self, pfn: int, count: int, index: int, lost: list[int]) -> bytes:
        out: list[bytes] = []
        for i in range(count):
            try:
                out.append(self.dump.read_pfn(pfn + i))
            except PageNotPresentError:  # incomplete (lost), excluded or not present
                out.append(bytes(self.page_size))
                lost.append(index + i)
        return b"".join(out)


# ---- pass 2: compress and write ---------------------------------------------------------------


class _Engine:
    """Feeds a writer the kept pages in pfn order, encoded in this process or in worker
    processes (:mod:`kdumper.collect.workers`) when more than one is asked for."""

    def __init__(
        self,
        dump: Dump,
        codec: Codec,
        *,
        exclude_zero: bool,
        threads: int,
        batch_pages: int,
        progress: ProgressFn | None,
        total_pages: int,
        early: EarlyPages | None = None,
    ) -> None:
        self.dump = dump
        self.encoder = BatchEncoder(codec, dump.page_size, exclude_zero)
        self.threads = threads if can_fork() else 1
        self.batch_pages = batch_pages
        self.progress = progress
        self.total_pages = total_pages
        self.reader = PageReader(dump, batch_pages)
        self.done = 0
        self.zero_pages = 0
        self.lost_pages = 0
        self.bytes_in = 0
        self._workers: EncodeWorkers | None = None
        self.early = early if self.threads > 1 else None
        if early is not None and self.early is None:
            early.close()
        self.early_pages = 0

    def close(self) -> None:
        """Stop the workers (batches in flight are dropped) and the early helper."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        if self.early is not None:
            self.early.close()

    def _account(self, enc: Encoded, lost: npt.NDArray[np.bool_] | None, bytes_in: int) -> None:
        self.bytes_in += bytes_in
        self.zero_pages += enc.zero_count
        if lost is not None:
            self.lost_pages += int(np.count_nonzero(lost))
        self.done += int(enc.sizes.size)
        if self.progress is not None:
            self.progress("write", self.done, self.total_pages)

    def write(self, writer: Any, *, last: bool = True) -> None:
        """Feed every page ``writer.pfn_chunks()`` asks for, in order (a ``KdumpWriter``);
        ``last``: no writer comes after this one (the workers may leave when done)."""
        batches = _batches(writer.pfn_chunks(PFN_CHUNK), self.batch_pages)
        if self.threads > 1:
            self._write_parallel(writer, batches, last)
            return
        for pfns in batches:
            data, lost_at = self.reader.read(pfns)
            lost = None
            if lost_at:
                lost = np.zeros(len(data) // self.dump.page_size, np.bool_)
                lost[lost_at] = True
            enc = self.encoder.encode(data, lost)
            writer.add_encoded_batch(enc.sizes, enc.flags, enc.data, enc.zero, lost)
            self._account(enc, lost, len(data))

    def start_workers(self, classify: ClassifyFn | None = None) -> EncodeWorkers | None:
        """Fork the workers now (with ``classify``: they take filter windows too); None when
        this engine compresses in its own process."""
        if self._workers is None and self.threads > 1:
            self._workers = EncodeWorkers(
                self.reader.read, self.encoder, workers=self.threads,
                batch_pages=self.batch_pages, classify=classify,
            )  # fmt: skip
        return self._workers

    def _write_parallel(
        self, writer: Any, batches: Iterator[npt.NDArray[np.int64]], last: bool
    ) -> None:
        workers = self.start_workers()  # forked once, reused by split parts
        assert workers is not None
        held: set[int] = set()  # slots whose payload the writer still holds unwritten
        early = self.early
        # what goes to the writer next, in pfn order: a worker's batch (None: collected in
        # submission order) or pages the early helper compressed. The batches after those are
        # submitted before they are written, so the workers stay busy meanwhile.
        ahead: deque[npt.NDArray[np.int64] | None] = deque()
        # workers' results taken early, their payloads copied out of the slots (in order)
        taken: deque[tuple[Encoded, npt.NDArray[np.bool_] | None, int]] = deque()
        taken_bytes = 0
        todo = _around_early(batches, early)

        def submit(pfns: npt.NDArray[np.int64]) -> None:
            if workers.next_slot in held:
                writer.flush()
                held.clear()
            workers.submit(pfns)
            ahead.append(None)

        def write_next() -> None:
            nonlocal taken_bytes
            pfns = ahead.popleft()
            if pfns is None:
                slot = -1  # a result taken early is a copy: it holds no slot
                if taken:
                    enc, lost, bytes_in = taken.popleft()
                    taken_bytes -= len(enc.data)
                else:
                    enc, lost, bytes_in, slot = workers.result()
                writer.add_encoded_batch(enc.sizes, enc.flags, enc.data, enc.zero, lost)
                if not writer.buffered:
                    held.clear()
                elif slot >= 0:
                    held.add(slot)
                self._account(enc, lost, bytes_in)
                return
            assert early is not None
            enc, end = _early_batch(early, pfns)
            writer.add_encoded_batch(enc.sizes, enc.flags, enc.data, enc.zero, None)
            writer.flush()  # written now, so this process can let go of those payloads
            held.clear()
            early.release(end)
            self._account(enc, None, pfns.size * self.dump.page_size)
            self.early_pages += int(pfns.size)
            keep_workers_busy()

        def keep_workers_busy() -> None:
            """While this process writes the helper's pages, the batches after them are all
            the workers have: take their results as they come (payloads copied out, until
            TAKEN_BYTES are held) and give the slots new batches, instead of leaving the workers
            idle until the writer gets there."""
            nonlocal taken_bytes
            while taken_bytes < TAKEN_BYTES and workers.ready():
                enc, lost, bytes_in, _slot = workers.result()
                copy = bytes(enc.data)
                taken.append((Encoded(enc.sizes, enc.flags, copy, enc.zero, enc.zero_count),
                              lost, bytes_in))  # fmt: skip
                taken_bytes += len(copy)
                # the batch the loop below holds comes first (every batch the early helper
                # did is in ``ahead`` already: its pages were reached, and they come in a row)
                pfns = waiting.popleft() if waiting else next(todo, None)
                if pfns is not None:
                    submit(pfns)

        waiting: deque[npt.NDArray[np.int64]] = deque()  # the next batch, until submitted
        for pfns in todo:
            if early is not None and early.first_pfn <= pfns[0] and pfns[-1] < early.done_end:
                ahead.append(pfns)
                continue
            waiting.append(pfns)
            while waiting:
                if workers.in_flight >= workers.slots:
                    write_next()
                else:
                    submit(waiting.popleft())
        if last:
            workers.end_tasks()
        while ahead:
            write_next()


_names, _formats, _offsets = entry_fields()
_EARLY_ENTRY = np.dtype(
    {"names": _names, "formats": _formats, "offsets": _offsets, "itemsize": ENTRY.size}
)


def _around_early(
    batches: Iterator[npt.NDArray[np.int64]], early: EarlyPages | None
) -> Iterator[npt.NDArray[np.int64]]:
    """``batches``, cut where the pages the early helper completed begin and end (it is stopped
    when the first batch reaches the kernel image: until then it keeps compressing)."""
    for pfns in batches:
        if early is None or pfns[-1] < early.first_pfn or pfns[0] >= early.done_end:
            yield pfns  # all before or all after them (np.split costs ~12 us a batch)
            continue
        cuts = np.searchsorted(pfns, [early.first_pfn, early.done_end])
        for part in np.split(pfns, cuts):
            if part.size:
                yield part


def _early_batch(early: EarlyPages, pfns: npt.NDArray[np.int64]) -> tuple[Encoded, int]:
    """The stored form of ``pfns`` (all among the pages the early helper completed), as a
    worker's :class:`~kdumper.collect.encode.Encoded`, and where their payloads end."""
    table = np.frombuffer(early.entries(), _EARLY_ENTRY)[pfns - early.first_pfn]
    kind = table["kind"]
    if (kind == 0).any():
        raise RuntimeError("the early helper's table has a page it did not write")
    zero = kind == ZERO
    sizes = np.where(zero, 0, table["size"]).astype(np.int64)
    flags = np.where(kind == COMPRESSED, early.flag, 0).astype(np.uint32)
    offsets = table["offset"].astype(np.int64)[~zero]
    lengths = sizes[~zero]
    data: bytes | memoryview = b""
    end = 0
    if offsets.size:
        end = int(offsets[-1] + lengths[-1])
        early.map_in(int(offsets[0]), end)
        payloads = early.payloads()
        if np.array_equal(offsets[1:], offsets[:-1] + lengths[:-1]):  # back to back: a view
            data = payloads[int(offsets[0]) : end]
        else:  # pages in between were filtered out
            parts = zip(offsets.tolist(), lengths.tolist(), strict=True)
            data = b"".join(payloads[o : o + n] for o, n in parts)
    zero_count = int(np.count_nonzero(zero))
    return Encoded(sizes, flags, data, zero if zero_count else None, zero_count), end


@record
class SaveOptions:
    """How :func:`save` writes."""

    dump_level: int = 31
    codec: str = "zlib"
    format: str = "kdump"  # "kdump", "elf" or "flat"
    threads: int | None = None  # compression worker processes (None: one per CPU; 0, 1: none)
    split: int = 0  # kdump only: write this many parts (paths from split_paths)
    batch_pages: int = BATCH_PAGES
    overwrite: bool = False
    utsname: Utsname | None = None  # default: read from the dump (init_uts_ns)
    progress: ProgressFn | None = None
    # the kernel image, compressed while the command started (kdumper.collect.early); save()
    # uses what fits this dump and these options, and stops the helper
    early: EarlyPages | None = None


@record
class SaveResult:
    """What :func:`save` did."""

    format: str
    codec: str
    dump_level: int
    filter: FilterResult
    outputs: list[WriteResult]
    zero_pages: int
    lost_pages: int
    bytes_in: int
    seconds: float
    page_size: int = 4096
    early_pages: int = 0  # pages taken from the early helper's work

    @property
    def bytes_out(self) -> int:
        """Bytes written, all outputs together."""
        return sum(r.bytes_out for r in self.outputs)

    @property
    def incomplete(self) -> bool:
        """Some pages the source lost are missing from the output."""
        return any(r.incomplete for r in self.outputs) or self.lost_pages > 0

    def summary(self) -> dict[str, Any]:
        """The ``--json`` summary."""
        f = self.filter
        excluded = {"zero": self.zero_pages, **f.excluded}
        excluded_total = sum(excluded.values())
        return {
            "outputs": [as_dict(r) for r in self.outputs],
            "format": self.format,
            "codec": self.codec,
            "dump_level": self.dump_level,
            "page_size": self.page_size,
            "pages": {
                "total": f.total_pages,
                "not_in_source": f.not_in_source,
                "excluded": excluded,
                "excluded_total": excluded_total,
                "kept": f.total_pages - f.not_in_source - excluded_total,
                "lost": self.lost_pages,
                "unreadable_struct_page": f.unreadable,
            },
            "layout": f.layout,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "incomplete": self.incomplete,
            "seconds": round(self.seconds, 3),
            "seconds_filter": round(f.seconds, 3),
            "pages_compressed_at_start": self.early_pages,
            "warnings": f.warnings,
        }


def save(dump: Dump, out: str | BinaryIO, options: SaveOptions) -> SaveResult:
    """Filter ``dump`` at ``options.dump_level`` and write it to ``out`` (path, or a stream for
    the flattened format); makedumpfile's ``-d``/``-c -l -p -z``/``-E``/``-F``/``--split``.

    Outputs are written as ``NAME-incomplete`` (0600) and renamed when complete. On
    :class:`NoSpaceError` a kdump-compressed output stays readable and marked incomplete, and
    the error is re-raised.
    """
    started = time.monotonic()
    fmt = options.format
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    _check_level(options.dump_level)
    if options.split and fmt != "kdump":
        raise UsageError("--split works with the kdump format only")
    if not isinstance(out, str) and fmt != "flat":
        raise UsageError(f"{fmt} output needs a file; only the flat format can go to a stream")
    codec = get_codec("none" if fmt == "elf" else options.codec)
    codec.available()
    utsname = options.utsname if options.utsname is not None else _utsname(dump)
    exclude_zero = bool(options.dump_level & PageClass.ZERO)
    threads = default_threads(codec.name) if options.threads is None else max(0, options.threads)
    engine = _Engine(
        dump,
        codec,
        exclude_zero=exclude_zero,
        threads=threads,
        batch_pages=max(1, options.batch_pages),
        progress=options.progress,
        total_pages=0,
        early=_usable_early(options.early, dump, codec, exclude_zero, fmt),
    )
    try:
        workers = None
        classified = None
        if engine.threads > 1:  # forked before the filter pass: they classify its windows too
            notes: list[str] = []
            classifier = make_classifier(dump, notes)
            classified = (classifier, notes)
            classify = None
            if classifier is not None:
                classify = WindowClassifier(classifier, options.dump_level).alone
            if classify is not None or fmt != "elf":
                workers = engine.start_workers(classify)
        filt = build_filter(
            dump, options.dump_level, progress=options.progress, workers=workers,
            classified=classified,
        )  # fmt: skip
        engine.total_pages = filt.kept
        if fmt == "elf":
            assert isinstance(out, str)
            outputs = [_save_elf(dump, out, filt, options, exclude_zero)]
            zero = outputs[0].zero_pages
            engine.bytes_in = outputs[0].bytes_in
        else:
            common: dict[str, Any] = {
                "codec": codec.name,
                "dump_level": options.dump_level,
                "exclude_zero": exclude_zero,
                "utsname": utsname,
            }
            if options.split:
                assert isinstance(out, str)
                outputs = _save_split(engine, dump, out, filt, options, common)
            elif fmt == "flat":
                outputs = [_save_flat(engine, dump, out, filt, options, common)]
            else:
                assert isinstance(out, str)
                outputs = [_save_kdump(engine, dump, out, filt, options, common)]
            zero = engine.zero_pages
    finally:
        engine.close()
    return SaveResult(
        format=fmt,
        codec=codec.name,
        dump_level=options.dump_level,
        filter=filt,
        outputs=outputs,
        zero_pages=zero,
        lost_pages=engine.lost_pages,
        bytes_in=engine.bytes_in,
        seconds=time.monotonic() - started,
        page_size=dump.page_size,
        early_pages=engine.early_pages,
    )


def _usable_early(
    early: EarlyPages | None, dump: Dump, codec: Codec, exclude_zero: bool, fmt: str
) -> EarlyPages | None:
    """``early`` when its pages are this save's pages (same file offsets as this dump reads
    them from, same codec and zero rule), else None (and the helper is stopped)."""
    if early is None:
        return None
    run_offset = getattr(dump, "page_run_offset", None)
    if (
        fmt != "elf"
        and early.codec == codec.name
        and early.flag == codec.flag
        and early.exclude_zero == exclude_zero
        and early.page_size == dump.page_size
        and run_offset is not None
        and run_offset(early.first_pfn, early.npages) == early.file_offset
    ):
        return early
    early.close()
    return None


def _utsname(dump: Dump) -> Utsname | None:
    from ..kernel.utsname import read_utsname

    try:
        return read_utsname(dump)
    except KdumperError:
        return None


def _run_writer(engine: _Engine, writer: Any, sink: Any, *, last: bool = True) -> WriteResult:
    """begin, feed every page, finish; the sink is finished or aborted here."""
    try:
        writer.begin()
        engine.write(writer, last=last)
        result: WriteResult = writer.finish()
    except BaseException:
        sink.abort()
        raise
    sink.finish()
    result.bytes_in = engine.bytes_in
    return result


def _save_kdump(
    engine: _Engine, dump: Dump, out: str, filt: FilterResult, options: SaveOptions,
    common: dict[str, Any],
) -> WriteResult:  # fmt: skip
    from ..dump.diskdump import KdumpWriter
    from .sink import WritebackFileSink as FileSink

    sink = FileSink(out, overwrite=options.overwrite)
    try:
        writer = KdumpWriter(sink, dump, pages=filt.pages, **common)
    except BaseException:
        sink.abort()
        raise
    return _run_writer(engine, writer, sink)


def _save_split(
    engine: _Engine, dump: Dump, out: str, filt: FilterResult, options: SaveOptions,
    common: dict[str, Any],
) -> list[WriteResult]:  # fmt: skip
    from ..dump.diskdump import KdumpWriter
    from ..dump.split import split_ranges
    from .sink import WritebackFileSink as FileSink

    if not 2 <= options.split <= 1024:
        raise UsageError(f"--split {options.split}: a split set has 2..1024 parts")
    total = filt.kept
    results = []
    paths = split_paths(out, options.split)
    ranges = split_ranges(filt.pages, options.split)
    for i, (path, rng) in enumerate(zip(paths, ranges, strict=True)):
        sink = FileSink(path, overwrite=options.overwrite)
        try:
            writer = KdumpWriter(
                sink, dump, pages=filt.pages, split_range=rng, desc_slots=total, **common
            )
        except BaseException:
            sink.abort()
            raise
        start_in = engine.bytes_in
        res = _run_writer(engine, writer, sink, last=i == len(paths) - 1)
        res.bytes_in = engine.bytes_in - start_in
        res.path = path
        results.append(res)
    return results


def _save_flat(
    engine: _Engine, dump: Dump, out: str | BinaryIO, filt: FilterResult, options: SaveOptions,
    common: dict[str, Any],
) -> WriteResult:  # fmt: skip
    from ..dump.diskdump import KdumpWriter
    from ..dump.flattened import FlatSink

    if not isinstance(out, str):
        sink = FlatSink(out)
        writer = KdumpWriter(sink, dump, pages=filt.pages, **common)
        result = _run_writer(engine, writer, sink)
        result.format, result.bytes_out = "flattened-kdump", sink.bytes_written
        return result
    tmp = out + "-incomplete"
    if os.path.exists(out) and not options.overwrite:
        from ..errors import DumpIOError

        raise DumpIOError("already exists (use --force to overwrite)", path=out)
    stream = create_private(tmp)
    with stream:
        sink = FlatSink(stream, name=out)
        writer = KdumpWriter(sink, dump, pages=filt.pages, **common)
        result = _run_writer(engine, writer, sink)
        fsync_stream(stream, tmp)
    os.replace(tmp, out)
    result.path, result.format, result.bytes_out = out, "flattened-kdump", sink.bytes_written
    return result


def _save_elf(
    dump: Dump, out: str, filt: FilterResult, options: SaveOptions, exclude_zero: bool
) -> WriteResult:
    from ..dump.elf import write_elf
    from .sink import WritebackFileSink as FileSink

    sink = FileSink(out, overwrite=options.overwrite)
    try:
        result = write_elf(sink, dump, pages=filt.pages, exclude_zero=exclude_zero)
    except BaseException:
        sink.abort()
        raise
    sink.finish()
    return result


MEM_USAGE_LEVELS = (0, 1, 2, 4, 8, 16, 31)


@record
class LevelUsage:
    """What one dump level keeps."""

    dump_level: int
    kept_pages: int
    excluded: dict[str, int]  # pages per class this level excludes (zero included)


@record
class MemUsage:
    """``makedumpfile --mem-usage``: pages per class and what each dump level keeps."""

    page_size: int
    total_pages: int
    not_in_source: int
    classes: dict[str, int]  # makedumpfile's table: zero, cache, ..., kernel_data (at -d 31)
    levels: list[LevelUsage]
    layout: str | None
    unreadable: int
    warnings: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        ps = self.page_size
        return {
            "page_size": ps,
            "total_pages": self.total_pages,
            "total_bytes": self.total_pages * ps,
            "not_in_source": self.not_in_source,
            "classes": {k: {"pages": v, "bytes": v * ps} for k, v in self.classes.items()},
            "levels": [
                {
                    "dump_level": u.dump_level,
                    "kept_pages": u.kept_pages,
                    "kept_bytes": u.kept_pages * ps,
                    "excluded": u.excluded,
                }
                for u in self.levels
            ],
            "layout": self.layout,
            "unreadable_struct_page": self.unreadable,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


def mem_usage(
    dump: Dump,
    levels: Sequence[int] = MEM_USAGE_LEVELS,
    *,
    progress: ProgressFn | None = None,
) -> MemUsage:
    """Count pages per class and per dump level (reads the pages whose zero-ness matters)."""
    started = time.monotonic()
    requested = sorted(set(levels))
    levels = sorted(set(levels) | {31})
    for level in levels:
        _check_level(level)
    n = dump.max_pfn
    ps = dump.page_size
    warnings: list[str] = []
    classifier = make_classifier(dump, warnings)
    present_bm, dumped_bm = dump.present, dump.dumped
    total = present_bm.count()
    in_source_total = 0
    per_level = {lv: dict.fromkeys(("zero", *CLASS_NAMES.values()), 0) for lv in levels}
    kept = dict.fromkeys(levels, 0)
    filters = (
        [LevelFilter(lv, classifier.layout.max_order) for lv in levels]
        if classifier is not None
        else []
    )
    reader = PageReader(dump, BATCH_PAGES)
    unreadable = 0
    window = 1 << 16
    for lo in range(0, n, window):
        hi = min(lo + window, n)
        present = present_bm.window(lo, hi)
        if not present.any():
            continue
        in_source = present & dumped_bm.window(lo, hi)
        in_source_total += int(np.count_nonzero(in_source))
        if classifier is not None:
            feats = classifier.features(lo, hi, present)
            unreadable += int(np.count_nonzero(present & ~feats.examined))
            classes = [flt.apply(feats) for flt in filters]
        else:
            classes = [np.zeros(hi - lo, np.uint8) for _ in levels]
        keeps = [in_source & (c == 0) for c in classes]
        need = np.zeros(hi - lo, np.bool_)
        for lv, keep in zip(levels, keeps, strict=True):
            if lv & PageClass.ZERO:
                need |= keep
        zero = _zero_pages(reader, lo, need, ps)
        for lv, cls, keep in zip(levels, classes, keeps, strict=True):
            _count_classes(cls * in_source, per_level[lv])
            k = keep
            if lv & PageClass.ZERO:
                z = int(np.count_nonzero(zero & keep))
                per_level[lv]["zero"] += z
                kept[lv] += int(np.count_nonzero(k)) - z
            else:
                kept[lv] += int(np.count_nonzero(k))
        if progress is not None:
            progress("filter", hi, n)
    top = per_level[31]
    classes_table = {
        "zero": top["zero"],
        "cache": top["cache"],
        "cache_private": top["cache_private"],
        "user": top["user"],
        "free": top["free"],
        "hwpoison": top["hwpoison"],
        "offline": top["offline"],
        "kernel_data": kept[31],
    }
    return MemUsage(
        page_size=ps,
        total_pages=total,
        not_in_source=total - in_source_total,
        classes=classes_table,
        levels=[LevelUsage(lv, kept[lv], per_level[lv]) for lv in requested],
        layout=classifier.layout.variant if classifier is not None else None,
        unreadable=unreadable,
        warnings=warnings,
        seconds=time.monotonic() - started,
    )


def _zero_pages(
    reader: PageReader, start: int, need: npt.NDArray[np.bool_], page_size: int
) -> npt.NDArray[np.bool_]:
    """Which of the ``need`` pfns of a window are zero pages (others: False)."""
    zero = np.zeros(need.size, np.bool_)
    pfns = np.flatnonzero(need).astype(np.int64) + start
    for batch in _batches(iter([pfns]), BATCH_PAGES):
        data, lost = reader.read(batch)
        flags = zero_flags(data, page_size)
        if lost:
            flags[lost] = False
        zero[batch - start] = flags
    return zero


__all__ = [
    "ALWAYS_EXCLUDED",
    "FORMATS",
    "FilterResult",
    "MemUsage",
    "SaveOptions",
    "SaveResult",
    "build_filter",
    "mem_usage",
    "save",
    "split_paths",
]
