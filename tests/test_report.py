"""``kernel.crashinfo``, ``kernel.kallsyms``, ``triage.report`` and ``kdumper report``.

Synthetic vmcores (``tests/synth.py``) give exact ground truth: utsname, crash time, the
registers of each CPU, the page classes; their logs are replaced to carry an oops, taint and
hostile text. The HTML page is opened in headless Chromium (Debian package ``chromium``) and
its screenshot checked (and decoded with a small PNG reader: zlib plus the five row filters).
Real harness vmcores in the cache, when there are any, are reported too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kdumper
from kdumper.errors import ExitCode
from kdumper.kernel.crashinfo import (
    TAINT_FLAGS,
    crash_info,
    log_facts,
    taint_from_mask,
)
from kdumper.kernel.printk import LogRecord
from kdumper.kernel.utsname import read_utsname
from kdumper.triage.report import build_report, next_steps, render_html, render_text, report_to_json
from tests.synth import PageClass, PrintkRecord, SynthInfo, make_vmcore

DATA = Path(__file__).parent / "data" / "oops"
TIMEOUT = 120
_STAMP = re.compile(r"^\[\s*(\d+)\.(\d{6})\] ?(.*)$")


def kdumper_cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kdumper", *map(os.fspath, args)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def records_from(text: str, caller: int = 187) -> list[PrintkRecord]:
    """Kernel log records from a saved dmesg (``[ secs.usecs] text`` lines)."""
    out = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m is None:
            continue
        ts = int(m.group(1)) * 10**9 + int(m.group(2)) * 1000
        out.append(PrintkRecord(m.group(3), ts_nsec=ts, level=4, caller_id=caller))
    return out


Maker = Callable[..., SynthInfo]


@pytest.fixture
def make(tmp_path: Path) -> Maker:
    def build(name: str = "vmcore", **kw: Any) -> SynthInfo:
        kw.setdefault("mem_mib", 32)
        kw.setdefault("seed", 11)
        return make_vmcore(tmp_path / name, **kw)

    return build


@pytest.fixture(scope="module")
def sysrq(tmp_path_factory: pytest.TempPathFactory) -> SynthInfo:
    """The synthetic default: a 6.1-style boot log ending in a sysrq panic on CPU 0."""
    return make_vmcore(tmp_path_factory.mktemp("sysrq") / "vmcore", mem_mib=48, seed=5)


# ------------------------------------------------------------------------------ crashinfo


def test_crash_info_of_synthetic_sysrq(sysrq: SynthInfo) -> None:
    with kdumper.open(sysrq.path) as dump:
        ci = crash_info(dump)
        assert read_utsname(dump) == sysrq.utsname  # the old entry point still works
    assert ci.utsname == sysrq.utsname and ci.utsname_source == "memory"
    assert ci.crash_time == sysrq.crashtime
    assert ci.uptime == pytest.approx(sysrq.printk_records[-1].ts_nsec / 1e9)
    assert ci.uptime_source == "log"
    assert ci.boot_time == pytest.approx(sysrq.crashtime - ci.uptime)
    assert ci.panic_message == "sysrq triggered crash"
    assert (ci.panic_cpu, ci.panic_cpu_source) == (sysrq.panic_cpu, "log")
    assert (ci.pid, ci.comm) == (sysrq.pids[0], "bash")
    assert ci.taint == "" and ci.taint_source == "log" and ci.taint_names() == []
    assert len(ci.cpus) == sysrq.nr_cpus
    for state, regs, pid in zip(ci.cpus, sysrq.registers, sysrq.pids, strict=True):
        assert {k: state.registers.get(k, 0) for k in regs} == regs and state.pid == pid
        assert state.pc == regs["rip"] and state.sp == regs["rsp"]
        assert state.symbol is None  # the synthetic kernel exports no kallsyms
    assert ci.panic_cpu_state is ci.cpus[0]
    assert ci.notes == []
    doc = ci.to_dict()
    assert doc["cpus"][0]["registers"]["rip"] == f"{sysrq.registers[0]['rip']:#018x}"
    json.dumps(doc)


def test_crash_info_without_log_or_vmcoreinfo_keys(make: Maker) -> None:
    info = make(vmcoreinfo_drop=["SYMBOL(prb)", "CRASHTIME", "SYMBOL(init_uts_ns)"])
    with kdumper.open(info.path) as dump:
        ci = crash_info(dump)
    assert ci.utsname is not None and ci.utsname.release == info.osrelease
    assert ci.utsname_source == "vmcoreinfo"
    assert ci.crash_time is None and ci.uptime is None and ci.panic_message is None
    # no log: the panic CPU is the only one not running the idle task
    assert (ci.panic_cpu, ci.panic_cpu_source) == (0, "prstatus")
    assert ci.pid == info.pids[0] and ci.task_source == "prstatus"
    assert any("CRASHTIME" in n for n in ci.notes)
    assert any("kernel log unreadable" in n for n in ci.notes)


def rec(text: str, caller: int | None = 7, ts: int = 0) -> LogRecord:
    return LogRecord(0, ts, 4, 0, caller, text.encode())


def test_log_facts_oops_then_fatal_exception() -> None:
    """The oops's report line comes before panic("Fatal exception"); panic() prints none."""
    recs = [
        rec("BUG: kernel NULL pointer dereference, address: 0000000000000000"),
        rec("Oops: 0002 [#1] PREEMPT SMP NOPTI"),
        rec("CPU: 3 PID: 812 Comm: kworker/3:1 Tainted: G        W  O      6.1.0-9-amd64 #1"),
        rec("RIP: 0010:foo+0x1/0x2"),
        rec("CPU: 0 PID: 1 Comm: other Not tainted 6.1.0-9-amd64 #1", caller=1),
        rec("Kernel panic - not syncing: Fatal exception"),
    ]
    facts = log_facts(recs)
    assert facts.panic_message == "Fatal exception"
    assert (facts.cpu, facts.pid, facts.comm, facts.taint) == (0, 1, "other", "")
    recs.pop(4)  # without the unrelated later line: the oops's own
    facts = log_facts(recs)
    assert (facts.cpu, facts.pid, facts.comm, facts.taint) == (3, 812, "kworker/3:1", "WO")


