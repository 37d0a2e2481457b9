"""
Idle-connection floods: workers raise their open-file limit and take their
default cap from it, a first-byte timeout closes silent clients (and only
them, through PROXY headers and TLS), and a pool with every worker at its
cap says it is saturated.
"""

from __future__ import annotations

import json
import re
import resource
import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from preforktwist.common.fdlimit import raiseFileLimit
from preforktwist.master.pool import WorkerState
from preforktwist.master.status.saturation import SaturationWatch, isSaturated
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.worker.main import FD_RESERVE, concurrencyCap
from tests.conftest import StartMaster
from tests.harness import TWISTD, Master, exchange, waitUntil
from tests.test_deploy import makeCertificate
from tests.test_pool import Harness

STATUS = ["--status", "tcp:0:interface=127.0.0.1"]

#: Start twistd with the open-file limit (SOFT, HARD).
LIMITED = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def limitedCommand(soft: int, hard: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        LIMITED,
        str(soft),
        str(hard),
        TWISTD,
        "-n",
        "--pidfile=",
        "--logfile=-",
        "preforked",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        *args,
    ]


def fetch(master: Master, path: str) -> bytes:
    base = master.waitForLine(r"status page on (http://127\.0\.0\.1:\d+/)").group(1)
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]


def snapshot(master: Master) -> dict[str, Any]:
    return json.loads(fetch(master, "status.json"))  # type: ignore[no-any-return]


def metric(master: Master, name: str, **labels: str) -> float | None:
    text = fetch(master, "metrics").decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def softLimit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-file limit for {pid}")


# The open-file limit and the cap it gives.


