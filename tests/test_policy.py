"""
The adaptive pool's and the per-worker limits' rules, with a fake clock,
fake samples and fake workers: no processes.
"""

from __future__ import annotations

from twisted.application.service import IService, MultiService

from preforktwist.master.policy.autoscale import Autoscaler, Sample
from preforktwist.master.policy.limits import WorkerLimits
from preforktwist.master.pool import WorkerState
from tests.test_pool import FakeWorker, Harness


class Load:
    def __init__(self) -> None:
        self.sample = Sample(queued=0, open=0, capacity=0, accepting=1, cpu=0.0)

    def __call__(self) -> Sample:
        return self.sample


def scaler(h: Harness, load: Load, **kwargs: float) -> Autoscaler:
    s = Autoscaler(
        h.pool,
        h.clock,
        load,
        int(kwargs.pop("minimum", 1)),
        int(kwargs.pop("maximum", 4)),
        **kwargs,
    )
    s.startService()
    return s


def run(h: Harness, seconds: float, step: float = 0.5) -> None:
    for _ in range(int(seconds / step)):
        h.clock.advance(step)
        h.readyAll()


def test_grows_on_a_sustained_queue_not_a_spike() -> None:
    h = Harness(1)
    h.pool.start()
    h.readyAll()
    load = Load()
    scaler(h, load, upAfter=2, cooldown=1)
    run(h, 2)
    for _ in range(10):  # spikes: a queue every other sample
        load.sample = Sample(3, 2, 2, 1, 0.9)
        run(h, 0.5)
        load.sample = Sample(0, 2, 2, 1, 0.9)
        run(h, 0.5)
    assert h.pool.size == 1
    load.sample = Sample(3, 2, 2, 1, 0.9)
    run(h, 2.5)
    assert h.pool.size == 2
    run(h, 20)
    assert h.pool.size == 4  # the maximum
    assert len(h.spawned) == 4


def test_shrinks_on_sustained_slack_to_the_minimum() -> None:
    h = Harness(4)
    h.pool.start()
    h.readyAll()
    load = Load()
    load.sample = Sample(0, 0, 8, 4, 0.01)
    s = scaler(h, load, minimum=2, downAfter=3, cooldown=1)
    run(h, 3.5)
    assert h.pool.size == 3
    run(h, 30)
    assert h.pool.size == 2
    retired = h.pool.inState(WorkerState.RETIRING)
    assert len(retired) == 2
    assert all("slack" in d.reason for d in s.decisions)


def test_no_flapping_at_the_threshold() -> None:
    """
    A steady load that keeps the workers just full, with a connection
    waiting now and then: at most one change, no oscillation.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    load = Load()
    s = scaler(h, load, minimum=1, maximum=4, upAfter=2, downAfter=10, cooldown=5)
    for i in range(600):
        queued = 1 if i % 3 == 0 else 0
        load.sample = Sample(queued, 3, 4, 2, 0.6)
        run(h, 0.5)
    assert len(s.decisions) == 0


def test_busy_workers_are_not_slack() -> None:
    h = Harness(3)
    h.pool.start()
    h.readyAll()
    load = Load()
    load.sample = Sample(0, 0, 0, 3, 0.8)  # no queue, but the CPU is busy
    scaler(h, load, downAfter=2, cooldown=0)
    run(h, 20)
    assert h.pool.size == 3


def leaky(h: Harness, rss: dict[int, int], **kwargs: float) -> WorkerLimits:
    limits = WorkerLimits(
        h.pool,
        h.clock,
        rss=lambda w: rss.get(w.number),
        **kwargs,  # type: ignore[arg-type]
    )
    limits.startService()
    return limits


def test_memory_limit_replaces_first() -> None:
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    rss = {1: 50, 2: 200}
    leaky(h, rss, maxMemory=100, minLifetime=5)
    h.clock.advance(3)
    assert len(h.spawned) == 2  # too young to be replaced
    h.clock.advance(3)
    assert len(h.spawned) == 3
    h.pool.workerReady(h.spawned[2])
    assert h.spawned[1].calls == ["retire"]
    assert h.spawned[0].calls == []
    assert h.pool.restarts == {"memory": 1}


def test_age_limit_within_the_jitter_window() -> None:
    h = Harness(3)
    h.pool.start()
    h.readyAll()
    limits = leaky(h, {}, maxAge=60, ageJitter=10, minLifetime=0)
    retiredAt: dict[int, float] = {}
    for _ in range(100):
        h.clock.advance(1)
        for worker in list(h.pool.workers.values()):
            if worker.state is WorkerState.BOOTING:
                h.pool.workerReady(worker)
            fake = h.spawned[worker.number - 1]
            if "retire" in fake.calls and worker.number not in retiredAt:
                retiredAt[worker.number] = h.clock.seconds()
    assert set(retiredAt) >= {1, 2, 3}
    for number in (1, 2, 3):
        assert 60 <= retiredAt[number] <= 72, retiredAt
    assert limits.ageLimit(FakeWorker(99)) <= 70


def test_several_doomed_at_once_are_all_replaced() -> None:
    """
    Three workers over their limit in the same check: with a surplus of
    one, they are replaced one after another, all of them.
    """
    h = Harness(3)
    h.pool.start()
    h.readyAll()
    leaky(h, {1: 200, 2: 200, 3: 200}, maxMemory=100, minLifetime=0)
    for _ in range(10):
        h.clock.advance(1)
        h.readyAll()
    assert [w.calls for w in h.spawned[:3]] == [["retire"]] * 3
    assert h.pool.restarts == {"memory": 3}


def test_policies_are_services_that_stop_checking() -> None:
    """
    The limits and the autoscaler run as children of a C{MultiService} on
    the pool's clock: they check while running, and not once stopped.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    rss = {1: 50, 2: 50}
    limits = WorkerLimits(
        h.pool, h.clock, maxMemory=100, minLifetime=0, rss=lambda w: rss.get(w.number)
    )
    load = Load()
    load.sample = Sample(3, 2, 2, 2, 0.9)
    autoscaler = Autoscaler(h.pool, h.clock, load, 1, 8, upAfter=1, cooldown=1)
    parent = MultiService()
    for child in (limits, autoscaler):
        assert IService.providedBy(child)
        child.setServiceParent(parent)  # type: ignore[no-untyped-call]
    parent.startService()
    assert limits.running and autoscaler.running
    run(h, 2)
    assert h.pool.size == 3
    stopped: list[object] = []
    parent.stopService().addCallback(stopped.append)
    assert stopped and not limits.running and not autoscaler.running
    rss[1] = 200
    spawned = len(h.spawned)
    run(h, 20)
    assert h.pool.size == 3
    assert len(h.spawned) == spawned
    assert h.pool.restarts == {}
