"""
The pool's rules, with a fake clock and fake workers: no processes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from preforktwist.master.events import ProcessEnd, RestartCause
from preforktwist.master.pool import Pool, PoolConfig, WorkerState
from preforktwist.protocol.control import ReplaceCause

#: How the fake workers end.
CLEAN_EXIT = ProcessEnd(status=0)
KILLED = ProcessEnd(signal=signal.SIGKILL)


class FakeWorker:
    def __init__(self, number: int) -> None:
        self.number = number
        self.pid: int | None = None
        self.state = WorkerState.BOOTING
        self.accepted = self.served = self.open = 0
        self.standby = False
        self.calls: list[str] = []

    def describe(self) -> str:
        return f"worker {self.number}"

    def retire(self) -> None:
        self.calls.append("retire")

    def stop(self) -> Deferred[None]:
        self.calls.append("stop")
        self.stopped: Deferred[None] = Deferred()
        return self.stopped

    def kill(self) -> None:
        self.calls.append("kill")

    def terminate(self) -> None:
        self.calls.append("terminate")

    def dumpStack(self) -> None:
        self.calls.append("dumpStack")

    def activate(self) -> None:
        self.calls.append("activate")


class Harness:
    """
    A pool on a fake clock, whose workers are L{FakeWorker}s.  Every
    harness made is checked, once its test is over, for a broken invariant
    after any of the pool's steps (see C{tests/conftest.py}).
    """

    made: list[Harness] = []

    def __init__(
        self,
        size: int = 3,
        spawn: Callable[[int, bool], FakeWorker] | None = None,
        renew: Callable[[], None] = lambda: None,
        clock: Clock | None = None,
        **settings: float,
    ) -> None:
        self.clock = clock or Clock()
        self.spawned: list[FakeWorker] = []
        self.gaveUp: list[str] = []
        self.pool = Pool(
            spawn or self.spawn,
            PoolConfig(size, **settings),  # type: ignore[arg-type]
            self.clock,
            giveUp=self.gaveUp.append,
            renew=renew,
        )
        Harness.made.append(self)

    def spawn(self, number: int, standby: bool = False) -> FakeWorker:
        worker = FakeWorker(number)
        worker.standby = standby
        self.spawned.append(worker)
        return worker

    def busy(self) -> int:
        return len(self.pool.inState(WorkerState.BOOTING, WorkerState.ACCEPTING))

    def readyAll(self) -> None:
        for worker in list(self.pool.workers.values()):
            if worker.state is WorkerState.BOOTING:
                self.pool.workerReady(worker)


def test_start_fills_the_pool() -> None:
    h = Harness(3)
    h.pool.start()
    assert len(h.spawned) == 3
    h.readyAll()
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 3


def test_replacement_first() -> None:
    """
    A worker that used its allowance retires and is replaced at once; it
    stays alive while it finishes, without counting against the size.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    old = h.spawned[0]
    h.pool.workerWantsReplacement(old, ReplaceCause.ALLOWANCE)
    assert old.state is WorkerState.RETIRING
    assert len(h.spawned) == 3
    assert h.busy() == 2
    h.pool.workerExited(old, CLEAN_EXIT)
    assert len(h.spawned) == 3


def test_never_more_than_size_busy() -> None:
    """
    Whatever happens to workers, never more than `size` boot or accept.
    """
    h = Harness(3)
    h.pool.start()
    for round in range(50):
        worker = h.spawned[round % len(h.spawned)]
        if worker.number in h.pool.workers:
            if worker.state is WorkerState.BOOTING:
                h.pool.workerReady(worker)
            elif worker.state is WorkerState.ACCEPTING:
                if round % 3:
                    h.pool.workerWantsReplacement(worker, ReplaceCause.ALLOWANCE)
                else:
                    h.pool.workerExited(worker, KILLED)
            elif worker.state is WorkerState.RETIRING:
                h.pool.workerExited(worker, CLEAN_EXIT)
        h.clock.advance(2)
        assert h.busy() <= 3


def test_crash_is_replaced() -> None:
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    h.clock.advance(10)
    h.pool.workerExited(h.spawned[0], KILLED)
    assert len(h.spawned) == 3
    assert h.pool.failures == 0