def test_log_facts_panic_prints_its_own_report_line() -> None:
    recs = [
        rec("CPU: 1 PID: 5 Comm: early Not tainted 6.12.0 #1", caller=5),
        rec("Kernel panic - not syncing: softlockup: hung tasks", caller=0x80000002),
        rec("CPU: 2 UID: 0 PID: 44 Comm: spin Tainted: G             L  6.12.0 #1", 0x80000002),
    ]
    facts = log_facts(recs)
    assert (facts.cpu, facts.pid, facts.comm, facts.taint) == (2, 44, "spin", "L")
    assert log_facts([rec("no crash here")]).cpu is None


def test_taint_letters() -> None:
    assert taint_from_mask(0) == ""
    assert taint_from_mask((1 << 9) | (1 << 12) | (1 << 0)) == "PWO"
    assert taint_from_mask(1 << 40).endswith("?")
    assert list(TAINT_FLAGS)[:4] == ["P", "F", "S", "R"] and TAINT_FLAGS["L"] == "SOFTLOCKUP"


# ---------------------------------------------------------------------------------- report


def test_report_of_synthetic_oops(make: Maker) -> None:
    text = (DATA / "synthetic-debian612-null.txt").read_text()
    info = make(dmesg=records_from(text), release="6.12.12-cloud-amd64")
    with kdumper.open(info.path) as dump:
        r = build_report(dump)
    doc = report_to_json(r)
    assert doc["schema"] == "kdumper-report-1"
    assert doc["title"] == "BUG: kernel NULL pointer dereference in kdumper_crash_null"
    assert doc["kind"] == "null_deref" and re.fullmatch(r"[0-9a-f]{64}", doc["signature"])
    assert doc["primary_report"]["guilty"].startswith("kdumper_crash_null+")
    assert doc["panic"] == {
        "message": None,  # kdump went straight from the oops to the capture kernel
        "cpu": 1,
        "cpu_source": "log",
        "pid": 187,
        "comm": "sh",
        "task_source": "log",
    }
    assert doc["taint"] == {
        "letters": "OE",
        "flags": ["OOT_MODULE", "UNSIGNED_MODULE"],
        "source": "log",
    }
    # the synthetic CPU 1 was idle: the report says the notes may not be numbered by CPU
    assert any("may not be numbered by CPU" in n for n in doc["notes"])
    assert doc["registers"]["cpu"] == 1
    assert doc["kernel"]["release"] == "6.12.12-cloud-amd64"
    assert doc["next_steps"]["debug_package"] == "linux-image-6.12.12-cloud-amd64-dbg"
    assert doc["log"]["last_lines"][-1].endswith("] CR2: 0000000000000000")
    assert len(doc["log"]["last_lines"]) == len(records_from(text))  # fewer than 50
    text_out = render_text(r)
    assert "title:" in text_out and "kdumper_crash_write+0xb1/0xd0 [kdumper_crash]" in text_out


