"""
Balance between workers through the load board: the shared memory itself,
what a worker's budget publishes there, when a worker waits for a sibling
and when it gives up on one (a fake clock and scheduler), how an adopted
port leaves a burst to a less busy sibling (in process, with a sibling
simulated on the board), and long-lived connections spread over real
workers, one of them busy.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from collections import Counter
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from preforktwist.protocol import loadboard
from preforktwist.protocol.loadboard import ABSENT, LoadBoard
from preforktwist.worker import balance, ports
from preforktwist.worker.balance import (
    BALANCE_PATIENCE,
    BALANCE_SLACK,
    CHURN_CLOSES,
    Balance,
    Scheduled,
    balanceMargin,
    scheduled,
)
from preforktwist.worker.budget import AcceptBudget
from tests.conftest import StartMaster
from tests.harness import waitUntil
from tests.test_accepting import _PortTests, pollUntil, settle

needsBoard = pytest.mark.skipif(
    not loadboard.available(), reason="no memfd_create on this platform"
)


def sleeping(pid: int) -> bool:
    """
    Whether the kernel says the process C{pid} sleeps (L{scheduled}).
    """
    seen = scheduled(pid)
    return seen is not None and not seen.runnable


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
    what either side writes, the other reads: counts and owners' pids, both
    cleared when the master clears a slot.
    """
    master = LoadBoard.create(4)
    assert master.fd is not None
    try:
        slot = master.allot(set())
        worker = LoadBoard.attach(os.dup(master.fd))
        assert worker.fd is None and worker.capacity == 4
        assert worker.owner(slot) == 0
        worker.claim(slot, 4242)
        worker.publish(slot, 7)
        assert (master.value(slot), master.owner(slot)) == (7, 4242)
        master.clear(slot)
        assert (worker.value(slot), worker.owner(slot)) == (ABSENT, 0)
        worker.close()
    finally:
        master.close()


@needsBoard
def test_budgetPublishesOnlyWhileAccepting() -> None:
    """
    The worker's pid is published with its slot, and its open count as it
    changes; a held standby, a worker that stopped accepting, and a
    draining one publish absent.
    """
    board = LoadBoard.create(4)
    try:
        budget = AcceptBudget()
        budget.held = True
        budget.shareLoad(board, 2)
        assert board.owner(2) == os.getpid()
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


class _Sibling:
    """
    A fake clock, and what the kernel would say of a sibling: the clock
    and scheduler a L{Balance} is given.
    """

    def __init__(self) -> None:
        self.now = 0.0
        #: Whether the kernel knows the sibling at all.
        self.known = True
        self.runnable = True
        self.runnableTime = 0.0

    def clock(self) -> float:
        return self.now

    def scheduler(self, pid: int) -> Scheduled | None:
        assert pid == 4242
        return Scheduled(self.runnable, self.runnableTime) if self.known else None

    def wait(self, balance: Balance, open: int, ran: float) -> None:
        """
        A worker holding C{open} steps back for a whole wait of 5 ms, during
        which the sibling runs C{ran} of the time.
        """
        assert balance.room(open) == 0
        self.now += 0.005
        self.runnableTime += 0.005 * ran
        balance.waitOver()

    def waitsUntilGivenUp(self, balance: Balance, open: int, ran: float) -> int:
        """
        How many such waits it takes until the worker no longer waits.
        """
        waits = 0
        while balance.room(open) == 0:
            self.wait(balance, open, ran)
            waits += 1
            assert waits < 10_000
        return waits


#: Waits of 5 ms that add up to the patience.
PATIENT_WAITS = round(BALANCE_PATIENCE / 0.005)


@pytest.fixture
def sibling() -> Iterator[tuple[Balance, LoadBoard, _Sibling]]:
    """
    A worker's balance on a board where its one sibling (slot 0, pid 4242)
    holds 4 connections.
    """
    board = LoadBoard.create(4)
    fake = _Sibling()
    balance = Balance(clock=fake.clock, scheduler=fake.scheduler)
    board.claim(board.allot(set()), 4242)
    board.publish(0, 4)
    balance.share(board, board.allot({0}), os.getpid())
    yield balance, board, fake
    board.close()


@needsBoard
def test_runningSiblingIsWaitedForUpToThePatience(
    sibling: tuple[Balance, LoadBoard, _Sibling],
) -> None:
    """
    A sibling that runs or waits for a core through every wait, its count
    standing still (a long turn of its reactor), is waited for until the
    waits add up to L{balance.BALANCE_PATIENCE}; then the worker goes on,
    a few connections per turn, without waiting.
    """
    balance, _, fake = sibling
    waits = fake.waitsUntilGivenUp(balance, balanceMargin(4), ran=1.0)
    assert PATIENT_WAITS - 1 <= waits <= PATIENT_WAITS + 1
    assert balance.room(balanceMargin(4)) == BALANCE_SLACK
    assert balance.room(balanceMargin(4) + BALANCE_SLACK) == BALANCE_SLACK


@needsBoard
def test_sleepingSiblingIsGivenUpAfterOneWait(
    sibling: tuple[Balance, LoadBoard, _Sibling],
) -> None:
    """
    A sibling that sleeps after a wait it spent mostly asleep (blocked in
    the application, or in C{epoll_wait} without having been woken for
    what is queued) is not waited for again; one that sleeps now but ran
    through most of the wait (briefly blocked in a busy turn) is.
    """
    balance, _, fake = sibling
    fake.runnable = False
    for _ in range(3):
        fake.wait(balance, balanceMargin(4), ran=0.6)
    fake.wait(balance, balanceMargin(4), ran=0.4)
    assert balance.room(balanceMargin(4)) == BALANCE_SLACK