def test_boot_failures_back_off_then_give_up() -> None:
    """
    Nothing ever became ready: retries come one at a time with growing
    delays, and the pool gives up after maxBootFailures.
    """
    h = Harness(1, maxBootFailures=3, backoff=0.5)
    h.pool.start()
    h.pool.workerBootFailed(h.spawned[0], "cannot import x")
    h.pool.workerExited(h.spawned[0], ProcessEnd(status=3))
    assert len(h.spawned) == 1
    h.clock.advance(0.49)
    assert len(h.spawned) == 1
    h.clock.advance(0.01)
    assert len(h.spawned) == 2
    h.pool.workerExited(h.spawned[1], ProcessEnd(status=3))
    h.clock.advance(0.99)
    assert len(h.spawned) == 2
    h.clock.advance(0.01)
    assert len(h.spawned) == 3
    h.pool.workerExited(h.spawned[2], ProcessEnd(status=3))
    assert h.gaveUp and "exited with status 3" in h.gaveUp[0]
    h.clock.advance(100)
    assert len(h.spawned) == 3


def test_boot_failures_after_ready_never_give_up() -> None:
    h = Harness(2, maxBootFailures=3, maxBackoff=4)
    h.pool.start()
    h.readyAll()
    h.clock.advance(10)
    h.pool.workerWantsReplacement(h.spawned[0], ReplaceCause.ALLOWANCE)
    for _ in range(10):
        booting = h.pool.inState(WorkerState.BOOTING)
        assert len(booting) <= 1
        if booting:
            h.pool.workerExited(booting[0], ProcessEnd(status=3))
        h.clock.advance(4)
    assert not h.gaveUp
    assert h.pool.failures >= 9


def test_boot_timeout_kills() -> None:
    h = Harness(1, bootTimeout=5)
    h.pool.start()
    h.clock.advance(5)
    assert h.spawned[0].calls == ["kill"]


def test_stop_drains_then_kills_after_grace() -> None:
    h = Harness(2, grace=10)
    h.pool.start()
    h.readyAll()
    done: list[None] = []
    h.pool.stop().addCallback(done.append)
    assert [w.calls for w in h.spawned] == [["stop"], ["stop"]]
    h.pool.workerExited(h.spawned[0], CLEAN_EXIT)
    assert not done
    h.clock.advance(10)
    assert h.spawned[1].calls == ["stop", "kill"]
    h.pool.workerExited(h.spawned[1], KILLED)
    assert done == [None]
    assert len(h.spawned) == 2


def test_retiring_worker_killed_after_grace() -> None:
    h = Harness(1, grace=5)
    h.pool.start()
    h.readyAll()
    h.pool.workerWantsReplacement(h.spawned[0], ReplaceCause.ALLOWANCE)
    h.clock.advance(5)
    assert h.spawned[0].calls == ["kill"]


