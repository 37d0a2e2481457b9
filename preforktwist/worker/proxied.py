"""
PROXY protocol (v1 and v2) in front of the user's protocol, for workers
behind HAProxy or any load balancer that sends it.

The header is parsed by Twisted's own wrapper (C{twisted.protocols.haproxy})
with one change: Twisted connects the user's protocol at once, so in its
C{connectionMade} C{transport.getPeer()} is still the proxy's address.  Here
the user's protocol is connected only once the header has been read, so
the real client address is there from its first callback.  A client that
sends no header within C{HEADER_TIMEOUT} seconds, or a bad one, is
disconnected before the user's code ever sees it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocolFactory, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from preforktwist.common.private import (
    HAProxyProtocolWrapper,
    HAProxyWrappingFactory,
    proxyInfo,
)

#: Seconds a client may take to send its PROXY header.
HEADER_TIMEOUT = 10.0


class _HeaderFirst(HAProxyProtocolWrapper):
    """
    Twisted's PROXY wrapper, connecting the wrapped protocol only after the
    header.
    """

    _connected = False
    _timeout: Any = None

    @property
    def waitingForHeader(self) -> bool:
        """
        The header is not read yet: the wrapped protocol is not connected.
        """
        return not self._connected

    def makeConnection(self, transport: ITransport) -> None:
        # ProtocolWrapper.makeConnection without connecting the wrapped
        # protocol yet.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        from twisted.internet import reactor

        self._timeout = reactor.callLater(HEADER_TIMEOUT, self.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        if self._connected:
            self.wrappedProtocol.dataReceived(data)
            return
        # Let Twisted's parser read the header, holding back what follows.
        held: list[bytes] = []
        wrapped = self.wrappedProtocol
        self.wrappedProtocol = _Hold(held)
        try:
            super().dataReceived(data)
        finally:
            self.wrappedProtocol = wrapped
        if proxyInfo(self) is None:
            return
        self._connected = True
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        wrapped.makeConnection(self)  # type: ignore[arg-type]
        for chunk in held:
            wrapped.dataReceived(chunk)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._connected:
            HAProxyProtocolWrapper.connectionLost(self, reason)
        else:
            self.factory.unregisterProtocol(self)


class _Hold(Protocol):
    def __init__(self, held: list[bytes]) -> None:
        self.held = held

    def dataReceived(self, data: bytes) -> None:
        self.held.append(data)


class ProxyHeaderFactory(HAProxyWrappingFactory):
    """
    Wrap a factory so that each connection starts with a PROXY header.
    """

    protocol = _HeaderFirst  # type: ignore[assignment]

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]


def waitsForHeader(protocol: object) -> bool:
    """
    Whether C{protocol} is a PROXY header parser that has not yet read the
    header, and so not yet connected the protocol it wraps.
    """
    return isinstance(protocol, _HeaderFirst) and protocol.waitingForHeader
