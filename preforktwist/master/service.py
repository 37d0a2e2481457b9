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
from preforktwist.protocol.config import DEFAULT_PROTOCOL, WorkerConfig


def defaultWorkerCount() -> int:
    """
    One worker per CPU this process may run on.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
        listen: str | Sequence[str] = "tcp:8080",
        protocol: str | None = None,
        factory: str | None = None,
        workers: int | None = None,
        maxConnectionsPerWorker: int = 0,
        grace: float = 30.0,
        backlog: int | None = None,
        bootTimeout: float = 30.0,
        maxConnectionsJitter: int = 0,
        replaceAt: float = 0.9,
        maxConcurrent: int = 1000,
        heartbeatTimeout: float = 30.0,
        workerInit: str | None = None,
        reloadBatch: int = 1,
        forkServer: bool = True,
        acceptBatch: int = 0,
        standby: int | None = None,
        status: str | None = None,
        proxyProtocol: bool = False,
        minWorkers: int | None = None,
        maxWorkers: int | None = None,
        maxWorkerMemory: int = 0,
        maxWorkerAge: float = 0.0,
        maxWorkerAgeJitter: float | None = None,
        minWorkerLifetime: float = 30.0,
        scaleUpAfter: float = 2.0,
        scaleDownAfter: float = 10.0,
        scaleCooldown: float = 5.0,
        reactor: Any = None,
    ) -> None:
        """
        @param listen: server endpoint descriptions (C{tcp:}, C{tcp6:},
            C{unix:}); every worker serves all of them.
        @param protocol: dotted name of a C{Protocol} subclass.
        @param factory: dotted name of a protocol factory, or of a callable
            returning one.  With neither, the echo example is served.
        @param workers: workers to keep; default one per CPU.
        @param maxConnectionsPerWorker: a worker accepts exactly this many
            connections and is then replaced; 0 for never.
        @param grace: seconds a retiring or stopping worker may take to
            finish its open connections before it is killed.
        @param backlog: the listen backlog, overriding the endpoints'.
        @param bootTimeout: seconds a worker may take to become ready.
        @param maxConnectionsJitter: each worker's allowance is
            C{maxConnectionsPerWorker + randint(0, maxConnectionsJitter)},
            so that workers do not all retire together.
        @param replaceAt: the share of its allowance after which a worker
            asks for its replacement ahead of time; 1 for only when used up.
        @param maxConcurrent: connections one worker holds open at once
            before it leaves new ones queued for its siblings; 0 for no cap.
        @param heartbeatTimeout: seconds a worker's reactor may go without
            proving that it turns before the worker is killed and replaced;
            0 disables the check.
        @param workerInit: dotted name of a callable run in each worker
            before it accepts; it may return a L{Deferred}.  If it fails,
            that worker is a boot failure.
        @param reloadBatch: workers replaced at a time by a rolling reload,
            and replacements started ahead of time at once: the most workers
            beyond C{workers} that may run.
        @param forkServer: start workers by forking a template process that
            has already imported Twisted (about a millisecond each), rather
            than as fresh interpreters (about 0.3 s of CPU each).
        @param acceptBatch: the most connections a worker accepts per
            wake-up; 0 for Twisted's adaptive batch (up to 100 and more).
        @param standby: workers kept booted, sockets adopted, but accepting
            nothing, so that a replacement accepts at once instead of after
            a boot; default 1 when workers are recycled (an allowance, a
            memory or an age limit), else 0.
        @param status: a server endpoint description for the status page,
            JSON and metrics (e.g. C{tcp:9100:interface=127.0.0.1}); L{None}
            for none.
        @param proxyProtocol: every connection starts with a PROXY protocol
            header (v1 or v2, as HAProxy's C{send-proxy} and
            C{send-proxy-v2} send it); the user's protocol sees the client's
            address in C{transport.getPeer()}.
        @param minWorkers: with C{maxWorkers}, the pool adapts its size
            to the listen queue between these bounds (see
            L{preforktwist.master.policy.autoscale}); C{workers} is the starting size.
        @param maxWorkers: see C{minWorkers}.
        @param maxWorkerMemory: resident bytes a worker may use before it
            is replaced; 0 for no limit.
        @param maxWorkerAge: seconds a worker may serve before it is
            replaced; 0 for no limit.
        @param maxWorkerAgeJitter: up to this many seconds more, at random
            per worker; default a tenth of C{maxWorkerAge}.
        @param minWorkerLifetime: no worker younger than this is replaced
            for memory or age.
        @param scaleUpAfter: adaptive pool: seconds connections must keep
            waiting before a worker is added.
        @param scaleDownAfter: adaptive pool: seconds of slack before a
            worker is retired.
        @param scaleCooldown: adaptive pool: least seconds between changes.
        @raise ValueError: for a value that cannot work.
        @raise preforktwist.listening.ListenError: for a bad endpoint.
        """
        if reactor is None:
            from twisted.internet import reactor
        if protocol is not None and factory is not None:
            raise ValueError("give --protocol or --factory, not both")
        if minWorkers is not None or maxWorkers is not None:
            low = minWorkers or 1
            high = maxWorkers or max(low, workers or defaultWorkerCount())
            if not 1 <= low <= high:
                raise ValueError(
                    f"need 1 <= min-workers <= max-workers, not {low}, {high}"
                )
            workers = min(max(workers or low, low), high)
            minWorkers, maxWorkers = low, high
        workers = defaultWorkerCount() if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if maxWorkerMemory < 0 or maxWorkerAge < 0 or minWorkerLifetime < 0:
            raise ValueError("limits must not be negative")
        if min(maxConnectionsPerWorker, maxConnectionsJitter, maxConcurrent) < 0:
            raise ValueError("counts must not be negative")
        if grace < 0 or heartbeatTimeout < 0 or bootTimeout <= 0:
            raise ValueError("times must not be negative")
        if 0 < heartbeatTimeout < 1:
            raise ValueError("heartbeatTimeout must be 0 (off) or at least 1")
        if not 0 < replaceAt <= 1:
            raise ValueError("replaceAt must be above 0 and at most 1")
        if reloadBatch < 1:
            raise ValueError("reloadBatch must be at least 1")
        descriptions = [listen] if isinstance(listen, str) else list(listen)
        if not descriptions:
            raise ValueError("nothing to listen on")
        self.reactor = reactor
        self.protocol = protocol
        self.factory = factory
        self.maxConnectionsPerWorker = maxConnectionsPerWorker
        self.maxConnectionsJitter = maxConnectionsJitter
        self.replaceAt = replaceAt
        self.maxConcurrent = maxConcurrent
        self.workerInit = workerInit
        self.proxyProtocol = proxyProtocol
        self.grace = grace
        self.listeners = [Listener(parseListen(d, backlog)) for d in descriptions]
        self.pool = Pool(
            self._spawnWorker,
            workers,
            reactor,
            grace=grace + 1.0,  # the worker's own deadline comes first
            bootTimeout=bootTimeout,
            giveUp=self._giveUp,
            surplus=reloadBatch,
            standby=(
                standby
                if standby is not None
                else int(
                    bool(maxConnectionsPerWorker or maxWorkerMemory or maxWorkerAge)
                )
            ),
            heartbeatTimeout=heartbeatTimeout,
        )
        self.scoreboard = Scoreboard(self.pool, self.listeners, reactor)
        self.limits = WorkerLimits(
            self.pool,
            reactor,
            maxMemory=maxWorkerMemory,
            maxAge=maxWorkerAge,
            ageJitter=(
                maxWorkerAge / 10 if maxWorkerAgeJitter is None else maxWorkerAgeJitter
            ),
            minLifetime=minWorkerLifetime,
        )
        self.autoscaler: Autoscaler | None = None
        if minWorkers is not None and maxWorkers is not None:
            self.autoscaler = Autoscaler(
                self.pool,
                reactor,
                PoolSampler(self.pool, self.listeners, reactor),
                minWorkers,
                maxWorkers,
                upAfter=scaleUpAfter,
                downAfter=scaleDownAfter,
                cooldown=scaleCooldown,
            )
        self.scoreboard.autoscaler = self.autoscaler
        self.status = status
        self._statusPort: Any = None
        self._signals = signalsFor(reactor)
        self.acceptBatch = acceptBatch
        self.starter: IWorkerStarter = (
            ForkServerStarter(reactor, self._listenFDs, descriptions=self.descriptions)
            if forkServer
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
            if self.status is not None and self._statusPort is None:
                self._statusPort = self._listenStatus(self.status)
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
        served = self.factory or self.protocol
        if served is None:
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
            grace=self.grace,
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
        config = WorkerConfig(
            number=number,
            masterPid=os.getpid(),
            protocol=self.protocol,
            factory=self.factory,
            families=[listener.spec.family for listener in self.listeners],
            listen=self.descriptions,
            tls=[listener.spec.tls is not None for listener in self.listeners],
            proxyProtocol=self.proxyProtocol,
            allowance=self._allowance(),
            replaceAt=self.replaceAt,
            maxOpen=self.maxConcurrent,
            acceptBatch=self.acceptBatch,
            standby=standby,
            workerInit=self.workerInit,
            grace=self.grace,
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
        if not self.maxConnectionsPerWorker:
            return 0
        return self.maxConnectionsPerWorker + random.randint(
            0, self.maxConnectionsJitter
        )

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
