"""
Per-worker limits: retire a worker that grew too big (C{--max-worker-memory})
or too old (C{--max-worker-age}), replacement first.

A slow leak in user code should cost a graceful replacement, never the
machine: the master reads each worker's resident memory from C{/proc} once
a second, and a worker over the limit gets its replacement started; it
retires as soon as the replacement accepts, finishing its connections
(uWSGI's reload-on-rss, without killing anything).  No worker younger than
C{--min-worker-lifetime} is retired for either reason, so a limit set too
low makes slow turnover, not a spawn loop.  Replacements use the pool's
surplus (C{--reload-batch}), so only that many happen at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import RestartCause
from preforktwist.master.periodic import PeriodicService
from preforktwist.master.pool import Pool, PoolWorker, WorkerState
from preforktwist.master.procfs import residentBytes

MIB = 1024 * 1024


class WorkerLimits(PeriodicService):
    """
    Checks every accepting worker against the memory and age limits, every
    C{interval} seconds while it runs as a service.  Without a limit
    (L{active} false) there is nothing to check: the master does not start
    it then.
    """

    log = NamedLogger("preforktwist.limits.WorkerLimits")

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        maxMemory: int = 0,
        maxAge: float = 0.0,
        ageJitter: float = 0.0,
        minLifetime: float = 30.0,
        interval: float = 1.0,
        rss: Callable[[PoolWorker], int | None] = lambda w: residentBytes(
            getattr(w, "pid", None)
        ),
    ) -> None:
        """
        @param maxMemory: resident bytes a worker may use; 0 for no limit.
        @param maxAge: seconds a worker may serve; 0 for no limit.
        @param ageJitter: each worker's age limit is C{maxAge} plus a random
            0 to C{ageJitter} seconds, so workers started together do not
            retire together.
        @param minLifetime: seconds before which no worker is retired for
            memory or age.
        """
        super().__init__(interval, self.check, clock)
        self.pool = pool
        self.maxMemory = maxMemory
        self.maxAge = maxAge
        self.ageJitter = ageJitter
        self.minLifetime = minLifetime
        self._rss = rss
        self._ageLimits: dict[int, float] = {}

    @property
    def active(self) -> bool:
        """Whether there is a limit to check."""
        return bool(self.maxMemory or self.maxAge)

    def ageLimit(self, worker: PoolWorker) -> float:
        if worker.number not in self._ageLimits:
            jitter = random.uniform(0, self.ageJitter) if self.ageJitter else 0.0
            self._ageLimits[worker.number] = self.maxAge + jitter
        return self._ageLimits[worker.number]

    def check(self) -> None:
        now = self.clock.seconds()
        for number in list(self._ageLimits):
            if number not in self.pool.workers:
                del self._ageLimits[number]
        for worker in self.pool.inState(WorkerState.ACCEPTING):
            age = now - self.pool.record(worker).startedAt
            if age < self.minLifetime:
                continue
            if self.maxMemory:
                rss = self._rss(worker)
                if rss is not None and rss > self.maxMemory:
                    if self.pool.replaceAhead(worker, RestartCause.MEMORY):
                        self.log.info(
                            "{worker} uses {rss:.1f} MiB, over --max-worker-memory "
                            "{limit:.1f} MiB: it retires once its replacement accepts",
                            worker=worker.describe(),
                            rss=rss / MIB,
                            limit=self.maxMemory / MIB,
                        )
                    continue
            if self.maxAge and age > self.ageLimit(worker):
                if self.pool.replaceAhead(worker, RestartCause.AGE):
                    self.log.info(
                        "{worker} is {age:.0f}s old, over its age limit of "
                        "{limit:.0f}s: it retires once its replacement accepts",
                        worker=worker.describe(),
                        age=age,
                        limit=self.ageLimit(worker),
                    )