def test_replacement_ahead_of_time() -> None:
    """
    A worker close to its allowance gets its replacement booted, held, while
    it still accepts; it accepts until its allowance is used (it says so),
    and only then does the replacement start accepting: never fewer than
    `size` accepting but for the hand-over, never more.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    old = h.spawned[0]
    h.pool.workerNearAllowance(old)
    assert len(h.spawned) == 3
    assert h.spawned[2].standby
    assert old.state is WorkerState.ACCEPTING
    h.pool.workerNearAllowance(old)
    assert len(h.spawned) == 3
    h.pool.workerReady(h.spawned[2])
    # Ready, and held: the old one has connections left to accept.
    assert h.pool.workers[old.number].state is WorkerState.ACCEPTING
    assert old.calls == []
    assert h.spawned[2].state is WorkerState.STANDBY
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 2
    h.pool.workerWantsReplacement(old, ReplaceCause.ALLOWANCE)
    assert h.spawned[2].calls == ["activate"]
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 2
    h.pool.workerExited(old, CLEAN_EXIT)
    assert len(h.spawned) == 3
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 2
    assert h.pool.restarts == {"allowance": 1}


def test_surplus_bounds_early_replacements() -> None:
    """
    Every worker near its allowance at once: only `reloadBatch`
    replacements boot ahead of time.
    """
    h = Harness(3, surplus=1)
    h.pool.start()
    h.readyAll()
    for worker in list(h.spawned):
        h.pool.workerNearAllowance(worker)
    assert len(h.spawned) == 4
    assert h.busy() <= 4


def test_rolling_reload_one_at_a_time() -> None:
    """
    SIGHUP: one new worker boots; when it is ready one old one retires;
    never more than size + 1 busy; at the end every accepting worker is new.
    """
    h = Harness(3)
    h.pool.start()
    h.readyAll()
    old = set(h.pool.workers)
    h.pool.reload()
    assert h.pool.reloading
    for _ in range(10):
        assert h.busy() <= 4
        booting = h.pool.inState(WorkerState.BOOTING)
        if not booting:
            break
        assert len(booting) == 1
        h.pool.workerReady(booting[0])
        for w in h.pool.inState(WorkerState.RETIRING):
            assert h.spawned[w.number - 1].calls == ["retire"]
            h.pool.workerExited(w, CLEAN_EXIT)
    assert not h.pool.reloading
    accepting = {w.number for w in h.pool.inState(WorkerState.ACCEPTING)}
    assert len(accepting) == 3 and not accepting & old
    assert h.pool.restarts == {"reload": 3}


def test_failed_reload_keeps_old_workers() -> None:
    h = Harness(3)
    h.pool.start()
    h.readyAll()
    old = set(h.pool.workers)
    h.pool.reload()
    (new,) = h.pool.inState(WorkerState.BOOTING)
    h.pool.workerBootFailed(new, "cannot import myapp")
    h.pool.workerExited(new, ProcessEnd(status=3))
    assert not h.pool.reloading
    assert {w.number for w in h.pool.inState(WorkerState.ACCEPTING)} == old
    h.clock.advance(60)
    assert h.pool.inState(WorkerState.BOOTING) == []
    assert not h.gaveUp


def test_resize_up_and_down() -> None:
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    h.pool.resize(3)
    assert len(h.spawned) == 3
    h.readyAll()
    h.pool.resize(1)
    retiring = h.pool.inState(WorkerState.RETIRING)
    assert [h.spawned[w.number - 1].calls for w in retiring] == [["retire"]] * 2
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 1
    h.pool.resize(0)
    assert h.pool.size == 1


def test_heartbeat_timeout() -> None:
    """
    A worker silent for longer than the timeout has its stack dumped, gets
    SIGTERM, then SIGKILL, and a replacement starts at once.
    """
    h = Harness(2, heartbeatTimeout=10, stuckKillDelay=2)
    h.pool.start()
    h.readyAll()
    alive, stuck = h.spawned
    silentFor = 0
    while not stuck.calls and silentFor < 20:
        h.clock.advance(1)
        silentFor += 1
        h.pool.workerAlive(alive)
    assert 10 <= silentFor <= 11
    assert stuck.calls == ["dumpStack", "terminate"]
    assert alive.calls == []
    assert len(h.spawned) == 3
    h.clock.advance(2)
    assert stuck.calls == ["dumpStack", "terminate", "kill"]
    assert h.pool.restarts == {RestartCause.HEARTBEAT_TIMEOUT: 1}


def test_reload_with_a_worker_near_its_allowance() -> None:
    """
    A worker waiting for its early replacement does not stall a reload.
    """
    h = Harness(1)
    h.pool.start()
    h.readyAll()
    h.pool.workerNearAllowance(h.spawned[0])
    h.readyAll()
    h.pool.reload()
    for _ in range(5):
        h.readyAll()
        for w in h.pool.inState(WorkerState.RETIRING):
            h.pool.workerExited(w, CLEAN_EXIT)
    assert not h.pool.reloading
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 1


def test_stop_while_booting_drains_when_ready() -> None:
    """
    A worker still booting when the server stops is told to drain once it
    is ready (it may be the only one left to serve the queue); the pool
    reports drained once every worker has closed its sockets.
    """
    h = Harness(2)
    h.pool.start()
    h.pool.workerReady(h.spawned[0])
    drained: list[None] = []
    h.pool.stop()
    h.pool.whenDrained().addCallback(drained.append)
    first, second = h.spawned
    assert first.calls == ["stop"] and second.calls == []
    first.stopped.callback(None)
    assert not drained
    h.pool.workerReady(second)
    assert second.calls == ["stop"]
    second.stopped.callback(None)
    assert drained == [None]


def test_spawn_failure_backs_off() -> None:
    attempts: list[int] = []

    def failing(number: int, standby: bool = False) -> FakeWorker:
        attempts.append(number)
        raise OSError(24, "Too many open files")

    h = Harness(2, spawn=failing)
    h.pool.start()
    assert attempts == [1]
    h.clock.advance(0.5)
    assert attempts == [1, 2]
    assert "Too many open files" in h.pool.lastFailure


def test_standby_takes_over_at_once() -> None:
    """
    With a standby, a worker close to its allowance keeps accepting; when
    its allowance is used, the ready standby takes over at once (no boot to
    wait for), and a new standby boots.
    """
    h = Harness(2, standby=1)
    h.pool.start()
    assert [w.standby for w in h.spawned] == [False, False, True]
    h.readyAll()
    spare = h.spawned[2]
    assert spare.state is WorkerState.STANDBY
    old = h.spawned[0]
    h.pool.workerNearAllowance(old)
    assert spare.calls == [] and old.calls == []
    assert len(h.spawned) == 3
    h.pool.workerWantsReplacement(old, ReplaceCause.ALLOWANCE)
    assert spare.calls == ["activate"]
    assert h.pool.workers[spare.number].state is WorkerState.ACCEPTING
    assert h.pool.workers[old.number].state is WorkerState.RETIRING
    assert [w.standby for w in h.spawned[3:]] == [True]
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 2


def test_allowance_used_before_the_standby_is_ready() -> None:
    """
    The allowance ran out while the replacement still boots: the pool waits
    for that one (it is sooner than a new one) and it accepts once ready.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    old = h.spawned[0]
    h.pool.workerNearAllowance(old)
    h.pool.workerWantsReplacement(old, ReplaceCause.ALLOWANCE)
    assert len(h.spawned) == 3
    h.pool.workerReady(h.spawned[2])
    assert h.spawned[2].calls == ["activate"]
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 2


