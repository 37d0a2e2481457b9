"""
The pool's workers and what it remembers of each, counted the ways its
rules need: which boot or accept, which serve, which are to be replaced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import RestartCause


class WorkerState(enum.Enum):
    BOOTING = "booting"
    STANDBY = "standby"
    ACCEPTING = "accepting"
    RETIRING = "retiring"
    STOPPING = "stopping"


#: The states in their order, for L{Roster.summary}: iterating an C{Enum}
#: class walks its members anew each time, and the summary is written into
#: every line the pool logs.
_STATES = tuple(WorkerState)


class Deadline(enum.Enum):
    """
    What a worker is killed for not doing in time.
    """

    #: Becoming ready (C{bootTimeout}).
    BOOT = "boot"
    #: Finishing its connections once retiring or stopping (C{grace}).
    GRACE = "grace"
    #: Exiting after SIGTERM once taken for stuck (C{stuckKillDelay}).
    STUCK = "stuck"


class PoolWorker(Protocol):
    """
    What the pool needs of a worker: L{preforktwist.master.handle.WorkerProcess}
    in the master, a fake in the tests.
    """

    number: int
    #: Its process id, once known (a fork server says it after the fork).
    pid: int | None
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
    #: Why it retired, if it did: the pool retired it, or it asked to be
    #: replaced.
    retiredFor: RestartCause | None = None
    #: The deadline it missed, not yet acted upon.
    overdue: Deadline | None = None
    #: Told to drain as the pool stops.
    stopAsked: bool = False
    #: Its listening sockets are closed, once stopping.
    released: bool = False


class Roster:
    """
    The live workers by number, oldest first, each with its record, and
    the log lines that say how they change.
    """

    log = NamedLogger("preforktwist.pool.Pool")

    def __init__(self) -> None:
        self.workers: dict[int, PoolWorker] = {}
        self._records: dict[int, WorkerRecord] = {}
        #: Workers replaced, by why.
        self.restarts: dict[RestartCause, int] = {}
        #: A worker came, went or changed state since this was last reset.
        self.changed = False

    def add(self, worker: PoolWorker, record: WorkerRecord) -> None:
        self.workers[worker.number] = worker
        self._records[worker.number] = record
        self.changed = True

    def remove(self, worker: PoolWorker) -> WorkerRecord:
        """
        Forget C{worker}, which must be known.

        @return: its record.
        """
        self.workers.pop(worker.number, None)
        self.changed = True
        return self._records.pop(worker.number)

    def setState(self, worker: PoolWorker, state: WorkerState) -> None:
        worker.state = state
        self.changed = True

    def nowStandby(self, worker: PoolWorker, now: float, current: bool) -> None:
        """
        A standby is ready; C{current} if it runs the code of the current
        generation (else, a reload has replaced it meanwhile).
        """
        self.setState(worker, WorkerState.STANDBY)
        self.record(worker).lastSeen = now
        if current:
            self.log.info(
                "{worker} is ready as a standby ({summary})",
                worker=worker.describe(),
                summary=self.summary(),
            )

    def nowAccepting(self, worker: PoolWorker, now: float) -> None:
        self.setState(worker, WorkerState.ACCEPTING)
        record = self.record(worker)
        record.readyAt = record.lastSeen = now
        self.log.info(
            "{worker} is accepting ({summary})",
            worker=worker.describe(),
            summary=self.summary(),
        )

    def logRetiring(self, worker: PoolWorker, cause: RestartCause) -> None:
        self.log.info(
            "{worker} is retiring ({cause}) ({summary})",
            worker=worker.describe(),
            cause=cause.value,
            summary=self.summary(),
        )

    def count(self, cause: RestartCause) -> None:
        """One more worker replaced for C{cause}."""
        self.restarts[cause] = self.restarts.get(cause, 0) + 1

    def knows(self, worker: PoolWorker) -> bool:
        return worker.number in self._records

    def record(self, worker: PoolWorker) -> WorkerRecord:
        return self._records[worker.number]

    def inState(self, *states: WorkerState) -> list[PoolWorker]:
        return [w for w in self.workers.values() if w.state in states]

    def busy(self) -> list[PoolWorker]:
        """Workers booting or accepting, doomed or not, standbys aside."""
        return [
            w
            for w in self.inState(WorkerState.BOOTING, WorkerState.ACCEPTING)
            if not self._records[w.number].standby
        ]

    def standbys(self) -> list[PoolWorker]:
        """Standby workers, booting or ready."""
        return [
            w
            for w in self.inState(WorkerState.BOOTING, WorkerState.STANDBY)
            if self._records[w.number].standby
        ]

    def serving(self) -> list[PoolWorker]:
        """
        Workers booting or accepting that are not to be replaced, or whose
        replacement waits, held, for them to use their allowance: they
        accept until exactly their last connection.
        """
        return [
            w
            for w in self.busy()
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

    def replacedEarly(self) -> list[PoolWorker]:
        """
        Accepting workers to retire as soon as their replacement accepts
        (a reload, their memory or their age), oldest first; a worker near
        its allowance is not one: it accepts until its allowance is used.
        """
        return [
            w
            for w in self.doomed()
            if self._records[w.number].doom is not RestartCause.ALLOWANCE
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
