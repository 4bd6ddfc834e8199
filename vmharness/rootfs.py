"""A real Debian guest for kdumper's end-to-end cycle: debootstrap root filesystem, QEMU boots.

kdumper's default capture ("rootfs" mode) boots the machine's own initrd and root filesystem in
the capture kernel with ``systemd.unit=kdumper-capture.service``. Testing it needs a real
system: systemd, udev, Python, the distribution kernel with the initrd initramfs-tools made for
it, and kdumper installed the way an administrator would. This module builds one and runs the
whole cycle in QEMU:

1. :func:`build_rootfs` (cached by content): ``debootstrap --variant=minbase`` of bookworm with
   systemd, python3 and python3-numpy (Debian's), the other dependencies of kdumper as PyPI
   wheels downloaded on the host and unpacked into ``/usr/local/lib/python3.X/dist-packages``
   (no pip in the guest), then the Debian cloud kernel ``dpkg -i``-ed into the tree so that
   initramfs-tools generates ``/boot/initrd.img-<release>`` (``MODULES=list``: virtio_pci,
   virtio_blk, ext4). Two cached layers: the base tree per suite, and base + kernel.
2. :func:`make_root_disk` (every run, ~2 s): a hard-linked copy of the cached tree plus the
   overlay - kdumper from the working tree (``src/kdumper`` with a dist-info and
   ``/usr/local/bin/kdumper``), every file of the repository's ``systemd/`` directory (units to
   ``/etc/systemd/system`` with ``[Install]`` honoured, udev rules, kernel hooks), the caller's
   ``/etc/kdumper/kdumper.toml``, and the test guest's own files from ``vmharness/rootfs/`` -
   turned into an ext4 image with ``mkfs.ext4 -d``.
3. :func:`boot_cycle`: boots the image's kernel and initrd with ``crashkernel=`` (no
   ``-no-reboot``: the capture's final action reboots and the guest must come back), waits for
   the ready marker, lets the guest crash itself, follows the capture kernel and the reboot,
   powers off and pulls ``/var/crash`` out of the dump disk with ``debugfs``.

The guest: hostname ``kdguest``; root without password, autologin on ``ttyS0``; ``/dev/vda`` the
root filesystem, ``/dev/vdb`` an ext4 dump disk mounted on ``/var/crash``, ``/dev/vdc`` a raw
dump disk (no filesystem). ``kdguest-ready.service`` (after ``kdumper.service``) prints
``KDGUEST: ...`` markers on the serial console; see ``vmharness/rootfs/kdguest-ready``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import debian, kernels
from .cache import cache_dir, content_key, dir_size, ensure_dir
from .debian import PackageRef
from .disk import extract_tree, make_ext4_image
from .errors import GuestStalledError, HarnessError
from .qemu import Disk, QemuConfig, QemuVM, SerialLine, kvm_precheck, kvm_works
from .vmcore import parse_mem

#: Bump when the cached trees change meaning (forces a new debootstrap).
ROOTFS_VERSION = "1"
DEFAULT_SUITE = "bookworm"
MIRROR = debian.MIRROR

#: Debian packages of the guest (``debootstrap --include``; minbase has no Recommends).
GUEST_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "python3",
    "python3-numpy",
    "e2fsprogs",
    "util-linux",
    "iproute2",
    "openssh-client",
    "kmod",
    "procps",
    "initramfs-tools",
    "linux-base",
    "zstd",
)

#: kdumper's dependencies that Debian 12 lacks (lzallright, cramjam) or has too old
#: (python3-zstandard 0.20 < 0.21): manylinux wheels downloaded on the host.
WHEEL_REQUIREMENTS: tuple[str, ...] = ("zstandard>=0.21", "lzallright>=0.3", "cramjam>=2.7")
WHEEL_PLATFORMS: tuple[str, ...] = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
)

#: The guest's initramfs: only what the root disk needs, so the capture kernel's small
#: reservation is not spent on an unpacked MODULES=most initrd (6.1: 5.4 MB with these).
INITRAMFS_CONF = "# vmharness: a small initrd for a virtio disk\nMODULES=list\nCOMPRESS=zstd\n"
INITRAMFS_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "ext4")

HOSTNAME = "kdguest"
ROOT_DEV = "/dev/vda"
DUMP_DEV = "/dev/vdb"
RAW_DEV = "/dev/vdc"
FSTAB = (
    "# vmharness test guest\n"
    f"{ROOT_DEV}\t/\text4\trw,errors=remount-ro\t0\t1\n"
    # no nofail: local-fs.target (and so kdumper-capture.service) must wait for the dump disk
    f"{DUMP_DEV}\t/var/crash\text4\tdefaults\t0\t2\n"
)

#: Free space left in the root image beyond its content (MiB; the image is sparse).
ROOT_HEADROOM_MIB = 1024

DATA_DIR = Path(__file__).resolve().parent / "rootfs"
REPO_ROOT = Path(__file__).resolve().parent.parent

#: guest file (in vmharness/rootfs/) -> (path in the guest, mode)
GUEST_FILES: dict[str, tuple[str, int]] = {
    "kdguest-ready": ("/usr/local/sbin/kdguest-ready", 0o755),
    "kdguest-mark": ("/usr/local/sbin/kdguest-mark", 0o755),
    "kdguest-ready.service": ("/etc/systemd/system/kdguest-ready.service", 0o644),
    "kdumper-capture-kdguest.conf": (
        "/etc/systemd/system/kdumper-capture.service.d/kdguest.conf",
        0o644,
    ),
    "serial-getty-autologin.conf": (
        "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf",
        0o644,
    ),
    "kdguest-kill-capture": ("/usr/local/sbin/kdguest-kill-capture", 0o755),
    "kdguest-kill-capture.service": ("/etc/systemd/system/kdguest-kill-capture.service", 0o644),
}

TARGETS: tuple[str, ...] = ("local", "raw", "ssh")
#: ``kdumper-test``: the guest runs ``kdumper test --yes`` (test id, reload, sysrq crash)
CRASHES: tuple[str, ...] = ("sysrq", "kdumper-test", "none")

#: ``/etc/kdumper/kdumper.toml`` written when the caller gives no config, per target.
DEFAULT_CONFIGS: dict[str, str] = {
    "local": '# vmharness: dump to the ext4 dump disk\n[target]\npath = "/var/crash"\n',
    "raw": f'# vmharness: dump to the raw dump disk\n[target]\nraw = "{RAW_DEV}"\n',
}

DEFAULT_CRASHKERNEL = "256M"

#: The ssh target's network (only for ``target="ssh"``): QEMU's user network with ``restrict=on``
#: (no route out of it; DHCP still answers) and one guestfwd address, :data:`SSH_GUEST_ADDR` port
#: 22, relayed to a port on the host's 127.0.0.1 (:func:`ssh_network_args`). In the guest
#: systemd-networkd configures the virtio NIC by DHCP in both kernels and its wait-online
#: service holds network-online.target (which kdumper-capture.service waits for) until then.
#: ``kdguest-netcheck`` prints ``KDGUEST: net ...`` (what the network reaches: the addresses of
#: ``/etc/kdguest/netcheck``, a file the test writes) before the ready marker.
SSH_GUEST_ADDR = "10.0.2.100"
#: the host, seen from QEMU's user network (unreachable with ``restrict=on``)
USERNET_HOST_ADDR = "10.0.2.2"
NETWORK_FILES: dict[str, tuple[str, int]] = {
    "kdguest-net.network": ("/etc/systemd/network/50-kdguest.network", 0o644),
    "kdguest-ready-network.conf": (
        "/etc/systemd/system/kdguest-ready.service.d/network.conf",
        0o644,
    ),
    "kdguest-netcheck": ("/usr/local/sbin/kdguest-netcheck", 0o755),
}
#: ``systemctl enable systemd-networkd`` (Debian 12's [Install] sections and Also=)
NETWORK_LINKS: dict[str, str] = {
    "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service": (
        "/lib/systemd/system/systemd-networkd.service"
    ),
    "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket": (
        "/lib/systemd/system/systemd-networkd.socket"
    ),
    "/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service": (
        "/lib/systemd/system/systemd-networkd-wait-online.service"
    ),
    "/etc/systemd/system/dbus-org.freedesktop.network1.service": (
        "/lib/systemd/system/systemd-networkd.service"
    ),
}

#: Environment of every command run in (or to build) the guest tree: nothing of the caller's
#: (PYTHONPATH, virtualenvs) may leak into the guest's Python.
_CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


# --- running commands ---------------------------------------------------------------------------


def _run(argv: Sequence[str], *, log: Path | None = None, timeout: float = 1800) -> str:
    """Run a host command with the clean environment; its output goes to ``log`` if given."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_CLEAN_ENV,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"{argv[0]} failed: {exc}") from exc
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        where = f" (log: {log})" if log else ""
        raise HarnessError(f"{' '.join(argv[:3])} ... exited {proc.returncode}{where}:\n{tail}")
    return proc.stdout


