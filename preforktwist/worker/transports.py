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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import tcp, unix
from twisted.python.failure import Failure

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


class CountedTCPServer(_CountsClose, tcp.Server):
    pass


class CountedUNIXServer(_CountsClose, unix.Server):
    pass


class TimedTCPServer(_WaitsForFirstByte, tcp.Server):
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
