"""
The control socket's commands as the master answers them, and the socket
as a service.

The socket is a UNIX socket, created mode 0600 when the service starts
(after twistd has dropped its privileges, so that it belongs to the user
the master runs as): only that user, and root, may connect.  A hot
upgrade hands it over like the listening sockets.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorUNIX
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure
from twisted.python.lockfile import FilesystemLock

from preforktwist.common.adopted import adoptListeningPort
from preforktwist.common.endpoints import ListenError, parseListen
from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.master.control.stacks import StackCapture
from preforktwist.master.events import (
    PoolEvent,
    PoolStopping,
    ReloadFailed,
    ReloadFinished,
)
from preforktwist.master.listeners import repointLock, takeLock
from preforktwist.master.pool import Pool
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.upgrade.handoff import Inheritance, socketKey
from preforktwist.master.upgrade.newmaster import UpgradeFailedError
from preforktwist.protocol.admin import (
    ControlError,
    Reload,
    Resize,
    Stack,
    Status,
    Stop,
    Upgrade,
)
from preforktwist.protocol.control import ControlChannel
from preforktwist.settings import MAX_WORKERS


class Controlled(Protocol):
    """
    What the control commands act on: one pre-forked service, and the
    process it runs in.
    """

    @property
    def pool(self) -> Pool: ...

    @property
    def scoreboard(self) -> Scoreboard: ...

    def refusesReload(self) -> str | None:
        """Why a reload cannot begin now, or L{None}."""

    def upgrade(self) -> Deferred[int]:
        """Upgrade the process (as SIGUSR2)."""

    def stopGracefully(self) -> None:
        """Stop the process (as SIGTERM)."""


class ControlCommands(ControlChannel):
    """
    One connection to the control socket: each command carried out on the
    service, answered when done.
    """

    def __init__(self, service: Controlled, reactor: IPreforkReactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.service = service
        self.reactor = reactor

    @Status.responder
    def status(self) -> dict[str, Any]:
        return {"snapshot": json.dumps(self.service.scoreboard.snapshot(), indent=1)}

    @Resize.responder
    def resize(self, delta: int) -> dict[str, Any]:
        pool = self.service.pool
        if pool.stopping:
            raise ControlError("the server is stopping")
        size = pool.size + delta
        if size < 1:
            raise ControlError(
                f"cannot remove {-delta}: the pool has {pool.size} "
                f"worker{'s' if pool.size != 1 else ''} and keeps at least 1"
            )
        if size > MAX_WORKERS:
            raise ControlError(
                f"cannot add {delta}: the pool has {pool.size} workers "
                f"and keeps at most {MAX_WORKERS}"
            )
        pool.resize(size)
        return {"size": pool.size}

    @Reload.responder
    def reload(self) -> Deferred[dict[str, Any]]:
        why = self.service.refusesReload()
        if why is not None:
            raise ControlError(why)
        return _reloaded(self.service.pool)

    @Upgrade.responder
    def upgrade(self) -> Deferred[dict[str, Any]]:
        def failed(failure: Failure) -> dict[str, Any]:
            failure.trap(UpgradeFailedError)
            raise ControlError(failure.getErrorMessage())

        return self.service.upgrade().addCallbacks(lambda pid: {"pid": pid}, failed)

    @Stack.responder
    def stack(self, worker: str) -> Deferred[dict[str, Any]]:
        found = _worker(self.service.pool, worker)
        pid = found.pid
        if pid is None:
            raise ControlError(f"worker {found.number} has not started yet")
        capture = StackCapture(found, self.reactor)
        return capture.capture().addCallback(lambda text: {"pid": pid, "stack": text})

    @Stop.responder
    def stop(self) -> dict[str, Any]:
        # Answered first; the connection ends when the process does.
        self.reactor.callLater(0, self.service.stopGracefully)
        return {"pid": os.getpid()}


def _worker(pool: Pool, name: str) -> Any:
    """
    The live worker numbered C{name}, or else whose pid it is.

    @raise ControlError: there is none.
    """
    workers = pool.workers
    try:
        wanted = int(name)
    except ValueError:
        raise ControlError(f"no worker {name!r}: give a number or a pid") from None
    if wanted in workers:
        return workers[wanted]
    for worker in workers.values():
        if getattr(worker, "pid", None) == wanted:
            return worker
    known = ", ".join(str(n) for n in sorted(workers)) or "none"
    raise ControlError(f"no worker {wanted} (workers: {known})")


def _reloaded(pool: Pool) -> Deferred[dict[str, Any]]:
    """
    Reload C{pool}.

    @return: fires once the reload has finished, or fails with
        L{ControlError} once it stopped (a new worker failed to boot, or the
        server stops).
    """
    done: Deferred[dict[str, Any]] = Deferred()

    def event(what: PoolEvent) -> None:
        if isinstance(what, ReloadFailed):
            pool.observers.remove(event)
            done.errback(
                ControlError(
                    f"reload stopped: {what.reason}; the old workers keep serving"
                )
            )
        elif isinstance(what, ReloadFinished):
            pool.observers.remove(event)
            message = f"reload finished: every worker is new ({pool.summary()})"
            done.callback({"message": message})
        elif isinstance(what, PoolStopping):
            pool.observers.remove(event)
            done.errback(ControlError("the server is stopping"))

    pool.observers.append(event)
    pool.reload()
    if not pool.reloading and not done.called:
        pool.observers.remove(event)
        done.errback(ControlError("no reload began"))
    return done


class ControlService(Service):
    """
    The control socket: made when the service starts (owned by the user
    the master runs as by then), or taken from the old master at a hot
    upgrade and served once this master takes over.

    @ivar port: the listening port, once bound.
    """

    log = NamedLogger("preforktwist.service.PreforkService")

    def __init__(
        self,
        reactor: IPreforkReactor,
        description: str,
        path: str,
        commands: Callable[[], ControlCommands],
        failed: Callable[[str], None],
        inheritance: Inheritance | None = None,
    ) -> None:
        """
        @param path: the socket's path, from C{description}.
        @param commands: makes the protocol of one connection.
        @param failed: called with one line if the socket cannot be made:
            the master cannot run as asked.
        """
        self.reactor = reactor
        self.description = description
        self.path = path
        self.factory: Any = ServerFactory.forProtocol(commands)
        self.factory.noisy = False
        self._failed = failed
        self.inheritance = inheritance
        self.port: IListeningPort | None = None
        self.waiting = False
        self.handedOver = False
        self._adopted = False
        self._lock: FilesystemLock | None = None

    @property
    def key(self) -> str:
        return socketKey("control", self.description)

    def checkFree(self) -> None:
        """
        Say at once, before anything starts, if another server answers on
        the path.

        @raise ListenError: with a one-line reason.
        """
        if self.inheritance is not None and self.inheritance.has(self.key):
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise ListenError(f"--control: no directory {directory}")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self.path)
            except OSError:
                return
        raise ListenError(f"--control: another server listens on {self.path}")

    def startService(self) -> None:
        Service.startService(self)
        fd = self.inheritance.claim(self.key) if self.inheritance else None
        if fd is not None:
            # Served once the old master hands over: until then, it does.
            self.port = adoptListeningPort(self.reactor, fd, self.factory)
            self._port.stopReading()
            self.waiting = self._adopted = True
            return
        mask = os.umask(0o177)  # created 0600, never wider for a moment
        try:
            self.port = cast(IReactorUNIX, self.reactor).listenUNIX(
                self.path, self.factory, mode=0o600, wantPID=True
            )
        except Exception as e:
            reason = getattr(e, "strerror", None) or e
            self._failed(f"--control: cannot listen on {self.path}: {reason}")
            return
        finally:
            os.umask(mask)
        self.log.info("control socket on {path}", path=self.path)

    @property
    def _port(self) -> Any:
        return self.port

    def handoffSockets(self) -> list[tuple[str, int]]:
        if self.port is None:
            return []
        return [(self.key, self._port.fileno())]

    def handOver(self, successor: int) -> None:
        """
        The new master serves the control socket from now on: accept no
        more, and make its path's lock name the new master.
        """
        self.handedOver = True
        if self.port is None:
            return
        self._port.stopReading()
        lock = self._lock or getattr(self.port, "lockFile", None)
        if lock is not None:
            repointLock(lock, successor)

    def takeOver(self) -> None:
        """The old master handed over: serve the control socket."""
        if self.waiting and self.port is not None:
            self.waiting = False
            self._lock = takeLock(self.path)
            self._port.startReading()
            self.log.info("control socket on {path}", path=self.path)

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None or self.handedOver:
            # Stopping the port would remove the path the new master
            # serves; the process's exit closes the socket.
            return None
        stopped: Deferred[None] | None = port.stopListening()
        if self._adopted and not self.waiting:
            # Taken over: the path is this master's to remove.
            try:
                os.unlink(self.path)
            except OSError:
                pass
            if self._lock is not None:
                self._lock.unlock()
                self._lock = None
        return stopped


def controlService(
    description: str | None,
    reactor: IPreforkReactor,
    controlled: Controlled,
    failed: Callable[[str], None],
    inheritance: Inheritance | None,
) -> ControlService | None:
    """
    The control socket C{--control} asks for, acting on C{controlled};
    L{None} without one.
    """
    if description is None:
        return None
    return ControlService(
        reactor,
        description,
        str(parseListen(description).address),
        lambda: ControlCommands(controlled, reactor),
        failed,
        inheritance,
    )
