"""
A retiring worker tells its application (L{IRetiring}) and closes
twisted.web's keep-alive connections once they have nothing more to
answer: in process, a real C{Site} and C{HTTPChannel} on a string
transport over a real socket (for what the kernel still holds) and a
L{Clock}; end to end, a graceful stop with idle keep-alive clients, a
request in progress and pipelined requests at a stop, a rolling reload and
recycling under a keep-alive load, and a protocol and factory providing
L{IRetiring}.
"""

from __future__ import annotations

import http.client
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import alsoProvides, implementer

from preforktwist.common.private import httpChannel
from preforktwist.interfaces import IRetiring
from preforktwist.worker.keepalive import QUIET, RetiringChannel
from preforktwist.worker.proxied import ProxyHeaderFactory
from preforktwist.worker.retiring import OpenConnections, Retirement
from tests.conftest import StartMaster
from tests.harness import REPO, Master, isAlive, waitUntil

RECIPES = REPO / "tap" / "recipes"
GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
LATER = b"GET /later HTTP/1.1\r\nHost: test\r\n\r\n"

# In process: one twisted.web connection.


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello"


class _Later(Resource):
    """
    Answers when the test says so: a request in progress.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.waiting: list[Request] = []

    def render_GET(self, request: Request) -> int:
        self.waiting.append(request)
        return NOT_DONE_YET


class _Transport(StringTransport):
    """
    A string transport whose handle is one end of a real socket pair, so
    that bytes the client sent and nobody read yet are in a real kernel.
    """

    connected = True
    protocol: Any = None

    def __init__(self, handle: socket.socket) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.handle = handle

    def getHandle(self) -> socket.socket:
        return self.handle


class _Connection:
    """
    A C{Site}'s protocol on a L{_Transport}, retired by L{RetiringChannel}.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.later = _Later()
        root = Resource()
        root.putChild(b"", _Hello())
        root.putChild(b"later", self.later)
        site = Site(root, reactor=self.clock)
        self.server, self.client = socket.socketpair()
        self.transport = _Transport(self.server)
        self.protocol: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.protocol.makeConnection(self.transport)
        self.channel: Any = httpChannel(self.protocol)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def retire(self) -> None:
        RetiringChannel(self.channel, self.transport, self.clock).start()

    def responses(self) -> list[bytes]:
        """
        The heads of the responses written so far.
        """
        heads = re.findall(rb"HTTP/1\.1 .*?\r\n\r\n", self.transport.value(), re.S)
        return list(heads)

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def close(self) -> None:
        self.server.close()
        self.client.close()


@pytest.fixture
def connection() -> Iterator[_Connection]:
    c = _Connection()
    yield c
    c.close()


def saysClose(head: bytes) -> bool:
    return b"\r\nConnection: close\r\n" in head


def test_idle_keepalive_closed_after_a_quiet_moment(connection: _Connection) -> None:
    connection.send(GET)
    [head] = connection.responses()
    assert not saysClose(head)
    connection.retire()
    connection.clock.advance(QUIET * 0.9)
    assert not connection.closed
    connection.clock.advance(QUIET * 0.2)
    assert connection.closed


def test_a_request_meanwhile_is_answered_with_close(connection: _Connection) -> None:
    connection.send(GET)
    connection.retire()
    connection.clock.advance(QUIET / 2)
    connection.send(GET)
    first, second = connection.responses()
    assert not saysClose(first) and saysClose(second)
    assert connection.closed


def test_request_in_progress_answered_with_close(connection: _Connection) -> None:
    connection.send(LATER)
    connection.retire()
    connection.clock.advance(QUIET * 3)
    assert not connection.closed  # still answering
    [request] = connection.later.waiting
    request.write(b"late")
    request.finish()
    [head] = connection.responses()
    assert saysClose(head)
    assert connection.closed