def test_report_json_keys_are_stable(sysrq: SynthInfo) -> None:
    res = kdumper_cli("report", "--json", sysrq.path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert list(doc) == [
        "schema", "kdumper_version", "dump", "kernel", "crash_time", "crash_time_utc", "uptime",
        "uptime_source", "boot_time_utc", "title", "signature", "kind", "panic", "taint",
        "primary_report", "reports", "registers", "cpus", "log", "memory", "next_steps", "notes",
    ]  # fmt: skip
    assert doc["title"] == "sysrq triggered crash" and doc["kind"] == "sysrq"
    assert doc["crash_time"] == sysrq.crashtime and doc["crash_time_utc"] == "2024-06-10T06:13:20Z"
    assert doc["kernel"] == {
        "release": sysrq.utsname.release,
        "version": sysrq.utsname.version,
        "machine": "x86_64",
        "nodename": sysrq.utsname.nodename,
        "source": "memory",
    }
    assert doc["registers"]["pc"] == f"{sysrq.registers[0]['rip']:#018x}"
    assert doc["dump"] == {"paths": [sysrq.path], "format": "elf"}
    assert [r["primary"] for r in doc["reports"]].count(True) == 1


def test_memory_composition_matches_ground_truth(sysrq: SynthInfo) -> None:
    with kdumper.open(sysrq.path) as dump:
        r = build_report(dump)
    assert r.memory is not None, r.memory_note
    counts = sysrq.class_counts()
    want = {
        "free": counts["FREE"],
        "cache": counts["CACHE"],
        "cache_private": counts["CACHE_PRIVATE"],
        "user": counts["ANON"] + counts["HUGETLB"],
        "hwpoison": counts["HWPOISON"],
        "offline": counts["OFFLINE"],
    }
    present = int(sysrq.present.sum())
    assert r.memory.total_pages == present
    assert {k: r.memory.pages[k] for k in want} == want
    kernel = sum(counts[c.name] for c in (PageClass.RESERVED, PageClass.KERNEL, PageClass.SLAB,
                                          PageClass.PGTABLE))  # fmt: skip
    assert r.memory.pages["kernel"] == kernel


def test_memory_composition_skipped_with_a_note(make: Maker) -> None:
    info = make(vmcoreinfo_drop=["SYMBOL(mem_section)"])
    with kdumper.open(info.path) as dump:
        r = build_report(dump)
    assert r.memory is None and r.memory_note and "memory composition" in r.memory_note
    assert report_to_json(r)["memory"]["available"] is False
    assert "memory composition" in render_text(r)


def test_report_without_a_log(make: Maker) -> None:
    info = make(vmcoreinfo_drop=["SYMBOL(prb)"])
    res = kdumper_cli("report", "--json", info.path)
    assert res.returncode == ExitCode.INCOMPLETE
    doc = json.loads(res.stdout)
    assert doc["title"] == "no crash report in the kernel log" and doc["signature"] is None
    assert any("kernel log unreadable" in n for n in doc["notes"])
    assert b"kdumper: warning:" in res.stderr


def test_report_text_cli(sysrq: SynthInfo) -> None:
    res = kdumper_cli("report", "--no-memory", "--lines", "5", sysrq.path)
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    head = out.split("\n\n", 1)[0].splitlines()
    assert head[0].startswith("title:") and "sysrq triggered crash" in head[0]
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in head}
    assert len(starts) == 1  # the values start in one column
    assert "last 5 log lines:" in out and "registers of CPU 0" in out
    assert f"crash /usr/lib/debug/boot/vmlinux-{sysrq.osrelease} {sysrq.path}" in out


