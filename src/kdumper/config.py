"""kdumper's configuration: ``kdumper.toml`` plus ``conf.d/*.toml`` into frozen dataclasses.

The main file (``/etc/kdumper/kdumper.toml`` on a real system; the command line passes the path)
is read first, then every ``*.toml`` of the ``conf.d`` directory beside it in name order; a key
set by a later file wins. Every file is checked on its own (unknown keys, wrong types, bad
values), so an error names the file, the line and the key::

    /etc/kdumper/conf.d/50-ssh.toml:3: dump.level: 40 is out of range 0..31

Example (every key, with its default)::

    failure_action = "reboot"   # reboot | halt | poweroff | shell | dump_to_rootfs
    final_action = "reboot"     # reboot | halt | poweroff

    [target]
    path = "/var/crash"         # local directory (also where dump_to_rootfs writes)
    # raw = "/dev/vdb"          # a raw block device instead (flattened stream)
    # raw_offset = 0            # bytes or "1M": where on the device the stream starts
    # ssh = "kdump@backup.example.com:22"   # shorthand for [target.ssh] destination

    # [target.ssh]
    # destination = "kdump@backup.example.com:22"  # [user@]host[:port]; user root, port 22
    # path = "/var/crash"                          # directory on the remote host
    # identity_file = "/etc/kdumper/id_ed25519"    # `kdumper propagate` creates it
    # known_hosts = "/etc/kdumper/known_hosts"     # the host key propagate recorded

    [dump]
    level = 31                  # makedumpfile -d: 1 zero, 2 cache, 4 cache+private, 8 user, 16 free
    codec = "zlib"              # none | zlib | lzo | snappy | zstd
    format = "kdump"            # kdump | elf | flat (raw and ssh targets always write flat)
    threads = 0                 # compression workers; 0 = one per CPU of the capture kernel
    dmesg = true                # save the kernel log first

    [retention]
    keep = 0                    # keep the newest N dumps (0 = all)
    min_free = "64M"            # leave this much free on the target ("2G", "5%")

    [load]                      # the capture kernel `kdumper load` loads
    # kernel = "/boot/vmlinuz-6.1.0-18-cloud-amd64"   # default: the running kernel's
    # initrd = "/boot/initrd.img-6.1.0-18-cloud-amd64"  # default: its initrd; "" = none
    # cmdline = "..."           # replaces /proc/cmdline as the base
    # remove = [...]            # parameters dropped from the base (default: built in)
    # append = [...]            # parameters added (default: built in, per architecture)
    remove_extra = []           # dropped in addition to `remove`
    append_extra = []           # added in addition to `append`
    panic_on_oops = true        # set kernel.panic_on_oops=1 after loading

    [hooks]
    pre = []                    # commands run before the dump ("cmd arg" or ["cmd", "arg"])
    post = []                   # commands run after it

Codec default: zlib. Every reader of kdump-compressed files has it (crash 8.0.2 and makedumpfile
1.7.2 of Debian 12 cannot read zstd), the capture needs nothing beyond Python's standard library
for it, and at level 1 it keeps up with a disk on one capture CPU (0.63 s for a 1 GiB guest's
``-d 31`` dump, measured). zstd is faster and a little smaller: choose it when the analysis
machines have makedumpfile >= 1.7.3 / crash >= 8.0.3 / drgn.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .codecs import CODECS
from .errors import ConfigError

if TYPE_CHECKING:
    from .collect.targets.ssh import SshTarget

DEFAULT_PATH = "/etc/kdumper/kdumper.toml"
DROPIN_DIR = "conf.d"

FAILURE_ACTIONS = ("reboot", "halt", "poweroff", "shell", "dump_to_rootfs")
FINAL_ACTIONS = ("reboot", "halt", "poweroff")
FORMATS = ("kdump", "elf", "flat")
CAPTURE_UNIT = "kdumper-capture.service"

# Parameters dropped from the first kernel's command line for the capture kernel. A name drops
# "name" and "name=..."; the capture kernel must not reserve memory again, hibernate-resume,
# draw a splash, reserve huge pages or CMA, or start the normal boot target.
DEFAULT_REMOVE = (
    "crashkernel",
    "quiet",
    "splash",
    "rhgb",
    "resume",
    "resume_offset",
    "hugepages",
    "hugepagesz",
    "default_hugepagesz",
    "hugetlb_cma",
    "cma",
    "slub_debug",
    "panic_on_warn",
    "log_buf_len",
    "swiotlb",
    "mem",
    "nr_cpus",
    "maxcpus",
    "systemd.unit",
    "rd.systemd.unit",
    "kdumper.test_id",
)

_COMMON_APPEND = (
    "reset_devices",
    f"systemd.unit={CAPTURE_UNIT}",
    "panic=10",  # a capture kernel that panics reboots instead of hanging
    "hugetlb_cma=0",
    "cma=0",
    "kfence.sample_interval=0",
    "novmcoredd",
    "udev.children-max=2",
)
# Per architecture, after Fedora's KDUMP_COMMANDLINE_APPEND and Debian's KDUMP_CMDLINE_APPEND
# (reference/service.md 1.4, 2.1), minus what only a dracut initramfs needs.
DEFAULT_APPEND: dict[str, tuple[str, ...]] = {
    "x86_64": (
        "nr_cpus=1",
        "irqpoll",
        "usbcore.nousb",
        *_COMMON_APPEND,
        "cgroup_disable=memory",
        "mce=off",
        "numa=off",
        "acpi_no_memhotplug",
        "transparent_hugepage=never",
    ),
    "aarch64": (
        "nr_cpus=1",
        "irqpoll",
        "usbcore.nousb",
        *_COMMON_APPEND,
        "cgroup_disable=memory",
        "swiotlb=noforce",
    ),
    "ppc64le": (
        "maxcpus=1",
        "irqpoll",
        "noirqdistrib",
        "usbcore.nousb",
        *_COMMON_APPEND,
        "cgroup_disable=memory",
        "numa=off",
    ),
    "s390x": (
        "nr_cpus=1",
        *_COMMON_APPEND,
        "cgroup_disable=memory",
        "numa=off",
        "transparent_hugepage=never",
        "vmcp_cma=0",
    ),
}
GENERIC_APPEND = ("nr_cpus=1", "irqpoll", *_COMMON_APPEND)


def default_append(arch: str) -> tuple[str, ...]:
    """The built-in capture parameters added for ``arch`` (``uname -m``)."""
    return DEFAULT_APPEND.get(arch, GENERIC_APPEND)


@dataclass(frozen=True)
class TargetConfig:
    """Where dumps go."""

    path: str = "/var/crash"
    raw: str | None = None
    raw_offset: int = 0
    ssh: SshTarget | None = None

    @property
    def kind(self) -> str:
        """``local``, ``raw`` or ``ssh``."""
        return "raw" if self.raw else "ssh" if self.ssh else "local"


@dataclass(frozen=True)
class DumpConfig:
    """What the capture writes."""

    level: int = 31
    codec: str = "zlib"
    format: str = "kdump"
    threads: int = 0
    dmesg: bool = True


@dataclass(frozen=True)
class SpaceLimit:
    """A free-space amount: bytes, or a percentage of the filesystem."""

    bytes: int = 0
    percent: float = 0.0

    def __str__(self) -> str:
        if self.percent:
            return f"{self.percent:g}%"
        return _format_size(self.bytes)

    def required(self, fs_size: int) -> int:
        """Bytes to keep free on a filesystem of ``fs_size`` bytes."""
        return int(fs_size * self.percent / 100) if self.percent else self.bytes


@dataclass(frozen=True)
class RetentionConfig:
    """Old dumps and free space."""

    keep: int = 0
    min_free: SpaceLimit = SpaceLimit(64 << 20)


@dataclass(frozen=True)
class LoadConfig:
    """The capture kernel that ``kdumper load`` loads."""

    kernel: str | None = None  # None: the running kernel's image
    initrd: str | None = None  # None: the running kernel's initrd; "": none
    cmdline: str | None = None  # None: /proc/cmdline
    remove: tuple[str, ...] = DEFAULT_REMOVE
    append: tuple[str, ...] | None = None  # None: default_append(arch)
    remove_extra: tuple[str, ...] = ()
    append_extra: tuple[str, ...] = ()
    panic_on_oops: bool = True


@dataclass(frozen=True)
class HooksConfig:
    """Commands run around the dump, each an argv."""

    pre: tuple[tuple[str, ...], ...] = ()
    post: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Config:
    """The effective configuration."""

    target: TargetConfig = TargetConfig()
    dump: DumpConfig = DumpConfig()
    retention: RetentionConfig = RetentionConfig()
    load: LoadConfig = LoadConfig()
    hooks: HooksConfig = HooksConfig()
    failure_action: str = "reboot"
    final_action: str = "reboot"
    files: tuple[str, ...] = ()  # the files read, in order
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)  # key -> "file:line"


# ---------------------------------------------------------------------------------------------
# Value checks: each takes the TOML value and returns the converted one or raises _Bad.


class _Bad(Exception):
    """A value is wrong (the caller adds file, line and key)."""


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_UNITS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(value: str | int) -> int:
    """``"64M"``, ``"1GiB"``, ``"512k"`` or an int of bytes → bytes (binary units)."""
    if isinstance(value, bool):
        raise _Bad(f'expected a size like "64M", got {value!r}')
    if isinstance(value, int):
        if value < 0:
            raise _Bad(f"a size cannot be negative ({value})")
        return value
    m = _SIZE.match(value)
    if not m:
        raise _Bad(f'expected a size like "64M" or "2G", got {value!r}')
    return int(m.group(1)) << _UNITS[m.group(2).lower()]


def _format_size(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_type_name(value)}")
    return value


def _abs_path(value: Any) -> str:
    text = _string(value)
    if not text.startswith("/"):
        raise _Bad(f"{text!r} is not an absolute path")
    return os.path.normpath(text) if text != "/" else text


def _path_or_empty(value: Any) -> str:
    text = _string(value)
    return text if text == "" else _abs_path(text)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_type_name(value)}")
    return value


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_type_name(value)}")
        if not lo <= value <= hi:
            raise _Bad(f"{value} is out of range {lo}..{hi}")
        return value

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _string(value)
        if text not in options:
            raise _Bad(f"{text!r} is not one of {', '.join(options)}")
        return text

    return check


def _size_value(value: Any) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _Bad(f'expected a size like "1M" or an integer, got {_type_name(value)}')
    return parse_size(value)


def _space(value: Any) -> SpaceLimit:
    if isinstance(value, str):
        m = _PERCENT.match(value)
        if m:
            pct = float(m.group(1))
            if not 0 <= pct < 100:
                raise _Bad(f"{value!r}: a percentage must be below 100")
            return SpaceLimit(percent=pct)
        if not _SIZE.match(value):
            raise _Bad(f'expected a size like "64M" or a percentage like "5%", got {value!r}')
    return SpaceLimit(bytes=_size_value(value))


_PARAM = re.compile(r'^[^\s"]+(?:="[^"]*"|=[^\s"]*)?$')


def _params(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f"expected an array of strings, got {_type_name(value)}")
    out = []
    for item in value:
        text = _string(item).strip()
        if not text or not _PARAM.match(text):
            raise _Bad(f"{item!r} is not one kernel parameter (no spaces; quote values)")
        out.append(text)
    return tuple(out)


def _cmdline(value: Any) -> str:
    text = " ".join(_string(value).split())
    if not text:
        raise _Bad("an empty command line; leave the key out to use /proc/cmdline")
    return text


def _commands(value: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise _Bad(f"expected an array of commands, got {_type_name(value)}")
    out = []
    for item in value:
        if isinstance(item, str):
            try:
                argv = shlex.split(item)
            except ValueError as e:
                raise _Bad(f"{item!r}: {e}") from None
        elif isinstance(item, list) and all(isinstance(a, str) for a in item):
            argv = list(item)
        else:
            raise _Bad(f"a command is a string or an array of strings, got {item!r}")
        if not argv:
            raise _Bad("an empty command")
        if not argv[0].startswith("/"):
            raise _Bad(f"{argv[0]!r}: hook programs need an absolute path")
        out.append(tuple(argv))
    return tuple(out)


def parse_destination(value: str) -> tuple[str | None, str, int | None, str | None]:
    """``[ssh://][user@]host[:port][/path]`` → (user, host, port, path); None where left out.

    The grammar is the ssh target's (:func:`kdumper.collect.targets.ssh.parse_ssh_spec`)."""
    from .collect.targets.ssh import parse_ssh_spec

    try:
        spec = parse_ssh_spec(value)
    except ConfigError as e:
        raise _Bad(str(e)) from None
    return spec.user, spec.host, spec.port, spec.path


def _destination(value: Any) -> str:
    text = _string(value).strip()
    parse_destination(text)
    return text


def _ssh_file(value: Any) -> str:
    path = _abs_path(value)
    # ssh splits option values on whitespace and expands % and ~ in file names
    if any(c.isspace() for c in path) or any(c in path for c in "\"'%"):
        raise _Bad(f"{path!r}: ssh needs a path without spaces, quotes or '%'")
    return path


SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "": {"failure_action": _choice(FAILURE_ACTIONS), "final_action": _choice(FINAL_ACTIONS)},
    "target": {"path": _abs_path, "raw": _abs_path, "raw_offset": _size_value},
    "target.ssh": {
        "destination": _destination,
        "path": _abs_path,
        "identity_file": _ssh_file,
        "known_hosts": _ssh_file,
    },
    "dump": {
        "level": _int_range(0, 31),
        "codec": _choice(CODECS),
        "format": _choice(FORMATS),
        "threads": _int_range(0, 1024),
        "dmesg": _bool,
    },
    "retention": {"keep": _int_range(0, 1_000_000), "min_free": _space},
    "load": {
        "kernel": _abs_path,
        "initrd": _path_or_empty,
        "cmdline": _cmdline,
        "remove": _params,
        "append": _params,
        "remove_extra": _params,
        "append_extra": _params,
        "panic_on_oops": _bool,
    },
    "hooks": {"pre": _commands, "post": _commands},
}


