"""
The scoreboard, its metrics, the restart causes and the pool's events, in
process: a fake clock and fake workers, no processes.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import IService, MultiService

from preforktwist.master.events import ProcessEnd, RestartCause
from preforktwist.master.status.metrics import exposition
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.systemd import SystemdNotifier
from preforktwist.protocol.control import ReplaceCause, ReplaceCauseArgument
from tests.test_pool import Harness

#: The restart causes as the status JSON and /metrics have always spelled
#: them (README, "/metrics"), in the order they are listed.
SPELLINGS = [
    "allowance",
    "memory",
    "age",
    "crash",
    "boot_failure",
    "heartbeat_timeout",
    "reload",
    "scaling",
    "signal",
]


def eventful() -> Harness:
    """
    A pool that has seen an allowance restart, a crash and a heartbeat
    timeout.
    """
    h = Harness(2, heartbeatTimeout=10)
    h.pool.start()
    h.readyAll()
    first, second = h.spawned
    h.pool.workerWantsReplacement(first, ReplaceCause.ALLOWANCE)
    h.readyAll()
    h.pool.workerExited(second, ProcessEnd(status=1))
    h.readyAll()
    for _ in range(12):
        h.clock.advance(1)
        for worker in h.pool.workers.values():
            if worker.number != 3:
                h.pool.workerAlive(worker)
    return h


def test_restart_causes_keep_their_external_spelling() -> None:
    assert [cause.value for cause in RestartCause] == SPELLINGS
    assert {RestartCause.fromWorker(c) for c in ReplaceCause} == {
        RestartCause.ALLOWANCE,
        RestartCause.SIGNAL,
    }


def test_replace_cause_on_the_wire() -> None:
    argument = ReplaceCauseArgument()
    assert argument.toString(ReplaceCause.SIGNAL) == b"signal"
    assert argument.fromString(b"allowance") is ReplaceCause.ALLOWANCE
    with pytest.raises(ValueError):
        argument.fromString(b"boredom")


def test_json_restarts_every_cause_by_its_spelling() -> None:
    h = eventful()
    assert h.pool.restarts == {
        RestartCause.ALLOWANCE: 1,
        RestartCause.CRASH: 1,
        RestartCause.HEARTBEAT_TIMEOUT: 1,
    }
    snapshot = json.loads(json.dumps(Scoreboard(h.pool, [], h.clock).snapshot()))
    assert list(snapshot["restarts"]) == SPELLINGS
    expected = dict.fromkeys(SPELLINGS, 0)
    expected.update(allowance=1, crash=1, heartbeat_timeout=1)
    assert snapshot["restarts"] == expected


def test_metrics_label_every_cause_by_its_spelling() -> None:
    h = eventful()
    body, _ = exposition(Scoreboard(h.pool, [], h.clock))
    restarts = {
        sample.labels["cause"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "preforktwist_worker_restarts_total"
    }
    expected = dict.fromkeys(SPELLINGS, 0.0)
    expected.update(allowance=1.0, crash=1.0, heartbeat_timeout=1.0)
    assert restarts == expected


def test_scoreboard_samples_while_it_runs_as_a_service() -> None:
    h = Harness(1)
    h.pool.start()
    h.readyAll()
    h.clock.advance(100)
    scoreboard = Scoreboard(h.pool, [], h.clock)
    assert IService.providedBy(scoreboard)
    parent = MultiService()
    scoreboard.setServiceParent(parent)
    parent.startService()
    assert scoreboard.running
    assert scoreboard.startedAt == 100
    h.spawned[0].served = 10
    h.clock.advance(1)
    h.spawned[0].served = 30
    h.clock.advance(1)
    assert scoreboard.snapshot()["uptime"] == 2
    assert scoreboard.perSecond() == 15.0  # 30 over the 2 s sampled
    stopped: list[object] = []
    parent.stopService().addCallback(stopped.append)
    assert stopped and not scoreboard.running
    assert h.clock.getDelayedCalls() == []  # no sample is due any more


def test_systemd_hears_each_pool_event(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.settimeout(5)
        h = Harness(1)
        notifier = SystemdNotifier(address, h.pool)
        h.pool.observers.append(notifier)
        try:
            h.pool.start()
            h.readyAll()
            h.pool.reload()
            h.readyAll()
            h.pool.stop()
        finally:
            notifier.close()
        heard = []
        systemd.setblocking(False)
        while True:
            try:
                heard.append(systemd.recv(4096).decode().split("\n")[0])
            except BlockingIOError:
                break
    firsts = [line.split("=")[0] for line in heard if not line.startswith("STATUS")]
    assert firsts == ["READY", "RELOADING", "READY", "STOPPING"]
    assert "STATUS=1 booting (want 1)" in heard  # WorkersChanged
