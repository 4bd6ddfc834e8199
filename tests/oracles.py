"""The reference tools as test oracles: makedumpfile, crash, libkdumpfile and drgn.

Every helper runs its tool in a subprocess with a timeout, so a tool that hangs or crashes fails one
test instead of the session. A tool that is not installed skips the test locally and FAILS it in
CI (``CI=true``), where ``scripts/test.sh`` must have installed everything.

Also here: :class:`RefElf`, a deliberately independent, minimal ELF PT_LOAD reader (numpy memmaps)
that gives the ground truth pages of a source vmcore without going through kdumper's own readers,
page-comparison helpers, and the oracle matrix (which tool read which of our formats and codecs)
that ``tests/conftest.py`` prints at the end of a run.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import pytest

PAGE = 4096
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
CACHE = Path(os.environ.get("KDUMPER_CACHE") or Path.home() / ".cache" / "kdumper")
TOOLS = CACHE / "tools"
DEBIAN_PYTHON = "/usr/bin/python3"
TIMEOUT = 300.0  # seconds for one tool run on a test-sized dump (they take < 5 s here)

# makedumpfile versions we test against and the codecs Debian builds them with
# (bookworm 1.7.2: zlib and lzo; trixie 1.7.6: zlib, lzo and zstd; snappy in neither).
MAKEDUMPFILE_VERSIONS = ("1.7.2", "1.7.6")
MAKEDUMPFILE_CODECS = {"1.7.2": ("zlib", "lzo"), "1.7.6": ("zlib", "lzo", "zstd")}
CODEC_OPTION = {"zlib": "-c", "lzo": "-l", "snappy": "-p", "zstd": "-z"}
ALL_CODECS = ("none", "zlib", "lzo", "snappy", "zstd")


def unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) a test whose reference tool or input is missing."""
    if IN_CI:
        pytest.fail(f"{reason} [CI=true: scripts/test.sh must provide it]", pytrace=False)
    pytest.skip(reason)


def _run(
    argv: Sequence[str],
    *,
    timeout: float = TIMEOUT,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.PIPE,
    input: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(argv),
            stdin=stdin if input is None else None,
            stdout=stdout,
            stderr=subprocess.PIPE,
            input=input,
            timeout=timeout,
            cwd=cwd,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv[0]} did not finish within {timeout:.0f} s: {' '.join(argv)}")


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


# --------------------------------------------------------------------------- makedumpfile


def makedumpfile_path(version: str) -> str | None:
    """Where makedumpfile ``version`` is on this machine, or None."""
    if version == "1.7.2":
        for cand in ("/usr/sbin/makedumpfile", "/usr/bin/makedumpfile", "/sbin/makedumpfile"):
            if os.access(cand, os.X_OK):
                return cand
        return shutil.which("makedumpfile")
    root = TOOLS / f"makedumpfile-{version}"
    for sub in ("usr/sbin/makedumpfile", "usr/bin/makedumpfile", "sbin/makedumpfile"):
        if os.access(root / sub, os.X_OK):
            return str(root / sub)
    return None


@functools.cache
def makedumpfile_version(version: str) -> str | None:
    """The version makedumpfile ``version``'s binary reports (``-v``), or None when missing."""
    path = makedumpfile_path(version)
    if path is None:
        return None
    out = subprocess.run([path, "-v"], capture_output=True, timeout=30, check=False)
    words = _text(out.stdout + out.stderr).split()
    return words[words.index("version") + 1] if "version" in words else None


def require_makedumpfile(version: str) -> str:
    """The binary of makedumpfile ``version``; skip/fail the test when it is missing."""
    path = makedumpfile_path(version)
    if path is None:
        where = "apt-get install makedumpfile" if version == "1.7.2" else f"{TOOLS}"
        unavailable(f"makedumpfile {version} is not installed ({where}; run scripts/tools.sh)")
    got = makedumpfile_version(version)
    if got != version:
        unavailable(f"{path} is makedumpfile {got}, not {version}")
    return path


