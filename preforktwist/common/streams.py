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


class Spare:
    """
    A second descriptor for an adopted stream socket, to read what its
    peer sent last when Twisted has given up on the connection.

    Twisted drops a connection whose write fails (C{EPIPE}: the peer has
    closed) at once, without reading what the peer wrote before it closed:
    the reactor had seen the socket writable, not readable, when it polled,
    and the peer wrote its last words and closed in between.  Those words
    are still in the socket's receive queue, and this duplicate can read
    them before the connection's end is acted upon.
    """

    def __init__(self, fd: int) -> None:
        self._sock: socket.socket | None = socket.socket(fileno=os.dup(fd))
        self._sock.setblocking(False)

    def readLeft(self) -> bytes:
        """
        What is left in the receive queue, then close this descriptor (so
        that the peer sees EOF once the reactor's is closed too).
        """
        sock, self._sock = self._sock, None
        if sock is None:
            return b""
        chunks = []
        try:
            while True:
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    # ECONNRESET once the queue is empty: nothing more.
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            sock.close()
        return b"".join(chunks)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def adoptStreamWithSpare(
    reactor: IReactorSocket, fd: int, protocol: P
) -> tuple[P, Spare]:
    """
    L{adoptStream}, keeping a L{Spare} descriptor for the protocol to read
    the peer's last words with if the connection ends on a write error.
    The protocol must call L{Spare.readLeft} or L{Spare.close} in its
    C{connectionLost}, or the peer never sees EOF.
    """
    spare = Spare(fd)
    try:
        adoptStream(reactor, fd, protocol)
    except BaseException:
        spare.close()
        raise
    return protocol, spare
