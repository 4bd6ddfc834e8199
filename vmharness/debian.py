"""Download and unpack Debian packages of any suite without touching the system's APT setup.

A private APT state (sources, lists, cache) lives in ``<cache>/apt``; every ``apt-get`` and
``apt-cache`` call gets explicit ``-o Dir::...`` options pointing there, so the system's sources,
pinning and package state are never read or changed. Packages are fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` (never installed) into
``<cache>/pkgs/<name>_<version>/``; the ``.deb`` is deleted after unpacking.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir, content_key, ensure_dir, file_lock
from .errors import HarnessError

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: Suites in the private sources list (main only, amd64 only).
SUITES: tuple[str, ...] = ("bullseye", "bookworm", "trixie")
#: Lists older than this are refreshed before a lookup (seconds).
LISTS_MAX_AGE = 24 * 3600
APT_TIMEOUT = 900


@dataclass(frozen=True, order=True)
class PackageRef:
    """A binary package at one version, as listed by the mirror."""

    name: str
    version: str
    suite: str = ""

    @property
    def spec(self) -> str:
        """``name=version`` as ``apt-get download`` takes it."""
        return f"{self.name}={self.version}"


# --- Debian version comparison (Debian Policy 5.6.12) -------------------------------------------


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if not char:
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    while a or b:
        first_diff = 0
        while (a and not a[0].isdigit()) or (b and not b[0].isdigit()):
            ac = _order(a[0]) if a else 0
            bc = _order(b[0]) if b else 0
            if ac != bc:
                return -1 if ac < bc else 1
            a, b = a[1:], b[1:]
        ma = re.match(r"\d*", a)
        mb = re.match(r"\d*", b)
        na = ma.group(0) if ma else ""
        nb = mb.group(0) if mb else ""
        a, b = a[len(na) :], b[len(nb) :]
        first_diff = int(na or 0) - int(nb or 0)
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def compare_versions(a: str, b: str) -> int:
    """Compare two Debian version strings: negative, zero or positive like ``cmp``."""

    def split(v: str) -> tuple[int, str, str]:
        epoch = 0
        if ":" in v:
            e, v = v.split(":", 1)
            epoch = int(e)
        upstream, _, revision = v.rpartition("-") if "-" in v else (v, "", "")
        return epoch, upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


# --- private APT state --------------------------------------------------------------------------


def apt_dir() -> Path:
    """The private APT state directory, with its sources list written."""
    root = cache_dir("apt")
    for sub in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/prefs.d"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for suite in SUITES:
        for uri, dist in (
            (MIRROR, suite),
            (MIRROR, f"{suite}-updates"),
            (SECURITY_MIRROR, f"{suite}-security"),
        ):
            lines.append(f"deb [arch=amd64 signed-by={KEYRING}] {uri} {dist} main\n")
    sources = root / "etc" / "sources.list"
    text = "".join(lines)
    if not sources.exists() or sources.read_text() != text:
        sources.write_text(text)
        (root / "updated").unlink(missing_ok=True)
    status = root / "status"
    if not status.exists():
        status.write_text("")
    return root


def _apt_options(root: Path) -> list[str]:
    opts = {
        "Dir::Etc::SourceList": root / "etc" / "sources.list",
        "Dir::Etc::SourceParts": root / "etc" / "sources.list.d",
        "Dir::Etc::Preferences": root / "etc" / "preferences",
        "Dir::Etc::PreferencesParts": root / "etc" / "prefs.d",
        "Dir::State::Lists": root / "lists",
        "Dir::State::status": root / "status",
        "Dir::Cache": root / "cache",
        "Dir::Cache::archives": root / "cache" / "archives",
        "APT::Architecture": "amd64",
        "APT::Architectures::": "amd64",
        "APT::Sandbox::User": "root",
        "Acquire::Languages": "none",
    }
    args: list[str] = []
    for key, value in opts.items():
        args += ["-o", f"{key}={value}"]
    return args


def _run(args: list[str], cwd: Path | None = None, timeout: float = APT_TIMEOUT) -> str:
    try:
        proc = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"{args[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        raise HarnessError(
            f"{' '.join(args[:1] + args[-3:])} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def apt_update(force: bool = False) -> None:
    """Refresh the private package lists when older than a day (or when ``force``)."""
    root = apt_dir()
    stamp = root / "updated"
    with file_lock("apt"):
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
            return
        _run(["apt-get", *_apt_options(root), "-q", "update"])
        shutil.rmtree(root / "memo", ignore_errors=True)
        stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        package_versions.cache_clear()


def apt_cache(*args: str) -> str:
    """Run ``apt-cache`` on the private lists (refreshing them first when stale).

    Answers are memoised on disk until the lists change: one ``apt-cache`` call reads all the
    suites' lists (about a second), and a cached vmcore lookup needs a handful of them.
    """
    apt_update()
    root = apt_dir()
    memo_dir = root / "memo"
    memo_dir.mkdir(exist_ok=True)
    stamp = (root / "updated").read_text().strip()
    memo = memo_dir / f"{content_key([stamp, *args])}.txt"
    if memo.exists():
        return memo.read_text()
    out = _run(["apt-cache", *_apt_options(root), *args], timeout=300)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(out)
    tmp.rename(memo)
    return out


@functools.lru_cache(maxsize=256)
def package_versions(*names: str) -> tuple[PackageRef, ...]:
    """Every (name, version, suite) the mirror lists for ``names``, newest version first."""
    out = apt_cache("madison", *names)
    refs: dict[tuple[str, str], PackageRef] = {}
    for line in out.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 3 or not fields[2].endswith("Packages"):
            continue
        name, version, origin = fields
        suite = origin.split()[1].split("/")[0] if len(origin.split()) > 1 else ""
        refs.setdefault((name, version), PackageRef(name, version, suite))
    return tuple(
        sorted(
            refs.values(),
            key=lambda r: (r.name, functools.cmp_to_key(compare_versions)(r.version)),
            reverse=True,
        )
    )


def package_names(prefix: str) -> list[str]:
    """Package names (real or virtual) that start with ``prefix``."""
    return sorted(set(apt_cache("pkgnames", prefix).split()))


def in_suite(ref: PackageRef, suite: str) -> bool:
    """Whether ``ref`` comes from ``suite`` or its -updates/-security/-backports companions."""
    return ref.suite == suite or ref.suite.startswith(f"{suite}-")


def resolve(name: str, suite: str | None = None, version: str | None = None) -> PackageRef:
    """The newest version of ``name`` (optionally of ``suite`` or exactly ``version``)."""
    refs = [r for r in package_versions(name) if r.name == name]
    if suite:
        refs = [r for r in refs if in_suite(r, suite)]
    if version:
        refs = [r for r in refs if r.version == version]
    if not refs:
        where = f" in {suite}" if suite else ""
        at = f" at {version}" if version else ""
        raise HarnessError(f"package {name}{at} not found{where} on the Debian mirror")
    return refs[0]


def depends(ref: PackageRef) -> list[str]:
    """Names in the ``Depends`` field of ``ref`` (alternatives flattened)."""
    out = apt_cache("show", ref.spec)
    for line in out.splitlines():
        if line.startswith("Depends:"):
            names = re.findall(r"(?:^|[,|])\s*([a-z0-9][a-z0-9+.\-]+)", line[len("Depends:") :])
            return names
    return []


def download(ref: PackageRef, dest: Path) -> Path:
    """``apt-get download`` one package into ``dest``; returns the ``.deb`` path."""
    dest.mkdir(parents=True, exist_ok=True)
    root = apt_dir()
    args = ["apt-get", *_apt_options(root), "-q", "download", ref.spec]
    try:
        _run(args, cwd=dest)
    except HarnessError:
        # The mirror may have dropped this version since the lists were fetched.
        apt_update(force=True)
        _run(args, cwd=dest)
    debs = sorted(dest.glob(f"{ref.name}_*.deb"))
    if not debs:
        raise HarnessError(f"apt-get download {ref.spec} produced no .deb in {dest}")
    return debs[-1]


def _pkg_dirname(ref: PackageRef) -> str:
    return f"{ref.name}_{ref.version.replace(':', '%3a')}"


def unpack(ref: PackageRef) -> Path:
    """Download ``ref`` and unpack it with ``dpkg-deb -x``; cached in ``<cache>/pkgs``."""

    def build(tmp: Path) -> None:
        deb = download(ref, tmp / ".deb")
        tree = tmp / "root"
        _run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=600)
        shutil.rmtree(deb.parent)

    return ensure_dir(cache_dir("pkgs") / _pkg_dirname(ref), build) / "root"


def unpack_members(ref: PackageRef, prefix: str) -> Path:
    """Download ``ref`` and extract only the members under ``prefix``.

    ``prefix`` is a tar member path such as ``./usr/lib/debug/boot/``.
    Used for the large ``-dbg`` packages, of which only ``vmlinux`` is needed.
    """
    tag = re.sub(r"[^A-Za-z0-9]+", "_", prefix).strip("_")

    def build(tmp: Path) -> None:
        deb = download(ref, tmp / ".deb")
        tree = tmp / "root"
        tree.mkdir()
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    if member.name.startswith(prefix) and (member.isfile() or member.isdir()):
                        tar.extract(member, tree, filter="data")
            if proc.wait(timeout=600) != 0:
                raise HarnessError(f"dpkg-deb --fsys-tarfile {deb.name} failed")
        shutil.rmtree(deb.parent)

    return ensure_dir(cache_dir("pkgs") / f"{_pkg_dirname(ref)}.{tag}", build) / "root"
