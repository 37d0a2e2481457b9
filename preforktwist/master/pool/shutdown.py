"""
How the pool stops: every worker drains and exits within the grace
period, or is killed.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from preforktwist.master.events import PoolEvent, PoolStopping
from preforktwist.master.pool.roster import (
    Deadline,
    PoolWorker,
    Roster,
    WorkerRecord,
    WorkerState,
)
from preforktwist.master.pool.watchdog import Watchdog


class Shutdown:
    """
    Once begun: every ready worker is told to drain (accept what is
    queued, finish and exit) within the grace period; one still booting
    holds the listening sockets until it is ready, then drains, for it may
    be the only one left to serve what is queued.  Two moments are told:
    when no worker will accept again, and when every worker is gone.

    With L{drainQueue} off (another master's workers accept on the same
    sockets: a hot upgrade), a worker retires instead: it stops accepting
    at once, leaving what is queued to them, and finishes its connections.

    @ivar begun: the pool stops.
    @ivar drainQueue: the workers accept what is queued before they stop.
    """

    def __init__(
        self,
        roster: Roster,
        watchdog: Watchdog,
        clock: IReactorTime,
        emit: Callable[[PoolEvent], None],
        wake: Callable[[], None],
    ) -> None:
        """
        @param emit: tells the pool's observers.
        @param wake: called when a worker has closed its listening sockets.
        """
        self.roster = roster
        self.watchdog = watchdog
        self.clock = clock
        self._emit = emit
        self._wake = wake
        self.begun = False
        self.drainQueue = True
        self._announced = False
        self._gone: list[Deferred[None]] = []
        self._drained: list[Deferred[None]] = []

    def begin(self) -> Deferred[None]:
        """
        @return: fires when every worker is gone.
        """
        self.begun = True
        d: Deferred[None] = Deferred()
        self._gone.append(d)
        return d

    def whenDrained(self) -> Deferred[None]:
        """
        @return: fires once the pool stops and no worker will accept again,
            because each has drained the queue and closed its listening
            sockets, or is gone.
        """
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self._tell()
        return d

    def step(self) -> None:
        """
        Tell each worker to drain as soon as it can, and tell what is over.
        """
        if not self._announced:
            self._announced = True
            self._emit(PoolStopping(at=self.clock.seconds()))
        for worker in list(self.roster.workers.values()):
            record = self.roster.record(worker)
            if worker.state is WorkerState.BOOTING:
                self.roster.setState(worker, WorkerState.STOPPING)
            elif worker.state in (WorkerState.ACCEPTING, WorkerState.STANDBY) or (
                worker.state is WorkerState.STOPPING
                and record.readyAt is not None
                and not record.stopAsked
            ):
                self._drain(worker, record)
        self._tell()

    def _drain(self, worker: PoolWorker, record: WorkerRecord) -> None:
        self.roster.setState(worker, WorkerState.STOPPING)
        record.stopAsked = True
        self.watchdog.set(worker, Deadline.GRACE)
        if self.drainQueue:
            worker.stop().addCallback(lambda _: self._released(worker))
        else:
            worker.retire()
            self._released(worker)

    def _released(self, worker: PoolWorker) -> None:
        if self.roster.knows(worker):
            self.roster.record(worker).released = True
        self._wake()

    def _tell(self) -> None:
        if not self.begun:
            return
        holding = [
            w
            for w in self.roster.inState(WorkerState.STOPPING)
            if not self.roster.record(w).released
        ]
        if not holding:
            _fireAll(self._drained)
        if not self.roster.workers:
            _fireAll(self._gone)


def _fireAll(waiting: list[Deferred[None]]) -> None:
    """
    Fire and forget every Deferred in C{waiting}.  The list is emptied
    first, so that a callback that waits anew is kept for next time.
    """
    fired = waiting[:]
    del waiting[:]
    for d in fired:
        d.callback(None)
