"""
The worker's epoll reactor (L{preforktwist.worker.dispatch}): it serves
every ready descriptor, and one whose handling raises is logged and costs
the others nothing, as with Twisted's own dispatch.  With the worker's
transports (L{preforktwist.worker.accepting._SendsAtOnce}), a connection
closed with nothing left to send closes at the end of the reactor's turn
without registering for writing, and one with more to send than the kernel
takes still sends all of it first.
"""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Any, cast

import pytest
from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

if not hasattr(select, "epoll"):
    pytest.skip("no epoll here", allow_module_level=True)

from preforktwist.worker.accepting import _SendsAtOnce
from preforktwist.worker.dispatch import WorkerEPollReactor


class Reader:
    """
    A readable end of a pipe that records its reads, or raises from its
    C{connectionLost} once it is read (as buggy application code may).
    """

    def __init__(self, fd: int, raises: bool = False) -> None:
        self.fd = fd
        self.raises = raises
        self.reads = 0

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "Reader"

    def doRead(self) -> Any:
        os.read(self.fd, 100)
        self.reads += 1
        return ValueError("done") if self.raises else None

    def connectionLost(self, reason: object) -> None:
        raise RuntimeError("buggy connectionLost")


def test_everyReadyDescriptorIsServed() -> None:
    reactor = WorkerEPollReactor()
    errors: list[dict[str, Any]] = []
    observer = cast(ILogObserver, errors.append)
    globalLogPublisher.addObserver(observer)
    pipes = [os.pipe() for _ in range(3)]
    try:
        readers = [Reader(r, raises=(i == 0)) for i, (r, _) in enumerate(pipes)]
        for reader in readers:
            reactor.addReader(reader)
        for _, w in pipes:
            os.write(w, b"x")
        reactor.doPoll(1.0)
        assert [reader.reads for reader in readers] == [1, 1, 1]
        assert any(e.get("isError") for e in errors)
    finally:
        globalLogPublisher.removeObserver(observer)
        for reader in readers[1:]:
            reactor.removeReader(reader)
        for r, w in pipes:
            os.close(r)
            os.close(w)
        reactor._poller.close()


class Conn(_SendsAtOnce, tcp.Connection):
    """
    A connected transport that sends at once, over one end of a socket
    pair: the worker's server transports, less the port and the budget.
    """


class Closer(Protocol):
    """
    Answers its first data and closes; records whether C{connectionLost}
    ran from inside its own call to C{loseConnection}, which Twisted
    promises never happens.
    """

    def __init__(self, reply: bytes = b"bye") -> None:
        self.reply = reply
        self.inside = False
        self.lostInside: bool | None = None
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.reply)  # type: ignore[union-attr]
        self.inside = True
        self.transport.loseConnection()  # type: ignore[union-attr]
        self.inside = False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostInside = self.inside
        self.reason = reason


def served(reactor: WorkerEPollReactor, protocol: Protocol) -> socket.socket:
    """
    Connect C{protocol} to one end of a socket pair in C{reactor}; return
    the other end, the client's.
    """
    ours, client = socket.socketpair()
    ours.setblocking(False)
    client.settimeout(5)
    transport = Conn(ours, protocol, reactor)
    transport.connected = 1  # as tcp.Server and a client's connect do
    protocol.makeConnection(transport)
    transport.startReading()
    return client


