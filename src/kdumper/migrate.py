"""``kdumper config migrate``: kdump.conf / sysconfig / kdump-tools settings → kdumper TOML.

Reads Fedora/RHEL ``/etc/kdump.conf`` (directives) and ``/etc/sysconfig/kdump`` (shell
variables), or Debian/Ubuntu ``/etc/default/kdump-tools`` (shell variables), and writes the
equivalent kdumper TOML. Every setting without an equivalent becomes a comment line naming the
file, the setting and why, e.g. ``# kdump.conf: 'nfs host:/export' — no NFS target in kdumper
yet``. Directive meanings: reference/service.md §1.3, §1.4, §2.3.

The library reads only the files it is given; the command line chooses them.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import (
    DEFAULT_REMOVE,
    SCHEMA,
    _Bad,
    _flatten,
    build,
    default_append,
    key_lines,
    render_toml,
)
from .errors import ConfigError, UnsupportedError

KINDS = ("kdump.conf", "sysconfig/kdump", "kdump-tools")
FS_TYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs", "minix", "virtiofs")
_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
DEBIAN_VARS = {
    "USE_KDUMP",
    "KDUMP_COREDIR",
    "MAKEDUMP_ARGS",
    "KDUMP_CMDLINE_APPEND",
    "KDUMP_FAIL_CMD",
    "KDUMP_NUM_DUMPS",
    "KDUMP_DUMP_DMESG",
    "KDUMP_KERNEL",
}
SYSCONFIG_VARS = {
    "KDUMP_COMMANDLINE_APPEND",
    "KDUMP_COMMANDLINE_REMOVE",
    "KEXEC_ARGS",
    "KDUMP_KERNELVER",
    "KDUMP_BOOTDIR",
    "KDUMP_IMG",
}
SUSE_VARS = {"KDUMP_SAVEDIR", "KDUMP_DUMPLEVEL", "KDUMP_DUMPFORMAT", "KDUMP_CRASHKERNEL"}


@dataclass
class Migration:
    """Settings gathered from the old files: TOML values, where each came from, and notes."""

    arch: str = "x86_64"
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: str) -> bool:
        """Set a dotted key after checking it like the config loader does; False if unusable."""
        section, _, name = key.rpartition(".")
        try:
            SCHEMA[section][name](value)
        except _Bad as e:
            self.note(origin, f"not usable: {e}")
            return False
        self.values[key] = value
        self.origins[key] = origin
        return True

    def note(self, origin: str, why: str) -> None:
        """A setting without an equivalent."""
        self.notes.append(f"{origin} — {why}")

    def render(self) -> str:
        """The kdumper TOML text (checked by loading it back)."""
        nested: dict[str, Any] = {}
        order = ["failure_action", "final_action", "target", "dump", "retention", "load", "hooks"]
        for key in sorted(self.values, key=lambda k: (order.index(k.split(".")[0]), k)):
            parts = key.split(".")
            table = nested
            for p in parts[:-1]:
                table = table.setdefault(p, {})
            table[parts[-1]] = self.values[key]
        head = [
            f"# kdumper configuration migrated from {', '.join(self.sources)}",
            "# by `kdumper config migrate`. Check it with `kdumper config check`; see the",
            "# effective settings with `kdumper config show`.",
            "",
        ]
        body = render_toml(nested, self.origins) if nested else ""
        tail = []
        if self.notes:
            tail = ["", "# Not migrated (no kdumper equivalent):"]
            tail += [f"# {n}" for n in self.notes]
        text = "\n".join(head) + body + ("\n".join(tail) + "\n" if tail else "")
        _check(text)
        return text


def _check(text: str) -> None:
    """The generated TOML must load; a failure here is a bug in the mapping."""
    try:
        data = tomllib.loads(text)
        build(_flatten("<migrated>", data, key_lines(text)))
    except (tomllib.TOMLDecodeError, ConfigError) as e:
        raise AssertionError(f"migrate produced an invalid configuration: {e}") from e


def detect_kind(text: str) -> str:
    """Which kind of kdump configuration the text is (one of :data:`KINDS`)."""
    names = {m.group(1) for line in text.splitlines() if (m := _ASSIGN.match(line))}
    if names & SUSE_VARS:
        raise UnsupportedError(
            "this is SUSE's /etc/sysconfig/kdump; migrating it is not supported yet"
        )
    if names & DEBIAN_VARS and not names & SYSCONFIG_VARS:
        return "kdump-tools"
    if names & SYSCONFIG_VARS:
        return "sysconfig/kdump"
    if names & DEBIAN_VARS:
        return "kdump-tools"
    return "kdump.conf"


def _shell_vars(text: str, label: str, mig: Migration) -> dict[str, tuple[str, int]]:
    """``NAME=value`` assignments of a shell variables file: {name: (value, line)}."""
    out: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = _ASSIGN.match(line)
        if not m:
            continue
        name, raw = m.group(1), m.group(2)
        if "$" in raw or "`" in raw:
            mig.note(f"{label}:{number}: '{line.strip()}'", "uses shell expansion; set it by hand")
            continue
        try:
            value = " ".join(shlex.split(raw, comments=True))
        except ValueError as e:
            mig.note(f"{label}:{number}: '{line.strip()}'", f"unreadable ({e})")
            continue
        out[name] = (value, number)
    return out


# ---------------------------------------------------------------------------------------------
# makedumpfile options (core_collector, MAKEDUMP_ARGS)

_CODEC_FLAGS = {"-c": "zlib", "-l": "lzo", "-p": "snappy", "-z": "zstd"}
_QUIET = {"--message-level", "-f"}  # no effect on what is saved
_TAKES_VALUE = {
    "--message-level",
    "-d",
    "--dump-level",
    "--num-threads",
    "-x",
    "--config",
    "--cyclic-buffer",
    "--work-dir",
    "--splitblock-size",
    "-b",
}


def _makedumpfile_args(args: list[str], origin: str, mig: Migration) -> None:
    i = 0
    while i < len(args):
        arg = args[i]
        value: str | None = None
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        elif re.fullmatch(r"-d\d[\d,]*", arg):
            arg, value = "-d", arg[2:]
        elif arg in _TAKES_VALUE and i + 1 < len(args):
            value = args[i + 1]
            i += 1
        i += 1
        if arg in _CODEC_FLAGS:
            mig.set("dump.codec", _CODEC_FLAGS[arg], f"{origin}: {arg}")
        elif arg == "-E":
            mig.set("dump.format", "elf", f"{origin}: -E")
        elif arg == "-F":
            pass  # kdumper writes flattened streams where they are needed (raw, ssh)
        elif arg in ("-d", "--dump-level") and value is not None:
            level = value.split(",")[-1]
            if level.isdigit():
                mig.set("dump.level", int(level), f"{origin}: -d {value}")
            else:
                mig.note(f"{origin}: '-d {value}'", "not a dump level")
        elif arg == "--num-threads" and value is not None and value.isdigit():
            mig.set("dump.threads", int(value), f"{origin}: --num-threads {value}")
        elif arg in _QUIET:
            pass
        elif arg == "--split":
            mig.note(
                f"{origin}: '--split'",
                "split dumps are written by `kdumper save --split`, not by the capture",
            )
        else:
            shown = f"{arg} {value}" if value is not None else arg
            mig.note(f"{origin}: '{shown}'", "makedumpfile option with no kdumper equivalent")


def _collector(words: list[str], origin: str, mig: Migration) -> None:
    tool = words[0].rsplit("/", 1)[-1] if words else ""
    if tool == "makedumpfile":
        _makedumpfile_args(words[1:], origin, mig)
    elif tool in ("cp", "scp"):
        mig.set("dump.format", "elf", f"{origin}: {tool} (whole ELF vmcore)")
        mig.set("dump.level", 0, f"{origin}: {tool} (nothing filtered)")
    else:
        mig.note(
            f"{origin}: '{' '.join(words)}'",
            "kdumper saves the dump itself; a custom "
            "collector command can run as a [hooks] post command",
        )


# ---------------------------------------------------------------------------------------------
# kdump.conf


def _ssh_destination(value: str) -> str:
    """kdump.conf writes IPv6 ssh hosts bare (``user@2001:db8::1``); kdumper wants brackets."""
    user, _, host = value.partition("@")
    if host.count(":") >= 2 and not host.startswith("["):
        host = f"[{host}]"
    return f"{user}@{host}"


def migrate_kdump_conf(text: str, label: str, mig: Migration) -> None:
    """Map /etc/kdump.conf directives onto ``mig``."""
    seen: dict[str, tuple[str, int]] = {}
    target_fs: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        directive, _, value = line.partition(" ")
        value = value.strip()
        origin = f"{label}:{number}"
        shown = f"{label}: '{line}'"
        if directive in seen:
            mig.note(shown, f"duplicate of line {seen[directive][1]} (kdumpctl refuses this)")
            continue
        seen[directive] = (value, number)
        if directive == "path":
            pass  # mapped below, once the target is known
        elif directive in ("raw", "ssh") and ({"raw", "ssh"} - {directive}) & set(seen):
            mig.note(shown, "a second dump target (kdump.conf allows one; kdumpctl refuses this)")
        elif directive == "raw":
            mig.set("target.raw", value, origin)
        elif directive == "ssh":
            mig.set("target.ssh.destination", _ssh_destination(value), origin)
        elif directive == "sshkey":
            mig.set("target.ssh.identity_file", value, origin)
        elif directive == "nfs":
            mig.note(shown, "no NFS target in kdumper yet")
        elif directive in FS_TYPES:
            target_fs = line
            mig.note(
                shown,
                "kdumper writes to a directory of the mounted root filesystem; "
                "mount this device (fstab) and point target.path into it",
            )
        elif directive == "core_collector":
            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            _collector(words, origin, mig)
        elif directive in ("kdump_pre", "kdump_post"):
            mig.set(f"hooks.{directive[6:]}", [value], origin)
        elif directive in ("failure_action", "default"):
            action = value
            if directive == "default":
                origin += " (default, the old name of failure_action)"
            mig.set("failure_action", action, origin)
        elif directive == "final_action":
            mig.set("final_action", value, origin)
        elif directive == "kdump_emergency":
            mig.note(shown, 'no emergency hook; failure_action = "shell" gives a shell')
        elif directive in (
            "extra_bins",
            "extra_modules",
            "dracut_args",
            "force_rebuild",
            "force_no_rebuild",
        ):
            mig.note(
                shown,
                "kdumper boots the normal initrd and root filesystem; no capture initrd is built",
            )
        elif directive in ("fence_kdump_args", "fence_kdump_nodes"):
            mig.note(shown, "no cluster fencing; run fence_kdump_send from a [hooks] pre command")
        elif directive == "auto_reset_crashkernel":
            mig.note(
                shown,
                "kdumper changes crashkernel= only when asked: `kdumper crashkernel --set auto`",
            )
        else:
            mig.note(shown, "unknown or obsolete directive")
    if "path" in seen:
        value, number = seen["path"]
        origin = f"{label}:{number}"
        if "target.ssh.destination" in mig.values:
            mig.set("target.ssh.path", value, origin + " (on the ssh host)")
        elif "target.raw" in mig.values:
            mig.note(f"{label}: 'path {value}'", "ignored for raw targets (as in kdumpctl)")
        else:
            if target_fs:
                origin += f" (relative to '{target_fs}' in kdump.conf)"
            mig.set("target.path", value, origin)
    if "sshkey" in seen and "ssh" not in seen:
        mig.values.pop("target.ssh.identity_file", None)
        mig.note(f"{label}: 'sshkey {seen['sshkey'][0]}'", "no ssh target to use it with")


# ---------------------------------------------------------------------------------------------
# Command-line lists


def _remove_list(remove: str, origin: str, mig: Migration) -> None:
    extra = [p for p in remove.split() if p not in DEFAULT_REMOVE]
    if extra:
        mig.set("load.remove_extra", extra, f"{origin}: beyond kdumper's defaults")


def _append_list(append: str, origin: str, mig: Migration) -> None:
    if append:
        defaults = set(default_append(mig.arch))
        names = {p.split("=")[0] for p in defaults}
        extra = []
        for p in append.split():
            if p.startswith("systemd.unit="):
                mig.note(f"{origin}: '{p}'", "kdumper's capture unit replaces it")
            elif p not in defaults and p.split("=")[0] not in names:
                extra.append(p)
        if extra:
            mig.set("load.append_extra", extra, f"{origin}: beyond kdumper's defaults")


# ---------------------------------------------------------------------------------------------
# /etc/sysconfig/kdump (Fedora/RHEL)

_SYSCONFIG_DEFAULTS = {
    "KDUMP_BOOTDIR": "/boot",
    "KDUMP_IMG": "vmlinuz",
    "KDUMP_IMG_EXT": "",
    "KEXEC_ARGS": "-s",
    "KDUMP_KERNELVER": "",
    "KDUMP_COMMANDLINE": "",
    "VMCORE_CREATION_NOTIFICATION": "yes",
}


def migrate_sysconfig(text: str, label: str, mig: Migration) -> None:
    """Map Fedora's /etc/sysconfig/kdump variables onto ``mig``."""
    env = _shell_vars(text, label, mig)

    def origin(name: str) -> str:
        return f"{label}:{env[name][1]} {name}"

    for name, (value, _number) in env.items():
        shown = f"{label}: '{name}={value}'"
        if name == "KDUMP_KERNELVER":
            if value:
                mig.set("load.kernel", f"/boot/vmlinuz-{value}", origin(name))
                mig.set("load.initrd", f"/boot/initramfs-{value}.img", origin(name))
        elif name == "KDUMP_COMMANDLINE":
            if value:
                mig.set("load.cmdline", value, origin(name))
        elif name == "KDUMP_COMMANDLINE_REMOVE":
            _remove_list(value, origin(name), mig)
        elif name == "KDUMP_COMMANDLINE_APPEND":
            _append_list(value, origin(name), mig)
        elif name == "KEXEC_ARGS":
            rest = [a for a in value.split() if a not in ("-s", "--kexec-file-syscall")]
            if rest:
                mig.note(
                    f"{label}: 'KEXEC_ARGS={' '.join(rest)}'",
                    "kdumper always loads with kexec_file_load(2) and takes no kexec options",
                )
        elif name in _SYSCONFIG_DEFAULTS:
            if value != _SYSCONFIG_DEFAULTS[name]:
                mig.note(
                    shown,
                    "no equivalent (set load.kernel to the image path instead)"
                    if name.startswith("KDUMP_")
                    else "no equivalent",
                )
        else:
            mig.note(shown, "no equivalent")


