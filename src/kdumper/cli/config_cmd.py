"""``kdumper config show|check|migrate``, and the config/host helpers the host commands share.

The configuration file is ``--config PATH`` (before or after the command), else
``$KDUMPER_CONFIG``, else ``/etc/kdumper/kdumper.toml`` (plus ``conf.d/*.toml`` beside it).
``$KDUMPER_HOST_ROOT`` makes the host commands read the kernel interfaces (``/proc``, ``/sys``,
``/boot``, ``/var/lib/kdumper``, ``/etc/default/grub``) below another directory — a fake
machine for tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

from ..config import (
    DEFAULT_PATH,
    Config,
    load_config,
    non_defaults,
    render_toml,
    source_of,
    to_dict,
)
from ..errors import (
    ConfigError,
    DumpIOError,
    ExitCode,
    InputNotFoundError,
    KdumperError,
    UsageError,
)
from ..host.paths import HostPaths
from ..host.service import Host
from .output import note, print_json


class NoKdumpConfigError(KdumperError):
    """``config migrate`` found nothing to migrate."""

    exit_code = ExitCode.NOT_FOUND


ENV_CONFIG = "KDUMPER_CONFIG"
ENV_ROOT = "KDUMPER_HOST_ROOT"
# Where `config migrate` looks without --from (Fedora/RHEL, then Debian/Ubuntu).
MIGRATE_SOURCES = (("/etc/kdump.conf", "/etc/sysconfig/kdump"), ("/etc/default/kdump-tools",))


def add_config_option(p: argparse.ArgumentParser) -> None:
    """``--config PATH`` on a subcommand (the global one works too)."""
    p.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"configuration file (default ${ENV_CONFIG} or {DEFAULT_PATH})",
    )


def config_path(args: argparse.Namespace) -> tuple[str, bool]:
    """The configuration file and whether it was named explicitly."""
    path = getattr(args, "config", None)
    if path:
        return str(path), True
    env = os.environ.get(ENV_CONFIG)
    if env:
        return env, True
    return DEFAULT_PATH, False


def load_from_args(args: argparse.Namespace) -> Config:
    """The configuration for this command (a named file must exist)."""
    path, explicit = config_path(args)
    return load_config(path, missing_ok=not explicit)


def host_from_env() -> Host:
    """The machine to act on (``$KDUMPER_HOST_ROOT`` for a fake one)."""
    root = os.environ.get(ENV_ROOT)
    return Host(paths=HostPaths.under(root) if root else HostPaths())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``config`` command group."""
    p = sub.add_parser(
        "config",
        help="show, check or migrate the configuration",
        description="The configuration: /etc/kdumper/kdumper.toml and conf.d/*.toml beside it "
        "(later files win).",
    )
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = csub.add_parser(
        "show",
        help="print the effective configuration",
        description="Print the effective configuration as TOML; each value "
        "that differs from the default names the file and line that set it.",
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(show)
    show.set_defaults(func=run_show)
    check = csub.add_parser(
        "check",
        help="check the configuration",
        description="Load the configuration and check what it refers to "
        "(target, hooks, codec libraries). Exit 0 when it loads, 8 when not.",
    )
    add_config_option(check)
    check.set_defaults(func=run_check)
    mig = csub.add_parser(
        "migrate",
        help="convert kdump.conf / kdump-tools settings to kdumper TOML",
        description="Read /etc/kdump.conf (+ /etc/sysconfig/kdump) or /etc/default/kdump-tools "
        "and write the equivalent kdumper TOML. Settings without an equivalent become comment "
        "lines.",
    )
    mig.add_argument(
        "--from",
        dest="sources",
        action="append",
        metavar="FILE",
        help="a file to migrate (repeat for kdump.conf + sysconfig/kdump; "
        "default: the files of this machine)",
    )
    mig.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    mig.add_argument("--force", action="store_true", help="overwrite OUT")
    mig.set_defaults(func=run_migrate)


def run_show(args: argparse.Namespace) -> int:
    """``kdumper config show``."""
    cfg = load_from_args(args)
    arch = platform.machine()
    data = to_dict(cfg, arch)
    if args.json:
        changed = non_defaults(cfg, arch)
        print_json(
            {
                "files": list(cfg.files),
                "config": data,
                "sources": {k: source_of(cfg, k) for k in changed},
            }
        )
        return 0
    comments = {}
    for key in non_defaults(cfg, arch):
        src = source_of(cfg, key)
        if src:
            comments[key] = f"from {src}"
    files = ", ".join(cfg.files) if cfg.files else "none (built-in defaults)"
    sys.stdout.write(f"# effective kdumper configuration; files read: {files}\n")
    sys.stdout.write(render_toml(data, comments))
    return 0


def _check_warnings(cfg: Config) -> list[str]:
    out = []
    t = cfg.target
    if t.kind == "local" and not os.path.isdir(t.path):
        out.append(f"target.path: {t.path} does not exist (yet)")
    if t.kind == "raw" and t.raw and not os.path.exists(t.raw):
        out.append(f"target.raw: {t.raw} does not exist")
    if t.ssh is not None:
        if not os.path.isfile(t.ssh.identity):
            out.append(f"target.ssh.identity: {t.ssh.identity} does not exist")
        if t.ssh.known_hosts and not os.path.isfile(t.ssh.known_hosts):
            out.append(f"target.ssh.known_hosts: {t.ssh.known_hosts} does not exist")
        out.append("target.ssh: ssh targets are checked but not used yet by this version")
    for when, cmds in (("pre", cfg.hooks.pre), ("post", cfg.hooks.post)):
        for argv in cmds:
            if not os.access(argv[0], os.X_OK):
                out.append(f"hooks.{when}: {argv[0]} is not an executable file")
    for key in ("kernel", "initrd"):
        value = getattr(cfg.load, key)
        if value and not os.path.isfile(value):
            out.append(f"load.{key}: {value} does not exist")
    if cfg.dump.format != "elf":
        from ..codecs import get_codec

        try:
            get_codec(cfg.dump.codec).available()
        except KdumperError as e:
            out.append(f"dump.codec: {e}")
    return out


def run_check(args: argparse.Namespace) -> int:
    """``kdumper config check``."""
    cfg = load_from_args(args)
    for warning in _check_warnings(cfg):
        note(f"warning: {warning}")
    files = ", ".join(cfg.files) if cfg.files else "no files (built-in defaults)"
    print(f"configuration ok: {files}")
    return 0


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        raise InputNotFoundError(path) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def run_migrate(args: argparse.Namespace) -> int:
    """``kdumper config migrate``."""
    from ..migrate import migrate

    sources: list[str] = list(args.sources or [])
    if not sources:
        for group in MIGRATE_SOURCES:
            if os.path.exists(group[0]):
                sources = [p for p in group if os.path.exists(p)]
                break
        else:
            looked = ", ".join(g[0] for g in MIGRATE_SOURCES)
            raise NoKdumpConfigError(
                f"no kdump configuration found (looked for {looked}); name one with --from FILE"
            )
    result = migrate([(p, _read(p)) for p in sources], arch=platform.machine())
    text = result.render()
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    out = str(args.output)
    if os.path.isdir(out):
        raise UsageError(f"{out}: is a directory; name the output file")
    if os.path.exists(out) and not args.force:
        raise DumpIOError("already exists (use --force to overwrite)", path=out)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise DumpIOError(f"cannot write: {e.strerror}", path=out) from None
    note(
        f"wrote {out} from {', '.join(sources)} ({len(result.notes)} settings not migrated); "
        f"check it with `kdumper --config {out} config check`"
    )
    return 0
