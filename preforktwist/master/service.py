"""
L{PreforkService}: the pre-forking server as an ordinary Twisted service.

It is a C{MultiService} that only wires its children, each a small service
with one job, started in this order: the listening sockets, the systemd
notifier, the user's hooks (if any), what serves (the workers, and the
memory/age limits and the adaptive size acting on them), the scoreboard,
the saturation watch, the orphan reaper (as PID 1 only) and the status
endpoint.  Its own code decides only what Twisted cannot: the two-step
stop, a new worker's configuration, and giving up.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred

from preforktwist.common.endpoints import parseListen
from preforktwist.common.fdlimit import raiseFileLimit
from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import preforkReactor
from preforktwist.common.titles import setTitle
from preforktwist.master.control.server import controlService
from preforktwist.master.events import PoolEvent, WorkersChanged
from preforktwist.master.exitstatus import exitWithStatusAtInterpreterExit
from preforktwist.master.handle import WorkerProcess
from preforktwist.master.hooks import (
    HookService,
    IPoolObserver,
    checkObserver,
    loadObserver,
)
from preforktwist.master.listeners import ListeningSockets
from preforktwist.master.policy.autoscale import Autoscaler, PoolSampler
from preforktwist.master.policy.limits import WorkerLimits
from preforktwist.master.pool import Pool, PoolConfig
from preforktwist.master.reaper import OrphanReaper, runningAsInit
from preforktwist.master.signals import signalsFor
from preforktwist.master.starters import (
    FORK_SERVER_RESTART_INTERVAL,
    ForkServerStarter,
    FreshInterpreterStarter,
    IWorkerStarter,
)
from preforktwist.master.status.saturation import SaturationWatch
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.systemd import SystemdService
from preforktwist.master.upgrade.handoff import inherited
from preforktwist.master.upgrade.part import ServicePart
from preforktwist.master.upgrade.upgrader import upgraderFor
from preforktwist.master.workers import WorkersService
from preforktwist.protocol import loadboard
from preforktwist.protocol.config import DEFAULT_PROTOCOL
from preforktwist.protocol.loadboard import LoadBoard
from preforktwist.settings import Settings, preloadNames, workerConfig

if TYPE_CHECKING:
    # Imported when used: a master without --status never loads twisted.web.
    from preforktwist.master.status.web import StatusListener

#: Slots on the load board: workers alive at once, retiring ones included.
LOAD_BOARD_SLOTS = 4096


class PreforkService(MultiService):
    """
    A pool of worker processes, each running its own reactor, all accepting
    on listening sockets that this service binds and holds.

    Put it in a C{MultiService} beside any other service.  The sockets are
    bound in L{privilegedStartService}, so C{twistd --uid/--gid} can bind a
    low port as root while the workers run unprivileged.  L{stopService}
    returns a L{Deferred<twisted.internet.defer.Deferred>} that fires when
    every worker has finished its open connections and exited.

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
        reactor: object | None = None,
        starter: IWorkerStarter | None = None,
        observers: Sequence[IPoolObserver] = (),
        setExitStatus: Callable[[int], None] = exitWithStatusAtInterpreterExit,
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
        @param starter: how workers are started; default a fork server, or
            fresh interpreters with C{forkServer=False}.
        @param observers: told of the pool's events, besides the one
            C{hooks} names (see L{preforktwist.master.hooks}).
        @param setExitStatus: called with the process's exit status when the
            server gives up; default at the interpreter's exit.
        @raise ValueError: for a value that cannot work, with the message
            C{--option: reason}, as on the command line.
        @raise TypeError: an observer does not provide L{IPoolObserver}.
        """
        MultiService.__init__(self)
        self.settings = settings = _settings(listen, settings, keywords)
        self.reactor = reactor = preforkReactor(reactor)
        self._setExitStatus = setExitStatus
        #: What an old master handed over, if a hot upgrade started this one.
        self.inheritance = inherited()
        self.listeners = ListeningSockets(
            [parseListen(d, settings.backlog) for d in settings.listen],
            self.inheritance,
        )
        #: Where the workers publish their open connections, to balance
        #: them (made as the service starts; see L{loadboard}).
        self.loadBoard: LoadBoard | None = None
        #: Each live worker's slot on it, by worker number.
        self._loadSlots: dict[int, int] = {}
        self.starter = starter if starter is not None else self._defaultStarter()
        self.pool = Pool(
            self._spawnWorker,
            poolConfig(settings),
            reactor,
            giveUp=self._giveUp,
            renew=self.starter.renew,
        )
        self.pool.observers.append(self._sweepLoadBoard)
        self.hooks = HookService(self.pool, self._observers(observers), reactor)
        self.scoreboard = Scoreboard(self.pool, self.listeners.listeners, reactor)
        self.limits = self._limits()
        self.autoscaler = self._autoscaler()
        self.scoreboard.autoscaler = self.autoscaler
        self.saturation = SaturationWatch(self.pool, self.listeners.listeners, reactor)
        self.statusListener = self._statusListener()
        self._signals = signalsFor(reactor)
        self._upgrades = upgraderFor(
            reactor, self._signals.stopGracefully, self.inheritance
        )
        self._signals.upgrade = self._upgrades.fromSignal
        # A new master (a hot upgrade started it) tells systemd nothing
        # until it takes over.
        successor = self.inheritance.predecessor is not None
        self.systemd = SystemdService(self.pool, muted=successor)
        self.control = controlService(
            settings.control, reactor, self, self._cannotRun, self.inheritance
        )
        #: What this service hands over at a hot upgrade, or takes over.
        self.upgradePart = ServicePart(
            settings,
            self.pool,
            self.listeners,
            self.systemd,
            self.statusListener,
            self.control,
            lambda: bool(self.running),
        )
        self.serving = MultiService()
        self._adoptChildren()

    def _defaultStarter(self) -> IWorkerStarter:
        settings = self.settings
        if not settings.forkServer:
            return FreshInterpreterStarter(self.reactor, self._inheritedFDs)
        return ForkServerStarter(
            self.reactor,
            self._inheritedFDs,
            descriptions=self.descriptions,
            preload=preloadNames(settings) if settings.preload else (),
            readyTimeout=settings.bootTimeout,
        )

    def _observers(self, given: Sequence[IPoolObserver]) -> list[IPoolObserver]:
        observers = [checkObserver(each) for each in given]
        if self.settings.hooks is not None:
            observers.append(loadObserver(self.settings.hooks))
        return observers

    def _limits(self) -> WorkerLimits:
        settings = self.settings
        assert settings.maxWorkerAgeJitter is not None
        return WorkerLimits(
            self.pool,
            self.reactor,
            maxMemory=settings.maxWorkerMemory,
            maxAge=settings.maxWorkerAge,
            ageJitter=settings.maxWorkerAgeJitter,
            minLifetime=settings.minWorkerLifetime,
        )

    def _autoscaler(self) -> Autoscaler | None:
        settings = self.settings
        if settings.minWorkers is None or settings.maxWorkers is None:
            return None
        return Autoscaler(
            self.pool,
            self.reactor,
            PoolSampler(self.pool, self.listeners.listeners, self.reactor),
            settings.minWorkers,
            settings.maxWorkers,
            upAfter=settings.scaleUpAfter,
            downAfter=settings.scaleDownAfter,
            cooldown=settings.scaleCooldown,
        )

    def _statusListener(self) -> StatusListener | None:
        if self.settings.status is None:
            return None
        from preforktwist.master.status.web import StatusListener, statusSite

        return StatusListener(
            self.reactor,
            self.settings.status,
            statusSite(self.scoreboard),
            self.inheritance,
        )

    def _adoptChildren(self) -> None:
        """
        The children, in the order they start (see L{stopService} for how
        they stop).
        """
        _adopt(self, self.listeners)
        _adopt(self, self.systemd)
        if self.hooks.observers:
            # Before what serves, to hear its first start and its last exit.
            _adopt(self, self.hooks)
        # What serves, and the policies that act on it: stopped first, while
        # everything that watches the pool still runs.
        _adopt(self.serving, WorkersService(self.pool, self.starter))
        if self.limits.active:
            _adopt(self.serving, self.limits)
        if self.autoscaler is not None:
            _adopt(self.serving, self.autoscaler)
        _adopt(self, self.serving)
        _adopt(self, self.scoreboard)
        _adopt(self, self.saturation)
        if runningAsInit():
            # In a container: every orphan is ours to reap.
            _adopt(self, OrphanReaper())
        if self.statusListener is not None:
            _adopt(self, self.statusListener)
        if self.control is not None:
            _adopt(self, self.control)

    @property
    def descriptions(self) -> list[str]:
        return self.listeners.descriptions

    def bindListeners(self) -> None:
        """
        Bind every socket this server listens on, the status endpoint's
        too, if not bound yet.  C{twistd preforked} calls this early, to
        report a port in use as one line before anything starts.

        @raise preforktwist.common.endpoints.ListenError: with a one-line
            reason; nothing is left bound.
        """
        try:
            self.listeners.bind()
            if self.statusListener is not None:
                self.statusListener.bind()
            if self.control is not None:
                self.control.checkFree()
        except Exception:
            self.listeners.close()
            raise

    def closeListeners(self) -> None:
        """
        Close the listening sockets: once the workers have drained them, or
        when the service could not start.
        """
        self.listeners.close()

    # Service.

    def privilegedStartService(self) -> None:
        """
        Bind every socket (the children do) while twistd may still be root:
        C{twistd --uid/--gid} can serve a low port with unprivileged workers.
        """
        MultiService.privilegedStartService(self)

    def startService(self) -> None:
        if self.settings.factory is None and self.settings.protocol is None:
            self.log.info(
                "no --protocol or --factory given: serving the bundled "
                "example {example}",
                example=DEFAULT_PROTOCOL,
            )
        # The master holds two descriptors per worker and one per listening
        # socket; its children start with its limit, and each worker raises
        # its own anyway (one forked by the fork server has the fork
        # server's).
        self.log.info("master: {limit}", limit=raiseFileLimit().describe())
        setTitle(
            f"preforktwist master {' '.join(self.descriptions)} "
            f"({self.pool.size} workers)"
        )
        self._signals.add(self)
        if loadboard.available() and self.loadBoard is None:
            self.loadBoard = LoadBoard.create(LOAD_BOARD_SLOTS)
        MultiService.startService(self)
        # Every socket is bound by now: what the new code no longer serves
        # is closed.
        self.reactor.callWhenRunning(self.inheritance.closeUnclaimed)
        self._upgrades.add(self.upgradePart)

    def stopService(self) -> Deferred[None]:
        """
        Stop in two steps.  First what serves: new clients are refused, the
        policies stop, the workers accept what is queued, finish and exit;
        the sockets close as soon as the queue is drained.  Then, once every
        worker has exited, the rest in reverse order of starting: the status
        page and C{/readyz} answer (503) until then.
        """
        Service.stopService(self)
        self._upgrades.remove(self.upgradePart)
        if self.listeners.shared:
            # Another master's workers serve the queue.
            self.pool.leaveQueue()
        self.log.info(
            "stopping: {n} workers finish their connections (grace {grace:g}s)",
            n=len(self.pool.workers),
            grace=self.settings.grace,
        )
        self.listeners.refuseNew()
        self.pool.whenDrained().addCallback(lambda _: self.listeners.closeDrained())
        d: Deferred[Any] = self.serving.stopService()
        d.addCallback(self._stopTheRest)
        return d

    def _stopTheRest(self, _: object) -> Deferred[Any]:
        self._signals.remove(self)
        self.log.info("all workers have exited")
        if self.loadBoard is not None:
            self.loadBoard.close()
            self.loadBoard = None
            self._loadSlots.clear()
        rest = [
            child
            for child in reversed(list(self))
            if child is not self.serving and child.running
        ]
        return gatherResults(
            [maybeDeferred(child.stopService) for child in rest], consumeErrors=True
        ).addCallback(lambda _: None)

    # Workers.

    def _inheritedFDs(self) -> list[int]:
        """
        What every worker inherits, in order from C{FIRST_LISTEN_FD}: the
        listening sockets, then the load board.
        """
        fds = list(self.listeners.fds())
        if self.loadBoard is not None and self.loadBoard.fd is not None:
            fds.append(self.loadBoard.fd)
        return fds

    def _allotLoadSlot(self, number: int) -> int | None:
        """
        A slot on the load board for the new worker C{number}, or C{None}
        if there is no board or no free slot (that worker then accepts
        without weighing its siblings).
        """
        if self.loadBoard is None:
            return None
        self._sweepLoadBoard()
        try:
            slot = self.loadBoard.allot(set(self._loadSlots.values()))
        except ValueError:
            return None
        self._loadSlots[number] = slot
        return slot

    def _sweepLoadBoard(self, event: PoolEvent | None = None) -> None:
        """
        Free the slots of workers that are gone: one killed or crashed
        could not say that it accepts no more.  Done as a worker is
        started, and as the workers change (C{event}).
        """
        if self.loadBoard is None:
            return
        if event is not None and not isinstance(event, WorkersChanged):
            return
        for number, slot in list(self._loadSlots.items()):
            if number not in self.pool.workers:
                self.loadBoard.clear(slot)
                del self._loadSlots[number]

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
            countsInterval=min(1.0, (self.settings.heartbeatTimeout or 4.0) / 4),
            loadSlot=self._allotLoadSlot(number),
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

    def _allowance(self) -> int:
        """
        A new worker's allowance: C{-m} plus a random share of the jitter,
        drawn per worker so that workers do not all retire together.
        """
        perWorker = self.settings.maxConnectionsPerWorker
        if not perWorker:
            return 0
        return perWorker + random.randint(0, self.settings.maxConnectionsJitter)

    def _cannotRun(self, reason: str) -> None:
        """
        Something asked for cannot be had (the control socket): say so in
        one line and stop, exiting non-zero.
        """
        self.log.error("{reason}", reason=reason)
        self._giveUp(reason)

    def _giveUp(self, reason: str) -> None:
        """
        No worker can serve: stop the application, and make the process
        exit non-zero once the reactor has stopped and twistd has cleaned
        up after itself.
        """
        self._setExitStatus(1)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    # What signals do (see L{preforktwist.master.signals}).

    def reload(self) -> None:
        """
        Replace every worker, new ones first, so that the code on disk is
        imported anew (what C{SIGHUP} does).
        """
        # The pool renews the starter as a reload begins, and coalesces a
        # reload asked for while one is under way.
        if self._upgrades.underWay:
            self.log.warn("reload refused: an upgrade is under way")
            return
        self.pool.reload()

    def grow(self) -> None:
        """
        Keep one worker more (what C{SIGTTIN} does).
        """
        self.pool.resize(self.pool.size + 1)

    def shrink(self) -> None:
        """
        Keep one worker fewer, never below one; the one removed retires
        gracefully (what C{SIGTTOU} does).
        """
        self.pool.resize(self.pool.size - 1)

    def stopNow(self) -> None:
        """
        Kill every worker at once, without waiting for their connections
        (what a second C{SIGTERM} does).
        """
        self.pool.stopNow()

    # What the control socket asks (see L{preforktwist.master.control}).

    def refusesReload(self) -> str | None:
        if not self.running or self.pool.stopping:
            return "the server is stopping"
        if self._upgrades.underWay:
            return "an upgrade is under way"
        return None

    def upgrade(self) -> Deferred[int]:
        return self._upgrades.upgrade()

    def stopGracefully(self) -> None:
        self._signals.stopGracefully()


def _settings(
    listen: str | Sequence[str] | None,
    settings: Settings | None,
    keywords: dict[str, Any],
) -> Settings:
    """
    The settings given whole, or one by one (C{listen} possibly first).
    """
    if listen is not None:
        keywords["listen"] = listen
    if settings is None:
        return Settings(**keywords)
    if keywords:
        raise TypeError("give settings= or keywords, not both")
    return settings


def poolConfig(settings: Settings) -> PoolConfig:
    """
    The pool's configuration from the server's settings.
    """
    assert settings.workers is not None and settings.standby is not None
    return PoolConfig(
        size=settings.workers,
        grace=settings.grace + 1.0,  # the worker's own deadline comes first
        bootTimeout=settings.bootTimeout,
        surplus=settings.reloadBatch,
        standby=settings.standby,
        heartbeatTimeout=settings.heartbeatTimeout,
        # A fork server per reload at most every so often; fresh
        # interpreters read everything anew each time anyway.
        renewInterval=FORK_SERVER_RESTART_INTERVAL if settings.forkServer else 0.0,
    )


def _adopt(parent: MultiService, child: IService) -> None:
    """
    Make C{child} a child of C{parent}: started after the children before
    it, stopped before them.
    """
    child.setServiceParent(parent)
