"""Fixtures for the VM tests: ``vmcore_factory`` and ``vmcore`` (see vmharness.pytest_plugin)."""

from vmharness.pytest_plugin import vmcore, vmcore_factory

__all__ = ["vmcore", "vmcore_factory"]
