"""
One worker as the master sees it: the spawned process, its control
channel, its log lines, its counters and how it ended.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.protocols import amp
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.common.streams import Spare, adoptStream, adoptStreamWithSpare
from preforktwist.master.events import ProcessEnd
from preforktwist.master.pool import WorkerState
from preforktwist.protocol.config import WorkerConfig
from preforktwist.protocol.control import (
    CONTROL_FD,
    FIRST_LISTEN_FD,
    Activate,
    BootFailed,
    ControlChannel,
    Counts,
    NearAllowance,
    Ready,
    ReplaceCause,
    ReplaceMe,
    Retire,
    Stop,
)

if TYPE_CHECKING:
    from preforktwist.master.pool import Pool

#: How long a worker whose control channel closed may take to exit before
#: it is taken for dead and killed.
CONTROL_LOST_TIMEOUT = 2.0


class _MasterControl(ControlChannel):
    """
    The master's end of one worker's control channel.
    """

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.worker = worker
        #: A second descriptor for the channel, from which what the worker
        #: said last is read if the connection ends on a write error.
        self.spare: Spare | None = None

    @Ready.responder
    def ready(self, pid: int, maxConcurrent: int | None = None) -> dict[str, Any]:
        self.worker.maxConcurrent = maxConcurrent
        self.worker.pool.workerReady(self.worker)
        return {}

    @BootFailed.responder
    def bootFailed(self, reason: str) -> dict[str, Any]:
        self.worker.pool.workerBootFailed(self.worker, reason)
        return {}

    @Counts.responder
    def counts(
        self, accepted: int, open: int, served: int, firstByteTimeouts: int = 0
    ) -> dict[str, Any]:
        self.worker.updateCounts(accepted, open, served)
        self.worker.firstByteTimeouts = firstByteTimeouts
        self.worker.pool.workerAlive(self.worker)
        return {}

    @NearAllowance.responder
    def nearAllowance(self) -> dict[str, Any]:
        self.worker.pool.workerNearAllowance(self.worker)
        return {}

    @ReplaceMe.responder
    def replaceMe(
        self, accepted: int, open: int, cause: ReplaceCause
    ) -> dict[str, Any]:
        self.worker.updateCounts(accepted, open, accepted - open)
        self.worker.pool.workerWantsReplacement(self.worker, cause)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            if reason.check(ConnectionDone):
                # EOF was read, or we closed: nothing the worker said is left.
                spare.close()
            else:
                # Twisted drops the connection on a failed write (the worker
                # closed after the reactor saw the socket writable) without
                # reading what the worker wrote before it closed: its
                # ReplaceMe, say, without which its exit would be taken for
                # a crash.  Read it now, before the end is acted upon.
                left = spare.readLeft()
                if left:
                    amp.BinaryBoxProtocol.dataReceived(self, left)
        super().connectionLost(reason)
        self.worker.controlLost(reason)


def processEnd(reason: Failure) -> ProcessEnd:
    """
    How a process ended, from what Twisted reported: its exit status, or
    the signal that killed it.
    """
    value = reason.value
    if isinstance(value, ProcessDone):
        return ProcessEnd(status=0)
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return ProcessEnd(signal=value.signal)
        return ProcessEnd(status=value.exitCode)
    return ProcessEnd()


def spawnWithChannel(
    reactor: IPreforkReactor,
    protocol: ProcessProtocol,
    module: list[str],
    listenFDs: list[int],
) -> int:
    """
    Start C{python -m MODULE ARGS...} with a control channel (a socketpair)
    on its fd 3, the listening sockets from fd 4 on, and its stdout and
    stderr piped to C{protocol}.

    @return: the master's end of the control channel, a raw descriptor.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
    childFDs[CONTROL_FD] = theirs.fileno()
    for offset, fd in enumerate(listenFDs):
        childFDs[FIRST_LISTEN_FD + offset] = fd
    try:
        reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", *module],
            # spawnProcess's default is an *empty* environment.
            env=workerEnvironment(),
            childFDs=childFDs,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        # The master must not hold the child's end, or it would never see
        # EOF when the child dies.
        theirs.close()
    return ours.detach()


def workerEnvironment() -> dict[str, str]:
    """
    The master's environment, less what is addressed to the master alone:
    systemd's notification socket (a worker must not claim readiness).
    """
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    return env


