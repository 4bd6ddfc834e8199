"""``kdumper dmesg`` and ``kdumper report`` on real vmcores from the VM harness.

Every vmcore is checked: the harness's default matrix (the one ``tests/vm/test_harness.py``
builds: 6.1 and 6.12 "busy" sysrq crashes, "minimal" NULL dereference, BUG() and WARN()
crashes; ``KDUMPER_VM_FULL=1`` for every trigger on both kernels) plus whatever else is in the
harness cache. ``KDUMPER_VM_CACHED_ONLY=1`` skips the ones not built yet instead of booting QEMU.

* ``kdumper dmesg`` is byte-identical to the ``makedumpfile --dump-dmesg`` output the capture
  kernel wrote (1.7.2 for 6.1, so ``--no-caller-id``; 1.7.6 for 6.12: the default form), from the
  raw ELF ``/proc/vmcore``, the ``-d 31 -c``/``-z`` files and a flattened conversion;
* ``kdumper report --json`` names the crash with the expected title and kind, the panic CPU
  with its registers, the kernel, crash time and uptime;
* one bug, different boots, the same signature: the same NULL dereference crashed in two real
  boots (``boot=`` of the harness: other KASLR slide, PIDs and times), the same log with every
  boot-specific detail rewritten, and the same trigger on the other kernel (the same title).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kdumper import open as kdumper_open
from vmharness.cache import cache_root
from vmharness.pytest_plugin import VmcoreFactory, vmcore_factory
from vmharness.vmcore import VmcoreArtifacts, load_artifacts

__all__ = ["vmcore_factory"]  # the fixture, imported for the tests below

pytestmark = pytest.mark.vm

KERNELS = ("6.1", "6.12")
MATRIX: list[tuple[str, str, str]] = [
    ("6.1", "busy", "sysrq"),
    ("6.12", "busy", "sysrq"),
    ("6.1", "minimal", "null"),
    ("6.12", "minimal", "bug"),
    ("6.1", "minimal", "warn"),
    ("6.12", "minimal", "softlockup"),
]
if os.environ.get("KDUMPER_VM_FULL"):
    MATRIX += [
        (k, "minimal", t)
        for k in KERNELS
        for t in ("sysrq", "null", "bug", "warn", "softlockup", "panic")
        if (k, "minimal", t) not in MATRIX
    ]

#: trigger → (title, kind) of the crash as kdumper report names it
EXPECTED: dict[str, tuple[str, str]] = {
    "sysrq": ("sysrq triggered crash", "sysrq"),
    "null": ("BUG: kernel NULL pointer dereference in kdumper_crash_null", "null_deref"),
    "bug": ("kernel BUG in kdumper_crash_bug", "bug"),
    "warn": ("WARNING in kdumper_crash_warn", "warning"),
    "softlockup": ("soft lockup in kdumper_crash_softlockup", "soft_lockup"),
    "panic": ("Kernel panic: kdumper_crash: panic requested", "panic"),
}
TIMEOUT = 300


def _cached() -> list[Path]:
    root = cache_root() / "vmcores"
    if not root.is_dir():
        return []
    return sorted(
        d for d in root.iterdir() if (d / "info.json").is_file() and (d / "vmcore.elf").is_file()
    )


def _matches(directory: Path, kernel: str, scenario: str, trigger: str) -> bool:
    info = json.loads((directory / "info.json").read_text())
    return (
        info.get("trigger") == trigger
        and info.get("scenario") == scenario
        and str(info.get("kernel_release", "")).startswith(kernel + ".")
    )


def _params() -> list[Any]:
    cached = _cached()
    out: list[Any] = []
    used: set[Path] = set()
    for spec in MATRIX:
        hit = next((d for d in cached if _matches(d, *spec)), None)
        if hit is not None:
            used.add(hit)
        out.append(pytest.param(hit or spec, id="-".join(spec)))
    out += [pytest.param(d, id=d.name.rsplit("-", 1)[0]) for d in cached if d not in used]
    return out


@pytest.fixture(params=_params())
def art(request: pytest.FixtureRequest, vmcore_factory: VmcoreFactory) -> VmcoreArtifacts:
    """One harness vmcore: from the cache, else built (unless KDUMPER_VM_CACHED_ONLY)."""
    param = request.param
    if isinstance(param, Path):
        return load_artifacts(param)
    if os.environ.get("KDUMPER_VM_CACHED_ONLY"):
        pytest.skip(f"{'-'.join(param)} is not in the harness cache (KDUMPER_VM_CACHED_ONLY)")
    kernel, scenario, trigger = param
    return vmcore_factory(kernel=kernel, scenario=scenario, trigger=trigger)


def kdumper(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kdumper", *map(os.fspath, args)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def caller_flag(art: VmcoreArtifacts) -> list[str]:
    """makedumpfile 1.7.5+ prints caller ids; older ones (1.7.2) do not."""
    major, minor, patch = (int(x) for x in art.makedumpfile_version.split(".")[:3])
    return [] if (major, minor, patch) >= (1, 7, 5) else ["--no-caller-id"]


def report(art: VmcoreArtifacts, dump: Path | None = None) -> dict[str, Any]:
    res = kdumper("report", "--json", dump or art.makedumpfile_d31)
    assert res.returncode == 0, res.stderr.decode()
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


# ------------------------------------------------------------------------------- dmesg


@pytest.mark.parametrize("which", ["elf", "d31c", "d31z"])
def test_dmesg_byte_identical(art: VmcoreArtifacts, which: str) -> None:
    dump = {"elf": art.elf, "d31c": art.makedumpfile_d31, "d31z": art.makedumpfile_d31_zstd}[which]
    if dump is None:
        pytest.skip(f"no -d 31 -z file (makedumpfile {art.makedumpfile_version} has no zstd)")
    res = kdumper("dmesg", *caller_flag(art), dump)
    assert res.returncode == 0, res.stderr.decode()
    want = art.dmesg.read_bytes()
    if res.stdout != want:
        ours, theirs = res.stdout.splitlines(), want.splitlines()
        first = next(
            (k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        pytest.fail(
            f"line {first + 1} differs ({len(ours)} vs {len(theirs)} lines):\n"
            f"ours:         {ours[first] if first < len(ours) else b'<end>'!r}\n"
            f"makedumpfile: {theirs[first] if first < len(theirs) else b'<end>'!r}"
        )


def test_dmesg_flattened(art: VmcoreArtifacts, tmp_path: Path) -> None:
    flat = tmp_path / "vmcore.flat"
    res = kdumper("convert", art.makedumpfile_d31, flat, "--format", "flat")
    assert res.returncode == 0, res.stderr.decode()
    res = kdumper("dmesg", *caller_flag(art), flat)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == art.dmesg.read_bytes()


def test_dmesg_default_form_and_json(art: VmcoreArtifacts) -> None:
    """The default form has the caller column (these kernels record caller ids); JSON agrees."""
    res = kdumper("dmesg", art.makedumpfile_d31)
    first = res.stdout.split(b"\n", 1)[0]
    assert re.match(rb"^\[\s*\d+\.\d{6}\] \[\s*[TC]\d+\] ", first), first
    doc = json.loads(kdumper("dmesg", "--json", art.makedumpfile_d31).stdout)
    assert doc["layout"] == "lockless" and doc["complete"] and doc["has_caller_id"]
    texts = [r["text"] for r in doc["records"]]
    assert any(EXPECTED_LOG_LINE[art.trigger] in t for t in texts)
    seqs = [r["seq"] for r in doc["records"]]
    assert seqs == sorted(seqs)


EXPECTED_LOG_LINE = {
    "sysrq": "sysrq triggered crash",
    "null": "BUG: kernel NULL pointer dereference",
    "bug": "kernel BUG at",
    "warn": "kdumper_crash: WARN() requested",
    "softlockup": "soft lockup",
    "panic": "kdumper_crash: panic requested",
}


# ------------------------------------------------------------------------------ report


def test_report_names_the_crash(art: VmcoreArtifacts) -> None:
    doc = report(art)
    title, kind = EXPECTED[art.trigger]
    assert doc["title"] == title
    assert doc["kind"] == kind
    assert re.fullmatch(r"[0-9a-f]{64}", doc["signature"])
    assert doc["kernel"]["release"] == art.kernel_release
    assert doc["kernel"]["machine"] == "x86_64" and doc["kernel"]["source"] == "memory"
    assert doc["crash_time"] and doc["crash_time_utc"].endswith("Z")
    assert 0 < doc["uptime"] < 3600
    panic = doc["panic"]
    assert panic["cpu"] is not None and panic["pid"] is not None
    regs = doc["registers"]
    assert regs is not None and regs["cpu"] == panic["cpu"]
    assert int(regs["pc"], 16) >= 0xFFFF_FFFF_8000_0000  # a kernel text address
    prim = doc["primary_report"]
    assert prim is not None and prim["title"] == title
    assert doc["next_steps"]["debug_package"] == f"linux-image-{art.kernel_release}-dbg"
    assert len(doc["log"]["last_lines"]) == 50
    mem = doc["memory"]
    assert mem["available"], mem["note"]
    by_name = {c["name"]: c["pages"] for c in mem["classes"]}
    assert sum(by_name.values()) == mem["total_pages"]
    assert by_name["free"] > 0 and by_name["kernel"] > 0


def test_report_panic_cpu_is_in_the_crash_path(art: VmcoreArtifacts) -> None:
    """The panic CPU's registers: saved by panic()'s __crash_kexec, or (an oops with oops=panic
    goes to crash_kexec from oops_end) the oops's own registers in the module's code."""
    doc = report(art, art.elf)
    regs = doc["registers"]
    pc = int(regs["pc"], 16)
    if art.trigger in ("null", "bug"):
        assert pc >= 0xFFFF_FFFF_C000_0000, regs  # module space: kdumper_crash.ko
        # kallsyms names vmlinux only; the report's RIP names it (same RSP as the note)
        assert regs["symbol"].startswith(f"kdumper_crash_{art.trigger}+"), regs["symbol"]
        assert regs["symbol"].endswith(" [kdumper_crash]")
    else:
        assert regs["symbol"] is not None, "kallsyms did not name the panic CPU's pc"
        assert regs["symbol"].startswith("__crash_kexec+"), regs["symbol"]
    if doc["panic"]["task_source"] == "log":
        assert regs["pid"] == doc["panic"]["pid"]


def test_report_same_from_every_format(art: VmcoreArtifacts) -> None:
    a, b = report(art, art.elf), report(art, art.makedumpfile_d31)
    for key in ("title", "signature", "kind", "panic", "taint", "crash_time", "uptime"):
        assert a[key] == b[key], key


def test_report_html(art: VmcoreArtifacts, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = kdumper("report", "--html", out, art.makedumpfile_d31)
    assert res.returncode == 0, res.stderr.decode()
    page = out.read_text()
    assert EXPECTED[art.trigger][0].replace("&", "&amp;") in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert out.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------- one bug, one signature

_KADDR = re.compile(r"\b(ffff[0-9a-f]{12})\b")
_PID = re.compile(r"\b(PID: |pid |\[\s*T)(\d+)")
_STAMP = re.compile(r"^\[\s*(\d+)\.(\d{6})\]", re.M)


def another_boot(text: str) -> str:
    """The same log as another boot would print it: other KASLR slide, PIDs and times."""
    slide = 0x1E600000
    text = _KADDR.sub(lambda m: f"{(int(m.group(1), 16) + slide) % (1 << 64):016x}", text)
    text = _PID.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + 4242}", text)
    return _STAMP.sub(
        lambda m: f"[{int(m.group(1)) + 37:5d}.{(int(m.group(2)) * 7) % 1000000:06d}]", text
    )


def test_signature_survives_another_boot(art: VmcoreArtifacts) -> None:
    from kdumper.triage.oops import lines_from_text, parse_log, primary
    from kdumper.triage.signature import describe

    text = kdumper("dmesg", art.makedumpfile_d31).stdout.decode("utf-8", "replace")
    changed = another_boot(text)
    assert changed != text
    crashes = []
    for log in (text, changed):
        reports = parse_log(lines_from_text(log))
        k = primary(reports)
        assert k is not None
        crashes.append(describe(reports[k]))
    assert crashes[0].title == crashes[1].title == EXPECTED[art.trigger][0]
    assert crashes[0].signature == crashes[1].signature
    assert crashes[0].signature == report(art)["signature"]


def test_same_trigger_same_title_on_both_kernels(vmcore_factory: VmcoreFactory) -> None:
    """Each trigger cached for both kernels: same title (and for sysrq, the same signature)."""
    by_trigger: dict[str, dict[str, Path]] = {}
    for d in _cached():
        info = json.loads((d / "info.json").read_text())
        by_trigger.setdefault(info["trigger"], {})[info["kernel_release"]] = d
    pairs = {t: list(ds.values()) for t, ds in by_trigger.items() if len(ds) > 1}
    if not pairs:
        pytest.skip("no trigger is cached for two different kernels yet")
    for trigger, dirs in pairs.items():
        docs = [report(load_artifacts(d)) for d in dirs]
        assert {d["title"] for d in docs} == {EXPECTED[trigger][0]}, trigger
        if trigger == "sysrq":
            assert len({d["signature"] for d in docs}) == 1


def test_same_bug_two_real_boots(vmcore_factory: VmcoreFactory) -> None:
    """The same NULL dereference crashed in two boots: other KASLR slide, same signature."""
    if os.environ.get("KDUMPER_VM_CACHED_ONLY"):
        pytest.skip("builds a second boot (KDUMPER_VM_CACHED_ONLY)")
    arts = [
        vmcore_factory(kernel="6.1", scenario="minimal", trigger="null", boot=boot)
        for boot in (0, 1)
    ]
    docs = [report(a, a.elf) for a in arts]
    slides = []
    for a in arts:
        with kdumper_open(a.elf) as dump:
            assert dump.vmcoreinfo is not None
            slides.append(dump.vmcoreinfo.kerneloffset)
    assert docs[0]["title"] == docs[1]["title"] == EXPECTED["null"][0]
    assert docs[0]["signature"] == docs[1]["signature"]
    # two real boots: crashed at different times, (almost always) with different KASLR slides
    assert docs[0]["crash_time"] != docs[1]["crash_time"]
    print(f"KASLR slides of the two boots: {slides}")
