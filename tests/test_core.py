"""
End-to-end tests of the core: real masters, real workers, real sockets.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import StartMaster
from tests.harness import Load, exchange, isAlive, waitUntil


def test_echo_default(serve: StartMaster) -> None:
    """
    With neither --protocol nor --factory the bundled echo is served, and
    the log says so.
    """
    master = serve("-w", "2")
    master.waitForWorkers(2)
    assert exchange(master.port, b"hello", expect=5) == b"hello"
    assert master.count("serving the bundled example preforktwist.examples.Echo") == 1


def test_exact_allowance(serve: StartMaster) -> None:
    """
    -w 3 -m 10 and 300 connections, some one after another, some 50 at
    once: every connection is served, no worker serves more than 10, at
    least 30 workers served, and never more than 3 workers were booting or
    accepting at once (--replace-at 1: no replacement ahead of time, which
    would let a fourth start while the third still accepts).
    """
    master = serve(
        "-w", "3", "-m", "10", "--replace-at", "1", "-p", "tests.apps.PidEcho"
    )
    master.waitForWorkers(3)
    port = master.port

    def one(i: int) -> bytes:
        return exchange(port, b"%d" % i)

    replies = [one(i) for i in range(100)]
    with ThreadPoolExecutor(50) as pool:
        replies += list(pool.map(one, range(100, 300)))
    served: Counter[int] = Counter()
    for i, reply in enumerate(replies):
        pid, _, echoed = reply.partition(b":")
        assert echoed == b"%d" % i, f"connection {i} got {reply!r}"
        served[int(pid)] += 1
    assert sum(served.values()) == 300
    assert max(served.values()) <= 10
    assert len(served) >= 30
    assert master.mostBusy() == 3


def test_factory_callable_and_instance(serve: StartMaster) -> None:
    for name in ("tests.apps.makeEchoFactory", "tests.apps.echoFactory"):
        master = serve("-w", "1", "--factory", name)
        master.waitForWorkers(1)
        assert exchange(master.port, b"x").endswith(b":x")
        master.signal(signal.SIGTERM)
        assert master.wait() == 0


def test_worker_environment(serve: StartMaster) -> None:
    """
    Workers get the master's environment (spawnProcess's default is empty).
    """
    master = serve(
        "-w",
        "1",
        "-p",
        "tests.apps.Environment",
        env={"PREFORKTWIST_TEST_MARK": "m4rk"},
    )
    master.waitForWorkers(1)
    assert exchange(master.port, b"") == b"m4rk"


def test_unimportable_factory_gives_up(serve: StartMaster) -> None:
    """
    A factory that cannot be imported ends twistd non-zero, with the
    reason, within 10 seconds and after a handful of spawns.
    """
    started = time.monotonic()
    master = serve("-w", "2", "--factory", "no.such.module.factory")
    status = master.wait(timeout=20)
    elapsed = time.monotonic() - started
    assert status != 0
    assert elapsed < 10, elapsed
    assert master.count(r"cannot import") >= 1
    assert master.count(r"giving up after \d+ boot failures") == 1
    assert len(master.workerPids()) <= 4
    assert not any(isAlive(pid) for pid in master.workerPids())


def test_raising_factory_gives_up(serve: StartMaster) -> None:
    master = serve("-w", "1", "--factory", "tests.apps.raisingFactory")
    assert master.wait(timeout=20) != 0
    assert master.count("raised RuntimeError: the database is down") >= 1
    assert len(master.workerPids()) <= 3


def test_kill_worker_under_load(serve: StartMaster) -> None:
    """
    SIGKILL of a worker while 4 clients stream connections: it is
    replaced, and at most the connections it had open fail.
    """
    master = serve("-w", "3", "-p", "tests.apps.PidEcho")
    master.waitForWorkers(3)
    port = master.port
    stop = threading.Event()
    results: list[tuple[float, bool]] = []

    def client() -> None:
        while not stop.is_set():
            try:
                ok = exchange(port, b"x", timeout=5).endswith(b":x")
            except OSError:
                ok = False
            results.append((time.monotonic(), ok))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        waitUntil(lambda: len(results) > 200, 30, "load to start")
        victim = master.liveWorkers()[0]
        os.kill(victim, signal.SIGKILL)
        killedAt = time.monotonic()
        master.waitForLine(rf"pid {victim}\) was killed by SIGKILL", 10)
        waitUntil(lambda: len(master.liveWorkers()) == 3, 10, "pool back to 3")
        waitUntil(
            lambda: sum(1 for at, _ in results if at > killedAt + 1) > 200,
            30,
            "load after the kill",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    failed = [at for at, ok in results if not ok]
    assert len(failed) <= 4, f"{len(failed)} of {len(results)} failed"
    assert all(abs(at - killedAt) < 5 for at in failed)


def test_sigterm_completes_open_exchange(serve: StartMaster) -> None:
    """
    SIGTERM while a client waits for a slow reply: the reply arrives, and
    twistd exits 0 (not by re-killing itself with the signal).
    """
    master = serve("-w", "2", "-p", "tests.apps.SlowReply", "--grace", "10")
    master.waitForWorkers(2)
    port = master.port
    with ThreadPoolExecutor(4) as pool:
        replies = [pool.submit(exchange, port, b"%d" % i) for i in range(4)]
        waitUntil(lambda: master.count("accepting") >= 2, 5, "workers")
        time.sleep(0.3)  # let the requests reach the workers
        master.signal(signal.SIGTERM)
        results = [f.result(timeout=20) for f in replies]
    for i, reply in enumerate(results):
        assert reply.startswith(b"done:") and reply.endswith(b":%d" % i), reply
    assert master.wait() == 0
    assert master.count("all workers have exited") == 1


def test_ctrl_c_reaches_only_the_master(serve: StartMaster) -> None:
    """
    Ctrl-C in a terminal sends SIGINT to the foreground process group: the
    workers are in groups of their own, and an exchange in progress still
    completes.
    """
    master = serve("-w", "2", "-p", "tests.apps.SlowReply", "--grace", "10")
    master.waitForWorkers(2)
    port = master.port
    for pid in master.liveWorkers():
        assert os.getpgid(pid) != os.getpgid(master.pid)
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(exchange, port, b"ctrl-c")
        time.sleep(0.3)
        os.killpg(os.getpgid(master.pid), signal.SIGINT)
        assert reply.result(timeout=20).endswith(b":ctrl-c")
    assert master.wait() == 0


def test_master_killed_leaves_no_worker(serve: StartMaster) -> None:
    """
    SIGKILL of the master: every worker notices (control channel EOF),
    finishes and exits within the grace period, and the port can be bound
    again.
    """
    master = serve("-w", "3", "--grace", "3")
    master.waitForWorkers(3)
    port = master.port
    workers = master.liveWorkers()
    assert len(workers) == 3
    master.signal(signal.SIGKILL)
    master.wait()
    waitUntil(
        lambda: not any(isAlive(pid) for pid in workers), 3 + 2, "workers to exit"
    )
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_stop_serves_every_connection_made_before_it(serve: StartMaster) -> None:
    """
    SIGTERM under load while workers recycle (-m 5): every connection
    attempted before the signal is served, including those queued while
    only replacements were booting.  Only attempts after it may fail, and
    the master exits 0.
    """
    master = serve("-w", "2", "-m", "5", "-p", "tests.apps.PidEcho", "--grace", "10")
    master.waitForWorkers(2)
    with Load(master.port, clients=8) as load:
        load.waitForMore(100)
        stoppedAt = time.monotonic()
        master.signal(signal.SIGTERM)
        assert master.wait(30) == 0
    print("stop under load:", load.report())
    assert [f for f in load.failed if f[0] < stoppedAt] == []
    # After it, new clients are refused: never accepted and then reset.
    assert {why for _, why in load.failed} <= {"ConnectionRefusedError"}
    assert master.count("closing the listening sockets") == 1
