"""crashkernel= grammar, reservations, the recommendation, and `kdumper crashkernel`.

The grammar cases come from the kernel's own documentation (Documentation/admin-guide/kdump/
kdump.rst "Extended crashkernel syntax" and "Boot into System Kernel", and
Documentation/admin-guide/kernel-parameters.txt ``crashkernel=``) and from the parser in
kernel/crash_reserve.c.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from kdumper.cli import crashkernel_cmd
from kdumper.cli.main import main
from kdumper.errors import ExitCode, UnsupportedError
from kdumper.host import boot
from kdumper.host.crashkernel import (
    CrashkernelError,
    RangeEntry,
    auto_value,
    compute_reservation,
    current_reservation,
    format_size,
    memparse,
    parse_cmdline,
    parse_iomem,
    parse_value,
    recommend,
    system_ram,
    table_size,
)
from kdumper.host.paths import HostPaths
from tests.fakehost import IOMEM_NONE, IOMEM_RESERVED, make_host

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def reserve(cmdline: str, ram: int, arch: str = "x86_64") -> int:
    return compute_reservation(parse_cmdline(cmdline), ram, arch).size


# ---- kdump.rst and kernel-parameters.txt examples ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "size", "offset"),
    [
        ("64M@16M", 64 * MiB, 16 * MiB),  # kdump.rst: x86 and x86_64
        ("128M@32M", 128 * MiB, 32 * MiB),  # kdump.rst: ppc64
        ("256M@256M", 256 * MiB, 256 * MiB),  # kdump.rst: ia64 "generous value"
        ("256M@0", 256 * MiB, 0),  # kdump.rst: ia64, base chosen by the kernel
        ("256M", 256 * MiB, None),  # kdump.rst: ia64 / s390x "crashkernel=xxM"
    ],
)
def test_simple_form_from_kdump_rst(value: str, size: int, offset: int | None) -> None:
    v = parse_value(value)
    assert (v.kind, v.size, v.offset) == ("simple", size, offset)
    assert reserve(f"crashkernel={value}", 4 * GiB) == size


def test_extended_syntax_example_of_kdump_rst() -> None:
    # crashkernel=512M-2G:64M,2G-:128M
    #  1) RAM smaller than 512M: nothing  2) 512M <= RAM < 2G: 64M  3) 2G and more: 128M
    v = parse_value("512M-2G:64M,2G-:128M")
    assert v.kind == "ranges"
    assert v.ranges == (
        RangeEntry(512 * MiB, 2 * GiB, 64 * MiB),
        RangeEntry(2 * GiB, None, 128 * MiB),
    )
    cmd = "crashkernel=512M-2G:64M,2G-:128M"
    assert reserve(cmd, 384 * MiB) == 0
    assert reserve(cmd, 512 * MiB) == 64 * MiB
    assert reserve(cmd, 1 * GiB) == 64 * MiB
    assert reserve(cmd, 2 * GiB - 200 * MiB) == 64 * MiB
    assert reserve(cmd, 2 * GiB) == 128 * MiB  # end is exclusive
    assert reserve(cmd, 64 * GiB) == 128 * MiB


def test_kernel_parameters_forms() -> None:
    # crashkernel=size[KMG][@offset[KMG]]
    assert parse_value("1G@4G").offset == 4 * GiB
    # crashkernel=range1:size1[,range2:size2,...][@offset]
    v = parse_value("1G-4G:192M,4G-:256M@16M")
    assert v.offset == 16 * MiB and len(v.ranges) == 2
    assert reserve("crashkernel=1G-4G:192M,4G-:256M@16M", 8 * GiB) == 256 * MiB
    # crashkernel=size[KMG],high (+ crashkernel=size[KMG],low)
    r = compute_reservation(parse_cmdline("crashkernel=512M,high crashkernel=72M,low"), 16 * GiB)
    assert (r.size, r.low, r.high) == (512 * MiB, 72 * MiB, True)
    # ",low 0: to disable low allocation"
    r = compute_reservation(parse_cmdline("crashkernel=512M,high crashkernel=0,low"), 16 * GiB)
    assert (r.size, r.low) == (512 * MiB, 0)
    # "Kernel would try to allocate at least 256M below 4G automatically" (x86_64)
    r = compute_reservation(parse_cmdline("crashkernel=512M,high"), 16 * GiB)
    assert r.low == 256 * MiB and r.total == 768 * MiB
    r = compute_reservation(parse_cmdline("crashkernel=512M,high"), 16 * GiB, "aarch64")
    assert r.low == 128 * MiB
    # ",high ... will be ignored if crashkernel=X is specified"
    r = compute_reservation(parse_cmdline("crashkernel=256M crashkernel=1G,high"), 16 * GiB)
    assert (r.size, r.high) == (256 * MiB, False)
    assert any("ignored" in n for n in r.notes)
    # ",low ... ignored when crashkernel=X,high is not used"
    r = compute_reservation(parse_cmdline("crashkernel=256M crashkernel=64M,low"), 16 * GiB)
    assert (r.size, r.low) == (256 * MiB, 0)


def test_distribution_defaults_parse() -> None:
    # service.md: Fedora x86_64, aarch64, ppc64le fadump, Debian amd64 and arm64 defaults
    cases = {
        "2G-64G:256M,64G-:512M": {1 * GiB: 0, 4 * GiB: 256 * MiB, 128 * GiB: 512 * MiB},
        "1G-4G:192M,4G-64G:256M,64G-:512M": {2 * GiB: 192 * MiB, 8 * GiB: 256 * MiB},
        "2G-4G:256M,4G-64G:320M,64G-:576M": {3 * GiB: 256 * MiB, 100 * GiB: 576 * MiB},
        "512M-:192M": {256 * MiB: 0, 2 * GiB: 192 * MiB},
        "2G-4G:320M,4G-32G:512M,32G-64G:1024M,64G-128G:2048M,128G-:4096M": {
            16 * GiB: 512 * MiB,
            256 * GiB: 4 * GiB,
        },
    }
    for value, expect in cases.items():
        for ram, size in expect.items():
            assert reserve(f"crashkernel={value}", ram) == size, (value, ram)


# ---- the kernel's parser rules ------------------------------------------------------------


def test_memparse_is_the_kernels() -> None:
    assert memparse("256M") == (256 * MiB, 4)
    assert memparse("256m") == (256 * MiB, 4)
    assert memparse("1g")[0] == GiB
    assert memparse("4096")[0] == 4096
    assert memparse("512k")[0] == 512 * KiB
    assert memparse("2T")[0] == 2 * TiB
    assert memparse("1P")[0] == 1 << 50
    assert memparse("1E")[0] == 1 << 60
    assert memparse("0x10000000")[0] == 256 * MiB  # base 0: hex
    assert memparse("010M")[0] == 8 * MiB  # ... and a leading 0 is octal
    assert memparse("0")[0] == 0
    with pytest.raises(ValueError):
        memparse("M")


def test_last_one_of_each_kind_wins() -> None:
    args = parse_cmdline(
        "crashkernel=128M ro crashkernel=256M crashkernel=1G,high crashkernel=2G,high"
    )
    assert args.main is not None and args.main.size == 256 * MiB
    assert args.high is not None and args.high.size == 2 * GiB
    assert args.all_values == ("128M", "256M", "1G,high", "2G,high")
    assert reserve("crashkernel=128M crashkernel=512M-:192M", 4 * GiB) == 192 * MiB


def test_ram_is_rounded_up_to_128m() -> None:
    # a "1 GiB" VM has a little less System RAM; the kernel rounds up before matching
    assert reserve("crashkernel=1G-:256M", 1023 * MiB) == 256 * MiB
    assert reserve("crashkernel=1G-:256M", 895 * MiB) == 0  # rounds to 896M


def test_range_size_not_below_ram_is_refused_even_unmatched() -> None:
    # parse_crashkernel_mem checks size >= total_mem for every entry it reads before a match
    with pytest.raises(CrashkernelError, match="not less than the RAM"):
        reserve("crashkernel=2G-4G:512M,256M-2G:64M", 256 * MiB)
    # the kernel takes ranges in any order; the first match wins
    assert reserve("crashkernel=2G-4G:512M,256M-2G:64M", GiB) == 64 * MiB
    assert reserve("crashkernel=1G-:256M,2G-:512M", 4 * GiB) == 256 * MiB
    with pytest.raises(CrashkernelError, match="not less than the RAM"):
        reserve("crashkernel=1G", 1 * GiB)


def test_simple_size_not_below_ram_refused() -> None:
    with pytest.raises(CrashkernelError):
        reserve("crashkernel=4G", 2 * GiB)
    assert reserve("crashkernel=1G-:0", 4 * GiB) == 0  # matched, zero bytes


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "empty"),
        ("abc", "memory value expected"),
        ("256X", "unrecognized character 'X'"),
        ("256M@", "memory value expected"),
        ("2G-1G:64M", "range end"),
        ("512M-2G64M", "unrecognized character '-'"),  # no ':': the simple form
        ("512M-2G,2G-:64M", "':' expected"),
        ("512M:64M", "'-' expected"),
        ("512M-:", "memory value expected"),
        ("1G-:256M,high", "unexpected"),  # ranges cannot take ,high
        ("256M,low,high", "unexpected"),
        ("256M,foo", "unrecognized"),
    ],
)
def test_invalid_values(value: str, match: str) -> None:
    with pytest.raises(CrashkernelError, match=match):
        parse_value(value)


def test_invalid_value_on_the_cmdline_is_reported_not_raised() -> None:
    args = parse_cmdline("ro crashkernel=abc quiet")
    assert args.main is None and args.present and len(args.errors) == 1
    assert reserve("ro crashkernel=abc", 4 * GiB) == 0
    # a later valid value of the same kind still counts; an invalid later one cancels it
    assert parse_cmdline("crashkernel=abc crashkernel=256M").main is not None
    assert parse_cmdline("crashkernel=256M crashkernel=abc").main is None


def test_cmdline_tokens() -> None:
    # parameters after "--" belong to init
    assert not parse_cmdline("ro -- crashkernel=256M").present
    # quoted values
    assert parse_cmdline('foo="a b" crashkernel="256M"').main is not None
    # a parameter merely containing the text is not crashkernel=
    assert not parse_cmdline("kdump.crashkernel=1G").present


def test_auto_is_rhel8_only() -> None:
    v = parse_value("auto")
    assert v.kind == "auto"
    r = compute_reservation(parse_cmdline("crashkernel=auto"), 8 * GiB)
    assert r.size == 192 * MiB  # RHEL 8 x86_64: 4G-64G:192M
    assert any("RHEL 8" in n for n in r.notes)
    assert reserve("crashkernel=auto", 2 * TiB) == 512 * MiB
    assert reserve("crashkernel=auto", 8 * GiB, "aarch64") == 448 * MiB
    assert reserve("crashkernel=auto", 8 * GiB, "riscv64") == 0


def test_cma_is_extra() -> None:
    r = compute_reservation(parse_cmdline("crashkernel=256M crashkernel=1G,cma"), 16 * GiB)
    assert (r.size, r.cma, r.total) == (256 * MiB, GiB, 256 * MiB)


def test_high_on_an_arch_without_it() -> None:
    r = compute_reservation(parse_cmdline("crashkernel=512M,high"), 16 * GiB, "s390x")
    assert r.size == 0


@pytest.mark.parametrize(
    "value",
    [
        "256M",
        "64M@16M",
        "512M-2G:64M,2G-:128M",
        "1G-4G:192M,4G-:256M@16M",
        "1G,high",
        "0,low",
        "auto",
    ],
)
def test_canonical_round_trip(value: str) -> None:
    v = parse_value(value)
    assert parse_value(v.canonical()) == parse_value(v.canonical())
    assert v.canonical() == value


def test_canonical_spelling() -> None:
    assert parse_value("0x10000000").canonical() == "256M"
    assert parse_value("262144K").canonical() == "256M"
    assert format_size(3 * MiB + 1) == str(3 * MiB + 1)


# ---- /proc/iomem and the reservation now ----------------------------------------------------


def test_iomem() -> None:
    ranges = parse_iomem(IOMEM_RESERVED)
    assert system_ram(ranges) == (0x9FBFF - 0x1000 + 1) + (0x3FFDFFFF - 0x100000 + 1)
    res = current_reservation(IOMEM_RESERVED, "268435456\n")
    assert res.reserved and res.size == 256 * MiB and res.source == "kexec_crash_size"
    assert res.ranges == ((0x0F000000, 0x1EFFFFFF),)
    # no sysfs file: the size comes from /proc/iomem
    assert current_reservation(IOMEM_RESERVED, None).size == 256 * MiB
    assert not current_reservation(IOMEM_NONE, "0\n").reserved


def test_iomem_low_and_hidden() -> None:
    text = (
        "00100000-bfffffff : System RAM\n"
        "  a0000000-afffffff : Crash kernel\n"
        "100000000-23fffffff : System RAM\n"
        "  200000000-23fffffff : Crash kernel\n"
    )
    res = current_reservation(text, None)
    assert len(res.ranges) == 2 and res.size == 256 * MiB + GiB
    # kexec_crash_size counts the main (high) region only
    assert current_reservation(text, str(GiB)).size == GiB
    hidden = "00000000-00000000 : System RAM\n  00000000-00000000 : Crash kernel\n"
    res = current_reservation(hidden, None)
    assert res.addresses_hidden and res.size == 0 and res.reserved is False
    assert current_reservation(hidden, "268435456").reserved


# ---- the recommendation ---------------------------------------------------------------------


def test_recommendation_table() -> None:
    assert table_size(512 * MiB) == 0
    assert table_size(1023 * MiB) == 256 * MiB  # a "1 GiB" VM
    assert table_size(8 * GiB) == 256 * MiB
    assert table_size(64 * GiB) == 512 * MiB
    assert table_size(TiB) == 576 * MiB
    assert table_size(3 * TiB) == 704 * MiB


@pytest.mark.parametrize(
    "ram", [1 * GiB, 6 * GiB, 63 * GiB, 64 * GiB, 500 * GiB, TiB, 5 * TiB // 2, 6 * TiB]
)
def test_auto_value_reserves_the_table_size(ram: int) -> None:
    rec = recommend(ram)
    assert rec.size == table_size(ram)
    assert reserve(f"crashkernel={rec.value}", ram) == rec.size
    # still sensible when RAM is added later
    assert reserve(f"crashkernel={auto_value(ram)}", ram * 2) >= rec.size


def test_recommendation_with_footprint() -> None:
    small = recommend(8 * GiB, kernel_size=8 * MiB, initrd_size=30 * MiB)
    # 6*8 + 3*30 + 96 + 16 = 250 -> 256 (rounded to 16M): the table wins
    assert small.size == 256 * MiB and small.footprint == 256 * MiB
    big = recommend(8 * GiB, kernel_size=10 * MiB, initrd_size=80 * MiB)
    # 60 + 240 + 112 = 412 -> 416M
    assert big.size == 416 * MiB and big.value == "416M"
    assert "footprint" in big.reason
    none = recommend(768 * MiB)
    assert none.size == 0 and "less than 1 GiB" in none.reason


# ---- bootloader changes -------------------------------------------------------------------

DEBIAN_GRUB = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
"""