def test_reload_retires_standbys_and_boots_new_ones() -> None:
    h = Harness(1, standby=1)
    h.pool.start()
    h.readyAll()
    spare = h.spawned[1]
    h.pool.reload()
    assert spare.calls == ["retire"]
    for _ in range(5):
        h.readyAll()
        for w in h.pool.inState(WorkerState.RETIRING):
            h.pool.workerExited(w, CLEAN_EXIT)
    assert not h.pool.reloading
    assert {w.number for w in h.pool.workers.values()} & {1, 2} == set()
    assert len(h.pool.inState(WorkerState.STANDBY)) == 1


def test_stop_drains_standbys_too() -> None:
    h = Harness(1, standby=1)
    h.pool.start()
    h.readyAll()
    h.pool.stop()
    assert [w.calls for w in h.spawned] == [["stop"], ["stop"]]


def test_reloads_during_a_reload_coalesce() -> None:
    """
    Twenty reloads in 5 s: one renewal as the first starts; each later one
    restarts the reload under way (every worker started before it is
    replaced, on the same starter); exactly one renewal more once the
    renewal interval is over, with one last pass.  Never more than size +
    surplus busy.
    """
    renewals: list[float] = []
    clock = Clock()
    h = Harness(
        3, clock=clock, renew=lambda: renewals.append(clock.seconds()), renewInterval=10
    )
    h.pool.start()
    h.readyAll()

    def step() -> None:
        booting = h.pool.inState(WorkerState.BOOTING)
        if booting:
            h.pool.workerReady(booting[0])
        for w in h.pool.inState(WorkerState.RETIRING):
            h.pool.workerExited(w, CLEAN_EXIT)

    for _ in range(20):
        h.pool.reload()
        step()
        h.clock.advance(0.25)
        assert h.busy() <= 4
    for _ in range(20):
        step()
    assert renewals == [0.0]
    assert not h.pool.reloading
    beforeRenewal = h.pool.spawned
    h.clock.advance(4.9)
    assert renewals == [0.0]
    h.clock.advance(0.2)
    assert len(renewals) == 2 and renewals[1] >= 10.0
    assert h.pool.reloading
    for _ in range(20):
        step()
        assert h.busy() <= 4
    assert not h.pool.reloading
    accepting = [w.number for w in h.pool.inState(WorkerState.ACCEPTING)]
    assert len(accepting) == 3 and min(accepting) > beforeRenewal
    h.clock.advance(60.0)
    assert len(renewals) == 2


def test_reload_after_the_interval_renews_at_once() -> None:
    renewals: list[float] = []
    clock = Clock()
    h = Harness(
        2, clock=clock, renew=lambda: renewals.append(clock.seconds()), renewInterval=10
    )
    h.pool.start()
    h.readyAll()
    h.pool.reload()
    h.clock.advance(11.0)
    h.pool.reload()
    assert renewals == [0.0, 11.0]
