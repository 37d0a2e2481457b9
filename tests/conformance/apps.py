"""
The one protocol every conformance server serves: the client's first line
names a case (C{NAME TOKEN [ARGUMENT...]}), and the dispatcher hands the
connection to that case's protocol.  So one plain server and one pool per
mode serve every case.

Each case's server side writes down what it observed (producer calls,
half-closes, addresses, the reason C{connectionLost} got) in a
L{Recorder}, saved as JSON under the token when the connection is lost:
the test reads it back whichever process served the connection.
"""

from __future__ import annotations

import os
import select
from io import BytesIO
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

# Importing services registers Twisted's own protocols as cases.
from tests.conformance import services, shapes
from tests.conformance.recording import (
    CASES,
    TOKEN,
    Case,
    Recorder,
    case,
    describeAddress,
    later,
    rawSocket,
    smallSendBuffer,
    tlsOptions,
)

#: The process that imported this module: with C{--preload}, the fork
#: server, not the worker serving the connection.
IMPORTED_IN = os.getpid()


class Dispatcher(Protocol):
    """
    Read the first line, build the case it names, and pass the connection
    on: its data, its half-closes and its loss.  It provides
    L{IHalfCloseableProtocol} only when the case does, so the transport
    treats each case as it would treat that case alone.
    """

    transport: Any
    _case: IProtocol | None = None
    _record: Recorder | None = None
    _buffer = b""

    def dataReceived(self, data: bytes) -> None:
        if self._case is not None:
            self._case.dataReceived(data)
            return
        self._buffer += data
        line, found, rest = self._buffer.partition(b"\n")
        if not found:
            if len(self._buffer) > 1000:
                self.transport.loseConnection()
            return
        words = line.decode("ascii", "replace").split()
        builder = CASES.get(words[0]) if words else None
        if builder is None or len(words) < 2 or not TOKEN.match(words[1]):
            self.transport.write(b"unknown case: %s\n" % line[:100])
            self.transport.loseConnection()
            return
        self._record = Recorder(words[1])
        self._case = builder(self._record, words[2:])
        if IHalfCloseableProtocol.providedBy(self._case):
            alsoProvides(self, IHalfCloseableProtocol)
        self._case.makeConnection(self.transport)
        if rest and self.transport.connected:
            self._case.dataReceived(rest)

    def readConnectionLost(self) -> None:
        IHalfCloseableProtocol(self._case).readConnectionLost()

    def writeConnectionLost(self) -> None:
        IHalfCloseableProtocol(self._case).writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._case is None or self._record is None:
            return
        self._record.add("connectionLost", reason.type.__name__)  # type: ignore[union-attr]
        try:
            self._case.connectionLost(reason)
        finally:
            self._record.save()


dispatcherFactory = Factory.forProtocol(Dispatcher)


# Writing: order, size, closing with data buffered.


@case("write-order")
class WriteOrder(Case):
    """
    Writes and write sequences over three turns of the reactor, some
    sent at once and some buffered behind a large one, the last after
    C{loseConnection}: all arrive, in order.
    """

    def connectionMade(self) -> None:
        self.pieces = shapes.writeOrderPieces()
        self.transport.write(self.pieces[0])
        self.transport.writeSequence(self.pieces[1:3])
        later(0, self.second)

    def second(self) -> None:
        self.transport.write(self.pieces[3])
        self.transport.write(self.pieces[4])
        self.transport.writeSequence(self.pieces[5:7])
        later(0, self.third)

    def third(self) -> None:
        self.transport.write(self.pieces[7])
        self.transport.loseConnection()
        self.transport.write(self.pieces[8])


@case("big-write")
class BigWrite(Case):
    """
    One write larger than any socket buffer and a long write sequence, then
    C{loseConnection} at once, everything still buffered.
    """

    def connectionMade(self) -> None:
        pieces = shapes.bigWritePieces()
        self.transport.write(pieces[0])
        self.transport.writeSequence(pieces[1:])
        self.transport.loseConnection()


@case("upload")
class Upload(Case):
    """
    Read a large upload (C{SIZE\\n} then the bytes); answer its digest.
    """

    def connectionMade(self) -> None:
        self.expected: int | None = None
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.expected is None:
            size, found, self.received = self.received.partition(b"\n")
            if not found:
                self.received = size
                return
            self.expected = int(size)
        if len(self.received) >= self.expected:
            self.record.add("received", len(self.received))
            self.transport.write(shapes.digest(self.received).encode())
            self.transport.loseConnection()


