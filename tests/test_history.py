"""
The status page's last five minutes, in process: the scoreboard samples
the pool once a second into a ring buffer, marks reloads as they happen
and restarts as their counters move, and C{/status.json} shows it all as
seconds before the snapshot.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.application.service import MultiService

from preforktwist.master.events import (
    ReloadFailed,
    ReloadFinished,
    ReloadStarted,
    RestartCause,
)
from preforktwist.master.pool import WorkerState
from preforktwist.master.status.history import History, MarkKind
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.protocol.control import ReplaceCause
from tests.test_pool import CLEAN_EXIT, KILLED, Harness


def running(h: Harness) -> tuple[Scoreboard, MultiService]:
    scoreboard = Scoreboard(h.pool, [], h.clock)
    parent = MultiService()
    scoreboard.setServiceParent(parent)
    parent.startService()
    return scoreboard, parent


def history(scoreboard: Scoreboard) -> dict[str, Any]:
    snapshot = json.loads(json.dumps(scoreboard.snapshot()))
    return snapshot["history"]  # type: ignore[no-any-return]


def test_samples_each_second_as_seconds_ago() -> None:
    """
    Connections accepted per second between samples (none for the first),
    open connections and the queue (unknown without listeners), oldest
    first, each as seconds before the snapshot.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    first, second = h.spawned
    scoreboard, parent = running(h)
    first.accepted, first.open = 10, 2
    h.clock.advance(1)
    second.accepted, second.open = 30, 5
    h.clock.advance(1)
    # A worker that exits keeps its accepted connections in the count.
    h.pool.workerWantsReplacement(first, ReplaceCause.ALLOWANCE)
    h.pool.workerExited(first, CLEAN_EXIT)
    h.clock.advance(1)
    h.clock.advance(0.5)
    shown = history(scoreboard)
    assert (shown["interval"], shown["span"]) == (1.0, 300.0)
    assert shown["samples"] == {
        "ago": [3.5, 2.5, 1.5, 0.5],
        "per_second": [None, 10.0, 30.0, 0.0],
        "open": [0, 2, 7, 5],
        "queued": [None, None, None, None],
    }
    parent.stopService()


def test_the_ring_buffer_keeps_five_minutes() -> None:
    h = Harness(1)
    h.pool.start()
    h.readyAll()
    scoreboard, parent = running(h)
    for _ in range(1000):
        h.spawned[0].accepted += 2
        h.clock.advance(1)
    samples = history(scoreboard)["samples"]
    assert len(samples["ago"]) == 301
    assert samples["ago"][0] == 300.0 and samples["ago"][-1] == 0.0
    assert set(samples["per_second"]) == {2.0}
    parent.stopService()


def test_reloads_and_restarts_are_marked() -> None:
    """
    A reload is marked as it starts and as it finishes; each sample marks
    the restarts counted since the one before, by cause, with their
    number, so that the marks add up to C{restarts}.
    """
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    scoreboard, parent = running(h)
    h.clock.advance(10)
    first, second = h.spawned
    h.pool.workerExited(first, KILLED)
    h.pool.workerExited(second, KILLED)
    h.readyAll()
    h.clock.advance(1)
    h.pool.reload()
    for _ in range(10):
        h.readyAll()
        for worker in h.pool.inState(WorkerState.RETIRING):
            h.pool.workerExited(worker, CLEAN_EXIT)
    assert not h.pool.reloading
    h.clock.advance(1)
    marks = history(scoreboard)["marks"]
    assert marks == [
        {"ago": 1.0, "kind": "restart", "detail": "crash", "count": 2},
        {"ago": 1.0, "kind": "reload", "detail": "started", "count": 1},
        {"ago": 1.0, "kind": "reload", "detail": "finished", "count": 1},
        {"ago": 0.0, "kind": "restart", "detail": "reload", "count": 2},
    ]
    counted = {m["detail"]: m["count"] for m in marks if m["kind"] == "restart"}
    snapshot = scoreboard.snapshot()
    assert counted == {k: v for k, v in snapshot["restarts"].items() if v}
    parent.stopService()


def test_marks_older_than_the_span_are_forgotten() -> None:
    history = History(span=10.0)
    history.poolEvent(ReloadStarted(at=0.0, generation=1))
    history.poolEvent(ReloadFailed(at=2.0, generation=1, reason="boom"))
    history.poolEvent(ReloadFinished(at=5.0, generation=2))
    history.mark(6.0, MarkKind.UPGRADE, "started")
    assert [m["detail"] for m in history.asJSON(11.0)["marks"]] == [
        "failed",
        "finished",
        "started",
    ]
    assert [m["kind"] for m in history.asJSON(16.0)["marks"]] == ["upgrade"]


def test_restarts_before_the_first_sample_are_marked_at_it() -> None:
    history = History()
    history.sample(5.0, 0, 0, 0, {RestartCause.BOOT_FAILURE: 2})
    history.sample(6.0, 0, 0, 0, {RestartCause.BOOT_FAILURE: 2})
    assert history.asJSON(6.0)["marks"] == [
        {"ago": 1.0, "kind": "restart", "detail": "boot_failure", "count": 2}
    ]
