"""Host-side tests of the fixes the real capture failures in QEMU called for
(tests/vm/test_capture_failures.py):

* a kdump-compressed file whose writer dies midway (SIGKILL of the capture, power loss) is
  flagged incomplete in its header: the flag is set when writing begins and cleared by the
  writer's ``finish`` only;
* ``kdumper status`` takes only a directory holding a dump for the last dump (an ext4 target's
  ``lost+found`` is not one).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kdumper
from kdumper.dump.diskdump import STATUS_INCOMPLETE, write_kdump
from kdumper.dump.io import FileSink
from kdumper.errors import PageIncompleteError
from kdumper.host.status import last_dump
from tests.synth import make_vmcore


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vmcore") / "vmcore.elf"
    make_vmcore(path, mem_mib=32, seed=5)
    return path


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of the writer runs after it."""


class DyingSink(FileSink):
    """A file sink whose process "dies" once ``limit`` bytes have been written."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(path)
        self.limit = limit
        self.written = 0

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        if self.written + len(data) > self.limit:
            raise _Killed
        super().write_at(offset, data)
        self.written += len(data)


def _status(path: Path) -> int:
    with kdumper.open(str(path)) as dump:
        return int(dump.header.status)  # type: ignore[attr-defined]


def test_writer_killed_midway_leaves_a_file_flagged_incomplete(
    vmcore: Path, tmp_path: Path
) -> None:
    out = tmp_path / "vmcore"
    sink = DyingSink(out, limit=1 << 20)
    with pytest.raises(_Killed), kdumper.open(str(vmcore)) as src:
        write_kdump(sink, src, codec="none", dump_level=0)
    os.close(sink._fd)  # the process is gone: no finish, no abort
    cut = Path(sink.tmp_path)
    assert cut.name == "vmcore-incomplete" and not out.exists()
    assert _status(cut) & STATUS_INCOMPLETE
    with kdumper.open(str(cut)) as dump, kdumper.open(str(vmcore)) as src:
        assert dump.incomplete
        pfns = dump.dumped.pfns(0, dump.max_pfn).tolist()
        readable = lost = 0
        for pfn in pfns:
            try:
                page = dump.read_pfn(pfn)
            except PageIncompleteError:
                lost += 1
                continue
            assert page == src.read_pfn(pfn), hex(pfn)
            readable += 1
        assert readable > 0 and lost > 0, (readable, lost)


def test_complete_file_is_not_flagged(vmcore: Path, tmp_path: Path) -> None:
    out = tmp_path / "vmcore"
    with kdumper.open(str(vmcore)) as src:
        sink = FileSink(out)
        result = write_kdump(sink, src, codec="zlib", dump_level=31)
        sink.finish()
    assert not result.incomplete
    assert not _status(out) & STATUS_INCOMPLETE
    with kdumper.open(str(out)) as dump:
        assert not dump.incomplete


def _dump_dir(base: Path, name: str, files: dict[str, bytes], mtime: int) -> Path:
    d = base / name
    d.mkdir()
    for fname, data in files.items():
        (d / fname).write_bytes(data)
    os.utime(d, (mtime, mtime))
    return d


def test_last_dump_skips_lost_and_found_and_other_directories(tmp_path: Path) -> None:
    base = tmp_path / "crash"
    base.mkdir()
    dump = _dump_dir(
        base,
        "kdguest-2026-01-02-03-04-05",
        {"vmcore-dmesg.txt": b"log", "vmcore-incomplete": b""},
        1_700_000_000,
    )
    # newer, but not dumps: mkfs.ext4's lost+found, an empty or unrelated directory
    _dump_dir(base, "lost+found", {}, 1_800_000_000)
    _dump_dir(base, "notes", {"README": b"x"}, 1_800_000_001)
    found = last_dump(str(base))
    assert found is not None and found.path == str(dump)
    assert found.incomplete and found.files == ("vmcore-dmesg.txt", "vmcore-incomplete")


def test_last_dump_knows_kdump_tools_directories(tmp_path: Path) -> None:
    base = tmp_path / "crash"
    base.mkdir()
    old = _dump_dir(base, "kdguest-2026-01-02-03-04-05", {"vmcore": b""}, 1_700_000_000)
    new = _dump_dir(
        base, "202602030405", {"dmesg.202602030405": b"", "dump-incomplete": b""}, 1_700_000_100
    )
    found = last_dump(str(base))
    assert found is not None and found.path == str(new) and found.incomplete
    os.utime(new, (1_600_000_000, 1_600_000_000))
    found = last_dump(str(base))
    assert found is not None and found.path == str(old) and not found.incomplete


def test_last_dump_none_on_a_fresh_filesystem(tmp_path: Path) -> None:
    (tmp_path / "lost+found").mkdir()
    assert last_dump(str(tmp_path)) is None
    assert last_dump(str(tmp_path / "missing")) is None
