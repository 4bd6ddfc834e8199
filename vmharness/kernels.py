"""Debian cloud kernels: pick a package by short name, download it and find its files.

``"6.1"`` is the newest ``linux-image-6.1.0-<abi>-cloud-amd64`` of bookworm (including
bookworm-security), ``"6.12"`` the newest ``linux-image-6.12.<n>+deb13-cloud-amd64`` of trixie,
``"5.10"`` bullseye's; a full package name (``linux-image-6.1.0-56-cloud-amd64``) selects exactly
that package, optionally at ``=<version>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import debian
from .cache import cache_dir
from .debian import PackageRef
from .errors import HarnessError

#: short name -> (suite, package name prefix, regular expression on the package name)
KERNEL_ALIASES: dict[str, tuple[str, str, str]] = {
    "5.10": ("bullseye", "linux-image-5.10.0-", r"^linux-image-5\.10\.0-\d+-cloud-amd64$"),
    "6.1": ("bookworm", "linux-image-6.1.0-", r"^linux-image-6\.1\.0-\d+-cloud-amd64$"),
    "6.12": ("trixie", "linux-image-6.12.", r"^linux-image-6\.12\.\d+\+deb13(\.\d+)?-cloud-amd64$"),
}


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel image package."""

    package: PackageRef
    release: str
    """``uname -r`` of the kernel, e.g. ``6.1.0-56-cloud-amd64``."""
    root: Path
    """The unpacked package tree."""
    vmlinuz: Path
    modules_dir: Path
    """``lib/modules/<release>`` (6.1) or ``usr/lib/modules/<release>`` (6.12) in the tree."""
    config: Path

    @property
    def suite(self) -> str:
        """The Debian suite family (``bookworm``, ``trixie``, ...) the package came from."""
        return self.package.suite.split("-")[0]

    @property
    def short(self) -> str:
        """Major.minor of the release, e.g. ``6.12``."""
        m = re.match(r"(\d+\.\d+)", self.release)
        return m.group(1) if m else self.release

    def config_value(self, option: str) -> str | None:
        """The value of ``CONFIG_<option>`` in the kernel's config (``None`` if unset)."""
        prefix = f"CONFIG_{option}="
        for line in self.config.read_text().splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip('"')
        return None


def resolve_kernel(name: str) -> PackageRef:
    """Map a short name or a full package name (``[=version]``) to a package on the mirror."""
    if name in KERNEL_ALIASES:
        suite, prefix, pattern = KERNEL_ALIASES[name]
        candidates = [n for n in debian.package_names(prefix) if re.match(pattern, n)]
        refs = (
            [
                r
                for r in debian.package_versions(*candidates)
                if re.match(pattern, r.name) and debian.in_suite(r, suite)
            ]
            if candidates
            else []
        )
        if not refs:
            raise HarnessError(f"no kernel package matching {pattern} in {suite}")
        return max(refs, key=lambda r: _KeyVersion(r.version))
    pkg, _, version = name.partition("=")
    if not pkg.startswith("linux-image-"):
        pkg = f"linux-image-{pkg}"
    if not pkg.endswith("-amd64"):
        raise HarnessError(f"unknown kernel {name!r}: use {', '.join(KERNEL_ALIASES)} or a package")
    return debian.resolve(pkg, version=version or None)


