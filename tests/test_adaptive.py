"""
The adaptive pool and the per-worker limits, end to end: a load that steps
up grows the pool and drains the queue, and it shrinks back when the load
stops; a leaking protocol's workers are replaced at the memory limit;
workers retire by age within the jitter window.  No connection fails.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import StartMaster
from tests.harness import Load, Master, exchange, waitUntil


def status(master: Master) -> dict[str, object]:
    url = master.waitForLine(r"status page on (http://127\.0\.0\.1:\d+/)").group(1)
    with urllib.request.urlopen(url + "status.json", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_step_load_grows_then_shrinks(serve: StartMaster) -> None:
    """
    1 worker capped at 2 connections, then 8 clients holding a connection
    each for 1.5 s: the queue grows, the pool grows (up to 4) until the
    queue drains; when the clients stop, the pool shrinks back to 1.
    """
    master = serve(
        "--min-workers",
        "1",
        "--max-workers",
        "4",
        "-c",
        "2",
        "-p",
        "tests.apps.SlowReply",
        "--status",
        "tcp:0:interface=127.0.0.1",
        "--scale-up-after",
        "1",
        "--scale-down-after",
        "2",
        "--scale-cooldown",
        "1",
    )
    master.waitForWorkers(1)
    port = master.port
    stop = threading.Event()
    attempted: list[int] = [0]
    failed: list[object] = []
    timeline: list[tuple[float, int, int]] = []
    started = time.monotonic()

    def client(i: int) -> None:
        while not stop.is_set():
            attempted[0] += 1
            try:
                reply = exchange(port, b"%d" % i, timeout=30)
                if not reply.startswith(b"done:"):
                    failed.append(reply)
            except OSError as e:
                failed.append(repr(e))

    def sample() -> tuple[int, int]:
        s = status(master)
        pool, listeners = s["pool"], s["listeners"]
        assert isinstance(pool, dict) and isinstance(listeners, list)
        size = pool["accepting"] + pool["paused"]
        timeline.append((time.monotonic() - started, size, listeners[0]["queue"]))
        return size, listeners[0]["queue"]

    with ThreadPoolExecutor(8) as pool:
        for i in range(8):
            pool.submit(client, i)
        try:
            waitUntil(lambda: sample()[0] == 4, 60, "the pool to grow to 4", 0.5)
            waitUntil(lambda: sample()[1] == 0, 30, "the queue to drain", 0.5)
        finally:
            stop.set()
    waitUntil(lambda: sample()[0] == 1, 60, "the pool to shrink to 1", 0.5)
    print("step load: attempted", attempted[0], "failed", len(failed))
    print("time(s) workers queued")
    for at, size, queued in timeline[:: max(1, len(timeline) // 25)]:
        print(f"{at:6.1f} {size:3d} {queued:4d}")
    assert failed == []
    assert max(q for _, _, q in timeline) > 0
    assert master.count(r"autoscale: \d -> \d workers \(\d+ connections waiting") == 3
    assert master.count(r"autoscale: \d -> \d workers \(slack") == 3


def test_leaking_workers_are_replaced_at_the_memory_limit(serve: StartMaster) -> None:
    master = serve(
        "-w",
        "2",
        "-p",
        "tests.apps.Leaky",
        "--max-worker-memory",
        "120",
        "--min-worker-lifetime",
        "1",
        "--status",
        "tcp:0:interface=127.0.0.1",
    )
    master.waitForWorkers(2)

    def replaced() -> int:
        restarts = status(master)["restarts"]
        assert isinstance(restarts, dict)
        return int(restarts["memory"])

    with Load(master.port, clients=2, pause=0.01) as load:
        waitUntil(lambda: replaced() >= 2, 60, "2 workers replaced")
        load.waitForMore(20)
    print("memory limit:", load.report())
    assert load.failed == []
    workers = status(master)["workers"]
    assert isinstance(workers, list)
    assert all(w["rss"] < 200 * 2**20 for w in workers)


def test_age_limit_with_jitter(serve: StartMaster) -> None:
    master = serve(
        "-w",
        "2",
        "-p",
        "tests.apps.PidEcho",
        "--max-worker-age",
        "3",
        "--max-worker-age-jitter",
        "1",
        "--min-worker-lifetime",
        "0",
    )
    master.waitForWorkers(2)
    first = set(master.liveWorkers())
    started = time.monotonic()
    with Load(master.port, clients=2, pause=0.01) as load:
        waitUntil(
            lambda: not first & set(master.liveWorkers()), 30, "first workers gone"
        )
        elapsed = time.monotonic() - started
    print("age limit:", load.report(), f"first generation gone after {elapsed:.1f}s")
    assert load.failed == []
    ages = [
        float(a)
        for a in __import__("re").findall(
            r"is (\d+)s old, over its age limit of (\d+)s", "\n".join(master.log())
        )[0]
    ]
    assert 3 <= ages[1] <= 4
    assert 3 <= elapsed <= 12