def test_plan_grub_adds_to_default() -> None:
    text, var, before, after = boot.plan_grub(DEBIAN_GRUB, ["crashkernel=256M"])
    assert var == "GRUB_CMDLINE_LINUX_DEFAULT" and before == "quiet"
    assert after == "quiet crashkernel=256M"
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=256M"\n' in text
    assert text.replace(" crashkernel=256M", "") == DEBIAN_GRUB  # nothing else changed


def test_plan_grub_replaces_where_it_is() -> None:
    grub = DEBIAN_GRUB.replace("console=tty0 ", "console=tty0 crashkernel=384M-:128M ")
    text, var, _, after = boot.plan_grub(grub, ["crashkernel=1G-64G:256M,64G-:512M"])
    assert var == "GRUB_CMDLINE_LINUX"
    assert after == "console=tty0 crashkernel=1G-64G:256M,64G-:512M console=ttyS0,115200"
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in text


def test_plan_grub_high_low_and_removal() -> None:
    grub = DEBIAN_GRUB.replace('"quiet"', '"quiet crashkernel=256M"').replace(
        "console=tty0 ", "crashkernel=1G,high console=tty0 "
    )
    text, var, _, after = boot.plan_grub(grub, ["crashkernel=1G,high", "crashkernel=256M,low"])
    assert var == "GRUB_CMDLINE_LINUX_DEFAULT"
    assert after == "quiet crashkernel=1G,high crashkernel=256M,low"
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"' in text  # dropped there
    text, _, _, after = boot.plan_grub(text, [])
    assert after == "quiet" and "crashkernel" not in text


