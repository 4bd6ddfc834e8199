"""Filtering real vmcores of Debian's 6.1 and 6.12 kernels (the VM harness's busy 1 GiB guest).

Oracles, per kernel:

* 6.1: makedumpfile 1.7.2 and 1.7.6 both know this kernel; at every dump level kdumper keeps
  exactly the pfns they keep, and its ``-d 31 -c`` file is byte-identical to the one 1.7.2 wrote
  inside the capture kernel from /proc/vmcore.
* 6.12: makedumpfile 1.7.6 predates 6.12's "one page type per page" (kernel 4ffca5a96678,
  makedumpfile fix 72c3414 in 1.7.7): its slab check misfires on every typed page, so it finds
  **no free pages** (and no offline ones). kdumper agrees with it on every other class and
  excludes, in addition, exactly the buddy pages. 1.7.2 is older still: it also misses the THP
  order (folio._flags_1, 6.6) and the slab type (6.10), so it keeps THP tails and drops slab
  pages that look anonymous. Neither is a usable oracle for free pages on 6.12, so the kernel's
  own counts printed just before the crash are: /proc/buddyinfo (free pages per order),
  /proc/vmstat nr_anon_pages and nr_file_pages. They were read a moment before the crash, so a
  small drift (pages allocated by the crash path itself, per-CPU lists) is allowed.

Never dropping a page the kernel still uses: every page kdumper drops and makedumpfile keeps must
be a free page, and the free total must not exceed what the buddy allocator held.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.collect.pipeline import SaveOptions, build_filter, save
from kdumper.collect.source import open_for_save
from tests import oracles

pytest.importorskip("vmharness")
from vmharness.pytest_plugin import vmcore_factory  # noqa: F401  (a fixture)

pytestmark = pytest.mark.vm

LEVELS = (1, 2, 4, 8, 16, 31)
BUSY = {"scenario": "busy", "trigger": "sysrq", "mem": "1G"}
DRIFT = 0.01  # counts printed before the crash vs the dump: 1 % (measured: < 0.1 %)


def _kept(path: Path | str, max_pfn: int) -> np.ndarray:
    with kdumper.open(str(path)) as d:
        n = min(max_pfn, d.max_pfn)
        out = np.zeros(max_pfn, np.bool_)
        out[:n] = d.dumped.window(0, n) & d.present.window(0, n)
        return out


def _ours(elf: Path, level: int) -> tuple[np.ndarray, dict[str, int]]:
    with open_for_save(elf) as dump:
        f = build_filter(dump, level)
        assert f.layout is not None and f.unreadable == 0, f.warnings
        return f.pages.window(0, f.pages.nbits), f.excluded


def _counter(path: Path, name: str) -> int:
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0].rstrip(":") == name:
            return int(parts[1])
    raise AssertionError(f"{name} not in {path}")


def buddy_free_pages(buddyinfo: Path) -> int:
    """Free pages the buddy allocator held: sum over zones and orders of count << order."""
    total = 0
    for line in buddyinfo.read_text().splitlines():
        m = re.match(r"Node\s+\d+,\s+zone\s+\S+\s+(.*)", line)
        if m:
            total += sum(int(c) << order for order, c in enumerate(m.group(1).split()))
    return total


def _close(ours: int, kernel: int, what: str) -> None:
    assert abs(ours - kernel) <= max(16, DRIFT * kernel), f"{what}: ours {ours}, kernel {kernel}"


@pytest.fixture(scope="module")
def art61(vmcore_factory: Any) -> Any:  # noqa: F811
    return vmcore_factory(kernel="6.1", **BUSY)


@pytest.fixture(scope="module")
def art612(vmcore_factory: Any) -> Any:  # noqa: F811
    return vmcore_factory(kernel="6.12", **BUSY)


@pytest.mark.oracle
@pytest.mark.parametrize("version", oracles.MAKEDUMPFILE_VERSIONS)
def test_61_same_pages_as_makedumpfile(art61: Any, tmp_path: Path, version: str) -> None:
    for level in LEVELS:
        ours, _ = _ours(art61.elf, level)
        out = tmp_path / f"mdf-{level}"
        oracles.makedumpfile(version, "-d", str(level), "-l", art61.elf, out)
        theirs = _kept(out, ours.size)
        diff = np.flatnonzero(ours != theirs)
        assert diff.size == 0, f"-d {level}: {diff.size} pfns differ, first {diff[:8]}"
        out.unlink()


@pytest.mark.parametrize("early", [False, True], ids=["", "kernel image compressed at start"])
def test_61_d31_identical_to_the_capture_kernels_file(
    art61: Any, tmp_path: Path, early: bool
) -> None:
    """kdumper on the raw ELF copy writes what makedumpfile 1.7.2 wrote from /proc/vmcore
    (also with the kernel image from the early helper, kdumper.collect.early)."""
    from kdumper.collect.early import start_early

    helper = start_early(str(art61.elf), "zlib", exclude_zero=True) if early else None
    if early and helper is None:
        pytest.skip("the early helper needs two CPUs")
    out = tmp_path / "d31c"
    with open_for_save(art61.elf) as dump:
        res = save(dump, str(out), SaveOptions(dump_level=31, codec="zlib", early=helper))
    assert out.read_bytes() == Path(art61.makedumpfile_d31).read_bytes()
    assert (res.early_pages > 0) == early


@pytest.mark.oracle
def test_612_makedumpfile_176_misses_only_free_pages(art612: Any, tmp_path: Path) -> None:
    free_total = buddy_free_pages(Path(art612.buddyinfo))
    for level in LEVELS:
        ours, excluded = _ours(art612.elf, level)
        out = tmp_path / f"mdf-{level}"
        oracles.makedumpfile("1.7.6", "-d", str(level), "-l", art612.elf, out)
        theirs = _kept(out, ours.size)
        out.unlink()
        assert not (ours & ~theirs).any(), f"-d {level}: kdumper keeps pages 1.7.6 drops"
        dropped_extra = int(np.count_nonzero(theirs & ~ours))
        if level & 16:
            # exactly our free pages; 1.7.6 finds none on 6.12
            assert dropped_extra == excluded["free"] > 0
            assert excluded["free"] <= free_total
            _close(excluded["free"], free_total, "free pages vs /proc/buddyinfo")
        else:
            assert dropped_extra == 0, f"-d {level}"


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_classes_match_the_kernels_counts(kernel: str, vmcore_factory: Any) -> None:  # noqa: F811
    art = vmcore_factory(kernel=kernel, **BUSY)
    _, excluded = _ours(art.elf, 31)
    _close(excluded["free"], buddy_free_pages(Path(art.buddyinfo)), "free vs buddyinfo")
    assert excluded["free"] <= _counter(Path(art.vmstat), "nr_free_pages")
    # anonymous pages, THPs included (AnonPages counts every base page of a THP), and hugetlb
    hugetlb = _counter(Path(art.meminfo), "HugePages_Total") * (
        _counter(Path(art.meminfo), "Hugepagesize") // 4
    )
    _close(excluded["user"], _counter(Path(art.vmstat), "nr_anon_pages") + hugetlb, "user")
    _close(
        excluded["cache"] + excluded["cache_private"],
        _counter(Path(art.vmstat), "nr_file_pages"),
        "page cache",
    )


@pytest.mark.parametrize(("kernel", "codec"), [("6.12", "zstd"), ("6.1", "lzo")])
def test_saved_pages_equal_the_source(
    kernel: str,
    codec: str,
    vmcore_factory: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    art = vmcore_factory(kernel=kernel, **BUSY)
    out = tmp_path / "out"
    with open_for_save(art.elf) as dump:
        result = save(dump, str(out), SaveOptions(dump_level=31, codec=codec))
    assert not result.incomplete and result.filter.warnings == []
    with kdumper.open(str(out)) as o, kdumper.open(str(art.elf)) as src:
        pfns = o.dumped.pfns()
        assert pfns.size == result.outputs[0].pages
        for pfn in pfns.tolist():
            assert o.read_pfn(pfn) == src.read_pfn(pfn), f"pfn {pfn}"


_DRGN_SCRIPT = r"""
import json, sys
import drgn
from drgn.helpers.linux.printk import get_dmesg
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.load_debug_info([sys.argv[2]])
thread = prog.crashed_thread()
print(json.dumps({
    "frames": [f.name for f in thread.stack_trace() if f.name],
    "comm": thread.object.comm.string_().decode(),
    "log_tail": get_dmesg(prog).decode(errors="replace")[-4000:],
}))
"""


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_drgn_reads_our_d31_output(kernel: str, vmcore_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    """drgn with the -dbg vmlinux: the crashed thread's stack and the kernel log, from our -d 31."""
    import json
    import subprocess
    import sys

    pytest.importorskip("drgn")
    art = vmcore_factory(kernel=kernel, dbg=True, **BUSY)
    out = tmp_path / "vmcore.d31"
    with open_for_save(art.elf) as dump:
        save(dump, str(out), SaveOptions(dump_level=31, codec="zstd"))
    proc = subprocess.run(
        [sys.executable, "-c", _DRGN_SCRIPT, str(out), str(art.vmlinux)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.splitlines()[-1])
    assert "sysrq_handle_crash" in doc["frames"], doc["frames"]
    assert "sysrq triggered crash" in doc["log_tail"]


def test_peak_rss_1_vs_4_gib_guest(art61: Any, vmcore_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    """Real dumps of the same busy 6.1 guest with 1 GiB and 4 GiB of RAM: the peak RSS of the
    whole `kdumper save` process stays under the 96 MiB bound, and 4x the RAM adds no more than
    the one-bit-per-pfn bitmaps (a few MiB), at -d 31 and at -d 1 (every non-zero page read,
    compressed and written)."""
    from tests.test_save import MAX_RSS_KIB, _peak_rss_kib

    big = vmcore_factory(kernel="6.1", scenario="busy", trigger="sysrq", mem="4G")
    rss: dict[tuple[str, int], int] = {}
    for name, art in (("1G", art61), ("4G", big)):
        for level in (31, 1):
            out = tmp_path / f"{name}-{level}"
            rss[name, level] = _peak_rss_kib(
                ["save", str(art.elf), str(out), "-d", str(level), "-c", "lzo", "--no-progress"]
            )
            out.unlink()
    print("peak RSS KiB", rss)
    assert max(rss.values()) <= MAX_RSS_KIB, rss
    for level in (31, 1):
        assert rss["4G", level] - rss["1G", level] <= 8 * 1024, rss
