"""
Process titles, so that C{ps} and C{top} tell the master, the fork server
and each worker apart, by role, number and listener.

A core dependency, C{setproctitle}, sets them: without it a worker forked
by the fork server would show the fork server's own command line.
"""

from __future__ import annotations

from collections.abc import Sequence

from setproctitle import setproctitle


def setTitle(title: str) -> None:
    setproctitle(title)


def workerTitle(
    number: int, listen: Sequence[str], accepted: int, allowance: int, standby: bool
) -> str:
    """
    A worker's title: C{preforktwist worker 3 tcp:8080 (120/1000 accepted)},
    its count against its allowance (no allowance: the count alone).
    """
    if standby:
        state = "standby"
    elif allowance:
        state = f"{accepted}/{allowance} accepted"
    else:
        state = f"{accepted} accepted"
    return f"preforktwist worker {number} {' '.join(listen)} ({state})"
