"""Build initramfs images: a deterministic cpio (newc) writer and the harness's guest image.

The guest image holds busybox-static, kexec-tools, both makedumpfile versions (bookworm's 1.7.2
and trixie's 1.7.6, which has zstd) with their shared libraries (found with ``ldd``), the
kernel's virtio modules (decompressed), the ``kdload`` workload program (``gcc -static``), the
optional crash test module and ``guest/init.sh`` as ``/init``.

The first kernel's initrd is ``core.cpio.gz`` followed by a second gzip member holding
``/boot/vmlinuz`` and ``/boot/initrd.img`` (= ``core.cpio.gz``), which ``kexec -p`` loads as the
capture kernel and its initrd.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import re
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import debian
from .cache import cache_dir, content_key, ensure_dir, file_digest
from .errors import HarnessError
from .kernels import Kernel

GUEST_DIR = Path(__file__).resolve().parent / "guest"
INIT_SCRIPT = GUEST_DIR / "init.sh"
KDLOAD_SOURCE = GUEST_DIR / "kdload.c"

#: Modules loaded by hand in this order (those built into a kernel are skipped). 6.1 has all of
#: virtio modular; 6.12 only virtio_blk and qemu_fw_cfg (as .ko.xz).
VIRTIO_MODULES: tuple[str, ...] = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "qemu_fw_cfg",
)

#: makedumpfile builds in the image: version -> suite.
MAKEDUMPFILE_SUITES: dict[str, str] = {"1.7.2": "bookworm", "1.7.6": "trixie"}


# --- cpio newc ----------------------------------------------------------------------------------


class CpioWriter:
    """Write a cpio archive in the ``newc`` format the kernel unpacks (all mtimes 0)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name = name.strip("/")
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,
            0,  # mtime
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded)
        self._out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def _parents(self, name: str) -> None:
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.add_dir("/".join(parts[:i]))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        """Add a directory (and its parents) once."""
        name = name.strip("/")
        if not name or name in self._dirs:
            return
        self._parents(name)
        self._dirs.add(name)
        self._entry(name, stat.S_IFDIR | mode)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file."""
        self._parents(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def add_path(self, name: str, source: Path, mode: int | None = None) -> None:
        """Add a regular file copied from ``source`` (following symlinks)."""
        st = source.stat()
        self.add_file(name, source.read_bytes(), mode if mode is not None else st.st_mode & 0o7777)

    def add_symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        self._parents(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node (no root needed: it is only written into the archive)."""
        self._parents(name)
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer."""
        self._entry("TRAILER!!!", 0)


def gzip_cpio(fill: Callable[[CpioWriter], None], level: int = 6) -> bytes:
    """Build a cpio archive with ``fill(writer)`` and return it gzip-compressed."""
    raw = io.BytesIO()
    writer = CpioWriter(raw)
    fill(writer)
    writer.close()
    return gzip.compress(raw.getvalue(), compresslevel=level, mtime=0)


# --- binaries and libraries ---------------------------------------------------------------------


def shared_libraries(binary: Path) -> list[Path]:
    """Absolute paths of the shared libraries ``binary`` needs on this host (via ``ldd``)."""
    proc = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, timeout=60, check=False
    )
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    libs: list[Path] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "not found" in line:
            raise HarnessError(f"{binary.name} needs {line.split()[0]}, not found on this host")
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"(/\S+)\s+\(", line)
        if m:
            libs.append(Path(m.group(1)))
    if proc.returncode != 0:
        raise HarnessError(f"ldd {binary} failed: {proc.stderr.strip()}")
    return libs


@dataclass(frozen=True)
class GuestTools:
    """The user-space programs put in the guest image."""

    busybox: Path
    kexec: Path
    vmcore_dmesg: Path
    makedumpfile: dict[str, Path]
    """version (``1.7.2``, ``1.7.6``) -> binary"""
    packages: tuple[debian.PackageRef, ...]


def guest_tools() -> GuestTools:
    """Download and unpack busybox-static, kexec-tools and both makedumpfile versions."""
    busybox_ref = debian.resolve("busybox-static", "bookworm")
    kexec_ref = debian.resolve("kexec-tools", "bookworm")
    refs = [busybox_ref, kexec_ref]
    mdf: dict[str, Path] = {}
    for version, suite in MAKEDUMPFILE_SUITES.items():
        ref = debian.resolve("makedumpfile", suite)
        if f":{version}-" not in ref.version and not ref.version.startswith(f"{version}-"):
            raise HarnessError(f"makedumpfile in {suite} is {ref.version}, expected {version}")
        refs.append(ref)
        mdf[version] = debian.unpack(ref) / "usr/bin/makedumpfile"
    kexec_root = debian.unpack(kexec_ref)
    return GuestTools(
        busybox=debian.unpack(busybox_ref) / "bin/busybox",
        kexec=kexec_root / "sbin/kexec",
        vmcore_dmesg=kexec_root / "sbin/vmcore-dmesg",
        makedumpfile=mdf,
        packages=tuple(refs),
    )


def build_kdload() -> Path:
    """Compile ``guest/kdload.c`` with ``gcc -static`` (cached by source hash)."""
    key = file_digest(KDLOAD_SOURCE)[:16]

    def build(tmp: Path) -> None:
        subprocess.run(
            ["gcc", "-static", "-O2", "-Wall", "-o", str(tmp / "kdload"), str(KDLOAD_SOURCE)],
            check=True,
            capture_output=True,
            timeout=300,
        )

    return ensure_dir(cache_dir("build") / f"kdload-{key}", build) / "kdload"


def kernel_module_files(kernel: Kernel, names: tuple[str, ...] = VIRTIO_MODULES) -> list[Path]:
    """The module files of ``names`` that exist in ``kernel`` (built-in ones are skipped)."""
    found: dict[str, Path] = {}
    for root, _dirs, files in os.walk(kernel.modules_dir):
        for f in files:
            base = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", f)
            if f != base and base in names:
                found[base] = Path(root) / f
    return [found[n] for n in names if n in found]


def module_bytes(path: Path) -> bytes:
    """A module's ELF bytes, decompressed from ``.ko.xz`` / ``.ko.gz`` / ``.ko.zst``."""
    if path.name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".zst"):
        return subprocess.run(
            ["zstd", "-dc", str(path)], capture_output=True, check=True, timeout=60
        ).stdout
    return path.read_bytes()


