#!/usr/bin/env python3
"""Saving to an ssh target: ``kdumper capture`` vs ``makedumpfile -F | ssh`` on the same vmcore.

Both send to the same real OpenSSH server on 127.0.0.1 (tests/sshd.py: its own host key, port
and user ``kdumper-test``), logging in with a key ``kdumper.host.propagate`` made and installed
and the host key it recorded, with the ssh options kdumper always uses
(``collect.targets.ssh.ssh_options``: the same command line for both tools). Every tool runs as
a whole process, several times, interleaved so every tool sees the same machine load; the table
shows medians. The tools:

* ``makedumpfile V | ssh``: what kdump-utils' ``dump_ssh`` does, as one pipeline and one ssh
  connection::

      makedumpfile -F -d L -c|-l|-z VMCORE | ssh OPTS -l USER -p PORT -- 127.0.0.1 \\
          "mkdir -p DIR && cat > DIR/vmcore-incomplete && mv DIR/vmcore-incomplete DIR/vmcore.flat"

  (kdump-utils itself writes with ``dd bs=512 of=...`` and renames over a second connection;
  ``--dd`` adds that variant for makedumpfile 1.7.2.) Its kernel log (vmcore-dmesg) is not sent.
* ``kdumper``: ``kdumper capture --no-action --json --vmcore VMCORE --config CFG`` with
  ``[target.ssh]`` pointed at the server: the capture's real ssh path — open and identify the
  dump, send ``vmcore-dmesg.txt``, stream the flattened dump (filter, compress in threads, hash
  while streaming) into ``vmcore-incomplete``, send the checksum and rename, then send
  ``report.json`` (with the triage of the crashed kernel): four ssh connections.

Columns: ``wall s`` is the whole process (pipeline), start to exit, including Python start-up for
kdumper; ``stream MiB`` the size of the flattened dump that arrived (``vmcore.flat``); ``MiB/s``
= stream / wall. For kdumper ``send s`` is its writer's own time (``target.save.seconds`` of the
capture's JSON: filter, compress and write the whole stream into ssh's pipe, with the connection
already open; without start-up, the kernel log, the rename, report.json) and ``send MiB/s`` the
stream over it. A second table splits kdumper's wall time by the moments its progress lines
arrive on stderr. ``ssh true`` (one connection: key exchange, login, a command) is timed too:
kdumper makes four connections, the makedumpfile pipeline one. Neither side fsyncs on the
remote: the received files are in the server's page cache when the tools exit.

After every run the received directory is checked (``vmcore.flat`` present, non-empty, nothing
left as ``vmcore-incomplete``; for kdumper also the capture's JSON: status complete, ssh target,
no action taken) and deleted; the first run of every kdumper case also runs ``kdumper verify`` on
the received dump (checksum, structure, a page sample), and the first makedumpfile run ``kdumper
verify`` on its stream.

Never reboots this machine: ``--no-action`` skips the final and failure actions
(collect/capture.py ``_take_action``), ``system_action`` refuses without ``/proc/vmcore``, and
this script refuses to run at all where ``/proc/vmcore`` exists (a capture kernel). The config
is loaded and checked before the first run, because ``kdumper capture`` falls back to the
default (local ``/var/crash``) configuration when its config does not load.

Inputs: as benchmarks/bench_save.py (the VM harness's cached busy vmcores, ``--mem``).

    python benchmarks/bench_ssh.py [--runs 3] [--mem 1024M,4096M] [--codecs zlib,lzo,zstd]
        [--kernels 6.1,6.12] [--level 31] [--dd]

Needs root and openssh-server (scripts/ssh-deps.sh), like the ssh tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_save import MAKEDUMPFILE, MDF_CODECS, MDF_OPTION, kdumper_argv, vmcores  # noqa: E402
from kdumper.collect.targets.ssh import SshTarget, remote_script, ssh_argv  # noqa: E402
from kdumper.config import load_config  # noqa: E402
from kdumper.host.propagate import propagate  # noqa: E402
from tests.sshd import SshServer, sshd_server, unavailable_reason  # noqa: E402

DD = "ssh mkdir; makedumpfile 1.7.2 | ssh dd bs=512; ssh mv"


@dataclass
class Case:
    """One vmcore × codec × tool."""

    vmcore: str
    codec: str
    tool: str
    walls: list[float] = field(default_factory=list)
    sends: list[float] = field(default_factory=list)  # kdumper's own stream seconds
    # kdumper: (start-up, open + kernel log sent, dump stream + rename, report.json + exit)
    phases: list[tuple[float, float, float, float]] = field(default_factory=list)
    size: int = 0
    verified: str = ""
    failed: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def send(self) -> float:
        return statistics.median(self.sends) if self.sends else float("nan")


@functools.cache
def kdumper() -> list[str]:
    """How to run ``kdumper`` (this tree, byte code compiled once: bench_save's)."""
    return kdumper_argv()[:-1]  # without "save"


def client_target(server: SshServer, stage: Path) -> SshTarget:
    """kdumper's key installed on ``server`` by ``propagate`` (with the bootstrap key), and the
    host key it recorded: the target both tools log in with."""
    stage.mkdir(mode=0o700, parents=True)
    target = SshTarget(
        host="127.0.0.1",
        user=server.user,
        port=server.port,
        path=str(server.remote),
        identity=str(stage / "id_ed25519"),
        known_hosts=str(stage / "known_hosts"),
    )
    propagate(
        target,
        confirm=lambda scanned, changed: not changed,
        bootstrap_identity=str(server.bootstrap_key),
        comment="kdumper-bench",
    )
    return target


def write_config(path: Path, target: SshTarget, level: int, codec: str) -> Path:
    """A kdumper.toml with the ssh target; loaded here first (capture would fall back to the
    local defaults if it did not load)."""
    path.write_text(
        "# benchmarks/bench_ssh.py\n"
        'failure_action = "reboot"  # never taken: kdumper capture --no-action\n'
        "[target.ssh]\n"
        f'destination = "{target.user}@{target.host}:{target.port}"\n'
        f'path = "{target.path}"\n'
        f'identity_file = "{target.identity}"\n'
        f'known_hosts = "{target.known_hosts}"\n'
        "[dump]\n"
        f"level = {level}\n"
        f'codec = "{codec}"\n'
    )
    cfg = load_config(str(path), missing_ok=False)
    if cfg.target.ssh is None or cfg.target.ssh.port != target.port:
        raise SystemExit(f"{path}: the ssh target did not load")
    return path


def received(remote: Path) -> Path:
    """The one dump directory on the server; fails if there is not exactly one."""
    dirs = [d for d in remote.iterdir() if d.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"expected one dump directory in {remote}, found {dirs}")
    return dirs[0]


def check_flat(directory: Path) -> int:
    """Size of ``vmcore.flat`` (complete: renamed, non-empty, no leftover incomplete file)."""
    flat = directory / "vmcore.flat"
    if (directory / "vmcore-incomplete").exists() or not flat.is_file():
        raise RuntimeError(f"{directory}: no vmcore.flat: {sorted(os.listdir(directory))}")
    size = flat.stat().st_size
    if size == 0:
        raise RuntimeError(f"{flat} is empty")
    return size


def verify(flat: Path) -> str:
    """``kdumper verify``'s verdict line (raises on a bad dump)."""
    res = subprocess.run(
        [*kdumper(), "verify", str(flat)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"kdumper verify {flat}: exit {res.returncode}: {res.stdout}{res.stderr}"
        )
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "ok"


def clean(remote: Path) -> None:
    """Delete everything the server received."""
    for p in remote.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def mdf_argv(exe: str, level: int, codec: str, vmcore: Path, target: SshTarget, dd: bool) -> str:
    """The ``makedumpfile -F | ssh`` pipeline as one shell command (``pipefail``)."""
    d = shlex.quote(target.remote("mdf"))
    part, flat = f"{d}/vmcore-incomplete", f"{d}/vmcore.flat"
    mdf = shlex.join([exe, "-F", "-d", str(level), MDF_OPTION[codec], str(vmcore)])
    if dd:  # kdump-utils' dump_ssh: mkdir, dd into the incomplete file, mv: three connections
        mkdir = shlex.join(ssh_argv(target, f"mkdir -p {d}"))
        send = shlex.join(ssh_argv(target, f"umask 0077 && dd bs=512 of={part}"))
        mv = shlex.join(ssh_argv(target, f"mv {part} {flat}"))
        return f"set -o pipefail; {mkdir} && {mdf} | {send} && {mv}"
    script = remote_script(f"mkdir -p {d}", f"cat > {part}", f"mv {part} {flat}")
    return f"set -o pipefail; {mdf} | {shlex.join(ssh_argv(target, script))}"


def run_mdf(command: str, remote: Path, case: Case, first: bool) -> None:
    started = time.monotonic()
    res = subprocess.run(
        ["bash", "-c", command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    try:
        if res.returncode != 0:
            tail = " ".join(res.stderr.strip().splitlines()[-2:])
            raise RuntimeError(f"exit {res.returncode}: {tail}")
        directory = received(remote)
        case.size = check_flat(directory)
        if first:
            case.verified = verify(directory / "vmcore.flat")
        case.walls.append(wall)
    except RuntimeError as e:
        case.failed = str(e)
    finally:
        clean(remote)


def run_stamped(argv: list[str]) -> tuple[float, int, str, list[tuple[float, str]]]:
    """Run ``argv``: wall seconds, exit status, stdout, and its stderr lines each with the
    seconds since the start at which it arrived."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.monotonic() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    rc = proc.wait()
    wall = time.monotonic() - started
    reader.join()
    return wall, rc, stdout, lines


def _stamp(lines: list[tuple[float, str]], text: str) -> float:
    found = next((t for t, line in lines if text in line), None)
    if found is None:
        raise RuntimeError(f"no {text!r} line on stderr")
    return found


def run_kdumper(argv: list[str], remote: Path, case: Case, first: bool) -> None:
    wall, rc, stdout, lines = run_stamped(argv)
    stderr = "\n".join(line for _, line in lines)
    try:
        try:
            out = json.loads(stdout)
        except ValueError:
            raise RuntimeError(f"exit {rc}, no JSON: {stderr[-300:]}") from None
        if out.get("action_taken"):  # cannot happen with --no-action; stop everything if it did
            raise SystemExit(f"kdumper capture took the action {out.get('action')}: stopping")
        target = out.get("target") or {}
        if rc != 0 or out.get("status") != "complete" or target.get("kind") != "ssh":
            raise RuntimeError(
                f"exit {rc}, status {out.get('status')}, target {target.get('kind')}: "
                f"{target.get('error')}"
            )
        directory = received(remote)
        case.size = check_flat(directory)
        names = set(os.listdir(directory))
        for name in ("vmcore-dmesg.txt", "vmcore.flat.blake2b", "report.json"):
            if name not in names:
                raise RuntimeError(f"{directory}: {name} missing: {sorted(names)}")
        seconds = (target.get("save") or {}).get("seconds")
        if not seconds:
            raise RuntimeError("no target.save.seconds in the JSON")
        t_start = _stamp(lines, "capture started")
        t_stream = _stamp(lines, "sending the dump")
        t_sent = _stamp(lines, "dump sent")
        case.phases.append((t_start, t_stream - t_start, t_sent - t_stream, wall - t_sent))
        if first:
            case.verified = verify(directory / "vmcore.flat")
        case.walls.append(wall)
        case.sends.append(float(seconds))
    except RuntimeError as e:
        case.failed = str(e)
    finally:
        clean(remote)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--level", type=int, default=31)
    ap.add_argument("--codecs", default="zlib,lzo,zstd")
    ap.add_argument("--mem", default="1024M,4096M", help="harness guest sizes")
    ap.add_argument("--kernels", default="6.1,6.12", help="harness guest kernels")
    ap.add_argument("--vmcore", action="append", default=[], help="an extra ELF vmcore")
    ap.add_argument("--dd", action="store_true", help="also kdump-utils' exact dd bs=512 variant")
    args = ap.parse_args()
    if os.path.exists("/proc/vmcore"):
        print("bench_ssh: /proc/vmcore exists (a capture kernel): not running", file=sys.stderr)
        return 2
    helptext = subprocess.run([*kdumper(), "capture", "--help"], capture_output=True, text=True)
    if "--no-action" not in helptext.stdout:
        print("bench_ssh: kdumper capture has no --no-action: not running", file=sys.stderr)
        return 2
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench_ssh: {reason}", file=sys.stderr)
        return 2
    codecs = args.codecs.split(",")
    kernels = tuple(args.kernels.split(","))
    tools = {v: p for v, p in MAKEDUMPFILE.items() if os.access(p, os.X_OK)}
    scratch = Path(tempfile.mkdtemp(prefix="kdumper-bench-ssh-"))
    try:
        extra = [os.path.basename(v) for v in args.vmcore]
        inputs = [
            (label, path)
            for label, path in vmcores(args.vmcore, scratch, mems=tuple(args.mem.split(",")))
            if label.split()[0] in kernels or label in extra
        ]
        kd = kdumper()
        cases: list[Case] = []
        connection: list[float] = []  # wall seconds of `ssh OPTS 127.0.0.1 true`
        with sshd_server() as server:
            target = client_target(server, scratch / "client")
            ssh_true = ssh_argv(target, "true")
            for label, path in inputs:
                for codec in codecs:
                    cfg = write_config(scratch / f"kdumper-{codec}.toml", target, args.level, codec)
                    plan: list[tuple[Case, str | list[str]]] = []
                    for version, exe in tools.items():
                        if codec in MDF_CODECS[version]:
                            c = Case(label, codec, f"makedumpfile {version} | ssh")
                            plan.append((c, mdf_argv(exe, args.level, codec, path, target, False)))
                    if args.dd and "1.7.2" in tools and codec in MDF_CODECS["1.7.2"]:
                        c = Case(label, codec, DD)
                        plan.append((c, mdf_argv(tools["1.7.2"], args.level, codec, path, target,
                                                 True)))  # fmt: skip
                    argv = [*kd, "capture", "--no-action", "--json", "--vmcore", str(path),
                            "--config", str(cfg)]  # fmt: skip
                    plan.append((Case(label, codec, "kdumper capture"), argv))
                    for run in range(args.runs):  # interleaved: the same load for every tool
                        for case, how in plan:
                            if isinstance(how, str):
                                run_mdf(how, server.remote, case, run == 0)
                            else:
                                run_kdumper(how, server.remote, case, run == 0)
                        started = time.monotonic()
                        subprocess.run(ssh_true, stdin=subprocess.DEVNULL, check=True)
                        connection.append(time.monotonic() - started)
                    cases.extend(c for c, _ in plan)
                    print(f"# done: {label} {codec}", file=sys.stderr)
        print_table(cases, args.runs, args.level, inputs)
        conn = statistics.median(connection)
        print(f"- one ssh connection (`ssh OPTS 127.0.0.1 true`, kdumper's options): median "
              f"{conn:.2f} s of {len(connection)}, between the runs")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def print_table(cases: list[Case], runs: int, level: int, inputs: list[tuple[str, Path]]) -> None:
    load = os.getloadavg()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end; median of {runs} runs; "
          f"dump level {level}; ssh to 127.0.0.1 (OpenSSH {_ssh_version()}).")  # fmt: skip
    print("Inputs: " + "; ".join(f"{lb} ({p.stat().st_size / 2**20:.0f} MiB)" for lb, p in inputs))
    print()
    print("| vmcore | codec | tool | wall s | stream MiB | MiB/s | send s | send MiB/s "
          "| wall vs 1.7.2 | wall vs 1.7.6 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[Case]] = {}
    for c in cases:
        groups.setdefault((c.vmcore, c.codec), []).append(c)
    for (vm, codec), group in groups.items():
        refs = {v: c for v in MAKEDUMPFILE for c in group if c.tool == f"makedumpfile {v} | ssh"}
        for c in group:
            tool = c.tool.replace("|", "\\|")
            if not c.walls:
                print(f"| {vm} | {codec} | {tool} | failed: {c.failed} | | | | | | |")
                continue
            mib = c.size / 2**20
            send = f"{c.send:.2f} | {mib / c.send:.0f}" if c.sends else " | "
            ratios = []
            for ref in ("1.7.2", "1.7.6"):
                r = refs.get(ref)
                ok = c.tool == "kdumper capture" and r is not None and r.walls
                ratios.append(f"{c.wall / r.wall:.2f}" if ok and r is not None else "")
            print(f"| {vm} | {codec} | {tool} | {c.wall:.2f} | {mib:.1f} | {mib / c.wall:.0f} | "
                  f"{send} | " + " | ".join(ratios) + " |")  # fmt: skip
            if c.failed:
                print(f"<!-- {vm} {codec} {c.tool}: a run failed: {c.failed} -->")
    print()
    print("kdumper capture, where its wall time goes (median s; stamped as its stderr lines "
          "arrive):")  # fmt: skip
    print()
    print("| vmcore | codec | start-up (imports) | open + kernel log sent | dump stream + rename "
          "| report.json + exit |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for c in cases:
        if c.phases:
            cols = [statistics.median(p[i] for p in c.phases) for i in range(4)]
            print(f"| {c.vmcore} | {c.codec} | " + " | ".join(f"{v:.2f}" for v in cols) + " |")
    print()
    for c in cases:
        if c.verified:
            verdict = c.verified.split(": ", 1)[-1]
            print(f"- kdumper verify ({c.vmcore}, {c.codec}, {c.tool}): {verdict}")


def _ssh_version() -> str:
    res = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return res.stderr.strip().split(",")[0].removeprefix("OpenSSH_")


if __name__ == "__main__":
    sys.exit(main())
