"""Disk images for guests: sparse ext4 images made with ``mkfs.ext4`` and read with ``debugfs``.

No mount (and so no root privileges or loop devices) is needed on the host.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from .errors import HarnessError


def make_ext4_image(
    path: Path,
    size_mib: int,
    journal: bool = True,
    label: str = "",
    source_dir: Path | None = None,
) -> Path:
    """Create a sparse ext4 image of ``size_mib`` MiB (optionally filled from ``source_dir``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    args = ["mkfs.ext4", "-F", "-q", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1"]
    if not journal:
        args += ["-O", "^has_journal"]
    if label:
        args += ["-L", label]
    if source_dir is not None:
        args += ["-d", str(source_dir)]
    args.append(str(path))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"mkfs.ext4 {path} failed: {proc.stderr.strip()}")
    return path


def debugfs(image: Path, *commands: str, timeout: float = 600) -> str:
    """Run ``debugfs`` commands (read-only) on an ext4 image; returns stdout."""
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs", delete=False) as cmd:
        cmd.write("\n".join(commands) + "\n")
    try:
        proc = subprocess.run(
            ["debugfs", "-f", cmd.name, str(image)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.unlink(cmd.name)
    if proc.returncode != 0:
        raise HarnessError(f"debugfs {image} failed: {proc.stderr.strip()}")
    return proc.stdout


def list_files(image: Path, directory: str = "/") -> list[str]:
    """Names of the entries of ``directory`` in the image (without ``.``/``..``)."""
    out = debugfs(image, f"ls -p {directory}")
    names = []
    for line in out.splitlines():
        fields = line.strip().strip("/").split("/")
        if len(fields) >= 5 and fields[4] not in ("", ".", ".."):
            names.append(fields[4])
    return names


def extract_files(image: Path, files: dict[str, Path], sparse: bool = True) -> dict[str, Path]:
    """Copy files out of the image: ``{path in image: destination}``; returns those found.

    With ``sparse``, runs of zero blocks in the copies are turned into holes
    (``fallocate --dig-holes``), which keeps raw vmcores small on disk.
    """
    present = set(list_files(image))
    wanted = {src: dst for src, dst in files.items() if src.lstrip("/") in present}
    commands = []
    for src, dst in wanted.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        commands.append(f'dump -p "{src}" "{dst}"')
    if commands:
        debugfs(image, *commands)
    for dst in wanted.values():
        if not dst.exists():
            raise HarnessError(f"debugfs did not extract {dst.name} from {image}")
        if sparse and dst.stat().st_size > 1024 * 1024:
            subprocess.run(
                ["fallocate", "--dig-holes", str(dst)],
                check=False,
                timeout=600,
                capture_output=True,
            )
    return wanted


def extract_tree(image: Path, directory: str, dest: Path, sparse: bool = True) -> Path:
    """Copy ``directory`` of the image (recursively) into ``dest``; returns the copy.

    ``"/"`` copies the filesystem's top-level entries into ``dest`` itself (without
    ``lost+found``); any other directory lands in ``dest/<its name>``. Files over 1 MiB are made
    sparse with ``fallocate --dig-holes`` when ``sparse``. Raises :class:`HarnessError` when the
    directory is not in the image.
    """
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["debugfs", "-R", f'rdump "{directory}" "{dest}"', str(image)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # debugfs reports a missing path on stderr but still exits 0
    if proc.returncode != 0 or "not found" in proc.stderr or "No such file" in proc.stderr:
        raise HarnessError(f"debugfs rdump {directory} from {image}: {proc.stderr.strip()}")
    copy = dest if directory.strip("/") == "" else dest / Path(directory).name
    if copy == dest:
        lost = dest / "lost+found"
        if lost.is_dir() and not any(lost.iterdir()):
            lost.rmdir()
    if sparse:
        for path in copy.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size > 1024 * 1024:
                subprocess.run(
                    ["fallocate", "--dig-holes", str(path)],
                    check=False,
                    timeout=600,
                    capture_output=True,
                )
    return copy