def readAll(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(1 << 20):
        received += chunk
    return received


def test_closedAtTheEndOfTheTurnWithoutRegisteringForWriting() -> None:
    """
    A connection closed with nothing left to send closes in the same turn
    of the reactor that read what made it close, after the protocol's call,
    and is never registered for writing.
    """
    reactor = WorkerEPollReactor()
    protocol = Closer()
    client = served(reactor, protocol)
    registered: list[object] = []
    addWriter = reactor.addWriter

    def recordingAddWriter(writer: Any) -> None:
        registered.append(writer)
        addWriter(writer)  # type: ignore[no-untyped-call]

    reactor.addWriter = recordingAddWriter  # type: ignore[method-assign]
    try:
        client.sendall(b"hello")
        reactor.doPoll(5.0)
        assert protocol.reason is not None and protocol.reason.check(ConnectionDone)
        assert protocol.lostInside is False
        assert registered == []
        assert readAll(client) == b"bye"
        assert protocol.transport not in reactor.getReaders()
        assert reactor.getWriters() == []
    finally:
        client.close()
        reactor._poller.close()


def test_closedFromATimerDoesNotWaitForThePoll() -> None:
    """
    Asked for between two polls, the close happens at the start of the
    next one, which then does not wait for its timeout.
    """
    reactor = WorkerEPollReactor()
    protocol = Closer()
    client = served(reactor, protocol)
    try:
        assert protocol.transport is not None
        protocol.transport.loseConnection()
        assert protocol.reason is None
        started = time.monotonic()
        reactor.doPoll(30.0)
        assert time.monotonic() - started < 10
        assert protocol.reason is not None and protocol.reason.check(ConnectionDone)
        assert readAll(client) == b""
    finally:
        client.close()
        reactor._poller.close()


def test_whatTheKernelCannotTakeIsSentBeforeTheClose() -> None:
    """
    A reply larger than the socket's buffers: what the kernel does not
    take at once waits for the socket to be writable, the Twisted way, and
    every byte arrives before the end of the stream.
    """
    reactor = WorkerEPollReactor()
    reply = bytes(range(256)) * 40000  # 10 MB: far beyond a socket buffer
    protocol = Closer(reply)
    client = served(reactor, protocol)
    received = bytearray()
    try:
        client.sendall(b"hello")
        client.setblocking(False)
        for _ in range(100000):
            reactor.doPoll(0.01)
            try:
                while chunk := client.recv(1 << 20):
                    received += chunk
                if protocol.reason is not None:
                    break
            except BlockingIOError:
                pass
        client.setblocking(True)
        received += readAll(client)
        assert protocol.reason is not None and protocol.reason.check(ConnectionDone)
        assert bytes(received) == reply
    finally:
        client.close()
        reactor._poller.close()


def test_aConnectionAbortedMeanwhileIsLeftAlone() -> None:
    """
    A connection closed, then aborted in the same turn, loses its
    connection once, to the abort (which Twisted reports on the reactor's
    next turn).
    """
    reactor = WorkerEPollReactor()
    losses: list[Failure] = []

    class Aborts(Protocol):
        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            self.transport.loseConnection()
            self.transport.abortConnection()  # type: ignore[attr-defined]

        def connectionLost(self, reason: Failure = connectionDone) -> None:
            losses.append(reason)

    client = served(reactor, Aborts())
    try:
        client.sendall(b"hello")
        reactor.doPoll(5.0)
        reactor.runUntilCurrent()
        reactor.doPoll(0)
        assert len(losses) == 1 and losses[0].check(ConnectionAborted)
    finally:
        client.close()
        reactor._poller.close()


def test_afterStartTLSWritesAndTheCloseGoThroughTheTLSLayer() -> None:
    """
    Once C{startTLS} has run (C{TLS} set, its protocol in the transport's
    place), a write and the close are the TLS layer's to make, as with
    Twisted's own transport: nothing reaches the socket in clear.
    """
    reactor = WorkerEPollReactor()
    calls: list[object] = []

    class StandsForTLS(Protocol):
        def write(self, data: bytes) -> None:
            calls.append(data)

        def loseConnection(self) -> None:
            calls.append("loseConnection")

    tls = StandsForTLS()
    client = served(reactor, tls)
    try:
        transport = cast(Conn, tls.transport)
        transport.TLS = True  # what twisted.internet._newtls.startTLS sets
        transport.write(b"secret")
        transport.loseConnection()
        reactor.doPoll(0)
        assert calls == [b"secret", "loseConnection"]
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(100)
    finally:
        client.close()
        reactor._poller.close()
