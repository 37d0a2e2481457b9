"""
How workers are started, in process: a fake reactor that records the
processes it is asked to spawn and the descriptors it is asked to adopt, a
fake clock, and no process at all.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from preforktwist.common.reactors import preforkReactor
from preforktwist.master.events import ProcessEnd
from preforktwist.master.forkclient import ForkServerProcess
from preforktwist.master.handle import WorkerProcess
from preforktwist.master.service import PreforkService
from preforktwist.master.starters import (
    FORK_SERVER_RESTART_INTERVAL,
    ForkServerStarter,
    FreshInterpreterStarter,
    IWorkerStarter,
)
from preforktwist.protocol import forking
from preforktwist.protocol.config import WorkerConfig
from preforktwist.protocol.control import CONTROL_FD, FIRST_LISTEN_FD
from preforktwist.settings import Settings, workerConfig
from preforktwist.tap import Options, makeService
from preforktwist.worker.forkserver import _Commands

LISTEN = "tcp:0:interface=127.0.0.1"


class FakeProcess:
    """
    What the fake reactor's spawnProcess returns: a pid, and no process.
    """

    def __init__(self, pid: int, args: Sequence[str], childFDs: Any) -> None:
        self.pid = pid
        self.args = list(args)
        self.childFDs = dict(childFDs)
        self.stdinClosed = False

    def closeStdin(self) -> None:
        self.stdinClosed = True


class ProcessReactor(MemoryReactorClock):
    """
    A memory reactor that also "spawns" processes, like procmon's tests'
    one: each call is recorded, and the protocol is connected to a
    L{FakeProcess}.

    @ivar spawnError: raised by the next spawnProcess, if set.
    """

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.spawned: list[FakeProcess] = []
        self.spawnError: Exception | None = None
        self._nextPid = 1000

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
        if self.spawnError is not None:
            error, self.spawnError = self.spawnError, None
            raise error
        self._nextPid += 1
        process = FakeProcess(self._nextPid, args, childFDs or {})
        self.spawned.append(process)
        processProtocol.makeConnection(process)  # type: ignore[arg-type]
        return process

    def modules(self) -> list[str]:
        """
        The module each spawned process runs (C{python -m MODULE}).
        """
        return [process.args[2] for process in self.spawned]


class FakePool:
    """
    What a L{WorkerProcess} tells its pool, recorded.
    """

    def __init__(self) -> None:
        self.bootFailures: list[tuple[int, str]] = []
        self.exits: list[tuple[int, str]] = []

    def workerBootFailed(self, worker: WorkerProcess, reason: str) -> None:
        self.bootFailures.append((worker.number, reason))

    def workerExited(self, worker: WorkerProcess, end: ProcessEnd) -> None:
        self.exits.append((worker.number, end.describe()))


class FakeForkServer:
    """
    A stand-in for L{ForkServerProcess}: records what it is asked, and
    dies or fails to start when told to.
    """

    made: list[FakeForkServer]
    failStart = False

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.alive = False
        self.pid: int | None = None
        self.forks: list[int] = []
        self.waiting: list[WorkerProcess] = []
        self.closed = False
        self.rehome: Any = None
        FakeForkServer.made.append(self)

    def start(
        self,
        reactorModule: str,
        listenFDs: list[int],
        descriptions: Sequence[str],
        preload: Sequence[str] = (),
        readyTimeout: float | None = None,
    ) -> None:
        self.descriptions = list(descriptions)
        self.preload = list(preload)
        self.readyTimeout = readyTimeout
        if FakeForkServer.failStart:
            raise OSError("no more processes")
        self.alive = True
        self.pid = 500 + len(FakeForkServer.made)

    def fork(self, worker: WorkerProcess, config: WorkerConfig) -> None:
        self.forks.append(worker.number)
        self.waiting.append(worker)

    def close(self, keepWaiting: bool = False) -> list[WorkerProcess]:
        self.alive = False
        self.closed = True
        if keepWaiting:
            return []
        waiting, self.waiting = self.waiting, []
        return waiting

    def end(self) -> None:
        """
        The process ends with its requests unforked, as a real one's
        L{ForkServerProcess._failWaiting} does.
        """
        waiting, self.waiting = self.waiting, []
        if waiting and self.rehome is not None:
            self.rehome(waiting)


@pytest.fixture
def listening() -> Iterator[list[int]]:
    """
    Two real listening sockets' descriptors, as the starters pass them on.
    """
    sockets = [socket.socket() for _ in range(2)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    yield [sock.fileno() for sock in sockets]
    for sock in sockets:
        sock.close()


@pytest.fixture
def fakeServers() -> Iterator[list[FakeForkServer]]:
    FakeForkServer.made = []
    FakeForkServer.failStart = False
    yield FakeForkServer.made


def config(number: int) -> WorkerConfig:
    return workerConfig(
        Settings(listen=(LISTEN,), workers=1),
        number=number,
        masterPid=os.getpid(),
        families=[socket.AF_INET],
        tls=[False],
        allowance=0,
        standby=False,
        reactor="twisted.internet.epollreactor",
        countsInterval=1.0,
        loadSlot=None,
    )


def newWorker(number: int, reactor: ProcessReactor, pool: FakePool) -> WorkerProcess:
    return WorkerProcess(number, pool, reactor)  # type: ignore[arg-type]


def forkStarter(reactor: ProcessReactor, listenFDs: list[int]) -> ForkServerStarter:
    return ForkServerStarter(
        preforkReactor(reactor),
        lambda: listenFDs,
        newServer=FakeForkServer,  # type: ignore[arg-type]
        descriptions=["tcp:8080"],
    )


def messages(events: Sequence[Mapping[str, Any]]) -> list[str]:
    return [event["log_format"] for event in events]


# The choice.


def test_the_fork_server_is_the_default() -> None:
    service = PreforkService(LISTEN, workers=1, reactor=ProcessReactor())
    assert isinstance(service.starter, ForkServerStarter)
    assert verifyObject(IWorkerStarter, service.starter)


def test_no_fork_server_starts_fresh_interpreters() -> None:
    service = PreforkService(
        LISTEN, workers=1, forkServer=False, reactor=ProcessReactor()
    )
    assert isinstance(service.starter, FreshInterpreterStarter)
    assert verifyObject(IWorkerStarter, service.starter)


def test_command_line_chooses_the_starter() -> None:
    for arguments, expected in [
        ([], ForkServerStarter),
        (["--no-fork-server"], FreshInterpreterStarter),
    ]:
        options = Options()
        options.parseOptions(["-w", "1", "--listen", LISTEN, *arguments])
        service = makeService(options)
        assert isinstance(service, PreforkService)
        try:
            assert type(service.starter) is expected
        finally:
            service.closeListeners()


# A fresh interpreter.


def test_fresh_interpreter(listening: list[int]) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    starter = FreshInterpreterStarter(preforkReactor(reactor), lambda: listening)
    worker = newWorker(1, reactor, pool)
    starter.startWorker(worker, config(1))
    (process,) = reactor.spawned
    assert process.args[1:3] == ["-m", "preforktwist.worker.main"]
    assert WorkerConfig.fromJSON(process.args[3]) == config(1)
    assert process.childFDs[FIRST_LISTEN_FD] == listening[0]
    assert process.childFDs[FIRST_LISTEN_FD + 1] == listening[1]
    assert CONTROL_FD in process.childFDs
    assert worker.pid == process.pid and process.stdinClosed
    # The master's end of the control channel went to the reactor.
    (adopted,) = reactor.adoptedStreamConnections
    assert adopted[1] == socket.AF_UNIX
    assert worker.control is not None


# The fork server's restart rule.


def test_workers_are_forked(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    with capturedLogs() as events:
        starter.start()
    assert messages(events) == ["started the fork server (pid {pid})"]
    for number in (1, 2):
        starter.startWorker(newWorker(number, reactor, pool), config(number))
    (server,) = fakeServers
    assert server.forks == [1, 2]
    # Its title names what it serves.
    assert server.descriptions == ["tcp:8080"]
    assert reactor.spawned == []


def test_fork_server_restarted_at_most_every_ten_seconds(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    fakeServers[0].alive = False  # it died

    # Within ten seconds of its start: fresh interpreters, no new server.
    reactor.advance(FORK_SERVER_RESTART_INTERVAL - 1)
    starter.startWorker(newWorker(1, reactor, pool), config(1))
    starter.startWorker(newWorker(2, reactor, pool), config(2))
    assert len(fakeServers) == 1
    assert reactor.modules() == ["preforktwist.worker.main"] * 2

    # Then one new fork server, which makes the next workers.
    reactor.advance(2)
    with capturedLogs() as events:
        starter.startWorker(newWorker(3, reactor, pool), config(3))
    assert messages(events) == [
        "the fork server is gone; starting another",
        "started the fork server (pid {pid})",
    ]
    assert len(fakeServers) == 2
    starter.startWorker(newWorker(4, reactor, pool), config(4))
    assert fakeServers[1].forks == [3, 4]
    assert len(reactor.spawned) == 2


def test_fork_server_that_cannot_start(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    """
    One that cannot start is tried again no sooner than one that died:
    meanwhile every worker is a fresh interpreter.
    """
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    FakeForkServer.failStart = True
    with capturedLogs() as events:
        starter.start()
    assert messages(events) == [
        "cannot start the fork server ({e}); starting each worker "
        "as a fresh interpreter"
    ]
    assert str(events[0]["e"]) == "no more processes"
    for number in range(1, 4):
        reactor.advance(3)
        starter.startWorker(newWorker(number, reactor, pool), config(number))
    assert len(fakeServers) == 1
    assert reactor.modules() == ["preforktwist.worker.main"] * 3

    FakeForkServer.failStart = False
    reactor.advance(2)
    starter.startWorker(newWorker(4, reactor, pool), config(4))
    assert len(fakeServers) == 2
    assert fakeServers[1].forks == [4]
    assert len(reactor.spawned) == 3


def test_no_restart_once_stopped(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    starter.stop()
    reactor.advance(60)
    starter.startWorker(newWorker(1, reactor, pool), config(1))
    assert len(fakeServers) == 1
    assert reactor.modules() == ["preforktwist.worker.main"]


# Renewal and stop.


def test_reload_leaves_waiting_workers_to_the_old_server(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    """
    The old server forks what it was asked before its close: asking the
    new one too would make each worker twice.
    """
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    for number in (1, 2):
        starter.startWorker(newWorker(number, reactor, pool), config(number))
    starter.renew()
    old, new = fakeServers
    assert old.closed and not new.closed
    assert [w.number for w in old.waiting] == [1, 2]
    assert new.forks == []
    assert reactor.spawned == []


def test_renewed_server_that_ends_first_hands_its_requests_on(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    """
    The ordering that counted as a boot failure: a renewal closed the
    server a worker waited for, and it ended before forking it.  The
    worker is asked of the new server, and nothing fails.
    """
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    starter.startWorker(newWorker(1, reactor, pool), config(1))
    starter.renew()
    old, new = fakeServers
    old.end()
    assert new.forks == [1]
    assert pool.bootFailures == [] and pool.exits == []


def test_dead_server_requests_go_fresh_within_the_restart_interval(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    starter.startWorker(newWorker(1, reactor, pool), config(1))
    (server,) = fakeServers
    server.alive = False
    server.end()
    (process,) = reactor.spawned
    assert process.args[2] == "preforktwist.worker.main"
    assert pool.bootFailures == []


def test_reload_without_a_new_server_starts_new_workers_fresh(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    FakeForkServer.failStart = True
    starter.renew()
    assert fakeServers[0].closed
    starter.startWorker(newWorker(1, reactor, pool), config(1))
    (process,) = reactor.spawned
    assert process.args[2] == "preforktwist.worker.main"
    assert WorkerConfig.fromJSON(process.args[3]) == config(1)


def test_stop_fails_the_waiting_workers(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    starter.startWorker(newWorker(1, reactor, pool), config(1))
    starter.stop()
    assert fakeServers[0].closed
    assert pool.bootFailures == [(1, "the server is stopping")]
    assert pool.exits == [(1, "exited with status 1")]


# The real fork server client, over a fake channel.


def connectedServer(
    reactor: ProcessReactor, listening: list[int]
) -> tuple[ForkServerProcess, Any, StringTransport]:
    server = ForkServerProcess(preforkReactor(reactor))
    server.start("twisted.internet.epollreactor", listening)
    (_, _, factory) = reactor.adoptedStreamConnections[-1]
    channel = factory.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return server, channel, transport


def test_fork_server_client(listening: list[int]) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    server, channel, transport = connectedServer(reactor, listening)
    (process,) = reactor.spawned
    assert process.args[2:] == [
        "preforktwist.worker.forkserver",
        "twisted.internet.epollreactor",
        "2",
    ]
    assert server.alive and server.pid == process.pid

    worker = newWorker(1, reactor, pool)
    server.fork(worker, config(1))
    line, _, rest = transport.value().partition(forking.DELIMITER)
    assert rest == b""
    assert forking.decodeCommand(line) == forking.Fork(config(1))

    # Born: three descriptors, then the line, in two reads.
    pairs = [socket.socketpair() for _ in range(forking.FORKED_FDS)]
    for ours, _ in pairs:
        channel.fileDescriptorReceived(os.dup(ours.fileno()))
    adoptedBefore = len(reactor.adoptedStreamConnections)
    channel.dataReceived(b"forked 42")
    assert worker.pid is None
    with capturedLogs() as events:
        channel.dataReceived(b"\n")
    assert worker.pid == 42
    # No line of its own: the pool's "started" line came before, the pid
    # comes on the worker's own lines and the pool's next ones.
    assert events == []
    assert worker.describe() == "worker 1 (pid 42)"
    assert len(reactor.adoptedStreamConnections) == adoptedBefore + 3
    assert worker.control is not None

    channel.dataReceived(forking.encode(forking.Exited(42, 3 << 8)) + b"\n")
    assert pool.exits == [(1, "exited with status 3")]
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


def test_kill_before_the_fork_is_sent_at_birth(
    listening: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A worker killed while the fork server has not yet forked it (its boot
    timeout ran out first) is killed once it is born: otherwise a worker
    that hangs at start lives on, and the pool waits for its exit for
    ever.  A stack dump asked for meanwhile is not sent (it would kill a
    worker that has not set its handler yet).
    """
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    reactor, pool = ProcessReactor(), FakePool()
    server, channel, _ = connectedServer(reactor, listening)
    worker = newWorker(1, reactor, pool)
    server.fork(worker, config(1))
    worker.dumpStack()
    worker.kill()
    assert sent == []
    pairs = [socket.socketpair() for _ in range(forking.FORKED_FDS)]
    for ours, _ in pairs:
        channel.fileDescriptorReceived(os.dup(ours.fileno()))
    channel.dataReceived(b"forked 42\n")
    assert sent == [(42, signal.SIGKILL)]
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