def test_pipelined_requests_answered_before_the_close(
    connection: _Connection,
) -> None:
    connection.send(LATER + GET + GET)
    connection.retire()
    [request] = connection.later.waiting
    request.finish()
    heads = connection.responses()
    assert [saysClose(h) for h in heads] == [False, False, True]
    assert connection.transport.value().endswith(b"hello")
    assert connection.closed


def test_response_under_way_closes_after_its_end(connection: _Connection) -> None:
    connection.send(LATER)
    [request] = connection.later.waiting
    request.write(b"part")  # the headers are gone
    connection.retire()
    request.finish()
    [head] = connection.responses()
    assert not saysClose(head)
    assert connection.closed


def test_request_still_in_the_kernel_keeps_it_open(connection: _Connection) -> None:
    connection.send(GET)
    connection.client.sendall(GET)  # sent, not read yet
    connection.retire()
    connection.clock.advance(QUIET)
    assert not connection.closed
    connection.send(connection.server.recv(1024))  # the reactor reads it
    assert saysClose(connection.responses()[-1])
    assert connection.closed


def test_partial_request_keeps_it_open(connection: _Connection) -> None:
    connection.send(GET)
    connection.send(GET[:9])
    connection.retire()
    connection.clock.advance(QUIET * 10)
    assert not connection.closed
    connection.send(GET[9:])
    assert saysClose(connection.responses()[-1])
    assert connection.closed


# In process: who is told.


@implementer(IRetiring)
class _Told(Protocol):
    told = 0
    fails = False

    def retiring(self) -> None:
        self.told += 1
        if self.fails:
            raise RuntimeError("retiring failed")


@implementer(IRetiring)
class _ToldFactory(Factory):
    protocol = _Told
    told = 0

    def retiring(self) -> None:
        self.told += 1


class _Open:
    """
    An open worker transport: all L{Retirement} looks at is its protocol.
    """

    def __init__(self, protocol: object) -> None:
        self.protocol = protocol


def opened(connections: OpenConnections, factory: Any) -> tuple[_Open, Any]:
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = _Open(protocol)
    connections.opened(transport)
    return transport, protocol


def test_factory_and_protocols_told_once() -> None:
    connections = OpenConnections()
    factory = _ToldFactory()
    protocols = [opened(connections, factory)[1] for _ in range(3)]
    retirement = Retirement(factory, connections, Clock())
    retirement.begin()
    retirement.begin()
    assert factory.told == 1
    assert [p.told for p in protocols] == [1, 1, 1]


def test_told_inside_wrappers() -> None:
    """
    Inside a C{ProtocolWrapper}, and inside the PROXY header's parser once
    the header is read (before, the protocol is not connected).
    """
    connections = OpenConnections()
    _, wrapped = opened(connections, WrappingFactory(Factory.forProtocol(_Told)))
    header = ProxyHeaderFactory(Factory.forProtocol(_Told))
    _, waiting = opened(connections, header)
    _, proxied = opened(connections, header)
    proxied.makeConnection(StringTransport())
    proxied.dataReceived(b"PROXY TCP4 10.0.0.1 10.0.0.2 1234 80\r\n")
    Retirement(Factory(), connections, Clock()).begin()
    assert wrapped.wrappedProtocol.told == 1
    assert proxied.wrappedProtocol.told == 1
    assert waiting.wrappedProtocol.told == 0


def test_a_failing_protocol_is_logged_and_others_told() -> None:
    connections = OpenConnections()
    factory = Factory.forProtocol(_Told)
    _, first = opened(connections, factory)
    _, second = opened(connections, factory)
    first.fails = second.fails = True
    with capturedLogs() as events:
        Retirement(factory, connections, Clock()).begin()
    assert first.told == second.told == 1
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 2
    assert all(e["log_failure"].check(RuntimeError) for e in failures)