@needsBoard
def test_siblingThatMovesIsWaitedForAgain(
    sibling: tuple[Balance, LoadBoard, _Sibling],
) -> None:
    """
    A wait during which the sibling's count moved says nothing of it; a
    sibling given up for is waited for again as soon as its count moves;
    and the patience starts over once this worker has room again.
    """
    balance, board, fake = sibling
    fake.runnable = False
    assert balance.room(balanceMargin(4)) == 0
    board.publish(0, 5)
    fake.now += 0.005
    balance.waitOver()
    assert fake.waitsUntilGivenUp(balance, balanceMargin(5), ran=0.0) == 1
    board.publish(0, 6)
    assert balance.room(balanceMargin(6)) == 0
    fake.runnable = True
    fake.waitsUntilGivenUp(balance, balanceMargin(6), ran=1.0)
    assert balance.room(balanceMargin(6) - 1) == 1
    waits = fake.waitsUntilGivenUp(balance, balanceMargin(6), ran=1.0)
    assert waits >= PATIENT_WAITS - 1


@needsBoard
def test_unknownSiblingIsWaitedForUpToThePatience(
    sibling: tuple[Balance, LoadBoard, _Sibling],
) -> None:
    """
    A sibling whose state the kernel does not say, or whose pid is not on
    the board, is waited for as one that runs.
    """
    balance, board, fake = sibling
    fake.known = False
    waits = fake.waitsUntilGivenUp(balance, balanceMargin(4), ran=0.0)
    assert waits >= PATIENT_WAITS - 1
    assert balance.room(balanceMargin(4) - 1) == 1
    board.clear(0)
    board.publish(0, 4)
    fake.known = True
    fake.runnable = False
    waits = fake.waitsUntilGivenUp(balance, balanceMargin(4), ran=0.0)
    assert waits >= PATIENT_WAITS - 1


def test_scheduledRunningAndSleeping() -> None:
    """
    The kernel says this process runs while it asks, a C{sleep} child
    sleeps (and its runnable time stands still), and a process that is not
    there has no state.
    """
    if scheduled(os.getpid()) is None:
        pytest.skip("no /proc/PID/schedstat on this system")
    here = scheduled(os.getpid())
    assert here is not None and here.runnable
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        waitUntil(lambda: sleeping(sleeper.pid), 10, "the child sleeping")
        before = scheduled(sleeper.pid)
        after = scheduled(sleeper.pid)
        assert before is not None and after is not None
        assert after.runnableTime == before.runnableTime > 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert scheduled(sleeper.pid) is None


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
    def test_sleepingSiblingIsNotWaitedFor(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """
        A sibling whose count does not move and that sleeps through a wait
        (a real process, blocked) is not accepting: after one wait, the
        worker serves the whole queue, however patient it would be with a
        sibling that runs.
        """
        sleeper = subprocess.Popen(["sleep", "30"])
        self.addCleanup(sleeper.wait)
        self.addCleanup(sleeper.kill)
        self.board.claim(self.sibling, sleeper.pid)
        yield pollUntil(lambda: sleeping(sleeper.pid))
        self.patch(balance, "BALANCE_PATIENCE", 60)
        self.waitFor(0.05)
        listener = self.listen()
        clients = self.connect(listener, 30)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == 30)
        yield self.closeAll(self.budget, clients)

    @inlineCallbacks
    def test_runningSiblingIsWaitedFor(self) -> Generator[Deferred[Any], Any, None]:
        """
        A sibling whose count does not move but that runs (busy through a
        long turn, or waiting for a core) is waited for, wait after wait,
        for as long as L{balance.BALANCE_PATIENCE}; then the worker serves
        the queue.
        """
        # Each look at the clock is a hundredth of a second later: the
        # patience lasts that many looks, however slow the machine.
        ticks = itertools.count()
        slot = self.budget.balance.slot
        self.budget.balance = Balance(
            clock=lambda: next(ticks) / 100,
            scheduler=lambda pid: Scheduled(True, 0.0),
        )
        self.budget.shareLoad(self.board, slot)
        self.board.claim(self.sibling, 4242)
        self.patch(balance, "BALANCE_PATIENCE", 1.0)
        self.waitFor(0.01)
        listener = self.listen()
        clients = self.connect(listener, 30)
        self.adopt(listener, self.budget)
        yield pollUntil(lambda: self.budget.accepted == BALANCE_SLACK)
        yield settle()
        assert self.budget.accepted == BALANCE_SLACK
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


@needsBoard
def test_burstBesideABusySiblingIsSpread(serve: StartMaster) -> None:
    """
    100 clients connect at once and stay while one of two workers is busy
    through a long turn of its reactor (on a core, its count on the board
    standing still): the other worker does not take that for a stuck
    sibling and the whole burst, but waits for the busy one, which ends
    with its share: the busiest at most 1.5 times the idlest.
    """
    master = serve("-w", "2", "-p", "tests.apps.BusyPidHold")
    master.waitForWorkers(2)
    address = ("127.0.0.1", master.port)
    busy = socket.create_connection(address, 10)
    clients: list[socket.socket] = []
    try:
        busy.sendall(b"busy")
        for _ in range(100):
            client = socket.socket()
            clients.append(client)
            client.setblocking(False)
            # A connect on loopback completes or is in progress at once.
            client.connect_ex(address)
        held: Counter[int] = Counter()
        for client in clients:
            client.settimeout(10)
            client.sendall(b"?")
            held[int(client.makefile("rb").readline())] += 1
    finally:
        for client in [busy, *clients]:
            client.close()
    print("held per worker:", sorted(held.values()))
    assert len(held) == 2, held
    assert max(held.values()) <= 1.5 * min(held.values()), held
