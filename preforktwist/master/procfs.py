"""
What the master reads of its workers in C{/proc}: memory, CPU time, and
whether a process still runs.

The status page, the memory limit, the autoscaler and the fork server's
orphan watch all read these; a pid that is gone gives C{None} (or
C{False}), never an exception.
"""

from __future__ import annotations

import os


def residentBytes(pid: int | None) -> int | None:
    """
    A process's resident set size, from C{/proc}; C{None} if unknown.
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


def statFields(pid: int) -> list[bytes] | None:
    """
    The fields of C{/proc/PID/stat} that follow the command name, from the
    state on (field 3 in proc(5), at index 0 here); C{None} if unknown.
    The name is in parentheses and may hold spaces and parentheses itself,
    so the fields begin after the last C{)}.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpuSeconds(pid: int | None) -> float | None:
    """
    CPU time a process has used (user and system), from C{/proc}.
    """
    fields = statFields(pid) if pid is not None else None
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def isRunning(pid: int) -> bool:
    """
    Whether a process exists and is neither a zombie nor dead: one that is
    not our child cannot be waited for, so this is how its end is seen.
    """
    fields = statFields(pid)
    return fields is not None and fields[:1] not in ([], [b"Z"], [b"X"])


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