def test_plan_grub_quoting_and_missing_variable() -> None:
    text, _, _, after = boot.plan_grub(
        "GRUB_CMDLINE_LINUX_DEFAULT='quiet splash'\n", ["crashkernel=256M"]
    )
    assert text == "GRUB_CMDLINE_LINUX_DEFAULT='quiet splash crashkernel=256M'\n"
    text, _, _, _ = boot.plan_grub("GRUB_CMDLINE_LINUX_DEFAULT=quiet\n", ["crashkernel=256M"])
    assert text == 'GRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=256M"\n'
    text, _, before, after = boot.plan_grub("GRUB_TIMEOUT=5", ["crashkernel=256M"])
    assert text == 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="crashkernel=256M"\n'
    assert (before, after) == ("", "crashkernel=256M")


def test_crashkernel_params_checks_values() -> None:
    assert boot.crashkernel_params("256M") == ["crashkernel=256M"]
    assert boot.crashkernel_params("crashkernel=1G,high 256M,low") == [
        "crashkernel=1G,high",
        "crashkernel=256M,low",
    ]
    assert boot.crashkernel_params("none") == []
    with pytest.raises(CrashkernelError):
        boot.crashkernel_params("256Q")
    with pytest.raises(CrashkernelError, match="not both"):
        boot.crashkernel_params("256M 1G,high")


