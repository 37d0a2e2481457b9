"""
L{Upgrader}: the hot upgrade of one master process, whatever pre-forked
services run in it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Protocol

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.master.upgrade.command import (
    MasterCommand,
    runningUnderTwistd,
    systemdEnvironment,
    twistdPidfile,
)
from preforktwist.master.upgrade.handoff import Inheritance
from preforktwist.master.upgrade.newmaster import NewMaster, UpgradeFailedError
from preforktwist.master.upgrade.pidfile import Pidfile
from preforktwist.master.upgrade.successor import Inheritor, Successor


class Upgradable(Inheritor, Protocol):
    """
    What an upgrade needs of one pre-forked service.
    """

    @property
    def bootTimeout(self) -> float: ...

    @property
    def grace(self) -> float: ...

    def refusesUpgrade(self) -> str | None:
        """Why an upgrade cannot begin now, or L{None}."""

    def handoffSockets(self) -> list[tuple[str, int]]:
        """Every socket to hand over, with its key, in order."""

    def systemdDescriptors(self) -> list[int]:
        """The descriptors of the sockets systemd passed in that it serves."""

    def handOver(self, successor: int) -> None:
        """The new master is ready: stop accepting and retire."""


class Upgrader:
    """
    Starts a new master from the code on disk, hands it the listening
    sockets, and retires this one once the new one is ready, or stops the
    new one and goes on serving if it is not.  One upgrade at a time.

    @ivar newMaster: the new master of the upgrade under way, until it is
        gone (after a failure) or this master exits (after a success).
    @ivar successor: this master's side of the upgrade that started it,
        if one did.
    """

    log = NamedLogger("preforktwist.upgrade")

    def __init__(
        self,
        reactor: IPreforkReactor,
        stop: Callable[[], None],
        command: MasterCommand,
        environ: Mapping[str, str],
        inheritance: Inheritance,
        pidfile: Pidfile | None = None,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        """
        @param stop: stops this master gracefully.
        @param command: how this master was started.
        @param environ: the environment it was started with.
        @param pidfile: twistd's pidfile, if it writes one.
        @param kill: sends a signal to a process (the new master).
        """
        self.reactor = reactor
        self._stop = stop
        self.command = command
        self.environ = dict(environ)
        self.pidfile = pidfile
        self._kill = kill
        self.services: list[Upgradable] = []
        self.newMaster: NewMaster | None = None
        self.succeeded = False
        handoff = inheritance.handoff
        self.successor = Successor(reactor, handoff) if handoff is not None else None

    @property
    def underWay(self) -> bool:
        return self.newMaster is not None

    def add(self, service: Upgradable) -> None:
        """C{service} runs in this process."""
        self.services.append(service)
        if self.successor is not None:
            self.successor.attach(service)

    def remove(self, service: Upgradable) -> None:
        """
        C{service} stops: an upgrade under way is abandoned, the new
        master stopped.
        """
        if service in self.services:
            self.services.remove(service)
        newMaster = self.newMaster
        if newMaster is not None and not self.succeeded and not newMaster.isGone:
            self.log.warn(
                "stopping during an upgrade: stopping {master} too",
                master=newMaster.describe(),
            )
            newMaster.stop()

    def fromSignal(self) -> None:
        """SIGUSR2: upgrade, and log the outcome."""
        self.upgrade().addErrback(lambda _: None)

    def upgrade(self) -> Deferred[int]:
        """
        Start a new master and hand over to it once it is ready.

        @return: fires with the new master's pid once it is ready and this
            master retires, or fails with L{UpgradeFailedError} saying why
            (the reason is logged too).
        """
        refusal = self._refusal()
        if refusal is not None:
            self.log.warn("upgrade refused: {why}", why=refusal)
            return fail(UpgradeFailedError(refusal))
        sockets: dict[str, list[int]] = {}
        for service in self.services:
            for key, fd in service.handoffSockets():
                sockets.setdefault(key, []).append(fd)
        timeout = max(s.bootTimeout for s in self.services)
        environ, fromSystemd = systemdEnvironment(
            self.environ, [fd for s in self.services for fd in s.systemdDescriptors()]
        )
        newMaster = self.newMaster = NewMaster(
            self.reactor,
            self.command,
            environ,
            sockets,
            timeout,
            killAfter=max(s.grace for s in self.services) + 1.0,
            keep=fromSystemd,
            kill=self._kill,
        )
        if self.pidfile is not None:
            self.pidfile.park()
        try:
            newMaster.start()
        except OSError as e:
            self.newMaster = None
            if self.pidfile is not None:
                self.pidfile.restore()
            why = f"cannot start the new master: {e.strerror or e}"
            self.log.error("upgrade failed: {why}", why=why)
            return fail(UpgradeFailedError(why))
        self.log.info(
            "upgrade: started {master} ({command}) with {n} sockets; waiting "
            "until all its workers accept (at most {timeout:g}s)",
            master=newMaster.describe(),
            command=" ".join(self.command.arguments),
            n=sum(len(fds) for fds in sockets.values()),
            timeout=timeout,
        )
        return newMaster.ready.addCallbacks(self._succeeded, self._failed)

    def _refusal(self) -> str | None:
        if self.newMaster is not None:
            return (
                f"an upgrade is under way ({self.newMaster.describe()})"
                if not self.succeeded
                else "this master has handed over and is retiring"
            )
        if not self.services:
            return "no pre-forked service runs"
        for service in self.services:
            why = service.refusesUpgrade()
            if why is not None:
                return why
        return None

    def _succeeded(self, pid: int) -> int:
        assert self.newMaster is not None
        self.succeeded = True
        self.log.info(
            "upgrade: {master} is ready: it serves from now on; this master's "
            "workers retire and it exits",
            master=self.newMaster.describe(),
        )
        for service in list(self.services):
            service.handOver(pid)
        if self.pidfile is not None:
            self.pidfile.handOver(pid)
        self.newMaster.takeOver().addErrback(
            lambda f: self.log.failure("the new master did not take over", f)
        )
        self._stop()
        return pid

    def _failed(self, failure: Failure) -> Failure:
        failure.trap(UpgradeFailedError)
        newMaster = self.newMaster
        assert newMaster is not None
        self.log.error(
            "upgrade failed: {why}; this master goes on serving",
            why=failure.getErrorMessage(),
        )
        newMaster.stop()
        newMaster.whenGone().addCallback(lambda _: self._over(newMaster))
        return failure

    def _over(self, newMaster: NewMaster) -> None:
        if self.newMaster is newMaster:
            self.newMaster = None
        if self.pidfile is not None:
            self.pidfile.restore()
        self.log.info("upgrade: {master} is gone", master=newMaster.describe())


_byReactor: dict[int, Upgrader] = {}


def upgraderFor(
    reactor: IPreforkReactor,
    stop: Callable[[], None],
    inheritance: Inheritance,
) -> Upgrader:
    """
    The one L{Upgrader} of C{reactor}'s process, made by the first
    pre-forked service: before twistd daemonizes or changes directory, so
    that the directory and environment are those it was started with.
    """
    upgrader = _byReactor.get(id(reactor))
    if upgrader is None:
        directory = os.getcwd()
        upgrader = _byReactor[id(reactor)] = Upgrader(
            reactor,
            stop,
            MasterCommand.ofThisProcess(directory),
            os.environ,
            inheritance,
            _pidfile(directory),
        )
    return upgrader


def _pidfile(directory: str) -> Pidfile | None:
    """
    twistd's pidfile, if this process is twistd and was told to write one.
    """
    if not runningUnderTwistd():
        return None
    path = twistdPidfile(sys.argv, directory)
    return Pidfile(path) if path is not None else None
