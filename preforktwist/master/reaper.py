"""
Reaping orphans when the master is PID 1, as it often is in a container.

Every orphan in a PID namespace is re-parented to its PID 1: the workers of
a fork server that was killed, a process the user's own code started and
forgot.  An init that never waits for them fills the process table with
zombies.  Twisted reaps only the processes it spawned, each by its own pid,
so this service reaps the others: it looks at the next exited child without
reaping it (C{waitid} with C{WNOWAIT}), lets Twisted reap it if it is one of
Twisted's (so that its C{ProcessProtocol} still learns how it ended), and
reaps it itself otherwise.  A blanket C{waitpid(-1)} would steal the exit
status of our own workers.
"""

from __future__ import annotations

import os

from twisted.application.internet import TimerService
from twisted.internet import process
from twisted.logger import Logger

#: How often to look for orphans: a zombie costs only a process-table slot,
#: so a second is prompt enough and costs one system call when there is none.
REAP_INTERVAL = 1.0

#: The most children reaped in one look, so that a flood of exiting
#: orphans cannot hold the reactor.
MOST_PER_LOOK = 256


def runningAsInit() -> bool:
    """
    Whether this process is PID 1 of its namespace.
    """
    return os.getpid() == 1


class OrphanReaper(TimerService):
    """
    A timer that reaps the children Twisted does not know.  The service
    runs it only when the master is PID 1 (L{runningAsInit}): anywhere
    else orphans go to a real init.

    @ivar reaped: how many orphans were reaped, for the tests and the log.
    """

    log = Logger()

    def __init__(self, interval: float = REAP_INTERVAL) -> None:
        TimerService.__init__(self, interval, self.reapOrphans)
        self.reaped = 0

    def startService(self) -> None:
        self.log.info(
            "running as PID 1: reaping orphaned processes every {interval:g}s",
            interval=self.step,
        )
        TimerService.startService(self)

    def reapOrphans(self) -> int:
        """
        Reap every exited child that Twisted does not track.

        @return: how many were reaped by this call.
        """
        reaped = 0
        for _ in range(MOST_PER_LOOK):
            try:
                exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if exited is None or exited.si_pid == 0:
                break
            pid = exited.si_pid
            if pid in process.reapProcessHandlers:
                # One of Twisted's: its own reaping tells its protocol.
                process.reapAllProcesses()
                if pid in process.reapProcessHandlers:
                    break
                continue
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            reaped += 1
            self.log.debug(
                "reaped orphan pid {pid} ({how})",
                pid=pid,
                how=_describe(exited.si_code, exited.si_status),
            )
        self.reaped += reaped
        return reaped


def _describe(code: int, status: int) -> str:
    if code == os.CLD_EXITED:
        return f"exited with status {status}"
    return f"killed by signal {status}"
