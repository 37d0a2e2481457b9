"""
Orphans reaped when the master is PID 1: in process with real children,
and end to end in a PID namespace (C{unshare}, as root).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import process

from preforktwist.master.reaper import OrphanReaper
from tests.conftest import StartMaster
from tests.harness import TWISTD, Load, Master, processState, waitUntil


def _child(seconds: float = 0.0) -> int:
    """
    A real child process that exits after C{seconds}, known to nobody.
    """
    return os.posix_spawn(
        sys.executable,
        [sys.executable, "-c", f"import time; time.sleep({seconds})"],
        dict(os.environ),
    )


class _TwistedsOwn:
    """
    Stands where Twisted's process object would in C{reapProcessHandlers}:
    Twisted reaps it by its pid, and must be the one to.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None

    def reapProcess(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.status = status
            del process.reapProcessHandlers[self.pid]


def _exited(pid: int) -> bool:
    return processState(pid) in ("Z", None)


def test_reaps_orphans_and_leaves_twisteds_children_to_twisted() -> None:
    ours, orphan = _child(), _child()
    own = _TwistedsOwn(ours)
    process.reapProcessHandlers[ours] = own  # type: ignore[assignment]
    try:
        waitUntil(lambda: _exited(ours) and _exited(orphan), 30, "both to exit")
        reaper = OrphanReaper()
        assert reaper.reapOrphans() == 1
        assert processState(orphan) is None
        # Twisted's own reaping saw its child's real exit status.
        assert own.status is not None and os.waitstatus_to_exitcode(own.status) == 0
        assert reaper.reapOrphans() == 0
        assert reaper.reaped == 1
    finally:
        process.reapProcessHandlers.pop(ours, None)
        for pid in (ours, orphan):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def test_a_running_child_is_left_alone() -> None:
    running = _child(30)
    try:
        assert OrphanReaper().reapOrphans() == 0
        assert processState(running) not in (None, "Z")
    finally:
        os.kill(running, signal.SIGKILL)
        os.waitpid(running, 0)


# End to end: the master as PID 1 of a new PID namespace.


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _allPids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


class NamespacedMaster(Master):
    """
    A master that is PID 1 of its own PID namespace, under C{unshare}.  Its
    log names pids as the namespace sees them; the test, outside, sees
    other numbers, so every pid is translated through C{NSpid}.
    """

    def __init__(self, args: list[str], cwd: Path, **kwargs: Any) -> None:
        command = [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            TWISTD,
            "-n",
            "--pidfile=",
            "--logfile=-",
            "preforked",
            *args,
        ]
        self._inner: int | None = None
        self._namespace = ""
        super().__init__(args, cwd, command=command, **kwargs)

    def inner(self) -> int:
        """
        The master's pid outside the namespace: the child of C{unshare}.
        """

        def found() -> int | None:
            for pid in _allPids():
                if _status(pid).get("PPid") == str(self.pid):
                    return pid
            return None

        if self._inner is None:
            self._inner = waitUntil(found, 10, "the namespaced master")
            self._namespace = os.readlink(f"/proc/{self._inner}/ns/pid")
        return self._inner

    def outside(self, nspids: list[int]) -> list[int]:
        """
        The pids, as seen from here, of the namespace's processes C{nspids}
        that still exist.  Once PID 1 is gone the kernel has killed every
        other process of its namespace: none is left.
        """
        self.inner()
        wanted, found = set(nspids), []
        for pid in _allPids():
            fields = _status(pid).get("NSpid", "").split()
            try:
                same = os.readlink(f"/proc/{pid}/ns/pid") == self._namespace
            except OSError:
                continue
            if same and len(fields) == 2 and int(fields[1]) in wanted:
                found.append(pid)
        return found

    def workerPids(self) -> list[int]:
        return self.outside(super().workerPids())

    def forkServers(self) -> list[int]:
        return self.outside(super().forkServers())

    def signal(self, signum: int) -> None:
        os.kill(self.inner(), signum)

    def zombies(self) -> list[int]:
        """
        The master's children that have exited and were not reaped.
        """
        master = str(self.inner())
        return [
            pid
            for pid in _allPids()
            if _status(pid).get("PPid") == master and processState(pid) == "Z"
        ]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a PID namespace needs root and unshare",
)
def test_pid_1_reaps_orphans_under_load(tmp_path: Path, serve: StartMaster) -> None:
    """
    As PID 1: kill the fork server (its workers become the master's
    orphans), then one of those workers, under load.  No zombie is left,
    the pool is restored, and only connections on the killed worker may
    fail.
    """
    master = serve("-w", "2", "-p", "tests.apps.PidEcho", master=NamespacedMaster)
    assert isinstance(master, NamespacedMaster)
    master.waitForWorkers(2)
    master.waitForLine("running as PID 1: reaping orphaned processes")
    (forkServer,) = master.forkServers()
    orphans = master.workerPids()
    assert len(orphans) == 2
    # As the namespace, and so the load's replies, name them.
    firstWorkers = set(Master.workerPids(master))
    with Load(master.port, clients=2) as load:
        load.waitForMore(50)
        os.kill(forkServer, signal.SIGKILL)
        load.waitForMore(50)
        os.kill(orphans[0], signal.SIGKILL)
        killedAt = time.monotonic()
        # The orphan is gone (reaped, not a zombie) and replaced.
        waitUntil(lambda: processState(orphans[0]) is None, 15, "the orphan reaped")
        waitUntil(lambda: master.zombies() == [], 15, "no zombies")
        waitUntil(
            lambda: load.pidsSince(killedAt) - firstWorkers,
            30,
            "a replacement serving",
        )
        load.waitForMore(50)
    print("PID 1:", load.report())
    assert master.zombies() == []
    # Two clients, one connection each at a time: at most the two that the
    # killed worker held.
    assert len(load.failed) <= 2, load.report()
    assert not re.search(r"Traceback", master.output())