# ---------------------------------------------------------------------------------------------
# /etc/default/kdump-tools (Debian/Ubuntu)

_DEBIAN_SYMLINKS = {
    "KDUMP_KERNEL": "/var/lib/kdump/vmlinuz",
    "KDUMP_INITRD": "/var/lib/kdump/initrd.img",
}
_FAIL_ACTIONS = {
    "reboot": "reboot",
    "reboot -f": "reboot",
    "halt": "halt",
    "halt -f": "halt",
    "poweroff": "poweroff",
    "poweroff -f": "poweroff",
}


def migrate_kdump_tools(text: str, label: str, mig: Migration) -> None:
    """Map Debian's /etc/default/kdump-tools variables onto ``mig``."""
    env = _shell_vars(text, label, mig)
    for name, (value, number) in env.items():
        origin = f"{label}:{number} {name}"
        shown = f"{label}: '{name}={value}'"
        if name == "USE_KDUMP":
            if value != "1":
                mig.note(
                    shown,
                    "kdumper is switched on and off with "
                    "`systemctl enable|disable kdumper.service`",
                )
        elif name in _DEBIAN_SYMLINKS:
            if value == _DEBIAN_SYMLINKS[name]:
                pass  # kdump-tools' links to the running kernel: kdumper's default anyway
            elif value:
                key = "load.kernel" if name == "KDUMP_KERNEL" else "load.initrd"
                mig.set(key, value, origin)
        elif name == "KDUMP_COREDIR":
            if value:
                mig.set("target.path", value, origin)
        elif name == "KDUMP_FAIL_CMD":
            _fail_cmd(value, origin, shown, mig)
        elif name == "KDUMP_DUMP_DMESG":
            if value in ("0", "1"):
                mig.set("dump.dmesg", value == "1", origin)
        elif name == "KDUMP_NUM_DUMPS":
            if value:
                if value.isdigit():
                    mig.set("retention.keep", int(value), origin)
                else:
                    mig.note(shown, "not a number")
        elif name == "KDUMP_COMPRESSION":
            if value:
                mig.note(
                    shown,
                    "kdumper compresses each page (dump.codec); whole-file "
                    "compression of the dump is not supported",
                )
        elif name == "MAKEDUMP_ARGS":
            try:
                words = shlex.split(value)
            except ValueError:
                words = value.split()
            _makedumpfile_args(words, f"{label}:{number} MAKEDUMP_ARGS", mig)
        elif name == "KDUMP_CMDLINE":
            if value:
                mig.set("load.cmdline", value, origin)
        elif name == "KDUMP_CMDLINE_APPEND":
            _append_list(value, origin, mig)
        elif name == "KDUMP_KEXEC_ARGS":
            if value:
                mig.note(shown, "kdumper always loads with kexec_file_load(2)")
        elif name == "SSH":
            if value:
                mig.set("target.ssh.destination", _ssh_destination(value), origin)
        elif name == "SSH_KEY":
            if value and "SSH" in env and env["SSH"][0]:
                mig.set("target.ssh.identity_file", value, origin)
        elif name.startswith(("NFS", "FTP")):
            if value:
                what = "NFS" if name.startswith("NFS") else "FTP"
                mig.note(shown, f"no {what} target in kdumper yet")
        elif name in ("HOSTTAG", "SSH_KDUMP_RETRY"):
            if value:
                mig.note(shown, "no equivalent")
        else:
            mig.note(shown, "no equivalent")


def _fail_cmd(value: str, origin: str, shown: str, mig: Migration) -> None:
    if not value:
        return
    if value in _FAIL_ACTIONS:
        mig.set("failure_action", _FAIL_ACTIONS[value], origin)
    elif re.search(r"(^|[\s;/])(ba)?sh(\s|;|$)", value):
        mig.set("failure_action", "shell", origin)
        mig.note(shown, 'only the shell part was kept (failure_action = "shell")')
    else:
        mig.note(
            shown,
            "a failure command; failure_action takes reboot, halt, poweroff, "
            "shell or dump_to_rootfs",
        )


MIGRATORS: dict[str, Callable[[str, str, Migration], None]] = {
    "kdump.conf": migrate_kdump_conf,
    "sysconfig/kdump": migrate_sysconfig,
    "kdump-tools": migrate_kdump_tools,
}


def migrate(files: Iterable[tuple[str, str]], arch: str = "x86_64") -> Migration:
    """Migrate ``(path, text)`` pairs (kind detected from the text) into one :class:`Migration`."""
    mig = Migration(arch=arch)
    for path, text in files:
        kind = detect_kind(text)
        mig.sources.append(path)
        MIGRATORS[kind](text, kind, mig)
    return mig