@pytest.mark.parametrize(
    ("release", "distro", "package", "vmlinux"),
    [
        ("6.1.0-56-cloud-amd64", "debian", "linux-image-6.1.0-56-cloud-amd64-dbg",
         "/usr/lib/debug/boot/vmlinux-6.1.0-56-cloud-amd64"),
        ("6.12.118+deb13-amd64", "debian", "linux-image-6.12.118+deb13-amd64-dbg",
         "/usr/lib/debug/boot/vmlinux-6.12.118+deb13-amd64"),
        ("6.8.0-45-generic", "ubuntu", "linux-image-unsigned-6.8.0-45-generic-dbgsym",
         "/usr/lib/debug/boot/vmlinux-6.8.0-45-generic"),
        ("5.14.0-427.13.1.el9_4.x86_64", "fedora", "kernel-debuginfo-5.14.0-427.13.1.el9_4.x86_64",
         "/usr/lib/debug/lib/modules/5.14.0-427.13.1.el9_4.x86_64/vmlinux"),
        ("6.11.4-301.fc41.x86_64", "fedora", "kernel-debuginfo-6.11.4-301.fc41.x86_64",
         "/usr/lib/debug/lib/modules/6.11.4-301.fc41.x86_64/vmlinux"),
        ("6.4.0-150600.23.7-default", "suse", "kernel-default-debuginfo",
         "/usr/lib/debug/boot/vmlinux-6.4.0-150600.23.7-default.debug"),
        ("6.13.0-rc1", "unknown", None, "/usr/lib/debug/boot/vmlinux-6.13.0-rc1"),
    ],
)  # fmt: skip
def test_next_steps(release: str, distro: str, package: str | None, vmlinux: str) -> None:
    ns = next_steps(release, ["/var/crash/x/dump.202406"], "kdump")
    assert (ns.distro, ns.debug_package, ns.vmlinux) == (distro, package, vmlinux)
    commands = [c for _, c in ns.commands]
    assert f"crash {vmlinux} /var/crash/x/dump.202406" in commands
    assert f"drgn -c /var/crash/x/dump.202406 -s {vmlinux}" in commands


def test_next_steps_flattened_and_split_need_one_file() -> None:
    ns = next_steps("6.1.0-9-amd64", ["/tmp/a b.flat"], "flattened-kdump")
    commands = [c for _, c in ns.commands]
    assert commands[0] == "kdumper reassemble '/tmp/a b.flat' '/tmp/a b.flat.kdump'"
    assert any(c.endswith("'/tmp/a b.flat.kdump'") and c.startswith("crash ") for c in commands)
    ns = next_steps("6.1.0-9-amd64", ["/d/p1", "/d/p2"], "split-kdump")
    assert ns.commands[0][1] == "kdumper reassemble /d/p1 /d/p2 /d/p1.kdump"


# ------------------------------------------------------------------------------------ HTML

