"""
The health checks on the status endpoint, C{/readyz} and C{/livez}: in
process against the pool's rules, and end to end through a stop and a
failed reload.
"""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

from preforktwist.master.pool import WorkerState
from preforktwist.master.status.health import Readiness, live, ready
from tests.conftest import StartMaster
from tests.harness import Master, waitUntil
from tests.test_pool import KILLED, Harness
from tests.test_status import STATUS, statusURL


def probe(url: str) -> tuple[int, str]:
    """
    The status code and body of a GET, 503 included.
    """
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_readiness_follows_the_pool() -> None:
    """
    503 while starting, 200 once every wanted worker accepted, still 200
    with one of them gone, 503 with none, and 503 from the stop on.
    """
    h = Harness(2)
    readiness = Readiness(h.pool)
    h.pool.start()
    assert ready(readiness) == (503, "not ready: starting: 0 of 2 workers accepting")
    first = h.pool.inState(WorkerState.BOOTING)[0]
    h.pool.workerReady(first)
    assert ready(readiness)[0] == 503
    h.readyAll()
    assert ready(readiness) == (200, "ok: 2 of 2 workers accepting")
    h.pool.workerExited(first, KILLED)
    assert ready(readiness) == (200, "ok: 1 of 2 workers accepting")
    for worker in h.pool.inState(WorkerState.ACCEPTING):
        h.pool.workerExited(worker, KILLED)
    assert ready(readiness) == (503, "not ready: no worker accepting (0 of 2)")
    h.clock.advance(60)  # the replacements' backoff after quick deaths
    h.readyAll()
    assert ready(readiness)[0] == 200
    h.pool.stop()
    assert ready(readiness) == (503, "not ready: stopping")
    assert live() == (200, "ok: the master's reactor answered")


def listenerOpen(master: Master) -> bool:
    with urllib.request.urlopen(statusURL(master) + "status.json", timeout=10) as r:
        return json.loads(r.read())["listeners"][0]["address"] is not None


def test_ready_flips_at_sigterm_before_the_sockets_close(serve: StartMaster) -> None:
    """
    A worker busy with a request cannot drain yet, so the listening socket
    stays open; readiness is 503 already, liveness still 200, and the
    request in progress completes.
    """
    master = serve("-w", "1", "-p", "tests.apps.BlocksBriefly", *STATUS)
    master.waitForWorkers(1)
    base = statusURL(master)
    assert probe(base + "readyz") == (200, "ok: 1 of 1 workers accepting\n")
    assert probe(base + "livez")[0] == 200
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as s:
        s.sendall(b"x")
        assert s.recv(100) == b"busy\n"
        master.signal(signal.SIGTERM)
        master.waitForLine("stopping: 1 workers finish")
        assert probe(base + "readyz") == (503, "not ready: stopping\n")
        assert probe(base + "livez")[0] == 200
        assert listenerOpen(master)
        assert master.count("closing the listening sockets") == 0
        rest = b""
        while chunk := s.recv(100):
            rest += chunk
    assert rest == b"done"
    assert master.wait(30) == 0


def test_ready_stays_200_through_a_failed_reload(
    serve: StartMaster, tmp_path: Path
) -> None:
    marker = tmp_path / "broken"
    master = serve(
        "-w",
        "2",
        "-p",
        "tests.apps.InitialisedEcho",
        "--worker-init",
        "tests.apps.workerInit",
        *STATUS,
        env={"PREFORKTWIST_TEST_BREAK": str(marker)},
    )
    master.waitForWorkers(2)
    url = statusURL(master) + "readyz"
    assert probe(url)[0] == 200
    marker.touch()
    master.signal(signal.SIGHUP)
    answers: list[int] = []

    def reloadStopped() -> bool:
        answers.append(probe(url)[0])
        return master.count("reload stopped: a new worker failed to boot") > 0

    waitUntil(reloadStopped, 30, "the reload to stop")
    answers.append(probe(url)[0])
    assert master.count("init is broken on purpose") >= 1
    assert len(answers) >= 2 and set(answers) == {200}
