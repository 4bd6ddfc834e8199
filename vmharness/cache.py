"""The harness cache: where downloads, unpacked packages, builds and vmcores live.

Everything is kept outside the repository, under ``~/.cache/kdumper`` or ``$KDUMPER_CACHE``.
Entries are directories created atomically (built in a temporary sibling, then renamed) and
guarded by a lock file, so concurrent test processes never see half-built entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """The cache directory (``$KDUMPER_CACHE`` or ``~/.cache/kdumper``), created if missing."""
    env = os.environ.get("KDUMPER_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "kdumper"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    """A subdirectory of the cache, created if missing."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """Hold an exclusive advisory lock ``<cache>/locks/<name>.lock`` (blocks until free)."""
    path = cache_dir("locks") / f"{name}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def content_key(obj: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-serialisable object."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:length]


def file_digest(*paths: Path) -> str:
    """SHA-256 over the contents of several files, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_dir(final: Path, build: Callable[[Path], None], lock_name: str | None = None) -> Path:
    """Return ``final``, building it first with ``build(tmpdir)`` if it does not exist.

    ``build`` fills a fresh temporary directory next to ``final``; on success the directory is
    renamed to ``final`` (atomic on one filesystem), on failure it is removed.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock_name or f"{final.parent.name}-{final.name}"):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            build(tmp)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def dir_size(path: Path) -> int:
    """Bytes allocated on disk below ``path`` (sparse files count what they use)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total
