"""
Protocols and factories the end-to-end tests serve, imported by the
workers by dotted name (C{tests.apps.PidEcho}).
"""

from __future__ import annotations

import os
import time

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from preforktwist.interfaces import IRetiring


class PidEcho(Protocol):
    """
    Answer each message with C{PID:message} and close: the client learns
    which worker served it.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"%d:%s" % (os.getpid(), data))
        self.transport.loseConnection()


class PidHold(Protocol):
    """
    Answer each message with C{PID} and keep the connection open: a
    long-lived client (a WebSocket, a database session) that learns which
    worker holds it.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"%d\n" % os.getpid())


class BusyPidHold(PidHold):
    """
    L{PidHold}, except that the message C{busy} first keeps the worker's
    reactor busy, on a core, for L{BUSY} seconds: a worker in one long
    turn, as a burst's handshakes make it on a loaded machine.
    """

    BUSY = 0.2

    def dataReceived(self, data: bytes) -> None:
        if data == b"busy":
            end = time.monotonic() + self.BUSY
            while time.monotonic() < end:
                pass
        super().dataReceived(data)


@implementer(IRetiring)
class GoingAway(PidHold):
    """
    L{PidHold} that, when its worker retires, says so and closes.
    """

    def retiring(self) -> None:
        assert self.transport is not None
        self.transport.write(b"going away\n")
        self.transport.loseConnection()


@implementer(IRetiring)
class GoingAwayFactory(Factory):
    """
    Serves L{GoingAway}, and logs when its worker retires.
    """

    protocol = GoingAway
    log = Logger()

    def retiring(self) -> None:
        self.log.info("factory told: retiring")


goingAway = GoingAwayFactory()


class _Held(Resource):
    """
    Answers when its worker retires: a request in progress at that moment,
    whatever the machine's speed.
    """

    isLeaf = True
    log = Logger()

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.held: list[Request] = []

    def render_GET(self, request: Request) -> int:
        self.held.append(request)
        self.log.info("holding a request")
        return NOT_DONE_YET

    def answerAll(self) -> None:
        for request in self.held:
            request.write(b"held by %d\n" % os.getpid())
            request.finish()
        self.held.clear()


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello from %d\n" % os.getpid()


@implementer(IRetiring)
class HoldingSite(Site):
    """
    A C{Site} whose C{/hold} answers once the worker retires, and on the
    reactor's next turn, after the worker has begun retiring each
    connection; C{/} answers at once.
    """

    def __init__(self) -> None:
        self.holding = _Held()
        root = Resource()
        root.putChild(b"", _Hello())
        root.putChild(b"hold", self.holding)
        super().__init__(root)  # type: ignore[no-untyped-call]

    def retiring(self) -> None:
        reactor.callLater(0, self.holding.answerAll)


def holdingSite() -> HoldingSite:
    return HoldingSite()


class SlowReply(Protocol):
    """
    Answer the first message after a second and a half, then close: an
    exchange that is still going on when the test stops the server.
    """

    DELAY = 1.5

    def dataReceived(self, data: bytes) -> None:
        reactor.callLater(self.DELAY, self._reply, data)

    def _reply(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"done:%d:%s" % (os.getpid(), data))
        self.transport.loseConnection()


class Environment(Protocol):
    """
    Answer with the value of C{PREFORKTWIST_TEST_MARK} in the worker's
    environment.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(os.environ.get("PREFORKTWIST_TEST_MARK", "-").encode())
        self.transport.loseConnection()


def makeEchoFactory() -> Factory:
    """
    A factory callable, for C{--factory}.
    """
    return Factory.forProtocol(PidEcho)


echoFactory = Factory.forProtocol(PidEcho)


def raisingFactory() -> Factory:
    raise RuntimeError("the database is down")


class Blocking(Protocol):
    """
    Block the worker's reactor for a minute on the first message: a hung
    worker for the heartbeat to find.
    """

    def dataReceived(self, data: bytes) -> None:
        import time

        time.sleep(60)


_open = 0
_mostOpen = 0


class CountsConcurrency(Protocol):
    """
    Answer after a second with C{PID:most connections this worker ever had
    open at once}.
    """

    def connectionMade(self) -> None:
        global _open, _mostOpen
        _open += 1
        _mostOpen = max(_mostOpen, _open)
        reactor.callLater(1.0, self._reply)

    def _reply(self) -> None:
        assert self.transport is not None
        self.transport.write(b"%d:%d" % (os.getpid(), _mostOpen))
        self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        global _open
        _open -= 1


initialised: list[int] = []


def workerInit() -> None:
    """
    A --worker-init that fails while the file named by
    PREFORKTWIST_TEST_BREAK exists, and records that it ran otherwise.
    """
    marker = os.environ.get("PREFORKTWIST_TEST_BREAK", "")
    if marker and os.path.exists(marker):
        raise RuntimeError("init is broken on purpose")
    initialised.append(os.getpid())


class InitialisedEcho(Protocol):
    """
    Answer C{PID:load} if the worker-init ran before this connection.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        ok = initialised == [os.getpid()]
        self.transport.write(b"%d:%s" % (os.getpid(), data if ok else b"no init"))
        self.transport.loseConnection()


class PeerAtConnect(Protocol):
    """
    Answer C{host:port|message} with the peer address the protocol saw in
    C{connectionMade}: behind a PROXY header, the real client's.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peer = self.transport.getPeer()

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        host = getattr(self.peer, "host", "?")
        port = getattr(self.peer, "port", 0)
        self.transport.write(b"%s:%d|%s" % (host.encode(), port, data))
        self.transport.loseConnection()


_leak: list[bytes] = []


class Leaky(Protocol):
    """
    Keep 4 MB per connection for ever, then answer like PidEcho: a slow
    leak in user code.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        _leak.append(os.urandom(4 * 1024 * 1024))
        self.transport.write(b"%d:%s" % (os.getpid(), data))
        self.transport.loseConnection()


class BlocksBriefly(Protocol):
    """
    Answer C{busy}, block the worker's reactor for two and a half seconds,
    then answer C{done} and close.  While it blocks, the worker can neither
    drain the queue nor give back its listening sockets, so a test can look
    at the master in the middle of a stop.  C{busy} goes straight to the
    socket: a client that reads it knows the block has begun.
    """

    BLOCK = 2.5

    def dataReceived(self, data: bytes) -> None:
        import time

        assert self.transport is not None
        self.transport.getHandle().send(b"busy\n")  # type: ignore[attr-defined]
        time.sleep(self.BLOCK)
        self.transport.write(b"done")
        self.transport.loseConnection()
