"""
The worker's server transports: Twisted's own TCP and UNIX transports,
listed by the worker's budget while they are open (a retiring worker tells
their protocols, L{preforktwist.worker.retiring}), telling it when they
close, sending what a read made them write in the same dispatch as the
read, and, with C{--first-byte-timeout}, aborting a connection whose
client stays silent.

A protocol sees Twisted's transport and nothing else: the counting happens
after Twisted's C{connectionLost} has run, the writes are sent by Twisted's
own C{doWrite}, and the timeout is kept below TLS and the PROXY header, so
that the first byte is whatever the client sends first (a handshake, a
header).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from twisted.internet import abstract, tcp, unix
from twisted.python.failure import Failure

from preforktwist.common.private import disconnectAfterWrite

if TYPE_CHECKING:
    from preforktwist.worker.budget import AcceptBudget


class _CountsClose:
    """
    A server transport that is listed among its port's budget's open
    connections until it closes, and tells the budget when it does: the
    bookkeeping at the transport costs nothing per byte, unlike wrapping
    every protocol, and the protocol sees Twisted's transport alone.
    """

    server: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server.budget.connections.opened(self)

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)  # type: ignore[misc]
        finally:
            budget: AcceptBudget = self.server.budget
            budget.connections.closed(self)
            budget.recordClosed()


class _WaitsForFirstByte(_CountsClose):
    """
    A counted transport that aborts its connection if nothing was read
    within the budget's C{firstByteTimeout} of the accept.  Only transports
    of a worker with a timeout are of this class: the others pay nothing.
    """

    reactor: Any
    _silence: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        timeout = self.server.budget.firstByteTimeout
        self._silence = self.reactor.callLater(timeout, self._silent)

    def doRead(self) -> Any:
        if self._silence is not None:
            self._stopSilenceTimer()
        return super().doRead()  # type: ignore[misc]

    def _stopSilenceTimer(self) -> None:
        silence, self._silence = self._silence, None
        if silence is not None and silence.active():
            silence.cancel()

    def _silent(self) -> None:
        self._silence = None
        self.server.budget.firstByteTimeouts += 1
        self.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:
        # Closed before its first byte, within the timeout.
        self._stopSilenceTimer()
        super().connectionLost(reason)


_OFF, _HELD, _INLINE, _ON = "off", "held", "inline", "on"


class _WritesAfterRead:
    """
    A transport that sends what a read made its protocol write within the
    dispatch of that read, as the reactor does when one event reports the
    socket readable and writable: Twisted's own C{doWrite} runs once
    C{doRead} is done, with its producer calls and its close, and only
    what the kernel does not take waits for the reactor, registered for
    writing as usual.  Twisted would register at the first write and send
    on its next turn, which costs two C{epoll_ctl} calls and one more event
    per response; the socket is nearly always writable at once.

    The registration for writing is in one of four states: off; held (a
    write during C{doRead}, not yet registered); inline (our C{doWrite} is
    running, as if registered); on (registered with the reactor).
    """

    reactor: Any
    connected: int
    _writing = _OFF
    _inRead = False

    def startWriting(self) -> None:
        state = self._writing
        if state is _OFF and self._inRead:
            self._writing = _HELD
        elif state is _OFF or state is _ON:
            self._writing = _ON
            abstract.FileDescriptor.startWriting(self)  # type: ignore[arg-type]

    def stopWriting(self) -> None:
        state, self._writing = self._writing, _OFF
        if state is _ON or state is _OFF:
            abstract.FileDescriptor.stopWriting(self)  # type: ignore[arg-type]

    def doRead(self) -> Any:
        self._inRead = True
        try:
            why = super().doRead()  # type: ignore[misc]
        finally:
            self._inRead = False
        if self._writing is not _HELD:
            return why
        if why or not self.connected:
            # Registered as Twisted registers at a write; the reactor
            # then ends the connection as it would.
            self._writing = _OFF
            self.startWriting()
            return why
        self._writing = _INLINE
        why = self.doWrite()  # type: ignore[attr-defined]
        if why:
            disconnectAfterWrite(self.reactor, self, why)
        elif self._writing is _INLINE:
            # The kernel did not take it all: wait for the reactor.
            self._writing = _OFF
            self.startWriting()
        return None


@cache
def serverTransport(
    unixFamily: bool, firstByteTimeout: bool, writesAfterRead: bool = True
) -> type[Any]:
    """
    The transport class a port builds for each connection it accepts:
    Twisted's TCP or UNIX server transport, counted, with the first-byte
    timer if C{firstByteTimeout}, and sending after its reads if
    C{writesAfterRead} (the reactor supports it:
    L{preforktwist.common.private.canDisconnectAfterWrite}).
    """
    bases: tuple[type[Any], ...] = (
        _WaitsForFirstByte if firstByteTimeout else _CountsClose,
        unix.Server if unixFamily else tcp.Server,
    )
    if writesAfterRead:
        bases = (_WritesAfterRead, *bases)
    name = "".join(
        [
            "Timed" if firstByteTimeout else "Counted",
            "UNIX" if unixFamily else "TCP",
            "Server",
        ]
    )
    return type(name, bases, {})
