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

It also dispatches a write event without asking epoll for it
(L{WorkerEPollReactor.dispatchWritableSoon}), at the end of the turn in
which a transport asked: a connection closed with nothing left to send
would otherwise register for writing, wait for the reactor's next turn to
hear that its socket is writable (it nearly always is), and unregister,
all to learn nothing.  Measured on 2026-12-06 by C{python
bench/cpu_per_conn.py --rounds 3 --duration 4 --servers
single,pt-w2-m0,pt-w8-m0 --perf --pt-rev a844ed9} (after, and before):
9.4 system calls per connection instead of 11.4, 2 C{epoll_ctl} instead
of 4, and 48.2 against 55.4 ms of the workers' CPU per 1,000 connections
at C{-w 2} (one Twisted process: 45.0).

Installed in place of C{twisted.internet.epollreactor} only, when that is
the master's reactor; any other reactor is installed as it is.
"""

from __future__ import annotations

import errno
from select import EPOLLOUT
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log


class WorkerEPollReactor(EPollReactor):
    """
    An epoll reactor that calls each ready selectable without a logging
    context around it, and can tell a selectable it is writable without
    asking epoll.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._writableSoon: list[Any] = []

    def dispatchWritableSoon(self, selectable: Any) -> None:
        """
        Call C{selectable}'s C{doWrite} at the end of this turn of the
        reactor (or at the start of the next, if asked from outside the
        dispatch of events: from a timer, say), as if epoll had reported it
        writable, and handle what it returns as such an event's.  For a
        selectable whose descriptor can take what it has to write, which
        the caller knows; one that cannot take it all must register for
        writing from its C{doWrite}.  One closed meanwhile is left alone.
        """
        self._writableSoon.append(selectable)

    def _dispatchWritable(self) -> None:
        dispatch = self._doReadOrWrite
        # A selectable's doWrite may close another one: serve those too.
        while self._writableSoon:
            due, self._writableSoon = self._writableSoon, []
            for i, selectable in enumerate(due):
                fd = selectable.fileno()
                if fd == -1 or not getattr(selectable, "connected", True):
                    continue
                try:
                    dispatch(selectable, fd, EPOLLOUT)  # type: ignore[no-untyped-call]
                except KeyboardInterrupt:
                    # The rest are still due: unlike epoll's events, nothing
                    # would report them again.
                    self._writableSoon[:0] = due[i + 1 :]
                    raise
                except BaseException:
                    log.err()

    def doPoll(self, timeout: float | None) -> None:
        if self._writableSoon:
            # Asked for between two polls (from a timer, another thread's
            # call): served now, and the poll must not then wait.
            self._dispatchWritable()
            timeout = 0
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
        # The same guarded call as _dispatchWritable's, written out: this
        # loop runs for every event, and a shared helper would cost a call
        # (or a generator) per event.
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
        if self._writableSoon:
            self._dispatchWritable()

    doIteration = doPoll


def install() -> Any:
    """
    Install a L{WorkerEPollReactor} as the global reactor.
    """
    reactor = WorkerEPollReactor()
    from twisted.internet.main import installReactor

    installReactor(reactor)
    return reactor
