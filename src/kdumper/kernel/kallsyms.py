"""The crashed kernel's own symbol table (kallsyms), when VMCOREINFO points at it.

Since Linux 6.0 (the series ending in f09bddbd8661 "vmcoreinfo: add kallsyms_num_syms symbol")
a kernel built with ``CONFIG_KALLSYMS`` exports its kallsyms tables in VMCOREINFO
(``SYMBOL(kallsyms_names)``, ``kallsyms_num_syms``, ``kallsyms_token_table``,
``kallsyms_token_index``, ``kallsyms_offsets``, ``kallsyms_relative_base``), so symbols can be
found and addresses named without debug info. Debian's 6.1 and 6.12 kernels export them.

The table format (``scripts/kallsyms.c``): ``kallsyms_names`` is one entry per symbol, a length
(one byte; two bytes, low 7 bits first, when the first has bit 7 set — "big" symbols, Linux 6.1)
then that many token numbers; a token is a NUL-terminated string in ``kallsyms_token_table`` at
``kallsyms_token_index[token]``; the first character of an expanded name is its type letter.
``kallsyms_offsets`` are 32-bit, relative to ``kallsyms_relative_base``; with
``CONFIG_KALLSYMS_ABSOLUTE_PERCPU`` (x86_64 SMP builds of these kernels) non-negative values are
absolute per-CPU offsets and negative ones ``base - 1 - value``. Which encoding a kernel uses is
not exported, so both are tried and the one that puts ``_stext`` (and ``init_uts_ns``) where
VMCOREINFO says wins.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from ..dump.base import Dump
from ..errors import KdumperError
from .memory import kernel_memory

_MAX_SYMS = 1 << 22  # more than 4 Mi symbols: corruption
_MAX_NAMES_BYTES = 1 << 26
_MAX_SYMBOL_SIZE = 1 << 24  # a "symbol" larger than 16 MiB is the gap after the last one
_KEYS = (
    "kallsyms_names",
    "kallsyms_num_syms",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_offsets",
    "kallsyms_relative_base",
)


class KallsymsError(KdumperError):
    """The kallsyms tables are missing or do not decode."""


class Kallsyms:
    """Name ↔ address lookups in the crashed kernel's kallsyms (text and data symbols)."""

    def __init__(self, names: list[str], types: str, addresses: npt.NDArray[np.uint64]) -> None:
        order = np.argsort(addresses, kind="stable")
        self.addresses: npt.NDArray[np.uint64] = addresses[order]
        self.names = [names[i] for i in order.tolist()]
        self.types = "".join([types[i] for i in order.tolist()])
        values = self.addresses.tolist()
        # reversed: the lowest address of a name is inserted last and wins
        self._by_name: dict[str, int] = dict(zip(self.names[::-1], values[::-1], strict=True))

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, name: str) -> int | None:
        """The address of ``name`` (the lowest when several symbols share it), or None."""
        return self._by_name.get(name)

    def symbolize(self, addr: int) -> str | None:
        """``function+0xoff/0xsize`` for a kernel address, None when outside the table."""
        if not 0 <= addr < 1 << 64:
            return None
        target = np.uint64(addr)
        k = int(np.searchsorted(self.addresses, target, side="right")) - 1
        if k < 0:
            return None
        start = int(self.addresses[k])
        # aliases share an address: the size runs to the next different address
        nxt = int(np.searchsorted(self.addresses, np.uint64(start), side="right"))
        if nxt >= len(self.addresses):
            return None  # past the last symbol: no size known
        size = int(self.addresses[nxt]) - start
        if addr - start >= size or size > _MAX_SYMBOL_SIZE:
            return None
        return f"{self.names[k]}+{addr - start:#x}/{size:#x}"


def _entry_bounds(names: bytes, count: int) -> tuple[list[int], list[int]]:
    """Start of each entry's tokens and each length field's size (1 or 2 bytes)."""
    starts: list[int] = []
    widths: list[int] = []
    pos, end = 0, len(names)
    for _ in range(count):
        if pos >= end:
            raise KallsymsError("kallsyms_names ends before the last symbol")
        n = names[pos]
        width = 1
        if n & 0x80:
            if pos + 1 >= end:
                raise KallsymsError("kallsyms_names ends inside a length")
            n = (n & 0x7F) | (names[pos + 1] << 7)
            width = 2
        if n == 0 or pos + width + n > end:
            raise KallsymsError(f"kallsyms_names entry {len(starts)} is corrupt")
        starts.append(pos + width)
        widths.append(width)
        pos += width + n
    starts.append(pos + 1)  # where a next entry's tokens would start: the end marker
    return starts, widths


_DECODE_CHUNK = 8192  # symbols expanded per numpy pass: ~2 MiB of temporaries, not ~150 MiB