def test_connections_accepted_afterwards_told_once() -> None:
    connections = OpenConnections()
    factory = Factory.forProtocol(_Told)
    _, before = opened(connections, factory)
    retirement = Retirement(factory, connections, Clock())
    retirement.begin()
    _, after = opened(connections, factory)
    gone, _ = opened(connections, factory)
    connections.closed(gone)
    assert after.told == 0
    retirement.tellFresh()
    retirement.tellFresh()
    assert (before.told, after.told) == (1, 1)


def test_web_connections_retired_unless_they_say_otherwise(
    connection: _Connection,
) -> None:
    """
    A twisted.web connection is retired by the worker: an idle one is
    closed after a quiet moment.
    """
    connections = OpenConnections()
    connection.transport.protocol = connection.protocol
    connections.opened(connection.transport)
    connection.send(GET)
    Retirement(Factory(), connections, connection.clock).begin()
    connection.clock.advance(QUIET)
    assert connection.closed


def test_a_web_channel_providing_IRetiring_is_told_instead(
    connection: _Connection,
) -> None:
    connections = OpenConnections()
    connection.transport.protocol = connection.protocol
    connections.opened(connection.transport)
    told: list[bool] = []
    # The channel itself provides the interface: it decides.
    alsoProvides(connection.channel, IRetiring)
    connection.channel.retiring = lambda: told.append(True)
    connection.send(GET)
    Retirement(Factory(), connections, connection.clock).begin()
    connection.clock.advance(QUIET * 10)
    assert told == [True]
    assert not connection.closed


# End to end.


def webMaster(serve: StartMaster, *args: str) -> Master:
    master = serve("-f", "webapp.site", *args, env={"PYTHONPATH": f"{RECIPES}:{REPO}"})
    return master