HOSTILE = [
    '<script>alert("log")</script>',
    '"><img src=x onerror=alert(1)>',
    "</pre></section><h1>injected</h1><style>body{display:none}</style>",
    "Kernel panic - not syncing: <b>bold</b> & 'quoted' \"text\" <!--",
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> SynthInfo:
    text = (DATA / "synthetic-debian61-panic.txt").read_text()
    recs = records_from(text, caller=412)
    recs[-6:-6] = [PrintkRecord(t, ts_nsec=recs[-7].ts_nsec + 1, caller_id=412) for t in HOSTILE]
    return make_vmcore(
        tmp_path_factory.mktemp("hostile") / "vmcore",
        mem_mib=48,
        seed=8,
        dmesg=recs,
        nodename="<host>&",
    )


def test_html_is_escaped_and_self_contained(hostile: SynthInfo, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = kdumper_cli("report", "--html", out, hostile.path)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for bad in ("<script", "<img", "<h1>injected", "<b>bold", "<style>body{display:none}", "<!--"):
        assert bad not in page, bad
    assert "&lt;script&gt;alert(&quot;log&quot;)&lt;/script&gt;" in page
    assert "&lt;host&gt;&amp;" in page
    # nothing is fetched: no URLs but the SVG namespace, no external references
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"<[^>]*\b(?:src|href)=", page)  # no tag loads anything
    assert "default-src 'none'" in page  # the CSP forbids loading anything anyway
    assert page.count("<svg") == 1 and page.count("<rect") >= 3


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) rows of an 8-bit truecolour PNG (all five filters)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, bpp = 8, bytearray(), 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif f == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def screenshot(page: Path, png: Path, size: str = "1200,2000") -> None:
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run(
            [
                chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={png}",
                f"--window-size={size}", page.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )  # fmt: skip
    assert res.returncode == 0 and png.is_file(), res.stderr.decode()[-2000:]


def test_html_renders_in_chromium(hostile: SynthInfo, tmp_path: Path) -> None:
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    with kdumper.open(hostile.path) as dump:
        page.write_text(render_html(build_report(dump)))
    screenshot(page, png)
    keep = os.environ.get("KDUMPER_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)
    data = png.read_bytes()
    width, height, rows = _png_pixels(data)
    assert (width, height) == (1200, 2000)
    bpp = len(rows[0]) // width
    colours: set[bytes] = set()
    for y in range(0, height, 4):
        row = rows[y]
        colours.update(row[x : x + 3] for x in range(0, len(row), bpp * 3))
    assert len(colours) > 50, f"only {len(colours)} colours: a blank page?"
    # the dark header band and the memory chart's colours are on the page
    assert rows[10][:3] == bytes.fromhex("1d2430")
    chart = {bytes.fromhex(c) for c in ("4e79a7", "f28e2b", "59a14f", "bab0ac")}
    assert chart <= colours, "the memory chart is missing"
    assert "injected" not in page.read_text().replace("&lt;h1&gt;injected", "")


# -------------------------------------------------------------------- real harness vmcores


def _real() -> list[Any]:
    """Every cached harness vmcore, or (empty cache) the 6.12 busy sysrq one, built on demand."""
    try:
        from vmharness.cache import cache_root
    except ImportError:
        return []
    root = cache_root() / "vmcores"
    cached = sorted(p for p in root.glob("*/vmcore.d31c")) if root.is_dir() else []
    return [pytest.param(p, id=p.parent.name) for p in cached] or [
        pytest.param(None, id="6.12-busy-sysrq")
    ]


@pytest.mark.vm
@pytest.mark.parametrize("dump", _real())
def test_report_real(dump: Path | None) -> None:
    if dump is None:
        from vmharness import get_vmcore

        dump = Path(get_vmcore(kernel="6.12", scenario="busy", trigger="sysrq").makedumpfile_d31)
    info = json.loads((dump.parent / "info.json").read_text())
    res = kdumper_cli("report", "--json", dump)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kernel"]["release"] == info["kernel_release"]
    assert doc["taint"]["source"] == "kallsyms"  # Debian kernels export kallsyms
    assert doc["panic"]["cpu_source"] == "kallsyms"
    assert doc["memory"]["available"]
    classes = {c["name"]: c["pages"] for c in doc["memory"]["classes"]}
    free_kib = 4 * classes["free"]
    meminfo = (dump.parent / "meminfo.txt").read_text()
    m = re.search(r"MemFree:\s+(\d+) kB", meminfo)
    assert m is not None
    assert abs(free_kib - int(m.group(1))) < 0.05 * int(m.group(1))  # counted just before


def test_report_from_flattened_and_split(sysrq: SynthInfo, tmp_path: Path) -> None:
    """The same crash from every input format; crash/drgn get a reassembled single file."""
    flat = tmp_path / "v.flat"
    res = kdumper_cli("convert", sysrq.path, flat, "--format", "flat")
    assert res.returncode == 0, res.stderr
    res = kdumper_cli("convert", sysrq.path, tmp_path / "part", "--format", "kdump", "--split", "2")
    assert res.returncode == 0, res.stderr
    parts = sorted(str(p) for p in tmp_path.glob("part*"))
    assert len(parts) == 2, parts
    base = json.loads(kdumper_cli("report", "--json", sysrq.path).stdout)
    for args in ([str(flat)], parts):
        res = kdumper_cli("report", "--json", *args)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        for key in ("title", "signature", "panic", "taint", "crash_time", "registers", "memory"):
            assert doc[key] == base[key], (args, key)
        first = doc["next_steps"]["commands"][0]["command"]
        assert first.startswith("kdumper reassemble "), first
