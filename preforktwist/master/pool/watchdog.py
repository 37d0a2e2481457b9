"""
What the pool kills, and when.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import RestartCause
from preforktwist.master.pool.backoff import Backoff
from preforktwist.master.pool.config import PoolConfig
from preforktwist.master.pool.roster import Deadline, PoolWorker, Roster, WorkerState


class Watchdog:
    """
    Kills a worker that missed its deadline (not ready in time, not done
    within the grace period, not gone after SIGTERM once stuck), and every
    worker when told to stop now.  A worker whose heartbeat stopped (its
    reactor no longer turns) is taken for stuck: its stack is dumped, it is
    sent SIGTERM, then SIGKILL, and it is replaced.

    Each worker has at most one deadline; a new one replaces the one
    before.  A deadline that passes is recorded, and acted upon in the
    pool's step.
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(
        self,
        roster: Roster,
        config: PoolConfig,
        clock: IReactorTime,
        backoff: Backoff,
        wake: Callable[[], None],
    ) -> None:
        """
        @param backoff: where a boot that took too long is recorded.
        @param wake: called when a deadline passes.
        """
        self.roster = roster
        self.config = config
        self.clock = clock
        self.backoff = backoff
        self._wake = wake
        self._timers: dict[int, IDelayedCall] = {}
        self._killAll = False

    def set(self, worker: PoolWorker, deadline: Deadline) -> None:
        delays = {
            Deadline.BOOT: self.config.bootTimeout,
            Deadline.GRACE: self.config.grace,
            Deadline.STUCK: self.config.stuckKillDelay,
        }
        self.cancel(worker)
        self._timers[worker.number] = self.clock.callLater(
            delays[deadline], self._passed, worker, deadline
        )

    def cancel(self, worker: PoolWorker) -> None:
        timer = self._timers.pop(worker.number, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _passed(self, worker: PoolWorker, deadline: Deadline) -> None:
        self._timers.pop(worker.number, None)
        self.roster.record(worker).overdue = deadline
        self._wake()

    def killAll(self) -> None:
        """Every worker is to be killed, at the next step."""
        self._killAll = True

    def step(self, watchHeartbeats: bool) -> None:
        """
        Kill what is to be killed; with C{watchHeartbeats}, take silent
        workers for stuck.
        """
        if self._killAll:
            self._killAll = False
            for worker in list(self.roster.workers.values()):
                worker.kill()
        for worker in list(self.roster.workers.values()):
            record = self.roster.record(worker)
            overdue, record.overdue = record.overdue, None
            if overdue is Deadline.BOOT:
                self.backoff.lastFailure = (
                    f"{worker.describe()} did not become ready within "
                    f"{self.config.bootTimeout:g}s"
                )
                self.log.error("{reason}; killing it", reason=self.backoff.lastFailure)
            elif overdue is Deadline.GRACE:
                self.log.warn(
                    "{worker} still has connections open after the grace "
                    "period of {grace:g}s; killing it",
                    worker=worker.describe(),
                    grace=self.config.grace,
                )
            if overdue is not None:
                worker.kill()
        if watchHeartbeats and self.config.heartbeatTimeout:
            self._findStuck()

    def _findStuck(self) -> None:
        now = self.clock.seconds()
        timeout, delay = self.config.heartbeatTimeout, self.config.stuckKillDelay
        watched = (WorkerState.STANDBY, WorkerState.ACCEPTING, WorkerState.RETIRING)
        for worker in self.roster.inState(*watched):
            record = self.roster.record(worker)
            silent = now - record.lastSeen
            if record.stuck or silent < timeout:
                continue
            record.stuck = True
            self.roster.count(RestartCause.HEARTBEAT_TIMEOUT)
            self.log.error(
                "{worker} is stuck: no heartbeat for {silent:.1f}s (timeout "
                "{timeout:g}s); its stack follows, then SIGTERM, then SIGKILL "
                "after {delay:g}s",
                worker=worker.describe(),
                silent=silent,
                timeout=timeout,
                delay=delay,
            )
            worker.dumpStack()
            worker.terminate()
            if worker.state is WorkerState.ACCEPTING:
                self.roster.setState(worker, WorkerState.RETIRING)
            self.set(worker, Deadline.STUCK)
