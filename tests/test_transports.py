"""
The worker's server transports against Twisted's own, in one process: the
same protocol on a real TCP connection, once over C{tcp.Server} and once
over the class a worker's port builds, on the epoll and the poll reactor,
must see the same calls, send the same bytes and register for writing as
often, and the worker's must tell its budget of each close.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.interfaces import IHalfCloseableProtocol, IPullProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from preforktwist.worker.transports import serverTransport

from .test_private import closeReactor

TIMEOUT = 10.0


def _newReactor(name: str) -> Any:
    if name == "epoll":
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()
    from twisted.internet.pollreactor import PollReactor

    return PollReactor()


class _Connections:
    """
    What a worker's budget keeps of its open connections, as a port's
    transports reach it (C{server.budget}).
    """

    def __init__(self) -> None:
        self.open: set[object] = set()

    def opened(self, transport: object) -> None:
        self.open.add(transport)

    def closed(self, transport: object) -> None:
        self.open.discard(transport)


class _Budget:
    def __init__(self) -> None:
        self.connections = _Connections()
        self.closed = 0

    def recordClosed(self) -> None:
        self.closed += 1


class _Port:
    """
    The little of a port that a server transport reads.
    """

    _realPortNumber = 0

    def __init__(self) -> None:
        self.budget = _Budget()


class Recorder(Protocol):
    """
    A protocol that records its calls, and answers each line it reads by
    running the action the test gave it.
    """

    def __init__(self, action: Callable[[Recorder, bytes], None]) -> None:
        self.action = action
        self.calls: list[Any] = []

    def dataReceived(self, data: bytes) -> None:
        self.calls.append(["dataReceived", len(data)])
        self.action(self, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.calls.append(["connectionLost", type(reason.value).__name__])


@implementer(IHalfCloseableProtocol)
class HalfCloseable(Recorder):
    def readConnectionLost(self) -> None:
        self.calls.append(["readConnectionLost"])

    def writeConnectionLost(self) -> None:
        self.calls.append(["writeConnectionLost"])


@implementer(IPullProducer)
class Pull:
    """
    A pull producer writing C{chunks} chunks of C{size} bytes, one each
    time it is asked, then unregistering and closing.
    """

    def __init__(self, protocol: Recorder, chunks: int, size: int) -> None:
        self.protocol, self.left, self.size = protocol, chunks, size

    def resumeProducing(self) -> None:
        self.protocol.calls.append(["resumeProducing"])
        transport: Any = self.protocol.transport
        if self.left == 0:
            transport.unregisterProducer()
            transport.loseConnection()
            return
        self.left -= 1
        transport.write(b"p" * self.size)

    def stopProducing(self) -> None:
        self.protocol.calls.append(["stopProducing"])


class World:
    """
    One reactor, one connected client socket, and a server transport of
    class C{transportClass} around the accepted socket.
    """

    def __init__(
        self, reactorName: str, transportClass: type[Any], protocol: Recorder
    ) -> None:
        self.reactor = _newReactor(reactorName)
        self.writerRegistrations = 0
        addWriter = self.reactor.addWriter

        def countingAddWriter(writer: Any) -> None:
            self.writerRegistrations += 1
            addWriter(writer)

        self.reactor.addWriter = countingAddWriter
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.client = socket.create_connection(listener.getsockname())
        accepted, address = listener.accept()
        listener.close()
        accepted.setblocking(False)
        self.protocol = protocol
        self.port = _Port()
        self.transport = transportClass(
            accepted, protocol, address, self.port, 1, self.reactor
        )
        protocol.makeConnection(self.transport)

    def turn(self) -> None:
        self.reactor.runUntilCurrent()
        self.reactor.doIteration(0.01)

    def turnUntil(self, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            self.turn()

    def receive(self, until: Callable[[bytes], bool]) -> bytes:
        """
        Turn the reactor and read from the client until C{until} holds for
        what was read, or the server closes.
        """
        self.client.setblocking(False)
        data = b""
        deadline = time.monotonic() + TIMEOUT
        while not until(data):
            assert time.monotonic() < deadline, f"timed out with {len(data)}"
            self.turn()
            try:
                chunk = self.client.recv(1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        if self.transport.connected:
            self.transport.abortConnection()
            self.turnUntil(lambda: not self.transport.connected)
        self.client.close()
        closeReactor(self.reactor)


def plainTransport() -> type[Any]:
    return tcp.Server


def workerTransport() -> type[Any]:
    return serverTransport(False, False)


def run(
    reactorName: str,
    transportClass: type[Any],
    protocol: Recorder,
    scenario: Callable[[World], Any],
) -> tuple[Any, list[Any], World]:
    world = World(reactorName, transportClass, protocol)
    try:
        outcome = scenario(world)
    finally:
        world.close()
    return outcome, protocol.calls, world


def compare(
    reactorName: str,
    makeProtocol: Callable[[], Recorder],
    scenario: Callable[[World], Any],
) -> tuple[World, World]:
    """
    Run C{scenario} over Twisted's transport and over the worker's, and
    assert the same outcome and the same protocol calls.
    """
    plain = run(reactorName, plainTransport(), makeProtocol(), scenario)
    worker = run(reactorName, workerTransport(), makeProtocol(), scenario)
    assert worker[0] == plain[0], "what the client received differs"
    assert worker[1] == plain[1], "what the protocol saw differs"
    assert worker[2].writerRegistrations == plain[2].writerRegistrations
    return plain[2], worker[2]


@pytest.fixture(params=["epoll", "poll"])
def reactorName(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def reply(protocol: Recorder, data: bytes) -> None:
    protocol.transport.write(b"reply:" + data)  # type: ignore[union-attr]


def replyAndClose(protocol: Recorder, data: bytes) -> None:
    reply(protocol, data)
    protocol.transport.loseConnection()  # type: ignore[union-attr]


def test_aReply(reactorName: str) -> None:
    def scenario(world: World) -> bytes:
        world.client.sendall(b"ping")
        return world.receive(lambda got: got == b"reply:ping")

    compare(reactorName, lambda: Recorder(reply), scenario)


@pytest.mark.parametrize("protocol", [Recorder, HalfCloseable])
def test_replyThenCloseEndsAsTwistedEndsIt(
    reactorName: str, protocol: type[Recorder]
) -> None:
    """
    A write and C{loseConnection} in C{dataReceived}: the write that sends
    the reply ends the connection with C{connectionLost(ConnectionDone)},
    never C{readConnectionLost}, even for a half-closeable protocol; the
    budget hears of the close.
    """

    def scenario(world: World) -> bytes:
        world.client.sendall(b"bye")
        data = world.receive(lambda got: False)
        world.turnUntil(lambda: not world.transport.connected)
        return data

    _plain, worker = compare(reactorName, lambda: protocol(replyAndClose), scenario)
    assert worker.protocol.calls[-1] == ["connectionLost", "ConnectionDone"]
    assert worker.port.budget.closed == 1
    assert not worker.port.budget.connections.open


def test_whatTheKernelDoesNotTakeWaitsForTheReactor(reactorName: str) -> None:
    size = 16 * 1024 * 1024

    def big(protocol: Recorder, data: bytes) -> None:
        protocol.transport.write(b"b" * size)  # type: ignore[union-attr]

    def scenario(world: World) -> int:
        world.client.sendall(b"go")
        world.turnUntil(lambda: bool(world.protocol.calls))
        registered = world.transport in world.reactor.getWriters()
        data = world.receive(lambda got: len(got) >= size)
        return len(data) if registered else -1

    compare(reactorName, lambda: Recorder(big), scenario)


def test_aPullProducerIsAskedAsByTwisted(reactorName: str) -> None:
    def produce(protocol: Recorder, data: bytes) -> None:
        transport: Any = protocol.transport
        transport.registerProducer(Pull(protocol, 5, 100_000), False)

    def scenario(world: World) -> int:
        world.client.sendall(b"go")
        return len(world.receive(lambda got: False))

    _plain, worker = compare(reactorName, lambda: Recorder(produce), scenario)
    assert worker.protocol.calls.count(["resumeProducing"]) == 6


def test_abortAfterAWriteSendsNothing(reactorName: str) -> None:
    def writeThenAbort(protocol: Recorder, data: bytes) -> None:
        transport: Any = protocol.transport
        transport.write(b"never")
        transport.abortConnection()

    def scenario(world: World) -> bytes:
        world.client.sendall(b"go")
        try:
            return world.receive(lambda got: False)
        except ConnectionResetError:
            return b"reset"

    compare(reactorName, lambda: Recorder(writeThenAbort), scenario)


def test_aWriteFromATimer(reactorName: str) -> None:
    def later(protocol: Recorder, data: bytes) -> None:
        transport: Any = protocol.transport
        transport.reactor.callLater(0, transport.write, b"later")

    def scenario(world: World) -> bytes:
        world.client.sendall(b"go")
        return world.receive(lambda got: got == b"later")

    compare(reactorName, lambda: Recorder(later), scenario)