# Producers.


@implementer(IPushProducer)
class PushProducer(Case):
    """
    A streaming producer: it writes L{shapes.PUSH_CHUNK} each turn of the
    reactor unless paused, C{chunks} in all (0: until stopped), then
    unregisters and closes.  Subclasses decide what happens around it.
    """

    chunks = shapes.PUSH_CHUNKS
    #: Call loseConnection just after registering, not at the end.
    loseAtOnce = False

    def connectionMade(self) -> None:
        smallSendBuffer(self.transport)
        self.sent = 0
        self.paused = self.finished = self.scheduled = False
        self.transport.registerProducer(self, True)
        self.produce()
        if self.loseAtOnce:
            self.transport.loseConnection()

    def produce(self) -> None:
        self.scheduled = False
        if self.paused or self.finished:
            return
        if self.chunks and self.sent >= self.chunks:
            self.finish()
            return
        self.transport.write(shapes.pattern(shapes.PUSH_CHUNK, f"push-{self.sent}"))
        self.sent += 1
        self.schedule()

    def schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            later(0, self.produce)

    def finish(self) -> None:
        self.finished = True
        self.record.add("unregisterProducer")
        self.transport.unregisterProducer()
        if not self.loseAtOnce:
            self.transport.loseConnection()

    def pauseProducing(self) -> None:
        self.record.add("pauseProducing")
        self.paused = True

    def resumeProducing(self) -> None:
        self.record.add("resumeProducing")
        self.paused = False
        self.schedule()

    def stopProducing(self) -> None:
        self.record.add("stopProducing")
        self.finished = True


case("push")(PushProducer)


@case("push-lose")
class PushThenLose(PushProducer):
    """
    C{loseConnection} with a streaming producer registered: the
    connection waits for the producer to unregister.
    """

    loseAtOnce = True


@case("push-endless")
class EndlessPush(PushProducer):
    """
    Produce until the client goes away: the transport stops the producer.
    """

    chunks = 0


@case("unregister")
class Unregister(PushProducer):
    """
    Unregister the producer after its first chunk, write a tail, close:
    the producer is not called again.
    """

    chunks = 1

    def finish(self) -> None:
        self.finished = True
        self.record.add("unregisterProducer")
        self.transport.unregisterProducer()
        self.transport.write(b"tail")
        self.transport.loseConnection()


class RecordingFileSender(FileSender):
    """
    Twisted's own pull producer, noting the calls the transport makes.
    """

    def __init__(self, record: Recorder) -> None:
        self.record = record

    def resumeProducing(self) -> None:
        self.record.add("resumeProducing")
        super().resumeProducing()  # type: ignore[no-untyped-call]

    def pauseProducing(self) -> None:
        self.record.add("pauseProducing")

    def stopProducing(self) -> None:
        self.record.add("stopProducing")
        super().stopProducing()  # type: ignore[no-untyped-call]


class Pull(Case):
    """
    Send C{size} bytes with L{FileSender} (a pull producer) to a slow
    reader.  Subclasses close at the end or at once.
    """

    size = shapes.PULL_SIZE
    loseAtOnce = False

    def connectionMade(self) -> None:
        smallSendBuffer(self.transport)
        sender = RecordingFileSender(self.record)
        data = BytesIO(shapes.pattern(self.size, "pull"))
        d = sender.beginFileTransfer(data, self.transport)
        d.addCallbacks(self.sent, self.failed)
        if self.loseAtOnce:
            self.transport.loseConnection()

    def sent(self, lastByte: bytes) -> None:
        self.record.add("sent")
        if not self.loseAtOnce:
            self.transport.loseConnection()

    def failed(self, failure: Failure) -> None:
        self.record.add("failed", failure.getErrorMessage())


case("pull")(Pull)


@case("pull-lose")
class PullThenLose(Pull):
    """
    C{loseConnection} just after the pull producer registered.
    """

    loseAtOnce = True


@case("pull-endless")
class LargePull(Pull):
    """
    More than the client will read before it resets the connection.
    """

    size = 8 * 1024 * 1024


# Closing.