class Recorder:
    def __init__(self, rc: int = 0) -> None:
        self.rc = rc
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), self.rc, "", "grub-mkconfig: error: x\n")


def _which(*present: str):  # type: ignore[no-untyped-def]
    return lambda name: f"/usr/sbin/{name}" if name in present else None


def test_grub_change_written_and_update_grub_run(tmp_path: Path) -> None:
    host = make_host(tmp_path, "none", grub=DEBIAN_GRUB)
    change = boot.plan_crashkernel_change("256M", host.paths, which=_which("update-grub"))
    assert change.tool == "grub" and change.changed
    assert change.diff() == [
        '- GRUB_CMDLINE_LINUX_DEFAULT="quiet"',
        '+ GRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=256M"',
    ]
    assert change.commands == (("update-grub",),)
    assert Path(host.paths.default_grub).read_text() == DEBIAN_GRUB  # planning writes nothing
    run = Recorder()
    boot.apply_crashkernel_change(change, run=run)
    assert run.calls == [["update-grub"]]
    assert "crashkernel=256M" in Path(host.paths.default_grub).read_text()


def test_grub_d_snippet_warning_and_mkconfig(tmp_path: Path) -> None:
    host = make_host(tmp_path, "none", grub=DEBIAN_GRUB)
    snippet = Path(host.paths.default_grub_d) / "kdump-tools.cfg"
    snippet.parent.mkdir(parents=True)
    snippet.write_text(
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=512M-:192M"\n'
    )
    change = boot.plan_crashkernel_change("256M", host.paths, which=_which("grub2-mkconfig"))
    assert any("kdump-tools.cfg" in w for w in change.warnings)
    assert change.commands == (("grub2-mkconfig", "-o", f"{host.paths.boot_dir}/grub2/grub.cfg"),)
    with pytest.raises(Exception, match="exit code 1: grub-mkconfig: error: x"):
        boot.apply_crashkernel_change(change, run=Recorder(rc=1))