# --- the guest image ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestInitramfs:
    """A built guest initramfs."""

    initrd: Path
    """The first kernel's initrd (core + boot archive)."""
    core: Path
    """The capture kernel's initrd (core archive alone)."""
    key: str
    manifest: dict[str, object]


def guest_script_digest() -> str:
    """Hash of the guest-side sources (init script, workload program and this builder)."""
    return file_digest(INIT_SCRIPT, KDLOAD_SOURCE, Path(__file__))


def build_guest_initramfs(
    kernel: Kernel, crash_module: Path | None = None, harness_version: str = ""
) -> GuestInitramfs:
    """Build (or reuse from the cache) the guest initramfs for ``kernel``."""
    tools = guest_tools()
    modules = kernel_module_files(kernel)
    key = content_key(
        {
            "harness": harness_version,
            "kernel": [kernel.package.name, kernel.package.version],
            "tools": [[r.name, r.version] for r in tools.packages],
            "guest": guest_script_digest(),
            "module": file_digest(crash_module) if crash_module else None,
        }
    )

    def build(tmp: Path) -> None:
        kdload = build_kdload()
        libs: dict[str, Path] = {}
        binaries = [tools.kexec, tools.vmcore_dmesg, *tools.makedumpfile.values()]
        for binary in binaries:
            for lib in shared_libraries(binary):
                libs[str(lib)] = lib

        def fill_core(w: CpioWriter) -> None:
            for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mnt", "dump", "root"):
                w.add_dir(d)
            w.add_chardev("dev/console", 5, 1)
            w.add_chardev("dev/null", 1, 3, 0o666)
            w.add_chardev("dev/ttyS0", 4, 64)
            w.add_path("init", INIT_SCRIPT, 0o755)
            w.add_path("bin/busybox", tools.busybox, 0o755)
            w.add_symlink("bin/sh", "busybox")
            w.add_path("bin/kdload", kdload, 0o755)
            w.add_path("sbin/kexec", tools.kexec, 0o755)
            w.add_path("sbin/vmcore-dmesg", tools.vmcore_dmesg, 0o755)
            for version, binary in tools.makedumpfile.items():
                w.add_path(f"sbin/makedumpfile-{version}", binary, 0o755)
            for name, lib in sorted(libs.items()):
                # ldd names the loader /lib64/ld-linux-x86-64.so.2 and libraries by soname
                w.add_path(name.lstrip("/"), lib, 0o755)
            order = []
            for mod in modules:
                base = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", mod.name)
                w.add_file(f"lib/modules/kdumper/{base}.ko", module_bytes(mod))
                order.append(base)
            w.add_file("lib/modules/kdumper/order", ("\n".join(order) + "\n").encode())
            if crash_module is not None:
                w.add_path("lib/modules/kdumper/extra/kdumper_crash.ko", crash_module, 0o644)

        core = gzip_cpio(fill_core)
        (tmp / "core.cpio.gz").write_bytes(core)

        def fill_boot(w: CpioWriter) -> None:
            w.add_path("boot/vmlinuz", kernel.vmlinuz, 0o644)
            w.add_file("boot/initrd.img", core)

        # The kernel accepts concatenated compressed archives (not uncompressed after gzip).
        boot = gzip_cpio(fill_boot, level=1)
        (tmp / "initrd.img").write_bytes(core + boot)
        manifest = {
            "kernel": kernel.release,
            "guest": guest_script_digest(),
            "packages": {
                r.name + ("@" + r.suite if r.name == "makedumpfile" else ""): r.version
                for r in tools.packages
            },
            "modules": [m.name for m in modules],
            "crash_module": str(crash_module) if crash_module else None,
            "libraries": sorted(libs),
            "core_bytes": len(core),
            "initrd_bytes": len(core) + len(boot),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    out = ensure_dir(cache_dir("initramfs") / f"{kernel.release}-{key}", build)
    manifest = json.loads((out / "manifest.json").read_text())
    return GuestInitramfs(out / "initrd.img", out / "core.cpio.gz", key, manifest)
