"""
L{Reconciler}: the pool's one step, which decides what to do about what
its events recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import (
    PoolReady,
    RestartCause,
    WorkerAccepting,
    WorkersChanged,
    WorkerStarted,
)
from preforktwist.master.pool.invariants import Invariants
from preforktwist.master.pool.roster import (
    Deadline,
    PoolWorker,
    WorkerRecord,
    WorkerState,
)

if TYPE_CHECKING:
    from preforktwist.master.pool.core import Pool

#: Violations of the invariants kept for L{Pool.broken}, the latest.
_BROKEN_KEPT = 100


class Reconciler:
    """
    Decides, from what the pool's events recorded, what to start, activate,
    retire and kill, in one order (see L{_step}), then checks the pool's
    invariants.  Asked for while it runs (by an event that its own actions
    cause), it runs once more after, never nested.

    @ivar spawned: how many workers were ever started.
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(self, pool: Pool, spawn: Callable[[int, bool], PoolWorker]) -> None:
        """
        @param spawn: starts the worker with the given number, as a standby
            or not, and returns it.
        """
        self.pool = pool
        self._spawn = spawn
        self.spawned = 0
        self._invariants = Invariants()
        self._announcedReady = False
        self._running = False
        self._again = False

    def reconcile(self) -> None:
        self._again = True
        if self._running:
            return
        self._running = True
        try:
            while self._again:
                self._again = False
                self._step()
        finally:
            self._running = False
        pool = self.pool
        for what in self._invariants.check(pool):
            self.log.critical(
                "pool invariant broken: {what} ({summary})",
                what=what,
                summary=pool.summary(),
            )
            pool.broken.append(what)
            del pool.broken[:-_BROKEN_KEPT]

    def _step(self) -> None:
        """
        One pass, in this order: judge the failures recorded (give up, or
        hold starts back; a boot failure stops a reload); kill what missed
        a deadline or is stuck; then either drain every worker (stopping),
        or begin a reload asked for, retire what is to go, mark the
        reload's next workers for replacement, and activate and start what
        is missing; last, tell the observers.
        """
        pool = self.pool
        pool.backoff.judge(pool.running, pool.reloads.abort)
        pool.watchdog.step(watchHeartbeats=pool.running)
        if pool.stopping:
            pool.shutdown.step()
        else:
            pool.reloads.begin()
            self._retire()
            pool.reloads.advance()
            self._fill()
        self._announce()

    def _retire(self) -> None:
        """
        Retire standbys booted from code a reload has since replaced;
        serving workers that accept beyond the size, oldest first (workers
        still booting count once they accept: one may fail); then workers
        replaced early, oldest first, while more than C{size} accept, so
        that each goes only once its replacement accepts.
        """
        pool, roster = self.pool, self.pool.roster
        for standby in roster.inState(WorkerState.STANDBY):
            if roster.record(standby).generation < pool.generation:
                self._retireWorker(standby, RestartCause.RELOAD)
        serving = roster.serving()
        accepting = [w for w in serving if w.state is WorkerState.ACCEPTING]
        for worker in accepting[: max(0, len(accepting) - pool.size)]:
            self._retireWorker(worker, RestartCause.SCALING)
        excess = len(roster.inState(WorkerState.ACCEPTING)) - pool.size
        for worker in roster.replacedEarly()[: max(0, excess)]:
            doom = roster.record(worker).doom
            assert doom is not None
            self._retireWorker(worker, doom)

    def _retireWorker(self, worker: PoolWorker, cause: RestartCause) -> None:
        roster = self.pool.roster
        if worker.state is WorkerState.ACCEPTING:
            roster.count(cause)
        worker.retire()
        roster.record(worker).retiredFor = cause
        self.pool.retiring(worker)
        roster.logRetiring(worker, cause)

    def _fill(self) -> None:
        """
        Until C{size} workers serve, within the surplus: activate a ready
        standby of this generation, or count on one still booting (it is
        sooner than a worker started now), or start a worker.  After a
        failure, only one boots at a time, and only once the backoff delay
        has passed.  Then keep the standbys: those asked for, and one
        booted and held for each worker close to its allowance (within the
        surplus), to take over at its last connection.  Nothing more is
        started once another pass is due: it decides on newer facts.
        """
        pool, roster = self.pool, self.pool.roster
        if not pool.running or pool.gaveUp or pool.backoff.holding:
            return
        surplus = pool.config.surplus
        missing = min(
            pool.size - len(roster.serving()),
            pool.size + surplus - len(roster.busy()),
        )
        if pool.failures:
            missing = min(missing, 1 - len(roster.inState(WorkerState.BOOTING)))
        current = [
            w
            for w in roster.standbys()
            if roster.record(w).generation == pool.generation
        ]
        ready = [w for w in current if w.state is WorkerState.STANDBY]
        for worker in ready[: max(0, missing)]:
            self._activate(worker)
        for _ in range(missing - len(current)):
            if self._again or not self._start(standby=False):
                return
        if not pool.failures:
            nearAllowance = len(roster.doomed(RestartCause.ALLOWANCE))
            wanted = max(pool.config.standby, min(nearAllowance, surplus))
            for _ in range(wanted - len(roster.standbys())):
                if self._again or not self._start(standby=True):
                    return

    def _activate(self, worker: PoolWorker) -> None:
        """
        A standby worker takes a place in the pool: it accepts at once.
        Another pass follows: the worker it replaces may go now.
        """
        roster = self.pool.roster
        record = roster.record(worker)
        record.standby = False
        worker.activate()
        now = self.pool.clock.seconds()
        roster.nowAccepting(worker, now)
        self.pool.emit(
            WorkerAccepting(
                at=now,
                number=worker.number,
                pid=worker.pid,
                generation=record.generation,
            )
        )
        self._again = True

    def _start(self, standby: bool) -> bool:
        pool = self.pool
        self.spawned += 1
        try:
            worker = self._spawn(self.spawned, standby)
        except Exception as e:
            # Out of processes or file descriptors: a failure like a boot
            # failure, judged in the next pass.
            pool.backoff.lastFailure = f"cannot start a worker: {e}"
            pool.roster.count(RestartCause.BOOT_FAILURE)
            pool.backoff.failed(pool.backoff.lastFailure)
            self._again = True
            return False
        now = pool.clock.seconds()
        record = WorkerRecord(pool.generation, now, lastSeen=now, standby=standby)
        pool.roster.add(worker, record)
        pool.watchdog.set(worker, Deadline.BOOT)
        self.log.info(
            "started {worker}{standby} ({summary})",
            worker=worker.describe(),
            standby=" as a standby" if standby else "",
            summary=pool.summary(),
        )
        pool.emit(
            WorkerStarted(
                at=now,
                number=worker.number,
                pid=worker.pid,
                generation=record.generation,
                standby=standby,
            )
        )
        return True

    def _announce(self) -> None:
        """
        Tell the observers: the pool first has all its workers accepting,
        and the workers changed.
        """
        pool = self.pool
        now = pool.clock.seconds()
        accepting = len(pool.roster.inState(WorkerState.ACCEPTING))
        if not self._announcedReady and pool.running and accepting >= pool.size:
            self._announcedReady = True
            pool.emit(PoolReady(at=now, size=pool.size))
        if pool.roster.changed:
            pool.roster.changed = False
            pool.emit(WorkersChanged(at=now, summary=pool.summary()))
