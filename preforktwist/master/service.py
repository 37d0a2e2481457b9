"""
L{PreforkService}: the pre-forking server as an ordinary Twisted service.
"""

from __future__ import annotations

import atexit
import os
import random
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure

from preforktwist.common.endpoints import ListenError, endpointError, parseListen
from preforktwist.common.logs import NamedLogger
from preforktwist.common.titles import setTitle
from preforktwist.master.handle import WorkerProcess
from preforktwist.master.listeners import Listener
from preforktwist.master.policy.autoscale import Autoscaler, PoolSampler
from preforktwist.master.policy.limits import WorkerLimits
from preforktwist.master.pool import Pool
from preforktwist.master.reaper import OrphanReaper, runningAsInit
from preforktwist.master.signals import signalsFor
from preforktwist.master.starters import (
    ForkServerStarter,
    FreshInterpreterStarter,
    IWorkerStarter,
)
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.systemd import SystemdNotifier
from preforktwist.protocol.config import DEFAULT_PROTOCOL
from preforktwist.settings import Settings, workerConfig


class PreforkService(Service):
    """
    A pool of worker processes, each running its own reactor, all accepting
    on listening sockets that this service binds and holds.

    Put it in a C{MultiService} beside any other service.  The sockets are
    bound in L{privilegedStartService}, so C{twistd --uid/--gid} can bind a
    low port as root while the workers run unprivileged.  L{stopService}
    returns a L{Deferred} that fires when every worker has finished its
    open connections and exited.

    While it runs, the master's signals act on it (and on every other
    pre-forked service in the process): SIGINT and SIGTERM stop the
    application gracefully (exit status 0; a second one kills the workers
    at once), SIGHUP reloads, SIGTTIN and SIGTTOU grow and shrink the pool,
    SIGUSR1 reopens the log file.
    """

    log = NamedLogger("preforktwist.service.PreforkService")

    def __init__(
        self,
        listen: str | Sequence[str] | None = None,
        *,
        settings: Settings | None = None,
        reactor: Any = None,
        **keywords: Any,
    ) -> None:
        """
        @param listen: the endpoint descriptions to serve, the one setting
            that may also be given first, without its name.
        @param settings: everything this server is configured with.
        @param keywords: or the settings one by one, named as in
            L{preforktwist.settings.Settings}, where each is declared with
            its command-line flag, default and meaning (C{listen},
            C{protocol}, C{factory}, C{workers},
            C{maxConnectionsPerWorker}, ...).
        @param reactor: the reactor; default the global one.
        @raise ValueError: for a value that cannot work, with the message
            C{--option: reason}, as on the command line.
        """
        if listen is not None:
            keywords["listen"] = listen
        if settings is None:
            settings = Settings(**keywords)
        elif keywords:
            raise TypeError("give settings= or keywords, not both")
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.reactor = reactor
        self.listeners = [
            Listener(parseListen(d, settings.backlog)) for d in settings.listen
        ]
        assert settings.workers is not None and settings.standby is not None
        self.pool = Pool(
            self._spawnWorker,
            settings.workers,
            reactor,
            grace=settings.grace + 1.0,  # the worker's own deadline comes first
            bootTimeout=settings.bootTimeout,
            giveUp=self._giveUp,
            reloadBatch=settings.reloadBatch,
            standby=settings.standby,
            heartbeatTimeout=settings.heartbeatTimeout,
        )
        self.scoreboard = Scoreboard(self.pool, self.listeners, reactor)
        assert settings.maxWorkerAgeJitter is not None
        self.limits = WorkerLimits(
            self.pool,
            reactor,
            maxMemory=settings.maxWorkerMemory,
            maxAge=settings.maxWorkerAge,
            ageJitter=settings.maxWorkerAgeJitter,
            minLifetime=settings.minWorkerLifetime,
        )
        self.autoscaler: Autoscaler | None = None
        if settings.minWorkers is not None and settings.maxWorkers is not None:
            self.autoscaler = Autoscaler(
                self.pool,
                reactor,
                PoolSampler(self.pool, self.listeners, reactor),
                settings.minWorkers,
                settings.maxWorkers,
                upAfter=settings.scaleUpAfter,
                downAfter=settings.scaleDownAfter,
                cooldown=settings.scaleCooldown,
            )
        self.scoreboard.autoscaler = self.autoscaler
        self._statusPort: Any = None
        self._signals = signalsFor(reactor)
        self.starter: IWorkerStarter = (
            ForkServerStarter(reactor, self._listenFDs, descriptions=self.descriptions)
            if settings.forkServer
            else FreshInterpreterStarter(reactor, self._listenFDs)
        )
        self._notifier: SystemdNotifier | None = None
        #: Only as PID 1 (in a container): orphans are ours to reap.
        self._reaper = OrphanReaper() if runningAsInit() else None

    @property
    def descriptions(self) -> list[str]:
        return [listener.spec.description for listener in self.listeners]

    # Sockets.

    def bindListeners(self) -> None:
        """
        Bind every listening socket not bound yet.  C{twistd preforked}
        calls this early, to report a port in use before anything starts.

        @raise preforktwist.listening.ListenError: with a one-line reason.
        """
        try:
            for listener in self.listeners:
                if listener.socket is None:
                    listener.bind()
            status = self.settings.status
            if status is not None and self._statusPort is None:
                self._statusPort = self._listenStatus(status)
        except Exception:
            self.closeListeners()
            raise

    def _listenStatus(self, description: str) -> Any:
        """
        Listen for the status endpoint, with Twisted's own endpoint: this
        socket is the master's alone.

        @raise ListenError: at once, if it cannot listen.
        """
        try:
            endpoint = serverFromString(self.reactor, description)
        except Exception as e:
            raise ListenError(endpointError(description, e)) from None
        from preforktwist.master.status.web import statusSite

        result = endpoint.listen(statusSite(self.scoreboard))
        outcome: list[Any] = []
        result.addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            raise ListenError(
                f"cannot listen on {description}: {outcome[0].getErrorMessage()}"
            )
        return outcome[0] if outcome else None

    def closeListeners(self) -> None:
        for listener in self.listeners:
            listener.close()

    # Service.

    def privilegedStartService(self) -> None:
        self.bindListeners()
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.bindListeners()
        if self.settings.factory is None and self.settings.protocol is None:
            self.log.info(
                "no --protocol or --factory given: serving the bundled "
                "example {example}",
                example=DEFAULT_PROTOCOL,
            )
        for listener in self.listeners:
            self.log.info(
                "{description} listening on {address} (backlog {backlog})",
                description=listener.spec.description,
                address=listener.describeAddress(),
                backlog=listener.spec.backlog,
            )
        setTitle(
            f"preforktwist master {' '.join(self.descriptions)} "
            f"({self.pool.size} workers)"
        )
        self._signals.add(self)
        self.starter.start()
        self._notifier = SystemdNotifier.fromEnvironment(self.pool)
        if self._notifier is not None:
            self.pool.observers.append(self._notifier)
        self.pool.start()
        self.scoreboard.startService()
        if self._reaper is not None:
            self._reaper.startService()
        if self.limits.active:
            self.limits.startService()
        if self.autoscaler is not None:
            self.autoscaler.startService()
        if self._statusPort is not None:
            host = self._statusPort.getHost()
            self.log.info(
                "status page on http://{host}:{port}/ (also /status.json, /metrics, "
                "/readyz, /livez)",
                host=getattr(host, "host", host),
                port=getattr(host, "port", ""),
            )

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self.log.info(
            "stopping: {n} workers finish their connections (grace {grace:g}s)",
            n=len(self.pool.workers),
            grace=self.settings.grace,
        )
        if self.limits.running:
            self.limits.stopService()
        self.starter.stop()
        if self.autoscaler is not None and self.autoscaler.running:
            self.autoscaler.stopService()
        for listener in self.listeners:
            listener.refuseNew()
        d = self.pool.stop()
        self.pool.whenDrained().addCallback(lambda _: self._drained())

        def stopped(_: None) -> Any:
            self.closeListeners()
            self._signals.remove(self)
            if self.scoreboard.running:
                self.scoreboard.stopService()
            if self._reaper is not None:
                self._reaper.stopService()  # type: ignore[no-untyped-call]
            if self._notifier is not None:
                self.pool.observers.remove(self._notifier)
                self._notifier.close()
                self._notifier = None
            self.log.info("all workers have exited")
            port, self._statusPort = self._statusPort, None
            return port.stopListening() if port is not None else None

        d.addCallback(stopped)
        return d

    def _drained(self) -> None:
        """
        No worker will accept again: close the sockets now, so that new
        clients are refused at once rather than queued and reset later.
        """
        if any(listener.socket is not None for listener in self.listeners):
            self.log.info("workers drained the queue: closing the listening sockets")
            self.closeListeners()

    # Workers.

    def _spawnWorker(self, number: int, standby: bool) -> WorkerProcess:
        config = workerConfig(
            self.settings,
            number=number,
            masterPid=os.getpid(),
            families=[listener.spec.family for listener in self.listeners],
            tls=[listener.spec.tls is not None for listener in self.listeners],
            allowance=self._allowance(),
            standby=standby,
            reactor=type(self.reactor).__module__,
            # Four heartbeats per timeout, so one late one is no alarm.
            countsInterval=min(1.0, (self.pool.heartbeatTimeout or 4.0) / 4),
        )
        worker = WorkerProcess(number, self.pool, self.reactor)
        self.starter.startWorker(worker, config)
        if config.allowance:
            self.log.info(
                "{worker} may accept {allowance} connections",
                worker=worker.describe(),
                allowance=config.allowance,
            )
        return worker

    def _listenFDs(self) -> list[int]:
        return [listener.fileno for listener in self.listeners]

    def _allowance(self) -> int:
        """
        A new worker's allowance: C{-m} plus a random share of the jitter,
        drawn per worker so that workers do not all retire together.
        """
        perWorker = self.settings.maxConnectionsPerWorker
        if not perWorker:
            return 0
        return perWorker + random.randint(0, self.settings.maxConnectionsJitter)

    def _giveUp(self, reason: str) -> None:
        """
        No worker can serve: stop the application, and make the process
        exit non-zero once the reactor has stopped and twistd has cleaned
        up after itself.
        """
        _exitStatusAtInterpreterExit(1)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    # What signals do (see L{preforktwist.master.signals}).

    def reload(self) -> None:
        self.starter.renew()
        self.pool.reload()

    def grow(self) -> None:
        self.pool.resize(self.pool.size + 1)

    def shrink(self) -> None:
        self.pool.resize(self.pool.size - 1)

    def stopNow(self) -> None:
        self.pool.stopNow()


def _exitStatusAtInterpreterExit(status: int) -> None:
    """
    twistd exits 0 whenever its reactor stops without a signal.  Registered
    last, this runs first among the exit handlers, after twistd has removed
    its pid file and stopped logging.
    """

    def exitNow() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    atexit.register(exitNow)
