"""The ssh target against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): dmesg first,
the flattened dump streamed, checksummed and renamed, retries, host keys, a full remote disk."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import kdumper
from kdumper.cli.main import main
from kdumper.collect.targets.ssh import (
    AuthenticationError,
    HostKeyChangedError,
    HostKeyUnknownError,
    RemoteCommandError,
    RemoteNoSpaceError,
    SshTarget,
    TargetUnreachableError,
    check_target,
    dump_dir_name,
    parse_ssh_spec,
    save_dmesg,
    ssh_argv,
    stream_dump,
)
from kdumper.dump.base import Dump
from kdumper.dump.diskdump import write_kdump
from kdumper.dump.flattened import FlatSink, reassemble_flat
from kdumper.errors import ConfigError, DumpIOError, ExitCode, NoSpaceError
from tests.sshd import SshServer, keygen, sshd_server

DMESG = b"[    0.000000] Linux version 6.1.0-test\n[   12.345678] Kernel panic - not syncing\n"


# ---- no server needed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("root@host", ("root", "host", None, None)),
        ("kdump@10.0.0.1:2222", ("kdump", "10.0.0.1", 2222, None)),
        ("host.example.org", (None, "host.example.org", None, None)),
        ("u@[::1]:22", ("u", "::1", 22, None)),
        ("u@::1", ("u", "::1", None, None)),
        ("u@[fe80::1%eth0]", ("u", "fe80::1%eth0", None, None)),
        ("ssh://u@h:2200/srv/crash", ("u", "h", 2200, "/srv/crash")),
    ],
)
def test_parse_ssh_spec(spec: str, expected: tuple[Any, ...]) -> None:
    assert tuple(parse_ssh_spec(spec)) == expected


@pytest.mark.parametrize(
    "spec",
    ["", "@host", "u@", "u@host:0", "u@host:99999", "u@host:x", "-oProxyCommand=x", "u@[::1",
     "u@h st", "-u@host", "u@[::1]x"],
)  # fmt: skip
def test_parse_ssh_spec_rejects(spec: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_ssh_spec(spec)
    assert e.value.exit_code == ExitCode.CONFIG


def test_target_options_and_validation() -> None:
    t = SshTarget.from_spec("kdump@dumps:2222", path="/srv/crash", retries=3, retry_delay=1.5)
    assert (t.user, t.host, t.port, t.spec) == ("kdump", "dumps", 2222, "kdump@dumps:2222")
    assert t.known_hosts_name == "[dumps]:2222"
    assert t.delays() == [1.5, 3.0, 6.0]
    assert SshTarget(host="h", retry_delay=10, retry_delay_max=15, retries=3).delays() == [
        10,
        15,
        15,
    ]
    argv = ssh_argv(t, "true")
    joined = " ".join(argv)
    for option in (
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={t.known_hosts}",
        "IdentitiesOnly=yes",
        "ConnectTimeout=10",
        "ServerAliveInterval=15",
    ):
        assert f"-o {option}" in joined
    assert argv[argv.index("-i") + 1] == t.identity
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:] == ["--", "dumps", "true"]
    for bad in (
        {"port": 0},
        {"retries": -1},
        {"identity": "/a b"},
        {"known_hosts": "/x%h"},
        {"path": ""},
        {"checksum": "md5"},
        {"connect_timeout": 0},
    ):
        with pytest.raises(ConfigError):
            SshTarget(host="h", **bad)


def test_dump_dir_name() -> None:
    name = dump_dir_name("10.0.0.5", 0)
    assert name.startswith("10.0.0.5-19") or name.startswith("10.0.0.5-20")
    assert "/" not in dump_dir_name("a/b c")


# ---- helpers -------------------------------------------------------------------------------


@pytest.fixture
def sshd() -> Iterator[SshServer]:
    with sshd_server() as server:
        yield server


@pytest.fixture(scope="module")
def source(synth: Any) -> Iterator[Dump]:
    with kdumper.open(str(synth.path)) as dump:
        yield dump


@pytest.fixture(scope="module")
def expected_flat(source: Dump) -> bytes:
    """The flattened stream the writer produces (deterministic)."""
    buf = io.BytesIO()
    sink = FlatSink(buf)
    write_kdump(sink, source, codec="zlib")
    sink.finish()
    return buf.getvalue()


class Throttled:
    """A stream that passes writes on at about ``rate`` bytes per second."""

    def __init__(self, inner: BinaryIO, rate: float) -> None:
        self.inner, self.rate = inner, rate

    def write(self, data: bytes) -> int:
        for i in range(0, len(data), 65536):
            part = data[i : i + 65536]
            self.inner.write(part)
            time.sleep(len(part) / self.rate)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


def writer(dump: Dump, calls: list[int], rate: float | None = None) -> Any:
    """A re-runnable ``write_fn``: a flattened kdump-compressed dump of ``dump``."""

    def write_fn(stream: BinaryIO) -> None:
        calls.append(1)
        out: Any = stream if rate is None or len(calls) > 1 else Throttled(stream, rate)
        sink = FlatSink(out)
        write_kdump(sink, dump, codec="zlib")
        sink.finish()

    return write_fn


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- against the server --------------------------------------------------------------------


def test_dmesg_then_dump_streamed_and_renamed(
    sshd: SshServer, tmp_path: Path, source: Dump, expected_flat: bytes
) -> None:
    target = sshd.target(tmp_path / "client")
    d = save_dmesg(target, "127.0.0.1-test", DMESG)
    calls: list[int] = []
    result = stream_dump(target, "127.0.0.1-test", writer(source, calls))
    remote = sshd.remote / "127.0.0.1-test"
    assert d.remote_path == str(remote / "vmcore-dmesg.txt")
    assert sorted(os.listdir(remote)) == ["vmcore-dmesg.txt", "vmcore.flat", "vmcore.flat.blake2b"]
    assert (remote / "vmcore-dmesg.txt").read_bytes() == DMESG
    assert mode(remote) == 0o700
    for f in remote.iterdir():
        assert mode(f) == 0o600, f
        assert f.stat().st_uid == sshd.uid
    flat = remote / "vmcore.flat"
    assert flat.read_bytes() == expected_flat
    assert (result.bytes, result.attempts, len(calls)) == (len(expected_flat), 1, 1)
    assert result.remote_path == str(flat) and result.algorithm == "blake2b"
    assert result.throughput > 0
    # the checksum file is b2sum's format: the standard tool checks it
    assert (remote / "vmcore.flat.blake2b").read_text() == f"{result.digest}  vmcore.flat\n"
    check = subprocess.run(
        ["b2sum", "-c", "vmcore.flat.blake2b"], cwd=remote, capture_output=True, text=True
    )
    assert check.returncode == 0 and "vmcore.flat: OK" in check.stdout
    # kdumper verify on the received file: checksum and structure
    assert main(["verify", str(flat)]) == 0
    # reassembled, the received stream holds every page of the source
    out = tmp_path / "vmcore"
    reassemble_flat(str(flat), str(out))
    with kdumper.open(str(out)) as got:
        assert got.dumped == source.dumped
        for start, stop in source.dumped.runs():
            for pfn in range(start, stop, 256):
                n = min(256, stop - pfn)
                assert got.read_pages(pfn, n) == source.read_pages(pfn, n), hex(pfn)


def test_remote_paths_are_quoted(sshd: SshServer, tmp_path: Path) -> None:
    nasty = sshd.remote / "it's a $(touch PWNED) `id` dir;"
    target = sshd.target(tmp_path / "client", path=nasty)
    save_dmesg(target, "h-1", DMESG)
    assert (nasty / "h-1" / "vmcore-dmesg.txt").read_bytes() == DMESG
    assert not list(Path(sshd.home).glob("PWNED")) and not list(sshd.remote.glob("PWNED"))
    with pytest.raises(Exception, match="one path component"):
        save_dmesg(target, "../escape", DMESG)


def test_dropped_connection_restarts_the_transfer(
    sshd: SshServer, tmp_path: Path, source: Dump, expected_flat: bytes
) -> None:
    target = sshd.target(tmp_path / "client", retries=6, retry_delay=0.2)
    save_dmesg(target, "h-drop", DMESG)
    incomplete = sshd.remote / "h-drop" / "vmcore-incomplete"
    killed = threading.Event()

    def kill_midway() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if incomplete.exists() and incomplete.stat().st_size >= 1 << 20:
                sshd.kill()  # the server dies with the session: the connection drops
                killed.set()
                sshd.start()  # and comes back on the same port
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_midway)
    watcher.start()
    calls: list[int] = []
    try:
        # ~2.4 s for the first attempt at 4 MB/s; the retry runs at full speed
        result = stream_dump(target, "h-drop", writer(source, calls, rate=4e6))
    finally:
        watcher.join()
    assert killed.is_set()
    assert result.attempts >= 2 and len(calls) == result.attempts
    assert result.retry_reasons
    remote = sshd.remote / "h-drop"
    assert (remote / "vmcore.flat").read_bytes() == expected_flat
    assert (remote / "vmcore-dmesg.txt").read_bytes() == DMESG  # sent first, still there
    assert not incomplete.exists()


def test_unreachable_after_retries_with_backoff(
    sshd: SshServer, tmp_path: Path, source: Dump
) -> None:
    target = sshd.target(tmp_path / "client", retries=2, retry_delay=0.2, retry_delay_max=5)
    sshd.stop()
    calls: list[int] = []
    started = time.monotonic()
    with pytest.raises(TargetUnreachableError) as e:
        stream_dump(target, "h-down", writer(source, calls))
    elapsed = time.monotonic() - started
    assert elapsed >= 0.2 + 0.4  # waited between the three attempts, doubling
    assert calls == []  # the writer only runs once the remote side receives
    assert e.value.exit_code == ExitCode.IO
    assert isinstance(e.value, DumpIOError)
    msg = str(e.value)
    assert "after 3 attempts" in msg and "Connection refused" in msg
    assert msg.startswith(f"{sshd.user}@127.0.0.1:")
    with pytest.raises(TargetUnreachableError):
        save_dmesg(target, "h-down", DMESG)
    status = check_target(target)
    assert status.reachable is False and not status.ok and status.problem


def test_changed_host_key_refused_nothing_sent(
    sshd: SshServer, tmp_path: Path, source: Dump
) -> None:
    target = sshd.target(tmp_path / "client")
    sshd.regenerate_host_key()
    sshd.restart()
    calls: list[int] = []
    for attempt in (
        lambda: save_dmesg(target, "h-key", DMESG),
        lambda: stream_dump(target, "h-key", writer(source, calls)),
    ):
        started = time.monotonic()
        with pytest.raises(HostKeyChangedError) as e:
            attempt()
        assert time.monotonic() - started < 5  # not retried
        assert str(e.value) == (
            "host key of 127.0.0.1 changed: refusing to send the dump; if the change is "
            "expected run kdumper propagate again"
        )
        assert e.value.exit_code == ExitCode.CONFIG
    assert not (sshd.remote / "h-key").exists()
    assert calls == []
    assert "Accepted publickey" not in sshd.log_text()
    # the command line shows the same single line
    status = check_target(target)
    assert status.authenticated is False and "changed" in (status.problem or "")


def test_unknown_host_key_and_refused_key(sshd: SshServer, tmp_path: Path) -> None:
    target = sshd.target(tmp_path / "client")
    Path(target.known_hosts).write_text("")
    with pytest.raises(HostKeyUnknownError, match="run kdumper propagate"):
        save_dmesg(target, "h-x", DMESG)
    stranger = tmp_path / "stranger"
    keygen(stranger)
    target = sshd.target(tmp_path / "client2", identity=str(stranger))
    with pytest.raises(AuthenticationError, match="refused kdumper's key") as e:
        save_dmesg(target, "h-x", DMESG)
    assert e.value.exit_code == ExitCode.CONFIG
    assert not (sshd.remote / "h-x").exists()


def test_remote_disk_full_keeps_incomplete_and_dmesg(
    sshd: SshServer, tmp_path: Path, source: Dump, expected_flat: bytes
) -> None:
    full = sshd.mount_tmpfs(sshd.remote / "full", "1m")
    assert len(expected_flat) > 2 << 20
    target = sshd.target(tmp_path / "client", path=full)
    save_dmesg(target, "h-full", DMESG)
    calls: list[int] = []
    with pytest.raises(RemoteNoSpaceError) as e:
        stream_dump(target, "h-full", writer(source, calls))
    assert len(calls) == 1  # a full disk is not retried
    remote = full / "h-full"
    assert isinstance(e.value, NoSpaceError) and e.value.exit_code == ExitCode.IO
    assert str(remote / "vmcore-incomplete") in str(e.value)
    assert "No space left on device" in str(e.value)
    assert sorted(os.listdir(remote)) == ["vmcore-dmesg.txt", "vmcore-incomplete"]
    assert (remote / "vmcore-dmesg.txt").read_bytes() == DMESG
    kept = (remote / "vmcore-incomplete").read_bytes()
    assert 0 < len(kept) < len(expected_flat) and expected_flat.startswith(kept)
    # what arrived is a cut flattened stream: verify calls it incomplete
    assert main(["verify", str(remote / "vmcore-incomplete")]) == ExitCode.INCOMPLETE


def test_writer_failure_is_not_retried(sshd: SshServer, tmp_path: Path) -> None:
    target = sshd.target(tmp_path / "client")
    calls: list[int] = []

    def failing(stream: BinaryIO) -> None:
        calls.append(1)
        stream.write(b"x" * 100_000)
        raise DumpIOError("read error at offset 0x1000", path="/proc/vmcore")

    with pytest.raises(DumpIOError, match="/proc/vmcore"):
        stream_dump(target, "h-fail", failing)
    assert len(calls) == 1
    remote = sshd.remote / "h-fail"
    assert sorted(os.listdir(remote)) == ["vmcore-incomplete"]
    assert (remote / "vmcore-incomplete").stat().st_size == 100_000


def test_unwritable_remote_path(sshd: SshServer, tmp_path: Path) -> None:
    locked = sshd.base / "root-only"
    locked.mkdir(mode=0o755)
    target = sshd.target(tmp_path / "client", path=locked / "crash")
    with pytest.raises(RemoteCommandError, match="Permission denied") as e:
        save_dmesg(target, "h-1", DMESG)
    assert str(locked / "crash") in str(e.value)
    status = check_target(target)
    assert (status.reachable, status.authenticated, status.path_writable) == (True, True, False)


def test_check_target(sshd: SshServer, tmp_path: Path) -> None:
    target = sshd.target(tmp_path / "client")
    status = check_target(target)
    assert status.ok and status.problem is None
    assert (status.identity_present, status.host_key_known) == (True, True)
    assert not any(p.name.startswith(".kdumper-probe") for p in sshd.remote.iterdir())
    missing = target.with_options(identity=str(tmp_path / "nope"))
    status = check_target(missing)
    assert not status.ok and "missing" in (status.problem or "")


def test_flattened_stream_without_end_marker_is_not_renamed(
    sshd: SshServer, tmp_path: Path, source: Dump
) -> None:
    target = sshd.target(tmp_path / "client")

    def unfinished(stream: BinaryIO) -> None:
        write_kdump(FlatSink(stream), source, codec="zlib")  # FlatSink.finish() forgotten

    with pytest.raises(DumpIOError, match="end marker"):
        stream_dump(target, "h-cut", unfinished)
    assert sorted(os.listdir(sshd.remote / "h-cut")) == ["vmcore-incomplete"]


def test_pipeline_save_as_the_writer(sshd: SshServer, tmp_path: Path, source: Dump) -> None:
    """The capture's own writer: filter, compress in threads, flattened into the pipe."""
    from kdumper.collect.pipeline import SaveOptions, save

    target = sshd.target(tmp_path / "client")
    results: list[Any] = []
    opts = SaveOptions(format="flat", dump_level=31, codec="zlib", threads=2)
    sent = stream_dump(target, "h-save", lambda stream: results.append(save(source, stream, opts)))
    assert sent.bytes == results[-1].bytes_out
    assert main(["verify", "--full", sent.remote_path]) == 0
