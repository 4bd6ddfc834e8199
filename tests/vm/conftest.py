"""Fixtures for the VM tests: ``vmcore_factory`` and ``vmcore`` (see vmharness.pytest_plugin),
and ``rootfs_factory`` (the cached Debian guest of a kernel, vmharness.rootfs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest

from vmharness.pytest_plugin import require_vm_host, vmcore, vmcore_factory
from vmharness.rootfs import RootfsImage, build_rootfs

__all__ = ["RootfsFactory", "rootfs_factory", "vmcore", "vmcore_factory"]

RootfsFactory = Callable[[str], RootfsImage]


@pytest.fixture(scope="session")
def rootfs_factory() -> RootfsFactory:
    """Build (or fetch from the cache) the guest tree of a kernel, once per session."""
    memo: dict[str, RootfsImage] = {}

    def factory(kernel: str) -> RootfsImage:
        require_vm_host()
        missing = [t for t in ("debootstrap", "unshare", "chroot") if shutil.which(t) is None]
        if missing or os.geteuid() != 0:
            msg = f"the Debian guest needs root and {', '.join(missing) or 'nothing else'}"
            msg += ": run scripts/vm-deps.sh"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
        if kernel not in memo:
            memo[kernel] = build_rootfs(kernel)
        return memo[kernel]

    return factory
