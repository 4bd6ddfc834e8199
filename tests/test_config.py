"""The TOML configuration: loading, drop-ins, errors naming file/line/key, show, migrate."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from kdumper.cli.main import main
from kdumper.config import (
    DEFAULT_REMOVE,
    Config,
    SpaceLimit,
    build,
    default_append,
    key_lines,
    load_config,
    non_defaults,
    parse_size,
    render_toml,
    to_dict,
)
from kdumper.errors import ConfigError, ExitCode, UnsupportedError
from kdumper.migrate import detect_kind, migrate

DATA = Path(__file__).parent / "data" / "config"
MiB = 1 << 20


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_files(tmp_path: Path) -> None:
    cfg = load_config(str(tmp_path / "kdumper.toml"))
    assert cfg.files == ()
    assert cfg.target.path == "/var/crash" and cfg.target.kind == "local"
    assert (cfg.dump.level, cfg.dump.codec, cfg.dump.format) == (31, "zlib", "kdump")
    assert cfg.dump.threads == 0 and cfg.dump.dmesg
    assert cfg.retention.keep == 0 and cfg.retention.min_free == SpaceLimit(64 * MiB)
    assert cfg.failure_action == cfg.final_action == "reboot"
    assert cfg.load.append is None and "crashkernel" in cfg.load.remove
    assert "systemd.unit=kdumper-capture.service" in default_append("x86_64")
    assert "nr_cpus=1" in default_append("riscv64")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "kdumper.toml"), missing_ok=False)


def test_full_file() -> None:
    cfg = load_config(str(DATA / "kdumper-full.toml"))
    assert cfg.failure_action == "dump_to_rootfs" and cfg.final_action == "poweroff"
    t = cfg.target
    assert (t.kind, t.path, t.raw, t.raw_offset) == ("raw", "/srv/crash", "/dev/vdb", MiB)
    assert cfg.dump.level == 17 and cfg.dump.codec == "zstd" and cfg.dump.format == "flat"
    assert cfg.dump.threads == 4 and cfg.dump.dmesg is False
    assert cfg.retention.keep == 3 and str(cfg.retention.min_free) == "5%"
    assert cfg.retention.min_free.required(200 * MiB) == 10 * MiB
    assert cfg.load.cmdline == "root=/dev/vda1 ro console=ttyS0"
    assert cfg.load.append_extra == ("console=ttyS1,115200", 'foo="a b"')
    assert cfg.load.panic_on_oops is False
    assert cfg.hooks.pre == (("/usr/local/sbin/kdump-pre", "--quiet"),)
    assert cfg.hooks.post == (("/usr/local/sbin/notify", "crash saved"), ("/bin/sync",))
    path = str(DATA / "kdumper-full.toml")
    assert cfg.sources["dump.level"] == f"{path}:11"
    assert cfg.sources["hooks.post"] == f"{path}:33"


def test_dropins_in_name_order_later_wins(tmp_path: Path) -> None:
    main_file = write(tmp_path / "kdumper.toml", '[dump]\nlevel = 1\ncodec = "lzo"\n')
    write(tmp_path / "conf.d" / "20-b.toml", "[dump]\nlevel = 20\n")
    write(tmp_path / "conf.d" / "10-a.toml", "[dump]\nlevel = 10\nthreads = 2\n")
    write(tmp_path / "conf.d" / "ignored.conf", "not toml at all [")
    cfg = load_config(str(main_file))
    assert [Path(f).name for f in cfg.files] == ["kdumper.toml", "10-a.toml", "20-b.toml"]
    assert (cfg.dump.level, cfg.dump.codec, cfg.dump.threads) == (20, "lzo", 2)
    assert cfg.sources["dump.level"].endswith("20-b.toml:2")
    assert cfg.sources["dump.codec"].endswith("kdumper.toml:3")
    # drop-ins apply without the main file too
    (tmp_path / "kdumper.toml").unlink()
    assert load_config(str(main_file)).dump.level == 20


def test_ssh_target(tmp_path: Path) -> None:
    cfg = load_config(
        str(write(tmp_path / "k.toml", '[target]\nssh = "kdump@backup.example.com:2222"\n'))
    )
    ssh = cfg.target.ssh
    assert cfg.target.kind == "ssh" and ssh is not None
    assert (ssh.user, ssh.host, ssh.port, ssh.path) == (
        "kdump",
        "backup.example.com",
        2222,
        "/var/crash",
    )
    assert ssh.identity == "/etc/kdumper/id_ed25519"
    text = (
        "[target.ssh]\n"
        'destination = "[2001:db8::10]"\n'
        'path = "/srv/crash"\n'
        'identity_file = "/root/.ssh/kd"\n'
        'known_hosts = "/etc/kdumper/kh"\n'
    )
    cfg = load_config(str(write(tmp_path / "k2.toml", text)))
    ssh = cfg.target.ssh
    assert ssh is not None
    assert (ssh.user, ssh.host, ssh.port) == ("root", "2001:db8::10", 22)
    assert (ssh.path, ssh.identity, ssh.known_hosts) == (
        "/srv/crash",
        "/root/.ssh/kd",
        "/etc/kdumper/kh",
    )
    assert to_dict(cfg)["target"]["ssh"]["destination"] == "root@[2001:db8::10]:22"


# ---- errors name the file, the line and the key ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("[dump]\nlevel = 40\n", ":2: dump.level: 40 is out of range 0..31"),
        ('[dump]\nlevel = "31"\n', ":2: dump.level: expected an integer, got a string"),
        ("[dump]\nlevel = true\n", ":2: dump.level: expected an integer, got a boolean"),
        ('[dump]\ncodec = "gzip"\n', ":2: dump.codec: 'gzip' is not one of none, zlib, lzo"),
        ("[dump]\n\nlevl = 3\n", ":3: dump.levl: unknown key (known: codec, dmesg, format"),
        ("[dumps]\nlevel = 3\n", ":1: dumps: unknown key (known: failure_action, final_action"),
        ('failure_action = "explode"\n', ":1: failure_action: 'explode' is not one of reboot"),
        ('final_action = "shell"\n', ":1: final_action: 'shell' is not one of reboot, halt"),
        ('[target]\npath = "var/crash"\n', ":2: target.path: 'var/crash' is not an absolute path"),
        ("[target]\npath = 5\n", ":2: target.path: expected a string, got an integer"),
        (
            '[retention]\nmin_free = "lots"\n',
            ':2: retention.min_free: expected a size like "64M" or a percentage',
        ),
        (
            '[retention]\nmin_free = "100%"\n',
            ":2: retention.min_free: '100%': a percentage must be",
        ),
        ("dump = 3\n", ":1: dump: expected a table [dump]"),
        ('[load]\nappend = ["a b"]\n', ":2: load.append: 'a b' is not one kernel parameter"),
        ('[load]\nappend = "nr_cpus=1"\n', ":2: load.append: expected an array of strings"),
        ('[hooks]\npre = ["notify-send x"]\n', ":2: hooks.pre: 'notify-send': hook programs need"),
        ('[hooks]\npre = [["/bin/x", 3]]\n', ":2: hooks.pre: a command is a string or an array"),
        (
            "[hooks]\npost = ['/bin/x \"unclosed']\n",
            ":2: hooks.post: '/bin/x \"unclosed': No closing",
        ),
        ('[target]\nssh = "kdump@"\n', ":2: target.ssh.destination: ssh target 'kdump@'"),
        ('[target]\nssh = "kdump@host:99999"\n', ":2: target.ssh.destination: ssh target"),
        ('[target.ssh]\npath = "/x"\n', ":2: target.ssh.path: an ssh target needs destination"),
        (
            '[target.ssh]\ndestination = "h"\nidentity_file = "/a b"\n',
            ":3: target.ssh.identity_file: '/a b': ssh needs a path without spaces",
        ),
        ("[target]\nraw_offset = 512\n", ":2: target.raw_offset: raw_offset needs raw"),
        (
            '[target]\nraw = "/dev/vdb"\nraw_offset = 1000\n',
            ":3: target.raw_offset: must be a multiple of 512",
        ),
        (
            '[target]\nraw = "/dev/vdb"\nssh = "a@b"\n',
            ":3: target.ssh.destination: choose one target",
        ),
        ("[dump]\nlevel = \n", ":2: dump.level: invalid TOML: Invalid value (column 9)"),
        (
            "[dump]\nlevel = 1\nlevel = 2\n",
            ":3: dump.level: invalid TOML: Cannot overwrite a value",
        ),
        ("[dump\n", ":1: invalid TOML:"),
    ],
)
def test_errors_name_file_line_key(tmp_path: Path, text: str, expect: str) -> None:
    path = write(tmp_path / "kdumper.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    msg = str(info.value)
    assert msg.startswith(str(path) + ":"), msg
    assert expect in msg, msg
    assert "\n" not in msg


def test_error_in_a_dropin_names_the_dropin(tmp_path: Path) -> None:
    write(tmp_path / "kdumper.toml", "[dump]\nlevel = 1\n")
    bad = write(tmp_path / "conf.d" / "50-x.toml", "# comment\n[retention]\nkeep = -1\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:3: retention.keep: -1 is out of range"):
        load_config(str(tmp_path / "kdumper.toml"))


def test_conflict_names_the_later_file(tmp_path: Path) -> None:
    write(tmp_path / "kdumper.toml", '[target]\nraw = "/dev/vdb"\n')
    later = write(tmp_path / "conf.d" / "10-ssh.toml", '\n[target.ssh]\ndestination = "a@b"\n')
    with pytest.raises(ConfigError, match=rf"^{later}:3: target.ssh.destination: choose one"):
        load_config(str(tmp_path / "kdumper.toml"))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "kdumper.toml"
    path.write_bytes(b"[dump]\n# caf\xe9\nlevel = 1\n")
    with pytest.raises(ConfigError, match=r":2: not UTF-8 text"):
        load_config(str(path))


def test_key_lines() -> None:
    text = (
        "a = 1\n"
        "[target]\n"
        "  path = '/x'   # comment\n"
        '"raw" = "/dev/vdb"\n'
        "[target.ssh]\n"
        "destination = 'x'\n"
        "[ dump ]\n"
        "level.x = 3\n"
    )
    lines = key_lines(text)
    assert lines["a"] == 1 and lines["target"] == 2 and lines["target.path"] == 3
    assert lines["target.raw"] == 4 and lines["target.ssh.destination"] == 6
    assert lines["dump"] == 7 and lines["dump.level.x"] == 8


def test_sizes() -> None:
    assert parse_size("64M") == 64 * MiB
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("512k") == 512 << 10
    assert parse_size(" 2 G ") == 2 << 30
    assert parse_size(4096) == 4096


# ---- show: TOML out, round trip, sources -----------------------------------------------------


def test_render_round_trip() -> None:
    cfg = load_config(str(DATA / "kdumper-full.toml"))
    text = render_toml(to_dict(cfg, "x86_64"))
    data = tomllib.loads(text)
    assert data["load"]["append_extra"] == ["console=ttyS1,115200", 'foo="a b"']
    from kdumper.config import _flatten

    again = build(_flatten("x", data, key_lines(text)))
    assert to_dict(again, "x86_64") == to_dict(cfg, "x86_64")


def test_non_defaults() -> None:
    assert non_defaults(Config()) == {}
    cfg = load_config(str(DATA / "kdumper-full.toml"))
    changed = non_defaults(cfg, "x86_64")
    assert changed["dump.level"] == 17 and "dump.dmesg" in changed and "target.path" in changed


def test_cli_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "kdumper.toml", "[dump]\nlevel = 1\n")
    assert main(["--config", str(path), "config", "show"]) == 0
    out = capsys.readouterr().out
    assert f"level = 1  # from {path}:2" in out
    assert 'codec = "zlib"\n' in out  # defaults have no source comment
    assert "systemd.unit=kdumper-capture.service" in out
    tomllib.loads(out)
    assert main(["config", "show", "--json", "--config", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["dump"]["level"] == 1
    assert data["sources"] == {"dump.level": f"{path}:2"}


def test_cli_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write(
        tmp_path / "good.toml",
        f'[target]\npath = "{tmp_path}"\n[hooks]\npre = ["/nonexistent/x"]\n',
    )
    monkeypatch.setenv("KDUMPER_CONFIG", str(good))
    assert main(["config", "check"]) == 0
    cap = capsys.readouterr()
    assert "configuration ok" in cap.out
    assert "hooks.pre: /nonexistent/x is not an executable file" in cap.err
    bad = write(tmp_path / "bad.toml", "[dump]\nlevel = 99\n")
    assert main(["config", "check", "--config", str(bad)]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err == f"kdumper: error: {bad}:2: dump.level: 99 is out of range 0..31\n"
    assert main(["config", "check", "--config", str(tmp_path / "missing.toml")]) == ExitCode.CONFIG


# ---- migrate --------------------------------------------------------------------------------


def _migrate(*names: str) -> tuple[str, Config]:
    result = migrate([(str(DATA / n), (DATA / n).read_text()) for n in names])
    text = result.render()
    from kdumper.config import _flatten

    cfg = build(_flatten("m", tomllib.loads(text), key_lines(text)))
    return text, cfg


def test_detect_kind() -> None:
    assert detect_kind((DATA / "fedora-kdump.conf").read_text()) == "kdump.conf"
    assert detect_kind((DATA / "fedora-sysconfig-kdump").read_text()) == "sysconfig/kdump"
    assert detect_kind((DATA / "debian-kdump-tools").read_text()) == "kdump-tools"
    assert detect_kind((DATA / "custom-kdump-tools").read_text()) == "kdump-tools"
    with pytest.raises(UnsupportedError, match="SUSE"):
        detect_kind('KDUMP_SAVEDIR="file:///var/crash"\nKDUMP_DUMPLEVEL=31\n')


def test_migrate_fedora_default() -> None:
    text, cfg = _migrate("fedora-kdump.conf", "fedora-sysconfig-kdump")
    assert cfg.target.path == "/var/crash" and cfg.dump.level == 31 and cfg.dump.codec == "lzo"
    # REMOVE/APPEND beyond kdumper's own defaults are kept as extras
    assert cfg.load.remove_extra == ("ignition.firstboot",)
    assert "nokaslr" in cfg.load.append_extra and "pcie_ports=compat" in cfg.load.append_extra
    assert "nr_cpus=1" not in cfg.load.append_extra
    assert 'codec = "lzo"  # kdump.conf:35: -l' in text
    assert "# kdump.conf: 'auto_reset_crashkernel yes' — kdumper changes crashkernel=" in text


def test_migrate_fedora_custom() -> None:
    text, cfg = _migrate("custom-kdump.conf", "custom-sysconfig-kdump")
    ssh = cfg.target.ssh
    assert ssh is not None and (ssh.user, ssh.host, ssh.path) == (
        "kdump",
        "backup.example.com",
        "/srv/crash",
    )
    assert ssh.identity == "/root/.ssh/kdump_id_ed25519"
    assert (cfg.dump.codec, cfg.dump.level, cfg.dump.threads) == ("lzo", 17, 4)
    assert cfg.hooks.pre == (("/usr/local/sbin/kdump-pre.sh",),)
    assert cfg.hooks.post == (("/usr/local/sbin/kdump-post.sh",),)
    assert (cfg.failure_action, cfg.final_action) == ("dump_to_rootfs", "poweroff")
    assert cfg.load.kernel == "/boot/vmlinuz-6.8.5-301.fc40.x86_64"
    assert cfg.load.initrd == "/boot/initramfs-6.8.5-301.fc40.x86_64.img"
    assert cfg.load.append_extra == ("console=ttyS1,115200",)
    assert "intel_iommu" in cfg.load.remove_extra
    for line in (
        "# kdump.conf: 'nfs nfs.example.com:/export/crash' — no NFS target in kdumper yet",
        "# kdump.conf: 'kdump_emergency /usr/local/sbin/kdump-emergency.sh' — no emergency hook",
        "# kdump.conf: 'extra_modules mlx5_core' — kdumper boots the normal initrd",
        "# kdump.conf: 'fence_kdump_nodes node2 node3' — no cluster fencing",
        "# sysconfig/kdump: 'KEXEC_ARGS=--debug' — kdumper always loads with kexec_file_load",
        "# sysconfig/kdump: 'KDUMP_STDLOGLVL=4' — no equivalent",
    ):
        assert line in text, line


def test_migrate_debian_default() -> None:
    text, cfg = _migrate("debian-kdump-tools")
    assert cfg.target.path == "/var/crash"
    assert cfg.load.kernel is None and cfg.load.initrd is None  # kdump-tools' own symlinks
    assert "Not migrated" not in text


def test_migrate_debian_custom() -> None:
    text, cfg = _migrate("custom-kdump-tools")
    assert cfg.target.path == "/var/crash/local"
    ssh = cfg.target.ssh
    assert ssh is not None and (ssh.user, ssh.host) == ("kdump", "2001:db8::10")
    assert ssh.identity == "/root/.ssh/kdump_id_rsa"
    assert (cfg.dump.codec, cfg.dump.level, cfg.dump.dmesg) == ("zstd", 1, False)
    assert cfg.retention.keep == 3 and cfg.failure_action == "shell"
    assert cfg.load.append_extra == ("console=ttyS0,115200n8",)
    assert "— kdumper's capture unit replaces it" in text
    assert "# kdump-tools: 'NFS=nfs.example.com:/srv/crash' — no NFS target in kdumper yet" in text
    assert "KDUMP_COMPRESSION=xz' — kdumper compresses each page" in text


def test_migrate_odd_inputs() -> None:
    text = "path var/crash\nraw /dev/sdb\nssh a@b\nfoo bar\ncore_collector cp\npath /x\n"
    result = migrate([("kdump.conf", text)])
    out = result.render()
    assert "'ssh a@b' — a second dump target" in out
    assert "'foo bar' — unknown or obsolete directive" in out
    assert "duplicate of line 1" in out
    assert 'format = "elf"' in out and "level = 0" in out
    assert "'path var/crash' — ignored for raw targets" in out


def test_cli_migrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kdumper.toml"
    args = [
        "config",
        "migrate",
        "--from",
        str(DATA / "custom-kdump.conf"),
        "--from",
        str(DATA / "custom-sysconfig-kdump"),
        "-o",
        str(out),
    ]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().err
    cfg = load_config(str(out), missing_ok=False)
    assert cfg.dump.level == 17
    assert main(args) == ExitCode.IO  # exists
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert main(["config", "migrate", "--from", str(DATA / "debian-kdump-tools")]) == 0
    assert 'path = "/var/crash"' in capsys.readouterr().out
    assert main(["config", "migrate", "--from", str(tmp_path / "nope")]) == ExitCode.NOT_FOUND


def test_default_remove_list_is_kernel_parameter_names() -> None:
    for name in DEFAULT_REMOVE:
        assert "=" not in name and " " not in name


def test_documented_example_is_the_defaults(tmp_path: Path) -> None:
    """The example in kdumper.config's docstring loads and shows the defaults."""
    import textwrap

    import kdumper.config as mod

    doc = mod.__doc__ or ""
    start = doc.index("Example (every key, with its default)::") + len(
        "Example (every key, with its default)::"
    )
    end = doc.index("Codec default:")
    example = textwrap.dedent(doc[start:end]).strip() + "\n"
    cfg = load_config(str(write(tmp_path / "kdumper.toml", example)))
    assert to_dict(cfg, "x86_64") == to_dict(Config(), "x86_64")

    # and the commented-out keys are valid too
    def uncomment(line: str) -> str:
        body = line[2:]
        if line.startswith("# ") and ("=" in body or body.startswith("[")) and "..." not in body:
            return body
        return line

    uncommented = "\n".join(uncomment(line) for line in example.splitlines())
    uncommented = uncommented.replace('ssh = "kdump@backup.example.com:22"', "")
    uncommented = uncommented.replace('raw = "/dev/vdb"', "").replace("raw_offset = 0", "")
    load_config(str(write(tmp_path / "all.toml", uncommented + "\n")))
