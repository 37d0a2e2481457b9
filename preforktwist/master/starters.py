"""
How a worker process comes to be: one interface, L{IWorkerStarter}, and
its two implementations.  L{PreforkService} picks one when it is made and
never asks again.

  - L{FreshInterpreterStarter}: C{python -m preforktwist.worker.main
    CONFIG-JSON}, a child of the master that imports Twisted anew.
  - L{ForkServerStarter}: a fork of the template process
    (L{preforktwist.worker.forkserver}, a small fraction of that), with the
    fork server's whole life: its start, its renewal on reload, its restart
    after a death, and fresh interpreters whenever it cannot serve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zope.interface import Interface, implementer

from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.master.forkclient import ForkServerProcess
from preforktwist.master.handle import WorkerProcess, spawnWithChannel
from preforktwist.protocol.config import WorkerConfig

#: Least seconds between two starts of a fork server.
FORK_SERVER_RESTART_INTERVAL = 10.0


class IWorkerStarter(Interface):
    """
    How the master's workers are started.  However a worker came to be,
    its L{WorkerProcess} hears of it the same way: its pid, its control
    channel, its output, and its end in C{processExited}.
    """

    def start() -> None:
        """
        The service starts (its listening sockets are bound): be ready to
        start workers.
        """

    def startWorker(worker: WorkerProcess, config: WorkerConfig) -> None:  # noqa: N805
        """
        Bring C{worker}'s process to be, now or soon.  A worker that cannot
        be made after all is told so by L{WorkerProcess.forkFailed}.

        @raise Exception: if it cannot even be tried (out of processes or
            descriptors); the pool counts that as a failure.
        """

    def renew() -> None:
        """
        A reload: workers started from now on run the code on disk anew.
        """

    def stop() -> None:
        """
        The service stops: start nothing more, and tell the workers asked
        for and not yet made that they will not be.
        """


@implementer(IWorkerStarter)
class FreshInterpreterStarter:
    """
    Every worker a fresh interpreter, never a fork of the master, with the
    control channel on fd 3 and the listening sockets from fd 4 on.  Each
    one imports the code on disk, so there is nothing to renew.
    """

    def __init__(
        self, reactor: IPreforkReactor, listenFDs: Callable[[], Sequence[int]]
    ) -> None:
        """
        @param listenFDs: the listening sockets, in order, as they are now.
        """
        self.reactor = reactor
        self.listenFDs = listenFDs

    def start(self) -> None:
        pass

    def startWorker(self, worker: WorkerProcess, config: WorkerConfig) -> None:
        worker.config = config
        fd = spawnWithChannel(
            self.reactor,
            worker,
            ["preforktwist.worker.main", config.toJSON()],
            list(self.listenFDs()),
        )
        worker.adoptControl(fd)

    def renew(self) -> None:
        pass

    def stop(self) -> None:
        pass


@implementer(IWorkerStarter)
class ForkServerStarter:
    """
    Workers forked by a fork server, which this starter owns.

    A reload starts a new fork server, which imports the code on disk anew;
    the old one is closed and exits once the workers it made have.  One that
    died is started again when a worker is next wanted, at most every
    L{FORK_SERVER_RESTART_INTERVAL} seconds; meanwhile, and whenever one
    cannot start, workers are started as fresh interpreters.
    """

    # The lines it logs were the service's, and keep its namespace.
    log = NamedLogger("preforktwist.service.PreforkService")

    def __init__(
        self,
        reactor: IPreforkReactor,
        listenFDs: Callable[[], Sequence[int]],
        newServer: Callable[[Any], ForkServerProcess] = ForkServerProcess,
        descriptions: Sequence[str] = (),
        preload: Sequence[str] = (),
        readyTimeout: float | None = None,
    ) -> None:
        """
        @param listenFDs: the listening sockets, in order, as they are now.
        @param newServer: makes the handle on one fork server process.
        @param descriptions: the listeners, for the fork server's title.
        @param preload: dotted names of the user's code that each fork
            server imports before it forks (C{--preload}); each new one, on
            reload, imports them anew.
        @param readyTimeout: seconds each fork server may take to become
            ready before it is killed (C{--boot-timeout}).
        """
        self.reactor = reactor
        self.listenFDs = listenFDs
        self.descriptions = list(descriptions)
        self.preload = list(preload)
        self.readyTimeout = readyTimeout
        self.fresh = FreshInterpreterStarter(reactor, listenFDs)
        self.server: ForkServerProcess | None = None
        self._newServer = newServer
        self._running = False
        self._lastStart: float | None = None

    def start(self) -> None:
        self._running = True
        self._startServer()

    def renew(self) -> None:
        if self._running:
            self._startServer()

    def stop(self) -> None:
        self._running = False
        if self.server is not None:
            # It gives back its copies of the listening sockets; the pool
            # stops whatever it had still to make.
            for worker in self.server.close():
                worker.forkFailed("the server is stopping")
            self.server = None

    def startWorker(self, worker: WorkerProcess, config: WorkerConfig) -> None:
        worker.config = config
        server = self._liveServer()
        if server is not None:
            server.fork(worker, config)
        else:
            self.fresh.startWorker(worker, config)

    def _startServer(self) -> None:
        """
        Start a fork server for the workers to come, and close the one
        before (it exits once the workers it made have).  What the old one
        had still to make, the new one makes.
        """
        if self.server is not None:
            # What it was asked, it forks before it reads the close; if it
            # ends first, L{_rehome} asks the new one.
            self.server.close(keepWaiting=True)
            self.server = None
        self._lastStart = self.reactor.seconds()
        server = self._newServer(self.reactor)
        server.rehome = self._rehome
        try:
            server.start(
                type(self.reactor).__module__,
                list(self.listenFDs()),
                self.descriptions,
                preload=self.preload,
                readyTimeout=self.readyTimeout,
            )
        except Exception as e:
            self.log.warn(
                "cannot start the fork server ({e}); starting each worker "
                "as a fresh interpreter",
                e=e,
            )
        else:
            self.server = server
            self.log.info("started the fork server (pid {pid})", pid=server.pid)

    def _rehome(self, workers: list[WorkerProcess]) -> None:
        """
        A fork server ended before forking these workers (it was renewed,
        or it died): they did not fail, so they are asked again, of the
        live fork server or as fresh interpreters.  Once stopping, they
        fail: nothing more is started.  So does a worker whose end the pool
        has already asked for (its boot timeout ran out while it waited):
        asked again, it would hang as long again, and never be killed.
        """
        for worker in workers:
            if not self._running:
                worker.forkFailed("the server is stopping")
                continue
            if worker.endAsked:
                worker.forkFailed("not forked within the boot timeout")
                continue
            assert worker.config is not None
            try:
                self.startWorker(worker, worker.config)
            except Exception as e:
                worker.forkFailed(f"cannot start a worker: {e}")

    def _liveServer(self) -> ForkServerProcess | None:
        """
        The fork server to ask for a worker, started again if it is gone
        and its last start is long enough ago; C{None} for a fresh
        interpreter.
        """
        server = self.server
        if server is not None and server.alive:
            return server
        if not self._running or (
            self._lastStart is not None
            and self.reactor.seconds() - self._lastStart <= FORK_SERVER_RESTART_INTERVAL
        ):
            return None
        self.log.warn("the fork server is gone; starting another")
        self._startServer()
        server = self.server
        return server if server is not None and server.alive else None
