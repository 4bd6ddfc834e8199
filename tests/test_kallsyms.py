"""``kernel.kallsyms`` on hand-built kallsyms tables, and what crashinfo reads through them.

The tables are built here as ``scripts/kallsyms.c`` lays them out (Linux 6.4+ order: num_syms,
names, markers, token table, token index, offsets, relative base), written into the rodata of a
synthetic vmcore (``tests/synth.py``) and announced in VMCOREINFO as a 6.x kernel does. Both
offset encodings (``KALLSYMS_ABSOLUTE_PERCPU`` or not), multi-character tokens and "big"
two-byte name lengths are covered; real Debian kernels are covered by tests/test_dmesg_real.py.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

import kdumper
from kdumper.kernel.crashinfo import crash_info
from kdumper.kernel.kallsyms import KallsymsError, kallsyms, load_kallsyms
from tests.synth import SynthInfo, make_vmcore

MULTI = ["crash_", "kexec", "panic", "native_", "safe_", "sys", "init_", "_ns"]  # tokens 0x80+
LONG_NAME = "very_long_symbol_" + "x" * 190  # more than 127 tokens: a two-byte length


def tokens() -> list[bytes]:
    out = [bytes([i]) if 0x20 < i < 0x7F else b"?" for i in range(0x80)]
    out += [t.encode() for t in MULTI]
    out += [b"?"] * (256 - len(out))
    return out


def encode_name(kind: str, name: str) -> bytes:
    """Greedy token encoding (the longest token that matches), then the length prefix."""
    toks = tokens()
    by_text = {t: i for i, t in enumerate(toks) if t != b"?"}
    data, text, pos = bytearray([ord(kind)]), name.encode(), 0
    while pos < len(text):
        for size in (7, 6, 5, 4, 3, 2, 1):
            piece = text[pos : pos + size]
            if len(piece) == size and piece in by_text:
                data.append(by_text[piece])
                pos += size
                break
        else:
            raise AssertionError(f"cannot encode {name!r}")
    n = len(data)
    prefix = bytes([n]) if n < 0x80 else bytes([0x80 | (n & 0x7F), n >> 7])
    return prefix + bytes(data)


def build_tables(
    symbols: Sequence[tuple[str, str, int]], base_va: int, *, percpu: bool
) -> tuple[bytes, dict[str, int]]:
    """The kallsyms blob at ``base_va`` and the VMCOREINFO symbol addresses inside it."""
    syms = sorted(symbols, key=lambda s: (s[2] if s[1] != "A" else -1, s[0]))
    relative_base = min(a for _, k, a in syms if k != "A")
    names = b"".join(encode_name(k, n) for n, k, _ in syms)
    toks = tokens()
    table, index = bytearray(), []
    for t in toks:
        index.append(len(table))
        table += t + b"\0"
    offsets = []
    for _, kind, addr in syms:
        if percpu:
            offsets.append(addr if kind == "A" else relative_base - 1 - addr)
        else:
            offsets.append((addr - relative_base) & 0xFFFFFFFF)
    blob = bytearray()
    where: dict[str, int] = {}

    def put(name: str, data: bytes, align: int = 8) -> None:
        blob.extend(bytes(-len(blob) % align))
        where[name] = base_va + len(blob)
        blob.extend(data)

    put("kallsyms_num_syms", struct.pack("<I", len(syms)))
    put("kallsyms_names", names)
    put("kallsyms_markers", bytes(64))
    put("kallsyms_token_table", bytes(table))
    put("kallsyms_token_index", struct.pack("<256H", *index))
    fmt = f"<{len(offsets)}{'i' if percpu else 'I'}"
    put("kallsyms_offsets", struct.pack(fmt, *offsets))
    put("kallsyms_relative_base", struct.pack("<Q", relative_base))
    return bytes(blob), where


def vmcore_with_kallsyms(
    tmp_path: Path, *, percpu: bool, panic_cpu: int = 1, taint: int = (1 << 9) | (1 << 12)
) -> tuple[SynthInfo, list[tuple[str, str, int]]]:
    probe = make_vmcore(tmp_path / "probe", mem_mib=32, seed=21)
    s = probe.symbols
    text = s["_text"]
    rodata = text + 3 * (1 << 20)  # synth.py: .rodata at _text + 3 MiB, only linux_banner used
    variables = {"panic_cpu": rodata + 0x10000, "tainted_mask": rodata + 0x10040}
    symbols = [
        ("fixed_percpu_data", "A", 0),
        ("irq_stack_backing_store", "A", 0x4000),
        ("_stext", "T", s["_stext"]),
        ("startup_64", "T", s["startup_64"]),
        ("__crash_kexec", "T", s["__crash_kexec"]),
        ("crash_kexec", "T", s["crash_kexec"]),
        ("native_safe_halt", "T", s["native_safe_halt"]),
        ("default_idle", "T", s["default_idle"]),
        ("panic", "T", s["panic"]),
        ("sys_write_alias", "T", s["ksys_write"]),
        ("ksys_write", "T", s["ksys_write"]),
        (LONG_NAME, "t", s["ksys_write"] + 0x100),
        ("_etext", "T", text + 3 * (1 << 20)),
        ("linux_banner", "D", s["linux_banner"]),
        ("panic_cpu", "D", variables["panic_cpu"]),
        ("tainted_mask", "D", variables["tainted_mask"]),
        ("init_uts_ns", "D", s["init_uts_ns"]),
        ("_end", "B", s["_end"]),
    ]
    blob, where = build_tables(symbols, rodata + 0x20000, percpu=percpu)
    extra = {f"SYMBOL({k})": f"{v:x}" for k, v in where.items()}
    info = make_vmcore(tmp_path / "vmcore", mem_mib=32, seed=21, vmcoreinfo_extra=extra)
    assert info.symbols["_text"] == text

    def patch(va: int, data: bytes) -> None:
        with open(info.path, "r+b") as f:
            f.seek(info.file_offset(info.kernel_phys + va - text))
            f.write(data)

    patch(rodata + 0x20000, blob)
    patch(variables["panic_cpu"], struct.pack("<i", panic_cpu))
    patch(variables["tainted_mask"], struct.pack("<Q", taint))
    return info, symbols


@pytest.mark.parametrize("percpu", [True, False], ids=["absolute-percpu", "relative"])
def test_lookup_and_symbolize(tmp_path: Path, percpu: bool) -> None:
    info, symbols = vmcore_with_kallsyms(tmp_path, percpu=percpu)
    with kdumper.open(info.path) as dump:
        table = load_kallsyms(dump)
    assert table is not None and len(table) == len(symbols)
    for name, kind, addr in symbols:
        assert table.lookup(name) == addr, name
        assert table.types[table.names.index(name)] == kind
    s = info.symbols
    size = s["crash_kexec"] - s["__crash_kexec"]
    assert table.symbolize(s["__crash_kexec"] + 0x6D) == f"__crash_kexec+0x6d/{size:#x}"
    # aliases at one address: the size runs to the next different address
    name = table.symbolize(s["ksys_write"] + 3)
    assert name is not None and name.endswith("+0x3/0x100")
    long_at = s["ksys_write"] + 0x100
    long_size = min(a for _, _, a in symbols if a > long_at) - long_at  # up to the next symbol
    assert table.symbolize(s["ksys_write"] + 0x105) == f"{LONG_NAME}+0x5/{long_size:#x}"
    assert table.lookup("no_such_symbol") is None
    assert table.symbolize(s["_end"] + 0x10) is None  # past the last symbol
    assert table.symbolize(-5) is None


def test_crash_info_reads_panic_cpu_and_taint(tmp_path: Path) -> None:
    info, _ = vmcore_with_kallsyms(tmp_path, percpu=True, panic_cpu=1)
    with kdumper.open(info.path) as dump:
        ci = crash_info(dump)
    # the log says CPU 0; the kernel's panic_cpu variable says 1 and wins
    assert (ci.panic_cpu, ci.panic_cpu_source) == (1, "kallsyms")
    assert (ci.taint, ci.taint_source) == ("WO", "kallsyms")
    assert ci.taint_names() == ["WARN", "OOT_MODULE"]
    assert ci.cpus[0].symbol is not None and ci.cpus[0].symbol.startswith("__crash_kexec+0x6d/")
    assert ci.cpus[1].symbol is not None and ci.cpus[1].symbol.startswith("native_safe_halt+0xb/")
    # the log's task is still reported; the pid mismatch is not a numbering problem here
    assert ci.comm == "bash" and not any("numbered" in n for n in ci.notes)


def test_panic_cpu_invalid_falls_back_to_the_log(tmp_path: Path) -> None:
    info, _ = vmcore_with_kallsyms(tmp_path, percpu=True, panic_cpu=-1)
    with kdumper.open(info.path) as dump:
        ci = crash_info(dump)
    assert (ci.panic_cpu, ci.panic_cpu_source) == (0, "log")


def test_corrupt_tables_are_ignored(tmp_path: Path) -> None:
    info, _ = vmcore_with_kallsyms(tmp_path, percpu=True)
    num = int(info.vmcoreinfo.split("SYMBOL(kallsyms_num_syms)=")[1].split()[0], 16)
    with open(info.path, "r+b") as f:
        f.seek(info.file_offset(info.kernel_phys + num - info.symbols["_text"]))
        f.write(struct.pack("<I", 1 << 30))
    with kdumper.open(info.path) as dump:
        with pytest.raises(KallsymsError, match="absurd"):
            load_kallsyms(dump)
        assert kallsyms(dump) is None  # the cached form: no table, no exception
        ci = crash_info(dump)
    assert ci.panic_cpu_source == "log" and ci.taint_source == "log"


def test_no_kallsyms_in_vmcoreinfo(tmp_path: Path) -> None:
    info = make_vmcore(tmp_path / "v", mem_mib=32, seed=2)
    with kdumper.open(info.path) as dump:
        assert load_kallsyms(dump) is None
