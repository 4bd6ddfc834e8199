"""What the first kernel hands to the capture kernel, and the capture to the next boot.

Shared by both sides (``host/`` arms the machine and reads the result at the next boot,
``collect/`` runs in the capture kernel), so it sits below both: the kernel command line as the
kernel splits it, the ``kdumper test`` id passed on the capture kernel's command line, and the
file the capture writes it back into.
"""

from __future__ import annotations

TEST_ID_PARAM = "kdumper.test_id"  # the capture kernel finds the `kdumper test` id here
TEST_ID_FILE = "test-id"  # written by the capture into the dump directory


def split_cmdline(cmdline: str) -> list[str]:
    """Split a kernel command line into parameters, keeping double-quoted spaces (``next_arg``)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    started = False
    for ch in cmdline:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
            started = True
        elif ch.isspace() and not quoted:
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        out.append("".join(cur))
    return out
