"""
How a process the master starts (a worker, the fork server) ties its life
to the master's, without any master code.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: prctl(2)'s option: the signal to receive when the parent dies.
_PR_SET_PDEATHSIG = 1


def dieWithParent(parentPid: int) -> bool:
    """
    Ask Linux to send SIGTERM when the parent dies, a backstop to the
    control channel's EOF.  Elsewhere, the control channel alone tells.

    @param parentPid: the process that should be our parent.
    @return: whether it still is (it may have died before the request was
        made, and then no signal will come).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(
                _PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0
            )
        except (OSError, AttributeError):
            pass
    return os.getppid() == parentPid


def leaveTerminalGroup() -> None:
    """
    Move into a process group of our own.  Ctrl-C in a terminal signals
    the whole foreground group; the master decides how its children stop.
    """
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
