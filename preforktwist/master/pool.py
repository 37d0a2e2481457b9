"""
The population policy: how many workers, when to start one, when to
retire one, when to give up, and how to stop them all.

This is the supervisor's whole story, kept free of processes and sockets:
it is given a clock and a function that starts a worker, and is told what
happens to workers.  Its rules:

 - C{size} workers serve.  A worker that is booting or accepting counts,
   unless it is I{doomed}: its replacement is wanted, because it is close
   to its allowance or because a reload replaces it.  A doomed worker
   keeps accepting until its replacement is ready (reload) or its
   allowance is used (allowance), so the pool never dips.
 - At most C{size + surplus} workers boot or accept at once: the surplus
   (default 1) is what replacement ahead of time and rolling reloads may
   use, so memory never grows beyond it.  A fork storm is impossible by
   construction, whatever the user's code does.
 - A worker that accepts no more is I{retiring}: it finishes its open
   connections within the grace period and does not count at all.
 - A worker that dies before it became ready is a boot failure.  Boot
   failures are retried one worker at a time, with exponential backoff.
   If no worker has ever become ready after C{maxBootFailures} of them, the
   pool gives up: the user's code cannot serve, and saying so beats a
   server that starts and never answers.  A failure during a reload stops
   the reload; the old workers keep serving.
 - A worker that dies soon after it became ready counts as a failure too,
   for the backoff, so that code which crashes on its first connection does
   not make a respawn loop.
 - A worker whose heartbeat stops (its reactor no longer turns) has its
   stack dumped, is sent SIGTERM, then SIGKILL, and is replaced.
 - Stop: every worker drains and exits within the grace period, or is
   killed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import PoolEvent, RestartCause
from preforktwist.protocol.control import ReplaceCause


class WorkerState(enum.Enum):
    BOOTING = "booting"
    STANDBY = "standby"
    ACCEPTING = "accepting"
    RETIRING = "retiring"
    STOPPING = "stopping"


#: The states in their order, for L{Pool.summary}: iterating an C{Enum}
#: class walks its members anew each time, and the summary is written into
#: every line the pool logs.
_STATES = tuple(WorkerState)


class PoolWorker(Protocol):
    """
    What the pool needs of a worker: L{preforktwist.process.WorkerProcess}
    in the master, a fake in the tests.
    """

    number: int
    state: WorkerState
    accepted: int
    served: int

    def describe(self) -> str:
        """A short name for the log, e.g. C{worker 3 (pid 1234)}."""

    def retire(self) -> None:
        """Ask the worker to stop accepting, finish and exit."""

    def stop(self) -> Deferred[None]:
        """
        Ask the worker to accept what is queued, finish and exit.  The
        result fires once the worker has closed its listening sockets.
        """

    def activate(self) -> None:
        """Tell a standby worker to start accepting."""

    def dumpStack(self) -> None:
        """Make the worker write its Python stack to its log (faulthandler)."""

    def terminate(self) -> None:
        """Send the worker SIGTERM."""

    def kill(self) -> None:
        """End the worker now (SIGKILL)."""


@dataclass
class WorkerRecord:
    """
    What the pool remembers of one worker, in the pool clock's seconds.
    """

    generation: int
    startedAt: float
    standby: bool = False
    readyAt: float | None = None
    lastSeen: float = 0.0
    #: Why its replacement is wanted while it still accepts: its
    #: allowance, a reload, its memory or its age.
    doom: RestartCause | None = None
    stuck: bool = False


class Pool:
    """
    Keeps C{size} workers accepting.

    @ivar workers: the live workers by number.
    @ivar spawned: how many workers were ever started.
    @ivar reloading: a rolling reload is under way.
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(
        self,
        spawn: Callable[[int, bool], PoolWorker],
        size: int,
        clock: IReactorTime,
        grace: float = 30.0,
        bootTimeout: float = 30.0,
        giveUp: Callable[[str], None] = lambda reason: None,
        maxBootFailures: int = 3,
        backoff: float = 0.5,
        maxBackoff: float = 30.0,
        minUptime: float = 1.0,
        reloadBatch: int = 1,
        standby: int = 0,
        heartbeatTimeout: float = 0.0,
        stuckKillDelay: float = 2.0,
        renew: Callable[[], None] = lambda: None,
        renewInterval: float = 0.0,
    ) -> None:
        """
        @param spawn: starts the worker with the given number, as a standby
            or not, and returns it.
        @param grace: seconds a retiring or stopping worker may take.
        @param bootTimeout: seconds a worker may take to become ready.
        @param giveUp: called with the last boot failure's reason when no
            worker ever became ready after C{maxBootFailures} failures.
        @param backoff: the first retry delay after a failure; it doubles
            with each consecutive failure, up to C{maxBackoff}.
        @param minUptime: a worker that dies sooner than this after becoming
            ready counts as a failure for the backoff.
        @param reloadBatch: workers that may boot or accept beyond C{size}
            (the surplus), to replace others ahead of time and during
            reloads (C{--reload-batch}).
        @param standby: workers kept booted but not accepting, so that a
            replacement starts accepting at once instead of after a boot.
        @param heartbeatTimeout: seconds without news from a worker before
            it is taken for stuck; 0 disables the check.
        @param stuckKillDelay: seconds between SIGTERM and SIGKILL for a
            stuck worker.
        @param renew: called as a reload begins, before any worker of the
            new generation is started: the starter reads the code anew
            (a new fork server).
        @param renewInterval: least seconds between two renewals; a reload
            asked for sooner runs on the starter as it is (each worker
            still imports the user's code anew) and one renewal, with a
            last pass, follows when the interval is over.
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
        self.surplus = reloadBatch
        self.standby = standby
        self.heartbeatTimeout = heartbeatTimeout
        self.stuckKillDelay = stuckKillDelay
        self._renew = renew
        self.renewInterval = renewInterval
        self._lastRenewal: float | None = None
        #: The one renewal (and pass) due once the interval is over.
        self._pendingRenewal: IDelayedCall | None = None

        self.workers: dict[int, PoolWorker] = {}
        self.spawned = 0
        self.everReady = False
        self.failures = 0
        self.lastFailure = ""
        self.running = False
        self.gaveUp = False
        self.reloading = False
        self.generation = 0
        self.restarts: dict[RestartCause, int] = {}
        #: Connections accepted and served by workers that have exited.
        self.exitedAccepted = 0
        self.exitedServed = 0
        #: Connections closed for silence by workers that are gone.
        self.exitedFirstByteTimeouts = 0
        self._records: dict[int, WorkerRecord] = {}
        self._timers: dict[int, IDelayedCall] = {}
        self._retry: IDelayedCall | None = None
        self._stopped: list[Deferred[None]] = []
        self._drained: list[Deferred[None]] = []
        self._holdingSockets: set[int] = set()
        #: Called with each L{PoolEvent}.
        self.observers: list[Callable[[PoolEvent], None]] = []
        self._announcedReady = False
        self._heartbeats = LoopingCall(self._checkHeartbeats)
        self._heartbeats.clock = clock

    # Counting.

    def record(self, worker: PoolWorker) -> WorkerRecord:
        return self._records[worker.number]

    def inState(self, *states: WorkerState) -> list[PoolWorker]:
        return [w for w in self.workers.values() if w.state in states]

    def _busy(self) -> list[PoolWorker]:
        """Workers booting or accepting, doomed or not, standbys aside."""
        return [
            w
            for w in self.inState(WorkerState.BOOTING, WorkerState.ACCEPTING)
            if not self._records[w.number].standby
        ]

    def _standbys(self) -> list[PoolWorker]:
        """Standby workers, booting or ready."""
        return [
            w
            for w in self.inState(WorkerState.BOOTING, WorkerState.STANDBY)
            if self._records[w.number].standby
        ]

    def _serving(self) -> list[PoolWorker]:
        """
        Workers booting or accepting that are not to be replaced, or whose
        replacement waits, held, for them to use their allowance: they
        accept until exactly their last connection.
        """
        return [
            w
            for w in self._busy()
            if self._records[w.number].doom in (None, RestartCause.ALLOWANCE)
        ]

    def doomed(self, why: RestartCause | None = None) -> list[PoolWorker]:
        """
        Accepting workers whose replacement is wanted (for C{why}, or for
        any reason), oldest first.
        """
        return [
            w
            for w in self.inState(WorkerState.ACCEPTING)
            if self._records[w.number].doom is not None
            and why in (None, self._records[w.number].doom)
        ]

    def summary(self) -> str:
        """
        The workers by state, for the log: C{1 booting, 1 standby, 2
        accepting}.  A standby still booting counts as a standby.
        """
        counts = dict.fromkeys(_STATES, 0)
        for worker in self.workers.values():
            record = self._records.get(worker.number)
            booting = worker.state is WorkerState.BOOTING
            standby = booting and record is not None and record.standby
            counts[WorkerState.STANDBY if standby else worker.state] += 1
        return ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "none"

    def _count(self, cause: RestartCause) -> None:
        self.restarts[cause] = self.restarts.get(cause, 0) + 1

    def _emit(self, event: PoolEvent) -> None:
        for observer in list(self.observers):
            observer(event)

    # Starting.

    def start(self) -> None:
        self.running = True
        if self.heartbeatTimeout:
            self._heartbeats.start(min(1.0, self.heartbeatTimeout / 4), now=False)
        self._fill()

    def _fill(self) -> None:
        """
        Start workers until C{size} serve, within the surplus.  After a
        failure, only one boots at a time, and only once the backoff delay
        has passed.
        """
        if not self.running or self.gaveUp or self._retry is not None:
            return
        missing = min(
            self.size - len(self._serving()),
            self.size + self.surplus - len(self._busy()),
        )
        if self.failures:
            missing = min(missing, 1 - len(self.inState(WorkerState.BOOTING)))
        current = [
            w
            for w in self._standbys()
            if self._records[w.number].generation == self.generation
        ]
        for _ in range(missing):
            ready = [w for w in current if w.state is WorkerState.STANDBY]
            if ready:
                current.remove(ready[0])
                self._activate(ready[0])
            elif current:
                # A standby of this generation is booting: it takes the
                # place once ready (sooner than a worker started now).
                current.pop(0)
            elif not self._start(standby=False):
                return
        if not self.failures:
            # Each worker close to its allowance has its replacement booted
            # and held, to take over at its last connection (within the
            # surplus, so memory stays bounded).
            nearAllowance = len(self.doomed(RestartCause.ALLOWANCE))
            wanted = max(self.standby, min(nearAllowance, self.surplus))
            for _ in range(wanted - len(self._standbys())):
                if not self._start(standby=True):
                    return

    def _start(self, standby: bool) -> bool:
        self.spawned += 1
        try:
            worker = self._spawn(self.spawned, standby)
        except Exception as e:
            # Out of processes or file descriptors: a failure like a
            # boot failure, retried with the same backoff.
            self.lastFailure = f"cannot start a worker: {e}"
            self._count(RestartCause.BOOT_FAILURE)
            self._failed(self.lastFailure)
            return False
        now = self.clock.seconds()
        self.workers[worker.number] = worker
        self._records[worker.number] = WorkerRecord(
            self.generation, now, lastSeen=now, standby=standby
        )
        self._setTimer(worker, self.bootTimeout, self._bootTimedOut)
        self.log.info(
            "started {worker}{standby} ({summary})",
            worker=worker.describe(),
            standby=" as a standby" if standby else "",
            summary=self.summary(),
        )
        self._emit(PoolEvent.CHANGED)
        return True

    def _activate(self, worker: PoolWorker) -> None:
        """
        A standby worker takes a place in the pool: it accepts at once.
        """
        self._records[worker.number].standby = False
        worker.activate()
        self._nowAccepting(worker)

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
        if worker.number not in self._records:
            return  # it has exited meanwhile
        self._cancelTimer(worker)
        if worker.state is WorkerState.STOPPING:
            # The server began to stop while this worker booted: it may be
            # the only one left to serve what is queued, so it drains.
            self._drainWorker(worker)
            return
        if worker.state is not WorkerState.BOOTING:
            return
        self.everReady = True
        self.failures = 0
        record = self._records[worker.number]
        if record.standby:
            worker.state = WorkerState.STANDBY
            if record.generation < self.generation:
                # Booted from code that a reload has since replaced.
                self.retireWorker(worker, RestartCause.RELOAD)
                self._fill()
                return
            record.lastSeen = self.clock.seconds()
            self.log.info(
                "{worker} is ready as a standby ({summary})",
                worker=worker.describe(),
                summary=self.summary(),
            )
            self._fill()
            self._emit(PoolEvent.CHANGED)
            return
        self._nowAccepting(worker)

    def _nowAccepting(self, worker: PoolWorker) -> None:
        worker.state = WorkerState.ACCEPTING
        record = self._records[worker.number]
        record.readyAt = record.lastSeen = self.clock.seconds()
        self.log.info(
            "{worker} is accepting ({summary})",
            worker=worker.describe(),
            summary=self.summary(),
        )
        # A replacement is ready: the worker it replaces may go now, unless
        # it is to use its whole allowance first (it says when).
        early = [
            w
            for w in self.doomed()
            if self._records[w.number].doom is not RestartCause.ALLOWANCE
        ]
        for replaced in early[:1]:
            doom = self._records[replaced.number].doom
            assert doom is not None
            self.retireWorker(replaced, doom)
        self._trim()
        self._continueReload()
        # Retiring a replaced worker freed a place in the surplus: another
        # doomed worker may now get its replacement.
        self._fill()
        if (
            not self._announcedReady
            and len(self.inState(WorkerState.ACCEPTING)) >= self.size
        ):
            self._announcedReady = True
            self._emit(PoolEvent.READY)
        self._emit(PoolEvent.CHANGED)

    def workerAlive(self, worker: PoolWorker) -> None:
        """
        News from the worker (its counters): its reactor turns.
        """
        record = self._records.get(worker.number)
        if record is not None:
            record.lastSeen = self.clock.seconds()

    def workerBootFailed(self, worker: PoolWorker, reason: str) -> None:
        self.lastFailure = f"{worker.describe()}: {reason}"

    def workerNearAllowance(self, worker: PoolWorker) -> None:
        """
        The worker will soon have used its allowance: start its replacement
        now, if the surplus allows, so the pool never dips.
        """
        self.replaceAhead(worker, RestartCause.ALLOWANCE)

    def replaceAhead(self, worker: PoolWorker, why: RestartCause) -> bool:
        """
        Start a replacement for an accepting worker; the worker retires once
        the replacement is ready.

        @return: whether the worker was not already being replaced.
        """
        record = self._records.get(worker.number)
        if worker.state is not WorkerState.ACCEPTING or not record or record.doom:
            return False
        record.doom = why
        self.log.info(
            "{worker}: starting its replacement ({why})",
            worker=worker.describe(),
            why=why.value,
        )
        self._fill()
        return True

    def workerWantsReplacement(self, worker: PoolWorker, cause: ReplaceCause) -> None:
        """
        The worker accepts no more (its allowance is used, or it was told
        to stop by a signal): it retires, and a replacement starts now
        unless one already did.
        """
        if worker.number not in self._records:
            return  # its exit was already judged
        if worker.state is not WorkerState.ACCEPTING:
            return
        restart = RestartCause.fromWorker(cause)
        self._count(restart)
        self._retire(worker, restart, refill=True)

    def retireWorker(self, worker: PoolWorker, cause: RestartCause) -> None:
        """
        Tell an accepting worker to retire: it was replaced, or the pool
        shrinks.
        """
        if worker.state is WorkerState.STANDBY:
            worker.retire()
            self._retire(worker, cause)
        elif worker.state is WorkerState.ACCEPTING:
            self._count(cause)
            worker.retire()
            self._retire(worker, cause)

    def _retire(
        self, worker: PoolWorker, cause: RestartCause, refill: bool = False
    ) -> None:
        """
        C{worker} accepts no more and drains.  With C{refill}, the pool is
        filled before the line is logged, so that a held replacement taking
        over at this very moment shows as accepting in it.
        """
        worker.state = WorkerState.RETIRING
        self._setTimer(worker, self.grace, self._graceOver)
        if refill:
            self._fill()
        self.log.info(
            "{worker} is retiring ({cause}) ({summary})",
            worker=worker.describe(),
            cause=cause.value,
            summary=self.summary(),
        )

    def workerExited(self, worker: PoolWorker, how: str) -> None:
        """
        The worker's process is gone; C{how} says why, for the log.
        """
        self._cancelTimer(worker)
        self.workers.pop(worker.number, None)
        self._socketsReleased(worker)
        record = self._records.pop(worker.number)
        self.exitedAccepted += worker.accepted
        self.exitedServed += worker.served
        self.exitedFirstByteTimeouts += getattr(worker, "firstByteTimeouts", 0)
        state = worker.state
        if state in (WorkerState.RETIRING, WorkerState.STOPPING):
            self.log.info(
                "{worker} {how} ({summary})",
                worker=worker.describe(),
                how=how,
                summary=self.summary(),
            )
        elif state is WorkerState.BOOTING:
            self._count(RestartCause.BOOT_FAILURE)
            if not self.lastFailure.startswith(worker.describe()):
                self.lastFailure = f"{worker.describe()} {how} before it was ready"
            self._abortReload()
            self._failed(f"boot failure: {self.lastFailure}")
        else:
            self._count(RestartCause.CRASH)
            uptime = self.clock.seconds() - (record.readyAt or record.startedAt)
            self.log.error(
                "{worker} {how} after {uptime:.1f}s of serving; replacing it",
                worker=worker.describe(),
                how=how,
                uptime=uptime,
            )
            if uptime < self.minUptime:
                self._failed(f"{worker.describe()} died {uptime:.1f}s after start")
        self._checkStopped()
        self._fill()
        self._continueReload()
        self._emit(PoolEvent.CHANGED)

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

    # Heartbeats.

    def _checkHeartbeats(self) -> None:
        now = self.clock.seconds()
        watched = (WorkerState.STANDBY, WorkerState.ACCEPTING, WorkerState.RETIRING)
        for worker in self.inState(*watched):
            record = self._records[worker.number]
            silent = now - record.lastSeen
            if record.stuck or silent < self.heartbeatTimeout:
                continue
            record.stuck = True
            self._count(RestartCause.HEARTBEAT_TIMEOUT)
            self.log.error(
                "{worker} is stuck: no heartbeat for {silent:.1f}s (timeout "
                "{timeout:g}s); its stack follows, then SIGTERM, then SIGKILL "
                "after {delay:g}s",
                worker=worker.describe(),
                silent=silent,
                timeout=self.heartbeatTimeout,
                delay=self.stuckKillDelay,
            )
            worker.dumpStack()
            worker.terminate()
            if worker.state is WorkerState.ACCEPTING:
                worker.state = WorkerState.RETIRING
            self._setTimer(worker, self.stuckKillDelay, lambda w: w.kill())
            self._fill()

    # Changing the pool.

    def resize(self, size: int) -> None:
        """
        Keep C{size} workers from now on (at least 1): more are started at
        once, surplus ones retire gracefully.
        """
        size = max(1, size)
        if size == self.size:
            return
        self.log.info("pool size {old} -> {new}", old=self.size, new=size)
        self.size = size
        self._trim()
        self._fill()

    def _trim(self) -> None:
        """
        Retire accepting workers beyond the size, oldest first.  Workers
        still booting are left to become ready first.
        """
        while self.running and len(self._serving()) > self.size:
            accepting = [w for w in self._serving() if w.state is WorkerState.ACCEPTING]
            if not accepting:
                return
            self.retireWorker(accepting[0], RestartCause.SCALING)

    def reload(self) -> None:
        """
        Replace every worker by a fresh one, new first: at most C{surplus}
        replacements boot at a time, and an old worker retires only when a
        replacement is ready.

        Reloads never stack.  One asked for while one is under way restarts
        it: a new generation, so that every worker started before this
        request is replaced too, each importing the user's code anew.  The
        starter is renewed (a new fork server, which reads the framework's
        code anew) at most once per C{renewInterval}: a request sooner than
        that runs on the starter as it is, and exactly one renewal, with a
        last pass over the workers, follows when the interval is over.  So
        a storm of SIGHUPs starts one fork server as it begins and one after
        it, however many signals come.
        """
        if not self.running:
            return
        now = self.clock.seconds()
        again = self.reloading
        if self._lastRenewal is None or now - self._lastRenewal >= self.renewInterval:
            self._renewNow()
        elif self._pendingRenewal is None:
            self._pendingRenewal = self.clock.callLater(
                self._lastRenewal + self.renewInterval - now, self._renewLater
            )
        if not self.reloading:
            self.reloading = True
            self._emit(PoolEvent.RELOADING)
        self._newGeneration(again)

    def _renewNow(self) -> None:
        if self._pendingRenewal is not None and self._pendingRenewal.active():
            self._pendingRenewal.cancel()
        self._pendingRenewal = None
        self._lastRenewal = self.clock.seconds()
        self._renew()

    def _renewLater(self) -> None:
        """
        Reloads were asked for within the interval: the code is read anew
        once more, and every worker replaced once more.
        """
        self._pendingRenewal = None
        if not self.running:
            return
        self._renewNow()
        again = self.reloading
        if not self.reloading:
            self.reloading = True
            self._emit(PoolEvent.RELOADING)
        self._newGeneration(again)

    def _newGeneration(self, again: bool) -> None:
        self.generation += 1
        self.log.info(
            "reload: replacing {n} workers, {batch} at a time{again}",
            n=len(self._busy()),
            batch=self.surplus,
            again=" (a reload was under way: it starts over)" if again else "",
        )
        for standby in self.inState(WorkerState.STANDBY):
            self.retireWorker(standby, RestartCause.RELOAD)
        self._continueReload()
        self._fill()

    def _continueReload(self) -> None:
        if not self.reloading or not self.running:
            return
        old = [
            w
            for w in self._serving()
            if w.state is WorkerState.ACCEPTING
            and self._records[w.number].generation < self.generation
        ]
        inFlight = len(self.doomed(RestartCause.RELOAD))
        for worker in old[: max(0, self.surplus - inFlight)]:
            self._records[worker.number].doom = RestartCause.RELOAD
        if not old and not inFlight:
            self.reloading = False
            self.log.info(
                "reload finished: every worker is new ({summary})",
                summary=self.summary(),
            )
            self._emit(PoolEvent.RELOADED)
            return
        self._fill()

    def _abortReload(self) -> None:
        if not self.reloading:
            return
        self.reloading = False
        for worker in self.doomed(RestartCause.RELOAD):
            self._records[worker.number].doom = None
        self.log.error(
            "reload stopped: a new worker failed to boot; the old workers "
            "keep serving ({summary})",
            summary=self.summary(),
        )
        self._emit(PoolEvent.RELOADED)

    # Stopping.

    def stop(self) -> Deferred[None]:
        """
        Ask every worker to finish and exit; those still running after the
        grace period are killed.

        @return: fires when every worker is gone.
        """
        self.running = False
        self.reloading = False
        if self._pendingRenewal is not None and self._pendingRenewal.active():
            self._pendingRenewal.cancel()
        self._pendingRenewal = None
        self._emit(PoolEvent.STOPPING)
        if self._heartbeats.running:
            self._heartbeats.stop()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for worker in list(self.workers.values()):
            if worker.state is WorkerState.BOOTING:
                # Stopped once it is ready (the boot timeout still applies).
                worker.state = WorkerState.STOPPING
                self._holdingSockets.add(worker.number)
            elif worker.state in (WorkerState.ACCEPTING, WorkerState.STANDBY):
                self._drainWorker(worker)
        self._checkDrained()
        if not self.workers:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        return d

    def _drainWorker(self, worker: PoolWorker) -> None:
        worker.state = WorkerState.STOPPING
        self._holdingSockets.add(worker.number)
        self._setTimer(worker, self.grace, self._graceOver)
        worker.stop().addCallback(lambda _: self._socketsReleased(worker))

    def _socketsReleased(self, worker: PoolWorker) -> None:
        self._holdingSockets.discard(worker.number)
        self._checkDrained()

    def whenDrained(self) -> Deferred[None]:
        """
        After L{stop}: fires once no worker will accept again, because each
        has drained the queue and closed its listening sockets, or is gone.
        From then on, the listening sockets serve no purpose: closing them
        makes new clients be refused at once instead of being queued and
        reset later.
        """
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self._checkDrained()
        return d

    def _checkDrained(self) -> None:
        if not self.running and not self._holdingSockets:
            _fireAll(self._drained)

    def stopNow(self) -> None:
        """
        Kill every worker without waiting for their connections.
        """
        self.log.warn("stopping now: killing {n} workers", n=len(self.workers))
        self.running = False
        for worker in list(self.workers.values()):
            worker.kill()

    def _checkStopped(self) -> None:
        if not self.running and not self.workers:
            _fireAll(self._stopped)


def _fireAll(waiting: list[Deferred[None]]) -> None:
    """
    Fire and forget every Deferred in C{waiting}.  The list is emptied
    first, so that a callback that waits anew is kept for next time.
    """
    fired = waiting[:]
    del waiting[:]
    for d in fired:
        d.callback(None)
