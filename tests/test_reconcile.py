"""
The pool's one step, L{Pool.reconcile}, against seeded random sequences of
events on a fake clock with fake workers: after every event, none of the
pool's invariants is broken; at the end, left alone, the pool settles with
its size serving, and stops with every worker gone.  A failure names its
seed and the events that led to it: C{runSequence(seed)} replays them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from twisted.internet.task import Clock

from preforktwist.master.events import (
    PoolEvent,
    ProcessEnd,
    RestartCause,
    WorkersChanged,
)
from preforktwist.master.pool import Pool, PoolConfig, WorkerRecord, WorkerState
from preforktwist.master.pool.invariants import Invariants
from preforktwist.protocol.control import ReplaceCause
from tests.test_pool import CLEAN_EXIT, KILLED, FakeWorker, Harness

#: How many sequences, and how many events in each.
SEQUENCES = 300
EVENTS = 80


class Sequence:
    """
    One random sequence: a pool whose starter fails now and then, and
    sometimes brings news to the pool while the pool is starting a worker
    (an event during its step, which must wait for the step to end).
    """

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.seed = seed
        self.clock = Clock()
        self.spawned: list[FakeWorker] = []
        self.history: list[str] = []
        self.spawnFailures = 0.05
        self.spawnNews = 0.05
        self.spawning = self.nestedStarts = 0
        self.pool = Pool(self.spawn, self.config(), self.clock, giveUp=self.gaveUp)
        self.gaveUpWith: list[str] = []
        self.stopped: list[None] = []

    def config(self) -> PoolConfig:
        r = self.random
        return PoolConfig(
            size=r.randint(1, 4),
            surplus=r.randint(1, 2),
            standby=r.choice([0, 0, 1]),
            grace=8.0,
            bootTimeout=10.0,
            backoff=0.5,
            maxBackoff=4.0,
            heartbeatTimeout=r.choice([0.0, 6.0]),
            renewInterval=r.choice([0.0, 10.0]),
        )

    def gaveUp(self, reason: str) -> None:
        self.gaveUpWith.append(reason)

    def spawn(self, number: int, standby: bool) -> FakeWorker:
        # Counted, not asserted: the pool takes an exception for a failure.
        self.nestedStarts += self.spawning
        if self.random.random() < self.spawnFailures:
            raise OSError(24, "Too many open files")
        self.spawning += 1
        try:
            if self.random.random() < self.spawnNews:
                self.news()
        finally:
            self.spawning -= 1
        worker = FakeWorker(number)
        worker.standby = standby
        self.spawned.append(worker)
        return worker

    def news(self) -> None:
        """An event that arrives while the pool starts a worker."""
        self.operatorEvent("news: ")

    def note(self, what: str, event: Callable[[], object]) -> None:
        self.history.append(what)
        event()

    def some(self, *states: WorkerState) -> FakeWorker | None:
        workers = self.pool.inState(*states)
        if not workers:
            return None
        worker = self.random.choice(workers)
        assert isinstance(worker, FakeWorker)
        return worker

    def unready(self) -> FakeWorker | None:
        """A worker still booting (the pool may be stopping meanwhile)."""
        pool = self.pool
        workers = [
            w
            for w in self.spawned
            if w.number in pool.workers
            and w.state in (WorkerState.BOOTING, WorkerState.STOPPING)
            and pool.record(w).readyAt is None
            and "stop" not in w.calls
        ]
        return self.random.choice(workers) if workers else None

    def check(self) -> None:
        broken = self.pool.broken
        if self.nestedStarts:
            broken = [*broken, "a worker started while another was starting"]
        assert not broken, (
            f"seed {self.seed}: {broken} after: {'; '.join(self.history[-12:])}"
        )

    def event(self) -> None:
        """One random event, and the invariants checked after it."""
        r, pool = self.random, self.pool
        kinds = [self.workerEvent, self.workerEvent, self.workerEvent, self.timePasses]
        if not pool.stopping:
            kinds += [self.operatorEvent]
        if r.random() < 0.01:
            kinds = [self.stopEvent]
        r.choice(kinds)()
        self.check()

    def workerEvent(self) -> None:
        """What a worker says or does, or its exit."""
        r, pool = self.random, self.pool
        B, A, S = WorkerState.BOOTING, WorkerState.ACCEPTING, WorkerState.STANDBY
        R, T = WorkerState.RETIRING, WorkerState.STOPPING
        cause = r.choice(list(ReplaceCause))

        def bootFails(w: FakeWorker) -> None:
            pool.workerBootFailed(w, "cannot import app")
            pool.workerExited(w, ProcessEnd(status=3))

        def released(w: FakeWorker) -> None:
            if "stop" in w.calls and not w.stopped.called:
                w.stopped.callback(None)

        events: list[tuple[str, FakeWorker | None, Callable[[FakeWorker], object]]] = [
            ("ready", self.unready(), pool.workerReady),
            ("ready", self.unready(), pool.workerReady),
            ("boot failure", self.some(B), bootFails),
            ("crash", self.some(A, S), lambda w: pool.workerExited(w, KILLED)),
            ("exit", self.some(R, T), lambda w: pool.workerExited(w, CLEAN_EXIT)),
            ("near allowance", self.some(A), pool.workerNearAllowance),
            (
                f"replace me ({cause.value})",
                self.some(A),
                lambda w: pool.workerWantsReplacement(w, cause),
            ),
            ("released", self.some(T), released),
        ]
        what, worker, act = r.choice(events)
        if worker is not None:
            self.note(f"{what} {worker.number}", lambda: act(worker))

    def timePasses(self) -> None:
        seconds = self.random.choice([0.1, 0.5, 1.0, 2.0, 5.0])
        for worker in self.pool.workers.values():
            if self.random.random() < 0.9:
                self.pool.workerAlive(worker)
        self.note(f"advance {seconds}", lambda: self.clock.advance(seconds))

    def operatorEvent(self, prefix: str = "") -> None:
        """A reload, a resize, or a limit (or its allowance) reached."""
        r, pool = self.random, self.pool
        choice = r.randrange(4)
        if choice == 0:
            self.note(f"{prefix}reload", pool.reload)
        elif choice == 1:
            size = r.randint(1, 5)
            self.note(f"{prefix}resize {size}", lambda: pool.resize(size))
        elif w := self.some(WorkerState.ACCEPTING):
            why = r.choice(
                [RestartCause.MEMORY, RestartCause.AGE, RestartCause.ALLOWANCE]
            )
            self.note(
                f"{prefix}replace {w.number} ({why.value})",
                lambda: pool.replaceAhead(w, why),
            )

    def stopEvent(self) -> None:
        if not self.pool.stopping:
            self.note("stop", lambda: self.pool.stop().addCallback(self.stopped.append))
        else:
            self.note("stop now", self.pool.stopNow)

    def settle(self) -> None:
        """
        No more failures or news: workers become ready, retire and exit as
        they are told, and time passes, until nothing is left to do.
        """
        self.spawnFailures = self.spawnNews = 0.0
        pool = self.pool
        for _ in range(60):
            moving = pool.reloading or pool.backoff.holding
            for worker in list(pool.workers.values()):
                assert isinstance(worker, FakeWorker)
                pool.workerAlive(worker)
                if worker.state is WorkerState.BOOTING:
                    moving = True
                    pool.workerReady(worker)
                elif worker.state is WorkerState.RETIRING or "kill" in worker.calls:
                    moving = True
                    pool.workerExited(worker, CLEAN_EXIT)
            self.check()
            if not moving:
                return
            self.clock.advance(5.0)

    def run(self) -> None:
        self.pool.start()
        self.check()
        for _ in range(EVENTS):
            self.event()
        if not self.pool.stopping:
            self.settle()
            self.settled()
            self.note("stop", lambda: self.pool.stop().addCallback(self.stopped.append))
        self.finish()

    def finish(self) -> None:
        """
        The stop: once every worker still booting is ready and each has
        closed its sockets, the pool is drained; once each exited, stopped.
        """
        pool = self.pool
        drained: list[None] = []
        pool.whenDrained().addCallback(drained.append)
        while worker := self.unready():
            pool.workerReady(worker)
        for worker in self.spawned:
            if "stop" in worker.calls and not worker.stopped.called:
                worker.stopped.callback(None)
        assert drained == [None], f"seed {self.seed}: never drained"
        for gone in list(pool.workers.values()):
            pool.workerExited(gone, CLEAN_EXIT)
        self.check()
        assert self.stopped == [None], f"seed {self.seed}: the stop never fired"

    def settled(self) -> None:
        """Left alone, the pool serves at its size, unless it gave up."""
        pool = self.pool
        if pool.gaveUp:
            assert len(self.gaveUpWith) == 1, f"seed {self.seed}"
            return
        serving = [w for w in pool.roster.serving() if w.state is WorkerState.ACCEPTING]
        where = f"seed {self.seed}: {pool.summary()}, size {pool.size}"
        assert len(serving) == pool.size, where
        assert not pool.reloading and not pool.roster.replacedEarly(), where


def runSequence(seed: int) -> None:
    Sequence(seed).run()


def test_random_sequences_keep_the_invariants() -> None:
    """
    Hundreds of sequences, each seeded with its number: the pool's steps
    never break an invariant, and each sequence ends served, then stopped.
    """
    for seed in range(SEQUENCES):
        runSequence(seed)


def test_an_event_during_a_step_waits_for_it() -> None:
    """
    News that reaches the pool while it starts a worker (here: grow the
    pool) is acted upon once the step is over, not by a step nested in it:
    no worker is started while another is being started.
    """
    depth: list[int] = []
    h: list[Harness] = []

    def spawn(number: int, standby: bool) -> FakeWorker:
        depth.append(len(depth))
        if number == 1:
            h[0].pool.resize(3)
        worker = h[0].spawn(number, standby)
        depth.pop()
        return worker

    h.append(Harness(1, spawn=spawn))
    pool = h[0].pool
    started: list[int] = []

    def heard(event: PoolEvent) -> None:
        if isinstance(event, WorkersChanged):
            started.append(len(pool.workers))

    pool.observers.append(heard)
    pool.start()
    assert [w.number for w in h[0].spawned] == [1, 2, 3]
    assert depth == []
    # One step, with its second pass for the news: the observers hear of
    # the changes once each pass is done.
    assert started == [1, 3]


def test_invariants_are_checked_after_each_step() -> None:
    """
    A pool that breaks an invariant says so: here, a worker retired for a
    reload while only one other accepts (made by hand: the pool's own step
    never does it) is found after the next step, and kept in C{broken}.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    first = h.spawned[0]
    first.state = WorkerState.RETIRING
    h.pool.record(first).retiredFor = RestartCause.RELOAD
    h.pool.reconcile()
    assert h.pool.broken == [
        "worker 1 was retired for its replacement with 1 accepting, size 2"
    ]
    h.pool.reconcile()
    assert len(h.pool.broken) == 1  # against the step before: found once
    del h.pool.broken[:]