@pytest.fixture
def lowSoftLimit() -> Iterator[int]:
    """
    This process's soft open-file limit lowered to 256 for one test.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raise_file_limit_to_hard(lowSoftLimit: int) -> None:
    hard = lowSoftLimit
    limit = raiseFileLimit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert (limit.before, limit.soft, limit.hard) == (256, hard, hard)
    assert limit.error is None
    assert limit.describe() == f"open-file limit 256 -> {hard} (hard {hard})"
    # Raised already: nothing changes, and it says so.
    again = raiseFileLimit()
    assert again.before == again.soft == hard
    assert again.describe() == f"open-file limit {hard} (hard {hard})"


def test_cap_follows_the_limit() -> None:
    assert FD_RESERVE == 64
    assert concurrencyCap(None, 20000) == 20000 - 64  # auto
    assert concurrencyCap(500, 20000) == 500  # explicit, within the limit
    assert concurrencyCap(1000, 128) == 64  # explicit, lowered
    assert concurrencyCap(0, 128) == 0  # no cap
    assert concurrencyCap(None, 10) == 1
    assert concurrencyCap(None, resource.RLIM_INFINITY) == 0


def test_workers_raise_the_limit_and_take_the_cap(serve: StartMaster) -> None:
    """
    Started with a soft limit of 256 and a hard one of 4096, the master and
    its workers run with 4096, each worker holds up to 4032 connections,
    and both say so in one line at start; an explicit -c is kept.
    """
    master = serve(command=limitedCommand(256, 4096, "-w", "2", *STATUS))
    master.waitForWorkers(2)
    assert master.waitForLine(r"master: open-file limit 256 -> 4096 \(hard 4096\)")
    lines = [
        line
        for line in master.log()
        if re.search(r"\[worker \d pid \d+\] open-file limit", line)
    ]
    assert len(lines) == 2
    assert all(
        line.endswith(
            "open-file limit 4096 (hard 4096); at most 4032 connections open at "
            "once (--max-concurrent auto)"
        )
        for line in lines
    ), lines
    pids = master.liveWorkers()
    assert len(pids) == 2
    assert [softLimit(pid) for pid in pids] == [(4096, 4096)] * 2
    rows = snapshot(master)["workers"]
    assert [row["max_concurrent"] for row in rows] == [4032, 4032]

    explicit = serve(command=limitedCommand(256, 4096, "-w", "1", "-c", "100"))
    explicit.waitForWorkers(1)
    explicit.waitForLine(
        r"open-file limit 4096 \(hard 4096\); at most 100 connections open at once "
        r"\(--max-concurrent 100\)"
    )


# The first-byte timeout.


def closedBy(s: socket.socket) -> bool:
    """
    Whether the server closed (or reset) C{s}, waiting at most its timeout.
    """
    try:
        return s.recv(64) == b""
    except ConnectionResetError:
        return True


def test_first_byte_timeout(serve: StartMaster, tmp_path: Path) -> None:
    """
    With --first-byte-timeout 0.5, a client that sends nothing is closed,
    on a plain and on a TLS listener; clients that send their first byte
    (a PROXY header, a TLS handshake) and then stay quiet for longer than
    the timeout are served.  The closes are counted in the status.
    """
    cert, key = makeCertificate(tmp_path)
    master = serve(
        "-w",
        "1",
        "--first-byte-timeout",
        "0.5",
        "--proxy-protocol",
        "-p",
        "tests.apps.PeerAtConnect",
        "-l",
        "tcp:0:interface=127.0.0.1",
        "-l",
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        *STATUS,
    )
    master.waitForWorkers(1)
    plain, tls = (
        int(p)
        for p in re.findall(r"listening on 127\.0\.0\.1:(\d+)", "\n".join(master.log()))
    )
    header = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n"
    quiet = 1.0  # longer than the timeout: the subject of the test, not a wait

    for port in (plain, tls):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            began = time.monotonic()
            assert closedBy(silent)
            assert time.monotonic() - began >= 0.4

    with socket.create_connection(("127.0.0.1", plain), timeout=10) as talking:
        talking.sendall(header)
        time.sleep(quiet)
        talking.sendall(b"hi")
        assert talking.recv(64) == b"203.0.113.7:56324|hi"

    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", tls), timeout=10) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            time.sleep(quiet)
            s.sendall(b"tls")
            assert s.recv(64) == b"203.0.113.7:56324|tls"

    waitUntil(
        lambda: snapshot(master)["closes"] == {"first_byte_timeout": 2},
        10,
        "2 first-byte timeouts counted",
    )
    closed = "preforktwist_connections_closed_total"
    assert metric(master, closed, cause="first_byte_timeout") == 2.0
    waitUntil(
        lambda: snapshot(master)["connections"]["served"] == 4, 10, "4 closed in all"
    )
    assert exchange(plain, header + b"again") == b"203.0.113.7:56324|again"


# Saturation.


def test_saturated_flag_flips_on_and_off(serve: StartMaster) -> None:
    """
    -w 1 -c 2 and three idle sockets: two held, one queued; the pool is
    saturated (status, metrics, one log line) until they leave, then not,
    and a client is served.
    """
    master = serve("-w", "1", "-c", "2", "-p", "tests.apps.PidEcho", *STATUS)
    master.waitForWorkers(1)
    port = master.port
    assert snapshot(master)["pool"]["saturated"] is False
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        status = waitUntil(
            lambda: (s := snapshot(master))["pool"]["saturated"] and s,
            10,
            "saturated",
        )
        assert status["pool"]["paused"] == 1
        waitUntil(lambda: snapshot(master)["pool"]["queued"] == 1, 10, "1 queued")
        assert metric(master, "preforktwist_saturated") == 1.0
        assert metric(master, "preforktwist_connections_queued") == 1.0
        master.waitForLine(r"saturated: every accepting worker holds its")
    finally:
        for s in idle:
            s.close()
    waitUntil(
        lambda: snapshot(master)["pool"]["saturated"] is False, 10, "not saturated"
    )
    master.waitForLine(r"no longer saturated, after \d+\.\ds")
    assert metric(master, "preforktwist_saturated") == 0.0
    assert exchange(port, b"after").endswith(b":after")
    assert master.count(r"saturated: every accepting worker") == 1


def watched(size: int = 2) -> tuple[Harness, SaturationWatch]:
    h = Harness(size)
    h.pool.start()
    h.readyAll()
    for worker in h.spawned:
        worker.maxConcurrent = 2  # type: ignore[attr-defined]
        worker.open = 0
    watch = SaturationWatch(h.pool, [], h.clock, interval=1.0, repeat=60.0)
    return h, watch


def fill(h: Harness, open: int) -> None:
    for worker in h.spawned:
        worker.open = open


def test_saturation_needs_every_accepting_worker_at_its_cap() -> None:
    h, _ = watched()
    assert not isSaturated(h.pool)
    h.spawned[0].open = 2
    assert not isSaturated(h.pool)
    fill(h, 2)
    assert isSaturated(h.pool)
    assert Scoreboard(h.pool, [], h.clock).snapshot()["pool"]["saturated"] is True
    # A worker without a cap (-c 0) is never at it.
    h.spawned[1].maxConcurrent = 0  # type: ignore[attr-defined]
    assert not isSaturated(h.pool)
    # No worker accepting is another trouble, not saturation.
    for worker in h.spawned:
        worker.state = WorkerState.RETIRING
    assert not isSaturated(h.pool)


def test_saturation_log_is_rate_limited() -> None:
    """
    One line as saturation begins, one a minute while it lasts, one as it
    ends; flapping within the minute logs no new beginning, and the next
    one counts the episodes left out.
    """
    h, watch = watched()
    clock: Clock = h.clock
    with capturedLogs() as events:
        watch.startService()
        fill(h, 2)
        clock.advance(1)
        for _ in range(60):
            clock.advance(1)
        fill(h, 0)
        clock.advance(1)
        for _ in range(3):  # flapping
            fill(h, 2)
            clock.advance(1)
            fill(h, 0)
            clock.advance(1)
        clock.advance(60)
        fill(h, 2)
        clock.advance(1)
        watch.stopService()
    texts = [e["log_format"].split(":")[0].split(" ")[0:3] for e in events]
    assert texts == [
        ["saturated"],
        ["still", "saturated", "after"],
        ["no", "longer", "saturated,"],
        ["saturated"],
    ], texts
    assert "saturated 3 more times since the last line" in events[-1]["again"]