class _Output(Protocol):
    """
    A forked worker's stdout or stderr, a socket rather than a pipe.
    """

    def __init__(self, worker: WorkerProcess, childFD: int) -> None:
        self.worker = worker
        self.childFD = childFD

    def dataReceived(self, data: bytes) -> None:
        self.worker.childDataReceived(self.childFD, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.worker.childConnectionLost(self.childFD)


class _LogLines(LineReceiver):
    """
    One of a worker's output streams, cut into lines for the log.  Only the
    framing of a protocol is used: the bytes come in through
    L{WorkerProcess.childDataReceived}, whether from a pipe or a socket.
    """

    delimiter = b"\n"
    # A line is relayed whole, however long, as the worker wrote it.
    MAX_LENGTH = sys.maxsize

    def __init__(self, worker: WorkerProcess, childFD: int) -> None:
        self.worker = worker
        self.childFD = childFD

    def lineReceived(self, line: bytes) -> None:
        self.worker.relay(self.childFD, line)

    def flush(self) -> None:
        """
        The stream ended: a last line without its newline is still a line.
        """
        rest = self.clearLineBuffer()
        if rest:
            self.worker.relay(self.childFD, rest)


class WorkerProcess(ProcessProtocol):
    """
    The master's handle on one worker process.

    @ivar accepted: connections it accepted, as last reported.
    @ivar open: connections it has open, as last reported.
    @ivar served: connections it finished, as last reported.
    @ivar firstByteTimeouts: connections it closed for sending nothing, as
        last reported.
    @ivar maxConcurrent: the cap on open connections it settled on (0 for none),
        as it said when ready; C{None} before, or from a worker that does
        not say.
    """

    log = NamedLogger("preforktwist.process.WorkerProcess")

    def __init__(self, number: int, pool: Pool, reactor: IPreforkReactor) -> None:
        self.number = number
        self.pool = pool
        self.reactor = reactor
        self.state = WorkerState.BOOTING
        self.pid: int | None = None
        self.accepted = self.open = self.served = 0
        self.firstByteTimeouts = 0
        self.maxConcurrent: int | None = None
        self.control: _MasterControl | None = None
        self.config: WorkerConfig | None = None
        self.exited = False
        self._lines: dict[int, _LogLines] = {}
        self._controlLostTimer: Any = None
        self._exitReason: Failure | None = None
        self._controlLostWhy = ""
        self._exitReport: Any = None
        #: Ends (KILL, TERM) asked for before the fork server said its pid.
        self._unsent: list[int] = []
        #: Called with each line the worker writes to its stderr (a stack
        #: it was asked for, say), besides the log.
        self.stderrObservers: list[Callable[[str], None]] = []

    def describe(self) -> str:
        """
        C{worker 3 (pid 1234)}; C{worker 3} alone until a fork server has
        forked it (its own lines and the pool's next ones carry the pid).
        """
        if self.pid is None:
            return f"worker {self.number}"
        return f"worker {self.number} (pid {self.pid})"

    # How the process came to be is its starter's business
    # (L{preforktwist.master.starters}); a spawned worker is connected as
    # Twisted's child, a forked one by these.

    @property
    def endAsked(self) -> bool:
        """
        Whether the pool asked this worker to end (KILL or TERM) before it
        was forked: it is ended at birth (L{bornAs}).
        """
        return bool(self._unsent)

    def bornAs(self, pid: int) -> None:
        """
        The fork server forked this worker as C{pid}: the signals asked for
        while it was still to be forked are sent now (the boot timeout's
        KILL, say: without it, a worker that hangs at start, forked after
        its timeout because the fork server was slow, would never be
        killed, and the pool would wait for its exit for ever).
        """
        self.pid = pid
        unsent, self._unsent = self._unsent, []
        for signum in unsent:
            self._signal(signum)

    def adoptControl(self, fd: int) -> None:
        """
        Connect the worker's control channel, the master's end of which is
        the raw descriptor C{fd} (taken over).
        """
        control = self.control = _MasterControl(self)
        _, control.spare = adoptStreamWithSpare(self.reactor, fd, control)

    def adoptOutput(self, childFD: int, fd: int) -> None:
        """
        Relay the worker's stdout (C{childFD} 1) or stderr (2), a socket
        C{fd} (taken over) rather than a pipe of ours.
        """
        adoptStream(self.reactor, fd, _Output(self, childFD))

    def forkFailed(self, why: str) -> None:
        """
        The fork server could not make this worker: to the pool, a worker
        that died before it was ready.
        """
        self.pool.workerBootFailed(self, why)
        self.processExited(Failure(ProcessTerminated(1, None, None)))

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    # Logs: each line the worker writes, tagged with its number and pid.

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = self._lines.get(childFD)
        if lines is None:
            lines = self._lines[childFD] = _LogLines(self, childFD)
        lines.dataReceived(data)

    def relay(self, childFD: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        system = f"worker {self.number} pid {self.pid}"
        if childFD == 2:
            self.log.error("{line}", line=text, log_system=system)
            for observer in list(self.stderrObservers):
                observer(text)
        else:
            self.log.info("{line}", line=text, log_system=system)

    def childConnectionLost(self, childFD: int) -> None:
        lines = self._lines.get(childFD)
        if lines is not None:
            lines.flush()

    # Counters and control.

    def updateCounts(self, accepted: int, open: int, served: int) -> None:
        self.accepted, self.open, self.served = accepted, open, served

    def _command(self, command: type[amp.Command]) -> Deferred[None]:
        """
        Send C{command}.  A worker that cannot hear it is sent SIGTERM
        instead, which it also takes as a graceful stop.

        @return: fires when the worker has carried the command out; never,
            if it could not hear it (its exit says the rest).
        """
        done: Deferred[None] = Deferred()
        if self.control is None or self.control.transport is None:
            self._signal("TERM")
            return done
        d = self.control.callRemote(command)
        d.addCallbacks(
            lambda _: done.callback(None), self._commandFailed, errbackArgs=(command,)
        )
        return done

    def _commandFailed(self, failure: Failure, command: type[amp.Command]) -> None:
        """
        The worker did not carry C{command} out: a closed channel is
        expected (the worker is exiting); anything else is logged.  Either
        way SIGTERM asks it for the same graceful end.
        """
        if not failure.check(ConnectionDone, ConnectionLost):
            self.log.failure(
                "worker {number} did not take {command}",
                failure,
                number=self.number,
                command=command.__name__,
            )
        self._signal("TERM")

    def retire(self) -> None:
        self._command(Retire)

    def stop(self) -> Deferred[None]:
        return self._command(Stop)

    def activate(self) -> None:
        self._command(Activate)

    def kill(self) -> None:
        self._signal("KILL")

    def terminate(self) -> None:
        self._signal("TERM")

    def dumpStack(self) -> None:
        """
        The worker registered faulthandler for SIGUSR2: it writes every
        thread's stack to its stderr, which reaches our log, even while its
        Python code is stuck.
        """
        self._signal(signal.SIGUSR2)

    def _signal(self, name: str | int) -> None:
        """
        Signal the worker by its pid, whichever process is its parent (a
        forked worker is the fork server's child, not ours).  Until
        L{processExited}, the pid is still the worker's: Twisted reaps its
        children and reports their exit in the same call.
        """
        if self.exited:
            return
        signum = name if isinstance(name, int) else getattr(signal, "SIG" + name)
        if self.pid is None:
            # Not forked yet: an end asked for is sent by L{bornAs}; a stack
            # dump is not (before its handler is set, it would kill).
            if signum in (signal.SIGKILL, signal.SIGTERM):
                self._unsent.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except OSError:
            pass

    def controlLost(self, reason: Failure = connectionDone) -> None:
        """
        The worker closed its control channel.  A worker does that just
        before it exits; one that keeps running without it is broken, and
        is killed (and so replaced).
        """
        self.control = None
        if self.exited:
            self._reportExit()
        else:
            self._controlLostWhy = reason.getErrorMessage()
            self._controlLostTimer = self.reactor.callLater(
                CONTROL_LOST_TIMEOUT, self._controlLostTooLong
            )

    def _controlLostTooLong(self) -> None:
        self._controlLostTimer = None
        self.log.error(
            "{worker} closed its control channel ({why}) but did not exit; killing it",
            worker=self.describe(),
            why=self._controlLostWhy,
        )
        self.kill()

    def processExited(self, reason: Failure) -> None:
        if self.exited:
            return
        # processExited, not processEnded: a grandchild holding the worker's
        # stdout must not delay the replacement.
        self.exited = True
        self._exitReason = reason
        if self._controlLostTimer is not None and self._controlLostTimer.active():
            self._controlLostTimer.cancel()
        if self.control is None or self.control.transport is None:
            self._reportExit()
            return
        # What the worker said last (say, that it retires) may still be
        # unread on the control channel, which reaches EOF any moment now
        # that the process is gone: report the exit after reading it.
        self._exitReport = self.reactor.callLater(
            CONTROL_LOST_TIMEOUT, self._reportExit
        )

    def _reportExit(self) -> None:
        if self._exitReason is None:
            return
        reason, self._exitReason = self._exitReason, None
        if self._exitReport is not None and self._exitReport.active():
            self._exitReport.cancel()
        self._exitReport = None
        if self.control is not None and self.control.transport is not None:
            self.control.transport.loseConnection()
        self.pool.workerExited(self, processEnd(reason))
