"""
The pool and how its workers come to be, as one service: the starter must
be up before the pool asks it for a worker, and must be closed before the
pool stops, so that a worker still waiting for the fork server fails as
"the server is stopping" instead of being asked to stop a process that
does not exist yet.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from preforktwist.master.pool import Pool
from preforktwist.master.starters import IWorkerStarter


class WorkersService(Service):
    """
    Starts the starter, then the pool; stops the starter, then the pool,
    whose L{Deferred} fires once every worker has exited.
    """

    def __init__(self, pool: Pool, starter: IWorkerStarter) -> None:
        self.pool = pool
        self.starter = starter

    def startService(self) -> None:
        Service.startService(self)
        self.starter.start()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self.starter.stop()
        return self.pool.stop()
