"""Compression in worker processes (collect/workers.py): same bytes as in one process, errors
raised as the worker raised them, a dead worker named, nothing left running afterwards.

All on the synthetic 6.1 vmcore of tests/synth.py; the reference is the in-process encoder
(``threads=1``), itself checked page by page against the source in tests/test_pipeline.py.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.codecs import CODECS, get_codec
from kdumper.collect import workers as workers_mod
from kdumper.collect.encode import BatchEncoder
from kdumper.collect.pipeline import PageReader, SaveOptions, save, split_paths
from kdumper.collect.source import open_for_save
from kdumper.collect.workers import EncodeWorkers, WorkerError
from kdumper.errors import DumpIOError, ExitCode, PageIncompleteError
from kdumper.kernel.pages import PageClass


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.synth import make_vmcore

    path = tmp_path_factory.mktemp("workers") / "vmcore"
    return path, make_vmcore(path, mem_mib=48, seed=22)


def _codec_or_skip(codec: str) -> None:
    try:
        get_codec(codec).available()
    except kdumper.errors.MissingDependencyError:
        pytest.skip(f"{codec} library missing")


def _save(path: Path, out: Path, **opts: Any) -> Any:
    with open_for_save(path) as dump:
        return save(dump, str(out), SaveOptions(**opts))


def _no_children() -> bool:
    """No child process of this one is left (running or unreaped)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("level", [31, 1])
def test_workers_write_the_same_bytes(
    synth: tuple[Path, Any], tmp_path: Path, codec: str, level: int
) -> None:
    _codec_or_skip(codec)
    path, _ = synth
    one = tmp_path / "one"
    r1 = _save(path, one, dump_level=level, codec=codec, threads=1, batch_pages=37)
    for n in (2, 3):
        many = tmp_path / f"many{n}"
        rn = _save(path, many, dump_level=level, codec=codec, threads=n, batch_pages=37)
        assert many.read_bytes() == one.read_bytes(), f"{n} workers"
        assert rn.summary()["pages"] == r1.summary()["pages"]
        assert (rn.bytes_in, rn.zero_pages) == (r1.bytes_in, r1.zero_pages)
    assert _no_children()


def test_slots_are_not_reused_before_the_writer_wrote_them(
    synth: tuple[Path, Any], tmp_path: Path
) -> None:
    """Tiny batches: the writer holds many of them (1 MiB flush threshold) while the workers
    cycle through their 4 slots, so every slot comes round while its payload is still held."""
    path, _ = synth
    one, many = tmp_path / "one", tmp_path / "many"
    _save(path, one, dump_level=0, codec="zlib", threads=1, batch_pages=3)
    _save(path, many, dump_level=0, codec="zlib", threads=2, batch_pages=3)
    assert many.read_bytes() == one.read_bytes()


