"""
The master's side of the fork server (L{preforktwist.worker.forkserver}): start
it, ask it for workers, and hear from it how they ended.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from preforktwist.common.logs import NamedLogger
from preforktwist.master.procfs import isRunning
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
class _Channel(Protocol):
    """
    The master's end of the fork server's control socket: commands out,
    C{forked PID} (with three descriptors) and C{exited PID STATUS} in.
    """

    def __init__(self, server: ForkServer) -> None:
        self.server = server
        self._fds: list[int] = []
        self._buffer = b""

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            words = line.decode().split()
            if words[:1] == ["forked"] and len(self._fds) >= 3:
                fds, self._fds = self._fds[:3], self._fds[3:]
                self.server.forked(int(words[1]), fds)
            elif words[:1] == ["exited"]:
                self.server.exited(int(words[1]), int(words[2]))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self.server.channelLost()


class ForkServer(ProcessProtocol):
    """
    One fork server process, from its start to the exit of its last child.

    @ivar alive: it can take fork requests.
    """

    log = NamedLogger("preforktwist.forkclient.ForkServer")

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.alive = False
        self.pid: int | None = None
        self._channel: _Channel | None = None
        self._waiting: deque[WorkerProcess] = deque()
        self._children: dict[int, WorkerProcess] = {}
        self._orphanWatch: LoopingCall | None = None

    def start(
        self,
        reactorModule: str,
        listenFDs: list[int],
        descriptions: Sequence[str] = (),
    ) -> None:
        """
        @param descriptions: the listeners, shown in the fork server's
            process title.
        """
        from preforktwist.master.handle import spawnWithChannel

        module = [
            "preforktwist.worker.forkserver",
            reactorModule,
            str(len(listenFDs)),
            *descriptions,
        ]
        fd = spawnWithChannel(self.reactor, self, module, listenFDs)
        os.set_blocking(fd, False)
        channel = self._channel = _Channel(self)
        self.reactor.adoptStreamConnection(
            fd, socket.AF_UNIX, Factory.forProtocol(lambda: channel)
        )
        os.close(fd)
        self.alive = True

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip() and '"ready"' not in line:
                self.log.warn("fork server: {line}", line=line)

    def fork(self, worker: WorkerProcess, config: WorkerConfig) -> None:
        """
        Ask for a worker; L{WorkerProcess.attachForked} is called when it is
        born.
        """
        assert self._channel is not None and self._channel.transport is not None
        self._waiting.append(worker)
        self._channel.transport.write(b"fork " + config.toJSON().encode() + b"\n")

    def forked(self, pid: int, fds: list[int]) -> None:
        if not self._waiting:
            for fd in fds:
                os.close(fd)
            return
        worker = self._waiting.popleft()
        self._children[pid] = worker
        worker.attachForked(pid, *fds)

    def exited(self, pid: int, status: int) -> None:
        worker = self._children.pop(pid, None)
        if worker is not None:
            worker.processExited(endOf(status))

    def close(self) -> list[WorkerProcess]:
        """
        No more forks: the server gives back its listening sockets, and
        exits once its children have.

        @return: the workers asked for and not yet forked, for another fork
            server to make.
        """
        self.alive = False
        channel = self._channel
        if channel is not None and channel.transport is not None:
            channel.transport.write(b"close\n")
        waiting = list(self._waiting)
        self._waiting.clear()
        return waiting

    def _failWaiting(self, why: str) -> None:
        while self._waiting:
            worker = self._waiting.popleft()
            worker.forkFailed(why)

    def channelLost(self) -> None:
        self.alive = False
        self._failWaiting("the fork server's channel closed")

    def processExited(self, reason: Failure) -> None:
        self.alive = False
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
