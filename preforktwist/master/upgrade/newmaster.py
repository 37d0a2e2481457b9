"""
The old master's view of the new master it starts: the process, the
channel to it, and the one question that matters, whether it becomes ready
in time.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol, connectionDone
from twisted.python.failure import Failure

from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.common.streams import adoptStream
from preforktwist.master.handle import processEnd
from preforktwist.master.upgrade.channel import ControlChannel, Hello, Ready, TakeOver
from preforktwist.master.upgrade.command import MasterCommand
from preforktwist.master.upgrade.handoff import Handoff, withHandoff

#: How long the old master waits for the exit status of a new master
#: whose channel closed, to say how it ended.
EXIT_STATUS_WAIT = 2.0


class UpgradeFailedError(Exception):
    """
    The new master did not become ready; the message says why, in one
    line.
    """


class _OldEnd(ControlChannel):
    """
    The old master's end of the channel.
    """

    def __init__(self, newMaster: NewMaster) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.newMaster = newMaster

    @Hello.responder
    def hello(self, pid: int) -> dict[str, Any]:
        self.newMaster.saidHello(pid)
        return {}

    @Ready.responder
    def ready(self) -> dict[str, Any]:
        self.newMaster.saidReady()
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.newMaster.channelLost()


class _Spawned(ProcessProtocol):
    """
    The process the old master spawned: the new master itself, or with
    C{twistd} daemonizing, the process that forks it and exits.
    """

    def __init__(self, newMaster: NewMaster) -> None:
        self.newMaster = newMaster

    def processExited(self, reason: Failure) -> None:
        self.newMaster.spawnedExited(reason)


class NewMaster:
    """
    One new master, from its start until it is ready or gone.

    @ivar ready: fires with its pid once it is ready, or fails with
        L{UpgradeFailedError}; then the caller either lets it L{takeOver} or
        L{stop}s it.
    @ivar pid: its pid, as it said (after daemonizing), or else the pid of
        the process spawned.
    """

    log = NamedLogger("preforktwist.upgrade")

    def __init__(
        self,
        reactor: IPreforkReactor,
        command: MasterCommand,
        environ: Mapping[str, str],
        sockets: dict[str, list[int]],
        timeout: float,
        killAfter: float,
        keep: Sequence[int] = (),
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        """
        @param sockets: what to hand over, by L{socketKey}.
        @param keep: more descriptors it inherits at the same numbers (the
            sockets systemd passed in that no endpoint serves).
        @param kill: sends a signal to a process.
        @param timeout: how long it may take to become ready.
        @param killAfter: how long after SIGTERM a new master that is
            stopped is killed.
        """
        self.reactor = reactor
        self.command = command
        self.environ = environ
        self.sockets = sockets
        self.timeout = timeout
        self.killAfter = killAfter
        self.keep = list(keep)
        self._kill = kill
        self.ready: Deferred[int] = Deferred()
        self.pid: int | None = None
        self._spawnedPid: int | None = None
        self._helloPid: int | None = None
        self._spawnedEnd: Failure | None = None
        self._channel: _OldEnd | None = None
        self._timer: IDelayedCall | None = None
        self._killer: IDelayedCall | None = None
        self._gone: list[Deferred[None]] = []
        self.isGone = False

    def start(self) -> None:
        """
        Start it, with the sockets and its end of the channel on the same
        descriptor numbers as here.

        @raise OSError: it could not be started.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handoff = Handoff(os.getpid(), theirs.fileno(), self.sockets)
        environ = withHandoff(self.environ, handoff)
        executable, arguments = self.command.spawnArguments(environ)
        childFDs: dict[int, int | str] = {0: 0, 1: 1, 2: 2}
        childFDs.update({fd: fd for fd in [*self.keep, *handoff.descriptors()]})
        try:
            transport = self.reactor.spawnProcess(
                _Spawned(self),
                executable,
                arguments,
                env=environ,
                path=self.command.directory,
                childFDs=childFDs,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self._spawnedPid = transport.pid
        self._channel = adoptStream(self.reactor, ours.detach(), _OldEnd(self))
        self._timer = self.reactor.callLater(self.timeout, self._timedOut)

    def describe(self) -> str:
        return f"the new master (pid {self.pid})"

    # What happens to it.

    def saidHello(self, pid: int) -> None:
        self.pid = self._helloPid = pid
        self.log.info("{master} runs", master=self.describe())

    def saidReady(self) -> None:
        self._decide(None)

    @property
    def _daemonized(self) -> bool:
        """The master said hello from another process than the one spawned."""
        return self._helloPid is not None and self._helloPid != self._spawnedPid

    def spawnedExited(self, reason: Failure) -> None:
        self._spawnedEnd = reason
        if not (self._daemonized and reason.check(ProcessDone)):
            # The master itself, or twistd failing to daemonize it.  (A
            # daemonizing twistd may exit 0 before the master's hello is
            # read: its channel's end or the timeout tell then.)
            if self._helloPid is not None or not reason.check(ProcessDone):
                end = processEnd(reason).describe()
                self._decide(f"{self.describe()} {end} before it was ready")
        self._checkGone()

    def channelLost(self) -> None:
        self._channel = None
        if self._spawnedEnd is None and not self._daemonized:
            # The master itself is ending: its exit status, due any moment,
            # says more.
            self.reactor.callLater(
                EXIT_STATUS_WAIT,
                self._decide,
                f"{self.describe()} closed its channel before it was ready",
            )
        else:
            self._decide(f"{self.describe()} exited before it was ready")
        self._checkGone()

    def _timedOut(self) -> None:
        self._timer = None
        self._decide(
            f"{self.describe()} was not ready within {self.timeout:g}s (--boot-timeout)"
        )

    def _decide(self, failure: str | None) -> None:
        if self.ready.called:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if failure is None:
            assert self.pid is not None
            self.ready.callback(self.pid)
        else:
            self.ready.errback(UpgradeFailedError(failure))

    # What the old master does with it.

    def takeOver(self) -> Deferred[Any]:
        """
        Tell it that everything is its own now.
        """
        if self._channel is None:
            return Deferred()
        told: Deferred[Any] = self._channel.callRemote(TakeOver)
        return told

    def stop(self) -> None:
        """
        Stop it (SIGTERM), and kill it if it is not gone in time.
        """
        if self.isGone:
            return
        self._signal(signal.SIGTERM)
        if self._killer is None:
            self._killer = self.reactor.callLater(self.killAfter, self._killNow)

    def _killNow(self) -> None:
        self._killer = None
        if not self.isGone:
            self.log.warn("{master} did not stop: killing it", master=self.describe())
            self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.pid is None:
            return
        try:
            self._kill(self.pid, signum)
        except OSError:
            pass

    def whenGone(self) -> Deferred[None]:
        """
        @return: fires once it is gone: its channel closed, and the process
            spawned reaped.
        """
        d: Deferred[None] = Deferred()
        if self.isGone:
            d.callback(None)
        else:
            self._gone.append(d)
        return d

    def _checkGone(self) -> None:
        if self.isGone or self._channel is not None or self._spawnedEnd is None:
            return
        self.isGone = True
        if self._killer is not None and self._killer.active():
            self._killer.cancel()
        self._killer = None
        gone, self._gone = self._gone, []
        for d in gone:
            d.callback(None)
