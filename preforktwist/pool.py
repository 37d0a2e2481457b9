"""
The population policy: how many workers, when to start one, when to give
up, and how to stop them all.

This is the supervisor's whole story, kept free of processes and sockets:
it is given a clock and a function that starts a worker, and is told what
happens to workers.  Its rules:

 - Never more than C{size} workers that are booting or accepting.  A worker
   that asked for its replacement is I{retiring}: it accepts nothing more
   and does not count.  A fork storm is impossible by construction, whatever
   the user's code does.
 - Replacement first: a worker that used its allowance is replaced at once,
   while it finishes its open connections.
 - A worker that dies before it became ready is a boot failure.  Boot
   failures are retried one worker at a time, with exponential backoff.
   If no worker has ever become ready after C{maxBootFailures} of them, the
   pool gives up: the user's code cannot serve, and saying so beats a
   server that starts and never answers.
 - A worker that dies soon after it became ready counts as a failure too,
   for the backoff, so that code which crashes on its first connection does
   not make a respawn loop.
 - Stop: every worker drains and exits within the grace period, or is
   killed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class WorkerState(enum.Enum):
    BOOTING = "booting"
    ACCEPTING = "accepting"
    RETIRING = "retiring"
    STOPPING = "stopping"


class PoolWorker(Protocol):
    """
    What the pool needs of a worker: L{preforktwist.process.WorkerProcess}
    in the master, a fake in the tests.
    """

    number: int
    state: WorkerState

    def describe(self) -> str:
        """A short name for the log, e.g. C{worker 3 (pid 1234)}."""

    def retire(self) -> None:
        """Ask the worker to stop accepting, finish and exit."""

    def stop(self) -> None:
        """Ask the worker to accept what is queued, finish and exit."""

    def kill(self) -> None:
        """End the worker now (SIGKILL)."""


class Pool:
    """
    Keeps C{size} workers accepting.

    @ivar workers: the live workers by number.
    @ivar spawned: how many workers were ever started.
    """

    log = Logger()

    def __init__(
        self,
        spawn: Callable[[int], PoolWorker],
        size: int,
        clock: IReactorTime,
        grace: float = 30.0,
        bootTimeout: float = 30.0,
        giveUp: Callable[[str], None] = lambda reason: None,
        maxBootFailures: int = 3,
        backoff: float = 0.5,
        maxBackoff: float = 30.0,
        minUptime: float = 1.0,
    ) -> None:
        """
        @param spawn: starts the worker with the given number and returns it.
        @param grace: seconds a retiring or stopping worker may take.
        @param bootTimeout: seconds a worker may take to become ready.
        @param giveUp: called with the last boot failure's reason when no
            worker ever became ready after C{maxBootFailures} failures.
        @param backoff: the first retry delay after a failure; it doubles
            with each consecutive failure, up to C{maxBackoff}.
        @param minUptime: a worker that dies sooner than this after becoming
            ready counts as a failure for the backoff.
        """
        self._spawn = spawn
        self.size = size
        self.clock = clock
        self.grace = grace
        self.bootTimeout = bootTimeout
        self._giveUp = giveUp
        self.maxBootFailures = maxBootFailures
        self.backoff = backoff
        self.maxBackoff = maxBackoff
        self.minUptime = minUptime

        self.workers: dict[int, PoolWorker] = {}
        self.spawned = 0
        self.everReady = False
        self.failures = 0
        self.lastFailure = ""
        self.running = False
        self.gaveUp = False
        self._readyAt: dict[int, float] = {}
        self._timers: dict[int, IDelayedCall] = {}
        self._retry: IDelayedCall | None = None
        self._stopped: list[Deferred[None]] = []

    # Counting.

    def inState(self, *states: WorkerState) -> list[PoolWorker]:
        return [w for w in self.workers.values() if w.state in states]

    def summary(self) -> str:
        counts = {s: len(self.inState(s)) for s in WorkerState}
        return ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "none"

    # Starting.

    def start(self) -> None:
        self.running = True
        self._fill()

    def _fill(self) -> None:
        """
        Start workers until C{size} are booting or accepting.  After a
        failure, only one boots at a time, and only once the backoff delay
        has passed.
        """
        if not self.running or self.gaveUp or self._retry is not None:
            return
        missing = self.size - len(
            self.inState(WorkerState.BOOTING, WorkerState.ACCEPTING)
        )
        if self.failures:
            missing = min(missing, 1 - len(self.inState(WorkerState.BOOTING)))
        for _ in range(missing):
            self.spawned += 1
            worker = self._spawn(self.spawned)
            self.workers[worker.number] = worker
            self._setTimer(worker, self.bootTimeout, self._bootTimedOut)
            self.log.info("started {worker}", worker=worker.describe())

    def _setTimer(
        self, worker: PoolWorker, delay: float, f: Callable[[PoolWorker], None]
    ) -> None:
        self._cancelTimer(worker)
        self._timers[worker.number] = self.clock.callLater(delay, f, worker)

    def _cancelTimer(self, worker: PoolWorker) -> None:
        timer = self._timers.pop(worker.number, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _bootTimedOut(self, worker: PoolWorker) -> None:
        self._timers.pop(worker.number, None)
        self.lastFailure = (
            f"{worker.describe()} did not become ready within {self.bootTimeout:g}s"
        )
        self.log.error("{reason}; killing it", reason=self.lastFailure)
        worker.kill()

    def _graceOver(self, worker: PoolWorker) -> None:
        self._timers.pop(worker.number, None)
        self.log.warn(
            "{worker} still has connections open after the grace period of "
            "{grace:g}s; killing it",
            worker=worker.describe(),
            grace=self.grace,
        )
        worker.kill()

    # What workers tell us.

    def workerReady(self, worker: PoolWorker) -> None:
        self._cancelTimer(worker)
        if not self.running:
            self._stopWorker(worker)
            return
        worker.state = WorkerState.ACCEPTING
        self.everReady = True
        self.failures = 0
        self._readyAt[worker.number] = self.clock.seconds()
        self.log.info(
            "{worker} is accepting ({summary})",
            worker=worker.describe(),
            summary=self.summary(),
        )

    def workerBootFailed(self, worker: PoolWorker, reason: str) -> None:
        self.lastFailure = f"{worker.describe()}: {reason}"

    def workerWantsReplacement(self, worker: PoolWorker) -> None:
        """
        The worker accepts no more (its allowance is used, or it was told
        to stop by a signal): it retires, and a replacement starts now.
        """
        if worker.state is not WorkerState.ACCEPTING:
            return
        self._retire(worker)
        self._fill()

    def retireWorker(self, worker: PoolWorker) -> None:
        """
        Tell an accepting worker to retire, for instance to shrink the pool.
        """
        if worker.state is WorkerState.ACCEPTING:
            worker.retire()
            self._retire(worker)

    def _retire(self, worker: PoolWorker) -> None:
        worker.state = WorkerState.RETIRING
        self._setTimer(worker, self.grace, self._graceOver)
        self.log.info(
            "{worker} is retiring ({summary})",
            worker=worker.describe(),
            summary=self.summary(),
        )

    def workerExited(self, worker: PoolWorker, how: str) -> None:
        """
        The worker's process is gone; C{how} says why, for the log.
        """
        self._cancelTimer(worker)
        self.workers.pop(worker.number, None)
        readyAt = self._readyAt.pop(worker.number, None)
        state = worker.state
        if state in (WorkerState.RETIRING, WorkerState.STOPPING):
            self.log.info(
                "{worker} {how} ({summary})",
                worker=worker.describe(),
                how=how,
                summary=self.summary(),
            )
        elif state is WorkerState.BOOTING:
            if not self.lastFailure.startswith(worker.describe()):
                self.lastFailure = f"{worker.describe()} {how} before it was ready"
            self._failed(f"boot failure: {self.lastFailure}")
        else:
            uptime = self.clock.seconds() - (readyAt or 0.0)
            self.log.error(
                "{worker} {how} after {uptime:.1f}s of serving; replacing it",
                worker=worker.describe(),
                how=how,
                uptime=uptime,
            )
            if uptime < self.minUptime:
                self._failed(
                    f"{worker.describe()} died {uptime:.1f}s after it was ready"
                )
        self._checkStopped()
        self._fill()

    def _failed(self, reason: str) -> None:
        self.failures += 1
        if not self.running:
            return
        if not self.everReady and self.failures >= self.maxBootFailures:
            self.gaveUp = True
            self.log.critical(
                "giving up after {n} boot failures, no worker ever became "
                "ready; last: {reason}",
                n=self.failures,
                reason=self.lastFailure,
            )
            self._giveUp(self.lastFailure)
            return
        delay = min(self.backoff * 2 ** (self.failures - 1), self.maxBackoff)
        self.log.error(
            "{reason}; next worker in {delay:g}s (failure {n} in a row)",
            reason=reason,
            delay=delay,
            n=self.failures,
        )
        if self._retry is None:
            self._retry = self.clock.callLater(delay, self._retryNow)

    def _retryNow(self) -> None:
        self._retry = None
        self._fill()

    # Stopping.

    def stop(self) -> Deferred[None]:
        """
        Ask every worker to finish and exit; those still running after the
        grace period are killed.

        @return: fires when every worker is gone.
        """
        self.running = False
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for worker in list(self.workers.values()):
            self._stopWorker(worker)
        if not self.workers:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        return d

    def _stopWorker(self, worker: PoolWorker) -> None:
        if worker.state is WorkerState.BOOTING:
            # It has accepted nothing; it need not drain.
            worker.state = WorkerState.STOPPING
            worker.kill()
            return
        if worker.state is WorkerState.ACCEPTING:
            worker.stop()
            worker.state = WorkerState.STOPPING
            self._setTimer(worker, self.grace, self._graceOver)

    def stopNow(self) -> None:
        """
        Kill every worker without waiting for their connections.
        """
        self.log.warn("stopping now: killing {n} workers", n=len(self.workers))
        self.running = False
        for worker in list(self.workers.values()):
            worker.kill()

    def _checkStopped(self) -> None:
        if self.running or self.workers:
            return
        waiting, self._stopped = self._stopped, []
        for d in waiting:
            d.callback(None)
