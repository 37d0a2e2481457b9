"""
The master's signal handlers, shared by every L{PreforkService} in the
process: an application may run several pools (say, two protocols on two
ports), and a signal is meant for all of them.

Handlers are installed once the reactor runs: twistd starts services before
C{reactor.run()}, which installs its own SIGTERM handler over any set
earlier.  Each handler only schedules the work with C{callFromThread},
which is safe from a signal handler and wakes the reactor at once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from twisted.logger import Logger

from preforktwist.common.reactors import IPreforkReactor
from preforktwist.master.logfiles import reopenLogFiles

log = Logger(namespace="preforktwist.signals")


class SignalledPool(Protocol):
    """
    What a signal does to one pre-forked service.
    """

    def reload(self) -> None: ...

    def grow(self) -> None: ...

    def shrink(self) -> None: ...

    def stopNow(self) -> None: ...


class Signals:
    """
    The handlers, and the pools they act on.

    The first SIGINT or SIGTERM stops the reactor, which stops every
    service gracefully, and twistd then exits 0 (the reactor's own handler
    would make it re-kill itself with the signal).  A second one, during
    that stop, kills every pool's workers at once.  SIGUSR2 upgrades the
    whole process (L{upgrade}, set by the first pool).

    @ivar upgrade: what SIGUSR2 does.
    """

    def __init__(self, reactor: IPreforkReactor) -> None:
        self.reactor = reactor
        self.pools: list[SignalledPool] = []
        self.stopping = False
        self.upgrade: Callable[[], None] = lambda: None
        self._previous: dict[int, Any] = {}
        self._actions: dict[int, Callable[[], None]] = {
            signal.SIGINT: self.stopGracefully,
            signal.SIGTERM: self.stopGracefully,
            signal.SIGHUP: lambda: self._each(lambda p: p.reload()),
            signal.SIGTTIN: lambda: self._each(lambda p: p.grow()),
            signal.SIGTTOU: lambda: self._each(lambda p: p.shrink()),
            signal.SIGUSR1: self._reopenLogs,
            signal.SIGUSR2: lambda: self.upgrade(),
        }

    def add(self, pool: SignalledPool) -> None:
        if not self.pools:
            self.stopping = False
            self.reactor.callWhenRunning(self._install)
        self.pools.append(pool)

    def remove(self, pool: SignalledPool) -> None:
        if pool in self.pools:
            self.pools.remove(pool)
        if not self.pools:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self._previous.clear()

    def _install(self) -> None:
        if not self.pools or self._previous:
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.reactor.callFromThread(self._dispatch, signum)

        for signum in self._actions:
            self._previous[signum] = signal.signal(signum, handler)

    def _dispatch(self, signum: int) -> None:
        log.info("{name} received", name=signal.Signals(signum).name)
        self._actions[signum]()

    def _each(self, action: Callable[[SignalledPool], None]) -> None:
        for pool in list(self.pools):
            action(pool)

    def stopGracefully(self) -> None:
        """
        Stop the process gracefully (SIGTERM); if it is stopping already,
        kill every pool's workers at once.
        """
        if not self.stopping:
            self.stopping = True
            log.info("stopping gracefully")
            self.reactor.stop()
        else:
            log.warn("received again: stopping now")
            self._each(lambda p: p.stopNow())

    def _reopenLogs(self) -> None:
        reopened = reopenLogFiles()
        log.info("reopened {n} log files {names}", n=len(reopened), names=reopened)


_byReactor: dict[int, Signals] = {}


def signalsFor(reactor: IPreforkReactor) -> Signals:
    """
    The one L{Signals} of C{reactor}.
    """
    return _byReactor.setdefault(id(reactor), Signals(reactor))