def makedumpfile(
    version: str,
    *args: str | os.PathLike[str],
    check: bool = True,
    timeout: float = TIMEOUT,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.PIPE,
) -> subprocess.CompletedProcess[bytes]:
    """Run makedumpfile ``version`` ("1.7.2" from Debian, "1.7.6" from the tools cache).

    With ``check`` a non-zero exit fails the test and shows makedumpfile's messages.
    """
    path = require_makedumpfile(version)
    argv = [path, *map(os.fspath, args)]
    res = _run(argv, timeout=timeout, stdin=stdin, stdout=stdout)
    if check and res.returncode != 0:
        out = _text(res.stdout) if stdout is subprocess.PIPE else ""
        pytest.fail(
            f"makedumpfile {version} exited {res.returncode}: {' '.join(argv)}\n"
            f"{out[-2000:]}{_text(res.stderr)[-3000:]}"
        )
    return res


# --------------------------------------------------------------------------- crash


def crash_path() -> str | None:
    """The crash utility, or None."""
    return shutil.which("crash") or (
        "/usr/bin/crash" if os.access("/usr/bin/crash", os.X_OK) else None
    )


@functools.cache
def crash_version() -> str:
    """crash's version ("8.0.2"), or "missing"."""
    path = crash_path()
    if path is None:
        return "missing"
    out = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False)
    words = _text(out.stdout).split()
    return words[1] if len(words) > 1 and words[0] == "crash" else "unknown"


def crash_osrelease(path: str | os.PathLike[str], *more: str | os.PathLike[str]) -> str:
    """``crash --osrelease DUMP``: the release crash finds in a dump (no vmlinux needed)."""
    exe = crash_path()
    if exe is None:
        unavailable("crash is not installed (apt-get install crash)")
    argv = [exe, "--osrelease", os.fspath(path), *map(os.fspath, more)]
    res = _run(argv, timeout=120)
    out = _text(res.stdout).strip()
    if res.returncode != 0 or not out or out == "unknown":
        pytest.fail(
            f"crash --osrelease rejected {os.fspath(path)} (exit {res.returncode}): "
            f"{out[-1000:]} {_text(res.stderr)[-2000:]}"
        )
    return out.splitlines()[-1].strip()


# --------------------------------------------------------------------------- page readers

_READER_SCRIPT = r"""
import json, struct, sys

def main():
    tool, path, page_size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    raw = sys.stdin.buffer.read()
    pfns = struct.unpack("<%dq" % (len(raw) // 8), raw)
    if tool == "libkdumpfile":
        import kdumpfile
        ctx = kdumpfile.kdumpfile(path)
        kind = kdumpfile.KDUMP_MACHPHYSADDR
        def read(addr):
            return ctx.read(kind, addr, page_size)
        version = getattr(kdumpfile, "__version__", "")
    else:
        import drgn
        prog = drgn.Program()
        prog.set_core_dump(path)
        def read(addr):
            return prog.read(addr, page_size, True)
        version = drgn.__version__
    errors = {}
    status = bytearray(len(pfns))
    with open(out, "wb") as f:
        f.write(bytes(len(pfns)))  # status bytes, rewritten at the end
        for i, pfn in enumerate(pfns):
            try:
                data = bytes(read(pfn * page_size))
            except Exception as e:  # the oracle's own error: recorded, never fatal
                if len(errors) < 50:
                    errors[pfn] = "%s: %s" % (type(e).__name__, e)
                continue
            if len(data) != page_size:
                errors[pfn] = "short read: %d bytes" % len(data)
                continue
            status[i] = 1
            f.write(data)
        f.seek(0)
        f.write(status)
    json.dump({"errors": {str(k): v for k, v in errors.items()}, "failed": len(pfns) - sum(status),
               "version": version}, sys.stdout)

main()
"""


class PageReads(dict[int, bytes]):
    """Pages an oracle read, ``{pfn: bytes}``; ``errors`` says why the others failed."""

    errors: dict[int, str]
    failed: int
    tool: str

    def missing(self, pfns: Iterable[int]) -> list[int]:
        """The pfns of ``pfns`` the oracle could not read."""
        return [p for p in pfns if p not in self]


