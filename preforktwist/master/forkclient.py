"""
The master's side of one fork server (L{preforktwist.worker.forkserver}):
start the process, ask it for workers, and hear from it how they ended.
When to start one, and what to do without one, is
L{preforktwist.master.starters}' business.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IFileDescriptorReceiver
from twisted.internet.protocol import ProcessProtocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.common.streams import adoptStream
from preforktwist.master.handle import spawnWithChannel
from preforktwist.master.procfs import isRunning
from preforktwist.protocol import forking
from preforktwist.protocol.config import WorkerConfig

if TYPE_CHECKING:
    from preforktwist.master.handle import WorkerProcess


def endOf(status: int) -> Failure:
    """
    A C{waitpid} status as Twisted's own reasons for a process's end.
    """
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return Failure(ProcessDone(status))
    if code < 0:
        return Failure(ProcessTerminated(None, -code, status))
    return Failure(ProcessTerminated(code, None, status))


@implementer(IFileDescriptorReceiver)
class _Channel(LineOnlyReceiver):
    """
    The master's end of the fork server's control socket: commands out,
    reports in (L{preforktwist.protocol.forking}), with the descriptors that
    come with each L{forking.Forked}.
    """

    delimiter = forking.DELIMITER
    MAX_LENGTH = forking.MAX_LENGTH

    def __init__(self, server: ForkServerProcess) -> None:
        self.server = server
        self._fds: list[int] = []

    def send(self, command: forking.Command) -> None:
        self.sendLine(forking.encode(command))

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def lineReceived(self, line: bytes) -> None:
        report = forking.decodeReport(line)
        if isinstance(report, forking.Forked) and len(self._fds) >= forking.FORKED_FDS:
            fds = self._fds[: forking.FORKED_FDS]
            self._fds = self._fds[forking.FORKED_FDS :]
            self.server.forked(report.pid, fds)
        elif isinstance(report, forking.Exited):
            self.server.exited(report.pid, report.status)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self.server.channelLost()


class ForkServerProcess(ProcessProtocol):
    """
    One fork server process as the master sees it, from its start to the
    exit of its last child.

    @ivar alive: it can take fork requests.
    @ivar ready: it said it is ready to fork (its imports, and those of
        C{--preload}, are done).
    """

    log = NamedLogger("preforktwist.forkclient.ForkServer")

    def __init__(self, reactor: IPreforkReactor) -> None:
        self.reactor = reactor
        self.alive = False
        self.ready = False
        self.pid: int | None = None
        self._readyDeadline: IDelayedCall | None = None
        #: The last line of each output, until its end comes.
        self._partial: dict[int, bytes] = {}
        self._channel: _Channel | None = None
        self._waiting: deque[WorkerProcess] = deque()
        self._children: dict[int, WorkerProcess] = {}
        self._orphanWatch: LoopingCall | None = None
        #: Given the workers asked for and never forked when this server
        #: ends: its starter asks them of another.  Without it, they fail.
        self.rehome: Callable[[list[WorkerProcess]], None] | None = None

    def start(
        self,
        reactorModule: str,
        listenFDs: list[int],
        descriptions: Sequence[str] = (),
        preload: Sequence[str] = (),
        readyTimeout: float | None = None,
    ) -> None:
        """
        @param descriptions: the listeners, shown in the fork server's
            process title.
        @param preload: dotted names the fork server imports before it
            forks (C{--preload}).
        @param readyTimeout: seconds it may take to become ready before it
            is killed (C{--boot-timeout}, as for a worker): a C{--preload}
            module that never finishes importing would otherwise hold every
            worker asked of it, and the pool would wait for them for ever.
        """
        module = [
            "preforktwist.worker.forkserver",
            reactorModule,
            str(len(listenFDs)),
            *[arg for name in preload for arg in ("--preload", name)],
            *descriptions,
        ]
        fd = spawnWithChannel(self.reactor, self, module, listenFDs)
        channel = self._channel = _Channel(self)
        adoptStream(self.reactor, fd, channel)
        self.alive = True
        if readyTimeout is not None:
            self._readyDeadline = self.reactor.callLater(
                readyTimeout, self._notReady, readyTimeout
            )

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace")
            if childFD == 1 and '"ready"' in text:
                self._isReady()
            elif text.strip():
                self.log.warn("fork server: {line}", line=text)

    def _isReady(self) -> None:
        self.ready = True
        self._cancelReadyDeadline()

    def _cancelReadyDeadline(self) -> None:
        deadline, self._readyDeadline = self._readyDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _notReady(self, timeout: float) -> None:
        """
        Not ready within C{timeout} seconds: kill it.  Its end fails or
        rehomes the workers asked of it (L{_failWaiting}).
        """
        self._readyDeadline = None
        self.alive = False
        self.log.error(
            "the fork server (pid {pid}) did not become ready within "
            "{timeout:g}s (is --preload code stuck at import?); killing it",
            pid=self.pid,
            timeout=timeout,
        )
        if self.transport is not None:
            try:
                self.transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass

    def fork(self, worker: WorkerProcess, config: WorkerConfig) -> None:
        """
        Ask for a worker; it is connected (L{forked}) when it is born.
        """
        assert self._channel is not None and self._channel.transport is not None
        self._waiting.append(worker)
        self._channel.send(forking.Fork(config))

    def forked(self, pid: int, fds: list[int]) -> None:
        """
        A worker was born: its control channel, stdout and stderr came as
        descriptors rather than as a child process of ours.
        """
        if not self._waiting:
            for fd in fds:
                os.close(fd)
            return
        # A fork is as good a sign of readiness as the line it printed.
        self._isReady()
        worker = self._waiting.popleft()
        self._children[pid] = worker
        controlFD, outFD, errFD = fds
        # Not logged: the pool said "started worker N" when it asked, and
        # every line of the worker's own (and the pool's about it) from
        # here on carries the pid.  A line per fork was one more of a
        # replacement's few, read and written by the master each time.
        worker.bornAs(pid)
        worker.adoptControl(controlFD)
        worker.adoptOutput(1, outFD)
        worker.adoptOutput(2, errFD)

    def exited(self, pid: int, status: int) -> None:
        worker = self._children.pop(pid, None)
        if worker is not None:
            worker.processExited(endOf(status))

    def close(self, keepWaiting: bool = False) -> list[WorkerProcess]:
        """
        No more forks: the server gives back its listening sockets, and
        exits once its children have.

        @param keepWaiting: the workers already asked for stay this
            server's: it forks every one asked before the close (the
            commands are read in order), so that asking another too would
            make each twice.  Should it end first, they are rehomed.
        @return: the workers asked for and not yet forked, unless kept.
        """
        self.alive = False
        channel = self._channel
        if channel is not None and channel.transport is not None:
            channel.send(forking.Close())
        if keepWaiting:
            return []
        waiting = list(self._waiting)
        self._waiting.clear()
        return waiting

    def _failWaiting(self, why: str) -> None:
        """
        This server ended with workers still to fork: not their failure.
        They are asked of another server (or a fresh interpreter) if the
        starter says where; otherwise they fail with C{why}.
        """
        waiting = list(self._waiting)
        self._waiting.clear()
        if not waiting:
            return
        if self.rehome is not None:
            self.log.info(
                "fork server ended ({why}) before forking {n} workers; "
                "asking for them elsewhere",
                why=why,
                n=len(waiting),
            )
            self.rehome(waiting)
            return
        for worker in waiting:
            worker.forkFailed(why)

    def channelLost(self) -> None:
        self.alive = False
        self._cancelReadyDeadline()
        self._failWaiting("the fork server's channel closed")

    def processExited(self, reason: Failure) -> None:
        self.alive = False
        self._cancelReadyDeadline()
        # What it wrote last without a line end is still said.
        partials, self._partial = self._partial, {}
        for childFD, partial in sorted(partials.items()):
            if partial:
                self.childDataReceived(childFD, partial + b"\n")
        self._failWaiting("the fork server exited")
        if self._children:
            self.log.warn(
                "fork server exited with {n} workers still running; watching them",
                n=len(self._children),
            )
            self._orphanWatch = LoopingCall(self._watchOrphans)
            self._orphanWatch.clock = self.reactor
            self._orphanWatch.start(0.2)

    def _watchOrphans(self) -> None:
        """
        Without their parent to reap them, orphans are seen exiting by
        their pid disappearing (or becoming a zombie of some other parent).
        """
        for pid, worker in list(self._children.items()):
            if not _running(pid):
                del self._children[pid]
                worker.processExited(Failure(ProcessTerminated(None, None, None)))
        if not self._children and self._orphanWatch is not None:
            self._orphanWatch.stop()
            self._orphanWatch = None


def _running(pid: int) -> bool:
    return isRunning(pid)
