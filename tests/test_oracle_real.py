"""Real vmcores from the VM harness, checked against makedumpfile, drgn, libkdumpfile and crash.

For Debian's 6.1 and 6.12 kernels crashed in QEMU (``vmharness.get_vmcore``, cached on disk; the
same "busy"/"sysrq" cycle the tests in tests/vm use, so no extra boot): kdumper reads the raw
``/proc/vmcore`` copy and makedumpfile's ``-d 31`` outputs made inside the guest, and every page
makedumpfile kept must equal the raw ELF page (read by the independent ``RefElf``). Then the raw
ELF is converted by kdumper's writers, keeping the pages makedumpfile kept, and drgn,
libkdumpfile and ``crash --osrelease`` must read the result back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kdumper
from kdumper.dump.bitmap import Bitmap
from kdumper.dump.io import FileSink
from tests import oracles
from tests.oracles import oracle_check

pytestmark = [pytest.mark.vm, pytest.mark.oracle]

KERNELS = ("6.1", "6.12")
SAMPLE = int(os.environ.get("KDUMPER_REAL_SAMPLE", "24000"))  # pages an oracle reads back


@pytest.fixture(scope="module", params=KERNELS, ids=[f"linux-{k}" for k in KERNELS])
def real(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The harness's artifacts of one real kdump cycle (built once per machine, then cached).

    ``KDUMPER_REAL_STANDIN=1`` substitutes a synthetic vmcore filtered by the host's
    makedumpfile, to check these tests themselves without booting anything.
    """
    if os.environ.get("KDUMPER_REAL_STANDIN"):
        return _standin(request.param, tmp_path_factory.mktemp("standin"))
    try:
        from vmharness import get_vmcore
        from vmharness.pytest_plugin import require_vm_host
    except ImportError as e:
        oracles.unavailable(f"the VM harness is not importable: {e}")
    require_vm_host()
    return get_vmcore(kernel=request.param, scenario="busy", trigger="sysrq", mem="1G")


def _standin(kernel: str, tmp: Path) -> Any:
    """Artifacts shaped like the harness's, from the synthetic vmcore (no VM involved)."""
    from types import SimpleNamespace

    from tests.synth import make_vmcore

    release = f"{kernel}.0-standin-amd64"
    info = make_vmcore(tmp / "vmcore", mem_mib=64, seed=11, release=release)
    version = "1.7.6" if kernel != "6.1" else "1.7.2"
    oracles.makedumpfile(version, "-c", "-d", "31", tmp / "vmcore", tmp / "vmcore.d31c")
    zstd = None
    if version == "1.7.6":
        zstd = tmp / "vmcore.d31z"
        oracles.makedumpfile(version, "-z", "-d", "31", tmp / "vmcore", zstd)
    return SimpleNamespace(
        kernel=kernel,
        elf=Path(info.path),
        makedumpfile_d31=tmp / "vmcore.d31c",
        makedumpfile_d31_zstd=zstd,
        makedumpfile_version=version,
        kernel_release=release,
    )


@pytest.fixture(scope="module")
def ref(real: Any) -> oracles.RefElf:
    """The raw /proc/vmcore copy, read independently of kdumper."""
    return oracles.RefElf(real.elf)