def _oracle_read(
    tool: str,
    python: str,
    path: str | os.PathLike[str],
    pfns: Iterable[int] | npt.NDArray[np.int64],
    page_size: int,
) -> PageReads:
    arr = np.asarray(list(pfns) if not isinstance(pfns, np.ndarray) else pfns, dtype="<i8")
    with tempfile.NamedTemporaryFile(prefix=f"oracle-{tool}-", suffix=".bin") as tmp:
        res = _run(
            [python, "-c", _READER_SCRIPT, tool, os.fspath(path), str(page_size), tmp.name],
            input=arr.tobytes(),
            timeout=TIMEOUT,
        )
        if res.returncode != 0:
            pytest.fail(
                f"{tool} could not open {os.fspath(path)} (exit {res.returncode}):\n"
                f"{_text(res.stderr)[-3000:]}"
            )
        report = json.loads(res.stdout)
        blob = np.fromfile(tmp.name, dtype=np.uint8)
    status = blob[: arr.size].astype(bool)
    data = blob[arr.size :].reshape(-1, page_size) if page_size else blob[:0]
    out = PageReads()
    for row, pfn in enumerate(arr[status].tolist()):
        out[pfn] = data[row].tobytes()
    out.errors = {int(k): v for k, v in report["errors"].items()}
    out.failed = int(report["failed"])
    out.tool = tool
    return out


@functools.cache
def libkdumpfile_version() -> str:
    """Debian's python3-libkdumpfile version ("0.5.1"), or "missing"."""
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        return "missing"
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "python3-libkdumpfile"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    ver = _text(res.stdout).strip()
    if res.returncode != 0 or not ver:
        return "missing"
    return ver.split(":")[-1].split("-")[0]


def libkdumpfile_read(
    path: str | os.PathLike[str],
    pfns: Iterable[int] | npt.NDArray[np.int64],
    page_size: int = PAGE,
) -> PageReads:
    """Read ``pfns`` (machine physical pages) of a dump with Debian's python3-libkdumpfile."""
    if libkdumpfile_version() == "missing":
        unavailable("python3-libkdumpfile is not installed (apt-get install python3-libkdumpfile)")
    return _oracle_read("libkdumpfile", DEBIAN_PYTHON, path, pfns, page_size)


@functools.cache
def drgn_version() -> str:
    """The PyPI drgn's version, or "missing"."""
    try:
        import drgn
    except ImportError:
        return "missing"
    return str(drgn.__version__)


def drgn_read(
    path: str | os.PathLike[str],
    pfns: Iterable[int] | npt.NDArray[np.int64],
    page_size: int = PAGE,
) -> PageReads:
    """Read ``pfns`` of a dump as physical memory with drgn (``Program.set_core_dump``)."""
    if drgn_version() == "missing":
        unavailable("drgn is not installed (pip install -e '.[test]')")
    return _oracle_read("drgn", sys.executable, path, pfns, page_size)


