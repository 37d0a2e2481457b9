"""
Taking over a raw stream socket's descriptor with a reactor.

The control channel (both its ends) and a forked worker's stdout and
stderr arrive as bare descriptors, inherited or received over
C{SCM_RIGHTS}.  The reactor adopts a duplicate of the descriptor, so the
original must be closed, or the peer would never see EOF.
"""

from __future__ import annotations

import os
import socket
from typing import TypeVar

from twisted.internet.interfaces import IReactorSocket
from twisted.internet.protocol import Protocol, ServerFactory

P = TypeVar("P", bound=Protocol)


def adoptStream(reactor: IReactorSocket, fd: int, protocol: P) -> P:
    """
    Connect C{protocol} to the C{AF_UNIX} stream socket C{fd}, and close
    C{fd}: from here on the reactor's duplicate is the only one.

    @return: C{protocol}, connected.
    """
    factory: ServerFactory = ServerFactory()
    factory.protocol = lambda: protocol
    os.set_blocking(fd, False)
    try:
        reactor.adoptStreamConnection(fd, socket.AF_UNIX, factory)
    finally:
        os.close(fd)
    return protocol
