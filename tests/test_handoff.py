"""
The hot upgrade's parts in process: the handoff's format, the new master's
command line and twistd's pidfile, the old master's judgement of the new
one (on a fake reactor and clock), the new master's side, the pool's stop
that leaves the queue, and the listening sockets handed over.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from preforktwist.common.endpoints import parseListen
from preforktwist.common.reactors import preforkReactor
from preforktwist.master.events import PoolReady, PoolStopping, ProcessEnd
from preforktwist.master.listeners import Listener, ListeningSockets
from preforktwist.master.pool import Pool, PoolConfig
from preforktwist.master.status.health import Readiness
from preforktwist.master.systemd import SystemdService
from preforktwist.master.upgrade.command import (
    MasterCommand,
    systemdEnvironment,
    twistdPidfile,
)
from preforktwist.master.upgrade.handoff import (
    HANDOFF_VARIABLE,
    Handoff,
    Inheritance,
    inheritanceFrom,
    socketKey,
    withHandoff,
)
from preforktwist.master.upgrade.newmaster import NewMaster, UpgradeFailedError
from preforktwist.master.upgrade.pidfile import Pidfile
from preforktwist.master.upgrade.successor import Successor
from preforktwist.master.upgrade.upgrader import Upgrader
from tests.test_pool import Harness

#: Signals sent, as C{(pid, signal)}.
Kills = list[tuple[int, int]]


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class Reactor(MemoryReactorClock):
    """
    A memory reactor that records spawned processes and connects each
    adopted stream to a L{StringTransport}.
    """

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.spawned: list[dict[str, Any]] = []
        self.streams: list[tuple[Any, StringTransport]] = []

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: bytes | str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, int | str] | None = None,
    ) -> FakeProcess:
        process = FakeProcess(4000 + len(self.spawned))
        self.spawned.append(
            {
                "protocol": processProtocol,
                "args": list(args),
                "env": dict(env or {}),
                "path": path,
                "childFDs": dict(childFDs or {}),
                "pid": process.pid,
            }
        )
        return process

    def adoptStreamConnection(
        self, fileDescriptor: int, addressFamily: Any, factory: Any
    ) -> None:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.streams.append((protocol, transport))


# The handoff.


def test_handoff_round_trip() -> None:
    handoff = Handoff(12, 7, {socketKey("listen", "tcp:0"): [5, 6]})
    environ = withHandoff({"A": "b"}, handoff)
    inheritance = inheritanceFrom(environ)
    assert HANDOFF_VARIABLE not in environ and environ == {"A": "b"}
    assert inheritance.handoff == handoff
    assert inheritance.predecessor == 12
    assert sorted(handoff.descriptors()) == [5, 6, 7]


def test_handoff_malformed_starts_afresh() -> None:
    environ = {HANDOFF_VARIABLE: "{not json"}
    inheritance = inheritanceFrom(environ)
    assert inheritance.handoff is None and environ == {}
    assert inheritance.claim("listen tcp:0") is None


def test_claims_in_order_and_unclaimed_closed() -> None:
    a, b, c = (os.open(os.devnull, os.O_RDONLY) for _ in range(3))
    inheritance = Inheritance(Handoff(1, 99, {"listen x": [a, b], "status y": [c]}))
    assert inheritance.claim("listen x") == a
    assert inheritance.claim("listen z") is None
    inheritance.closeUnclaimed()
    os.close(a)
    for fd in (b, c):
        with pytest.raises(OSError):
            os.fstat(fd)
    assert inheritance.claim("listen x") is None


# The command line and the pidfile.


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["twistd", "-n", "preforked", "-w", "2"], "twistd.pid"),
        (["twistd", "--pidfile=", "preforked"], None),
        (["twistd", "--pid", "a.pid", "--pidfile=b.pid", "preforked"], "b.pid"),
        (["twistd", "--pidfile=/run/x.pid", "-y", "app.tac"], "/run/x.pid"),
        (["twistd", "preforked", "--pidfile=later.pid"], "twistd.pid"),
        (["twistd", "--no-such-option"], None),
    ],
)
def test_twistd_pidfile(argv: list[str], expected: str | None) -> None:
    found = twistdPidfile(argv, "/srv/app")
    assert found == (None if expected is None else os.path.join("/srv/app", expected))


def test_command_is_this_process() -> None:
    command = MasterCommand.ofThisProcess("/srv/app")
    assert command.directory == "/srv/app"
    assert command.arguments[0] == command.executable
    executable, arguments = command.spawnArguments({})
    assert (executable, arguments) == (command.executable, list(command.arguments))


def test_systemd_sockets_run_through_a_trampoline() -> None:
    """
    With sockets from systemd, C{LISTEN_FDS} is given back (Twisted took it
    out of the environment, C{LISTEN_FDNAMES} says how many) and the
    command runs through an interpreter that sets C{LISTEN_PID} to its own.
    """
    environ, kept = systemdEnvironment({"LISTEN_FDNAMES": "web:admin"}, [0])
    assert environ["LISTEN_FDS"] == "2"
    assert all(3 <= fd < 5 for fd in kept)
    command = MasterCommand("/bin/python", ("/bin/python", "twistd", "-n"), "/")
    _, arguments = command.spawnArguments(environ)
    code = arguments.index("-c") + 1
    assert "LISTEN_PID" in arguments[code]
    # The trampoline's arguments: what to run, then the command itself.
    assert arguments[code + 1 :] == ["/bin/python", "/bin/python", "twistd", "-n"]
    assert systemdEnvironment({"X": "1"}, []) == ({"X": "1"}, [])


def test_pidfile_parked_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "twistd.pid"
    path.write_text("123")
    pidfile = Pidfile(str(path))
    assert not pidfile.park(pid=456)  # not ours: left alone
    assert pidfile.park(pid=123)
    assert not path.exists() and Path(pidfile.oldbin).read_text() == "123"
    path.write_text("789")  # the new master's twistd
    pidfile.restore()
    assert path.read_text() == "123" and not Path(pidfile.oldbin).exists()


def test_pidfile_handed_over(tmp_path: Path) -> None:
    path = tmp_path / "twistd.pid"
    path.write_text("123")
    pidfile = Pidfile(str(path))
    assert pidfile.park(pid=123)
    path.write_text("789")
    atExit: list[Callable[[], None]] = []
    pidfile.handOver(789, atExit.append)
    path.unlink()  # twistd's own clean-up, before the exit handlers
    (rewrite,) = atExit
    rewrite()
    assert path.read_text() == "789" and not Path(pidfile.oldbin).exists()


# The old master's view of the new one.


def startNewMaster(reactor: Reactor, kills: list[tuple[int, int]]) -> NewMaster:
    command = MasterCommand("/bin/python", ("/bin/python", "twistd"), "/srv")
    newMaster = NewMaster(
        preforkReactor(reactor),
        command,
        {"HOME": "/root"},
        {"listen tcp:8080": [3]},
        timeout=30,
        killAfter=5,
        kill=lambda pid, signum: kills.append((pid, signum)),
    )
    newMaster.start()
    return newMaster


def outcome(newMaster: NewMaster) -> list[object]:
    result: list[object] = []
    newMaster.ready.addCallbacks(result.append, lambda f: result.append(f.value))
    return result


def test_new_master_ready() -> None:
    reactor, kills = Reactor(), Kills()
    newMaster = startNewMaster(reactor, kills)
    (spawned,) = reactor.spawned
    handoff = Handoff.fromText(spawned["env"][HANDOFF_VARIABLE])
    assert handoff.predecessor == os.getpid() and handoff.sockets == {
        "listen tcp:8080": [3]
    }
    for fd in (0, 1, 2, 3, handoff.channel):
        assert spawned["childFDs"][fd] == fd
    assert spawned["path"] == "/srv" and spawned["env"]["HOME"] == "/root"
    newMaster.saidHello(spawned["pid"])
    newMaster.saidReady()
    assert outcome(newMaster) == [spawned["pid"]]
    reactor.advance(60)
    assert kills == []


def test_new_master_not_ready_in_time_is_stopped_then_killed() -> None:
    reactor, kills = Reactor(), Kills()
    newMaster = startNewMaster(reactor, kills)
    newMaster.saidHello(5000)
    result = outcome(newMaster)
    reactor.advance(30)
    (failure,) = result
    assert isinstance(failure, UpgradeFailedError)
    assert str(failure) == (
        "the new master (pid 5000) was not ready within 30s (--boot-timeout)"
    )
    newMaster.stop()
    assert kills == [(5000, signal.SIGTERM)]
    reactor.advance(5)
    assert kills[-1] == (5000, signal.SIGKILL)


def test_new_master_exit_status_reported() -> None:
    """
    Its channel closes first; its exit status, a moment later, says how
    it ended.
    """
    reactor, kills = Reactor(), Kills()
    newMaster = startNewMaster(reactor, kills)
    pid = reactor.spawned[0]["pid"]
    newMaster.saidHello(pid)
    result = outcome(newMaster)
    gone: list[None] = []
    newMaster.whenGone().addCallback(gone.append)
    newMaster.channelLost()
    assert result == [] and gone == []
    newMaster.spawnedExited(Failure(ProcessTerminated(1, None, None)))
    (failure,) = result
    assert str(failure) == (
        f"the new master (pid {pid}) exited with status 1 before it was ready"
    )
    assert gone == [None]


def test_daemonizing_twistd_exit_is_no_failure() -> None:
    """
    twistd as a daemon: the process spawned exits 0, and the master it
    forked lives on.
    """
    reactor, kills = Reactor(), Kills()
    newMaster = startNewMaster(reactor, kills)
    newMaster.saidHello(7777)
    result = outcome(newMaster)
    newMaster.spawnedExited(Failure(ProcessDone(0)))
    assert result == [] and not newMaster.isGone
    newMaster.saidReady()
    assert result == [7777]


# The whole upgrade, with fake services.


class FakeService:
    bootTimeout = 10.0
    grace = 2.0

    def __init__(self) -> None:
        self.pool = Harness(1).pool
        self.calls: list[object] = []
        self.refusal: str | None = None

    def refusesUpgrade(self) -> str | None:
        return self.refusal

    def handoffSockets(self) -> list[tuple[str, int]]:
        return [("listen tcp:8080", 3)]

    def systemdDescriptors(self) -> list[int]:
        return []

    def handOver(self, successor: int) -> None:
        self.calls.append(("handOver", successor))

    def takeOver(self) -> None:
        self.calls.append("takeOver")


def makeUpgrader(
    reactor: Reactor, kills: list[tuple[int, int]]
) -> tuple[Upgrader, list[str]]:
    stops: list[str] = []
    upgrader = Upgrader(
        preforkReactor(reactor),
        lambda: stops.append("stop"),
        MasterCommand("/bin/python", ("/bin/python", "twistd"), "/srv"),
        {},
        Inheritance(None),
        kill=lambda pid, signum: kills.append((pid, signum)),
    )
    return upgrader, stops


def test_upgrade_hands_over_and_stops() -> None:
    reactor, kills = Reactor(), Kills()
    upgrader, stops = makeUpgrader(reactor, kills)
    service = FakeService()
    upgrader.add(service)
    result: list[object] = []
    upgrader.upgrade().addCallbacks(result.append, result.append)
    assert upgrader.underWay
    refused: list[Failure] = []
    upgrader.upgrade().addErrback(refused.append)
    assert "an upgrade is under way" in refused[0].getErrorMessage()
    newMaster = upgrader.newMaster
    assert newMaster is not None
    newMaster.saidHello(4321)
    newMaster.saidReady()
    assert result == [4321]
    assert service.calls == [("handOver", 4321)]
    assert stops == ["stop"]
    _, transport = reactor.streams[0]
    assert b"TakeOver" in transport.value()
    assert kills == []


def test_failed_upgrade_stops_the_new_master_and_serves_on() -> None:
    reactor, kills = Reactor(), Kills()
    upgrader, stops = makeUpgrader(reactor, kills)
    service = FakeService()
    upgrader.add(service)
    result: list[Failure] = []
    upgrader.upgrade().addErrback(result.append)
    newMaster = upgrader.newMaster
    assert newMaster is not None
    reactor.advance(10)
    assert "not ready within 10s" in result[0].getErrorMessage()
    assert kills == [(newMaster.pid, signal.SIGTERM)]
    assert upgrader.underWay  # until it is gone
    newMaster.channelLost()
    newMaster.spawnedExited(Failure(ProcessTerminated(None, signal.SIGTERM, None)))
    assert not upgrader.underWay and stops == [] and service.calls == []


def test_upgrade_refused_while_a_service_refuses() -> None:
    reactor, kills = Reactor(), Kills()
    upgrader, _ = makeUpgrader(reactor, kills)
    refused: list[Failure] = []
    upgrader.upgrade().addErrback(refused.append)
    service = FakeService()
    service.refusal = "a reload is under way"
    upgrader.add(service)
    upgrader.upgrade().addErrback(refused.append)
    assert [f.getErrorMessage() for f in refused] == [
        "no pre-forked service runs",
        "a reload is under way",
    ]
    assert reactor.spawned == []


# The new master's side.


def test_successor_says_hello_then_ready_then_takes_over() -> None:
    reactor = Reactor()
    theirs, ours = socket.socketpair()
    theirs.close()
    successor = Successor(preforkReactor(reactor), Handoff(99, ours.detach(), {}))
    services = [FakeService(), FakeService()]
    for service in services:
        successor.attach(service)
    _, transport = reactor.streams[0]
    assert b"Hello" in transport.value() and b"Ready" not in transport.value()
    services[0].pool.emit(PoolReady(at=0.0, size=1))
    assert b"Ready" not in transport.value()
    services[1].pool.emit(PoolReady(at=0.0, size=1))
    assert b"Ready" in transport.value()
    successor.takeOver()
    assert [s.calls for s in services] == [["takeOver"], ["takeOver"]]
    successor.predecessorGone()
    assert [s.calls for s in services] == [["takeOver"], ["takeOver"]]


def test_successor_takes_over_when_the_old_master_is_gone() -> None:
    reactor = Reactor()
    theirs, ours = socket.socketpair()
    theirs.close()
    successor = Successor(preforkReactor(reactor), Handoff(99, ours.detach(), {}))
    service = FakeService()
    successor.attach(service)
    successor.predecessorGone()
    assert service.calls == ["takeOver"] and successor.tookOver


# The pool, the sockets and readiness.


def test_stop_after_hand_over_retires_instead_of_draining() -> None:
    h = Harness(2)
    h.pool.start()
    h.readyAll()
    h.pool.leaveQueue()
    done: list[None] = []
    h.pool.stop().addCallback(done.append)
    assert [w.calls for w in h.spawned] == [["retire"], ["retire"]]
    drained: list[None] = []
    h.pool.whenDrained().addCallback(drained.append)
    assert drained == [None]
    for worker in h.spawned:
        h.pool.workerExited(worker, ProcessEnd(status=0))
    assert done == [None]


def test_unix_listener_handed_over(tmp_path: Path) -> None:
    """
    The old master's UNIX listener, handed over, is neither refused nor
    removed when it closes, and its lock names the new master; the new
    master's, taken over, is its own to remove.
    """
    path = str(tmp_path / "app.sock")
    spec = parseListen(f"unix:{path}")
    old = Listener(spec)
    old.bind()
    old.handOver(os.getpid())
    assert os.readlink(path + ".lock") == str(os.getpid())
    new = ListeningSockets(
        [spec],
        Inheritance(Handoff(1, 99, {f"listen unix:{path}": [os.dup(old.fileno)]})),
    )
    new.bind()
    assert new.shared and new.handoffSockets()[0][0] == f"listen unix:{path}"
    old.refuseNew()
    old.close()
    assert os.path.exists(path)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
    new.takeOver()
    assert not new.shared
    new.close()
    assert not os.path.exists(path) and not os.path.lexists(path + ".lock")


def test_readiness_after_hand_over() -> None:
    pool = Pool(lambda n, s: None, PoolConfig(1), MemoryReactorClock())  # type: ignore[arg-type,return-value]
    readiness = Readiness(pool)
    pool.emit(PoolStopping(at=0.0))
    assert readiness.check()[0] is False
    readiness.handedOver = True
    assert readiness.check() == (True, "handed over to the new master")


def test_systemd_follows_the_new_master(tmp_path: Path) -> None:
    """
    The old master tells systemd the new master's pid, then says nothing
    (its watchdog pings stop); the new master, silent until it takes over,
    then says it is ready and feeds the watchdog that watched the old one.
    """
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.setblocking(False)

        def received() -> list[str]:
            messages = []
            while True:
                try:
                    messages.append(systemd.recv(4096).decode())
                except BlockingIOError:
                    return messages

        old, new = Harness(1), Harness(1)
        environ = {
            "NOTIFY_SOCKET": address,
            "WATCHDOG_USEC": "2000000",
            "WATCHDOG_PID": str(os.getpid()),
        }
        oldSide = SystemdService(old.pool, environ, clock=old.clock)
        oldSide.startService()
        received()
        oldSide.handOver(4321)
        assert received() == [
            "MAINPID=4321\nREADY=1\nSTATUS=upgraded: the new master (pid 4321) serves"
        ]
        old.clock.advance(5)
        old.pool.emit(PoolStopping(at=5.0))
        assert received() == []
        oldSide.stopService()

        # The new master: WATCHDOG_PID names the old one.
        environ["WATCHDOG_PID"] = "1"
        newSide = SystemdService(new.pool, environ, clock=new.clock, muted=True)
        newSide.startService()
        new.pool.emit(PoolReady(at=0.0, size=1))
        new.clock.advance(5)
        assert received() == []
        newSide.takeOver()
        ready, ping = received()
        assert ready.startswith(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=")
        assert ping == "WATCHDOG=1"
        new.clock.advance(1)
        assert received() == ["WATCHDOG=1"]
        newSide.stopService()
