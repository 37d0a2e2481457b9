"""
A reactor installed before C{fork()}, made the child's own.

With C{--preload} the fork server imports the user's code, and user code
does C{from twisted.internet import reactor} at import: that installs a
reactor in the template, with a kernel object and two descriptors that
every forked worker would otherwise share.  An epoll instance belongs to
the open file description, not to the process, so siblings sharing one
would each see (and steal) the others' readiness events and change each
other's registrations; a shared waker pipe would let one worker's
C{callFromThread} wake another.  So, as gevent and libev do after a fork,
the child replaces both before anything runs: a new poller, a new waker,
and whatever was registered in the old poller registered again in the new
one.  What else the reactor holds is plain Python state and is the
child's own copy: delayed calls (C{callLater} at import) fire in each
worker, a thread pool made at import (C{getThreadPool()}) starts its
threads in each worker when its reactor runs, as it would have in the
template, which never runs its reactor.
"""

from __future__ import annotations

import os
from typing import Any

from preforktwist.common.private import (
    forgetRegistrations,
    forgetWaker,
    pollerDescriptor,
    usesEpoll,
)


def renewReactor(reactor: Any) -> set[int]:
    """
    Give C{reactor}, inherited across C{fork()} and never run, a poller and
    a waker of this process's own, and register again what was registered.
    The old descriptors are closed here; the kernel objects they named stay
    the parent's.

    Only the old poller and waker are let go: the parent is never
    touched (no C{epoll_ctl} on the shared instance, which would change the
    parent's registrations too).

    @return: the descriptors the reactor now owns (poller and waker), which
        the caller must keep open.
    """
    assert not reactor.running, "a running reactor cannot be renewed"
    readers = [r for r in reactor.getReaders() if r is not reactor.waker]
    writers = list(reactor.getWriters())
    epoll = usesEpoll(reactor)
    if epoll:
        forgetRegistrations(reactor)
    else:
        # poll() and select() keep their sets in this process's memory:
        # only the waker is shared.  Take it out of their bookkeeping.
        _removeWaker(reactor)
    waker = reactor.waker
    forgetWaker(reactor)
    if waker is not None:
        _closeWaker(waker)
    reactor.installWaker()
    if epoll:
        for reader in readers:
            reactor.addReader(reader)
        for writer in writers:
            reactor.addWriter(writer)
    return reactorFDs(reactor)


def reactorFDs(reactor: object) -> set[int]:
    """
    The descriptors of a reactor's poller (epoll only: poll and select keep
    no descriptor) and of its waker pipe.
    """
    fds = set()
    poller = pollerDescriptor(reactor)
    if poller is not None:
        fds.add(poller)
    waker = getattr(reactor, "waker", None)
    if waker is not None:
        fds |= _wakerFDs(waker)
    return fds


def _removeWaker(reactor: Any) -> None:
    waker = reactor.waker
    if waker is None:
        return
    try:
        reactor.removeReader(waker)
    except (OSError, KeyError, ValueError):
        pass


def _closeWaker(waker: Any) -> None:
    for name in ("i", "o"):
        fd = getattr(waker, name, None)
        if isinstance(fd, int):
            try:
                os.close(fd)
            except OSError:
                pass
    for name in ("i", "o"):
        if hasattr(waker, name):
            delattr(waker, name)


def _wakerFDs(waker: Any) -> set[int]:
    return {
        fd
        for fd in (getattr(waker, "i", None), getattr(waker, "o", None))
        if isinstance(fd, int)
    }