def test_grubby(tmp_path: Path) -> None:
    host = make_host(tmp_path, "reserved", grub=DEBIAN_GRUB)
    change = boot.plan_crashkernel_change(
        "1G-64G:256M,64G-:512M", host.paths, which=_which("grubby")
    )
    assert change.tool == "grubby"
    assert change.before == "crashkernel=256M"
    assert change.commands == (
        ("grubby", "--update-kernel=ALL", "--remove-args=crashkernel"),
        ("grubby", "--update-kernel=ALL", "--args=crashkernel=1G-64G:256M,64G-:512M"),
    )
    run = Recorder()
    boot.apply_crashkernel_change(change, run=run)
    assert len(run.calls) == 2
    assert Path(host.paths.default_grub).read_text() == DEBIAN_GRUB


def test_no_bootloader(tmp_path: Path) -> None:
    host = make_host(tmp_path, "none")
    with pytest.raises(UnsupportedError, match="no bootloader configuration"):
        boot.plan_crashkernel_change("256M", host.paths, which=_which())


def test_unchanged_runs_nothing(tmp_path: Path) -> None:
    host = make_host(
        tmp_path, "none", grub=DEBIAN_GRUB.replace('"quiet"', '"quiet crashkernel=256M"')
    )
    change = boot.plan_crashkernel_change("256M", host.paths, which=_which("update-grub"))
    assert not change.changed
    run = Recorder()
    boot.apply_crashkernel_change(change, run=run)
    assert run.calls == []


