"""
The reactor as the interfaces this package uses of it.

Twisted types its global reactor as a make-believe interface that extends
the commonly implemented ones (C{twisted.internet._IReactorCommon}); a
reactor passed around our code needs a few more (sockets adopted from fds,
calls from signal handlers), so it is typed here the same way, once, for
the master and the worker alike.  L{preforkReactor} is the one place where a
reactor object is taken to be one.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorProcess,
    IReactorSocket,
    IReactorTime,
)


class IPreforkReactor(
    IReactorCore,
    IReactorTime,
    IReactorFDSet,
    IReactorProcess,
    IReactorSocket,
    IReactorFromThreads,
):
    """
    A make-believe interface: what the master and the workers call on their
    reactor (Twisted's epoll, poll and select reactors provide all of it).
    No reactor declares it; it is for annotations and the type checker.
    """


def preforkReactor(reactor: object | None = None) -> IPreforkReactor:
    """
    C{reactor}, or the global reactor when C{None}, typed as
    L{IPreforkReactor}.  No check is made at run time: test doubles such as
    C{MemoryReactorClock} provide only the parts the code under test calls.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = installed
    return cast("IPreforkReactor", reactor)
