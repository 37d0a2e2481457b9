"""
Hooks: the operator's code, told of the master's events.

What gunicorn's C{when_ready}, C{child_exit}, C{on_reload} and
C{nworkers_changed} are for, in Twisted's terms: an object that provides
L{IPoolObserver} is told of each of the pool's events (L{PoolEvent}'s
kinds: ready, a worker started, accepting or exited and why, the size
changed, a reload started, finished or failed, the stop).  A C{.tac}
gives such objects to L{preforktwist.PreforkService} (C{observers=}); the
command line names one with C{--hooks DOTTED}.

How they are called, so that no hook can stall or break the pool:

 - On the reactor's thread, each event on a later turn of the reactor
   than the pool's step that made it (C{callLater(0)}): the step is over,
   its workers started or told, before any hook runs.  Events come in the
   order they happened.
 - A hook that raises is logged (C{log.failure}); the other hooks, and
   the pool, go on.
 - A L{Deferred} a hook returns is not waited for: the next event does not
   wait on it.  Its failure is logged.
 - A hook that blocks blocks the master's reactor, and with it the whole
   master (no worker is replaced, no signal acted upon) until it returns.
   Hooks must not block: do blocking work (a subprocess, an HTTP call with
   a blocking library, a database write) in a thread with
   C{twisted.internet.threads.deferToThread}, or with Twisted's own
   asynchronous APIs.  A hook that takes longer than L{SLOW_HOOK} seconds
   is named in the log with the time it took.

Why the reactor and not a thread of their own: a hook is Twisted code in
the master, free to use the reactor and Twisted's APIs, which are not
thread-safe; and a thread would lose the order of the events, or stall on
one slow hook all the same.  The observers the master itself has (the
systemd notifier, readiness, the status history) are quick, and are
called in the pool's step.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from zope.interface import Interface

from preforktwist.common.logs import NamedLogger
from preforktwist.master.events import (
    PoolEvent,
    PoolReady,
    PoolResized,
    PoolStopping,
    ProcessEnd,
    ReloadFailed,
    ReloadFinished,
    ReloadStarted,
    RestartCause,
    WorkerAccepting,
    WorkerEvent,
    WorkerExited,
    WorkersChanged,
    WorkerStarted,
)
from preforktwist.master.pool import Pool
from preforktwist.settings import BY_NAME, SettingError

__all__ = [
    "SLOW_HOOK",
    "HookService",
    "IPoolObserver",
    "PoolEvent",
    "PoolReady",
    "PoolResized",
    "PoolStopping",
    "ProcessEnd",
    "ReloadFailed",
    "ReloadFinished",
    "ReloadStarted",
    "RestartCause",
    "WorkerAccepting",
    "WorkerEvent",
    "WorkerExited",
    "WorkerStarted",
    "WorkersChanged",
    "checkObserver",
    "loadObserver",
]

#: Seconds a hook may take before the log names it as slow.
SLOW_HOOK = 0.1


class IPoolObserver(Interface):
    """
    Told of each of a pool's events, in the master.
    """

    def poolEvent(event: PoolEvent) -> object:  # noqa: N805
        """
        Called with each event, in order, on the reactor's thread, on a
        later turn of the reactor than the one the event happened in.

        Match on the event's class (L{WorkerExited}, L{PoolReady}, ...);
        ignore the ones of no interest: kinds may be added.  Must not
        block (see L{preforktwist.master.hooks}).

        @return: anything; a L{Deferred} is not waited for, but its
            failure is logged.
        """


def _error(reason: str) -> SettingError:
    return BY_NAME["hooks"].error(reason)


def loadObserver(name: str) -> IPoolObserver:
    """
    The observer C{--hooks} names: an object that provides
    L{IPoolObserver}, or a callable taking no arguments (a class, say)
    that returns one.

    @raise SettingError: it cannot be imported, is neither, or raised;
        the message is one line, C{--hooks: NAME: reason}.
    """
    try:
        found = namedAny(name)
    except Exception as e:
        raise _error(f"{name}: cannot import: {type(e).__name__}: {e}") from None
    if IPoolObserver.providedBy(found):
        return found
    if not callable(found):
        raise _error(
            f"{name}: is neither an IPoolObserver nor a callable returning one"
        )
    try:
        built = found()
    except Exception as e:
        raise _error(f"{name}: raised {type(e).__name__}: {e}") from None
    if not IPoolObserver.providedBy(built):
        raise _error(
            f"{name}: returned {built!r}, which does not provide IPoolObserver "
            f"(declare it with @implementer(IPoolObserver))"
        )
    return built


def checkObserver(observer: object) -> IPoolObserver:
    """
    C{observer}, given to L{preforktwist.PreforkService}, if it provides
    L{IPoolObserver}.

    @raise TypeError: it does not.
    """
    if not IPoolObserver.providedBy(observer):
        raise TypeError(
            f"observers: {observer!r} does not provide IPoolObserver "
            f"(declare it with @implementer(IPoolObserver))"
        )
    return observer


class HookService(Service):
    """
    Relays the pool's events to the user's observers, as the module's
    docstring says: each on a later turn of the reactor, in order, every
    failure logged.  It listens to the pool from before the pool starts
    until every worker has exited; what it has heard and not yet told when
    it stops is told then, so that the last exits are not lost with the
    reactor.
    """

    log = NamedLogger("preforktwist.hooks")

    def __init__(
        self,
        pool: Pool,
        observers: Sequence[IPoolObserver],
        clock: IReactorTime,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param timer: measures how long a hook takes, in seconds.
        """
        self.pool = pool
        self.observers = list(observers)
        self.clock = clock
        self._timer = timer
        self._heard: deque[PoolEvent] = deque()
        self._due: IDelayedCall | None = None

    def startService(self) -> None:
        Service.startService(self)
        if self.observers:
            self.pool.observers.append(self.heard)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._due is not None and self._due.active():
            self._due.cancel()
        self._tellAll()
        if self.heard in self.pool.observers:
            self.pool.observers.remove(self.heard)

    def heard(self, event: PoolEvent) -> None:
        """
        The pool's observer: keep C{event}, to be told on the next turn.
        """
        self._heard.append(event)
        if self._due is None:
            self._due = self.clock.callLater(0, self._tellAll)

    def _tellAll(self) -> None:
        self._due = None
        while self._heard:
            event = self._heard.popleft()
            for observer in self.observers:
                self._tell(observer, event)

    def _tell(self, observer: IPoolObserver, event: PoolEvent) -> None:
        began = self._timer()
        try:
            result = observer.poolEvent(event)
        except Exception:
            self.log.failure(
                "hook {observer!r} failed on {event}",
                observer=observer,
                event=event.name,
            )
            return
        finally:
            took = self._timer() - began
            if took > SLOW_HOOK:
                self.log.warn(
                    "hook {observer!r} took {took:.2f}s on {event}: the master "
                    "did nothing else meanwhile; hooks must not block (move "
                    "blocking work to a thread with deferToThread)",
                    observer=observer,
                    took=took,
                    event=event.name,
                )
        if isinstance(result, Deferred):
            result.addErrback(self._failedLater, observer, event)

    def _failedLater(
        self, failure: Failure, observer: IPoolObserver, event: PoolEvent
    ) -> None:
        self.log.failure(
            "hook {observer!r} failed on {event} (its Deferred)",
            failure,
            observer=observer,
            event=event.name,
        )