def readResponse(sock: socket.socket) -> tuple[bytes, bytes]:
    """
    One response (head, body) with a C{Content-Length} or chunked body
    from a blocking socket; what follows stays in C{sock}'s buffer only as
    far as the kernel keeps it (the caller reads responses one at a time).
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, f"closed before the headers: {data!r}"
        data += chunk
    head = data
    body = b""
    if b"Transfer-Encoding: chunked" in head:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1)
            assert chunk, f"closed in the body: {body!r}"
            body += chunk
    else:
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            assert chunk
            body += chunk
    return head, body


def endsCleanly(sock: socket.socket) -> bool:
    """
    Whether the server closed C{sock} with a FIN after what was read.
    """
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return False


def workerStatuses(master: Master) -> list[str]:
    return re.findall(r"\(pid \d+\) exited with status (\d+)", "\n".join(master.log()))


def test_stop_closes_idle_keepalive_connections_at_once(serve: StartMaster) -> None:
    master = webMaster(serve, "-w", "2", "--grace", "30")
    master.waitForWorkers(2)
    clients = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", master.port), timeout=15)
            sock.sendall(GET)
            readResponse(sock)
            clients.append(sock)
        started = time.monotonic()
        master.signal(signal.SIGTERM)
        assert master.wait(40) == 0
        # The grace period is 30 s: well under it.
        assert time.monotonic() - started < 10
        assert all(endsCleanly(sock) for sock in clients)
    finally:
        for sock in clients:
            sock.close()
    assert workerStatuses(master) == ["0", "0"]
    assert "grace period" not in master.output()


def test_requests_in_progress_at_a_stop_end_with_close(serve: StartMaster) -> None:
    """
    A request in progress is answered with C{Connection: close}; one with
    pipelined requests behind it answers those too, the last with the
    close.  (C{/hold} answers when the worker retires.)
    """
    master = serve("-w", "1", "--grace", "30", "-f", "tests.apps.holdingSite")
    master.waitForWorkers(1)
    hold = b"GET /hold HTTP/1.1\r\nHost: test\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", master.port), timeout=15) as alone,
        socket.create_connection(("127.0.0.1", master.port), timeout=15) as piped,
    ):
        alone.sendall(hold)
        piped.sendall(hold + GET)
        waitUntil(lambda: master.count("holding a request") == 2, 15, "both held")
        master.signal(signal.SIGTERM)
        head, body = readResponse(alone)
        assert b"held by " in body
        assert saysClose(head)
        assert endsCleanly(alone)
        first, _ = readResponse(piped)
        second, body = readResponse(piped)
        assert not saysClose(first) and saysClose(second)
        assert body.startswith(b"hello from ")
        assert endsCleanly(piped)
        assert master.wait(30) == 0
    assert "grace period" not in master.output()


class KeepAliveLoad:
    """
    Threads each sending requests one after another on an HTTP/1.1
    keep-alive connection (C{http.client}, which reconnects after a
    response that says C{Connection: close}), recording which worker
    answered and every failure.
    """

    def __init__(self, port: int, clients: int = 6) -> None:
        self.port = port
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        while not self._stop.is_set():
            try:
                connection.request("GET", "/")
                body = connection.getresponse().read()
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                connection.close()
                continue
            match = re.fullmatch(rb"hello from (\d+)\n", body)
            if match:
                self.pids.append(int(match.group(1)))
            else:
                self.failures.append(f"answer {body!r}")
        connection.close()

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def waitForMore(self, count: int) -> None:
        target = len(self.pids) + count
        waitUntil(lambda: len(self.pids) >= target, 20, f"{count} more answers")


def test_reload_under_keepalive_load(serve: StartMaster) -> None:
    """
    The old workers' keep-alive clients move to the new workers: the
    reload is over, every old worker gone, in seconds, with no failure.
    """
    master = webMaster(serve, "-w", "2", "--grace", "30")
    master.waitForWorkers(2)
    with KeepAliveLoad(master.port) as load:
        load.waitForMore(50)
        old = set(load.pids)
        started = time.monotonic()
        master.signal(signal.SIGHUP)
        master.waitForLine("reload finished", 30)
        waitUntil(lambda: not any(isAlive(p) for p in old), 15, "the old workers")
        took = time.monotonic() - started
        load.waitForMore(50)
        assert not set(load.pids[-50:]) & old
    assert took < 15, took  # the grace period is 30 s
    assert load.failures == []
    assert "grace period" not in master.output()
    assert set(workerStatuses(master)) == {"0"}


def test_recycling_under_keepalive_load(serve: StartMaster) -> None:
    """
    With C{-m}, a worker that used its allowance sends its keep-alive
    clients elsewhere and exits at once instead of serving them until the
    grace period ends.
    """
    # Six clients, two workers with an allowance of three: one of them
    # always uses its allowance (a worker's keep-alive clients never move
    # on their own).
    master = webMaster(serve, "-w", "2", "-m", "3", "--grace", "30")
    master.waitForWorkers(2)
    with KeepAliveLoad(master.port) as load:
        waitUntil(lambda: len(workerStatuses(master)) >= 4, 30, "four workers recycled")
    assert load.failures == []
    assert "grace period" not in master.output()
    assert set(workerStatuses(master)) == {"0"}


def test_retiring_protocols_and_factory_told(serve: StartMaster) -> None:
    """
    A worker that used its allowance tells its factory and each open
    connection's protocol, which say goodbye and close: the worker exits
    without waiting for the grace period.
    """
    master = serve("-w", "1", "-m", "2", "--grace", "30", "-f", "tests.apps.goingAway")
    master.waitForWorkers(1)
    with socket.create_connection(("127.0.0.1", master.port), timeout=15) as first:
        first.sendall(b"hi")
        reader = first.makefile("rb")
        pid = int(reader.readline())
        # Its second connection uses the allowance: the worker retires.
        with socket.create_connection(("127.0.0.1", master.port), 15) as second:
            assert second.makefile("rb").read() == b"going away\n"
        assert reader.read() == b"going away\n"
    master.waitForLine(r"factory told: retiring")
    master.waitForLine(rf"\(pid {pid}\) exited with status 0")
    assert "grace period" not in master.output()
