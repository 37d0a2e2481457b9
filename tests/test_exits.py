"""
How a worker's end is judged, in process: its exit and the end of its
control channel may be seen in either order, and the channel may end on a
failed write with the worker's last words (its C{ReplaceMe}) still unread.
In every order, a worker that retired for its allowance is counted as such,
never as a crash.  And the worker's side: its last words are sent before
its reactor stops.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost, ProcessDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from preforktwist.common.reactors import preforkReactor
from preforktwist.common.streams import Spare
from preforktwist.master.events import RestartCause
from preforktwist.master.handle import WorkerProcess, _MasterControl
from preforktwist.master.pool import Pool, PoolConfig, WorkerState
from preforktwist.protocol.control import ControlChannel, ReplaceCause, ReplaceMe
from preforktwist.worker import serving
from preforktwist.worker.serving import Worker, WorkerControl
from tests.test_starters import config as workerconfig


class Channel:
    """
    One worker's control channel as a real socketpair: the master's end is
    a L{_MasterControl} over a transport of our own (what Twisted's would
    have read is fed in by hand), with a L{Spare} on the real descriptor.
    """

    def __init__(self, worker: WorkerProcess) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.control = _MasterControl(worker)
        self.control.spare = Spare(self.ours.fileno())
        self.ours.close()
        self.control.makeConnection(StringTransport())
        worker.control = self.control

    def workerSays(self, command: type[ReplaceMe], **kwargs: object) -> bytes:
        """
        The bytes the worker's end writes for C{command}, written to the
        socket (unread by the master so far).
        """
        client = ControlChannel()
        transport = StringTransport()
        client.makeConnection(transport)
        client.callRemote(command, **kwargs)
        data: bytes = transport.value()
        self.theirs.sendall(data)
        return data


def harness() -> tuple[Pool, WorkerProcess, Channel, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    made: list[WorkerProcess] = []

    def spawn(number: int, standby: bool) -> WorkerProcess:
        worker = WorkerProcess(number, pool, preforkReactor(reactor))
        worker.pid = 1000 + number
        worker.exited = False
        made.append(worker)
        return worker

    pool = Pool(spawn, PoolConfig(1, minUptime=1.0), reactor)
    pool.start()
    (worker,) = made
    channel = Channel(worker)
    pool.workerReady(worker)
    assert worker.state is WorkerState.ACCEPTING
    return pool, worker, channel, reactor


def replaceMe(channel: Channel) -> bytes:
    return channel.workerSays(
        ReplaceMe, accepted=50, open=0, cause=ReplaceCause.ALLOWANCE
    )


def exit(worker: WorkerProcess) -> Callable[[], None]:
    return lambda: worker.processExited(Failure(ProcessDone(0)))


def judgedAsRetired(pool: Pool, worker: WorkerProcess) -> None:
    assert worker.number not in pool.workers
    assert pool.restarts == {RestartCause.ALLOWANCE: 1}
    assert pool.failures == 0


def test_replace_me_read_then_eof_then_exit() -> None:
    pool, worker, channel, _ = harness()
    channel.control.dataReceived(replaceMe(channel))
    channel.theirs.close()
    channel.control.connectionLost(Failure(ConnectionDone()))
    assert worker.number in pool.workers  # the exit is still to come
    exit(worker)()
    judgedAsRetired(pool, worker)


def test_exit_first_then_replace_me_then_eof() -> None:
    pool, worker, channel, reactor = harness()
    exit(worker)()
    # The exit waits for the channel's last words.
    assert worker.number in pool.workers
    channel.control.dataReceived(replaceMe(channel))
    channel.theirs.close()
    channel.control.connectionLost(Failure(ConnectionDone()))
    judgedAsRetired(pool, worker)
    # The timer that would have judged it without the channel is gone.
    timers = [getattr(c, "func", None) for c in reactor.getDelayedCalls() if c.active()]
    assert worker._reportExit not in timers


@pytest.mark.parametrize("exitFirst", [True, False], ids=["exit-first", "lost-first"])
def test_write_error_with_replace_me_unread(exitFirst: bool) -> None:
    """
    The ordering that used to go wrong: the worker wrote its ReplaceMe and
    closed; the master's next write failed (EPIPE) and Twisted ended the
    connection without reading.  The spare descriptor reads it.
    """
    pool, worker, channel, _ = harness()
    replaceMe(channel)
    channel.theirs.close()
    if exitFirst:
        exit(worker)()
    channel.control.connectionLost(Failure(ConnectionLost()))
    if not exitFirst:
        exit(worker)()
    judgedAsRetired(pool, worker)


def test_without_the_spare_the_exit_was_a_crash() -> None:
    """
    The same write error, with nothing read from the socket: the exit is
    taken for a crash (and a failure for the backoff).  This is what the
    spare prevents; the test shows the judgement depends on it.
    """
    pool, worker, channel, _ = harness()
    replaceMe(channel)
    channel.theirs.close()
    assert channel.control.spare is not None
    channel.control.spare.close()
    channel.control.connectionLost(Failure(ConnectionLost()))
    exit(worker)()
    assert pool.restarts == {RestartCause.CRASH: 1}
    assert pool.failures == 1


def test_clean_end_reads_nothing_more() -> None:
    """
    EOF read by Twisted (or our own close): everything was read, and the
    spare is closed, not read (a late ReplaceMe would be judged twice).
    """
    pool, worker, channel, _ = harness()
    channel.control.dataReceived(replaceMe(channel))
    spare = channel.control.spare
    channel.control.connectionLost(Failure(ConnectionDone()))
    assert channel.control.spare is None
    assert spare is not None and spare.readLeft() == b""
    exit(worker)()
    judgedAsRetired(pool, worker)
    channel.theirs.close()


class _ControlTransport(StringTransport):
    """
    Twisted's transport as far as the worker's exit looks at it: connected
    until its C{connectionLost}.  What is written stays buffered until
    then, as in Twisted, where stopping the reactor would drop it.
    """

    connected = True


def signalledIdleWorker(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[MemoryReactorClock, WorkerControl, _ControlTransport]:
    """
    A worker with nothing open and its control channel, just sent SIGTERM.
    """
    monkeypatch.setattr(serving, "setTitle", lambda title: None)
    reactor = MemoryReactorClock()
    reactor.running = True
    worker = Worker(workerconfig(1), preforkReactor(reactor))
    control = worker.control = WorkerControl(worker)
    transport = _ControlTransport()
    control.makeConnection(transport)
    worker.signalled(signal.SIGTERM)
    return reactor, control, transport


def test_idle_worker_signalled_sends_replace_me_before_stopping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    SIGTERM to a worker with nothing open: it asks for its replacement and
    closes its control channel, and its reactor stops only once the channel
    is lost, that is, flushed.  Stopping it sooner dropped the unsent
    C{ReplaceMe}: the master took the exit for a crash, and the next worker
    for a boot loop, after a 0.5 s backoff.
    """
    reactor, control, transport = signalledIdleWorker(monkeypatch)

    assert transport.disconnecting
    assert b"ReplaceMe" in transport.value()
    # Whether it runs, not hasStopped: older Twisted's MemoryReactor starts
    # with hasStopped already true.
    assert reactor.running
    control.connectionLost(Failure(ConnectionDone()))
    assert not reactor.running


def test_idle_worker_signalled_sends_its_figures_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    A worker retiring with nothing open sends its final figures once, not
    once as it stops accepting and again as it exits: each message is
    work for the worker and for the master in every replacement.
    """
    _, _, transport = signalledIdleWorker(monkeypatch)

    assert transport.disconnecting
    assert transport.value().count(b"Counts") == 1


def test_counts_are_not_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The worker's figures (its heartbeat) ask for no answer, and the master
    sends none: one message each way fewer per heartbeat and per
    replacement.
    """
    monkeypatch.setattr(serving, "setTitle", lambda title: None)
    reactor = MemoryReactorClock()
    worker = Worker(workerconfig(1), preforkReactor(reactor))
    control = worker.control = WorkerControl(worker)
    transport = _ControlTransport()
    control.makeConnection(transport)
    worker._sendCounts()
    sent = transport.value()
    assert b"Counts" in sent and b"_ask" not in sent

    _, _, channel, _ = harness()
    channel.control.dataReceived(sent)
    answers = channel.control.transport
    assert isinstance(answers, StringTransport) and answers.value() == b""
