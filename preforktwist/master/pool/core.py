"""
L{Pool}: what happens to the workers is recorded as it happens; what to do
about it is decided in one place, L{Pool.reconcile}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import (
    PoolEvent,
    PoolResized,
    ProcessEnd,
    RestartCause,
    WorkerAccepting,
    WorkerExited,
)
from preforktwist.master.pool.backoff import Backoff
from preforktwist.master.pool.config import PoolConfig
from preforktwist.master.pool.reconcile import Reconciler
from preforktwist.master.pool.reloads import Reloads
from preforktwist.master.pool.roster import (
    Deadline,
    PoolWorker,
    Roster,
    WorkerRecord,
    WorkerState,
)
from preforktwist.master.pool.shutdown import Shutdown
from preforktwist.master.pool.watchdog import Watchdog
from preforktwist.protocol.control import ReplaceCause


class Pool:
    """
    Keeps C{size} workers accepting.

    Each event (a worker ready, exited, asking for its replacement, near
    its allowance; a deadline, a reload, a resize, a stop) only records
    what happened, then asks for L{reconcile}, which decides what to start,
    activate, retire and kill.

    @ivar workers: the live workers by number, oldest first.
    @ivar spawned: how many workers were ever started.
    @ivar broken: the pool's invariants found broken, in words (never, if
        the pool is right).
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(
        self,
        spawn: Callable[[int, bool], PoolWorker],
        config: PoolConfig,
        clock: IReactorTime,
        giveUp: Callable[[str], None] = lambda reason: None,
        renew: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param spawn: starts the worker with the given number, as a standby
            or not, and returns it.
        @param giveUp: called with the last boot failure's reason when no
            worker ever became ready after C{config.maxBootFailures}.
        @param renew: called as a reload begins, before any worker of the
            new generation is started: the starter reads the code anew (a
            new fork server), at most once per C{config.renewInterval}.
        """
        self.config = config
        self.size = config.size
        self.clock = clock
        self.roster = roster = Roster()
        self.workers = roster.workers
        self.restarts = roster.restarts
        self.running = False
        #: Connections accepted and served by workers that have exited.
        self.exitedAccepted = 0
        self.exitedServed = 0
        #: Connections closed for silence by workers that are gone.
        self.exitedFirstByteTimeouts = 0
        #: Called with each L{PoolEvent}, in the pool's step (see L{emit}).
        self.observers: list[Callable[[PoolEvent], object]] = []
        self.broken: list[str] = []
        wake = self.reconcile
        self.backoff = Backoff(clock, config, giveUp, wake)
        self.watchdog = Watchdog(roster, config, clock, self.backoff, wake)
        self.reloads = Reloads(roster, config, clock, renew, self.emit, wake)
        self.shutdown = Shutdown(roster, self.watchdog, clock, self.emit, wake)
        self._reconciler = Reconciler(self, spawn)
        self._heartbeats = LoopingCall(wake)
        self._heartbeats.clock = clock

    # What the others read.

    @property
    def spawned(self) -> int:
        """How many workers were ever started."""
        return self._reconciler.spawned

    @property
    def failures(self) -> int:
        """Failures since a worker last became ready."""
        return self.backoff.failures

    @property
    def lastFailure(self) -> str:
        return self.backoff.lastFailure

    @property
    def gaveUp(self) -> bool:
        return self.backoff.gaveUp

    @property
    def stopping(self) -> bool:
        return self.shutdown.begun

    @property
    def reloading(self) -> bool:
        return self.reloads.reloading

    @property
    def generation(self) -> int:
        return self.reloads.generation

    def record(self, worker: PoolWorker) -> WorkerRecord:
        return self.roster.record(worker)

    def inState(self, *states: WorkerState) -> list[PoolWorker]:
        return self.roster.inState(*states)

    def doomed(self, why: RestartCause | None = None) -> list[PoolWorker]:
        return self.roster.doomed(why)

    def summary(self) -> str:
        return self.roster.summary()

    # Events: each records what happened, then asks for a step.

    def start(self) -> None:
        self.running = True
        timeout = self.config.heartbeatTimeout
        if timeout:
            self._heartbeats.start(min(1.0, timeout / 4), now=False)
        self.reconcile()

    def workerReady(self, worker: PoolWorker) -> None:
        if not self.roster.knows(worker):
            return  # it has exited meanwhile
        self.watchdog.cancel(worker)
        record = self.roster.record(worker)
        if worker.state is WorkerState.STOPPING:
            # It booted while the pool began to stop: it may drain now.
            record.readyAt = self.clock.seconds()
        elif worker.state is WorkerState.BOOTING:
            self.backoff.succeeded()
            now = self.clock.seconds()
            if record.standby:
                current = record.generation == self.generation
                self.roster.nowStandby(worker, now, current)
            else:
                self.roster.nowAccepting(worker, now)
                self.emit(
                    WorkerAccepting(
                        at=now,
                        number=worker.number,
                        pid=worker.pid,
                        generation=record.generation,
                    )
                )
        self.reconcile()

    def workerAlive(self, worker: PoolWorker) -> None:
        """
        News from the worker (its counters): its reactor turns.
        """
        if self.roster.knows(worker):
            self.roster.record(worker).lastSeen = self.clock.seconds()

    def workerBootFailed(self, worker: PoolWorker, reason: str) -> None:
        self.backoff.lastFailure = f"{worker.describe()}: {reason}"

    def workerNearAllowance(self, worker: PoolWorker) -> None:
        """
        The worker will soon have used its allowance: start its replacement
        now, if the surplus allows, so the pool never dips.
        """
        self.replaceAhead(worker, RestartCause.ALLOWANCE)

    def replaceAhead(self, worker: PoolWorker, why: RestartCause) -> bool:
        """
        Start a replacement for an accepting worker; the worker retires once
        the replacement is ready (or, near its allowance, once it is used).

        @return: whether the worker was not already being replaced.
        """
        if worker.state is not WorkerState.ACCEPTING or not self.roster.knows(worker):
            return False
        record = self.roster.record(worker)
        if record.doom:
            return False
        record.doom = why
        self.log.info(
            "{worker}: starting its replacement ({why})",
            worker=worker.describe(),
            why=why.value,
        )
        self.reconcile()
        return True

    def workerWantsReplacement(self, worker: PoolWorker, cause: ReplaceCause) -> None:
        """
        The worker accepts no more (its allowance is used, or it was told
        to stop by a signal): it retires, and a replacement starts now
        unless one already did.
        """
        if not self.roster.knows(worker) or worker.state is not WorkerState.ACCEPTING:
            return  # its exit was already judged, or it retires already
        restart = RestartCause.fromWorker(cause)
        self.roster.count(restart)
        self.roster.record(worker).retiredFor = restart
        self.retiring(worker)
        # Logged after the step, so that a held replacement taking over at
        # this very moment shows as accepting in the line.
        self.reconcile()
        self.roster.logRetiring(worker, restart)

    def workerExited(self, worker: PoolWorker, end: ProcessEnd) -> None:
        """
        The worker's process is gone; C{end} says how.
        """
        self.watchdog.cancel(worker)
        record = self.roster.remove(worker)
        self.exitedAccepted += worker.accepted
        self.exitedServed += worker.served
        self.exitedFirstByteTimeouts += getattr(worker, "firstByteTimeouts", 0)
        how = end.describe()
        if worker.state in (WorkerState.RETIRING, WorkerState.STOPPING):
            self.log.info(
                "{worker} {how} ({summary})",
                worker=worker.describe(),
                how=how,
                summary=self.summary(),
            )
        elif worker.state is WorkerState.BOOTING:
            self.roster.count(RestartCause.BOOT_FAILURE)
            backoff = self.backoff
            if not backoff.lastFailure.startswith(worker.describe()):
                backoff.lastFailure = f"{worker.describe()} {how} before it was ready"
            backoff.failed(f"boot failure: {backoff.lastFailure}", duringBoot=True)
        else:
            self._crashed(worker, record, how)
        now = self.clock.seconds()
        self.emit(
            WorkerExited(
                at=now,
                number=worker.number,
                pid=worker.pid,
                generation=record.generation,
                end=end,
                cause=_exitCause(worker, record),
                accepted=worker.accepted,
                served=worker.served,
                lifetime=now - record.startedAt,
            )
        )
        self.reconcile()

    def resize(self, size: int) -> None:
        """
        Keep C{size} workers from now on (at least 1): more are started at
        once, surplus ones retire gracefully.
        """
        size = max(1, size)
        if size == self.size:
            return
        self.log.info("pool size {old} -> {new}", old=self.size, new=size)
        old, self.size = self.size, size
        self.emit(PoolResized(at=self.clock.seconds(), old=old, new=size))
        self.reconcile()

    def reload(self) -> None:
        """
        Replace every worker by a fresh one, new first (see L{Reloads}).
        """
        if self.running:
            self.reloads.ask()
            self.reconcile()

    def stop(self) -> Deferred[None]:
        """
        Ask every worker to finish and exit; those still running after the
        grace period are killed.

        @return: fires when every worker is gone.
        """
        self.running = False
        gone = self.shutdown.begin()
        self.reloads.stop()
        if self._heartbeats.running:
            self._heartbeats.stop()
        self.backoff.cancel()
        self.reconcile()
        return gone

    def leaveQueue(self) -> None:
        """
        From now on, a stop leaves what is queued on the listening sockets
        to another master's workers (a hot upgrade): each worker retires,
        accepting nothing more, instead of draining the queue.
        """
        self.shutdown.drainQueue = False

    def stopNow(self) -> None:
        """
        Kill every worker without waiting for their connections.
        """
        self.log.warn("stopping now: killing {n} workers", n=len(self.workers))
        self.watchdog.killAll()
        if self.stopping:
            self.reconcile()
        else:
            self.stop()

    def whenDrained(self) -> Deferred[None]:
        """
        After L{stop}: fires once no worker will accept again, because each
        has drained the queue and closed its listening sockets, or is gone.
        From then on, the listening sockets serve no purpose: closing them
        makes new clients be refused at once instead of being queued and
        reset later.
        """
        return self.shutdown.whenDrained()

    # What events record.

    def retiring(self, worker: PoolWorker) -> None:
        """C{worker} accepts no more, and drains within the grace period."""
        self.roster.setState(worker, WorkerState.RETIRING)
        self.watchdog.set(worker, Deadline.GRACE)

    def _crashed(self, worker: PoolWorker, record: WorkerRecord, how: str) -> None:
        """
        A worker that served died.  Soon after it became ready, it counts
        as a failure too, so that code which crashes on its first
        connection does not make a respawn loop.
        """
        self.roster.count(RestartCause.CRASH)
        uptime = self.clock.seconds() - (record.readyAt or record.startedAt)
        self.log.error(
            "{worker} {how} after {uptime:.1f}s of serving; replacing it",
            worker=worker.describe(),
            how=how,
            uptime=uptime,
        )
        if uptime < self.config.minUptime:
            self.backoff.failed(f"{worker.describe()} died {uptime:.1f}s after start")

    def emit(self, event: PoolEvent) -> None:
        """
        Tell every observer of C{event}, at once, in the pool's step: an
        observer must be quick and must not call the pool back (the user's
        hooks are called later, by L{preforktwist.master.hooks}).  One that
        raises is logged, and the others and the pool go on.
        """
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                self.log.failure(
                    "pool observer {observer!r} failed on {event}",
                    observer=observer,
                    event=event.name,
                )

    def reconcile(self) -> None:
        """
        Decide, from what has been recorded, what to start, activate,
        retire and kill (see L{Reconciler}).
        """
        self._reconciler.reconcile()


def _exitCause(worker: PoolWorker, record: WorkerRecord) -> RestartCause | None:
    """
    Why a worker that exited went: taken for stuck, retired (by the pool
    or at its own request), failed to boot, or crashed; C{None} if it
    exited as the pool stopped.
    """
    if record.stuck:
        return RestartCause.HEARTBEAT_TIMEOUT
    if worker.state is WorkerState.RETIRING:
        return record.retiredFor
    if worker.state is WorkerState.STOPPING:
        return None
    if worker.state is WorkerState.BOOTING:
        return RestartCause.BOOT_FAILURE
    return RestartCause.CRASH