@case("idle")
class Idle(Case):
    """
    Say C{ready}, then wait: for C{close} (the server loses the
    connection), or for the client to close or reset it.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"ready\n")

    def dataReceived(self, data: bytes) -> None:
        self.record.add("dataReceived", data.decode("ascii", "replace"))
        if data.endswith(b"close\n"):
            self.transport.loseConnection()


@case("abort")
class Abort(Case):
    """
    Write more than the buffers hold, then abort in the same turn: what
    was written is dropped, the client reset.
    """

    def connectionMade(self) -> None:
        self.transport.write(shapes.pattern(4 * 1024 * 1024, "abort"))
        self.transport.abortConnection()


@case("write-after-reset")
class WriteAfterReset(Case):
    """
    Write to a connection the client has just reset, before the reactor
    has read the reset: C{connectionLost} must still say the connection
    was lost, not closed cleanly.  The case waits for the reset blocking
    (briefly, boundedly): that is the moment a busy server meets it.
    """

    def connectionMade(self) -> None:
        skt = rawSocket(self.transport)
        assert skt is not None
        # Straight to the socket: the reactor, which would send a write,
        # is blocked below.
        skt.send(b"waiting\n")
        poller = select.poll()
        poller.register(skt, select.POLLIN | select.POLLERR | select.POLLHUP)
        self.record.add("reset seen", bool(poller.poll(5000)))
        self.transport.write(b"late")


@implementer(IHalfCloseableProtocol)
class HalfCloseByClient(Case):
    """
    Count what arrives until the client half-closes; answer, half-close
    in turn, and close once the write side is shut.
    """

    received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def readConnectionLost(self) -> None:
        self.record.add("readConnectionLost", self.received)
        self.transport.write(b"received %d" % self.received)
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        self.record.add("writeConnectionLost")
        self.transport.loseConnection()


case("half-close-client")(HalfCloseByClient)


@case("half-close-server")
@implementer(IHalfCloseableProtocol)
class HalfCloseByServer(Case):
    """
    Write, half-close first, then read what the client still sends until
    it half-closes too.
    """

    def connectionMade(self) -> None:
        self.transport.write(shapes.pattern(200_000, "half-close"))
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.record.add("dataReceived", data.decode("ascii", "replace"))

    def writeConnectionLost(self) -> None:
        self.record.add("writeConnectionLost")

    def readConnectionLost(self) -> None:
        self.record.add("readConnectionLost")
        self.transport.loseConnection()


# The transport's own producer interface, addresses, descriptors, TLS.


@case("transport-pause")
class TransportPause(Case):
    """
    Pause the transport (no reads), tell the client, resume a little later:
    what the client sent meanwhile arrives only after the resume.
    """

    PAUSE = 0.1

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.record.add("paused")
        self.transport.write(b"paused\n")
        later(self.PAUSE, self.resume)

    def resume(self) -> None:
        self.record.add("resumed")
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.record.add("dataReceived", data.decode("ascii", "replace"))
        if data.endswith(b"end\n"):
            self.transport.write(b"done\n")
            self.transport.loseConnection()


@case("addresses")
class Addresses(Case):
    """
    Note C{getPeer} and C{getHost}, then wait for the client to close.
    """

    def connectionMade(self) -> None:
        self.record.add("getPeer", *describeAddress(self.transport.getPeer()))
        self.record.add("getHost", *describeAddress(self.transport.getHost()))
        self.transport.write(b"ready\n")


@case("send-fd")
class SendDescriptor(Case):
    """
    Pass a descriptor of a file the server opened, then one byte.
    """

    def connectionMade(self) -> None:
        path = Path(os.environ[shapes.FILES]) / shapes.FD_FILE
        self.fd = os.open(path, os.O_RDONLY)
        self.transport.sendFileDescriptor(self.fd)
        self.transport.write(b"x")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        os.close(self.fd)


@case("starttls")
class StartTLS(Case):
    """
    On C{STARTTLS}, answer C{GO} and start TLS as the server; then echo
    each line over TLS with a large answer, and close.
    """

    def connectionMade(self) -> None:
        self.tls = False
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        self.record.add("line", self.tls, line.decode("ascii", "replace"))
        if line == b"STARTTLS" and not self.tls:
            self.transport.write(b"GO\n")
            self.transport.startTLS(tlsOptions())
            self.tls = True
        elif self.tls:
            self.transport.write(b"tls:" + line + b"\n")
            self.transport.write(shapes.pattern(200_000, "starttls"))
            self.transport.loseConnection()


@case("process")
class Process(Case):
    """
    Where the case runs, for the test that checks each mode does what it
    says: this process, the one that imported the module, the reactor.
    """

    def connectionMade(self) -> None:
        from twisted.internet import reactor

        self.record.add(os.getpid(), IMPORTED_IN, type(reactor).__name__)
        self.transport.loseConnection()


__all__ = ["Dispatcher", "dispatcherFactory", "services"]