class _KeyVersion:
    """Orders Debian version strings (for ``max``)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: _KeyVersion) -> bool:
        return debian.compare_versions(self.version, other.version) < 0


def kernel_from_tree(ref: PackageRef, root: Path) -> Kernel:
    """Find the release, vmlinuz, modules and config in an unpacked kernel package."""
    for mods in (root / "usr/lib/modules", root / "lib/modules"):
        if mods.is_dir():
            releases = sorted(p.name for p in mods.iterdir() if p.is_dir())
            if releases:
                release = releases[0]
                vmlinuz = root / "boot" / f"vmlinuz-{release}"
                config = root / "boot" / f"config-{release}"
                if not vmlinuz.is_file():
                    raise HarnessError(f"{ref.name}: no boot/vmlinuz-{release}")
                return Kernel(ref, release, root, vmlinuz, mods / release, config)
    raise HarnessError(f"{ref.name}: no modules directory in {root}")


def get_kernel(name: str = "6.1") -> Kernel:
    """Download (once) and unpack the kernel ``name``; see the module docstring for names."""
    ref = resolve_kernel(name)
    kernel = kernel_from_tree(ref, debian.unpack(ref))
    _record(kernel)
    return kernel


def get_vmlinux(kernel: Kernel) -> Path:
    """The debug ``vmlinux`` of ``kernel`` from its ``-dbg`` package (~300 MB download, once)."""
    ref = debian.resolve(f"{kernel.package.name}-dbg", version=kernel.package.version)
    tree = debian.unpack_members(ref, "./usr/lib/debug/boot/")
    vmlinux = tree / "usr/lib/debug/boot" / f"vmlinux-{kernel.release}"
    if not vmlinux.is_file():
        raise HarnessError(f"{ref.name}: no vmlinux-{kernel.release}")
    return vmlinux


def get_system_map(kernel: Kernel) -> Path:
    """The real ``System.map`` (from the ``-dbg`` package; the image's own is a placeholder)."""
    get_vmlinux(kernel)
    ref = debian.resolve(f"{kernel.package.name}-dbg", version=kernel.package.version)
    tree = debian.unpack_members(ref, "./usr/lib/debug/boot/")
    return tree / "usr/lib/debug/boot" / f"System.map-{kernel.release}"


def get_headers(kernel: Kernel) -> Path:
    """Unpack ``linux-headers-<release>`` + its ``-common`` and ``linux-kbuild`` packages.

    Returns the arch-specific headers directory (``usr/src/linux-headers-<release>``) inside a
    merged tree where the packages' relative symlinks resolve.
    """
    from .module import merged_headers_tree  # local import: module.py imports this module

    return merged_headers_tree(kernel)


def header_packages(kernel: Kernel) -> list[PackageRef]:
    """The header packages needed to build out-of-tree modules for ``kernel``."""
    headers = debian.resolve(f"linux-headers-{kernel.release}", version=kernel.package.version)
    refs = [headers]
    for dep in debian.depends(headers):
        if dep.startswith("linux-headers-") and dep.endswith("-common"):
            refs.append(debian.resolve(dep, version=kernel.package.version))
        elif dep.startswith("linux-kbuild-"):
            versions = [r for r in debian.package_versions(dep) if r.name == dep]
            exact = [r for r in versions if r.version == kernel.package.version]
            if not (exact or versions):
                raise HarnessError(f"{dep} not found on the mirror")
            refs.append((exact or versions)[0])
    return refs


def _record(kernel: Kernel) -> None:
    index = cache_dir("kernels") / f"{kernel.release}.json"
    data = {
        "package": kernel.package.name,
        "version": kernel.package.version,
        "suite": kernel.package.suite,
        "release": kernel.release,
        "vmlinuz": str(kernel.vmlinuz),
        "modules_dir": str(kernel.modules_dir),
    }
    text = json.dumps(data, indent=2) + "\n"
    if not index.exists() or index.read_text() != text:
        index.write_text(text)


def cached_kernels() -> list[dict[str, str]]:
    """Kernels already downloaded into the cache (with their ``-dbg`` vmlinux when present)."""
    result = []
    for path in sorted(cache_dir("kernels").glob("*.json")):
        data = json.loads(path.read_text())
        if not Path(data["vmlinuz"]).exists():
            continue
        dbg = (
            cache_dir("pkgs")
            / f"{data['package']}-dbg_{data['version']}.usr_lib_debug_boot"
            / "root/usr/lib/debug/boot"
            / f"vmlinux-{data['release']}"
        )
        data["vmlinux"] = str(dbg) if dbg.exists() else ""
        result.append(data)
    return result