def in_chroot(
    tree: Path, *argv: str, log: Path | None = None, timeout: float = 1800, proc: bool = True
) -> str:
    """Run ``argv`` chrooted into ``tree`` (with ``/proc`` mounted in a private mount namespace,
    so nothing stays mounted on the host, even when the command is killed)."""
    if not proc:
        return _run(["chroot", str(tree), *argv], log=log, timeout=timeout)
    script = 'root="$1"; shift; mount -t proc proc "$root/proc" && exec chroot "$root" "$@"'
    return _run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(tree), *argv],
        log=log,
        timeout=timeout,
    )


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HarnessError("building the Debian guest needs root (debootstrap, chroot, dpkg)")
    for tool in ("debootstrap", "unshare", "chroot", "mkfs.ext4", "debugfs"):
        if shutil.which(tool, path=_CLEAN_ENV["PATH"]) is None:
            raise HarnessError(f"{tool} not found: run scripts/vm-deps.sh")


def _put(tree: Path, path: str, data: str | bytes, mode: int = 0o644) -> Path:
    """Write a file into ``tree`` as a new inode (never through a hard link into the cache)."""
    dest = tree / path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    if isinstance(data, str):
        data = data.encode()
    dest.write_bytes(data)
    dest.chmod(mode)
    return dest


def _symlink(tree: Path, path: str, target: str) -> None:
    dest = tree / path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(target)


# --- wheels -------------------------------------------------------------------------------------


