"""The early helper (kdumper.collect.early): the kernel image, compressed while ``save`` starts,
gives the same dump byte for byte, whatever it finished, whatever happened to it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper.errors
from kdumper.codecs import get_codec
from kdumper.collect import early as early_mod
from kdumper.collect import pipeline
from kdumper.collect.early import EarlyPages, kernel_image_plan, start_early
from kdumper.collect.encode import BatchEncoder
from kdumper.collect.pipeline import SaveOptions, _early_batch, save
from kdumper.collect.source import open_for_save
from kdumper.collect.workers import EncodeWorkers
from kdumper.dump.open import open_dump
from tests.elf_helpers import KERNEL_MAP, Load, pack_elf, page_pattern
from tests.test_workers import _codec_or_skip
from tests.test_workers import _save as save_with

PAGE = 4096
CODECS = ["lzo", "zlib", "zstd", "snappy"]
# the image: pfns 32..160 of the RAM segment, also mapped at the kernel's text address
IMAGE = (32, 128)

needs_two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="the helper only starts with two CPUs or more"
)


def _ram() -> bytes:
    """256 pages: text-like, repeated, random (incompressible), 0xcc-filled and zero pages."""
    rng = np.random.default_rng(7)
    pages = []
    for pfn in range(256):
        kind = pfn % 7
        if kind == 0:
            pages.append(bytes(PAGE))
        elif kind == 1:
            pages.append(rng.integers(0, 256, PAGE, dtype=np.uint8).tobytes())
        elif kind == 2:
            pages.append(b"\xcc" * PAGE)
        else:
            pages.append(page_pattern(pfn))
    return b"".join(pages)


def _image_elf(path: Path, *, machine: int = 62, text: int = 1, cut: int = 0) -> Path:
    ram = _ram()
    first, count = IMAGE
    loads = [Load(0, ram)]
    for i in range(text):
        image = ram[first * PAGE : (first + count) * PAGE]
        loads.append(Load(first * PAGE, image, vaddr=KERNEL_MAP + 0x1000000 + i * (1 << 24)))
    data = pack_elf(loads, machine=machine)
    path.write_bytes(data[: len(data) - cut] if cut else data)
    return path


def _finished(early: EarlyPages, timeout: float = 30) -> EarlyPages:
    """Wait until the helper has done every page (then stop it)."""
    deadline = time.monotonic() + timeout
    while early_mod._COUNT.unpack_from(early._map, 0)[0] < early.npages:
        assert time.monotonic() < deadline, "the helper did not finish"
        time.sleep(0.005)
    early.stop()
    return early


def _no_children(timeout: float = 5) -> bool:
    """No child process of this one is left (the killed helpers reaped once they are gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_the_plan_reads_the_image_where_the_dump_reader_does(tmp_path: Path) -> None:
    path = _image_elf(tmp_path / "vmcore")
    fd = os.open(path, os.O_RDONLY)
    try:
        plan = kernel_image_plan(fd)
    finally:
        os.close(fd)
    assert plan is not None and (plan.first_pfn, plan.npages) == IMAGE
    with open_dump(path) as dump:  # the RAM segment, not the text segment's own copy
        assert dump.page_run_offset(*IMAGE) == plan.file_offset  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("what", "kwargs"),
    [
        ("another architecture", {"machine": 183}),
        ("no kernel text segment", {"text": 0}),
        ("two kernel text segments", {"text": 2}),
        ("the image cut off the end of the file", {"cut": (128 + 256 - 20) * PAGE}),
    ],
)
def test_no_plan_for_other_dumps(tmp_path: Path, what: str, kwargs: dict[str, Any]) -> None:
    path = _image_elf(tmp_path / "vmcore", **kwargs)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert kernel_image_plan(fd) is None, what
    finally:
        os.close(fd)


def test_a_cut_short_image_is_planned_as_far_as_the_file_holds_it(tmp_path: Path) -> None:
    # the text segment's copy (last in the file) is gone, and the RAM segment past pfn 100
    path = _image_elf(tmp_path / "vmcore", cut=(128 + 256 - 100) * PAGE)
    fd = os.open(path, os.O_RDONLY)
    try:
        plan = kernel_image_plan(fd)
    finally:
        os.close(fd)
    assert plan is not None and (plan.first_pfn, plan.npages) == (32, 100 - 32)


