"""
What the master reads of its workers in C{/proc}: memory and CPU time.

The status page, the memory limit and the autoscaler all read these; a
pid that is gone gives L{None}, never an exception.
"""

from __future__ import annotations

import os


def residentBytes(pid: int | None) -> int | None:
    """
    A process's resident set size, from C{/proc}; L{None} if unknown.
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpuSeconds(pid: int | None) -> float | None:
    """
    CPU time a process has used (user and system), from C{/proc}.
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