def test_flat_stream_and_split_with_workers(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = synth
    from kdumper.dump.flattened import reassemble_flat

    rebuilt = []
    for n in (1, 2):
        stream = io.BytesIO()
        with open_for_save(path) as dump:
            save(dump, stream, SaveOptions(codec="lzo", format="flat", threads=n))
        flat = tmp_path / f"flat{n}"
        flat.write_bytes(stream.getvalue())
        # the writer may flush at other moments (a slot coming round), so the records are cut
        # differently; the file they describe is the same
        reassemble_flat(str(flat), str(tmp_path / f"re{n}"))
        rebuilt.append((tmp_path / f"re{n}").read_bytes())
    assert rebuilt[0] == rebuilt[1]
    parts = {}
    for n in (1, 2):
        out = tmp_path / f"part{n}"
        _save(path, out, codec="zstd", split=3, threads=n)
        parts[n] = [Path(p).read_bytes() for p in split_paths(str(out), 3)]
    assert parts[1] == parts[2]
    assert _no_children()


def test_lost_pages_with_workers(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, _ = synth
    cut = tmp_path / "cut"
    shutil.copyfile(path, cut)
    os.truncate(cut, os.path.getsize(cut) - 3 * 1024 * 1024)
    outs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        result = _save(cut, out, dump_level=0, codec="lzo", threads=n)
        assert result.incomplete and result.lost_pages > 0
        outs.append((out.read_bytes(), result.lost_pages))
    assert outs[0] == outs[1]


class _FailingRead:
    """A page reader that fails once it reaches ``pfn`` (in whichever process reads it)."""

    def __init__(self, dump: Any, pfn: int, how: str) -> None:
        self.reader = PageReader(dump, 64)
        self.pfn = pfn
        self.how = how

    def __call__(self, pfns: Any) -> tuple[memoryview, list[int]]:
        if self.pfn in pfns:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "bug":
                raise ZeroDivisionError("a bug in a worker")
            if self.how == "unpicklable":

                class Local(Exception):  # a class pickle cannot find by name
                    pass

                raise Local("odd")
            raise DumpIOError("read error at offset 0x1000: Input/output error", path="/dev/x")
        return self.reader.read(pfns)


def _run_pool(dump: Any, read: Any, batches: list[Any]) -> int:
    encoder = BatchEncoder(get_codec("lzo"), dump.page_size, True)
    done = 0
    with EncodeWorkers(read, encoder, workers=2, batch_pages=64) as pool:
        for pfns in batches:
            if pool.in_flight >= pool.slots:
                pool.result()
                done += 1
            pool.submit(pfns)
        while pool.in_flight:
            pool.result()
            done += 1
    return done


def _batches(dump: Any, count: int) -> list[Any]:
    pfns = dump.present.pfns()[: count * 64]
    return [pfns[i : i + 64] for i in range(0, len(pfns), 64)]


@pytest.mark.parametrize(
    ("how", "error", "text"),
    [
        ("io", DumpIOError, "/dev/x: read error at offset 0x1000: Input/output error"),
        ("bug", ZeroDivisionError, "a bug in a worker"),  # the CLI calls it an internal error
        ("unpicklable", WorkerError, "compression worker failed: Local: odd"),
        ("kill", WorkerError, "was killed by SIGKILL in the middle of the dump"),
    ],
)
def test_worker_errors_reach_the_parent(
    synth: tuple[Path, Any], how: str, error: type[Exception], text: str
) -> None:
    path, _ = synth
    with open_for_save(path) as dump:
        batches = _batches(dump, 12)
        assert len(batches) == 12
        bad_pfn = int(batches[7][5])
        with pytest.raises(error) as exc:
            _run_pool(dump, _FailingRead(dump, bad_pfn, how), batches)
    assert text in str(exc.value)
    if how == "io":
        assert exc.value.exit_code == ExitCode.IO
    assert _no_children()


def test_a_failed_save_keeps_what_was_written_and_leaves_no_workers(
    synth: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error in a worker ends the save with that error; the output stays incomplete."""
    path, _ = synth
    parent = os.getpid()
    real = PageReader.read

    def read(self: PageReader, pfns: Any) -> Any:
        if os.getpid() != parent and 5000 in pfns:
            raise DumpIOError("read error at offset 0x5000000: Input/output error", path="/x")
        return real(self, pfns)

    monkeypatch.setattr(PageReader, "read", read)
    out = tmp_path / "out"
    with pytest.raises(DumpIOError, match="Input/output error"):
        _save(path, out, dump_level=0, codec="lzo", threads=2)
    assert not out.exists()
    assert (tmp_path / "out-incomplete").exists()
    with kdumper.open(str(tmp_path / "out-incomplete")) as o:
        assert o.facts().incomplete
    assert _no_children()


def test_kdumper_errors_survive_pickling() -> None:
    import pickle

    for err in (
        DumpIOError("read error", path="/x"),
        PageIncompleteError(7),
        kdumper.errors.MissingDependencyError("lzo", "python-lzo", "pip install"),
        kdumper.errors.TruncatedDumpError("short", path="p"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert str(back) == str(err) and back.fields == err.fields
        assert back.exit_code == err.exit_code


def test_workers_leave_with_the_parent(synth: tuple[Path, Any]) -> None:
    """A worker whose parent is gone (its task pipe closed) exits by itself."""
    path, _ = synth
    with open_for_save(path) as dump:
        encoder = BatchEncoder(get_codec("lzo"), dump.page_size, True)
        reader = PageReader(dump, 16)
        pool = EncodeWorkers(reader.read, encoder, workers=2, batch_pages=16)
        pids = pool.pids
        assert len(pids) == 2
        for _pid, task_w, _r in pool._procs:
            os.close(task_w)  # what the kernel does when the parent dies
        for pid in pids:
            done, status = os.waitpid(pid, 0)
            assert done == pid and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        pool._procs = []
        pool.close()


def test_one_cpu_means_no_workers(
    synth: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """threads=1 (a capture kernel with nr_cpus=1) never forks."""
    path, _ = synth

    def no_fork() -> int:
        raise AssertionError("forked")

    monkeypatch.setattr(workers_mod.os, "fork", no_fork)
    _save(path, tmp_path / "out", codec="lzo", threads=1)


def test_ctrl_c_stops_the_workers_and_keeps_what_was_written(tmp_path: Path) -> None:
    """SIGINT to the terminal's process group mid-save: exit 130 with one line, no process left,
    the output kept as OUT-incomplete and readable as an incomplete dump."""
    import subprocess
    import sys
    import time

    from tests.synth import make_vmcore

    vmcore = tmp_path / "vmcore"
    make_vmcore(vmcore, mem_mib=1024, seed=23)  # a few seconds of zlib on two workers
    out = tmp_path / "out"
    code = "import sys; from kdumper.cli.main import run; sys.argv[0] = 'kdumper'; run()"
    argv = [sys.executable, "-c", code, "save", str(vmcore), str(out), "-d", "0", "-c", "zlib",
            "--threads", "2", "--no-progress"]  # fmt: skip

    def foreground() -> None:  # as a shell's foreground job: SIGINT not ignored, own group
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setsid()

    proc = subprocess.Popen(argv, preexec_fn=foreground, stderr=subprocess.PIPE, text=True)
    group: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "out-incomplete").exists():
        time.sleep(0.02)
    # the parent, its two workers and the helper that compressed the kernel image at start
    # (kdumper.collect.early: it waits, frozen or paused, until the save is done)
    while time.monotonic() < deadline and len(group) < 4:
        ps = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
        group = ps.stdout.split()
        time.sleep(0.02)
    assert len(group) == 4 and proc.poll() is None, "the save ended before it could be stopped"
    time.sleep(0.3)  # some batches written
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["kdumper: interrupted"]
    time.sleep(0.1)
    left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
    # the killed early helper may linger a moment as init's zombie (the parent does not wait
    # for it to free its memory): nothing runs, nothing is held
    assert [pid for pid in left.stdout.split() if not _zombie(pid)] == []
    assert not out.exists()
    with kdumper.open(str(tmp_path / "out-incomplete")) as o:
        assert o.facts().incomplete


def _zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True  # reaped meanwhile


class _FakeDump:
    """Just what WindowClassifier reads: the present bitmap and the pfn count."""

    def __init__(self, windows: int) -> None:
        from kdumper.dump.bitmap import Bitmap
        from kdumper.kernel.pages import WINDOW_PFNS

        self.max_pfn = windows * WINDOW_PFNS
        self.present = Bitmap.from_bool(np.ones(self.max_pfn, np.bool_))


class _FakeClassifier:
    """Window 1 holds a user hugetlb page four windows long (it covers windows 1-4); the windows
    it covers hold pages that would be free or user on their own; every window has a user page
    at 5 and a buddy block of order 3 at 64."""

    def __init__(self, dump: _FakeDump) -> None:
        from types import SimpleNamespace

        self.dump = dump
        self.layout = SimpleNamespace(max_order=11)

    def features(self, start: int, stop: int, present: Any, *, skip_free: bool = False) -> Any:
        from kdumper.kernel.pages import WINDOW_PFNS
        from tests.test_pages import _mask, make_features

        n = stop - start
        order = np.zeros(n, np.int64)
        buddy_order = np.zeros(n, np.int64)
        buddy_order[64] = 3
        user = _mask(n, 5)
        if start == WINDOW_PFNS:
            order[0] = WINDOW_PFNS.bit_length() + 1  # four windows
            user[0] = True
        return make_features(n, start, user=user, buddy=_mask(n, 64), buddy_order=buddy_order,
                             order=order)  # fmt: skip


@pytest.mark.parametrize("level", [31, 8, 16, 1])
def test_filter_windows_in_workers_follow_ranges_across_windows(level: int) -> None:
    """Workers classify each window on its own; where a range from an earlier window runs into
    one, the parent classifies it again in order: the result is the in-order pass's."""
    from kdumper.collect.pipeline import _classify_in_workers
    from kdumper.kernel.pages import WindowClassifier

    dump = _FakeDump(7)
    fake: Any = _FakeClassifier(dump)
    spans = WindowClassifier(fake, level).windows()
    assert len(spans) == 7
    serial = WindowClassifier(fake, level)
    want = [serial.in_order(lo, hi) for lo, hi in spans]
    encoder = BatchEncoder(get_codec("lzo"), 4096, True)
    with EncodeWorkers(lambda p: (b"", []), encoder, workers=2, batch_pages=16,
                       classify=WindowClassifier(fake, level).alone) as pool:  # fmt: skip
        got = list(_classify_in_workers(WindowClassifier(fake, level), spans, pool))
    assert [g.start for g in got] == [w.start for w in want]
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.cls, w.cls), g.start
        assert (g.unreadable, g.all_free) == (w.unreadable, w.all_free)
    if level & 8:  # the hugetlb page covers windows 1-4 whole
        assert all((w.cls == PageClass.USER).all() for w in want[1:5])
    assert _no_children()
