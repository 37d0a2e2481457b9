"""
How a worker's ports wait on the shared listening sockets.

Registered plainly in epoll, each connection wakes every idle worker (the
thundering herd: CPU per connection grows with the pool).  On Linux's
epoll reactor the ports register their descriptor with C{EPOLLIN |
EPOLLEXCLUSIVE} instead, so the kernel wakes one waiting worker.  The flag
is accepted only when a descriptor is added (C{EPOLL_CTL_MOD} gives
C{EINVAL}), which suits a listening port: it only ever reads, so pausing
is a delete and resuming an add.  It must be the reactor's own epoll: an
inner epoll holding the socket exclusively, itself polled by the
reactor's, wakes every worker again.  Exclusive wake-ups favour the worker
that has waited longest in the socket's wait queue; re-adding the
registration every C{--accept-reorder} accepts sends the worker to the
back of that queue, as nginx does.  Any other reactor (poll, select,
non-Linux), or C{--accept-wakeup plain}, gets Twisted's plain
registration.
"""

from __future__ import annotations

import select
from typing import Any

from twisted.logger import Logger

from preforktwist.common.private import addExclusiveReader, isReading
from preforktwist.protocol.config import ACCEPT_WAKEUPS, DEFAULT_ACCEPT_REORDER

_log = Logger(namespace="preforktwist.accepting")

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll: not Linux
    EPollReactor = None  # type: ignore[assignment,misc]


def exclusiveWakeups(reactor: object, wakeup: str = ACCEPT_WAKEUPS[0]) -> bool:
    """
    Whether ports adopted into C{reactor} register exclusively: when asked
    to, and only in Twisted's own epoll reactor, whose registrations we
    know how to make.
    """
    return (
        wakeup == "exclusive"
        and getattr(select, "EPOLLEXCLUSIVE", None) is not None
        and EPollReactor is not None
        and isinstance(reactor, EPollReactor)
    )


class ExclusiveReading:
    """
    A listening port's registration for reading: exclusive where
    L{exclusiveWakeups} allows it, re-added every C{reorderEvery} accepts.
    """

    reactor: Any
    #: Register exclusively (decided when the port is adopted).
    exclusive: bool = False
    #: Re-add the exclusive registration after this many accepts; 0 never.
    reorderEvery: int = DEFAULT_ACCEPT_REORDER
    #: Accepts since the registration was last added.
    _sinceAdded: int = 0

    def startReading(self) -> None:
        if not self.exclusive:
            super().startReading()  # type: ignore[misc]
            return
        reactor = self.reactor
        if isReading(reactor, self):
            return
        try:
            addExclusiveReader(reactor, self)
        except OSError as e:
            # A kernel older than 4.5 says EINVAL: wait the plain way.
            _log.info(
                "exclusive wake-ups refused ({error}); using plain epoll", error=e
            )
            self.exclusive = False
            super().startReading()  # type: ignore[misc]
            return
        self._sinceAdded = 0

    def reorder(self, accepted: int) -> None:
        """
        After every C{reorderEvery} accepts, delete and re-add the
        registration: the kernel wakes exclusive waiters in queue order, so
        this hands the next connections to the siblings.
        """
        if not (self.exclusive and accepted):
            return
        self._sinceAdded += accepted
        if (
            self.reorderEvery
            and self._sinceAdded >= self.reorderEvery
            and isReading(self.reactor, self)
        ):
            self.reactor.removeReader(self)
            self.startReading()
