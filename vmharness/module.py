"""Build the ``kdumper_crash`` test module against a Debian kernel's header packages.

The ``linux-headers-<release>``, ``linux-headers-<abi>-common`` and ``linux-kbuild-*`` packages
are unpacked (not installed) into one tree in the cache; the arch Makefile's absolute
``include /usr/src/...`` is pointed at that tree. Then ``make -C <headers> M=<dir> CC=gcc``.

Building trixie's kernels (6.12) on bookworm needs two fixes (see reference/vm.md):
``-fmin-function-alignment`` is gcc-14-only, so ``CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT`` is
unset on the make command line (the Makefile falls back to ``-falign-functions``); module BTF
(``pahole``) is turned off the same way; and
trixie's ``objtool``/``modpost``/``resolve_btfids`` need glibc >= 2.38, so each binary that
``ldd`` reports as not loadable is wrapped in a script running it through trixie's dynamic
loader unpacked from its ``libc6`` package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from . import debian
from .cache import cache_dir, content_key, ensure_dir, file_digest
from .errors import HarnessError
from .kernels import Kernel, header_packages

CRASHMOD_DIR = Path(__file__).resolve().parent / "guest" / "crashmod"
MODULE_SOURCES: tuple[Path, ...] = (CRASHMOD_DIR / "kdumper_crash.c", CRASHMOD_DIR / "Kbuild")

MAKE_TIMEOUT = 600


def _host_glibc_too_old(binary: Path) -> bool:
    proc = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, timeout=60, check=False
    )
    return "GLIBC_" in proc.stdout + proc.stderr and "not found" in proc.stdout + proc.stderr


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _wrap_new_glibc_binaries(tree: Path) -> list[str]:
    """Wrap kbuild binaries that need a newer glibc than the host's; returns their names."""
    candidates = [
        p
        for p in (tree / "usr/lib").rglob("*")
        if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o111 and _is_elf(p)
    ]
    needy = [p for p in candidates if _host_glibc_too_old(p)]
    if not needy:
        return []
    libc = debian.unpack(debian.resolve("libc6", "trixie"))
    loader = libc / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    if not loader.exists():
        loader = libc / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    libdirs = ":".join(
        str(d)
        for d in (
            libc / "usr/lib/x86_64-linux-gnu",
            libc / "lib/x86_64-linux-gnu",
            Path("/lib/x86_64-linux-gnu"),
            Path("/usr/lib/x86_64-linux-gnu"),
        )
    )
    for binary in needy:
        real = binary.with_name(binary.name + ".glibc-wrapped")
        binary.rename(real)  # a new name for the hard link; the wrapper is a new file
        binary.write_text(
            "#!/bin/sh\n"
            "# vmharness: run a trixie binary through trixie's dynamic loader (needs glibc 2.38+)\n"
            f'exec "{loader}" --library-path "{libdirs}" "$(dirname "$0")/{real.name}" "$@"\n'
        )
        binary.chmod(0o755)
    return [p.name for p in needy]


def merged_headers_tree(kernel: Kernel) -> Path:
    """One directory holding the kernel's header and kbuild packages, ready for ``make -C``."""
    refs = header_packages(kernel)
    key = content_key([[r.name, r.version] for r in refs])

    def build(tmp: Path) -> None:
        for ref in refs:
            src = debian.unpack(ref)
            # hard links: the unpacked packages are not modified (files that change are
            # unlinked first), so the merged tree costs no space
            subprocess.run(
                ["cp", "-al", f"{src}/.", str(tmp)], check=True, timeout=300, capture_output=True
            )
        _wrap_new_glibc_binaries(tmp)

    final = cache_dir("headers") / f"{kernel.release}-{key}"
    tree = ensure_dir(final, build)
    headers = tree / "usr/src" / f"linux-headers-{kernel.release}"
    makefile = headers / "Makefile"
    # "include /usr/src/linux-headers-<abi>-common/Makefile" -> the copy in this tree
    text = makefile.read_text()
    fixed = re.sub(r"include \S*?/usr/src/", f"include {tree}/usr/src/", text)
    if fixed != text:
        makefile.unlink()  # a hard link into the unpacked package
        makefile.write_text(fixed)
    return headers


def build_crash_module(kernel: Kernel) -> Path:
    """Build ``kdumper_crash.ko`` for ``kernel`` (cached by headers and source hash)."""
    headers = merged_headers_tree(kernel)
    key = content_key([str(headers), file_digest(*MODULE_SOURCES)])

    def build(tmp: Path) -> None:
        src = tmp / "src"
        src.mkdir()
        for f in MODULE_SOURCES:
            shutil.copy2(f, src / f.name)
        args = [
            "make",
            "-C",
            str(headers),
            f"M={src}",
            "CC=gcc",
            "HOSTCC=gcc",
            "CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=",
            # no BTF for the module: needs pahole, and a newer one than bookworm's for 6.12
            "CONFIG_DEBUG_INFO_BTF_MODULES=",
            "modules",
        ]
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=MAKE_TIMEOUT, check=False
        )
        (tmp / "build.log").write_text(proc.stdout + proc.stderr)
        ko = src / "kdumper_crash.ko"
        if proc.returncode != 0 or not ko.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
            raise HarnessError(f"building kdumper_crash.ko for {kernel.release} failed:\n{tail}")
        shutil.copy2(ko, tmp / "kdumper_crash.ko")
        shutil.rmtree(src)

    out = ensure_dir(cache_dir("modules") / f"{kernel.release}-{key}", build)
    return out / "kdumper_crash.ko"