def brokenByHand(which: int) -> list[str]:
    """
    A pool put by hand (never by its own step) in a state that breaks
    invariant C{which}, checked as after a step.
    """
    h = Harness(2, standby=1 if which == 5 else 0)
    pool = h.pool
    pool.start()
    h.readyAll()
    checker = Invariants()
    assert checker.check(pool) == []
    first = h.spawned[0]
    if which == 1:
        pool.stop()
        first.state = WorkerState.ACCEPTING
    elif which == 2:
        for number in (11, 12):
            pool.roster.add(FakeWorker(number), WorkerRecord(0, 0.0))
    elif which == 3:
        pool.size = 1
    elif which in (4, 5):
        first.state = WorkerState.RETIRING
        pool.record(first).retiredFor = RestartCause.AGE if which == 4 else None
    return checker.check(pool)


@pytest.mark.parametrize("which", [1, 2, 3, 4, 5])
def test_each_invariant_can_be_found_broken(which: int) -> None:
    """
    Each invariant finds what breaks it, and only that one does.
    """
    broken = brokenByHand(which)
    expected = {
        1: "the pool stops, yet worker 1 is accepting",
        2: "4 booting or accepting once worker 11 joined them, more than 3",
        3: "2 accepting and not being replaced, size 1",
        4: "worker 1 was retired for its replacement with 1 accepting, size 2",
        5: "worker 3 is ready and idle while a place is free",
    }
    assert broken == [expected[which]]
