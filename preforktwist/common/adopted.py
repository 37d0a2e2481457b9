"""
Serving a listening socket that another process made (a hot upgrade hands
the status and control sockets over), with Twisted's own ports, and
without the parts of a port that would act on the socket for every
process: a TCP port adopted by Twisted never shuts the socket down; a UNIX
port here neither C{chmod}s nor C{listen}s again when it starts, nor shuts
down or unlinks when it stops.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure

from preforktwist.common.private import portFromDescriptor, takeAdoptedSocket
from preforktwist.common.reactors import IPreforkReactor


class AdoptedUNIXPort(unix.Port):
    """
    A UNIX port on a socket made elsewhere, which it leaves as it found it.
    """

    def startListening(self) -> None:
        skt = takeAdoptedSocket(self)
        assert self.factory is not None
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        # Skip unix.Port's unlink of the path: it is not this port's.
        tcp.Port.connectionLost(self, reason)


def adoptListeningPort(
    reactor: IPreforkReactor, fd: int, factory: ServerFactory[Any]
) -> IListeningPort:
    """
    Serve C{factory} on the listening socket C{fd}, and close C{fd}: the
    port works on a duplicate.
    """
    try:
        with socket.socket(fileno=os.dup(fd)) as probe:
            family = probe.family
        if family == socket.AF_UNIX:
            port: Any = portFromDescriptor(
                AdoptedUNIXPort, reactor, fd, family, factory
            )
            port.startListening()
        else:
            port = reactor.adoptStreamPort(fd, family, factory)
    finally:
        os.close(fd)
    result: IListeningPort = port
    return result
