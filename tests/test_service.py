"""
L{PreforkService} in process: its children, the order they start and stop
in, the two-step stop, reload and giving up, with a memory reactor, a fake
clock and a starter that starts no process.  The subprocess tests show the
same with real workers; these show which part does what, in milliseconds.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.error import ProcessDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from preforktwist.common.endpoints import ListenError
from preforktwist.master.handle import WorkerProcess
from preforktwist.master.pool import WorkerState
from preforktwist.master.service import PreforkService
from preforktwist.master.starters import IWorkerStarter
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.status.web import StatusListener
from preforktwist.master.workers import WorkersService
from preforktwist.protocol.config import WorkerConfig

LISTEN = "tcp:0:interface=127.0.0.1"


@implementer(IWorkerStarter)
class RecordingStarter:
    """
    Starts no process: records what it was asked, in one list shared with
    the test, so that the order of everything is visible.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.workers: list[WorkerProcess] = []
        self.configs: list[WorkerConfig] = []

    def start(self) -> None:
        self.events.append("starter started")

    def startWorker(self, worker: WorkerProcess, config: WorkerConfig) -> None:
        self.events.append(f"worker {worker.number}")
        self.workers.append(worker)
        self.configs.append(config)

    def renew(self) -> None:
        self.events.append("starter renewed")

    def stop(self) -> None:
        self.events.append("starter stopped")


class Served:
    """
    A service made the way the plugin makes it, with the fake starter.
    """

    def __init__(self, **keywords: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.events: list[str] = []
        keywords.setdefault("workers", 2)
        keywords.setdefault("listen", LISTEN)
        self.starter = RecordingStarter(self.events)
        self.statuses: list[int] = []
        self.service = PreforkService(
            reactor=self.reactor,
            starter=self.starter,
            setExitStatus=self.statuses.append,
            **keywords,
        )

    def readyAll(self) -> None:
        for worker in list(self.service.pool.workers.values()):
            if worker.state is WorkerState.BOOTING:
                self.service.pool.workerReady(worker)

    def exitAll(self) -> None:
        for worker in list(self.starter.workers):
            assert isinstance(worker, WorkerProcess)
            if not worker.exited:
                worker.processExited(Failure(ProcessDone(0)))


MakeServed = Callable[..., Served]


@pytest.fixture
def served() -> Iterator[MakeServed]:
    made: list[Served] = []

    def make(**keywords: Any) -> Served:
        made.append(Served(**keywords))
        return made[-1]

    yield make
    for s in made:
        s.service.closeListeners()
        if s.service.statusListener is not None:
            s.service.statusListener.port = None


def kinds(service: PreforkService) -> list[str]:
    return [type(child).__name__ for child in service]


def test_children_in_the_order_they_start(served: MakeServed) -> None:
    s = served(status="tcp:0:interface=127.0.0.1", maxWorkerMemory=10**9)
    assert kinds(s.service) == [
        "ListeningSockets",
        "SystemdService",
        "MultiService",
        "Scoreboard",
        "SaturationWatch",
        "StatusListener",
    ]
    assert [type(c).__name__ for c in s.service.serving] == [
        "WorkersService",
        "WorkerLimits",
    ]


def test_policies_only_when_asked_for(served: MakeServed) -> None:
    s = served()
    assert [type(c).__name__ for c in s.service.serving] == ["WorkersService"]
    assert s.service.statusListener is None
    s = served(minWorkers=1, maxWorkers=3)
    assert [type(c).__name__ for c in s.service.serving] == [
        "WorkersService",
        "Autoscaler",
    ]


def test_collaborators_are_passed_in(served: MakeServed) -> None:
    """
    The reactor and the starter given are those the service and its
    children use: none is made behind the caller's back.
    """
    s = served()
    (workers,) = s.service.serving
    assert isinstance(workers, WorkersService)
    assert s.service.starter is workers.starter is s.starter
    assert {id(s.service.reactor), id(s.service.pool.clock)} == {id(s.reactor)}


def test_start_binds_then_starts_the_starter_then_the_pool(served: MakeServed) -> None:
    s = served()
    s.service.privilegedStartService()
    (listener,) = s.service.listeners
    assert listener.socket is not None
    s.service.startService()
    assert s.events == ["starter started", "worker 1", "worker 2"]
    # Every worker is told what the table says it needs.
    assert [c.number for c in s.starter.configs] == [1, 2]
    # auto (None): each worker works its cap out from its own fd limit.
    assert {c.maxConcurrent for c in s.starter.configs} == {None}
    assert all(child.running for child in s.service)
    s.service.stopService()
    s.exitAll()


def test_stop_drains_first_then_stops_the_rest(served: MakeServed) -> None:
    s = served(status="tcp:0:interface=127.0.0.1")
    s.service.privilegedStartService()
    s.service.startService()
    s.readyAll()
    (listener,) = s.service.listeners
    stopped: list[object] = []
    d = s.service.stopService()
    d.addBoth(stopped.append)
    # The serving half stops at once: the starter first, then the pool.
    assert "starter stopped" in s.events
    assert not s.service.serving.running
    # What watches the pool goes on while the workers finish.
    scoreboard = next(c for c in s.service if isinstance(c, Scoreboard))
    status = next(c for c in s.service if isinstance(c, StatusListener))
    assert scoreboard.running and status.running
    assert listener.socket is not None
    assert stopped == []
    s.exitAll()
    assert stopped == [None]
    assert not any(child.running for child in s.service)
    assert listener.socket is None


def test_a_port_in_use_is_one_error_and_nothing_stays_bound(served: MakeServed) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = served(listen=[LISTEN, f"tcp:{port}:interface=127.0.0.1"])
        with pytest.raises(ListenError, match="cannot"):
            s.service.bindListeners()
    assert [listener.socket for listener in s.service.listeners] == [None, None]


def test_reload_renews_the_starter_before_the_pool_replaces_workers(
    served: MakeServed,
) -> None:
    s = served()
    s.service.privilegedStartService()
    s.service.startService()
    s.readyAll()
    del s.events[:]
    s.service.reload()
    assert s.events[:2] == ["starter renewed", "worker 3"]
    s.service.stopService()
    s.exitAll()


def test_giving_up_stops_the_reactor_with_exit_status_1(served: MakeServed) -> None:
    s = served()
    s.reactor.running = True
    s.service._giveUp("no worker can boot")
    assert s.statuses == [1]
    # Not hasStopped: older Twisted's MemoryReactor starts with it true.
    assert not s.reactor.running
