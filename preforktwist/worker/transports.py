"""
The worker's server transports: Twisted's own TCP and UNIX transports,
listed by the worker's budget while they are open (a retiring worker tells
their protocols, L{preforktwist.worker.retiring}), telling it when they
close, and, with C{--first-byte-timeout}, aborting a connection whose
client stays silent.

A protocol sees Twisted's transport and nothing else: the counting happens
after Twisted's C{connectionLost} has run, and the timeout is kept below
TLS and the PROXY header, so that the first byte is whatever the client
sends first (a handshake, a header).

A TCP transport also sends a write at once when it would be the next bytes
out anyway (L{sendsNow}: nothing buffered, no producer, both sides open,
no TLS), instead of buffering it and registering for writing to send it on
the reactor's next turn: the same bytes in the same order, without two
C{epoll_ctl} calls and a dispatch per response.  Whatever the kernel does
not take, or everything on an error, is handed to Twisted's own C{write},
which sends it, or reports the error, as it always would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import tcp, unix
from twisted.python.failure import Failure

from preforktwist.common.private import sendsNow

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


class _SendsAtOnce:
    """
    A TCP transport whose writes leave at once when they are next in line.
    """

    socket: Any

    def write(self, data: bytes) -> None:
        if type(data) is bytes and sendsNow(self):
            try:
                sent = self.socket.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)  # type: ignore[misc]

    def writeSequence(self, iovec: Any) -> None:
        if sendsNow(self) and all(type(chunk) is bytes for chunk in iovec):
            self.write(b"".join(iovec))
            return
        super().writeSequence(iovec)  # type: ignore[misc]


class CountedTCPServer(_CountsClose, _SendsAtOnce, tcp.Server):
    pass


class CountedUNIXServer(_CountsClose, unix.Server):
    pass


class TimedTCPServer(_WaitsForFirstByte, _SendsAtOnce, tcp.Server):
    pass


class TimedUNIXServer(_WaitsForFirstByte, unix.Server):
    pass


def serverTransport(unixFamily: bool, firstByteTimeout: bool) -> type[Any]:
    """
    The transport class a port builds for each connection it accepts.
    """
    if unixFamily:
        return TimedUNIXServer if firstByteTimeout else CountedUNIXServer
    return TimedTCPServer if firstByteTimeout else CountedTCPServer
