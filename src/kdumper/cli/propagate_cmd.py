"""``kdumper propagate``: create kdumper's ssh key, trust the target's host key, install the key
there and test a write (``kdumpctl propagate``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from ..collect.targets.ssh import DEFAULT_IDENTITY, DEFAULT_KNOWN_HOSTS, DEFAULT_PATH, SshTarget
from ..errors import ExitCode, UsageError
from ..host.propagate import HostKey, propagate
from .output import note, print_json, print_pairs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``propagate`` subcommand."""
    p = sub.add_parser(
        "propagate",
        help="set up the ssh dump target: key, host key, authorized_keys, test write",
        description="Create kdumper's own ssh key (ed25519, no passphrase) if needed, record the "
        "target's host key in kdumper's own known_hosts after you confirmed its fingerprint "
        "(--yes, or answer on the terminal), append the public key to the target's "
        "~/.ssh/authorized_keys (the first login may ask for a password), then write, read back "
        "and remove a test file in the remote dump path with kdumper's key. Run it again after "
        "the target's host key changed on purpose.",
    )
    p.add_argument(
        "--target",
        metavar="USER@HOST[:PORT]",
        help="the ssh target (IPv6: USER@[ADDR]:PORT)",
    )
    p.add_argument("--path", help=f"remote dump directory (default {DEFAULT_PATH})")
    p.add_argument(
        "--identity", metavar="PATH", help=f"kdumper's private key (default {DEFAULT_IDENTITY})"
    )
    p.add_argument(
        "--known-hosts",
        metavar="PATH",
        help=f"kdumper's own known_hosts (default {DEFAULT_KNOWN_HOSTS})",
    )
    p.add_argument(
        "--bootstrap-identity",
        metavar="PATH",
        help="log in with this key to install kdumper's key (default: your agent, your own "
        "keys, or a password on a terminal)",
    )
    p.add_argument("--yes", action="store_true", help="trust the target's host key without asking")
    p.add_argument(
        "--connect-timeout", type=float, metavar="SECONDS", help="ssh connect timeout (10)"
    )
    p.add_argument(
        "--retries", type=int, default=1, metavar="N", help="retries per step (default 1)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def _describe(keys: list[HostKey]) -> str:
    return "; ".join(f"{k.key_type} {k.fingerprint}" for k in keys)


def _confirm(target: SshTarget, yes: bool, scanned: list[HostKey], changed: list[HostKey]) -> bool:
    host = f"{target.host_display} port {target.port}"
    if changed:
        note(f"WARNING: the host key of {host} CHANGED since it was recorded")
        note(f"  recorded: {_describe(changed)}")
    for key in scanned:
        note(f"host key of {host}: {key.key_type} {key.fingerprint}")
    if yes:
        note("trusting it (--yes)")
        return True
    if not sys.stdin.isatty():
        note("not trusted: check the fingerprint, then run again with --yes")
        return False
    sys.stderr.write("Trust this host key for kdumper's dumps? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    """``kdumper propagate``."""
    if not args.target:
        raise UsageError("name the ssh target: kdumper propagate --target USER@HOST[:PORT]")
    if args.retries < 0:
        raise UsageError("--retries must be 0 or more")
    target = SshTarget.from_spec(
        args.target,
        path=args.path,
        identity=args.identity,
        known_hosts=args.known_hosts,
        connect_timeout=args.connect_timeout,
        retries=args.retries,
        retry_delay=1.0,
    )
    interactive = sys.stdin.isatty() and args.bootstrap_identity is None
    result = propagate(
        target,
        confirm=lambda scanned, changed: _confirm(target, args.yes, scanned, changed),
        bootstrap_identity=args.bootstrap_identity,
        interactive=interactive,
    )
    if args.json:
        print_json(asdict(result))
        return ExitCode.OK
    print_pairs(
        [
            ("target", f"{result.target} {result.path}"),
            ("key", f"{result.identity} ({'created' if result.key_created else 'existing'}, "
                    f"{result.key_fingerprint})"),
            ("host key", f"{_describe(result.host_keys)} ({result.host_keys_recorded} in "
                         f"{result.known_hosts})"),
            ("authorized", "installed kdumper's key" if result.key_installed
                           else "kdumper's key was accepted already"),
            ("test write", f"ok ({result.test_write} written, read back, removed)"),
        ]
    )  # fmt: skip
    return ExitCode.OK
