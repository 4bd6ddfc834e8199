"""Test helpers (engineer B): a tiny in-memory Dump and in-memory sinks for the kdump writers."""

from __future__ import annotations

import random

import numpy as np

from kdumper.dump.arch import X86_64, Arch
from kdumper.dump.base import Dump, DumpFacts
from kdumper.dump.bitmap import Bitmap
from kdumper.dump.io import Sink
from kdumper.dump.notes import Note, build_prstatus
from kdumper.errors import NoSpaceError, PageExcludedError, PageNotPresentError

PAGE = 4096
VMCOREINFO = (
    b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1700000000\nNUMBER(phys_base)=16777216\n"
)


class MemoryDump(Dump):
    """Pages in a dict; ``present`` as pfn ranges; notes: 2 PRSTATUS + VMCOREINFO by default."""

    format = "memory"

    def __init__(
        self,
        pages: dict[int, bytes],
        max_pfn: int,
        present: list[tuple[int, int]] | None = None,
        notes: list[Note] | None = None,
        arch: Arch = X86_64,
        page_size: int = PAGE,
    ) -> None:
        self.path = "<memory>"
        self.arch = arch
        self.page_size = page_size
        self.max_pfn = max_pfn
        self.pages = pages
        pres = np.zeros(max_pfn, dtype=bool)
        for a, b in present if present is not None else [(0, max_pfn)]:
            pres[a:b] = True
        dumped = np.zeros(max_pfn, dtype=bool)
        dumped[[p for p in pages if p < max_pfn]] = True
        self._present = Bitmap.from_bool(pres)
        self._dumped = Bitmap.from_bool(dumped & pres)
        if notes is None:
            notes = [
                build_prstatus(arch, 100, {"rip": 0xFFFFFFFF81000000, "rsp": 0x1000}),
                build_prstatus(arch, 0, {"rip": 0xFFFFFFFF81000010}),
                Note("VMCOREINFO", 0, VMCOREINFO),
            ]
        self.notes = notes

    @property
    def present(self) -> Bitmap:
        return self._present

    @property
    def dumped(self) -> Bitmap:
        return self._dumped

    def read_pfn(self, pfn: int) -> bytes:
        if not self._present.test(pfn):
            raise PageNotPresentError(pfn)
        if pfn not in self.pages or not self._dumped.test(pfn):
            raise PageExcludedError(pfn)
        return self.pages[pfn]

    def facts(self) -> DumpFacts:
        return DumpFacts(format="memory")


def make_dump(n: int = 9000, seed: int = 0, holes: bool = True) -> MemoryDump:
    """A dump of ``n`` pfns (several 4096-pfn sections) mixing zero, random, text-like pages,
    excluded pages and a memory hole. Page objects are shared to keep memory small."""
    rng = random.Random(seed)
    zero = bytes(PAGE)
    randoms = [rng.randbytes(PAGE) for _ in range(8)]
    texty = [(bytes([i]) * 64 + rng.randbytes(16)) * 51 + bytes(16) for i in range(32)]
    pages: dict[int, bytes] = {}
    for pfn in range(n):
        k = rng.random()
        if k < 0.35:
            pages[pfn] = zero
        elif k < 0.45:
            pages[pfn] = randoms[pfn % len(randoms)]
        elif k < 0.55:
            continue  # excluded
        else:
            pages[pfn] = texty[pfn % len(texty)]
    present = [(0, n // 2 - 37), (n // 2 + 100, n)] if holes else None
    return MemoryDump(pages, n, present=present)


class MemorySink(Sink):
    """A seekable in-memory sink; ``limit`` makes writes past that offset fail with ENOSPC
    after writing what fits (like a filling disk)."""

    def __init__(self, limit: int | None = None, name: str = "<memory sink>") -> None:
        self.name = name
        self.buf = bytearray()
        self.limit = limit
        self.finished = False

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        data = bytes(data)
        end = offset + len(data)
        fits = data if self.limit is None else data[: max(0, self.limit - offset)]
        if offset + len(fits) > len(self.buf):
            self.buf.extend(bytes(offset + len(fits) - len(self.buf)))
        self.buf[offset : offset + len(fits)] = fits
        if self.limit is not None and end > self.limit:
            raise NoSpaceError("write failed: no space left", path=self.name)

    def finish(self) -> None:
        self.finished = True

    def getvalue(self) -> bytes:
        return bytes(self.buf)
