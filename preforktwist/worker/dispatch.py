"""
The worker's reactor: Twisted's epoll reactor with a cheaper dispatch.

For every ready descriptor, C{EPollReactor.doPoll} calls the selectable
through C{log.callWithLogger}, which asks it for its C{logPrefix} and pushes
a legacy logging context (a dictionary copied per call) so that old-style
C{log.msg} calls made meanwhile carry a C{system} field.  A connection
served over C{Connection: close} is two or three such dispatches, each a
few microseconds of pure Python.  In a worker nothing reads that field:
the worker's log observer writes events without their system (the master
names the worker on every line it relays).  So the worker's reactor
dispatches each event directly.  What C{callWithLogger} also does, log an
exception that escapes the dispatch and go on with the other events, this
does too; how an exception in C{doRead} or C{doWrite} is logged and turned
into a lost connection is the epoll reactor's own.

With the transports that send at once (L{preforktwist.worker.accepting}),
measured on 2026-12-06 by C{python bench/cpu_per_conn.py --rounds 3
--duration 4 --servers single,pt-w2-m0,naive-w2 --pt-rev fa3b71c --pt-rev
124b68f} (the two, and without them): 50.3 against 56.6 ms of the workers'
CPU per 1,000 connections at C{-w 2}, below the naive pre-fork's 53.3.

Installed in place of C{twisted.internet.epollreactor} only, when that is
the master's reactor; any other reactor is installed as it is.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log


class WorkerEPollReactor(EPollReactor):
    """
    An epoll reactor that calls each ready selectable without a logging
    context around it.
    """

    def doPoll(self, timeout: float | None) -> None:
        try:
            # At most one event per registered descriptor, as Twisted does.
            events = self._poller.poll(
                -1 if timeout is None else timeout, len(self._selectables)
            )
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                dispatch(selectable, fd, event)  # type: ignore[no-untyped-call]
            except KeyboardInterrupt:
                raise
            except BaseException:
                # As callWithLogger: say what went wrong, serve the rest.
                log.err()

    doIteration = doPoll


def install() -> Any:
    """
    Install a L{WorkerEPollReactor} as the global reactor.
    """
    reactor = WorkerEPollReactor()
    from twisted.internet.main import installReactor

    installReactor(reactor)
    return reactor
