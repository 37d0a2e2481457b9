"""
C{--preload}: the fork server imports the application, which installs a
reactor at import; every worker must still get a poller and waker of its
own, run the import-time delayed call, and run thread-pool jobs.  And
SIGHUP re-imports the code in a new fork server.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartMaster
from tests.harness import exchange, waitUntil

KCMP_FILE = 0
SYS_KCMP = 312  # x86_64


def sameFile(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """
    Whether two processes' descriptors are the same open file (kcmp(2)).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(SYS_KCMP, pid1, pid2, KCMP_FILE, fd1, fd2)
    if result < 0:
        pytest.skip(f"kcmp unavailable: errno {ctypes.get_errno()}")
    return bool(result == 0)


def reports(port: int, workers: int) -> dict[int, dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}

    def all() -> bool:
        line = json.loads(exchange(port, b""))
        seen[line["pid"]] = line
        return len(seen) >= workers

    waitUntil(all, 30, f"answers from {workers} workers")
    return seen


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll only")
def test_preloaded_reactor_is_each_workers_own(
    serve: StartMaster, tmp_path: Path
) -> None:
    version = tmp_path / "version"
    version.write_text("one")
    master = serve(
        "-w",
        "2",
        "--preload",
        "-p",
        "tests.preloadapp.Report",
        env={"PREFORKTWIST_TEST_VERSION": str(version)},
    )
    master.waitForWorkers(2)
    (server,) = master.forkServers()
    seen = reports(master.port, 2)
    (a, b) = seen.values()
    for r in (a, b):
        assert r["imported"] == server  # imported once, in the template
        assert r["fired"] == [r["pid"]]  # the import-time callLater, here
        assert r["thread"] == r["pid"]  # the thread pool works here
        assert r["version"] == "one"
    # Each worker's poller and waker are its own, not its sibling's.
    assert sameFile(a["pid"], a["poller"], a["pid"], a["poller"])
    assert not sameFile(a["pid"], a["poller"], b["pid"], b["poller"])
    assert not sameFile(a["pid"], a["waker"][1], b["pid"], b["waker"][1])
    # SIGHUP: a new fork server imports the code on disk anew.
    version.write_text("two")
    old = set(seen)
    master.signal(signal.SIGHUP)
    master.waitForLine("reload finished", 60)
    waitUntil(lambda: not (old & set(master.liveWorkers())), 30, "old workers gone")
    after = reports(master.port, 2)
    assert {r["version"] for r in after.values()} == {"two"}
    assert {r["imported"] for r in after.values()} == {master.forkServers()[-1]}
    assert master.forkServers()[-1] != server


def test_renewed_reactor_shares_nothing_with_the_parent() -> None:
    """
    In process: a reactor made before fork() and renewed in the child has
    another epoll and waker than the parent's; without renewing, kcmp sees
    the same ones (so the check can fail).
    """
    from twisted.internet.epollreactor import EPollReactor

    from preforktwist.worker.afterfork import renewReactor

    parentReactor: Any = EPollReactor()
    try:
        for renew in (False, True):
            read, write = os.pipe()
            done, release = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(release)
                    os.close(read)
                    r: Any = parentReactor
                    if renew:
                        renewReactor(r)
                    out = [r._poller.fileno(), r.waker.o, r.waker.fileno() in r._reads]
                    os.write(write, json.dumps(out).encode())
                    os.read(done, 1)  # alive until the parent has looked
                finally:
                    os._exit(0)
            os.close(write)
            os.close(done)
            poller, wakerOut, registered = json.loads(os.read(read, 1000))
            me = os.getpid()
            try:
                assert (
                    sameFile(me, parentReactor._poller.fileno(), pid, poller) != renew
                )
                assert sameFile(me, parentReactor.waker.o, pid, wakerOut) != renew
                assert registered
            finally:
                os.close(read)
                os.close(release)
                os.waitpid(pid, 0)
    finally:
        parentReactor._poller.close()
