"""
The words the pool uses for what happens to it: why a worker was replaced
(L{RestartCause}), how its process ended (L{ProcessEnd}) and what its
observers hear (L{PoolEvent} and its kinds).

Each is spelled once, here.  A restart cause's value is its external
spelling: the key in the status JSON's C{restarts}, the C{cause} label of
C{preforktwist_worker_restarts_total}, and the word in the log.  The
causes a worker sends over its control channel are part of the contract
(L{preforktwist.protocol.control.ReplaceCause}) and have the same values.
"""

from __future__ import annotations

import enum
import signal as signals
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from preforktwist.protocol.control import ReplaceCause


class RestartCause(str, enum.Enum):
    """
    Why a worker was replaced, in the order the status page lists them.
    """

    #: It used its allowance of connections.
    ALLOWANCE = "allowance"
    #: It grew over C{--max-worker-memory}.
    MEMORY = "memory"
    #: It served longer than C{--max-worker-age}.
    AGE = "age"
    #: It died while it served.
    CRASH = "crash"
    #: It died, or could not be started, before it was ready.
    BOOT_FAILURE = "boot_failure"
    #: Its reactor stopped turning.
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    #: A rolling reload replaced it.
    RELOAD = "reload"
    #: The pool shrank.
    SCALING = "scaling"
    #: It received SIGTERM or SIGINT.
    SIGNAL = "signal"

    @classmethod
    def fromWorker(cls, cause: ReplaceCause) -> RestartCause:
        """
        The master's cause for what a worker said over its control channel.
        """
        return cls(cause.value)


class CloseCause(str, enum.Enum):
    """
    Why a worker closed a connection itself, for the causes that are
    counted: the key in the status JSON's C{closes}, the C{cause} label of
    C{preforktwist_connections_closed_total}.
    """

    #: Its client sent nothing within C{--first-byte-timeout}.
    FIRST_BYTE_TIMEOUT = "first_byte_timeout"


@dataclass(frozen=True)
class ProcessEnd:
    """
    How a worker's process ended: its exit status, or the signal that
    killed it.

    @ivar status: the exit status, or L{None} if a signal killed it.
    @ivar signal: the number of the signal that killed it, or L{None}.
        Both are L{None} for an end the master could not read.
    """

    status: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        """
        In words, for the log: C{exited with status 3}, C{was killed by
        SIGKILL}.
        """
        if self.signal is not None:
            try:
                name = signals.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"was killed by {name}"
        if self.status is None:
            return "ended, how unknown"
        return f"exited with status {self.status}"


@dataclass(frozen=True, kw_only=True)
class PoolEvent:
    """
    Something that happened to the pool, as its observers hear it (the
    systemd notifier, readiness, the status history, the user's hooks).
    Each kind of event is a subclass, matched by class::

        match event:
            case WorkerExited(cause=RestartCause.CRASH):
                ...

    @ivar at: when it happened, in the pool clock's seconds (the reactor's
        C{seconds()}: Unix time).
    """

    #: The event's name in records and logs.
    name: ClassVar[str] = "event"

    at: float

    def asDict(self) -> dict[str, Any]:
        """
        The event as plain data (its name under C{event}, enumerations by
        their value, a L{ProcessEnd} as C{status} and C{signal}), ready for
        C{json.dumps}.
        """
        data: dict[str, Any] = {"event": self.name}
        for each in fields(self):
            value = getattr(self, each.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, ProcessEnd):
                value = {"status": value.status, "signal": value.signal}
            data[each.name] = value
        return data


@dataclass(frozen=True, kw_only=True)
class PoolReady(PoolEvent):
    """
    The pool first has all its workers accepting (once in its life).

    @ivar size: the workers it keeps.
    """

    name: ClassVar[str] = "ready"

    size: int


@dataclass(frozen=True, kw_only=True)
class WorkerEvent(PoolEvent):
    """
    Something that happened to one worker.

    @ivar number: the worker's number, unique in the master's life.
    @ivar pid: its process id; L{None} while a fork server has not yet
        said it (a worker just started by one).
    @ivar generation: the reload it was started in (0 before any).
    """

    number: int
    pid: int | None
    generation: int


@dataclass(frozen=True, kw_only=True)
class WorkerStarted(WorkerEvent):
    """
    The pool started a worker.

    @ivar standby: it is started as a standby, to accept once told.
    """

    name: ClassVar[str] = "worker_started"

    standby: bool


@dataclass(frozen=True, kw_only=True)
class WorkerAccepting(WorkerEvent):
    """
    A worker accepts connections: it booted, or it was a standby and took
    a place in the pool.
    """

    name: ClassVar[str] = "worker_accepting"


@dataclass(frozen=True, kw_only=True)
class WorkerExited(WorkerEvent):
    """
    A worker's process is gone.

    @ivar end: its exit status or signal.
    @ivar cause: why it went: what it was replaced for (its allowance, a
        reload, a crash, a boot failure...), or L{None} if it exited as the
        pool stopped.
    @ivar accepted: connections it accepted, as it last reported.
    @ivar served: connections it finished, as it last reported.
    @ivar lifetime: seconds from its start to its exit.
    """

    name: ClassVar[str] = "worker_exited"

    end: ProcessEnd
    cause: RestartCause | None
    accepted: int
    served: int
    lifetime: float


@dataclass(frozen=True, kw_only=True)
class PoolResized(PoolEvent):
    """
    The number of workers the pool keeps changed (C{SIGTTIN}, C{SIGTTOU},
    the adaptive size).
    """

    name: ClassVar[str] = "resized"

    old: int
    new: int


@dataclass(frozen=True, kw_only=True)
class ReloadStarted(PoolEvent):
    """
    A rolling reload began.  A reload asked for while one is under way
    starts that one over, without a second event.

    @ivar generation: the generation of the workers it starts.
    """

    name: ClassVar[str] = "reload_started"

    generation: int


@dataclass(frozen=True, kw_only=True)
class ReloadFinished(PoolEvent):
    """
    A rolling reload replaced every worker.

    @ivar generation: the generation every worker now belongs to.
    """

    name: ClassVar[str] = "reload_finished"

    generation: int


@dataclass(frozen=True, kw_only=True)
class ReloadFailed(PoolEvent):
    """
    A rolling reload stopped: a new worker failed to boot, and the old
    workers keep serving.

    @ivar generation: the generation that failed.
    @ivar reason: the boot failure, in words.
    """

    name: ClassVar[str] = "reload_failed"

    generation: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class PoolStopping(PoolEvent):
    """
    The pool stops: every worker drains and exits.
    """

    name: ClassVar[str] = "stopping"


@dataclass(frozen=True, kw_only=True)
class WorkersChanged(PoolEvent):
    """
    The workers changed (one came, went or changed state), told once per
    step of the pool, after that step's other events.

    @ivar summary: the workers by state, as the log shows them: C{1
        booting, 2 accepting}.
    """

    name: ClassVar[str] = "changed"

    summary: str