# ---- the command --------------------------------------------------------------------------


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HostPaths:
    import platform

    host = make_host(tmp_path / "root", "reserved", release=platform.release(), grub=DEBIAN_GRUB)
    monkeypatch.setenv("KDUMPER_HOST_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("KDUMPER_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    run = Recorder()
    monkeypatch.setattr(crashkernel_cmd, "RUN", run)
    monkeypatch.setattr(crashkernel_cmd, "WHICH", _which("update-grub"))
    return host.paths


def test_cli_show(fake_root: HostPaths, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crashkernel"]) == 0
    out = capsys.readouterr().out
    assert "crashkernel=256M" in out and "reserved now" in out and "recommended" in out
    assert main(["crashkernel", "--show", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reserved"] == 256 * MiB and info["expected"] == 256 * MiB
    assert info["recommended"] == 256 * MiB and info["footprint"] is not None


def test_cli_set_dry_run(fake_root: HostPaths, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crashkernel", "--set", "auto", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '- GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in out
    assert '+ GRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=1G-64G:256M,64G-:512M"' in out
    assert "would run: update-grub" in out and "dry run" in out
    assert Path(fake_root.default_grub).read_text() == DEBIAN_GRUB


def test_cli_set(fake_root: HostPaths, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crashkernel", "--set", "384M"]) == 0
    out = capsys.readouterr().out
    assert "ran: update-grub" in out and "reboot needed" in out
    assert (
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet crashkernel=384M"'
        in Path(fake_root.default_grub).read_text()
    )
    assert crashkernel_cmd.RUN.calls == [["update-grub"]]  # type: ignore[attr-defined]
    assert main(["crashkernel", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == "crashkernel=384M"


def test_cli_set_bad_value(fake_root: HostPaths, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crashkernel", "--set", "256Q"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("kdumper: error: crashkernel=256Q: unrecognized character 'Q'")
    assert "Traceback" not in err