def test_fork_server_not_ready_in_time_is_killed(listening: list[int]) -> None:
    """
    A fork server that does not say it is ready within its ready timeout
    (a --preload module stuck at import) is killed; one that does is left
    alone.
    """
    reactor = ProcessReactor()
    for sayReady in (False, True):
        killed: list[str] = []
        server = ForkServerProcess(preforkReactor(reactor))
        server.start("twisted.internet.epollreactor", listening, readyTimeout=2.0)
        process: Any = reactor.spawned[-1]
        process.signalProcess = killed.append
        if sayReady:
            # Output of the user's code first; the line may come in pieces.
            server.childDataReceived(1, b'preloading\n{"rea')
            server.childDataReceived(1, b'dy": 1234}\n')
        reactor.advance(1.9)
        assert killed == [] and server.alive
        with capturedLogs() as events:
            reactor.advance(0.2)
        if sayReady:
            assert killed == [] and server.ready and server.alive
            assert events == []
        else:
            assert killed == ["KILL"] and not server.alive
            assert "did not become ready" in messages(events)[0]


def test_fork_server_output_is_logged_by_whole_lines(listening: list[int]) -> None:
    """
    What the fork server writes is logged a line at a time, however it
    arrives, and a last line without its end is logged when it exits.
    """
    reactor = ProcessReactor()
    server = ForkServerProcess(preforkReactor(reactor))
    server.start("twisted.internet.epollreactor", listening)
    with capturedLogs() as events:
        server.childDataReceived(2, b"Traceback (most")
        server.childDataReceived(2, b" recent call last):\n  File")
        server.processExited(Failure(ProcessDone(0)))
    assert [event["line"] for event in events if "line" in event] == [
        "Traceback (most recent call last):",
        "  File",
    ]