def test_no_helper_where_it_cannot_help(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a dump\n" * 100)
    assert start_early(str(text), "lzo", exclude_zero=True) is None
    assert start_early(str(tmp_path / "missing"), "lzo", exclude_zero=True) is None
    assert start_early(str(_image_elf(tmp_path / "v")), "none", exclude_zero=True) is None
    assert _no_children()


@needs_two_cpus
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("exclude_zero", [True, False])
def test_the_helpers_pages_are_the_workers_pages(
    tmp_path: Path, codec: str, exclude_zero: bool
) -> None:
    """Every page as BatchEncoder stores it (zero, raw, compressed), for any subset of the
    image: runs back to back (a view of the payloads) and runs with gaps (filtered out)."""
    _codec_or_skip(codec)
    path = _image_elf(tmp_path / "vmcore")
    early = start_early(str(path), codec, exclude_zero=exclude_zero)
    assert early is not None
    try:
        _finished(early)
        ram = _ram()
        encoder = BatchEncoder(get_codec(codec), PAGE, exclude_zero)
        first, count = IMAGE
        rng = np.random.default_rng(3)
        subsets = [
            np.arange(first, first + count),
            np.arange(first + 5, first + 40),
            np.sort(rng.choice(np.arange(first, first + count), 50, replace=False)),
        ]
        for pfns in subsets:
            got, _end = _early_batch(early, pfns.astype(np.int64))
            want = encoder.encode(b"".join(ram[p * PAGE : (p + 1) * PAGE] for p in pfns.tolist()))
            assert got.sizes.tolist() == want.sizes.tolist()
            assert got.flags.tolist() == want.flags.tolist()
            assert bytes(got.data) == bytes(want.data)
            assert got.zero_count == want.zero_count
            if want.zero is not None:
                assert got.zero is not None and got.zero.tolist() == want.zero.tolist()
    finally:
        early.close()
    assert _no_children()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.synth import make_vmcore

    path = tmp_path_factory.mktemp("early") / "vmcore"
    return path, make_vmcore(path, mem_mib=48, seed=23)


def _save(path: Path, out: Path, **opts: Any) -> Any:
    return save_with(path, out, **{"threads": 2, **opts})


@needs_two_cpus
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("level", [31, 0])
def test_save_with_the_helper_writes_the_same_bytes(
    synth: tuple[Path, Any], tmp_path: Path, codec: str, level: int
) -> None:
    _codec_or_skip(codec)
    path, info = synth
    plain = _save(path, tmp_path / "plain", dump_level=level, codec=codec)
    assert plain.early_pages == 0
    early = _finished(start_early(str(path), codec, exclude_zero=bool(level & 1)))  # type: ignore[arg-type]
    res = _save(path, tmp_path / "early", dump_level=level, codec=codec, early=early)
    assert res.early_pages == info.kernel_size // PAGE  # every image page is kept
    assert (tmp_path / "early").read_bytes() == (tmp_path / "plain").read_bytes()
    assert _no_children()


@needs_two_cpus
@pytest.mark.parametrize(("cap", "split"), [(16 << 20, 0), (1, 0), (16 << 20, 3)])
def test_the_workers_results_are_taken_while_the_helpers_pages_are_written(
    synth: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int, split: int
) -> None:
    """While the writer writes the helper's pages, the workers' next results are taken as they
    come (payloads copied out of the slots, at most TAKEN_BYTES of them) and the slots get the
    next batches; the bytes written are the same."""
    path, _info = synth
    opts: dict[str, Any] = {"codec": "lzo", "batch_pages": 16, "split": split}
    _save(path, tmp_path / "plain", **opts)
    took = 0
    ready = EncodeWorkers.ready

    def wait_then_ready(self: EncodeWorkers) -> bool:  # a result is taken as soon as it is done
        nonlocal took
        if self.in_flight:
            select.select([self._procs[self._received % self.workers][2]], [], [], 10)
        now = ready(self)
        took += now
        return now

    monkeypatch.setattr(EncodeWorkers, "ready", wait_then_ready)
    monkeypatch.setattr(pipeline, "TAKEN_BYTES", cap)
    early = _finished(start_early(str(path), "lzo", exclude_zero=True))  # type: ignore[arg-type]
    res = _save(path, tmp_path / "early", early=early, **opts)
    assert res.early_pages == early.npages
    if cap == 1:
        assert took == 1  # one result's payload is over the bound until it is written
    else:
        assert took >= 4  # more than the slots' worth
    names = [f"{{}}.{i}" for i in range(1, split + 1)] if split else ["{}"]
    for name in names:
        early_out = Path(name.format(tmp_path / "early"))
        assert early_out.read_bytes() == Path(name.format(tmp_path / "plain")).read_bytes()
    assert _no_children()


@needs_two_cpus
@pytest.mark.parametrize("done", [0, 1, 37, 1000])
def test_what_the_helper_did_not_finish_goes_to_the_workers(
    synth: tuple[Path, Any], tmp_path: Path, done: int
) -> None:
    path, _info = synth
    _save(path, tmp_path / "plain", codec="lzo", split=3)
    early = _finished(start_early(str(path), "lzo", exclude_zero=True))  # type: ignore[arg-type]
    early._done = done  # as if stopped after that many pages
    res = _save(path, tmp_path / "early", codec="lzo", split=3, early=early)
    assert res.early_pages == done
    for i in (1, 2, 3):
        assert (
            Path(f"{tmp_path}/early.{i}").read_bytes() == Path(f"{tmp_path}/plain.{i}").read_bytes()
        )
    assert _no_children()


@needs_two_cpus
def test_a_helper_killed_midway_is_harmless(synth: tuple[Path, Any], tmp_path: Path) -> None:
    path, _info = synth
    _save(path, tmp_path / "plain", codec="zstd" if _has("zstd") else "zlib")
    early = start_early(str(path), "zstd" if _has("zstd") else "zlib", exclude_zero=True)
    assert early is not None
    os.kill(early.pid, signal.SIGKILL)  # from outside, at once
    res = _save(path, tmp_path / "early", codec=early.codec, early=early)
    assert 0 <= res.early_pages < early.npages
    assert (tmp_path / "early").read_bytes() == (tmp_path / "plain").read_bytes()
    assert _no_children()


def _has(codec: str) -> bool:
    try:
        get_codec(codec).available()
    except kdumper.errors.MissingDependencyError:
        return False
    return True


@needs_two_cpus
@pytest.mark.parametrize(
    "opts",
    [
        {"codec": "lzo", "dump_level": 31},  # the helper compressed with zlib
        {"codec": "zlib", "dump_level": 30},  # ... kept zero pages
        {"codec": "zlib", "dump_level": 31, "threads": 1},  # no workers: no helper either
        {"codec": "zlib", "dump_level": 31, "format": "elf"},
    ],
    ids=["other codec", "other zero rule", "one process", "elf"],
)
def test_a_helper_for_other_options_is_not_used(
    synth: tuple[Path, Any], tmp_path: Path, opts: dict[str, Any]
) -> None:
    path, _info = synth
    early = start_early(str(path), "zlib", exclude_zero=True)
    assert early is not None
    opts = {"threads": 2, **opts}
    with open_for_save(path) as dump:
        res = save(dump, str(tmp_path / "out"), SaveOptions(early=early, **opts))
    assert res.early_pages == 0
    assert _no_children()


@needs_two_cpus
def test_the_command_compresses_the_image_at_start(synth: tuple[Path, Any], tmp_path: Path) -> None:
    """``kdumper save`` starts the helper before it imports numpy; --threads 1 does not."""
    path, info = synth

    def run(*extra: str) -> dict[str, Any]:
        out = tmp_path / f"out{len(extra)}"
        res = subprocess.run(
            [sys.executable, "-m", "kdumper", "save", str(path), str(out), "-c", "lzo",
             "--json", "--no-progress", *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        summary: dict[str, Any] = json.loads(res.stdout)
        return summary

    assert run()["pages_compressed_at_start"] == info.kernel_size // PAGE
    assert run("--threads", "1")["pages_compressed_at_start"] == 0


@needs_two_cpus
def test_the_helper_stops_when_its_payload_room_is_full(
    synth: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payloads it may keep are bounded (the parent's RSS grows by what it writes from
    them); what did not fit goes to the workers."""
    path, _info = synth
    _save(path, tmp_path / "plain", codec="lzo")
    monkeypatch.setattr(early_mod, "MAX_PAYLOAD", 100 * PAGE)
    early = start_early(str(path), "lzo", exclude_zero=True)
    assert early is not None
    deadline = time.monotonic() + 30
    while early_mod._COUNT.unpack_from(early._map, 0)[0] == 0:  # it stops on its own
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.2)
    done = early.stop()
    assert 0 < done < early.npages
    assert len(early.payloads()) < 101 * PAGE + 4096
    res = _save(path, tmp_path / "early", codec="lzo", early=early)
    assert res.early_pages == done
    assert (tmp_path / "early").read_bytes() == (tmp_path / "plain").read_bytes()
    assert _no_children()


def _resident_kib(mapping: Any) -> int:
    """This process's resident KiB of ``mapping`` (from /proc/self/smaps)."""
    import ctypes

    cell = ctypes.c_char.from_buffer(mapping)
    addr = ctypes.addressof(cell)
    del cell  # (the buffer export would keep the mapping from closing)
    lines = Path("/proc/self/smaps").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{addr:x}-"))
    rss = next(line for line in lines[start + 1 :] if line.startswith("Rss:"))
    return int(rss.split()[1])


@needs_two_cpus
def test_the_payloads_are_mapped_in_at_once_and_released(tmp_path: Path) -> None:
    """``map_in`` maps a range of the helper's payloads into this process with one call (what
    the writer then writes takes no page fault per page); ``release`` gives them back, and
    advice the kernel does not know is ignored."""
    path = _image_elf(tmp_path / "vmcore")
    early = start_early(str(path), "zlib", exclude_zero=False)
    assert early is not None
    try:
        _finished(early)
        before = _resident_kib(early._map)
        end = len(early.payloads()) // 2 // PAGE * PAGE
        early.map_in(0, end)
        mapped = _resident_kib(early._map)
        assert mapped >= before + end // 1024
        early.release(end)  # (the kernel may have mapped a few pages after ``end`` as well)
        assert _resident_kib(early._map) <= mapped - end // 1024
        early_mod._populate(early._map, 12345, 0, PAGE)  # an unknown advice: nothing happens
    finally:
        early.close()
    assert _no_children()