def _decode_names(
    names: bytes, count: int, table: bytes, index: tuple[int, ...]
) -> tuple[list[str], str]:
    """Expand the entries with numpy, a chunk of symbols at a time (bounded memory: this runs in
    the capture kernel): each byte becomes its token's bytes, the length fields become a newline
    (the one-byte field, or the first of two) and nothing."""
    starts, widths = _entry_bounds(names, count)
    field_at = [start - width for start, width in zip(starts[:-1], widths, strict=True)]
    tab = np.frombuffer(table + b"\n", dtype=np.uint8)
    ends = [table.index(b"\0", off) for off in index]
    tok_start = np.asarray([*index, len(table), len(table)], dtype=np.int64)
    tok_len = np.asarray([e - o for e, o in zip(ends, index, strict=True)] + [1, 0], np.int64)
    out: list[str] = []
    types: list[str] = []
    for lo in range(0, count, _DECODE_CHUNK):
        hi = min(lo + _DECODE_CHUNK, count)
        begin = field_at[lo]
        end = field_at[hi] if hi < count else starts[-1] - 1
        seq = np.frombuffer(names, dtype=np.uint8, count=end - begin, offset=begin).astype(np.int64)
        fields = np.asarray(field_at[lo:hi], dtype=np.int64) - begin
        seq[fields] = 256  # "\n"
        seq[fields[np.asarray(widths[lo:hi]) == 2] + 1] = 257  # ""
        lens = tok_len[seq]
        total = int(lens.sum())
        first = np.repeat(np.cumsum(lens) - lens, lens)
        positions = np.repeat(tok_start[seq], lens) + (np.arange(total, dtype=np.int64) - first)
        parts = tab[positions].tobytes().decode("ascii", "replace").split("\n")[1:]
        if len(parts) != hi - lo:
            raise KallsymsError("kallsyms names contain a newline: the table is corrupt")
        out += [p[1:] for p in parts]
        types.append("".join([p[:1] or "?" for p in parts]))
    return out, "".join(types)


def load_kallsyms(dump: Dump) -> Kallsyms | None:
    """The kallsyms of ``dump``; None when VMCOREINFO does not export them.

    :class:`KallsymsError` (or another :class:`KdumperError`) when the tables are unreadable.
    """
    info = dump.vmcoreinfo
    if info is None:
        return None
    sym = {key: info.symbol(key) for key in _KEYS}
    if any(v is None for v in sym.values()):
        return None
    addr = {k: int(v) for k, v in sym.items() if v is not None}
    mem = kernel_memory(dump)
    num = mem.read_u32(addr["kallsyms_num_syms"])
    if not 0 < num <= _MAX_SYMS:
        raise KallsymsError(f"kallsyms_num_syms is absurd ({num})")
    index = struct.unpack("<256H", mem.read(addr["kallsyms_token_index"], 512))
    table = mem.read(addr["kallsyms_token_table"], max(index) + 256)
    if any(table.find(b"\0", off) < 0 for off in index):
        raise KallsymsError("kallsyms_token_table is corrupt")
    # kallsyms_names is followed by kallsyms_markers, then the token table (and, before Linux
    # 6.4's reordering, preceded by the offsets): read up to the nearest table after it
    after = [a for a in addr.values() if a > addr["kallsyms_names"]]
    names_size = min(min(after) - addr["kallsyms_names"], _MAX_NAMES_BYTES) if after else 0
    if names_size <= 0:
        raise KallsymsError("cannot tell where kallsyms_names ends")
    names, types = _decode_names(mem.read(addr["kallsyms_names"], names_size), num, table, index)
    raw = np.frombuffer(mem.read(addr["kallsyms_offsets"], 4 * num), dtype="<i4")
    base = np.uint64(mem.read_u64(addr["kallsyms_relative_base"]))
    with np.errstate(over="ignore"):
        as_u64 = raw.astype(np.int64).astype(np.uint64)  # negative values wrap modulo 2**64
        relative = (as_u64 & np.uint64(0xFFFFFFFF)) + base  # KALLSYMS_BASE_RELATIVE
        percpu = np.where(raw >= 0, as_u64, base - np.uint64(1) - as_u64)  # + ABSOLUTE_PERCPU
    wanted = {n: info.symbol(n) for n in ("_stext", "init_uts_ns")}
    position = {n: names.index(n) for n in wanted if wanted[n] is not None and n in names}
    if not position:
        raise KallsymsError("kallsyms has neither _stext nor init_uts_ns to check against")
    for candidate in (percpu, relative):
        if all(int(candidate[i]) == wanted[n] for n, i in position.items()):
            return Kallsyms(names, types, candidate.astype(np.uint64))
    raise KallsymsError("kallsyms addresses do not match VMCOREINFO (unknown encoding)")


def kallsyms(dump: Dump) -> Kallsyms | None:
    """:func:`load_kallsyms`, cached on the dump; None also when the tables do not decode."""
    cache: dict[str, Kallsyms | None] = dump.__dict__.setdefault("_kdumper_kallsyms", {})
    if "table" not in cache:
        try:
            cache["table"] = load_kallsyms(dump)
        except KdumperError:
            cache["table"] = None
    return cache["table"]
