"""pytest fixtures for real vmcores; import ``vmcore`` and ``vmcore_factory`` in a conftest.py
(or list ``vmharness.pytest_plugin`` in the root conftest's ``pytest_plugins``).

``vmcore_factory(kernel="6.1", scenario="minimal", trigger="sysrq", mem="1G", dbg=False)``
returns :class:`vmharness.VmcoreArtifacts` (built once per machine, then cached on disk, and
memoised per session). ``vmcore`` takes the same keywords through indirect parametrization::

    @pytest.mark.vm
    @pytest.mark.parametrize("vmcore", [{"kernel": "6.12", "trigger": "null"}], indirect=True)
    def test_x(vmcore): ...

When QEMU or the other host tools are missing the VM tests are skipped with a hint, except under
CI (``CI`` set in the environment), where that is a failure: CI must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from .vmcore import VmcoreArtifacts, get_vmcore

#: host programs the harness calls
REQUIRED_PROGRAMS: tuple[str, ...] = (
    "qemu-system-x86_64",
    "apt-get",
    "dpkg-deb",
    "mkfs.ext4",
    "debugfs",
    "gcc",
    "make",
    "ldd",
)

VmcoreFactory = Callable[..., VmcoreArtifacts]


def missing_programs() -> list[str]:
    """Host programs the harness needs that are not on ``PATH``."""
    return [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]


def require_vm_host() -> None:
    """Skip (or fail under CI) when the host cannot run the harness."""
    missing = missing_programs()
    if missing:
        msg = f"VM harness needs {', '.join(missing)}: run scripts/vm-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def vmcore_factory() -> VmcoreFactory:
    """A callable building (or fetching from the cache) one vmcore per parameter set."""
    memo: dict[tuple[tuple[str, Any], ...], VmcoreArtifacts] = {}

    def factory(**params: Any) -> VmcoreArtifacts:
        require_vm_host()
        key = tuple(sorted(params.items()))
        if key not in memo:
            memo[key] = get_vmcore(**params)
        return memo[key]

    return factory


@pytest.fixture
def vmcore(request: pytest.FixtureRequest, vmcore_factory: VmcoreFactory) -> VmcoreArtifacts:
    """A vmcore for the parameters given by indirect parametrization (defaults otherwise)."""
    params: dict[str, Any] = dict(getattr(request, "param", {}) or {})
    return vmcore_factory(**params)