def _sample(pfns: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``pfns``, spread evenly (always the first and last)."""
    if pfns.size <= n:
        return pfns
    return pfns[np.unique(np.linspace(0, pfns.size - 1, n).astype(np.int64))]


def test_real_elf(real: Any, ref: oracles.RefElf) -> None:
    """kdumper reads the raw vmcore: PT_LOAD map, VMCOREINFO and pages as RefElf sees them."""
    with kdumper.open(str(real.elf)) as dump:
        assert np.array_equal(dump.present.pfns(), ref.present_pfns())
        assert dump.vmcoreinfo is not None
        assert dump.vmcoreinfo.osrelease == real.kernel_release
        oracles.assert_pages(dump, ref, _sample(ref.present_pfns(), 4 * SAMPLE))


def _d31_outputs(real: Any) -> list[tuple[str, Path]]:
    out = [("zlib", Path(real.makedumpfile_d31))]
    if real.makedumpfile_d31_zstd is not None:
        out.append(("zstd", Path(real.makedumpfile_d31_zstd)))
    return out


def test_real_makedumpfile_d31(real: Any, ref: oracles.RefElf) -> None:
    """Every page of makedumpfile's in-guest ``-d 31`` output equals the raw ELF page."""
    for codec, path in _d31_outputs(real):
        tool = f"makedumpfile {real.makedumpfile_version}"
        with (
            oracle_check(
                "tool→kdumper",
                f"kdump (real, linux {real.kernel})",
                codec,
                tool,
                "-d 31 in the guest",
            ),
            kdumper.open(str(path)) as dump,
        ):
            facts = dump.facts()
            assert facts.format == "kdump"
            assert facts.dump_level == 31
            assert facts.compression == codec
            assert facts.utsname is not None
            assert facts.utsname.release == real.kernel_release
            assert np.array_equal(dump.present.pfns(), ref.present_pfns())
            dumped = dump.dumped.pfns()
            assert 0 < dumped.size < ref.present_pfns().size
            oracles.assert_pages(dump, ref, dumped)


@pytest.fixture(scope="module")
def ours(real: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The raw ELF converted by our writers, keeping the pages makedumpfile -d 31 kept."""
    from kdumper.dump.diskdump import write_kdump
    from kdumper.dump.elf import write_elf

    out = tmp_path_factory.mktemp(f"real-{real.kernel}")
    made: dict[str, Path] = {}
    with kdumper.open(str(real.makedumpfile_d31)) as d31, kdumper.open(str(real.elf)) as src:
        kept = d31.dumped.pfns()
        flags = np.zeros(src.max_pfn, dtype=bool)
        flags[kept[kept < src.max_pfn]] = True
        keep = Bitmap.from_bool(flags)
        for codec in ("zlib", "lzo", "zstd"):
            path = out / f"ours-{codec}.kdump"
            with FileSink(path) as sink:
                write_kdump(sink, src, pages=keep, codec=codec, dump_level=31)
            made[codec] = path
        path = out / "ours.elf"
        with FileSink(path) as sink:
            write_elf(sink, src, pages=keep)
        made["elf"] = path
    return made


@pytest.mark.parametrize("kind", ["zlib", "lzo", "zstd", "elf"])
def test_real_ours_read_by_oracles(
    real: Any, ref: oracles.RefElf, ours: dict[str, Path], kind: str
) -> None:
    """drgn, libkdumpfile and crash read our conversion of the real vmcore."""
    path = ours[kind]
    fmt, codec = ("elf", "none") if kind == "elf" else ("kdump", kind)
    label = f"{fmt} (real, linux {real.kernel})"
    with kdumper.open(str(path)) as dump:
        kept = dump.dumped.pfns()
        oracles.assert_pages(dump, ref, _sample(kept, SAMPLE))
    sample = _sample(kept, SAMPLE)
    with oracle_check("kdumper→tool", label, codec, f"drgn {oracles.drgn_version()}", "read pages"):
        oracles.assert_oracle_pages(oracles.drgn_read(path, sample), ref, sample)
    tool = f"libkdumpfile {oracles.libkdumpfile_version()}"
    with oracle_check("kdumper→tool", label, codec, tool, "read pages"):
        oracles.assert_oracle_pages(oracles.libkdumpfile_read(path, sample), ref, sample)
    with oracle_check(
        "kdumper→tool", label, codec, f"crash {oracles.crash_version()}", "--osrelease"
    ):
        assert oracles.crash_osrelease(path) == real.kernel_release


def test_real_makedumpfile_refilters_ours(real: Any, ours: dict[str, Path], tmp_path: Path) -> None:
    """makedumpfile ``-d 31`` over our conversion keeps exactly the pages it kept from the ELF."""
    # the makedumpfile that filtered in the guest, so that both runs classify pages alike
    version = real.makedumpfile_version
    if version not in oracles.MAKEDUMPFILE_VERSIONS:
        pytest.fail(f"the guest used makedumpfile {version}, which the host does not have")
    out = tmp_path / "refiltered"
    label = f"kdump (real, linux {real.kernel})"
    with oracle_check("kdumper→tool", label, "lzo", f"makedumpfile {version}", "refilter -d 31"):
        oracles.makedumpfile(version, "-c", "-d", "31", ours["lzo"], out)
        with kdumper.open(str(out)) as again, kdumper.open(str(real.makedumpfile_d31)) as d31:
            assert np.array_equal(again.dumped.pfns(), d31.dumped.pfns())
