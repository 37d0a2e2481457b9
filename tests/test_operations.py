"""
Operating the pool under load: reload, scaling, the concurrency cap,
jitter, hung workers, worker-init, log reopening, process titles.
Each scenario reports connections attempted, served and failed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import StartMaster
from tests.harness import Load, exchange, isAlive, waitUntil


def test_rolling_reload_under_load(serve: StartMaster) -> None:
    """
    SIGHUP while connections stream in: every worker pid is replaced, never
    more than workers + 1 run, and no connection fails.
    """
    master = serve("-w", "3", "-p", "tests.apps.PidEcho")
    master.waitForWorkers(3)
    old = set(master.liveWorkers())
    with Load(master.port) as load:
        load.waitForMore(100)
        master.signal(signal.SIGHUP)
        master.waitForLine("reload finished", 60)
        load.waitForMore(100)
    # The last old worker may still be finishing its connections.
    waitUntil(lambda: len(master.liveWorkers()) == 3, 20, "the old workers to exit")
    new = set(master.liveWorkers())
    print("reload:", load.report())
    assert load.failed == []
    assert len(new) == 3 and not new & old
    # The last old worker may take a connection or two while its Retire is
    # on the way; the last 50 are the new workers' alone.
    assert {pid for _, pid in load.served[-50:]} <= new
    assert 3 < master.mostBusy() <= 4


def test_failed_reload_keeps_old_workers(serve: StartMaster, tmp_path: Path) -> None:
    marker = tmp_path / "broken"
    master = serve(
        "-w",
        "2",
        "-p",
        "tests.apps.InitialisedEcho",
        "--worker-init",
        "tests.apps.workerInit",
        env={"PREFORKTWIST_TEST_BREAK": str(marker)},
    )
    master.waitForWorkers(2)
    old = set(master.liveWorkers())
    with Load(master.port) as load:
        load.waitForMore(50)
        marker.touch()
        master.signal(signal.SIGHUP)
        master.waitForLine("reload stopped: a new worker failed to boot", 30)
        load.waitForMore(50)
    print("failed reload:", load.report())
    assert load.failed == []
    assert set(master.liveWorkers()) == old
    assert master.count("init is broken on purpose") >= 1


def test_scaling_with_ttin_ttou(serve: StartMaster) -> None:
    master = serve("-w", "2", "-p", "tests.apps.PidEcho")
    master.waitForWorkers(2)
    with Load(master.port) as load:
        # Signals of one kind sent in a burst may arrive as one: send each
        # once the last has taken effect, as an operator would.
        for size in (3, 4):
            master.signal(signal.SIGTTIN)
            master.waitForLine(rf"pool size {size - 1} -> {size}")
        master.waitForWorkers(4)
        load.waitForMore(50)
        for size in (3, 2, 1):
            master.signal(signal.SIGTTOU)
            master.waitForLine(rf"pool size {size + 1} -> {size}")
        waitUntil(lambda: len(master.liveWorkers()) == 1, 20, "1 worker")
        master.signal(signal.SIGTTOU)  # never below one
        load.waitForMore(50)
    print("scaling:", load.report())
    assert load.failed == []
    assert len(master.liveWorkers()) == 1
    assert master.count("is retiring \\(scaling\\)") == 3


def test_concurrency_cap_spreads_and_queues(serve: StartMaster) -> None:
    """
    -c 2 with 10 clients held for a second each: no worker ever holds more
    than 2, both workers serve, and the rest wait in the queue: all 10 are
    served.
    """
    master = serve("-w", "2", "-c", "2", "-p", "tests.apps.CountsConcurrency")
    master.waitForWorkers(2)
    port = master.port
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda i: exchange(port, b""), range(10)))
    mostOpen: dict[int, int] = {}
    for reply in replies:
        pid, _, most = reply.partition(b":")
        mostOpen[int(pid)] = max(mostOpen.get(int(pid), 0), int(most))
    assert len(replies) == 10
    assert len(mostOpen) == 2
    assert all(most <= 2 for most in mostOpen.values()), mostOpen


def test_jitter_gives_different_allowances(serve: StartMaster) -> None:
    master = serve("-w", "4", "-m", "5", "--max-connections-jitter", "1000")
    master.waitForWorkers(4)
    allowances = [
        int(n)
        for n in re.findall(r"may accept (\d+) connections", "\n".join(master.log()))
    ]
    assert len(allowances) >= 4
    assert all(5 <= a <= 1005 for a in allowances)
    assert len(set(allowances)) > 1


def test_replacement_ahead_of_time(serve: StartMaster) -> None:
    """
    With -m 150 --replace-at 0.5 and a steady load, each replacement is
    accepting before the worker it replaces stops: whenever a worker
    retires, at least 2 others accept, and nothing fails.

    Both workers start together and share the load evenly, so they reach
    their allowance within a connection or two of each other: each needs
    its own held replacement, which takes a surplus of 2 (with the default
    1, the second to retire would find its replacement still booting, the
    documented dip of C{--replace-at}).
    """
    master = serve(
        "-w",
        "2",
        "-m",
        "150",
        "--replace-at",
        "0.5",
        "--reload-batch",
        "2",
        "-p",
        "tests.apps.PidEcho",
    )
    master.waitForWorkers(2)
    with Load(master.port, clients=2, pause=0.02) as load:
        waitUntil(
            lambda: master.count(r"is retiring \(allowance\)") >= 3, 60, "3 retirements"
        )
    print("ahead of time:", load.report())
    assert load.failed == []
    retirements = [line for line in master.log() if "is retiring (allowance)" in line]
    for line in retirements:
        accepting = re.search(r"(\d+) accepting", line)
        assert accepting and int(accepting.group(1)) >= 2, line


def test_hung_worker_is_named_with_its_stack(serve: StartMaster) -> None:
    master = serve("-w", "2", "-p", "tests.apps.Blocking", "--heartbeat-timeout", "2")
    master.waitForWorkers(2)
    port = master.port
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(exchange, port, b"block", 30)
        match = master.waitForLine(
            r"worker \d+ \(pid (\d+)\) is stuck: no heartbeat", 20
        )
        stuck = int(match.group(1))
        master.waitForLine(rf"\[worker \d+ pid {stuck}\].*in dataReceived", 10)
        master.waitForLine(rf"pid {stuck}\) was killed by SIGKILL", 10)
        pending.exception(timeout=20)
    waitUntil(lambda: len(master.liveWorkers()) == 2, 20, "pool back to 2")
    assert not isAlive(stuck)
    assert master.count("tests/apps.py") >= 1


def test_worker_init_runs_before_accepting(serve: StartMaster) -> None:
    master = serve(
        "-w",
        "2",
        "-p",
        "tests.apps.InitialisedEcho",
        "--worker-init",
        "tests.apps.workerInit",
    )
    master.waitForWorkers(2)
    for _ in range(10):
        assert exchange(master.port, b"x").endswith(b":x")


def test_second_sigterm_stops_now(serve: StartMaster) -> None:
    master = serve("-w", "1", "-p", "tests.apps.SlowReply", "--grace", "30")
    master.waitForWorkers(1)
    port = master.port
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(exchange, port, b"x", 20)
        time.sleep(0.3)
        master.signal(signal.SIGTERM)
        master.waitForLine("stopping gracefully")
        master.signal(signal.SIGTERM)
        master.waitForLine("received again: stopping now")
        started = time.monotonic()
        assert master.wait(10) == 0
        assert time.monotonic() - started < 5
        pending.exception(timeout=20)


def test_sigusr1_reopens_log_file(serve: StartMaster, tmp_path: Path) -> None:
    logfile = tmp_path / "server.log"
    master = serve("-w", "1", twistdArgs=[f"--logfile={logfile}"])
    waitUntil(
        lambda: logfile.exists() and "(1 accepting)" in logfile.read_text(), 20, "log"
    )
    logfile.rename(tmp_path / "server.log.1")
    master.signal(signal.SIGUSR1)
    waitUntil(
        lambda: logfile.exists() and "reopened 1 log files" in logfile.read_text(),
        10,
        "the new log file",
    )


def test_process_titles(serve: StartMaster) -> None:
    master = serve("-w", "2")
    master.waitForWorkers(2)
    titles = subprocess.run(
        [
            "ps",
            "-o",
            "pid=,args=",
            "-p",
            ",".join(map(str, [master.pid, *master.liveWorkers()])),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(
        rf"{master.pid} preforktwist master tcp:0:interface=127.0.0.1 \(2 workers\)",
        titles,
    )
    assert len(re.findall(r"preforktwist worker \d+ tcp:0", titles)) == 2
    assert os.getpid() != master.pid


def test_fork_server_killed(serve: StartMaster) -> None:
    """
    SIGKILL of the fork server: the workers it made keep serving (they do
    not die with it), their exits are still noticed, and new workers keep
    coming (from a new fork server, or as fresh interpreters meanwhile).
    """
    master = serve("-w", "2", "-m", "20", "-p", "tests.apps.PidEcho")
    master.waitForWorkers(2)
    (forkServer,) = master.forkServers()
    with Load(master.port, clients=2) as load:
        load.waitForMore(50)
        os.kill(forkServer, signal.SIGKILL)
        before = len(master.workerPids())
        waitUntil(lambda: len(master.workerPids()) >= before + 6, 60, "more workers")
        load.waitForMore(50)
    print("fork server killed:", load.report())
    assert load.failed == []
    # Two accepting and one standby.
    waitUntil(lambda: len(master.liveWorkers()) == 3, 30, "the pool at 2 + 1")


def test_without_fork_server(serve: StartMaster) -> None:
    """
    --no-fork-server: every worker is a fresh interpreter, started by the
    master itself; recycling still loses nothing.
    """
    master = serve(
        "-w", "2", "-m", "10", "--no-fork-server", "-p", "tests.apps.PidEcho"
    )
    master.waitForWorkers(2)
    with Load(master.port, clients=2, limit=100) as load:
        waitUntil(lambda: load.attempted >= 100, 60, "100 connections")
    assert load.failed == []
    assert master.forkServers() == []
    assert len(master.workerPids()) >= 10


def test_reload_starts_a_new_fork_server(serve: StartMaster) -> None:
    master = serve("-w", "2", "-p", "tests.apps.PidEcho")
    master.waitForWorkers(2)
    (first,) = master.forkServers()
    master.signal(signal.SIGHUP)
    master.waitForLine("reload finished", 60)
    waitUntil(lambda: len(master.forkServers()) == 2, 10, "a second fork server")
    waitUntil(lambda: not isAlive(first), 30, "the first fork server to exit")


def test_replacement_log_lines(serve: StartMaster) -> None:
    """
    A worker retired by SIGTERM says why and how it ends in one line, and
    its forked replacement's start is one line of the master's, with no
    "(pid None)" in it: the lines a replacement costs are few, and each
    says something.  Its ReplaceMe reaches the master before it exits
    (it has nothing open, so it exits at once): its exit is a retirement,
    not a crash.
    """
    master = serve("-w", "1", "-p", "tests.apps.PidEcho")
    master.waitForWorkers(1)
    (old,) = master.liveWorkers()
    os.kill(old, signal.SIGTERM)
    master.waitForLine(r"worker 2 \(pid \d+\) is accepting")
    exited = master.waitForLine(rf"worker 1 \(pid {old}\) exited .*").group(0)
    assert "replacing it" not in exited
    assert master.count(rf"worker 1 \(pid {old}\) is retiring \(signal\)") == 1
    line = master.waitForLine(rf"\[worker 1 pid {old}\] .*stopped accepting").string
    assert line.endswith(
        "received SIGTERM: stopped accepting after 0 connections; finishing 0 open"
    )
    assert master.count(rf"\[worker 1 pid {old}\] received SIGTERM") == 1
    assert master.count(r"started worker 2 \(") == 1
    assert master.count(r"pid None|forked worker") == 0
