"""
Hooks: the pool's events as its observers hear them (in process, on a
fake clock), how the user's observers are called (later, in order, every
failure logged, a slow one named), how C{--hooks} and C{observers=} find
them, and one real master whose C{--hooks} records its events to a file.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.logger import capturedLogs
from zope.interface import implementer

from preforktwist.master.hooks import (
    HookService,
    IPoolObserver,
    PoolEvent,
    PoolReady,
    PoolResized,
    PoolStopping,
    ProcessEnd,
    ReloadFailed,
    ReloadFinished,
    ReloadStarted,
    RestartCause,
    WorkerAccepting,
    WorkerExited,
    WorkersChanged,
    WorkerStarted,
    loadObserver,
)
from preforktwist.master.pool import WorkerState
from preforktwist.protocol.control import ReplaceCause
from preforktwist.settings import SettingError
from tests import hookapps
from tests.conftest import StartMaster
from tests.harness import Master, exchange, waitUntil
from tests.test_pool import CLEAN_EXIT, KILLED, Harness
from tests.test_service import MakeServed, kinds, served  # noqa: F401

E = TypeVar("E", bound=PoolEvent)


def heard(h: Harness) -> list[PoolEvent]:
    """Every event of C{h}'s pool from now on, as the pool emits it."""
    events: list[PoolEvent] = []
    h.pool.observers.append(events.append)
    return events


