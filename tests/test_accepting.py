"""
The adopted ports, in process with the real reactor: they accept exactly
what the budget allows and leave the rest queued on the shared socket, and
closing them never harms the socket other processes share.

The behaviour of Twisted's tcp.Port.doRead that the clamp relies on is
pinned by tests/test_private.py.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SkipTest, TestCase

from preforktwist.worker.budget import AcceptBudget
from preforktwist.worker.ports import adoptListener
from preforktwist.worker.wakeups import exclusiveWakeups


def pollUntil(condition: Callable[[], bool], timeout: float = 5.0) -> Deferred[None]:
    @inlineCallbacks
    def poll() -> Generator[Deferred[Any], Any, None]:
        for _ in range(int(timeout / 0.01)):
            if condition():
                return
            yield deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("condition not met in time")

    return poll()


def settle() -> Deferred[None]:
    """
    Let the reactor run a few rounds, so that anything it would still
    accept, it has.
    """
    return deferLater(reactor, 0.2, lambda: None)


class _PortTests(TestCase):
    """
    Shared sockets, clients and adopted ports for the tests below.
    """

    timeout = 20
    #: How the ports wait (C{--accept-wakeup}).
    wakeup = "exclusive"
    #: Accepts between re-adds of an exclusive registration.
    reorder = 16

    def listen(self, family: int = socket.AF_INET) -> socket.socket:
        if family == socket.AF_UNIX:
            path = tempfile.mkdtemp()
            self.addCleanup(shutil.rmtree, path)
            self.path = os.path.join(path, "s.sock")
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
        else:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self.addCleanup(sock.close)
        return sock

    def connect(self, listener: socket.socket, count: int) -> list[socket.socket]:
        clients = []
        for _ in range(count):
            client = socket.socket(listener.family)
            client.connect(listener.getsockname())
            self.addCleanup(client.close)
            clients.append(client)
        return clients

    def queued(self, listener: socket.socket) -> int:
        """
        Accept (and close) what is still queued on the shared socket.
        """
        count = 0
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    @inlineCallbacks
    def closeAll(
        self, budget: AcceptBudget, clients: list[socket.socket]
    ) -> Generator[Deferred[Any], Any, None]:
        for client in clients:
            client.close()
        budget.close()
        yield pollUntil(lambda: budget.open == 0)
        yield settle()

    def adopt(self, listener: socket.socket, budget: AcceptBudget) -> Any:
        return adoptListener(
            reactor,
            listener.fileno(),
            listener.family,
            Factory.forProtocol(Protocol),
            budget,
            wakeup=self.wakeup,
            reorder=self.reorder,
        )


class AdoptedPortTests(_PortTests):
    @inlineCallbacks
    def test_exactAllowance(self) -> Generator[Deferred[Any], Any, None]:
        """
        10 queued, an allowance of 4: 4 accepted in one go, 6 left queued,
        and the worker is told once.
        """
        listener = self.listen()
        clients = self.connect(listener, 10)
        exhausted: list[bool] = []
        budget = AcceptBudget(allowance=4, onExhausted=lambda: exhausted.append(True))
        self.adopt(listener, budget)
        yield pollUntil(lambda: budget.accepted == 4)
        yield settle()
        assert (budget.accepted, exhausted) == (4, [True])
        assert self.queued(listener) == 6
        yield self.closeAll(budget, clients)

    @inlineCallbacks
    def test_allowanceAcrossWakeUps(self) -> Generator[Deferred[Any], Any, None]:
        listener = self.listen()
        budget = AcceptBudget(allowance=12)
        self.adopt(listener, budget)
        clients = self.connect(listener, 10)
        yield pollUntil(lambda: budget.accepted == 10)
        clients += self.connect(listener, 3)
        yield pollUntil(lambda: budget.accepted == 12)
        yield settle()
        assert budget.accepted == 12
        assert self.queued(listener) == 1
        yield self.closeAll(budget, clients)

    @inlineCallbacks
    def test_concurrencyCap(self) -> Generator[Deferred[Any], Any, None]:
        """
        With at most 2 open, the third waits in the queue until one closes.
        """
        listener = self.listen()
        budget = AcceptBudget(maxConcurrent=2)
        self.adopt(listener, budget)
        clients = self.connect(listener, 5)
        yield pollUntil(lambda: budget.accepted == 2)
        yield settle()
        assert budget.accepted == 2
        clients[0].close()
        yield pollUntil(lambda: budget.accepted == 3)
        yield settle()
        assert (budget.accepted, budget.open) == (3, 2)
        yield self.closeAll(budget, clients)

    @inlineCallbacks
    def test_drainOnClose(self) -> Generator[Deferred[Any], Any, None]:
        """
        close(drain=True) first accepts what is queued.
        """
        listener = self.listen()
        budget = AcceptBudget(maxConcurrent=1)
        self.adopt(listener, budget)
        budget.maxConcurrent = 0
        clients = self.connect(listener, 5)
        budget.close(drain=True)
        assert budget.accepted == 5
        assert self.queued(listener) == 0
        yield self.closeAll(budget, clients)

    @inlineCallbacks
    def test_standbyDrainsOnClose(self) -> Generator[Deferred[Any], Any, None]:
        """
        A standby, held for a hand-over, takes its share of the queue when
        the server stops: the worker it was to replace may have used its
        allowance just before, and then nobody else would.
        """
        listener = self.listen()
        budget = AcceptBudget(allowance=10)
        budget.held = True
        self.adopt(listener, budget)
        clients = self.connect(listener, 3)
        yield settle()
        assert budget.accepted == 0
        budget.close(drain=True)
        assert budget.accepted == 3
        assert self.queued(listener) == 0
        yield self.closeAll(budget, clients)

    @inlineCallbacks
    def test_tcpCloseLeavesSharedSocket(self) -> Generator[Deferred[Any], Any, None]:
        listener = self.listen()
        budget = AcceptBudget()
        self.adopt(listener, budget)
        budget.close()
        yield settle()
        clients = self.connect(listener, 1)
        assert self.queued(listener) == 1
        yield self.closeAll(budget, clients)

    @inlineCallbacks
    def test_unixCloseLeavesSharedSocket(self) -> Generator[Deferred[Any], Any, None]:
        """
        An adopted UNIX port neither chmods, unlinks nor shuts down the
        shared socket (Twisted's own unix.Port does all three).
        """
        listener = self.listen(socket.AF_UNIX)
        budget = AcceptBudget()
        self.adopt(listener, budget)
        assert os.stat(self.path).st_mode & 0o777 == 0o600
        budget.close()
        yield settle()
        assert os.path.exists(self.path)
        clients = self.connect(listener, 1)
        assert self.queued(listener) == 1
        yield self.closeAll(budget, clients)

    @inlineCallbacks
    def test_acceptBatch(self) -> Generator[Deferred[Any], Any, None]:
        """
        A batch of 3: one wake-up accepts 3 of the 10 queued, and the rest
        come on the next wake-ups.
        """
        listener = self.listen()
        clients = self.connect(listener, 10)
        budget = AcceptBudget()
        budget.batch = 3
        port = self.adopt(listener, budget)
        port.doRead()
        assert budget.accepted == 3
        yield pollUntil(lambda: budget.accepted == 10)
        yield self.closeAll(budget, clients)


def epollEvents(poller: Any, fd: int) -> int | None:
    """
    The event mask the kernel holds for C{fd} in epoll C{poller}, from
    /proc/self/fdinfo; L{None} when it is not registered.
    """
    with open(f"/proc/self/fdinfo/{poller.fileno()}") as f:
        for line in f:
            fields = line.split()
            if fields[:1] == ["tfd:"] and int(fields[1]) == fd:
                return int(fields[3], 16)
    return None


class PlainRegistrationTests(AdoptedPortTests):
    """
    The same behaviour with Twisted's plain registration, the fallback for
    reactors other than epoll.
    """

    wakeup = "plain"

    @inlineCallbacks
    def test_plainRegistration(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{--accept-wakeup plain} registers the port as Twisted does, even
        on the epoll reactor.
        """
        listener = self.listen()
        budget = AcceptBudget()
        port = self.adopt(listener, budget)
        assert not port.exclusive
        poller = getattr(reactor, "_poller", None)
        if isinstance(poller, select.epoll):
            events = epollEvents(poller, port.fileno())
            assert events is not None and not events & select.EPOLLEXCLUSIVE
        yield self.closeAll(budget, [])


class ExclusiveRegistrationTests(_PortTests):
    """
    On the epoll reactor an adopted port waits with EPOLLEXCLUSIVE, in the
    reactor's own epoll, and keeps doing so across pauses and reorders.
    """

    def setUp(self) -> None:
        if not exclusiveWakeups(reactor):
            raise SkipTest("not the epoll reactor, or no EPOLLEXCLUSIVE")

    def events(self, port: Any) -> int | None:
        """
        The port's registration in the reactor's epoll: its direction and
        the exclusive flag (the kernel adds EPOLLERR and EPOLLHUP itself).
        """
        mask = select.EPOLLIN | select.EPOLLOUT | select.EPOLLEXCLUSIVE
        events = epollEvents(reactor._poller, port.fileno())  # type: ignore[attr-defined]
        return None if events is None else events & mask

    @inlineCallbacks
    def test_exclusiveAcrossPauses(self) -> Generator[Deferred[Any], Any, None]:
        """
        The flag is there from the start, the cap's pause removes the
        registration, and the resume adds it back, exclusive again.
        """
        listener = self.listen()
        budget = AcceptBudget(maxConcurrent=1)
        port = self.adopt(listener, budget)
        want = select.EPOLLIN | select.EPOLLEXCLUSIVE
        assert self.events(port) == want
        clients = self.connect(listener, 2)
        yield pollUntil(lambda: budget.accepted == 1)
        assert self.events(port) is None
        clients[0].close()
        yield pollUntil(lambda: budget.accepted == 2)
        assert budget.open == 1
        assert self.events(port) is None
        clients[1].close()
        yield pollUntil(lambda: budget.open == 0)
        assert self.events(port) == want
        yield self.closeAll(budget, clients)
        assert self.events(port) is None

    @inlineCallbacks
    def test_standbyThenActivate(self) -> Generator[Deferred[Any], Any, None]:
        """
        A standby's port is not registered at all until it is released.
        """
        listener = self.listen()
        budget = AcceptBudget()
        budget.held = True
        port = self.adopt(listener, budget)
        assert self.events(port) is None
        budget.release()
        assert self.events(port) == select.EPOLLIN | select.EPOLLEXCLUSIVE
        yield self.closeAll(budget, [])

    def readds(self, count: int) -> Deferred[list[int]]:
        """
        Accept C{count} connections one per wake-up, and return the counts
        at which the registration was added again.
        """
        listener = self.listen()
        budget = AcceptBudget()
        budget.batch = 1
        port = self.adopt(listener, budget)
        readds: list[int] = []
        original = port.startReading

        def counting() -> None:
            readds.append(budget.accepted)
            original()

        port.startReading = counting
        clients = self.connect(listener, count)

        @inlineCallbacks
        def accepted() -> Generator[Deferred[Any], Any, list[int]]:
            yield pollUntil(lambda: budget.accepted == count)
            assert self.events(port) == select.EPOLLIN | select.EPOLLEXCLUSIVE
            yield self.closeAll(budget, clients)
            return readds

        return accepted()

    @inlineCallbacks
    def test_reorder(self) -> Generator[Deferred[Any], Any, None]:
        """
        Every C{--accept-reorder} accepts the registration is deleted and
        added again (a new place in the wait queue), still exclusive, and
        nothing queued is lost on the way.
        """
        every = self.reorder
        readds = yield self.readds(every * 2 + 1)
        assert readds == [every, 2 * every]

    @inlineCallbacks
    def test_reorderOther(self) -> Generator[Deferred[Any], Any, None]:
        """
        Another C{--accept-reorder} figure is the one used.
        """
        self.reorder = 5
        readds = yield self.readds(11)
        assert readds == [5, 10]

    @inlineCallbacks
    def test_neverReorder(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{--accept-reorder 0} keeps the first registration for good.
        """
        self.reorder = 0
        readds = yield self.readds(20)
        assert readds == []

    def test_plainWhenNotEpoll(self) -> None:
        """
        Any other reactor gets Twisted's own registration.
        """
        from twisted.internet.pollreactor import PollReactor

        assert not exclusiveWakeups(PollReactor())
        assert not exclusiveWakeups(MemoryReactor())
        assert not exclusiveWakeups(reactor, "plain")
