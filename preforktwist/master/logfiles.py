"""
Reopening the master's log file on SIGUSR1, for logrotate.

twistd's own SIGUSR1 handler I{rotates} its log file (renames it and
starts a new one), which does nothing useful after logrotate has already
moved the file away: twistd goes on writing to the moved file.  Reopening
is what logrotate's C{postrotate kill -USR1} expects.  Workers need
nothing: everything they log goes through the master.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import FileLogObserver, globalLogPublisher

from preforktwist.common.private import logFileObservers


def reopenLogFiles(publisher: Any = globalLogPublisher) -> list[str]:
    """
    Reopen every log file that a L{FileLogObserver} of C{publisher} writes
    to and that can be reopened (L{twisted.python.logfile.LogFile}).

    @return: the paths reopened.
    """
    reopened = []
    for observer, outFile in logFileObservers(publisher):
        reopen = getattr(outFile, "reopen", None)
        if isinstance(observer, FileLogObserver) and reopen is not None:
            reopen()
            reopened.append(str(getattr(outFile, "path", outFile)))
    return reopened
