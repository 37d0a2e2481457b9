"""
Writes sent at the end of the reactor's turn (L{preforktwist.worker.
endofturn}), in process with a fake reactor and a real socket pair: the
bytes leave when the turn ends, without a registration for writing unless
the kernel cannot take them; an abort in the turn drops them, as Twisted's
buffer would be dropped; a close ends the connection as Twisted's does.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from preforktwist.worker.endofturn import WritesAtEndOfTurn


class _Server(WritesAtEndOfTurn, tcp.Server):
    pass


class _Recorder(Protocol):
    def __init__(self) -> None:
        self.lost: list[Failure] = []

    def connectionLost(self, reason: Failure = ...) -> None:  # type: ignore[assignment]
        self.lost.append(reason)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def serve(ours: socket.socket) -> tuple[Any, MemoryReactorClock, _Recorder]:
    reactor = MemoryReactorClock()
    port = tcp.Port(0, Factory(), reactor=reactor)
    port._realPortNumber = 1
    protocol = _Recorder()
    transport = _Server(ours, protocol, ("127.0.0.1", 1), port, 1, reactor)
    protocol.makeConnection(transport)
    return transport, reactor, protocol


def test_sentAtTheEndOfTheTurnWithoutRegistering(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    transport, reactor, _ = serve(pair[0])
    transport.write(b"hello ")
    transport.writeSequence([b"wor", b"ld"])
    assert transport not in reactor.getWriters()
    reactor.advance(0)
    assert pair[1].recv(100) == b"hello world"
    assert transport not in reactor.getWriters()


def test_abortedInTheTurnSendsNothing(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    transport, reactor, protocol = serve(pair[0])
    transport.write(b"never")
    transport.abortConnection()
    reactor.advance(0)
    reactor.advance(0)
    assert protocol.lost and protocol.lost[0].check(ConnectionAborted)
    pair[1].setblocking(False)
    try:
        data = pair[1].recv(100)
    except (BlockingIOError, ConnectionResetError):
        data = b""
    assert data == b""


def test_whatTheKernelCannotTakeWaitsForTheReactor(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    transport, reactor, _ = serve(pair[0])
    big = b"x" * (8 << 20)
    transport.write(big)
    reactor.advance(0)
    assert transport in reactor.getWriters()
    received = 0
    while received < len(big):
        received += len(pair[1].recv(1 << 20))
        transport.doWrite()
    assert transport not in reactor.getWriters()


def test_closedAtTheEndOfTheTurn(pair: tuple[socket.socket, socket.socket]) -> None:
    transport, reactor, protocol = serve(pair[0])
    transport.write(b"bye")
    transport.loseConnection()
    assert not protocol.lost
    reactor.advance(0)
    assert protocol.lost and protocol.lost[0].check(ConnectionDone)
    assert pair[1].recv(100) == b"bye"
    assert pair[1].recv(100) == b""
