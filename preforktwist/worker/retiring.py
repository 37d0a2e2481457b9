"""
Telling the application that its worker stops accepting for good
(L{IRetiring}): the factory once, then the protocol of every open
connection, and, while a stopping worker serves what was queued, each
connection accepted after that, right after its C{connectionMade}.

The worker knows its open connections through its transports, which list
themselves in L{OpenConnections} (L{preforktwist.worker.transports}): a
protocol sees Twisted's transport and nothing else.  A protocol is found
inside the layers the worker adds (TLS, the PROXY header) and inside any
C{ProtocolWrapper}; twisted.web's HTTP/1 channels that do not provide
L{IRetiring} themselves are retired by L{RetiringChannel}.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.protocols.policies import ProtocolWrapper

from preforktwist.common.logs import NamedLogger
from preforktwist.common.private import httpChannel
from preforktwist.interfaces import IRetiring
from preforktwist.worker.keepalive import RetiringChannel
from preforktwist.worker.proxied import waitsForHeader


class OpenConnections:
    """
    A worker's open server transports.

    @ivar transports: every transport accepted and not yet closed.
    @ivar retiring: the worker has stopped accepting for good; transports
        opened from now on (while a stop drains the queue) are kept in
        L{fresh} too, to be told.
    """

    def __init__(self) -> None:
        self.transports: set[Any] = set()
        self.retiring = False
        self.fresh: list[Any] = []

    def opened(self, transport: Any) -> None:
        self.transports.add(transport)
        if self.retiring:
            self.fresh.append(transport)

    def closed(self, transport: Any) -> None:
        self.transports.discard(transport)


def layers(protocol: object) -> Iterator[object]:
    """
    C{protocol}, then the protocols it wraps, outermost first: inside a
    C{ProtocolWrapper} (TLS, the PROXY header once it is read, a user's
    policy wrapper) and inside twisted.web's HTTP protocol.
    """
    while protocol is not None:
        yield protocol
        if waitsForHeader(protocol):
            # The user's protocol is not connected before the header.
            return
        if isinstance(protocol, ProtocolWrapper):
            protocol = protocol.wrappedProtocol
        elif "twisted.web.http" in sys.modules:
            protocol = httpChannel(protocol)
        else:
            return


class Retirement:
    """
    Tells a worker's factory and open connections that it retires.

    @ivar begun: L{begin} was called.
    """

    log = NamedLogger("preforktwist.serving.Retirement")

    def __init__(
        self, factory: object, connections: OpenConnections, clock: IReactorTime
    ) -> None:
        self.factory = factory
        self.connections = connections
        self.clock = clock
        self.begun = False

    def begin(self) -> None:
        """
        Tell the factory, then every open connection; once only.
        """
        if self.begun:
            return
        self.begun = True
        self.connections.retiring = True
        self.connections.fresh.clear()
        if IRetiring.providedBy(self.factory):
            self._call(self.factory)
        for transport in list(self.connections.transports):
            self._tell(transport)

    def tellFresh(self) -> None:
        """
        Tell the connections accepted since L{begin}, or since last called.
        """
        fresh, self.connections.fresh = self.connections.fresh, []
        for transport in fresh:
            if transport in self.connections.transports:
                self._tell(transport)

    def _tell(self, transport: Any) -> None:
        found = None
        for layer in layers(transport.protocol):
            if IRetiring.providedBy(layer):
                self._call(layer)
                return
            found = layer
        http = sys.modules.get("twisted.web.http")
        if http is not None and isinstance(found, http.HTTPChannel):
            RetiringChannel(found, transport, self.clock).start()

    def _call(self, retiring: Any) -> None:
        try:
            retiring.retiring()
        except Exception:
            self.log.failure("{what}.retiring() failed", what=retiring)
