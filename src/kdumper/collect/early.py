"""The kernel image, compressed while ``kdumper save`` starts (the collector's early helper).

``kdumper save`` spends its first ~50 ms on one CPU, importing numpy and its own modules before
it can classify a page; on a machine with two CPUs or more the others wait. Yet part of the work
is known before any of that: every dump level keeps the kernel's own image (its text, data and
bss are reserved pages, never cache, user or free; only the init sections it freed after boot are
filtered out), and an x86_64 vmcore names the image: the kernel's text mapping is a PT_LOAD of
its own. So, before the heavy imports, the command forks this helper. It reads the image's pages
from the file offset the dump reader would read them from (the RAM segment that holds them) and
encodes them as a compression worker would (zero check, the same codec call, raw when a page does
not shrink), in page order, into a shared mapping: a table entry per page and the payloads back
to back. When the writer reaches the image, the collector stops the helper (SIGKILL, then
``waitpid``: the count in the mapping says how many pages are complete; a page is counted only
after its entry and payload are written) and takes those pages from the mapping instead of
compressing them again; the rest goes to the workers as usual. The output is the same, byte for
byte (tests/test_early.py).

This module must not import numpy: it runs before numpy is imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import signal
import struct
import threading

from ..codecs import Codec, get_codec
from ..errors import KdumperError
from .native import native_for, stored_bound

EM_X86_64 = 62
PT_LOAD = 1
NOT_PADDR = (1 << 64) - 1
#: x86_64's kernel text mapping (``__START_KERNEL_map``, 1 GiB with KASLR)
KERNEL_TEXT = (0xFFFFFFFF80000000, 0xFFFFFFFFC0000000)
#: at most this many pages of image (128 MiB: Debian's kernels are ~40 MiB with bss)
MAX_PAGES = 1 << 15
#: at most this much stored payload (the parent maps what it writes: its peak RSS grows by as
#: much; a Debian kernel's image is ~20 MiB once compressed)
MAX_PAYLOAD = 24 << 20
PAGE_SIZE = 4096

# table entry kinds (0: not written)
RAW, COMPRESSED, ZERO = 1, 2, 3
#: a table entry: payload offset, stored size, kind (struct codes, little endian, then a pad
#: byte); the collector reads the table with the numpy dtype of :func:`entry_fields`
ENTRY_FIELDS = (("offset", "I"), ("size", "H"), ("kind", "B"))
ENTRY = struct.Struct("<" + "".join(code for _name, code in ENTRY_FIELDS) + "x")


def entry_fields() -> tuple[list[str], list[str], list[int]]:
    """Names, formats (``<I`` ...) and offsets of :data:`ENTRY`'s fields, for a numpy dtype."""
    names, formats, offsets = [], [], []
    prefix = "<"
    for name, code in ENTRY_FIELDS:
        names.append(name)
        formats.append("<" + code)
        offsets.append(struct.calcsize(prefix))
        prefix += code
    return names, formats, offsets


_COUNT = struct.Struct("<Q")  # at offset 0: pages complete
# madvise(2) advice of Linux 5.14 (older kernels refuse it: the pages are then faulted in one by
# one, as without it): fault a range in with one call instead of one fault per 4 KiB page
_MADV_POPULATE_READ = 22
_MADV_POPULATE_WRITE = 23
_POPULATE_STEP = 1 << 20  # the helper maps its payload area in this much at a time
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_CHUNK = 32  # pages read and encoded at a time (the count is published after each chunk)
_PR_SET_PDEATHSIG = 1


class ImagePlan:
    """Where the kernel image's pages are: ``npages`` pages from ``first_pfn``, in the file at
    ``file_offset``."""

    def __init__(self, first_pfn: int, npages: int, file_offset: int) -> None:
        self.first_pfn = first_pfn
        self.npages = npages
        self.file_offset = file_offset

    def __repr__(self) -> str:
        return f"ImagePlan(pfn {self.first_pfn:#x} +{self.npages}, offset {self.file_offset:#x})"