def only(events: list[PoolEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


# The events, as the pool emits them.


def test_a_pools_life_in_events() -> None:
    """
    Start, ready, a resize, a replacement, a crash, a reload and a stop:
    each told once, in order, with what it is about.
    """
    h = Harness(2)
    events = heard(h)
    h.clock.advance(100)
    h.pool.start()
    assert [(e.number, e.standby) for e in only(events, WorkerStarted)] == [
        (1, False),
        (2, False),
    ]
    assert only(events, PoolReady) == []
    h.readyAll()
    assert [e.number for e in only(events, WorkerAccepting)] == [1, 2]
    assert only(events, PoolReady) == [PoolReady(at=100.0, size=2)]
    # Each step's news ends with one WorkersChanged.
    assert isinstance(events[-1], WorkersChanged)
    assert events[-1].summary == "2 accepting"

    del events[:]
    h.pool.resize(3)
    assert events[:2] == [
        PoolResized(at=100.0, old=2, new=3),
        WorkerStarted(at=100.0, number=3, pid=None, generation=0, standby=False),
    ]
    h.readyAll()

    del events[:]
    first, second = h.spawned[:2]
    h.clock.advance(5)
    first.accepted = first.served = 7
    h.pool.workerWantsReplacement(first, ReplaceCause.ALLOWANCE)
    h.pool.workerExited(first, CLEAN_EXIT)
    h.pool.workerExited(second, KILLED)
    exits = only(events, WorkerExited)
    assert exits[0] == WorkerExited(
        at=105.0,
        number=1,
        pid=None,
        generation=0,
        end=ProcessEnd(status=0),
        cause=RestartCause.ALLOWANCE,
        accepted=7,
        served=7,
        lifetime=5.0,
    )
    assert (exits[1].cause, exits[1].end) == (RestartCause.CRASH, KILLED)
    assert exits[1].end.describe() == "was killed by SIGKILL"

    del events[:]
    h.readyAll()
    h.pool.reload()
    assert only(events, ReloadStarted) == [ReloadStarted(at=105.0, generation=1)]
    for _ in range(10):
        h.readyAll()
        for worker in h.pool.inState(WorkerState.RETIRING):
            h.pool.workerExited(worker, CLEAN_EXIT)
    assert not h.pool.reloading
    assert only(events, ReloadFinished) == [ReloadFinished(at=105.0, generation=1)]
    assert {e.cause for e in only(events, WorkerExited)} == {RestartCause.RELOAD}

    del events[:]
    h.pool.stop()
    assert only(events, PoolStopping) == [PoolStopping(at=105.0)]
    for worker in list(h.pool.workers.values()):
        h.pool.workerExited(worker, CLEAN_EXIT)
    assert [e.cause for e in only(events, WorkerExited)] == [None, None, None]


def test_why_a_worker_exited() -> None:
    """
    A boot failure, a stuck worker, one retired for a shrink and one
    told to stop by a signal each say so.
    """
    h = Harness(2, heartbeatTimeout=4.0)
    events = heard(h)
    h.pool.start()
    h.pool.workerExited(h.spawned[0], ProcessEnd(status=3))
    h.clock.advance(1)  # the backoff
    h.readyAll()  # the failure is over: the next worker starts
    h.readyAll()
    stuck, other = h.pool.inState(WorkerState.ACCEPTING)
    h.clock.advance(5)
    assert {w.number for w in h.spawned if "terminate" in w.calls} == {
        stuck.number,
        other.number,
    }
    h.pool.workerExited(stuck, ProcessEnd(signal=signal.SIGTERM))
    h.pool.workerExited(other, ProcessEnd(signal=signal.SIGTERM))
    h.readyAll()
    h.pool.resize(1)
    (shrunk,) = h.pool.inState(WorkerState.RETIRING)
    h.pool.workerExited(shrunk, CLEAN_EXIT)
    (last,) = h.pool.inState(WorkerState.ACCEPTING)
    h.pool.workerWantsReplacement(last, ReplaceCause.SIGNAL)
    h.pool.workerExited(last, CLEAN_EXIT)
    assert [e.cause for e in only(events, WorkerExited)] == [
        RestartCause.BOOT_FAILURE,
        RestartCause.HEARTBEAT_TIMEOUT,
        RestartCause.HEARTBEAT_TIMEOUT,
        RestartCause.SCALING,
        RestartCause.SIGNAL,
    ]
    h.pool.stop()
    for worker in list(h.pool.workers.values()):
        h.pool.workerExited(worker, CLEAN_EXIT)


def test_a_failed_reload_says_why() -> None:
    h = Harness(1)
    events = heard(h)
    h.pool.start()
    h.readyAll()
    h.pool.reload()
    new = h.spawned[-1]
    h.pool.workerExited(new, ProcessEnd(status=3))
    assert only(events, ReloadFailed) == [
        ReloadFailed(
            at=0.0,
            generation=1,
            reason="boot failure: worker 2 exited with status 3 before it was ready",
        )
    ]
    assert only(events, ReloadFinished) == []
    h.pool.stop()
    for worker in list(h.pool.workers.values()):
        h.pool.workerExited(worker, CLEAN_EXIT)


def test_an_observer_that_raises_is_logged_and_the_pool_goes_on() -> None:
    h = Harness(2)

    def broken(event: PoolEvent) -> None:
        raise RuntimeError("an observer's bug")

    h.pool.observers.append(broken)
    events = heard(h)
    with capturedLogs() as logged:
        h.pool.start()
        h.readyAll()
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 2
    assert only(events, PoolReady) == [PoolReady(at=0.0, size=2)]
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == len(events)
    assert "an observer's bug" in str(failures[0]["log_failure"].value)


def test_an_event_as_plain_data() -> None:
    event = WorkerExited(
        at=1.5,
        number=3,
        pid=42,
        generation=1,
        end=ProcessEnd(signal=9),
        cause=RestartCause.CRASH,
        accepted=10,
        served=9,
        lifetime=0.5,
    )
    assert json.loads(json.dumps(event.asDict())) == {
        "event": "worker_exited",
        "at": 1.5,
        "number": 3,
        "pid": 42,
        "generation": 1,
        "end": {"status": None, "signal": 9},
        "cause": "crash",
        "accepted": 10,
        "served": 9,
        "lifetime": 0.5,
    }
    assert ProcessEnd().describe() == "ended, how unknown"


# How the user's observers are called.


class Timer:
    """A clock for how long a hook takes: each reading C{step} later."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def relayed(
    *observers: IPoolObserver, step: float = 0.0
) -> tuple[Harness, HookService]:
    h = Harness(2)
    service = HookService(h.pool, observers, h.clock, timer=Timer(step))
    service.startService()
    return h, service


def test_hooks_hear_every_event_on_a_later_turn_in_order() -> None:
    recorder = hookapps.Recorder()
    h, _ = relayed(recorder)
    direct = heard(h)
    h.pool.start()
    h.readyAll()
    assert recorder.events == []  # the pool's step never waits on a hook
    h.clock.advance(0)
    assert recorder.events == direct and len(direct) > 5


def test_a_hook_that_fails_is_logged_and_the_others_go_on() -> None:
    @implementer(IPoolObserver)
    class Broken:
        def poolEvent(self, event: PoolEvent) -> object:
            if isinstance(event, WorkerStarted):
                raise RuntimeError("a hook's bug")
            if isinstance(event, PoolReady):
                return fail(RuntimeError("a hook's late bug"))
            return Deferred()  # never fires: nothing waits for it

    recorder = hookapps.Recorder()
    h, _ = relayed(Broken(), recorder)
    with capturedLogs() as logged:
        h.pool.start()
        h.readyAll()
        h.clock.advance(0)
    assert len(only(recorder.events, WorkerStarted)) == 2
    assert len(only(recorder.events, PoolReady)) == 1
    failures = [str(e["log_failure"].value) for e in logged if "log_failure" in e]
    assert failures == ["a hook's bug"] * 2 + ["a hook's late bug"]
    assert len(h.pool.inState(WorkerState.ACCEPTING)) == 2


def test_a_slow_hook_is_named_in_the_log() -> None:
    h, _ = relayed(hookapps.Recorder(), step=0.25)
    with capturedLogs() as logged:
        h.pool.start()
        h.clock.advance(0)
    warnings = [e for e in logged if "took" in e.get("log_format", "")]
    assert warnings and warnings[0]["took"] == 0.25
    assert warnings[0]["event"] == "worker_started"


def test_stopping_tells_what_is_left_and_listens_no_more() -> None:
    recorder = hookapps.Recorder()
    h, service = relayed(recorder)
    h.pool.start()
    service.stopService()
    assert len(only(recorder.events, WorkerStarted)) == 2
    told = len(recorder.events)
    h.readyAll()
    h.clock.advance(0)
    assert len(recorder.events) == told


# Finding the observers.


def test_hooks_name_an_observer_or_a_callable_returning_one() -> None:
    assert loadObserver("tests.hookapps.recorder") is hookapps.recorder
    assert isinstance(loadObserver("tests.hookapps.Recorder"), hookapps.Recorder)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("nope.nothing", "cannot import: ObjectNotFound"),
        ("tests.hookapps.nothing", "cannot import"),
        ("tests.hookapps.notAnObserver", "is neither an IPoolObserver"),
        ("tests.hookapps.returnsNothing", "returned None, which does not provide"),
        ("tests.hookapps.raises", "raised RuntimeError: no hooks today"),
    ],
)
def test_a_bad_hooks_name_is_one_line(name: str, reason: str) -> None:
    with pytest.raises(SettingError) as raised:
        loadObserver(name)
    text = str(raised.value)
    assert text.startswith(f"--hooks: {name}: ") and reason in text
    assert "\n" not in text


def test_the_service_relays_to_its_observers(served: MakeServed) -> None:  # noqa: F811
    """
    A C{.tac}'s observers and the one C{hooks} names are told, by a child
    started before what serves and stopped after it; without any, there
    is no such child.
    """
    given = hookapps.Recorder()
    s = served(observers=[given], hooks="tests.hookapps.Recorder")
    assert kinds(s.service)[:3] == ["ListeningSockets", "SystemdService", "HookService"]
    named = s.service.hooks.observers[1]
    assert isinstance(named, hookapps.Recorder)
    s.service.privilegedStartService()
    s.service.startService()
    s.readyAll()
    s.reactor.advance(0)
    s.service.stopService()
    s.exitAll()
    for recorder in (given, named):
        names = [e.name for e in recorder.events]
        assert names.count("worker_started") == 2
        assert names.count("worker_exited") == 2
        assert names.index("ready") < names.index("stopping")
    assert "HookService" not in kinds(served().service)


def test_an_observer_that_is_none_is_refused(served: MakeServed) -> None:  # noqa: F811
    with pytest.raises(TypeError, match="does not provide IPoolObserver"):
        served(observers=[object()])


def test_twistd_with_a_bad_hooks_name_is_one_line(tmp_path: Path) -> None:
    master = Master(["--hooks", "nope.nothing"], cwd=tmp_path)
    assert master.wait(20) == 1
    assert master.reap() == []
    errors = [line for line in master.errors if line.strip()]
    assert errors == [
        "twistd preforked: --hooks: nope.nothing: cannot import: "
        "ObjectNotFound: 'nope.nothing' does not name an object"
    ]
    assert master.workerPids() == []


# A real master.


def test_a_real_master_tells_its_hooks(serve: StartMaster, tmp_path: Path) -> None:
    """
    C{--hooks} names a module's observer, which records each event to a
    file: the pool's start, a crash (with its signal), a resize, a reload
    and the stop, in order, with the real pids.  On the workers' side,
    C{--worker-init} registers a shutdown trigger, which each worker runs
    as it ends gracefully.
    """
    record = tmp_path / "events.jsonl"
    cleanUps = tmp_path / "clean-ups"
    master = serve(
        "-w",
        "2",
        "--hooks",
        "tests.hookapps.FileRecorder",
        "--worker-init",
        "tests.hookapps.cleanUpAtShutdown",
        env={hookapps.EVENTS_FILE: str(record), hookapps.CLEAN_UP_FILE: str(cleanUps)},
    )

    def events() -> list[dict[str, Any]]:
        if not record.exists():
            return []
        return [json.loads(line) for line in record.read_text().splitlines()]

    def named(name: str) -> list[dict[str, Any]]:
        return [e for e in events() if e["event"] == name]

    waitUntil(lambda: named("ready"), 30, "the ready hook")
    assert exchange(master.port, b"hi", expect=2) == b"hi"
    accepting = {e["pid"] for e in named("worker_accepting")}
    assert accepting == set(master.liveWorkers())
    victim = sorted(accepting)[0]
    os.kill(victim, signal.SIGKILL)
    waitUntil(lambda: named("worker_exited"), 20, "the crash hook")
    (crash,) = named("worker_exited")
    assert (crash["pid"], crash["cause"]) == (victim, "crash")
    assert crash["end"] == {"status": None, "signal": signal.SIGKILL}
    master.signal(signal.SIGTTIN)
    waitUntil(lambda: named("resized"), 20, "the resize hook")
    master.signal(signal.SIGHUP)
    waitUntil(lambda: named("reload_finished"), 60, "the reload hooks")
    master.signal(signal.SIGTERM)
    assert master.wait() == 0
    sequence = [e["event"] for e in events() if e["event"] != "changed"]
    assert sequence[-1] == "worker_exited"
    for before, after in [
        ("ready", "resized"),
        ("resized", "reload_started"),
        ("reload_started", "reload_finished"),
        ("reload_finished", "stopping"),
    ]:
        assert sequence.index(before) < sequence.index(after)
    # Every worker started was heard exiting: the one killed, those the
    # reload replaced (as many as were old when it began), and the three
    # serving when the pool stopped (no cause).
    exits = named("worker_exited")
    assert len(exits) == len(named("worker_started"))
    causes = [e["cause"] for e in exits]
    assert causes.count("crash") == 1 and causes.count(None) == 3
    assert causes.count("reload") == len(exits) - 4 >= 1
    # The workers' side: each worker that ended gracefully ran its
    # shutdown trigger (the one killed could not).
    cleaned = {int(pid) for pid in cleanUps.read_text().split()}
    assert cleaned == {e["pid"] for e in exits if e["cause"] != "crash"}
    assert "Traceback" not in master.output()
