"""The kdumper command line: info, convert, reassemble; errors become one line and an exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdumper.cli import convert_cmd, info_cmd
from kdumper.cli.main import main
from kdumper.dump.open import open_dump
from kdumper.errors import ExitCode, NoSpaceError
from tests.elf_helpers import Load, pack_elf, page_pattern, pages_bytes

PAGE = 4096


@pytest.fixture
def vmcore(tmp_path: Path) -> Path:
    path = tmp_path / "vmcore"
    data = bytearray(pages_bytes(range(64)))
    data[5 * PAGE : 7 * PAGE] = bytes(2 * PAGE)  # two zero pages
    path.write_bytes(pack_elf([Load(0, bytes(data)), Load(0x100000, pages_bytes(range(256, 264)))]))
    return path


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_info_text_and_json(vmcore: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("info", vmcore) == 0
    out = capsys.readouterr().out
    assert "format:         elf" in out and "kernel release: 6.1.0-test" in out
    assert "pages present:  72 (288.0 KiB)" in out
    assert "crash time:     2023-11-14T22:13:20Z (1700000000)" in out
    assert run("info", "--json", vmcore) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "elf" and info["pages_dumped"] == 72 and info["nr_cpus"] == 2
    assert info["machine"] == "x86_64" and info["crash_time"] == 1700000000
    assert info["file_size"] == vmcore.stat().st_size and info["incomplete"] is False


@pytest.mark.parametrize("fmt", ["kdump", "elf", "flat"])
def test_convert_round_trip(
    vmcore: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"out.{fmt}"
    assert run("convert", vmcore, out, "--format", fmt, "--json") == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["path"] == str(out) and "seconds" in summary
    assert captured.err.startswith(f"kdumper: wrote {out}")
    assert (out.stat().st_mode & 0o777) == 0o600
    assert not Path(f"{out}-incomplete").exists()
    with open_dump(vmcore) as src, open_dump(out) as back:
        for pfn in (0, 5, 63, 256, 263):
            assert back.read_pfn(pfn) == src.read_pfn(pfn)
        if fmt != "elf":
            assert back.facts().dump_level == 1 and back.facts().compression == "zlib"
            assert back.codec_counts().get("zero") == 2


def test_convert_elf_with_zero_exclusion(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(pack_elf([Load(0, pages_bytes(range(8)) + bytes(300 * PAGE))]))
    out = tmp_path / "z.elf"
    assert run("convert", src, out, "-f", "elf", "--dump-level", "1") == 0
    with open_dump(out) as back:
        assert back.dumped.count() == 8 and back.present.count() == 308
        assert back.read_pfn(100) == bytes(PAGE) and back.read_pfn(7) == page_pattern(7)


def test_convert_split_and_reassemble(
    vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pattern = str(tmp_path / "part-{}.kdump")
    assert run("convert", vmcore, pattern, "-f", "kdump", "--split", "3", "--codec", "none") == 0
    parts = [tmp_path / f"part-{i}.kdump" for i in (1, 2, 3)]
    assert all(p.exists() for p in parts)
    assert run("convert", vmcore, tmp_path / "p", "-f", "kdump", "--split", "2") == 0
    assert (tmp_path / "p.1").exists() and (tmp_path / "p.2").exists()
    capsys.readouterr()
    assert run("info", "--json", parts[2], parts[0], parts[1]) == 0
    assert json.loads(capsys.readouterr().out)["parts"] == 3
    joined = tmp_path / "joined"
    assert run("reassemble", *parts, joined, "--json") == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(joined)
    with open_dump(joined) as back:
        assert back.read_pfn(260) == page_pattern(260)


def test_convert_from_split_set(vmcore: Path, tmp_path: Path) -> None:
    assert run("convert", vmcore, tmp_path / "s", "-f", "kdump", "--split", "2") == 0
    assert run("convert", tmp_path / "s.1", tmp_path / "s.2", tmp_path / "e", "-f", "elf") == 0
    with open_dump(tmp_path / "e") as back:
        assert back.read_pfn(7) == page_pattern(7)


def test_flat_to_stdout_and_reassemble_from_stdin(vmcore: Path, tmp_path: Path) -> None:
    flat = tmp_path / "stream"
    with open(flat, "wb") as stdout:
        res = subprocess.run(
            [sys.executable, "-m", "kdumper", "convert", str(vmcore), "-", "-f", "flat"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert res.returncode == 0, res.stderr
    assert "wrote <stdout>" in res.stderr
    out = tmp_path / "out"
    with open(flat, "rb") as stdin:
        res = subprocess.run(
            [sys.executable, "-m", "kdumper", "reassemble", "-", str(out)],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert res.returncode == 0, res.stderr
    assert run("reassemble", flat, tmp_path / "out2") == 0
    assert out.read_bytes() == (tmp_path / "out2").read_bytes()
    with open_dump(out) as back:
        assert back.format == "kdump" and back.read_pfn(1) == page_pattern(1)


def test_convert_truncated_source_reports_incomplete(
    vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes(vmcore.read_bytes()[: -3 * PAGE])
    for fmt in ("kdump", "elf"):
        out = tmp_path / f"o.{fmt}"
        assert run("convert", cut, out, "-f", fmt) == ExitCode.INCOMPLETE
        assert "INCOMPLETE" in capsys.readouterr().err
        with open_dump(out) as back:
            assert back.facts().incomplete


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["info", "{tmp}/missing"], ExitCode.NOT_FOUND, "no such file"),
        (["info", "{tmp}/junk"], ExitCode.BAD_DUMP, "not a dump: a text file"),
        (["info", "{tmp}"], ExitCode.BAD_DUMP, "is a directory"),
        (["convert", "{core}", "{tmp}/x", "-f", "kdump", "-d", "31"], ExitCode.USAGE, "save"),
        (["convert", "{core}", "{tmp}/x", "-f", "elf", "--codec", "lzo"], ExitCode.USAGE, "codec"),
        (["convert", "{core}", "-", "-f", "elf"], ExitCode.USAGE, "seekable"),
        (["convert", "{core}", "{core}", "-f", "kdump", "--force"], ExitCode.USAGE, "overwrite an"),
        (["convert", "{core}", "{tmp}/junk", "-f", "kdump"], ExitCode.IO, "already exists"),
        (["convert", "{core}", "{tmp}/x", "-f", "elf", "--split", "2"], ExitCode.USAGE, "split"),
        (["convert", "{core}", "-f", "kdump"], ExitCode.USAGE, "an output"),
        (["convert", "{core}", "{tmp}/x"], ExitCode.USAGE, "--format"),
        (["reassemble", "{core}", "{tmp}/x"], ExitCode.USAGE, "ELF core"),
        (["info"], ExitCode.USAGE, "required"),
        (["frobnicate"], ExitCode.USAGE, "invalid choice"),
        ([], ExitCode.USAGE, "COMMAND"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_errors_are_one_line(
    vmcore: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    text: str,
) -> None:
    (tmp_path / "junk").write_text("hello\n")
    args = [a.format(tmp=tmp_path, core=vmcore) for a in argv]
    assert main(args) == code
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(("kdumper: error:", "usage:", "  "))


def test_exception_mapping(
    vmcore: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    def bug(args: object) -> int:
        raise RuntimeError("boom")

    def pipe(args: object) -> int:
        raise BrokenPipeError

    monkeypatch.setattr(info_cmd, "run", interrupted)
    assert run("info", vmcore) == 130
    assert err_lines(capsys) == ["kdumper: interrupted"]
    monkeypatch.setattr(info_cmd, "run", bug)
    assert run("info", vmcore) == 1
    lines = err_lines(capsys)
    assert len(lines) == 1 and "internal error: RuntimeError: boom" in lines[0]
    assert "please report" in lines[0]
    assert run("--debug", "info", vmcore) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setattr(info_cmd, "run", pipe)
    assert run("info", vmcore) == ExitCode.IO
    assert capsys.readouterr().err == ""


def test_no_space_leaves_only_the_incomplete_file(
    vmcore: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kdumper.dump import elf

    real = elf.write_elf

    def full(sink, dump, **kw):  # type: ignore[no-untyped-def]
        sink.write_at(0, b"\x7fELF")
        raise NoSpaceError("write failed: no space left", path=sink.name)

    monkeypatch.setattr(elf, "write_elf", full)
    out = tmp_path / "o.elf"
    assert run("convert", vmcore, out, "-f", "elf") == ExitCode.IO
    assert "no space left" in capsys.readouterr().err
    assert not out.exists() and Path(f"{out}-incomplete").exists()
    monkeypatch.setattr(elf, "write_elf", real)


def test_help_lists_exit_codes_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and " 10  finished, but the result is incomplete" in out
    assert "130  interrupted" in out
    assert main(["convert", "--help"]) == 0
    assert "OUT.1 ... OUT.N" in capsys.readouterr().out
    res = subprocess.run(
        [sys.executable, "-m", "kdumper", "--version"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.startswith("kdumper ")


def test_split_names() -> None:
    assert convert_cmd.split_names("a/vmcore", 2) == ["a/vmcore.1", "a/vmcore.2"]
    assert convert_cmd.split_names("v-{}.kd", 2) == ["v-1.kd", "v-2.kd"]


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("kdumper")
    if not exe.exists():
        pytest.skip("kdumper console script not installed next to this python")
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert os.access(exe, os.X_OK)


def test_library_warning_keeps_the_prefix_with_logging_imported_late(
    vmcore: Path, tmp_path: Path
) -> None:
    """logging is imported only when a library module first asks for a logger (kdumper.logs);
    the command line's set-up still runs first: one prefixed line, in a fresh process."""
    cut = tmp_path / "cut"
    cut.write_bytes(vmcore.read_bytes()[: -3 * PAGE])
    res = subprocess.run(
        [sys.executable, "-m", "kdumper", "info", str(cut)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "PT_LOAD data are missing" in ln]
    assert lines and lines[0].startswith(f"kdumper: warning: {cut}: the file is truncated")


def test_save_does_not_import_logging_or_shutil(vmcore: Path, tmp_path: Path) -> None:
    """The start-up of `kdumper save` (measured in benchmarks/) leaves out what it never uses."""
    argv = ["save", str(vmcore), str(tmp_path / "out"), "-d", "31", "--threads", "1"]
    code = (
        "import sys\n"
        "before = {'logging', 'shutil'} & set(sys.modules)\n"  # what site's .pth files imported
        "from kdumper.cli.main import main\n"
        f"rc = main({argv!r})\n"
        "print(rc, sorted({'logging', 'shutil'} & set(sys.modules) - before))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["0", "[]"], res.stderr


def test_logger_set_up_on_first_use() -> None:
    from kdumper import logs

    calls: list[str] = []
    logs._pending.clear()
    logs._pending.append(lambda: calls.append("setup"))  # as configure_on_first_use leaves it
    assert not calls
    logger = logs.get_logger("kdumper.test")
    assert calls == ["setup"] and logger.name == "kdumper.test"
    logs.get_logger("kdumper.test")
    assert calls == ["setup"]  # once
    logs.configure_on_first_use(lambda: calls.append("now"))  # logging is imported: at once
    assert calls == ["setup", "now"] and not logs._pending


def test_help_width_follows_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdumper.cli.main import _terminal_width

    monkeypatch.setenv("COLUMNS", "100")
    assert _terminal_width() == 98  # as shutil.get_terminal_size().columns - 2
    monkeypatch.setenv("COLUMNS", "junk")  # ignored: the terminal's width, else 80
    assert _terminal_width() > 0