def kernel_image_plan(fd: int) -> ImagePlan | None:
    """The kernel image of the ELF vmcore open as ``fd``; None for anything else (another
    format or architecture, no kernel text PT_LOAD, an image not held whole by one segment)."""
    head = os.pread(fd, _EHDR.size, 0)
    if len(head) < _EHDR.size:
        return None
    ident, _type, machine, _v, _entry, phoff, _sh, _fl, _eh, phentsize, phnum = _EHDR.unpack(head)[
        :11
    ]
    if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1 or machine != EM_X86_64:
        return None  # ELF64, little endian, x86_64 only
    if phentsize != _PHDR.size or not 0 < phnum < 0xFFFF:
        return None
    table = os.pread(fd, phnum * _PHDR.size, phoff)
    if len(table) != phnum * _PHDR.size:
        return None
    size = os.fstat(fd).st_size
    loads = []
    for i in range(phnum):
        p_type, _f, offset, vaddr, paddr, filesz, memsz, _a = _PHDR.unpack_from(
            table, i * _PHDR.size
        )
        if p_type == PT_LOAD and memsz and paddr != NOT_PADDR and filesz <= memsz:
            loads.append((paddr, memsz, filesz, offset, vaddr))
    image = [ld for ld in loads if KERNEL_TEXT[0] <= ld[4] < KERNEL_TEXT[1]]
    if len(image) != 1:
        return None
    start = -(-image[0][0] // PAGE_SIZE) * PAGE_SIZE
    # the segment the dump reader reads it from: the lowest start holding it, the longest first
    # (kdumper.dump.elf sorts segments so and drops those inside another)
    holders = sorted(
        (ld for ld in loads if ld[0] <= start < ld[0] + ld[1]), key=lambda ld: (ld[0], -ld[1])
    )
    if not holders:
        return None
    paddr, _memsz, filesz, offset, _vaddr = holders[0]
    in_file = min(paddr + filesz, paddr + max(0, size - offset))
    end = min(image[0][0] + image[0][2], in_file)
    npages = min(MAX_PAGES, max(0, (end - start) // PAGE_SIZE))
    if not npages:
        return None
    return ImagePlan(start // PAGE_SIZE, npages, offset + start - paddr)


class EarlyPages:
    """The helper's shared mapping and process; the collector reads it after :meth:`stop`."""

    def __init__(
        self, pid: int, mapping: mmap.mmap, plan: ImagePlan, codec: Codec, exclude_zero: bool
    ) -> None:
        self.pid = pid
        self._map = mapping
        self.first_pfn = plan.first_pfn
        self.npages = plan.npages
        self.file_offset = plan.file_offset
        self.page_size = PAGE_SIZE
        self.codec = codec.name
        self.flag = codec.flag
        self.exclude_zero = exclude_zero
        self._done: int | None = None
        self._released = 0  # payload bytes this process has unmapped (see release)

    def stop(self) -> int:
        """Stop the helper (SIGSTOP: it is frozen, not gone) and return how many pages it
        completed."""
        if self._done is None:
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGSTOP)
                    _pid, status = os.waitpid(self.pid, os.WUNTRACED)  # its writes are visible
                    if not os.WIFSTOPPED(status):  # it had died (and is reaped now)
                        self.pid = 0
                except (ProcessLookupError, ChildProcessError):
                    self.pid = 0
            self._done = min(_COUNT.unpack_from(self._map, 0)[0], self.npages)
        return self._done

    @property
    def done_end(self) -> int:
        """The pfn after the last page the helper completed (stops it)."""
        return self.first_pfn + self.stop()

    def entries(self) -> memoryview:
        """The table: :data:`ENTRY` per page, from ``first_pfn`` (valid for :meth:`stop`'s
        count)."""
        return memoryview(self._map)[_COUNT.size : _COUNT.size + ENTRY.size * self.npages]

    def payloads(self) -> memoryview:
        """The payload area (table offsets are relative to it)."""
        return memoryview(self._map)[_data_at(self.npages) :]

    def map_in(self, start: int, end: int) -> None:
        """Map the payload bytes ``[start, end)`` into this process with one call, before they
        are written out: the helper's pages are not mapped here yet, and writing them took a
        page fault per 4 KiB (6.1, 4 GiB guest, ~17 MiB of image payloads: their writes took
        12.7 ms, 5.2 ms once mapped in, the whole stretch 15 -> 10.5 ms)."""
        _populate(self._map, _MADV_POPULATE_READ, _data_at(self.npages) + start, end - start)

    def release(self, end: int) -> None:
        """This process is done with the payloads before offset ``end``: unmap them here (they
        stay in the shared memory, the helper holds them), so that the parent's RSS does not
        grow by every payload it wrote."""
        start = self._released
        stop = end // PAGE_SIZE * PAGE_SIZE
        if stop > start:
            with contextlib.suppress(OSError, ValueError):
                self._map.madvise(mmap.MADV_DONTNEED, _data_at(self.npages) + start, stop - start)
            self._released = stop

    def close(self) -> None:
        """Stop the helper and release the mapping (views handed out must be released first).

        The helper is killed after this process lets go of the mapping, so that the helper,
        the last to hold its pages, frees them on its own CPU as it exits (freeing ~20 MiB of
        payloads here took ~4 ms at the end of every save); a thread reaps it."""
        self.stop()
        with contextlib.suppress(BufferError):
            self._map.close()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            # reaped by a thread as soon as it is gone: no zombie left, no wait here
            threading.Thread(target=_reap, args=(self.pid,), daemon=True).start()
            self.pid = 0


def _populate(mapping: mmap.mmap, advice: int, start: int, length: int) -> None:
    """madvise ``advice`` (a populate) over ``[start, start + length)`` of ``mapping``, widened
    to whole pages; nothing when the kernel does not know it."""
    first = start // PAGE_SIZE * PAGE_SIZE
    if length > 0:
        with contextlib.suppress(OSError, ValueError):
            mapping.madvise(advice, first, start + length - first)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _data_at(npages: int) -> int:
    return -(-(_COUNT.size + ENTRY.size * npages) // PAGE_SIZE) * PAGE_SIZE


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def start_early(path: str, codec_name: str, *, exclude_zero: bool) -> EarlyPages | None:
    """Fork the helper for the vmcore at ``path`` (an ELF file or ``/proc/vmcore``); None when
    it cannot help: one CPU, no compression, not an x86_64 ELF vmcore, any error on the way
    (the collector then compresses every page itself)."""
    if codec_name == "none" or usable_cpus() < 2 or not hasattr(os, "fork"):
        return None
    try:
        codec = get_codec(codec_name)
        codec.available()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (KdumperError, OSError):  # the collector reports these itself
        return None
    try:
        plan = kernel_image_plan(fd)
        if plan is None:
            return None
        room = min(plan.npages * PAGE_SIZE, MAX_PAYLOAD)
        length = _data_at(plan.npages) + room + stored_bound(PAGE_SIZE)
        mapping = mmap.mmap(-1, length, flags=mmap.MAP_SHARED)
        pid = os.fork()
        if pid == 0:  # the helper: never returns
            try:
                _serve(fd, plan, codec, exclude_zero, mapping, room)
            finally:
                os._exit(0)
        return EarlyPages(pid, mapping, plan, codec, exclude_zero)
    except OSError:
        return None
    finally:
        os.close(fd)


def _serve(
    fd: int, plan: ImagePlan, codec: Codec, exclude_zero: bool, mapping: mmap.mmap, room: int
) -> None:
    """The helper's life: encode the image's pages in order until done, out of ``room`` for
    payloads, or killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        return
    with contextlib.suppress(AttributeError, OSError):  # only the CPU time nobody else wants
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    ps = PAGE_SIZE
    lib = native_for(codec)
    data = memoryview(mapping)[_data_at(plan.npages) :]
    data_addr = ctypes.addressof(ctypes.c_char.from_buffer(data))
    buf = bytearray(_CHUNK * ps)
    view = memoryview(buf)
    buf_addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    zero = bytes(ps)
    compress = codec.compress
    pos = done = mapped = 0
    base = _data_at(plan.npages)
    while done < plan.npages:
        count = min(_CHUNK, plan.npages - done)
        if pos + count * ps > room:  # a chunk stores at most its pages raw
            break
        if pos + count * ps > mapped:  # new shared pages: allocated a MiB at a time, not one
            # fault per page (faults were ~a third of this process's kernel time)
            step = min(_POPULATE_STEP, room + stored_bound(ps) - mapped)
            _populate(mapping, _MADV_POPULATE_WRITE, base + mapped, step)
            mapped += step
        try:
            got = os.preadv(fd, [view[: count * ps]], plan.file_offset + done * ps)
        except OSError:
            break
        count = min(count, got // ps)
        if not count:
            break
        keep = [
            i
            for i in range(count)
            if not (exclude_zero and buf.startswith(zero, i * ps, (i + 1) * ps))
        ]
        start = pos
        if lib is not None:
            sizes, _length = lib.encode(buf_addr, count, ps, keep, data_addr + start)
        else:
            sizes = [0] * count
            at = start
            for i in keep:
                page = view[i * ps : (i + 1) * ps]
                c = compress(page)
                stored = c if len(c) < ps else page
                data[at : at + len(stored)] = stored
                sizes[i] = len(stored)
                at += len(stored)
        kept = set(keep)
        for i in range(count):
            entry_at = _COUNT.size + ENTRY.size * (done + i)
            if i in kept:
                size = sizes[i]
                ENTRY.pack_into(mapping, entry_at, pos, size, COMPRESSED if size < ps else RAW)
                pos += size
            else:
                ENTRY.pack_into(mapping, entry_at, 0, 0, ZERO)
        done += count
        _COUNT.pack_into(mapping, 0, done)
    while True:  # done: wait to be killed (then the pages are freed here, see close)
        signal.pause()