# ---------------------------------------------------------------------------------------------
# Reading files

_HEADER = re.compile(r"^\s*\[\s*([^\[\]#]+?)\s*\]\s*(?:#.*)?$")
_KEYLINE = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
    r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _dotted(key: str) -> str:
    parts = re.findall(r"[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'", key)
    return ".".join(p.strip("\"'") for p in parts)


def key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of each dotted key and table header, by a scan of the text."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            table = _dotted(m.group(1))
            lines.setdefault(table, number)
            continue
        m = _KEYLINE.match(line)
        if m:
            key = _dotted(m.group(1))
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


def _line_of(key: str, lines: Mapping[str, int]) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def _where(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line else path


def _error(path: str, lines: Mapping[str, int], key: str, msg: str) -> ConfigError:
    return ConfigError(f"{_where(path, _line_of(key, lines))}: {key}: {msg}")


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$|\s*\(at end of document\)\s*$")


def _syntax_error(path: str, text: str, e: tomllib.TOMLDecodeError) -> ConfigError:
    msg = str(e)
    m = _TOML_POS.search(msg)
    line = int(m.group(1)) if m and m.group(1) else None
    if m:
        msg = msg[: m.start()]
        if m.group(2):
            msg += f" (column {m.group(2)})"
    if line is None:
        line = len(text.splitlines()) or None
    key = ""
    if line is not None:
        table = ""
        for number, src in enumerate(text.splitlines(), 1):
            h = _HEADER.match(src)
            if h:
                table = _dotted(h.group(1))
            if number == line:
                k = _KEYLINE.match(src)
                if k:
                    key = f"{table}.{_dotted(k.group(1))}" if table else _dotted(k.group(1))
                break
    return ConfigError(f"{_where(path, line)}: {key + ': ' if key else ''}invalid TOML: {msg}")


def _flatten(path: str, data: dict[str, Any], lines: Mapping[str, int]) -> dict[str, Any]:
    """Check one file's tables against SCHEMA; returns {dotted key: converted value}."""
    flat: dict[str, Any] = {}

    def table(prefix: str, values: dict[str, Any]) -> None:
        schema = SCHEMA[prefix]
        for key, value in values.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if prefix == "target" and key == "ssh":
                if isinstance(value, str):
                    value = {"destination": value}
                if not isinstance(value, dict):
                    raise _error(path, lines, dotted, "expected user@host[:port] or a table")
                table("target.ssh", value)
                continue
            if not prefix and key in SCHEMA and key and "." not in key:
                if not isinstance(value, dict):
                    raise _error(path, lines, dotted, f"expected a table [{key}]")
                table(key, value)
                continue
            if key not in schema:
                known = sorted(schema) + (["ssh"] if prefix == "target" else [])
                if not prefix:
                    known += [s for s in SCHEMA if s and "." not in s]
                raise _error(path, lines, dotted, f"unknown key (known: {', '.join(known)})")
            try:
                flat[dotted] = schema[key](value)
            except _Bad as e:
                raise _error(path, lines, dotted, str(e)) from None

    table("", data)
    return flat


def read_file(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """One config file → ({dotted key: value}, {dotted key: "file:line"})."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(path, text, e) from None
    lines = key_lines(text)
    flat = _flatten(path, data, lines)
    return flat, {k: _where(path, _line_of(k, lines)) for k in flat}


def dropin_files(path: str) -> list[str]:
    """The ``conf.d/*.toml`` files beside ``path``, in name order."""
    directory = os.path.join(os.path.dirname(os.path.abspath(path)), DROPIN_DIR)
    return sorted(glob.glob(os.path.join(glob.escape(directory), "*.toml")))


def load_config(path: str = DEFAULT_PATH, *, missing_ok: bool = True) -> Config:
    """Read ``path`` and its drop-ins into a :class:`Config`.

    A missing main file gives the defaults (plus any drop-ins) when ``missing_ok``; otherwise it
    is a :class:`ConfigError`.
    """
    files = []
    if os.path.exists(path):
        files.append(path)
    elif not missing_ok:
        raise ConfigError(f"{path}: no such file")
    files += dropin_files(path)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in files:
        flat, where = read_file(name)
        merged.update(flat)
        sources.update(where)
    return build(merged, sources, tuple(files))


def _src(sources: Mapping[str, str], key: str) -> str:
    return sources.get(key, "config")


def build(
    values: Mapping[str, Any], sources: Mapping[str, str] | None = None, files: tuple[str, ...] = ()
) -> Config:
    """Checked dotted values → :class:`Config` (cross-key checks happen here)."""
    src = dict(sources or {})

    def conflict(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{_src(src, key)}: {key}: {msg}")

    def pick(prefix: str, cls: Any, **extra: Any) -> Any:
        kwargs = {
            f.name: values[f"{prefix}.{f.name}"]
            for f in fields(cls)
            if f"{prefix}.{f.name}" in values
        }
        return cls(**kwargs, **extra)

    ssh = None
    ssh_keys = [k for k in values if k.startswith("target.ssh.")]
    if ssh_keys:
        if "target.ssh.destination" not in values:
            raise conflict(ssh_keys[0], 'an ssh target needs destination = "user@host[:port]"')
        from .collect.targets.ssh import SshTarget

        options = {
            "path": values.get("target.ssh.path"),
            "identity": values.get("target.ssh.identity_file"),
            "known_hosts": values.get("target.ssh.known_hosts"),
        }
        try:
            ssh = SshTarget.from_spec(values["target.ssh.destination"], **options)
        except ConfigError as e:
            raise conflict("target.ssh.destination", str(e)) from None
    if ssh is not None and "target.raw" in values:
        later = max(("target.raw", "target.ssh.destination"), key=lambda k: _rank(src, files, k))
        raise conflict(later, "choose one target: raw and ssh are both set")
    if "target.raw_offset" in values and "target.raw" not in values:
        raise conflict("target.raw_offset", 'raw_offset needs raw = "/dev/..."')
    target = TargetConfig(
        path=values.get("target.path", TargetConfig.path),
        raw=values.get("target.raw"),
        raw_offset=values.get("target.raw_offset", 0),
        ssh=ssh,
    )
    if target.raw_offset % 512:
        raise conflict("target.raw_offset", "must be a multiple of 512 bytes")
    cfg = Config(
        target=target,
        dump=pick("dump", DumpConfig),
        retention=pick("retention", RetentionConfig),
        load=pick("load", LoadConfig),
        hooks=pick("hooks", HooksConfig),
        failure_action=values.get("failure_action", "reboot"),
        final_action=values.get("final_action", "reboot"),
        files=files,
        sources=src,
    )
    return cfg


def _rank(sources: Mapping[str, str], files: tuple[str, ...], key: str) -> tuple[int, int]:
    """(file index, line) of where a key was set, to tell which of two settings came later."""
    where = sources.get(key, "")
    name, _, line = where.rpartition(":")
    if not line.isdigit():
        name, line = where, "0"
    return (files.index(name) if name in files else -1, int(line))


# ---------------------------------------------------------------------------------------------
# Output


def to_dict(cfg: Config, arch: str | None = None) -> dict[str, Any]:
    """The configuration as nested JSON/TOML-ready data (``append`` resolved for ``arch``)."""
    t = cfg.target
    target: dict[str, Any] = {"path": t.path}
    if t.raw:
        target.update(raw=t.raw, raw_offset=t.raw_offset)
    if t.ssh is not None:
        target["ssh"] = {
            "destination": ssh_destination(t.ssh),
            "path": t.ssh.path,
            "identity_file": t.ssh.identity,
            "known_hosts": t.ssh.known_hosts,
        }
    load: dict[str, Any] = {}
    ld = cfg.load
    for key in ("kernel", "initrd", "cmdline"):
        if getattr(ld, key) is not None:
            load[key] = getattr(ld, key)
    append = ld.append if ld.append is not None else default_append(arch or "x86_64")
    load.update(
        remove=list(ld.remove),
        append=list(append),
        remove_extra=list(ld.remove_extra),
        append_extra=list(ld.append_extra),
        panic_on_oops=ld.panic_on_oops,
    )
    return {
        "failure_action": cfg.failure_action,
        "final_action": cfg.final_action,
        "target": target,
        "dump": {
            "level": cfg.dump.level,
            "codec": cfg.dump.codec,
            "format": cfg.dump.format,
            "threads": cfg.dump.threads,
            "dmesg": cfg.dump.dmesg,
        },
        "retention": {"keep": cfg.retention.keep, "min_free": str(cfg.retention.min_free)},
        "load": load,
        "hooks": {
            "pre": [shlex.join(c) for c in cfg.hooks.pre],
            "post": [shlex.join(c) for c in cfg.hooks.post],
        },
    }


def ssh_destination(ssh: SshTarget) -> str:
    """``user@host:port`` of an ssh target (IPv6 in brackets)."""
    return f"{ssh.user}@{ssh.host_display}:{ssh.port}"


def toml_value(value: Any) -> str:
    """One TOML value (strings, ints, bools, arrays of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def render_toml(
    data: Mapping[str, Any],
    comments: Mapping[str, str] | None = None,
    width: int = 100,
) -> str:
    """Nested data → TOML text; ``comments`` maps dotted keys to a trailing comment."""
    notes = comments or {}
    out: list[str] = []

    def emit(key: str, dotted: str, value: Any) -> None:
        line = f"{key} = {toml_value(value)}"
        if isinstance(value, list) and len(line) > width:
            items = "".join(f"    {toml_value(v)},\n" for v in value)
            line = f"{key} = [\n{items}]"
        if dotted in notes:
            line += f"  # {notes[dotted]}"
        out.append(line)

    def section(prefix: str, table: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
        subs = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
        if prefix and (scalars or not subs):
            if out:
                out.append("")
            out.append(f"[{prefix}]")
        for k, v in scalars:
            emit(k, f"{prefix}.{k}" if prefix else k, v)
        for k, v in subs:
            section(f"{prefix}.{k}" if prefix else k, v)

    section("", data)
    return "\n".join(out) + "\n"


def non_defaults(cfg: Config, arch: str | None = None) -> dict[str, Any]:
    """Dotted keys whose effective value differs from the built-in default."""
    base = _flat(to_dict(replace(Config(), sources={}), arch))
    mine = _flat(to_dict(cfg, arch))
    return {k: v for k, v in mine.items() if base.get(k) != v}


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def source_of(cfg: Config, dotted: str) -> str | None:
    """``file:line`` that set a dotted key (the ssh table reports its destination's line)."""
    if dotted in cfg.sources:
        return cfg.sources[dotted]
    if dotted.startswith("target.ssh.") and "target.ssh.destination" in cfg.sources:
        return cfg.sources["target.ssh.destination"]
    return None
