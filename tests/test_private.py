"""
Canaries for the private parts of Twisted that preforktwist uses, one or
more for each function of L{preforktwist.common.private}, and for the
behaviour of C{tcp.Port.doRead} that the accept clamp relies on.  Each
fails with a message naming what changed in Twisted.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from preforktwist.common import private

CHANGED = "Twisted changed {what}: preforktwist.common.private must follow"


def changed(what: str) -> str:
    return CHANGED.format(what=what)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


class _Port(tcp.Port):
    pass


def test_portFromDescriptorBuildsOurClassUnstarted(listener: socket.socket) -> None:
    port = private.portFromDescriptor(
        _Port, MemoryReactor(), listener.fileno(), socket.AF_INET, Factory()
    )
    assert type(port) is _Port, changed("Port._fromListeningDescriptor's class")
    assert not port.connected, changed("Port._fromListeningDescriptor started it")
    skt = private.takeAdoptedSocket(port)
    assert skt.fileno() != listener.fileno(), changed("the adopted socket's dup")
    assert skt.getsockname() == listener.getsockname()
    skt.close()


def test_adoptedUNIXSocketIsNeverShutDown(tmp_path: Path) -> None:
    """
    With C{_shouldShutdown} cleared, closing a port's copy leaves the
    shared socket accepting.
    """
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(4)
    sock.setblocking(False)
    try:
        port = private.portFromDescriptor(
            unix.Port, MemoryReactor(), sock.fileno(), socket.AF_UNIX, Factory()
        )
        skt = private.takeAdoptedSocket(port)
        port.socket = skt
        port.fileno = skt.fileno
        port.connected = True
        tcp.Port.connectionLost(port, None)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.close()
        conn, _ = sock.accept()
        conn.close()
    finally:
        sock.close()


class _Reservation:
    def __init__(self) -> None:
        self.asked = 0

    def reserve(self) -> None:
        pass

    def available(self) -> bool:
        self.asked += 1
        return False


class _EMFILESocket:
    def accept(self) -> Any:
        raise OSError(errno.EMFILE, "too many open files")


def test_reservedDescriptorIsWhatTheAcceptLoopUses(listener: socket.socket) -> None:
    port = tcp.Port(0, Factory(), reactor=MemoryReactor())
    port.socket = _EMFILESocket()
    port.numberAccepts = 5
    reservation = _Reservation()
    saved = tcp._reservedFD
    with private.reservedDescriptor(reservation):
        port.doRead()
    assert tcp._reservedFD is saved, "the process's reservation was not restored"
    assert reservation.asked == 1, changed(
        "how tcp.Port.doRead reaches its reserved descriptor (tcp._reservedFD)"
    )


class _Counted(Protocol):
    pass


def test_doReadTakesNumberAcceptsAndAdaptsIt(listener: socket.socket) -> None:
    """
    The clamp sets C{numberAccepts} before C{doRead}: Twisted accepts at
    most that many, then sets it to that many plus 20 after a full batch,
    or to what it accepted (at least 1) otherwise.
    """
    port = private.portFromDescriptor(
        _Port,
        MemoryReactor(),
        listener.fileno(),
        socket.AF_INET,
        Factory.forProtocol(_Counted),
    )
    skt = private.takeAdoptedSocket(port)
    port.socket = skt
    port.fileno = skt.fileno
    port.connected = True
    clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
    try:
        port.numberAccepts = 3
        port.doRead()
        assert port.sessionno == 3, changed("tcp.Port.doRead's batch size")
        assert port.numberAccepts == 23, changed("tcp.Port.doRead's full batch")
        port.numberAccepts = 10
        port.doRead()
        assert port.sessionno == 5
        assert port.numberAccepts == 2, changed("tcp.Port.doRead's partial batch")
    finally:
        for client in clients:
            client.close()
        skt.close()


needsEpoll = pytest.mark.skipif(
    not hasattr(select, "EPOLLEXCLUSIVE"), reason="no EPOLLEXCLUSIVE here"
)


def _epollReactor() -> Any:
    from twisted.internet.epollreactor import EPollReactor

    return EPollReactor()


def closeReactor(reactor: Any) -> None:
    """
    Close a reactor's poller and waker through their own objects (closing
    the descriptors by number would let the objects close them again later,
    by then another test's sockets).
    """
    poller: Any = getattr(reactor, "_poller", None)
    if hasattr(poller, "close"):
        poller.close()
    if reactor.waker is not None:
        reactor.waker.connectionLost(None)


class _Reader:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "_Reader"


def _epollFlags(reactor: Any, fd: int) -> int:
    epfd = private.pollerDescriptor(reactor)
    for line in Path(f"/proc/self/fdinfo/{epfd}").read_text().splitlines():
        fields = line.split()
        if fields[:2] == ["tfd:", str(fd)]:
            return int(fields[3], 16)
    raise AssertionError(f"fd {fd} is not in the reactor's epoll instance")


@needsEpoll
def test_exclusiveReaderIsTheReactorsOwn(listener: socket.socket) -> None:
    reactor = _epollReactor()
    try:
        reader = _Reader(listener.fileno())
        assert not private.isReading(reactor, reader)
        private.addExclusiveReader(reactor, reader)
        assert private.isReading(reactor, reader), changed("EPollReactor._reads")
        assert reader in reactor.getReaders(), changed("EPollReactor._add")
        flags = _epollFlags(reactor, listener.fileno())
        assert flags & select.EPOLLEXCLUSIVE, changed("EPollReactor._add's flags")
        reactor.removeReader(reader)
        assert not private.isReading(reactor, reader), changed(
            "EPollReactor.removeReader of an exclusive reader"
        )
    finally:
        closeReactor(reactor)


@needsEpoll
def test_forgetRegistrationsLeavesTheOldPollerAlone(listener: socket.socket) -> None:
    reactor = _epollReactor()
    try:
        assert private.usesEpoll(reactor), changed("EPollReactor._poller")
        old = private.pollerDescriptor(reactor)
        reader = _Reader(listener.fileno())
        reactor.addReader(reader)
        duplicate = os.dup(old)  # type: ignore[arg-type]
        try:
            private.forgetRegistrations(reactor)
            assert private.pollerDescriptor(reactor) not in (None, old)
            assert reactor.getReaders() == [], changed("EPollReactor's bookkeeping")
            reactor.addReader(reader)
            assert private.isReading(reactor, reader)
            # The old instance (the parent's, after a fork) still holds its
            # registration: nothing was removed from it.
            assert "tfd:" in Path(f"/proc/self/fdinfo/{duplicate}").read_text()
        finally:
            os.close(duplicate)
    finally:
        closeReactor(reactor)


def test_forgetWakerLetsInstallWakerMakeANewOne() -> None:
    from twisted.internet.pollreactor import PollReactor

    reactor: Any = PollReactor()
    try:
        old = reactor.waker
        reactor.removeReader(old)
        private.forgetWaker(reactor)
        assert reactor.waker is None
        reactor.installWaker()
        assert reactor.waker is not None and reactor.waker is not old, changed(
            "ReactorBase.installWaker or _internalReaders"
        )
        assert reactor.waker in reactor.getReaders()
        for name in ("i", "o"):
            os.close(getattr(old, name))
    finally:
        closeReactor(reactor)


def test_proxyInfoIsTheParsedHeader() -> None:
    factory = private.HAProxyWrappingFactory(Factory.forProtocol(Protocol))
    wrapper = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(wrapper, private.HAProxyProtocolWrapper), changed(
        "twisted.protocols.haproxy._wrapper"
    )
    wrapper.makeConnection(StringTransport())
    assert private.proxyInfo(wrapper) is None
    wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n")
    assert private.proxyInfo(wrapper) is not None, changed(
        "HAProxyProtocolWrapper._proxyInfo"
    )
    peer = wrapper.getPeer()
    assert isinstance(peer, IPv4Address) and peer.host == "203.0.113.7"


def test_httpChannelIsInsideWhatASiteBuilds() -> None:
    from twisted.web.http import HTTPChannel
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    site = Site(Resource())
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    channel = private.httpChannel(protocol)
    assert isinstance(channel, HTTPChannel), changed(
        "twisted.web.http._GenericHTTPChannelProtocol._channel"
    )
    assert private.httpChannel(Protocol()) is None
    assert private.httpChannel(channel) is None


def test_unparsedInputIsWhatPipelinedRequestsLeft() -> None:
    """
    While a request is answered, what the client sent after it is held,
    unparsed: in the channel's own buffer once it is handling a request,
    in the line receiver's while it parses one.
    """
    from twisted.web.http import HTTPChannel, Request

    held: list[Request] = []

    class Holding(Request):
        def process(self) -> None:
            held.append(self)

    channel: Any = HTTPChannel()
    channel.requestFactory = Holding
    channel.makeConnection(StringTransport())
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    channel.dataReceived(get)
    assert private.unparsedInput(channel) == 0
    channel.dataReceived(get + b"GET /a")
    assert private.unparsedInput(channel) == len(get) + 6, changed(
        "HTTPChannel._dataBuffer"
    )
    held[0].finish()
    assert len(held) == 2  # the next request is parsed and handled
    held[1].finish()
    # Nothing in progress: the start of the third waits for its line's end.
    assert private.unparsedInput(channel) == 6, changed("LineReceiver._buffer")
    channel.connectionLost(None)


def test_logFileObserversFindsTheFileOfAFileLogObserver(tmp_path: Path) -> None:
    from twisted.logger import LogPublisher, textFileLogObserver

    publisher = LogPublisher()
    with open(tmp_path / "log", "w") as out:
        observer = textFileLogObserver(out)
        publisher.addObserver(observer)
        assert private.logFileObservers(publisher) == [(observer, out)], changed(
            "LogPublisher._observers or FileLogObserver._outFile"
        )