def test_worker_whose_end_was_asked_is_not_rehomed(
    listening: list[int], fakeServers: list[FakeForkServer]
) -> None:
    """
    A worker whose boot timeout ran out while its fork server never forked
    it fails when that server ends, instead of being asked again (it would
    hang as long again, and its KILL was spent); the others are rehomed.
    """
    reactor, pool = ProcessReactor(), FakePool()
    starter = forkStarter(reactor, listening)
    starter.start()
    (server,) = fakeServers
    late, fresh = newWorker(1, reactor, pool), newWorker(2, reactor, pool)
    for worker in (late, fresh):
        starter.startWorker(worker, config(worker.number))
    late.kill()
    assert late.endAsked and not fresh.endAsked
    server.alive = False
    server.end()
    assert pool.bootFailures == [(1, "not forked within the boot timeout")]
    assert reactor.modules()[-1] == "preforktwist.worker.main"
    assert fresh.pid is not None


def test_fork_server_client_close_gives_back_the_waiting(
    listening: list[int],
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    server, _, transport = connectedServer(reactor, listening)
    workers = [newWorker(n, reactor, pool) for n in (1, 2)]
    for worker in workers:
        server.fork(worker, config(worker.number))
    transport.clear()
    assert server.close() == workers
    assert not server.alive
    assert transport.value() == b"close\n"


def test_fork_server_channel_lost_fails_the_waiting(listening: list[int]) -> None:
    """
    Without a starter to rehome them, the waiting fail.
    """
    reactor, pool = ProcessReactor(), FakePool()
    server, channel, _ = connectedServer(reactor, listening)
    server.fork(newWorker(1, reactor, pool), config(1))
    channel.connectionLost(Failure(ConnectionError()))
    assert not server.alive
    assert pool.bootFailures == [(1, "the fork server's channel closed")]


def test_fork_server_channel_lost_rehomes_the_waiting(listening: list[int]) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    server, channel, _ = connectedServer(reactor, listening)
    rehomed: list[WorkerProcess] = []
    server.rehome = rehomed.extend
    worker = newWorker(1, reactor, pool)
    server.fork(worker, config(1))
    channel.connectionLost(Failure(ConnectionError()))
    assert rehomed == [worker]
    assert pool.bootFailures == []


def test_fork_server_kept_requests_are_forked_after_the_close(
    listening: list[int],
) -> None:
    reactor, pool = ProcessReactor(), FakePool()
    server, channel, _ = connectedServer(reactor, listening)
    worker = newWorker(1, reactor, pool)
    server.fork(worker, config(1))
    assert server.close(keepWaiting=True) == []
    pairs = [socket.socketpair() for _ in range(forking.FORKED_FDS)]
    for ours, _ in pairs:
        channel.fileDescriptorReceived(os.dup(ours.fileno()))
    channel.dataReceived(b"forked 43\n")
    assert worker.pid == 43
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


# The wire format.


@pytest.mark.parametrize(
    "message",
    [
        forking.Fork(config(7)),
        forking.Close(),
        forking.Forked(1234),
        forking.Exited(1234, 256),
    ],
)
def test_forking_round_trip(message: forking.Command | forking.Report) -> None:
    line = forking.encode(message)
    assert forking.DELIMITER not in line
    if isinstance(message, (forking.Fork, forking.Close)):
        assert forking.decodeCommand(line) == message
        assert forking.decodeReport(line) is None
    else:
        assert forking.decodeReport(line) == message
        assert forking.decodeCommand(line) is None


def test_forking_spelling() -> None:
    """
    The lines as both sides have always spelled them.
    """
    assert forking.encode(forking.Close()) == b"close"
    assert forking.encode(forking.Forked(12)) == b"forked 12"
    assert forking.encode(forking.Exited(12, 9)) == b"exited 12 9"
    assert forking.encode(forking.Fork(config(1))).startswith(b"fork {")


def test_forking_unknown_and_broken_lines() -> None:
    assert forking.decodeCommand(b"frobnicate 1") is None
    assert forking.decodeReport(b"frobnicated 1") is None
    for broken in (b"forked", b"forked x", b"exited 1", b"exited 1 x"):
        with pytest.raises(ValueError):
            forking.decodeReport(broken)
    for brokenCommand in (b"fork {", b"fork [1]", b"fork {}"):
        with pytest.raises(ValueError):
            forking.decodeCommand(brokenCommand)


class FakeTemplate:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def fork(self, config: WorkerConfig) -> None:
        self.calls.append(config)

    def close(self) -> None:
        self.calls.append("close")


def test_template_reads_commands_across_reads() -> None:
    """
    The template's blocking loop feeds its reads to the same framing and
    decoding, with no transport and no reactor.
    """
    template = FakeTemplate()
    commands = _Commands(template)  # type: ignore[arg-type]
    data = (
        forking.encode(forking.Fork(config(1)))
        + b"\n"
        + forking.encode(forking.Fork(config(2)))
        + b"\nwhatever\nclose\n"
    )
    for i in range(0, len(data), 7):
        commands.dataReceived(data[i : i + 7])
    assert template.calls == [config(1), config(2), "close"]


# The log relay.


def test_log_relay_lines_and_last_partial_line() -> None:
    reactor, pool = ProcessReactor(), FakePool()
    worker = newWorker(3, reactor, pool)
    worker.pid = 77
    with capturedLogs() as events:
        worker.childDataReceived(1, b"one\r\ntw")
        worker.childDataReceived(2, b"oops")
        worker.childDataReceived(1, b"o\n\nthr")
        worker.childConnectionLost(1)
        worker.childConnectionLost(2)
        worker.childConnectionLost(2)
    relayed = [(e["log_level"].name, e["line"], e["log_system"]) for e in events]
    system = "worker 3 pid 77"
    assert relayed == [
        ("info", "one", system),
        ("info", "two", system),
        ("info", "", system),
        ("info", "thr", system),
        ("error", "oops", system),
    ]