# --------------------------------------------------------------------------- ground truth

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD = 1
PT_NOTE = 4


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD of a source ELF vmcore."""

    paddr: int
    filesz: int  # bytes present in the file (cut at the end of a truncated file)
    memsz: int
    offset: int


class RefElf:
    """An independent little ELF64 PT_LOAD reader: the ground truth of a source vmcore.

    It reads the program headers with ``struct`` and maps the file with numpy; it shares no code
    with kdumper's reader on purpose. Like makedumpfile it treats a page as present when any
    byte of it lies in a PT_LOAD; bytes of a page outside every PT_LOAD, or past ``p_filesz``,
    read as zero. Where PT_LOADs overlap (the kernel-image segment of /proc/vmcore) the first
    one holding a byte wins.
    """

    def __init__(self, path: str | os.PathLike[str], page_size: int = PAGE) -> None:
        self.path = os.fspath(path)
        self.page_size = page_size
        with open(self.path, "rb") as f:
            head = f.read(_EHDR.size)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                raise ValueError(f"{self.path}: not a little-endian ELF64 file")
            (_, _, _, _, _, phoff, _, _, _, phentsize, phnum, _, _, _) = _EHDR.unpack(head)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
        self.segments: list[Segment] = []
        self.notes = b""
        size = os.path.getsize(self.path)
        for i in range(phnum):
            p_type, _, off, _vaddr, paddr, filesz, memsz, _ = _PHDR.unpack_from(
                table, i * phentsize
            )
            if p_type == PT_NOTE:
                with open(self.path, "rb") as f:
                    f.seek(off)
                    self.notes = f.read(filesz)
            if p_type != PT_LOAD or memsz == 0:
                continue
            self.segments.append(Segment(paddr, min(filesz, max(0, size - off)), memsz, off))
        ps = page_size
        self.max_pfn = max((-(-(s.paddr + s.memsz) // ps) for s in self.segments), default=0)
        self._raw = np.memmap(self.path, dtype=np.uint8, mode="r")

    @functools.cached_property
    def present(self) -> npt.NDArray[np.bool_]:
        """One bool per pfn in ``[0, max_pfn)``: some byte of it is inside a PT_LOAD."""
        flags = np.zeros(self.max_pfn, dtype=bool)
        ps = self.page_size
        for s in self.segments:
            flags[s.paddr // ps : -(-(s.paddr + s.memsz) // ps)] = True
        return flags

    def present_pfns(self) -> npt.NDArray[np.int64]:
        """The pfns inside PT_LOADs, ascending."""
        return np.flatnonzero(self.present).astype(np.int64)

    def pages(self, pfns: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The contents of ``pfns`` as an ``(n, page_size)`` array."""
        pfns = np.asarray(pfns, dtype=np.int64)
        ps = self.page_size
        out = np.zeros((pfns.size, ps), dtype=np.uint8)
        done = np.zeros(pfns.size, dtype=bool)  # filled from one segment's whole page
        covered = np.zeros(pfns.size, dtype=bool)  # inside some segment at all
        for s in self.segments:
            lo, hi = s.paddr // ps, -(-(s.paddr + s.memsz) // ps)
            inseg = (pfns >= lo) & (pfns < hi)
            if not inseg.any():
                continue
            covered |= inseg
            # whole pages with file data: one strided view of the file
            first, stop = -(-s.paddr // ps), (s.paddr + s.filesz) // ps
            whole = inseg & (pfns >= first) & (pfns < stop) & ~done
            if whole.any() and stop > first:
                base = s.offset + first * ps - s.paddr
                view = self._raw[base : base + (stop - first) * ps].reshape(-1, ps)
                out[whole] = view[pfns[whole] - first]
                done |= whole
            # pages past p_filesz read as zeros: nothing to copy, but they are complete
            nodata = inseg & (pfns * ps >= s.paddr + s.filesz) & (pfns * ps >= s.paddr)
            nodata &= (pfns + 1) * ps <= s.paddr + s.memsz
            done |= nodata
            # pages cut by a segment edge: copy the bytes this segment has (few of them)
            for row in np.flatnonzero(inseg & ~done):
                start = int(pfns[row]) * ps
                a, b = max(start, s.paddr), min(start + ps, s.paddr + s.filesz)
                if a < b:
                    seg = out[row, a - start : b - start]
                    if not seg.any():
                        seg[:] = self._raw[s.offset + a - s.paddr : s.offset + b - s.paddr]
        if not covered.all():
            bad = pfns[~covered][:5].tolist()
            raise KeyError(f"pfns {bad} are not in any PT_LOAD of {self.path}")
        return out

    @functools.cached_property
    def zero(self) -> npt.NDArray[np.bool_]:
        """One bool per pfn: the page is present and all zero."""
        flags = np.zeros(self.max_pfn, dtype=bool)
        pfns = self.present_pfns()
        for start in range(0, pfns.size, 16384):
            chunk = pfns[start : start + 16384]
            flags[chunk] = ~self.pages(chunk).any(axis=1)
        return flags


def read_pages(dump: Any, pfns: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """``dump.read_pfn`` of every pfn in ``pfns`` as an ``(n, page_size)`` array."""
    pfns = np.asarray(pfns, dtype=np.int64)
    blob = b"".join(dump.read_pfn(p) for p in pfns.tolist())
    return np.frombuffer(blob, dtype=np.uint8).reshape(pfns.size, dump.page_size)


def mismatches(
    got: npt.NDArray[np.uint8], want: npt.NDArray[np.uint8], pfns: npt.ArrayLike
) -> list[int]:
    """The pfns whose rows differ between two ``(n, page_size)`` arrays."""
    pfns = np.asarray(pfns, dtype=np.int64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    diff = (got != want).any(axis=1)
    return pfns[diff].tolist()


def assert_pages(
    dump: Any, ref: RefElf, pfns: npt.ArrayLike | None = None, *, chunk: int = 8192
) -> int:
    """Every pfn of ``pfns`` (default: everything ``dump`` holds) reads back as in ``ref``.

    Returns the number of pages compared.
    """
    pfns = dump.dumped.pfns() if pfns is None else np.asarray(pfns, dtype=np.int64)
    bad: list[int] = []
    for start in range(0, pfns.size, chunk):
        part = pfns[start : start + chunk]
        bad += mismatches(read_pages(dump, part), ref.pages(part), part)
    assert not bad, (
        f"{len(bad)} of {pfns.size} pages of {dump.path} differ from {ref.path}: "
        f"first pfns {[hex(p) for p in bad[:8]]}"
    )
    return int(pfns.size)


def assert_oracle_pages(reads: PageReads, ref: RefElf, pfns: npt.ArrayLike) -> None:
    """An oracle read every pfn of ``pfns``, and each page equals the source."""
    pfns = np.asarray(pfns, dtype=np.int64)
    missing = reads.missing(pfns.tolist())
    assert not missing, (
        f"{reads.tool} could not read {len(missing)} of {pfns.size} pages, first "
        f"{[hex(p) for p in missing[:8]]}: {list(reads.errors.items())[:3]}"
    )
    got = np.frombuffer(b"".join(reads[p] for p in pfns.tolist()), dtype=np.uint8)
    got = got.reshape(pfns.size, ref.page_size)
    bad = mismatches(got, ref.pages(pfns), pfns)
    assert not bad, f"{reads.tool}: {len(bad)} pages differ, first {[hex(p) for p in bad[:8]]}"


# --------------------------------------------------------------------------- the oracle matrix


@dataclass
class MatrixRow:
    """One oracle check: who wrote which format/codec, which tool did what with it, the outcome."""

    direction: str  # "tool→kdumper" (we read what a tool wrote) or "kdumper→tool"
    fmt: str
    codec: str
    tool: str  # the tool and its version ("makedumpfile 1.7.6")
    check: str  # what the tool did ("read", "-R", "refilter", "--osrelease", ...)
    outcome: str  # "ok", "FAIL", "skip"


MATRIX: list[MatrixRow] = []


@contextmanager
def oracle_check(
    direction: str, fmt: str, codec: str, tool: str, check: str = "read"
) -> Iterator[None]:
    """Record the outcome of the ``with`` body in the oracle matrix."""
    outcome = "FAIL"
    try:
        yield
        outcome = "ok"
    except pytest.skip.Exception:
        outcome = "skip"
        raise
    finally:
        MATRIX.append(MatrixRow(direction, fmt, codec, tool, check, outcome))


def matrix_markdown(rows: Sequence[MatrixRow] = MATRIX) -> str:
    """The oracle matrix as markdown: a row per direction/format/codec, a column per tool.

    A cell lists the checks that passed; failed and skipped ones are marked ``FAIL:`` / ``skip:``.
    """
    if not rows:
        return ""
    tools = sorted({r.tool for r in rows})
    cells: dict[tuple[str, str, str], dict[str, dict[str, str]]] = {}
    rank = {"FAIL": 2, "skip": 1, "ok": 0}
    for r in rows:
        cell = cells.setdefault((r.direction, r.fmt, r.codec), {}).setdefault(r.tool, {})
        old = cell.get(r.check)
        if old is None or rank[r.outcome] > rank[old]:
            cell[r.check] = r.outcome
    lines = [
        "| direction | format | codec | " + " | ".join(tools) + " |",
        "|---|---|---|" + "---|" * len(tools),
    ]
    for key in sorted(cells):
        texts = []
        for tool in tools:
            checks = cells[key].get(tool, {})
            parts = [c if o == "ok" else f"{o}:{c}" for c, o in sorted(checks.items())]
            texts.append(", ".join(parts) or "–")
        lines.append("| " + " | ".join(key) + " | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def write_matrix(path: str | os.PathLike[str]) -> None:
    """Write the oracle matrix of this run (markdown) to ``path``."""
    text = matrix_markdown()
    if text:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        Path(path).write_text(f"<!-- oracle matrix of a test run, {stamp} -->\n{text}")


# --------------------------------------------------------------------------- our outputs

OUR_FORMATS = ("elf", "kdump", "flat-kdump", "flat-elf", "split-kdump")
SPLIT_PARTS = 3


def write_ours(src: str | os.PathLike[str], out: Path, fmt: str, codec: str = "none") -> list[Path]:
    """Convert ``src`` with kdumper's library writers; returns the file(s) written.

    ``fmt``: "elf", "kdump", "flat-kdump" / "flat-elf" (flattened stream of either), or
    "split-kdump" (:data:`SPLIT_PARTS` parts named ``out.0``, ``out.1``, ...).
    """
    import kdumper
    from kdumper.dump.io import FileSink

    with kdumper.open(os.fspath(src)) as dump:
        if fmt == "split-kdump":
            from kdumper.dump.split import write_split

            parts = [out.with_name(f"{out.name}.{i}") for i in range(SPLIT_PARTS)]
            write_split([str(p) for p in parts], dump, codec=codec)
            return parts
        if fmt in ("kdump", "elf"):
            with FileSink(out) as sink:
                _write(sink, dump, fmt, codec)
            return [out]
        if fmt in ("flat-kdump", "flat-elf"):
            from kdumper.dump.flattened import FlatSink

            with open(out, "wb") as stream, FlatSink(stream, name=str(out)) as sink:
                _write(sink, dump, fmt.removeprefix("flat-"), codec)
            return [out]
    raise ValueError(f"unknown output format {fmt!r}")


def _write(sink: Any, dump: Any, fmt: str, codec: str) -> None:
    if fmt == "kdump":
        from kdumper.dump.diskdump import write_kdump

        write_kdump(sink, dump, codec=codec)
    else:
        from kdumper.dump.elf import write_elf

        write_elf(sink, dump)


class OurOutputs:
    """Our conversions of one source vmcore, each written once per session on first use."""

    def __init__(self, src: Path, workdir: Path) -> None:
        self.src = src
        self.workdir = workdir
        self._made: dict[tuple[str, str], list[Path]] = {}

    def get(self, fmt: str, codec: str = "none") -> list[Path]:
        """The file(s) of ``src`` converted to ``fmt`` with ``codec`` by the library."""
        key = (fmt, codec if fmt.endswith("kdump") else "none")
        if key not in self._made:
            out = self.workdir / f"ours-{key[0]}-{key[1]}"
            self._made[key] = write_ours(self.src, out, *key)
        return self._made[key]

    def one(self, fmt: str, codec: str = "none") -> Path:
        """The single file of a non-split conversion."""
        (path,) = self.get(fmt, codec)
        return path


# --------------------------------------------------------------------------- tiny crafted vmcores

_NHDR = struct.Struct("<III")
DIRECT_MAP = 0xFFFF888000000000
TINY_RELEASE = "6.1.0-tiny"


def elf_note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One little-endian ELF note (name NUL-terminated; both fields 4-byte aligned)."""
    name += b"\0"

    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    return _NHDR.pack(len(name), len(desc), ntype) + pad(name) + pad(desc)


def vmcoreinfo_text(release: str = TINY_RELEASE, extra: str = "") -> bytes:
    """A minimal VMCOREINFO note text for an x86_64 kernel."""
    return (
        f"OSRELEASE={release}\nPAGESIZE=4096\nCRASHTIME=1700000000\nKERNELOFFSET=0\n"
        "NUMBER(phys_base)=0\nSYMBOL(swapper_pg_dir)=ffffffff82000000\n"
        "NUMBER(pgtable_l5_enabled)=0\n" + extra
    ).encode()


def tiny_notes(cpus: int = 2, vmcoreinfo: bytes | None = None) -> bytes:
    """NT_PRSTATUS notes for ``cpus`` CPUs (rip/rsp set) and a VMCOREINFO note."""
    out = b""
    for cpu in range(cpus):
        desc = bytearray(336)
        struct.pack_into("<i", desc, 32, cpu + 1)  # pr_pid
        struct.pack_into("<Q", desc, 112 + 16 * 8, 0xFFFFFFFF81000000 + cpu)  # rip
        struct.pack_into("<Q", desc, 112 + 19 * 8, 0xFFFFC90000004000 + cpu)  # rsp
        out += elf_note(b"CORE", 1, bytes(desc))
    return out + elf_note(b"VMCOREINFO", 0, vmcoreinfo_text() if vmcoreinfo is None else vmcoreinfo)


@dataclass
class Load:
    """One PT_LOAD of a crafted ELF: ``data`` at ``paddr``; overrides make it absurd."""

    paddr: int
    data: bytes
    memsz: int | None = None
    vaddr: int | None = None
    offset: int | None = None  # None: placed after the previous data, page aligned
    filesz: int | None = None


def build_elf(
    loads: Sequence[Load],
    notes: bytes,
    *,
    e_machine: int = 62,
    e_type: int = 4,
    ei_class: int = 2,
    phentsize: int = 56,
    phnum: int | None = None,
) -> bytes:
    """A little-endian ELF64 core: PT_NOTE then the PT_LOADs, data page aligned."""
    n = 1 + len(loads)
    phoff = 64
    notes_off = phoff + n * 56
    pos = -(-(notes_off + len(notes)) // PAGE) * PAGE
    phdrs = [_PHDR.pack(PT_NOTE, 0, notes_off, 0, 0, len(notes), len(notes), 0)]
    blobs: list[tuple[int, bytes]] = [(notes_off, notes)]
    for ld in loads:
        off = pos if ld.offset is None else ld.offset
        filesz = len(ld.data) if ld.filesz is None else ld.filesz
        memsz = len(ld.data) if ld.memsz is None else ld.memsz
        vaddr = (DIRECT_MAP + ld.paddr) % (1 << 64) if ld.vaddr is None else ld.vaddr
        phdrs.append(_PHDR.pack(PT_LOAD, 7, off, vaddr, ld.paddr, filesz, memsz, PAGE))
        if ld.offset is None:
            blobs.append((off, ld.data))
            pos = -(-(off + len(ld.data)) // PAGE) * PAGE
    ident = b"\x7fELF" + bytes([ei_class, 1, 1, 0]) + bytes(8)
    ehdr = _EHDR.pack(
        ident, e_type, e_machine, 1, 0, phoff, 0, 0, 64, phentsize,
        n if phnum is None else phnum, 0, 0, 0,
    )  # fmt: skip
    size = max([64 + n * 56] + [o + len(b) for o, b in blobs])
    out = bytearray(size)
    out[:64] = ehdr
    out[phoff : phoff + n * 56] = b"".join(phdrs)
    for off, blob in blobs:
        out[off : off + len(blob)] = blob
    return bytes(out)


def tiny_pages(npages: int, first_pfn: int = 0, seed: int = 1, random_every: int = 4) -> bytes:
    """``npages`` varied pages: zero, constant, repetitive text and (every Nth) random bytes."""
    rng = np.random.default_rng(seed + first_pfn)
    out = bytearray()
    for i in range(npages):
        pfn = first_pfn + i
        kind = pfn % random_every if random_every else pfn % 3
        if kind == 0:
            out += bytes(PAGE)
        elif kind == 1:
            out += bytes([pfn & 0xFF]) * PAGE
        elif kind == 2:
            out += (f"pfn {pfn:#x} says hello; ".encode() * PAGE)[:PAGE]
        else:
            out += rng.integers(0, 256, PAGE, dtype=np.uint8).tobytes()
    return bytes(out)


def tiny_elf(*, random_every: int = 4, notes: bytes | None = None) -> bytes:
    """A valid 20-page x86_64 ELF vmcore: pfns 0-7 and 16-27 (a hole between), VMCOREINFO."""
    loads = [
        Load(0, tiny_pages(8, 0, random_every=random_every)),
        Load(16 * PAGE, tiny_pages(12, 16, random_every=random_every)),
    ]
    return build_elf(loads, tiny_notes() if notes is None else notes)


@contextmanager
def limited_address_space(headroom: int = 4 << 30) -> Iterator[None]:
    """Cap this process's address space at its current size + ``headroom`` (RLIMIT_AS).

    A corrupt header that claims terabytes then raises :class:`MemoryError` at once instead of
    making the machine swap; the limit is restored afterwards.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    cap = vm_pages * os.sysconf("SC_PAGE_SIZE") + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
