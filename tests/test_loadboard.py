"""
Balance between workers through the load board: the shared memory itself,
what a worker's budget publishes there, how an adopted port leaves a burst
to a less busy sibling (in process, with a sibling simulated on the board),
and long-lived connections spread over real workers.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from preforktwist.protocol import loadboard
from preforktwist.protocol.loadboard import ABSENT, LoadBoard
from preforktwist.worker import balance, ports
from preforktwist.worker.balance import BALANCE_SLACK, CHURN_CLOSES, balanceMargin
from preforktwist.worker.budget import AcceptBudget
from tests.conftest import StartMaster
from tests.test_accepting import _PortTests, pollUntil, settle

needsBoard = pytest.mark.skipif(
    not loadboard.available(), reason="no memfd_create on this platform"
)


@needsBoard
def test_boardSlotsAndLeastBusy() -> None:
    """
    Slots are given lowest first and start absent; a worker reads the least
    busy of the others, never itself nor an absent slot; a cleared slot
    counts no more and is given out again.
    """
    board = LoadBoard.create(8)
    try:
        assert [board.allot(set()), board.allot({0}), board.allot({0, 1})] == [0, 1, 2]
        assert board.leastBusy(0) is None
        board.publish(0, 5)
        board.publish(1, 3)
        assert board.leastBusy(0) == (1, 3)
        assert board.leastBusy(1) == (0, 5)
        assert board.leastBusy(2) == (1, 3)
        board.clear(1)
        assert board.value(1) == ABSENT
        assert board.leastBusy(0) is None
        assert board.allot({0, 2}) == 1
        with pytest.raises(ValueError):
            board.allot(set(range(8)))
    finally:
        board.close()


@needsBoard
def test_boardSharedThroughItsDescriptor() -> None:
    """
    A worker maps the board from the descriptor it inherits and closes it;
    what either side writes, the other reads.
    """
    master = LoadBoard.create(4)
    assert master.fd is not None
    try:
        slot = master.allot(set())
        worker = LoadBoard.attach(os.dup(master.fd))
        assert worker.fd is None and worker.capacity == 4
        worker.publish(slot, 7)
        assert master.value(slot) == 7
        master.clear(slot)
        assert worker.value(slot) == ABSENT
        worker.close()
    finally:
        master.close()


@needsBoard
def test_budgetPublishesOnlyWhileAccepting() -> None:
    """
    The open count is published as it changes; a held standby, a worker
    that stopped accepting, and a draining one publish absent.
    """
    board = LoadBoard.create(4)
    try:
        budget = AcceptBudget()
        budget.held = True
        budget.shareLoad(board, 2)
        assert board.value(2) == ABSENT
        budget.release()
        assert board.value(2) == 0
        budget.recordAccepted(3)
        budget.recordClosed()
        assert board.value(2) == 2
        budget.close(drain=True)
        assert board.value(2) == ABSENT
    finally:
        board.close()


def test_margin() -> None:
    """
    A worker may hold a few more than its least busy sibling, and for large
    counts at most a quarter more.
    """
    assert balanceMargin(0) == BALANCE_SLACK
    assert balanceMargin(100) == 125


@needsBoard
class BalanceTests(_PortTests):
    """
    One adopted port in this process, and a sibling that exists only as a
    slot on the board: this worker takes what keeps it within the margin of
    the sibling's count, and leaves the rest queued while the sibling makes
    progress.
    """

    def setUp(self) -> None:
        self.board = LoadBoard.create(4)
        self.addCleanup(self.board.close)
        self.sibling = self.board.allot(set())
        self.board.publish(self.sibling, 0)
        self.budget = AcceptBudget()
        self.budget.shareLoad(self.board, self.board.allot({self.sibling}))

    def waitFor(self, seconds: float) -> None:
        self.patch(ports, "BALANCE_WAIT", seconds)

    @inlineCallbacks
    def test_leavesTheBurstToTheSibling(self) -> Generator[Deferred[Any], Any, None]:
        """
        20 queued, a sibling holding none: the worker takes the margin and
        leaves 12 queued for as long as its wait lasts.
        """
        self.waitFor(60)
        listener = self.listen()
        clients = self.connect(listener, 20)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == BALANCE_SLACK)
        yield settle()
        assert self.budget.accepted == BALANCE_SLACK
        assert self.queued(listener) == 20 - BALANCE_SLACK
        yield self.closeAll(self.budget, clients)

    @inlineCallbacks
    def test_closeEndsTheWait(self) -> Generator[Deferred[Any], Any, None]:
        """
        One of its own connections closing gives the worker room again at
        once, whatever the wait.
        """
        self.waitFor(60)
        listener = self.listen()
        clients = self.connect(listener, 20)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == BALANCE_SLACK)
        clients[0].close()
        yield pollUntil(lambda: self.budget.accepted == BALANCE_SLACK + 1)
        yield settle()
        assert (self.budget.accepted, self.budget.open) == (
            BALANCE_SLACK + 1,
            BALANCE_SLACK,
        )
        yield self.closeAll(self.budget, clients)

    @inlineCallbacks
    def test_churnIgnoresTheBoard(self) -> Generator[Deferred[Any], Any, None]:
        """
        While connections close here as they come (a connection-rate
        load), the worker does not weigh its siblings, and takes 20 while
        its sibling holds none; once they stop closing for a while, it does
        again, and leaves what comes next to the sibling.
        """
        self.waitFor(60)
        self.patch(balance, "BALANCE_QUIET", 0.5)
        listener = self.listen()
        clients = self.connect(listener, CHURN_CLOSES)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == CHURN_CLOSES)
        for client in clients:
            client.close()
        yield pollUntil(lambda: self.budget.open == 0)
        clients = self.connect(listener, 20)
        yield pollUntil(lambda: self.budget.open == 20)
        yield deferLater(reactor, 0.6, lambda: None)
        clients += self.connect(listener, 5)
        yield settle()
        assert self.budget.open == 20
        assert self.queued(listener) == 5
        yield self.closeAll(self.budget, clients)

    @inlineCallbacks
    def test_waitsWhileTheSiblingProgresses(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """
        After its wait, the worker takes what the sibling's new count
        allows, and waits again.
        """
        self.waitFor(0.2)
        listener = self.listen()
        clients = self.connect(listener, 40)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == BALANCE_SLACK)
        self.board.publish(self.sibling, 4)
        yield pollUntil(lambda: self.budget.accepted == balanceMargin(4))
        yield deferLater(reactor, 0.1, lambda: None)
        assert self.budget.accepted == balanceMargin(4)
        yield self.closeAll(self.budget, clients)

    @inlineCallbacks
    def test_stuckSiblingIsNotWaitedFor(self) -> Generator[Deferred[Any], Any, None]:
        """
        A sibling whose count does not move is not accepting: after one
        wait, the worker serves the whole queue.
        """
        self.waitFor(0.05)
        listener = self.listen()
        clients = self.connect(listener, 30)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == 30)
        yield self.closeAll(self.budget, clients)

    @inlineCallbacks
    def test_drainIgnoresTheBoard(self) -> Generator[Deferred[Any], Any, None]:
        """
        At a stop, the worker drains the whole queue: balance no longer
        matters, and nothing may be left queued when the sockets close.
        """
        self.waitFor(60)
        listener = self.listen()
        clients = self.connect(listener, 20)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == BALANCE_SLACK)
        yield self.budget.close(drain=True)
        assert self.budget.accepted == 20
        assert self.queued(listener) == 0
        for client in clients:
            client.close()
        yield pollUntil(lambda: self.budget.open == 0)


@needsBoard
@pytest.mark.parametrize("workers", [2, 3])
def test_longLivedBurstIsSpread(serve: StartMaster, workers: int) -> None:
    """
    150 clients connect at once and stay: every worker holds its share,
    the busiest at most 1.5 times the idlest (the first worker awake would
    otherwise take most of the burst before its siblings run).
    """
    master = serve("-w", str(workers), "-p", "tests.apps.PidHold")
    master.waitForWorkers(workers)
    clients = []
    try:
        for _ in range(150):
            clients.append(socket.create_connection(("127.0.0.1", master.port), 10))
        held: Counter[int] = Counter()
        for client in clients:
            client.sendall(b"?")
            held[int(client.makefile("rb").readline())] += 1
    finally:
        for client in clients:
            client.close()
    print("held per worker:", sorted(held.values()))
    assert len(held) == workers, held
    assert max(held.values()) <= 1.5 * min(held.values()), held
