"""Parse the ``/proc`` files the guest prints before the crash (meminfo, vmstat, buddyinfo)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

PAGE_KIB = 4


def parse_meminfo(path: Path) -> dict[str, int]:
    """``/proc/meminfo`` as ``{field: kB}`` (``HugePages_*`` counts are plain numbers)."""
    result: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        result[name.strip()] = int(rest.split()[0])
    return result


def parse_vmstat(path: Path) -> dict[str, int]:
    """``/proc/vmstat`` as ``{counter: value}``."""
    result: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2:
            result[fields[0]] = int(fields[1])
    return result


class BuddyZone(NamedTuple):
    """One line of ``/proc/buddyinfo``: free blocks per order of one zone."""

    node: int
    zone: str
    free_blocks: tuple[int, ...]
    """``free_blocks[order]`` blocks of ``2**order`` pages"""

    @property
    def free_pages(self) -> int:
        """Pages free in the buddy allocator (per-CPU lists not included)."""
        return sum(count << order for order, count in enumerate(self.free_blocks))


def parse_buddyinfo(path: Path) -> list[BuddyZone]:
    """``/proc/buddyinfo`` as one :class:`BuddyZone` per line."""
    zones = []
    for line in path.read_text().splitlines():
        fields = line.replace(",", " ").split()
        if len(fields) < 5 or fields[0] != "Node" or fields[2] != "zone":
            continue
        zones.append(BuddyZone(int(fields[1]), fields[3], tuple(int(f) for f in fields[4:])))
    return zones
