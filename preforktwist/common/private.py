"""
Every private part of Twisted that preforktwist uses, and why.

Twisted's compatibility policy lets any underscored name change in any
release, so each use lives here, behind a function named for what it does,
and each is guarded by a canary in C{tests/test_private.py} that fails
naming the Twisted change when a name disappears or behaves differently.
Nothing here patches Twisted for the whole process: each function touches
only the object it is given, and L{reservedDescriptor} only for the time
of one call.

The names, by the job that needs them:

  - C{Port._fromListeningDescriptor} (L{portFromDescriptor}): the public
    C{adoptStreamPort} builds Twisted's own port class and starts it at
    once; a worker needs its own subclass (the accept clamp, a UNIX port
    that leaves the shared socket alone) built the same way.
  - C{unix.Port._preexistingSocket} and C{_shouldShutdown}
    (L{takeAdoptedSocket}): C{unix.Port.startListening} C{chmod}s the
    path and C{listen}s again on an adopted socket, and its close
    C{shutdown}s it for every process; a worker's UNIX port starts and
    stops without either.
  - C{tcp._reservedFD} (L{reservedDescriptor}): on EMFILE, Twisted's
    accept loop frees a reserved descriptor and accepts and closes every
    queued connection; a worker's ports leave them queued for a sibling
    instead, during their own accept loop only.
  - C{EPollReactor._add}, C{_reads}, C{_writes}, C{_selectables}
    (L{addExclusiveReader}, L{isReading}): C{EPOLLEXCLUSIVE} can only be
    given when a descriptor is added to the reactor's own epoll instance,
    and C{IReactorFDSet} has no way to pass a flag.
  - C{_poller}, C{_internalReaders} and, again, C{_reads}, C{_writes},
    C{_selectables} (L{forgetRegistrations}, L{forgetWaker}): a reactor
    installed before C{fork()} (C{--preload}) must get an epoll instance
    and a waker of the child's own without touching the parent's.
  - C{twisted.web.http._GenericHTTPChannelProtocol} and its C{_channel}
    (L{httpChannel}): C{Site} and every C{HTTPFactory} build this
    private wrapper around the C{HTTPChannel} (it switches to HTTP/2 after
    ALPN); a retiring worker must reach the channel to close it when idle.
  - C{HTTPChannel._dataBuffer} and C{LineReceiver._buffer}
    (L{unparsedInput}): what a channel has read but not yet parsed, the
    pipelined requests behind the one being answered; a retiring worker
    answers those before it closes the connection, and no public name
    says whether there are any.
  - C{LogPublisher._observers} and C{FileLogObserver._outFile}
    (L{logFileObservers}): twistd's log file is reachable only through the
    global publisher's observers, and logrotate wants it reopened, not
    rotated as twistd's own SIGUSR1 does.
  - C{twisted.protocols.haproxy._wrapper} and the wrapper's
    C{_proxyInfo} (L{HAProxyWrappingFactory}, L{proxyInfo}): the public
    API is an endpoint wrapper only, and the worker serves adopted
    sockets, not endpoints; it connects the user's protocol once the
    header is read.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from socket import socket
from typing import Any

from twisted.internet import tcp
from twisted.protocols.haproxy._wrapper import (
    HAProxyProtocolWrapper,
    HAProxyWrappingFactory,
)

__all__ = [
    "HAProxyProtocolWrapper",
    "HAProxyWrappingFactory",
    "addExclusiveReader",
    "forgetRegistrations",
    "forgetWaker",
    "httpChannel",
    "isReading",
    "logFileObservers",
    "pollerDescriptor",
    "portFromDescriptor",
    "proxyInfo",
    "reservedDescriptor",
    "takeAdoptedSocket",
    "unparsedInput",
    "usesEpoll",
]


def portFromDescriptor(
    portClass: Any, reactor: object, fd: int, family: int, factory: object
) -> Any:
    """
    An instance of C{portClass} (a subclass of C{tcp.Port} or C{unix.Port})
    on a duplicate of the listening socket C{fd}, not yet started: what
    C{reactor.adoptStreamPort} builds, with our class.
    """
    import socket as _socket

    if family == _socket.AF_UNIX:
        return portClass._fromListeningDescriptor(reactor, fd, factory)
    return portClass._fromListeningDescriptor(reactor, fd, family, factory)


def takeAdoptedSocket(port: Any) -> socket:
    """
    The socket a port built by L{portFromDescriptor} was given, taken from
    it as its C{startListening} would, and marked never to be shut down
    (a C{shutdown(2)} on any copy stops every process's accepting).
    """
    skt: socket | None = port._preexistingSocket
    assert skt is not None, "only adopted sockets are supported"
    port._preexistingSocket = None
    port._shouldShutdown = False
    return skt


@contextmanager
def reservedDescriptor(reservation: object) -> Iterator[None]:
    """
    Within this block, Twisted's TCP and UNIX accept loops use
    C{reservation} (with C{available()}, C{reserve()} and the context
    manager protocol) instead of the process's reserved descriptor.
    """
    saved = tcp._reservedFD
    tcp._reservedFD = reservation  # type: ignore[assignment]
    try:
        yield
    finally:
        tcp._reservedFD = saved


_EPOLLEXCLUSIVE: int | None = getattr(select, "EPOLLEXCLUSIVE", None)


def addExclusiveReader(reactor: Any, reader: Any) -> None:
    """
    Register C{reader} for reading in C{reactor} (Twisted's epoll reactor)
    with C{EPOLLIN | EPOLLEXCLUSIVE}, in the reactor's own bookkeeping, so
    that its C{removeReader} undoes it.  The flag is accepted only by
    C{EPOLL_CTL_ADD}: the reader must not be registered for writing.

    @raise OSError: the kernel refused the flag (before Linux 4.5).
    """
    assert _EPOLLEXCLUSIVE is not None
    reactor._add(
        reader,
        reactor._reads,
        reactor._writes,
        reactor._selectables,
        select.EPOLLIN | _EPOLLEXCLUSIVE,
        select.EPOLLOUT,
    )


def isReading(reactor: Any, reader: Any) -> bool:
    """
    Whether C{reader} is registered for reading in C{reactor} (epoll), in
    constant time: C{getReaders()} builds a list of every reader.
    """
    return reader.fileno() in reactor._reads


def forgetRegistrations(reactor: Any) -> None:
    """
    Give an epoll C{reactor}, inherited across C{fork()}, a new and empty
    epoll instance, and forget its registrations without C{epoll_ctl} on
    the old instance, which is the parent's too.
    """
    old = reactor._poller
    reactor._poller = select.epoll()
    old.close()
    reactor._reads.clear()
    reactor._writes.clear()
    reactor._selectables.clear()


def usesEpoll(reactor: object) -> bool:
    """
    Whether C{reactor} polls with an epoll instance of its own.
    """
    return isinstance(getattr(reactor, "_poller", None), select.epoll)


def pollerDescriptor(reactor: object) -> int | None:
    """
    The descriptor of C{reactor}'s poller, if it has one (epoll does; poll
    and select keep their sets in memory).
    """
    poller = getattr(reactor, "_poller", None)
    fileno = getattr(poller, "fileno", None)
    return fileno() if fileno is not None else None


def forgetWaker(reactor: Any) -> None:
    """
    Take C{reactor}'s waker out of its internal readers, so that
    C{installWaker} installs a new one.
    """
    waker = reactor.waker
    if waker is not None:
        reactor._internalReaders.discard(waker)
        reactor.waker = None


def proxyInfo(wrapper: HAProxyProtocolWrapper) -> object | None:
    """
    What Twisted's PROXY wrapper has parsed of the header: C{None} until
    the whole header has been read.
    """
    return wrapper._proxyInfo


def httpChannel(protocol: object) -> object | None:
    """
    The channel inside the protocol a twisted.web C{HTTPFactory} builds (an
    C{HTTPChannel}, or C{H2Connection} after HTTP/2 was negotiated), or
    C{None} if C{protocol} is not that wrapper.  Only called once
    C{twisted.web.http} is imported: a worker serving no web site never
    loads it.
    """
    from twisted.web.http import _GenericHTTPChannelProtocol

    if isinstance(protocol, _GenericHTTPChannelProtocol):
        return protocol._channel
    return None


def unparsedInput(channel: Any) -> int:
    """
    How many bytes an C{HTTPChannel} has read and not yet parsed: pipelined
    requests held back while one is answered, or the start of the next.
    """
    held = sum(len(chunk) for chunk in channel._dataBuffer)
    return held + len(channel._buffer)


def logFileObservers(publisher: Any) -> list[tuple[object, object]]:
    """
    Each observer of C{publisher} (a L{twisted.logger.LogPublisher}) with
    the file a L{twisted.logger.FileLogObserver} writes to (L{None} for
    other observers).
    """
    return [
        (observer, getattr(observer, "_outFile", None))
        for observer in getattr(publisher, "_observers", [])
    ]
