"""The raw device target: ``kdumper capture`` writes header + kernel log + flattened dump onto a
device (a regular file standing for one, or a loop device), ``kdumper recover-raw`` rebuilds the
dump into the dump directory once and marks the area recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kdumper
from kdumper.cli.recover_raw_cmd import recover_at_boot
from kdumper.collect.capture import CaptureEnv, capture
from kdumper.collect.raw import (
    HEADER_BLOCK,
    RAW_MAGIC,
    STATUS_COMPLETE,
    STATUS_RECOVERED,
    STATUS_WRITING,
    RawArea,
    RawHeader,
    recover_device,
)
from kdumper.config import Config, RetentionConfig, SpaceLimit, TargetConfig
from kdumper.errors import DumpFormatError
from kdumper.host.service import TEST_ID_FILE
from kdumper.triage.report import triage_json
from tests import test_capture
from tests.test_capture import NAME, Recorder, assert_same_pages, env_for

# the capture tests' module-scoped fixtures: the same synthetic vmcore and its dmesg
vmcore = test_capture.vmcore
dmesg_text = test_capture.dmesg_text

OFFSET = 1 << 20


def raw_config(device: Path, target: Path, **kw: Any) -> Config:
    return Config(
        target=TargetConfig(path=str(target), raw=str(device), raw_offset=OFFSET),
        retention=RetentionConfig(min_free=SpaceLimit(0)),
        **kw,
    )


def device_file(tmp_path: Path, size: int = 64 << 20, fill: bytes = b"\xa5") -> Path:
    """A file standing for the device; the bytes before the area hold a pattern."""
    dev = tmp_path / "device"
    with open(dev, "wb") as f:
        f.write(fill * OFFSET)
        f.truncate(size)
    return dev


def capture_raw(vmcore: Path, tmp_path: Path, dev: Path, cmdline: str = "", **kw: Any) -> Any:
    rec = Recorder()
    res = capture(
        raw_config(dev, tmp_path / "crash", **kw), env_for(vmcore, tmp_path, rec, cmdline)
    )
    return res, rec


def header_of(dev: Path) -> RawHeader:
    with RawArea(str(dev), OFFSET, writable=False) as area:
        h = area.read_header()
    assert h is not None
    return h


def test_capture_then_recover(vmcore: Path, dmesg_text: bytes, tmp_path: Path) -> None:
    dev = device_file(tmp_path)
    res, rec = capture_raw(vmcore, tmp_path, dev, "kdumper.test_id=5-raw")
    assert res.status == "complete" and rec.actions == ["reboot"]
    assert not (tmp_path / "crash").exists()  # nothing is written there in the capture kernel
    with open(dev, "rb") as f:
        assert f.read(OFFSET) == b"\xa5" * OFFSET  # the bytes before raw_offset are untouched
        assert f.read(16) == RAW_MAGIC
    h = header_of(dev)
    assert h.status == STATUS_COMPLETE and h.name == NAME and h.test_id == "5-raw"
    assert h.nodename == "synth-host" and h.crash_time == 1_718_000_000
    assert h.dmesg_offset == HEADER_BLOCK and h.dmesg_length == len(dmesg_text)
    assert h.dump_offset % 4096 == 0 and h.dump_length > 0

    said: list[str] = []
    out = recover_device(
        str(dev), OFFSET, str(tmp_path / "crash"), say=said.append, triage=triage_json
    )
    assert out.status == "complete" and out.dump_dir == str(tmp_path / "crash" / NAME)
    d = Path(out.dump_dir)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["vmcore", "vmcore-dmesg.txt", "report.json", TEST_ID_FILE]
    )
    assert (d / "vmcore-dmesg.txt").read_bytes() == dmesg_text
    assert (d / TEST_ID_FILE).read_text().strip() == "5-raw"
    assert json.loads((d / "report.json").read_text())["capture"]["target"] == "raw"
    with kdumper.open(str(d / "vmcore")) as saved:
        assert saved.format == "kdump" and not saved.facts().incomplete
    assert assert_same_pages(vmcore, d / "vmcore") > 4000
    assert header_of(dev).status == STATUS_RECOVERED
    # a second run does nothing
    again = recover_device(str(dev), OFFSET, str(tmp_path / "crash"))
    assert again.status == "already" and again.dump_dir is None
    assert [p.name for p in (tmp_path / "crash").iterdir()] == [NAME]


def test_no_dump_on_the_device(tmp_path: Path) -> None:
    dev = device_file(tmp_path, size=4 << 20)
    out = recover_device(str(dev), OFFSET, str(tmp_path / "crash"))
    assert out.status == "none" and not out.found
    assert not (tmp_path / "crash").exists()


def test_cut_stream_is_recovered_as_incomplete(vmcore: Path, tmp_path: Path) -> None:
    """A capture killed midway: the header still says ``writing`` and counts part of the stream."""
    dev = device_file(tmp_path)
    res, _ = capture_raw(vmcore, tmp_path, dev)
    assert res.status == "complete"
    h = header_of(dev)
    with RawArea(str(dev), OFFSET, writable=True) as area:
        h.status, h.dump_length = STATUS_WRITING, h.dump_length // 2
        area.write_header(h)
    out = recover_device(str(dev), OFFSET, str(tmp_path / "crash"))
    assert out.status == "incomplete"
    d = Path(str(out.dump_dir))
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["vmcore-incomplete", "vmcore-dmesg.txt", "report.json"]
    )
    with kdumper.open(str(d / "vmcore-incomplete")) as cut:
        assert cut.facts().incomplete  # the flag was set in its kdump header
    assert assert_same_pages(vmcore, d / "vmcore-incomplete") > 100
    assert header_of(dev).status == STATUS_RECOVERED


def test_damaged_stream_fails_its_checksum(vmcore: Path, tmp_path: Path) -> None:
    dev = device_file(tmp_path)
    capture_raw(vmcore, tmp_path, dev)
    h = header_of(dev)
    with open(dev, "r+b") as f:  # flip bytes in the last page data (records stay parseable)
        pos = OFFSET + h.dump_offset + h.dump_length - 5000
        f.seek(pos)
        data = f.read(16)
        f.seek(pos)
        f.write(bytes(b ^ 0xFF for b in data))
    out = recover_device(str(dev), OFFSET, str(tmp_path / "crash"))
    assert out.status == "incomplete"
    assert any("checksum" in w for w in out.warnings)
    assert (Path(str(out.dump_dir)) / "vmcore-incomplete").exists()


def test_corrupt_header(vmcore: Path, tmp_path: Path) -> None:
    dev = device_file(tmp_path)
    capture_raw(vmcore, tmp_path, dev)
    with open(dev, "r+b") as f:
        f.seek(OFFSET + 40)
        f.write(b"\xff\xff")
    with pytest.raises(DumpFormatError, match="checksum mismatch"):
        recover_device(str(dev), OFFSET, str(tmp_path / "crash"))


def test_refuses_to_overwrite_a_filesystem(vmcore: Path, tmp_path: Path) -> None:
    dev = device_file(tmp_path, size=8 << 20)
    with open(dev, "r+b") as f:
        f.seek(OFFSET + 1080)
        f.write(b"\x53\xef")  # the ext4 superblock magic
    before = dev.read_bytes()
    res, rec = capture_raw(vmcore, tmp_path, dev, failure_action="halt")
    assert res.status == "failed"
    assert res.target is not None and "ext2/ext3/ext4" in str(res.target.error)
    assert dev.read_bytes() == before
    assert rec.actions == ["halt"]


def test_missing_device(vmcore: Path, tmp_path: Path) -> None:
    res, rec = capture_raw(vmcore, tmp_path, tmp_path / "missing", failure_action="poweroff")
    assert res.status == "failed" and res.exit_code == 5
    assert any("no such device" in line for line in rec.lines)
    assert rec.actions == ["poweroff"]


def kdumper_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdumper", *args], capture_output=True, text=True, check=False
    )


def test_cli_recover_raw(vmcore: Path, tmp_path: Path) -> None:
    dev = device_file(tmp_path)
    capture_raw(vmcore, tmp_path, dev)
    conf = tmp_path / "kdumper.toml"
    conf.write_text(
        f'[target]\npath = "{tmp_path / "crash"}"\nraw = "/dev/not-this-one"\nraw_offset = "1M"\n'
    )
    proc = kdumper_cmd("recover-raw", "--config", str(conf), "--device", str(dev), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "complete" and out["header"]["status"] == "recovered"
    assert (Path(out["dump_dir"]) / "vmcore").exists()
    proc = kdumper_cmd("recover-raw", "--config", str(conf), "--device", str(dev))
    assert proc.returncode == 0 and "recovered already" in proc.stdout
    proc = kdumper_cmd("recover-raw", "--config", str(conf))
    assert proc.returncode == 5
    assert proc.stderr.strip() == "kdumper: error: raw target /dev/not-this-one: no such device"
    conf.write_text(f'[target]\npath = "{tmp_path / "crash"}"\n')
    proc = kdumper_cmd("recover-raw", "--config", str(conf))
    assert proc.returncode == 2 and "no raw device" in proc.stderr


def test_recover_at_boot(vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = device_file(tmp_path)
    capture_raw(vmcore, tmp_path, dev)
    cfg = raw_config(dev, tmp_path / "crash")
    recover_at_boot(cfg)
    assert (tmp_path / "crash" / NAME / "vmcore").exists()
    assert "recovered the dump" in capsys.readouterr().err
    # a missing device is a warning at boot, never an exception
    recover_at_boot(raw_config(tmp_path / "gone", tmp_path / "crash"))
    assert "no such device" in capsys.readouterr().err
    recover_at_boot(Config(target=TargetConfig(path=str(tmp_path / "crash"))))  # not raw: no-op


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB loop device (root only): a block device with a real capacity."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    backing = tmp_path / "backing"
    with open(backing, "wb") as f:
        f.truncate(6 << 20)
    proc = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    dev = Path(proc.stdout.strip())
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", str(dev)], capture_output=True, check=False)


def test_full_device_gives_an_incomplete_dump(
    vmcore: Path, tmp_path: Path, loop_device: Path
) -> None:
    rec = Recorder()
    cfg = raw_config(loop_device, tmp_path / "crash", failure_action="halt")
    res = capture(cfg, env_for(vmcore, tmp_path, rec))
    assert res.status == "incomplete" and rec.actions == ["halt"]
    assert header_of(loop_device).status == 3  # incomplete
    out = recover_device(str(loop_device), OFFSET, str(tmp_path / "crash"))
    assert out.status == "incomplete"
    d = Path(str(out.dump_dir))
    assert (d / "vmcore-dmesg.txt").stat().st_size > 0
    with kdumper.open(str(d / "vmcore-incomplete")) as cut:
        assert cut.facts().incomplete
    assert assert_same_pages(vmcore, d / "vmcore-incomplete") > 100


def test_area_header_round_trip() -> None:
    h = RawHeader(
        status=STATUS_COMPLETE,
        crash_time=-5,
        written_at=1,
        dmesg_offset=4096,
        dmesg_length=10,
        dump_offset=8192,
        dump_length=1 << 40,
        dump_crc32=0xDEADBEEF,
        name="h-2024-01-01-00-00-00",
        nodename="n" * 80,
        test_id="1-x",
    )
    raw = h.pack()
    assert len(raw) == HEADER_BLOCK
    back = RawHeader.unpack(raw, "dev")
    assert back is not None
    assert back.dump_length == 1 << 40 and back.dump_crc32 == 0xDEADBEEF
    assert back.nodename == "n" * 64 and back.crash_time == -5
    assert RawHeader.unpack(b"\0" * 4096, "dev") is None


def test_env_defaults() -> None:
    env = CaptureEnv()
    assert env.vmcore == "/proc/vmcore" and env.act


def test_load_boot_recovers_then_reports_the_test(
    vmcore: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At the next boot, ``kdumper load --boot`` copies the raw dump first, so the pending
    ``kdumper test`` is found passed."""
    import platform

    from kdumper.cli.main import main
    from kdumper.host import service
    from tests.fakehost import FakeKexec, make_host

    dev = device_file(tmp_path)
    res, _ = capture_raw(vmcore, tmp_path, dev, "kdumper.test_id=42-boot")
    assert res.status == "complete"
    host = make_host(tmp_path / "r", "reserved", release=platform.release())
    state = {"id": "42-boot", "status": "pending", "requested_at": 1, "boot_id": "before-crash"}
    Path(host.paths.test_state_file).write_text(json.dumps(state))
    fake = FakeKexec(host.paths)
    monkeypatch.setattr(service.Host, "kexec_call", lambda self: fake)
    monkeypatch.setenv("KDUMPER_HOST_ROOT", str(tmp_path / "r"))
    conf = tmp_path / "k.toml"
    conf.write_text(f'[target]\npath = "{tmp_path / "crash"}"\nraw = "{dev}"\nraw_offset = "1M"\n')
    monkeypatch.setenv("KDUMPER_CONFIG", str(conf))
    assert main(["load", "--boot"]) == 0
    err = capsys.readouterr().err
    assert "recovered the dump" in err
    assert "last kdumper test 42-boot: passed" in err
    assert (tmp_path / "crash" / NAME / "vmcore").exists()
    assert len(fake.calls) == 1