def download_wheels(python: str = "3.11") -> Path:
    """Download :data:`WHEEL_REQUIREMENTS` as manylinux wheels for CPython ``python`` (cached)."""
    tag = python.replace(".", "")
    key = content_key({"reqs": WHEEL_REQUIREMENTS, "python": python, "plat": WHEEL_PLATFORMS})

    def build(tmp: Path) -> None:
        argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps"]
        for plat in WHEEL_PLATFORMS:
            argv += ["--platform", plat]
        argv += ["--python-version", python, "--implementation", "cp"]
        argv += ["--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none", "-d", str(tmp)]
        proc = subprocess.run(
            [*argv, *WHEEL_REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise HarnessError(f"pip download failed: {proc.stderr.strip()[-800:]}")
        if len(list(tmp.glob("*.whl"))) != len(WHEEL_REQUIREMENTS):
            raise HarnessError(f"pip download left {sorted(p.name for p in tmp.iterdir())}")

    return ensure_dir(cache_dir("wheels") / f"cp{tag}-{key}", build)


def install_wheel(wheel: Path, tree: Path, site: str) -> str:
    """Unpack a wheel into ``site`` of ``tree`` (what pip does for a wheel without scripts).

    Returns the distribution's ``name-version``.
    """
    site_dir = tree / site.lstrip("/")
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            parts = name.split("/")
            if ".." in parts or name.startswith("/"):
                raise HarnessError(f"{wheel.name}: unsafe member {name}")
            if parts[0].endswith(".data") and len(parts) > 2:
                if parts[1] not in ("purelib", "platlib"):
                    raise HarnessError(f"{wheel.name}: unsupported data member {name}")
                name = "/".join(parts[2:])
            dest = site_dir / name
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(info))
            mode = (info.external_attr >> 16) & 0o777
            dest.chmod(mode if mode else 0o644)
    dist = wheel.name.split("-")
    (site_dir / f"{dist[0]}-{dist[1]}.dist-info" / "INSTALLER").write_text("vmharness\n")
    return f"{dist[0]}-{dist[1]}"


def guest_python(tree: Path) -> str:
    """The guest's Python version (``3.11``), from the ``/usr/bin/python3`` link."""
    link = tree / "usr/bin/python3"
    target = os.readlink(link) if link.is_symlink() else ""
    m = re.fullmatch(r"(?:.*/)?python(\d+\.\d+)", target)
    if not m:
        raise HarnessError(f"cannot tell the guest's Python version from {link} -> {target!r}")
    return m.group(1)


def site_packages(python: str) -> str:
    """Where Debian's python3 finds locally installed packages."""
    return f"/usr/local/lib/python{python}/dist-packages"


# --- cached layers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootfsImage:
    """A cached guest tree (base + kernel) and the kernel QEMU boots; never modified."""

    tree: Path
    """The root filesystem tree (use :func:`make_root_disk` for a disk image of it)."""
    suite: str
    kernel: str
    """The kernel name asked for (``6.1``, ``6.12`` or a package)."""
    kernel_package: str
    kernel_version: str
    release: str
    """``uname -r`` of the guest kernel."""
    vmlinuz: Path
    initrd: Path
    """``/boot/initrd.img-<release>`` generated by initramfs-tools in the chroot."""
    python: str
    """The guest's Python version (``3.11``)."""
    wheels: tuple[str, ...]
    """The PyPI distributions unpacked into the guest (``zstandard-0.25.0``, ...)."""
    timings: dict[str, float]
    """Seconds: ``debootstrap`` and ``base`` (the base layer), ``kernel_download`` and
    ``kernel_install`` (the kernel layer), as measured when each was built; ``lookup`` now."""
    cached: bool
    """Whether both layers came from the cache."""
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (paths as strings)."""
        out = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def base_key(suite: str) -> str:
    """The content key of the base layer of ``suite``."""
    return content_key(
        {
            "version": ROOTFS_VERSION,
            "suite": suite,
            "mirror": MIRROR,
            "packages": GUEST_PACKAGES,
            "wheels": WHEEL_REQUIREMENTS,
            "initramfs": [INITRAMFS_CONF, INITRAMFS_MODULES],
        }
    )


def _build_base(tmp: Path, suite: str) -> None:
    tree = tmp / "root"
    log = tmp / "build.log"
    debs = cache_dir("rootfs", "debs", suite)
    started = time.monotonic()
    _run(
        [
            "unshare",
            "--mount",
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={debs}",
            f"--include={','.join(GUEST_PACKAGES)}",
            suite,
            str(tree),
            MIRROR,
        ],
        log=log,
        timeout=3600,
    )
    debootstrap_s = time.monotonic() - started
    in_chroot(tree, "passwd", "-d", "root", log=log)
    in_chroot(tree, "apt-get", "clean", log=log)
    machine_id = tree / "etc/machine-id"
    if not machine_id.exists() or not machine_id.read_text().strip():
        # a fixed id: every run's image is a copy of this tree, and "first boot" (which may
        # prompt on the console in systemd-firstboot) must never happen
        machine_id.write_text(hashlib.sha256(b"kdguest").hexdigest()[:32] + "\n")
    _put(tree, "/etc/initramfs-tools/conf.d/kdguest.conf", INITRAMFS_CONF)
    modules = tree / "etc/initramfs-tools/modules"
    with modules.open("a") as f:
        f.write("# vmharness: the virtio root disk\n")
        f.writelines(f"{m}\n" for m in INITRAMFS_MODULES)
    for directory in ("var/crash", "etc/kdumper", "etc/kdguest", "var/lib/kdguest"):
        (tree / directory).mkdir(parents=True, exist_ok=True)

    python = guest_python(tree)
    site = site_packages(python)
    wheels = [install_wheel(w, tree, site) for w in sorted(download_wheels(python).glob("*.whl"))]
    in_chroot(tree, "python3", "-m", "compileall", "-q", site, log=log, proc=False)
    in_chroot(
        tree,
        "python3",
        "-c",
        "import numpy, zstandard, lzallright, cramjam; print(numpy.__version__)",
        log=log,
        proc=False,
    )
    manifest = {
        "layer": "base",
        "key": base_key(suite),
        "suite": suite,
        "packages": list(GUEST_PACKAGES),
        "python": python,
        "wheels": wheels,
        "timings": {
            "debootstrap": round(debootstrap_s, 1),
            "base": round(time.monotonic() - started, 1),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def build_base(suite: str = DEFAULT_SUITE, rebuild: bool = False) -> Path:
    """The cached base layer of ``suite`` (debootstrap + wheels); returns its directory."""
    _require_root()
    final = cache_dir("rootfs") / f"base-{suite}-{base_key(suite)}"
    if rebuild and final.exists():
        shutil.rmtree(final)
    return ensure_dir(final, lambda tmp: _build_base(tmp, suite))


def _find_release(tree: Path) -> str:
    for mods in (tree / "usr/lib/modules", tree / "lib/modules"):
        if mods.is_dir():
            releases = sorted(p.name for p in mods.iterdir() if (p / "modules.dep").exists())
            if releases:
                return releases[-1]
    raise HarnessError(f"no kernel modules installed in {tree}")


def _build_kernel_layer(tmp: Path, base: Path, ref: PackageRef) -> None:
    tree = tmp / "root"
    log = tmp / "build.log"
    started = time.monotonic()
    _run(["cp", "-a", "--reflink=auto", str(base / "root"), str(tree)], log=log)
    copy_s = time.monotonic() - started
    t = time.monotonic()
    deb = debian.download(ref, tmp / ".deb")
    download_s = time.monotonic() - t
    t = time.monotonic()
    inside = tree / "tmp" / deb.name
    shutil.move(str(deb), inside)
    shutil.rmtree(tmp / ".deb")
    # linux-image's postinst runs /etc/kernel/postinst.d/initramfs-tools: a real initrd
    in_chroot(tree, "dpkg", "-i", f"/tmp/{deb.name}", log=log, timeout=1800)
    inside.unlink()
    install_s = time.monotonic() - t
    release = _find_release(tree)
    vmlinuz = tree / "boot" / f"vmlinuz-{release}"
    initrd = tree / "boot" / f"initrd.img-{release}"
    if not vmlinuz.is_file() or not initrd.is_file():
        raise HarnessError(f"{ref.name}: no /boot/vmlinuz or /boot/initrd.img for {release}")
    listing = in_chroot(tree, "lsinitramfs", f"/boot/initrd.img-{release}", log=None)
    if not re.search(r"/virtio_blk\.ko", listing):
        raise HarnessError(f"the initrd of {release} has no virtio_blk module (log: {log})")
    base_manifest = json.loads((base / "manifest.json").read_text())
    manifest = {
        "layer": "kernel",
        "base": base.name,
        "suite": base_manifest["suite"],
        "python": base_manifest["python"],
        "wheels": base_manifest["wheels"],
        "kernel_package": ref.name,
        "kernel_version": ref.version,
        "kernel_suite": ref.suite,
        "release": release,
        "initrd_bytes": initrd.stat().st_size,
        "timings": {
            **base_manifest["timings"],
            "copy_base": round(copy_s, 1),
            "kernel_download": round(download_s, 1),
            "kernel_install": round(install_s, 1),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def build_rootfs(
    kernel: str = "6.1", suite: str = DEFAULT_SUITE, rebuild: bool = False
) -> RootfsImage:
    """The cached Debian guest tree of ``suite`` with ``kernel`` installed (built once).

    ``kernel`` is a name :func:`vmharness.kernels.resolve_kernel` knows: ``6.1`` (bookworm's
    cloud kernel), ``6.12`` (trixie's, installed into the bookworm guest) or a package name.
    ``rebuild`` rebuilds the kernel layer (the base: ``build_base(suite, rebuild=True)``).
    """
    _require_root()
    started = time.monotonic()
    base_existed = (cache_dir("rootfs") / f"base-{suite}-{base_key(suite)}").is_dir()
    base = build_base(suite)
    ref = kernels.resolve_kernel(kernel)
    key = content_key({"base": base.name, "kernel": [ref.name, ref.version]})
    name = ref.name.removeprefix("linux-image-")
    final = cache_dir("rootfs") / f"{suite}-{name}-{key}"
    if rebuild and final.exists():
        shutil.rmtree(final)
    existed = final.is_dir()
    ensure_dir(final, lambda tmp: _build_kernel_layer(tmp, base, ref))
    manifest = json.loads((final / "manifest.json").read_text())
    tree = final / "root"
    release = manifest["release"]
    timings = dict(manifest["timings"])
    timings["lookup"] = round(time.monotonic() - started, 3)
    return RootfsImage(
        tree=tree,
        suite=suite,
        kernel=kernel,
        kernel_package=manifest["kernel_package"],
        kernel_version=manifest["kernel_version"],
        release=release,
        vmlinuz=tree / "boot" / f"vmlinuz-{release}",
        initrd=tree / "boot" / f"initrd.img-{release}",
        python=manifest["python"],
        wheels=tuple(manifest["wheels"]),
        timings=timings,
        cached=existed and base_existed,
        info=manifest,
    )


def cached_rootfs() -> list[dict[str, Any]]:
    """The guest layers in the cache, with their sizes (bytes allocated)."""
    out = []
    for manifest in sorted(cache_dir("rootfs").glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        current = data["layer"] == "base" and manifest.parent.name.endswith(base_key(data["suite"]))
        if data["layer"] == "kernel":
            current = (cache_dir("rootfs") / data["base"]).is_dir() and data["base"].endswith(
                base_key(data["suite"])
            )
        out.append(
            {
                "directory": str(manifest.parent),
                "layer": data["layer"],
                "suite": data["suite"],
                "release": data.get("release", ""),
                "bytes": dir_size(manifest.parent),
                "stale": not current,
            }
        )
    return out


def clean_rootfs() -> list[Path]:
    """Remove stale guest layers, leftover overlay trees and the CLI's run directories."""
    root = cache_dir("rootfs")
    removed = [Path(e["directory"]) for e in cached_rootfs() if e["stale"]]
    removed += [p for p in root.glob(".overlay-*") if p.is_dir()]
    removed += [p for p in cache_dir("rootfs-runs").iterdir() if p.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# --- the per-run overlay ------------------------------------------------------------------------


def _unit_wanted_by(text: str) -> list[str]:
    """The ``WantedBy=`` targets of a unit's ``[Install]`` section."""
    section = ""
    targets: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Install" and line.startswith("WantedBy="):
            targets += line.split("=", 1)[1].split()
    return targets


UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target", ".mount")


def systemd_destination(relative: str) -> tuple[str, int] | None:
    """Where a file of the repository's ``systemd/`` directory goes in the guest (and its mode).

    Units to ``/etc/systemd/system/``, udev rules to ``/etc/udev/rules.d/``, kernel hooks
    (``kernel/postinst.d/*``, ``kernel/install.d/*``) to ``/etc/kernel/...``; ``None`` for files
    with no place (documentation, ...).
    """
    path = Path(relative)
    if path.suffix in UNIT_SUFFIXES and len(path.parts) == 1:
        return f"/etc/systemd/system/{path.name}", 0o644
    if path.suffix == ".rules":
        return f"/etc/udev/rules.d/{path.name}", 0o644
    hooks = ("postinst.d", "postrm.d", "preinst.d", "prerm.d", "install.d")
    if len(path.parts) == 3 and path.parts[0] == "kernel" and path.parts[1] in hooks:
        return f"/etc/kernel/{path.parts[1]}/{path.name}", 0o755
    return None


def _enable(tree: Path, unit_path: str) -> list[str]:
    """``systemctl enable`` for a unit under /etc/systemd/system: the ``.wants`` links."""
    text = (tree / unit_path.lstrip("/")).read_text()
    name = Path(unit_path).name
    links = []
    for target in _unit_wanted_by(text):
        link = f"/etc/systemd/system/{target}.wants/{name}"
        _symlink(tree, link, unit_path)
        links.append(link)
    return links


def install_kdumper(tree: Path, python: str, repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Copy kdumper from the working tree into the guest tree; returns what was installed.

    The package goes to ``/usr/local/lib/python3.X/dist-packages/kdumper`` (with a dist-info,
    so ``importlib.metadata`` knows it), the console script to ``/usr/local/bin/kdumper`` (the
    path ``pip install`` as root uses and systemd's units search), and every file of
    ``systemd/`` to its place; units with ``[Install]`` are enabled.
    """
    src = repo / "src" / "kdumper"
    if not (src / "__init__.py").is_file():
        raise HarnessError(f"no kdumper package in {src}")
    site = site_packages(python)
    dest = tree / site.lstrip("/") / "kdumper"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        src,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", ".*", "*.pyc", "*.pyo"),
    )
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    version = project["version"]
    dist_info = f"{site}/kdumper-{version}.dist-info"
    requires = "".join(f"Requires-Dist: {r}\n" for r in project.get("dependencies", []))
    _put(
        tree,
        f"{dist_info}/METADATA",
        f"Metadata-Version: 2.1\nName: kdumper\nVersion: {version}\n{requires}",
    )
    scripts = project.get("scripts", {})
    entry = "".join(f"{k} = {v}\n" for k, v in scripts.items())
    _put(tree, f"{dist_info}/entry_points.txt", f"[console_scripts]\n{entry}")
    _put(tree, f"{dist_info}/INSTALLER", "vmharness\n")
    module, _, func = scripts.get("kdumper", "kdumper.cli.main:main").partition(":")
    _put(
        tree,
        "/usr/local/bin/kdumper",
        f"#!/usr/bin/python3\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n",
        0o755,
    )
    installed: dict[str, Any] = {"version": version, "files": [], "enabled": [], "skipped": []}
    systemd_dir = repo / "systemd"
    if systemd_dir.is_dir():
        for path in sorted(p for p in systemd_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(systemd_dir).as_posix()
            where = systemd_destination(rel)
            if where is None:
                installed["skipped"].append(rel)
                continue
            _put(tree, where[0], path.read_bytes(), where[1])
            installed["files"].append(where[0])
            if where[0].startswith("/etc/systemd/system/"):
                installed["enabled"] += _enable(tree, where[0])
    return installed


def write_overlay(
    tree: Path,
    python: str,
    *,
    config: str | None,
    plan: Mapping[str, str],
    repo: Path = REPO_ROOT,
    extra_files: Mapping[str, tuple[str | bytes, int]] | None = None,
    network: bool = False,
) -> dict[str, Any]:
    """Everything a run adds to the cached tree: guest files, kdumper, config, crash plan.

    ``extra_files`` maps guest paths to ``(content, mode)`` (written last: keys, known_hosts);
    ``network`` adds the ssh target's network (:data:`NETWORK_FILES`, networkd enabled).
    """
    _put(tree, "/etc/hostname", f"{HOSTNAME}\n")
    _put(tree, "/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost\n")
    _put(tree, "/etc/fstab", FSTAB)
    for name, (path, mode) in GUEST_FILES.items():
        _put(tree, path, (DATA_DIR / name).read_bytes(), mode)
    _enable(tree, GUEST_FILES["kdguest-ready.service"][0])
    installed = install_kdumper(tree, python, repo)
    if config is not None:
        tomllib.loads(config)  # a syntax error here is the caller's, not the guest's
        _put(tree, "/etc/kdumper/kdumper.toml", config)
    _put(tree, "/etc/kdguest/plan", "".join(f"{k}={v}\n" for k, v in sorted(plan.items())))
    if network:
        for name, (path, mode) in NETWORK_FILES.items():
            _put(tree, path, (DATA_DIR / name).read_bytes(), mode)
        for link, unit in NETWORK_LINKS.items():
            _symlink(tree, link, unit)
    for path, (data, mode) in (extra_files or {}).items():
        _put(tree, path, data, mode)
    # byte-compile kdumper now: the capture kernel should not spend its memory and time on it
    in_chroot(tree, "python3", "-m", "compileall", "-q", site_packages(python), proc=False)
    return installed


def make_root_disk(
    image: RootfsImage,
    out: Path,
    *,
    config: str | None = None,
    plan: Mapping[str, str] | None = None,
    repo: Path = REPO_ROOT,
    extra_files: Mapping[str, tuple[str | bytes, int]] | None = None,
    network: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Build the root disk image of one run: the cached tree + :func:`write_overlay`.

    The tree is copied with hard links (``cp -al``, on the cache's filesystem) and the overlay
    only ever adds new inodes, so the cache is never changed; ``mkfs.ext4 -d`` makes the sparse
    image. Returns the image and what the overlay installed.
    """
    _require_root()
    work = Path(tempfile.mkdtemp(prefix=".overlay-", dir=cache_dir("rootfs")))
    try:
        tree = work / "root"
        _run(["cp", "-al", str(image.tree), str(tree)])
        installed = write_overlay(
            tree,
            image.python,
            config=config,
            plan=plan or {"CRASH": "none"},
            repo=repo,
            extra_files=extra_files,
            network=network,
        )
        size_mib = dir_size(tree) // (1024 * 1024) + ROOT_HEADROOM_MIB
        make_ext4_image(out, size_mib, label="kdroot", source_dir=tree)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, installed


# --- the boot cycle -----------------------------------------------------------------------------

_BANNER = re.compile(r"\] Linux version \d")
_CMDLINE = re.compile(r"\] Command line: (.*)")
_RESTART = re.compile(r"reboot: (Restarting system|Power down|System halted)")
_MARK = re.compile(r"KDGUEST: (\S+)(.*)")
#: the first kernel cannot reach user space: a boot that will never report
#: A first boot whose console stays silent this long has hung (seen once under TCG: the 6.1
#: kernel stopped printing 0.7 s into its boot, for 600 s). Normal boots of this guest print a
#: line at least every few seconds (longest gap before the ready marker: 3.6 s over 39 runs).
FIRST_BOOT_SILENCE = 120.0
#: Such a boot is retried this often (same disks: nothing of the cycle has happened yet).
FIRST_BOOT_RETRIES = 1
#: A first boot whose kernel reports a soft lockup is wedged too (seen once under TCG: both
#: vCPUs of a 6.1 guest stuck from 6 s into its boot, printing lockup reports for 10 minutes
#: instead of falling silent). A healthy boot of this guest never prints one.
FIRST_BOOT_WEDGED = r"watchdog: BUG: soft lockup - CPU#\d+ stuck"

_BOOT_FAILURE = (
    r"Kernel panic - not syncing|ALERT! .* does not exist|Gave up waiting for root"
    r"|Dropping to a shell"
)


@dataclass(frozen=True)
class Marker:
    """One ``KDGUEST: <name> key=value ...`` line of the serial console."""

    time: float
    name: str
    fields: dict[str, str]
    text: str


@dataclass(frozen=True)
class Boot:
    """One kernel boot seen on the serial console."""

    time: float
    """Seconds since QEMU started (the ``Linux version`` banner)."""
    capture: bool
    """A capture kernel (its command line has ``elfcorehdr=``)."""
    cmdline: str


def parse_markers(lines: Sequence[SerialLine]) -> list[Marker]:
    """The ``KDGUEST:`` markers of a serial log, in order."""
    out = []
    for line in lines:
        m = _MARK.search(line.text)
        if not m:
            continue
        rest = m.group(2).strip()
        fields = dict(re.findall(r"(\w+)=(\S*)", rest)) if m.group(1) != "cmdline" else {}
        out.append(Marker(line.time, m.group(1), fields, rest))
    return out


def parse_boots(lines: Sequence[SerialLine]) -> list[Boot]:
    """The kernel boots of a serial log (banner time, capture or not, command line)."""
    boots: list[Boot] = []
    pending: float | None = None
    for line in lines:
        if _BANNER.search(line.text):
            if pending is not None:
                boots.append(Boot(pending, False, ""))
            pending = line.time
            continue
        m = _CMDLINE.search(line.text)
        if m and pending is not None:
            cmdline = m.group(1).strip()
            boots.append(Boot(pending, "elfcorehdr=" in cmdline, cmdline))
            pending = None
    if pending is not None:
        boots.append(Boot(pending, False, ""))
    return boots


#: the kernel's own lines when the crash begins (the guest's "crash" marker may be lost in
#: the UART buffer when the kernel stops)
_CRASH_LINE = re.compile(r"sysrq: Trigger a crash|Kernel panic - not syncing")


def crash_time(lines: Sequence[SerialLine]) -> float | None:
    """When the first kernel crashed: the ``crash`` marker, else the kernel's panic line after
    the first ``ready`` marker (``None`` when it did not crash)."""
    markers = parse_markers(lines)
    ready = next((m for m in markers if m.name == "ready"), None)
    if ready is None:
        return None
    crash = next((m for m in markers if m.name == "crash"), None)
    panic = _first(lines, _CRASH_LINE, ready.time)
    times = [t for t in (crash.time if crash else None, panic) if t is not None]
    return min(times) if times else None


def capture_section(lines: Sequence[SerialLine]) -> list[SerialLine]:
    """The serial lines of the first capture kernel: from its banner to the next banner."""
    boots = parse_boots(lines)
    capture = next((b for b in boots if b.capture), None)
    if capture is None:
        return []
    end = next((b.time for b in boots if b.time > capture.time), float("inf"))
    return [line for line in lines if capture.time <= line.time < end]


_CAPTURE_TROUBLE = (
    (re.compile(r"Kernel panic - not syncing.*"), "the capture kernel panicked"),
    (re.compile(r"\S+ invoked oom-killer.*"), "out of memory in the capture kernel"),
    (re.compile(r"Out of memory: Killed process.*"), "the capture kernel's OOM killer struck"),
    (re.compile(r"Failed to start .*kdumper-ca.*"), "kdumper-capture.service failed"),
)


def capture_troubles(lines: Sequence[SerialLine]) -> list[str]:
    """What went wrong in the capture kernel (panic, OOM, a failed capture unit), one line
    each, with the first console line that shows it."""
    found: list[str] = []
    section = capture_section(lines)
    for regex, what in _CAPTURE_TROUBLE:
        for line in section:
            m = regex.search(line.text)
            if m:
                text = re.sub(r"\x1b\[[0-9;]*m", "", m.group(0)).strip()
                found.append(f"{what}: {text}")
                break
    return found


def _first(lines: Sequence[SerialLine], regex: re.Pattern[str], after: float) -> float | None:
    for line in lines:
        if line.time >= after and regex.search(line.text):
            return line.time
    return None


def cycle_timings(lines: Sequence[SerialLine], exit_time: float | None) -> dict[str, float]:
    """Phase durations (seconds) of a serial log of :func:`boot_cycle`.

    ``boot`` QEMU start → first ``ready`` marker (``boot_kernel``: → ``Run /init``,
    ``boot_initrd``: → systemd's welcome, ``boot_systemd``: → ready); ``arm``: kdumper.service's
    run time as the guest measured it; ``crash_to_capture_kernel``: ``crash`` marker → the
    capture kernel's banner; ``capture_kernel_boot``: → ``capture-start``; ``capture``: →
    the capture kernel's ``reboot:`` line; ``reboot``: → the next banner; ``back``: → the
    ``back`` marker; ``poweroff``: last marker → QEMU exit; ``total``.
    """
    markers = parse_markers(lines)
    boots = parse_boots(lines)
    out: dict[str, float] = {}

    def mark(name: str, after: float = -1.0) -> Marker | None:
        return next((m for m in markers if m.name == name and m.time >= after), None)

    ready = mark("ready")
    if ready is not None:
        out["boot"] = ready.time
        init = _first(lines, re.compile(r"Run /init as init process"), 0.0)
        welcome = _first(lines, re.compile(r"Welcome to .*Debian"), 0.0)
        if boots and init is not None:
            out["boot_kernel"] = init - boots[0].time
            if welcome is not None:
                out["boot_initrd"] = welcome - init
                out["boot_systemd"] = ready.time - welcome
        arm_ms = ready.fields.get("arm_ms", "-")
        if arm_ms.isdigit():
            out["arm"] = int(arm_ms) / 1000
    crashed = crash_time(lines)
    if crashed is not None:
        capture_boot = next((b for b in boots if b.capture and b.time >= crashed), None)
        if capture_boot is not None:
            out["crash_to_capture_kernel"] = capture_boot.time - crashed
            start = mark("capture-start", capture_boot.time)
            if start is not None:
                out["capture_kernel_boot"] = start.time - capture_boot.time
            restart = _first(lines, _RESTART, capture_boot.time)
            if restart is not None:
                if start is not None:
                    out["capture"] = restart - start.time
                after = next((b for b in boots if b.time > restart), None)
                if after is not None:
                    out["reboot"] = after.time - restart
                    back = mark("back", after.time)
                    if back is not None:
                        out["back"] = back.time - after.time
    if exit_time is not None:
        if markers:
            out["poweroff"] = exit_time - markers[-1].time
        out["total"] = exit_time
    return {k: round(v, 3) for k, v in out.items()}


@dataclass
class CycleResult:
    """What one :func:`boot_cycle` saw and saved."""

    workdir: Path
    serial_log: Path
    kernel_release: str
    crash: str
    target: str
    accel: str
    boots: list[Boot]
    markers: list[Marker]
    ready: bool
    """The first boot reached ``kdguest-ready.service``."""
    armed: bool
    """``/sys/kernel/kexec_crash_loaded`` read 1 at the first ready marker."""
    crashed: bool
    capture_kernel_booted: bool
    capture_started: bool
    """``kdumper-capture.service`` started (its ``capture-start`` marker)."""
    back: bool
    """A first-kernel boot after the crash reached the ready unit again."""
    powered_off: bool
    """The guest powered itself off at the end (QEMU exited with status 0)."""
    dump_dir: Path | None
    """``/var/crash`` of the dump disk, copied out (``None`` when it could not be read)."""
    dump_files: list[str]
    """Files under :attr:`dump_dir`, relative."""
    raw_disk: Path | None
    """The raw dump disk image (``/dev/vdc``; kept for the ``raw`` target)."""
    guest_state: Path | None
    """``/var/lib/kdguest`` copied out: journals, ``kdumper status --json`` per boot."""
    status: dict[str, Any] | None
    """``kdumper status --json`` of the last boot."""
    capture_memory_kb: dict[str, int]
    capture_troubles: list[str]
    """Panic, OOM or a failed capture unit seen on the capture kernel's console."""
    capture_log: Path | None
    """The capture kernel's part of the serial log (``capture-console.log``)."""
    """``MemTotal``/``MemAvailable`` of the capture kernel when the capture unit started."""
    timings: dict[str, float]
    problems: list[str]
    config: str | None
    overlay: dict[str, Any] = field(default_factory=dict)
    kill_capture: bool = False
    """The capture was to be killed midway (``kill_capture_kib``)."""

    @property
    def ok(self) -> bool:
        """Everything the requested cycle should do happened (no :attr:`problems`)."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        out = asdict(self)
        out["boots"] = [asdict(b) for b in self.boots]
        out["markers"] = [f"{m.time:.3f} {m.name} {m.text}".rstrip() for m in self.markers]
        out["ok"] = self.ok
        data: dict[str, Any] = json.loads(json.dumps(out, default=str))
        return data


def resolve_accel(accel: str, image: RootfsImage) -> str:
    """``tcg`` or ``kvm`` for ``auto``: the harness's cached KVM probe decides.

    The probe must boot the harness's own initramfs (its ``/init`` answers the probe), never
    this guest's Debian initrd: a probe of the wrong guest would record "KVM does not work" for
    every user of the harness.
    """
    if accel != "auto":
        return accel
    decided = kvm_precheck()
    if decided is not None:
        return "kvm" if decided else "tcg"
    from .initramfs import build_guest_initramfs
    from .vmcore import HARNESS_VERSION

    kern = kernels.get_kernel(image.kernel)
    probe = QemuConfig(
        kernel=kern.vmlinuz, initrd=build_guest_initramfs(kern, None, HARNESS_VERSION).initrd
    )
    return "kvm" if kvm_works(probe) else "tcg"


def ssh_network_args(host_port: int, host: str = "127.0.0.1") -> list[str]:
    """QEMU arguments of the ssh target's guest network: a virtio NIC on a user network that
    reaches nothing but ``SSH_GUEST_ADDR:22``, relayed to ``host:host_port`` on this machine.

    ``restrict=on`` drops every packet the guest sends out of the user network (DHCP and the
    guestfwd address still answer). Each guest connection runs ``guestfwd-relay`` (QEMU's
    ``cmd:`` form: a chardev guestfwd would connect once, at QEMU's start, and carry only one
    connection).
    """
    relay = DATA_DIR / "guestfwd-relay"
    cmd = f"{sys.executable} {relay} {host} {host_port}"
    if "," in cmd:
        raise HarnessError(f"QEMU's option syntax cannot carry ',' in {cmd!r}")
    netdev = f"user,id=kdnet,restrict=on,guestfwd=tcp:{SSH_GUEST_ADDR}:22-cmd:{cmd}"
    return ["-netdev", netdev, "-device", "virtio-net-pci,netdev=kdnet"]


def _plan(crash: str, delay: float, kill_capture_kib: int | None = None) -> dict[str, str]:
    plan = {"CRASH": crash, "CRASH_DELAY": str(delay), "AFTER": "poweroff"}
    if kill_capture_kib is not None:
        plan.update(KILL_CAPTURE="1", KILL_AFTER_KB=str(kill_capture_kib))
    return plan


#: An oops no test causes, seen under multi-threaded TCG: a vCPU ran a static branch while
#: another was patching it (``text_poke_bp``'s int3), in the boot after the capture (6.12,
#: ``__x64_sys_getrandom`` as ``random: crng init done`` flipped its key; once in a full run of
#: session 4). That boot panics and reboots: the cycle has one boot more than it should.
EMULATOR_OOPS = r"Oops: int3\b.*"


def emulator_flake(result: CycleResult) -> str | None:
    """The oops line when the emulator spoiled a boot from the capture kernel's on
    (:data:`EMULATOR_OOPS`, under TCG only), else None."""
    if not result.accel.startswith("tcg") or not result.capture_kernel_booted:
        return None
    text = result.serial_log.read_text(errors="replace")
    at = text.find("elfcorehdr=")  # the capture kernel's command line
    m = re.search(EMULATOR_OOPS, text[at:]) if at >= 0 else None
    return m.group(0).strip() if m else None


def boot_cycle(
    image: RootfsImage,
    workdir: Path | None = None,
    *,
    config: str | None = None,
    target: str = "local",
    crash: str = "sysrq",
    mem: str | int = "1G",
    crashkernel: str = DEFAULT_CRASHKERNEL,
    smp: int = 2,
    accel: str = "auto",
    timeout: float = 900.0,
    append: str = "",
    extra_qemu_args: Sequence[str] = (),
    repo: Path = REPO_ROOT,
    keep_disks: bool = False,
    crash_delay: float = 2.0,
    dump_disk_mib: int | None = None,
    kill_capture_kib: int | None = None,
    dump_seed: Path | None = None,
    extra_files: Mapping[str, tuple[str | bytes, int]] | None = None,
) -> CycleResult:
    """Boot the guest, let kdumper.service arm it, crash it, follow the capture, power off.

    ``config`` is ``/etc/kdumper/kdumper.toml`` (default: :data:`DEFAULT_CONFIGS` of
    ``target``); ``crash="none"`` only boots to the ready marker and powers off. ``workdir``
    (default ``<cache>/rootfs-runs/<release>-<target>-<crash>``, emptied first) receives the
    disks, ``serial.log``, ``crash/`` (``/var/crash`` of the dump disk), ``kdguest/`` (the
    guest's state directory) and ``result.json``. The root and dump disk images are deleted
    after a successful run unless ``keep_disks``. ``dump_disk_mib`` sizes the ext4 dump disk
    (default: room for an unfiltered dump), ``dump_seed`` is copied into it (earlier dumps);
    ``kill_capture_kib`` makes the capture kernel
    ``kill -9`` the capture once its ``vmcore-incomplete`` reaches that many KiB (the unit's
    ``FailureAction=`` must then reboot; the failed unit is not a problem of the cycle, a
    capture that was never killed is). ``extra_files`` (guest path → ``(content, mode)``) go
    into the overlay. ``target="ssh"`` needs a ``config`` and ``extra_qemu_args`` from
    :func:`ssh_network_args`; it adds the guest network (:data:`NETWORK_FILES`). Guest
    misbehaviour is reported in :attr:`CycleResult.problems`; host failures raise
    :class:`HarnessError`. A cycle the emulator spoiled (:func:`emulator_flake`) is run once
    more on fresh disks, in ``workdir/again`` (its timings say ``emulator_retries``).
    """
    if target not in TARGETS:
        raise HarnessError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if crash not in CRASHES:
        raise HarnessError(f"unknown crash {crash!r}; choose from {', '.join(CRASHES)}")
    mem_mib = parse_mem(mem)
    if workdir is None:
        workdir = cache_dir("rootfs-runs") / f"{image.release}-{target}-{crash}"
        shutil.rmtree(workdir, ignore_errors=True)
    if config is None:
        if target not in DEFAULT_CONFIGS:
            raise HarnessError(f"the {target} target needs a config (no default)")
        config = DEFAULT_CONFIGS[target]

    def once(workdir: Path) -> CycleResult:
        workdir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}

        t = time.monotonic()
        root_img, overlay = make_root_disk(
            image,
            workdir / "root.img",
            config=config,
            plan=_plan(crash, crash_delay, kill_capture_kib),
            repo=repo,
            extra_files=extra_files,
            network=target == "ssh",
        )
        timings["root_disk"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        dump_img = make_ext4_image(
            workdir / "dump.img",
            dump_disk_mib or max(1024, mem_mib * 3 // 2 + 256),
            label="kdcrash",
            source_dir=dump_seed,
        )
        raw_img = workdir / "raw.img"
        with raw_img.open("wb") as f:
            f.truncate((mem_mib + 256) * 1024 * 1024)
        timings["dump_disks"] = round(time.monotonic() - t, 3)

        cmdline = " ".join(
            p
            for p in (
                f"root={ROOT_DEV} rw console=ttyS0",
                f"crashkernel={crashkernel}",
                "panic=5",
                append,
            )
            if p
        )
        qemu_config = QemuConfig(
            kernel=image.vmlinuz,
            initrd=image.initrd,
            append=cmdline,
            mem_mib=mem_mib,
            smp=smp,
            disks=(Disk(root_img), Disk(dump_img), Disk(raw_img)),
            accel=resolve_accel(accel, image),
            extra_args=tuple(extra_qemu_args),
            no_reboot=False,
        )
        serial_log = workdir / "serial.log"
        stalls: list[str] = []
        while True:
            problems: list[str] = []
            stalled = False
            with QemuVM(qemu_config, workdir / ".qemu", serial_log=serial_log) as vm:
                deadline = time.monotonic() + timeout
                try:
                    _drive(vm, crash, deadline, problems)
                except GuestStalledError as exc:  # hung before the first boot was ready
                    stalled = len(stalls) < FIRST_BOOT_RETRIES
                    (stalls if stalled else problems).append(str(exc))
                except HarnessError as exc:
                    problems.append(str(exc))
                if not stalled:
                    exit_code, exit_time = _finish(vm, problems)
                    lines = list(vm.lines)
                    used_accel = vm.accel
            if not stalled:
                break
            # nothing of the cycle happened yet (no crash): boot the same disks again
            serial_log.replace(workdir / f"serial-stalled-{len(stalls)}.log")
        if stalls:
            timings["first_boot_retries"] = len(stalls)
        timings.update(cycle_timings(lines, exit_time))

        markers = parse_markers(lines)
        boots = parse_boots(lines)
        names = [m.name for m in markers]
        ready_markers = [m for m in markers if m.name == "ready"]
        crashed = crash_time(lines)
        capture_booted = crashed is not None and any(b.capture and b.time >= crashed for b in boots)
        start = next((m for m in markers if m.name == "capture-start"), None)
        memory = {
            k: int(v)
            for k, v in (start.fields if start else {}).items()
            if k in ("mem_total_kb", "mem_available_kb") and v.isdigit()
        }

        section = capture_section(lines)
        capture_log: Path | None = None
        if section:
            capture_log = workdir / "capture-console.log"
            capture_log.write_text("".join(f"[{x.time:9.3f}] {x.text}\n" for x in section))

        t = time.monotonic()
        dump_dir: Path | None = None
        dump_files: list[str] = []
        try:
            dump_dir = extract_tree(dump_img, "/", workdir / "crash")
            dump_files = sorted(
                p.relative_to(dump_dir).as_posix() for p in dump_dir.rglob("*") if p.is_file()
            )
        except HarnessError as exc:
            problems.append(f"reading the dump disk: {exc}")
        guest_state: Path | None = None
        status: dict[str, Any] | None = None
        try:
            guest_state = extract_tree(root_img, "/var/lib/kdguest", workdir)
            status = _last_status(guest_state)
        except HarnessError as exc:
            problems.append(f"reading the guest's state: {exc}")
        timings["extract"] = round(time.monotonic() - t, 3)

        result = CycleResult(
            workdir=workdir,
            serial_log=serial_log,
            kernel_release=image.release,
            crash=crash,
            target=target,
            accel=used_accel,
            boots=boots,
            markers=markers,
            ready=bool(ready_markers),
            armed=bool(ready_markers) and ready_markers[0].fields.get("loaded") == "1",
            crashed=crashed is not None,
            capture_kernel_booted=capture_booted,
            capture_started=start is not None,
            back="back" in names,
            powered_off=exit_code == 0 and "poweroff" in names,
            dump_dir=dump_dir,
            dump_files=dump_files,
            raw_disk=raw_img if raw_img.exists() else None,
            guest_state=guest_state,
            status=status,
            capture_memory_kb=memory,
            capture_troubles=capture_troubles(lines),
            capture_log=capture_log,
            timings=timings,
            problems=problems,
            config=config,
            overlay=overlay,
            kill_capture=kill_capture_kib is not None,
        )
        _check(result)
        if result.ok and not keep_disks:
            root_img.unlink(missing_ok=True)
            dump_img.unlink(missing_ok=True)
            if target != "raw":
                raw_img.unlink(missing_ok=True)
                result.raw_disk = None
        (workdir / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
        return result

    result = once(workdir)
    if emulator_flake(result) is None:
        return result
    again = once(workdir / "again")
    again.timings["emulator_retries"] = 1
    return again


def _drive(vm: QemuVM, crash: str, deadline: float, problems: list[str]) -> None:
    """Follow the guest through the cycle's phases; record what did not happen."""

    def left(cap: float) -> float:
        return max(1.0, min(cap, deadline - time.monotonic()))

    ready = vm.wait_for(
        r"KDGUEST: ready boot=1\b",
        left(600),
        abort=_BOOT_FAILURE,
        silence=FIRST_BOOT_SILENCE,
        wedged=FIRST_BOOT_WEDGED,
    )
    if ready is None:
        problems.append(f"QEMU exited before the guest was ready: {vm.stderr_tail()}")
        return
    if crash == "none":
        vm.wait_for(r"KDGUEST: poweroff", left(300))
        return
    line = vm.wait_for(
        rf"KDGUEST: (crash \S+|not-armed|poweroff)|{_CRASH_LINE.pattern}",
        left(300),
        start=vm.lines.index(ready),
    )
    if line is None or "KDGUEST: poweroff" in line.text:
        problems.append("the guest powered off without crashing")
        return
    if "not-armed" in line.text:
        problems.append("the guest was not armed (kexec_crash_loaded != 1): no crash")
        return
    index = vm.lines.index(line)
    # the capture kernel's banner; a first-kernel banner here means kexec did not happen
    banner = vm.wait_for(_BANNER, left(180), start=index)
    if banner is None:
        problems.append("QEMU exited after the crash")
        return
    back = vm.wait_for(r"KDGUEST: (back|ready boot=[2-9])", left(900), start=index)
    if back is None:
        problems.append("QEMU exited before the guest came back")
        return
    vm.wait_for(r"KDGUEST: (poweroff|staying)", left(300), start=vm.lines.index(back))


def _finish(vm: QemuVM, problems: list[str]) -> tuple[int | None, float | None]:
    """Wait for the guest to power off (ACPI powerdown, then kill); returns (status, time).

    A guest that did not announce its power-off (a failed boot, a timeout) is ended at once.
    """
    announced = any("KDGUEST: poweroff" in x.text for x in vm.lines)
    try:
        code = vm.wait_exit(120 if announced else 3)
        return code, vm.elapsed()
    except HarnessError:
        if not announced:
            return None, vm.elapsed()
    with contextlib.suppress(HarnessError, OSError, ValueError):
        vm.qmp("system_powerdown")
    try:
        code = vm.wait_exit(60)
        problems.append("the guest did not power off by itself (QMP system_powerdown)")
        return code, vm.elapsed()
    except HarnessError:
        problems.append("the guest did not power off (QEMU killed)")
        return None, vm.elapsed()


def _last_status(state: Path) -> dict[str, Any] | None:
    files = sorted(state.glob("status-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    for path in reversed(files):
        try:
            data = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
        if isinstance(data, dict):
            return data
    return None


def _check(result: CycleResult) -> None:
    """Add the problems a complete cycle must not have."""
    p = result.problems
    if not result.ready:
        p.append("the first boot never reached kdguest-ready.service")
    if result.crash == "none":
        if result.crashed:
            p.append("the guest crashed although no crash was asked for")
    else:
        if result.ready and not result.armed and not any("armed" in x for x in p):
            p.append("the guest was not armed (kexec_crash_loaded != 1)")
        if result.crashed and not result.capture_kernel_booted:
            p.append("no capture kernel booted after the crash (a plain reboot?)")
        if result.capture_kernel_booted and not result.capture_started:
            p.append("the capture kernel never started kdumper-capture.service")
        troubles = result.capture_troubles
        if result.kill_capture:
            # killed on purpose: its failure is expected, a capture that ran on is not
            troubles = [t for t in troubles if "kdumper-capture.service failed" not in t]
            if result.capture_started and "killed-capture" not in {m.name for m in result.markers}:
                p.append("the capture was not killed midway (no killed-capture marker)")
        p.extend(troubles)
        if result.crashed and not result.back:
            p.append("the guest did not come back after the capture")
    if result.ready and not result.powered_off and not any("power" in x for x in p):
        p.append("the guest did not power off cleanly")


def rootfs_summary(image: RootfsImage) -> dict[str, Any]:
    """A JSON-friendly summary of a built guest, with the cache sizes."""
    data = image.to_json()
    data.pop("info", None)
    data["layers"] = [e for e in cached_rootfs() if not e["stale"]]
    return data


__all__ = [
    "CRASHES",
    "DEFAULT_CONFIGS",
    "TARGETS",
    "Boot",
    "CycleResult",
    "Marker",
    "RootfsImage",
    "boot_cycle",
    "build_base",
    "build_rootfs",
    "cached_rootfs",
    "capture_section",
    "capture_troubles",
    "clean_rootfs",
    "cycle_timings",
    "make_root_disk",
    "parse_boots",
    "parse_markers",
    "ssh_network_args",
]
