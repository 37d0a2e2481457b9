"""
One worker's life, from adopting the listening sockets to its last open
connection: the logic behind L{preforktwist.worker.main}, kept apart from the
program's start-up so it reads as one story.
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocolFactory, IReactorCore
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols import amp
from twisted.python.failure import Failure

from preforktwist.common.logs import NamedLogger
from preforktwist.common.reactors import IPreforkReactor
from preforktwist.common.streams import adoptStream
from preforktwist.common.titles import setTitle, workerTitle
from preforktwist.protocol.config import WorkerConfig
from preforktwist.protocol.control import (
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
from preforktwist.protocol.loadboard import LoadBoard
from preforktwist.worker.budget import AcceptBudget
from preforktwist.worker.loading import FactoryError, loadFactory, loadWorkerInit
from preforktwist.worker.ports import adoptListener
from preforktwist.worker.proxied import ProxyHeaderFactory
from preforktwist.worker.retiring import Retirement

#: Exit status of a worker that could not start serving.
EXIT_BOOT_FAILURE = 3
#: Exit status of a worker whose grace period ran out with connections open.
EXIT_GRACE_EXPIRED = 4


class WorkerControl(ControlChannel):
    """
    The worker's end of the control channel.
    """

    def __init__(self, worker: Worker) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.worker = worker

    @Retire.responder
    def retire(self) -> dict[str, Any]:
        self.worker.finish("told to retire", drain=False)
        return {}

    @Activate.responder
    def activate(self) -> dict[str, Any]:
        self.worker.budget.release()
        self.worker.updateTitle()
        return {}

    @Stop.responder
    def stop(self) -> Deferred[dict[str, Any]]:
        # Answered once this worker has drained the queue and closed its
        # copies of the listening sockets.
        answer: Deferred[dict[str, Any]] = Deferred()

        def closed(result: None) -> None:
            answer.callback({})

        self.worker.finish("told to stop", drain=True).addCallback(closed)
        return answer

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.worker.controlLost()


class Worker:
    """
    A worker: serves its share of the listening sockets until told to stop,
    until its allowance is used, or until its master is gone.

    @ivar exitStatus: the status the process exits with.
    """

    log = NamedLogger("preforktwist.serving.Worker")

    def __init__(self, config: WorkerConfig, reactor: IPreforkReactor) -> None:
        self.config = config
        self.reactor = reactor
        self.exitStatus = 0
        self.budget = AcceptBudget(
            allowance=config.allowance,
            # For auto, set from the open-file limit by worker.main before
            # the reactor runs.
            maxConcurrent=config.maxConcurrent or 0,
            onExhausted=self._allowanceUsed,
            onIdle=self._idle,
            onAccepted=self._accepted,
        )
        self.budget.batch = config.acceptBatch
        self.budget.held = config.standby
        self.budget.firstByteTimeout = config.firstByteTimeout
        self.control: WorkerControl | None = None
        #: Tells the application when this worker stops accepting; set once
        #: its factory is built.
        self.retirement: Retirement | None = None
        self.finishing = False
        self._nearAllowanceSent = False
        # Ask for the replacement at this count: before the last connection
        # even for small allowances, never before the first.
        allowance = config.allowance
        self._replaceAtCount = max(
            1, min(math.ceil(allowance * config.replaceAt), allowance - 1)
        )
        self._counts = LoopingCall(self._sendCounts)
        self._deadline: Any = None
        self._closed: Deferred[None] | None = None
        self._exiting = False
        self._title = ""
        #: The figures last sent to the master (L{_sendCounts}).
        self._sentCounts: tuple[int, int, int, int] | None = None

    # Starting.

    def start(self, controlFD: int, firstListenFD: int) -> Deferred[None]:
        """
        Connect the control channel, build the factory, run the worker-init
        hook, adopt the sockets, and tell the master we are ready.  Anything
        that fails on the way is a boot failure, reported to the master.
        """
        control = self.control = WorkerControl(self)
        adoptStream(self.reactor, controlFD, control)
        # Heartbeats start now: a worker-init that hangs is the boot
        # timeout's business, a reactor that stops turning is the
        # heartbeat's.
        self._counts.start(self.config.countsInterval, now=False)
        fds = [firstListenFD + i for i in range(len(self.config.families))]
        if self.config.loadSlot is not None:
            # The load board comes after the listening sockets.
            board = LoadBoard.attach(firstListenFD + len(fds))
            self.budget.shareLoad(board, self.config.loadSlot)
        d = self._boot(fds)
        d.addErrback(self._bootFailed, fds)
        return d

    @inlineCallbacks
    def _boot(self, fds: list[int]) -> Any:
        factory: IProtocolFactory = loadFactory(
            self.config.protocol, self.config.factory
        )
        self.retirement = Retirement(factory, self.budget.connections, self.reactor)
        if self.config.workerInit is not None:
            init = loadWorkerInit(self.config.workerInit)
            yield maybeDeferred(init)
        if self.finishing:
            # Told to stop while starting: there is nothing to drain.
            self._closeFDs(fds)
            self._exit()
            return
        for index, (fd, family) in enumerate(
            zip(fds, self.config.families, strict=True)
        ):
            wrapped = self._wrap(index, factory)
            adoptListener(
                self.reactor,
                fd,
                family,
                wrapped,
                self.budget,
                wakeup=self.config.acceptWakeup,
                reorder=self.config.acceptReorder,
            )
        self._closeFDs(fds)
        self._call(Ready, pid=os.getpid(), maxConcurrent=self.budget.maxConcurrent)

    def _wrap(self, index: int, factory: IProtocolFactory) -> IProtocolFactory:
        """
        The factory one listening socket serves: TLS for an C{ssl:}
        endpoint, inside the PROXY header's parser if there is one (HAProxy
        sends the header in clear, before the TLS handshake).
        """
        config = self.config
        if config.tls and config.tls[index]:
            # Only here: TLS needs pyOpenSSL, an optional extra, and the
            # endpoint parser is big.
            from twisted.protocols.tls import TLSMemoryBIOFactory

            from preforktwist.common.endpoints import parseListen

            try:
                spec = parseListen(config.listen[index])
            except Exception as e:
                raise FactoryError(f"--listen {config.listen[index]}: {e}") from None
            factory = TLSMemoryBIOFactory(spec.tls, False, factory)
        if config.proxyProtocol:
            factory = ProxyHeaderFactory(factory)
        return factory

    @staticmethod
    def _closeFDs(fds: list[int]) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _bootFailed(self, failure: Failure, fds: list[int]) -> None:
        self._closeFDs(fds)
        if failure.check(FactoryError):
            reason = str(failure.value)
        else:
            reason = f"--worker-init {self.config.workerInit}: raised " + (
                f"{failure.type.__name__}: {failure.value}"  # type: ignore[union-attr]
            )
            self.log.failure("worker-init failed", failure)
        self.log.error("cannot start: {reason}", reason=reason)
        self.exitStatus = EXIT_BOOT_FAILURE
        self.finishing = True
        d = self._call(BootFailed, reason=reason)
        d.addBoth(lambda _: self._exit())

    # Talking to the master.

    def _call(self, command: type[amp.Command], **kwargs: Any) -> Any:
        """
        Send a command to the master; a master that is gone is not an error
        here: L{controlLost} deals with that.
        """
        assert self.control is not None
        d = self.control.callRemote(command, **kwargs)
        if d is not None:  # None: a command not answered (L{Counts})
            d.addErrback(self._callFailed, command)
        return d

    def _callFailed(self, failure: Failure, command: type[amp.Command]) -> None:
        """
        A command to the master failed: expected if the channel closed
        (the master is gone, which L{controlLost} handles), logged if not.
        """
        if not failure.check(ConnectionDone, ConnectionLost):
            self.log.failure(
                "the master did not take {command}", failure, command=command.__name__
            )

    def _figures(self) -> tuple[int, int, int, int]:
        b = self.budget
        return (b.accepted, b.open, b.served, b.firstByteTimeouts)

    def _sendCounts(self) -> None:
        accepted, open, served, firstByteTimeouts = self._sentCounts = self._figures()
        self._call(
            Counts,
            accepted=accepted,
            open=open,
            served=served,
            firstByteTimeouts=firstByteTimeouts,
        )
        self.updateTitle()

    def updateTitle(self) -> None:
        """
        Show this worker's count in C{ps}; called with each heartbeat, so
        the title costs nothing per connection.
        """
        b = self.budget
        config = self.config
        title = workerTitle(
            config.number, config.listen, b.accepted, b.allowance, b.held
        )
        if title != self._title:
            self._title = title
            setTitle(title)

    def _accepted(self) -> None:
        if self.retirement is not None and self.retirement.begun:
            # Taken from the queue by a stopping worker: told at once.
            self.retirement.tellFresh()
            return
        b = self.budget
        if (
            b.allowance > 1
            and self.config.replaceAt < 1
            and not self._nearAllowanceSent
            and self._replaceAtCount <= b.accepted < b.allowance
        ):
            self._nearAllowanceSent = True
            self._call(NearAllowance)

    def _replaceMe(self, cause: ReplaceCause) -> None:
        b = self.budget
        self._call(ReplaceMe, accepted=b.accepted, open=b.open, cause=cause)

    # Finishing.

    def _allowanceUsed(self) -> None:
        self.log.info(
            "served its allowance of {n} connections; asking for a replacement",
            n=self.budget.allowance,
        )
        self._replaceMe(ReplaceCause.ALLOWANCE)
        self.finish("allowance used", drain=False)

    def signalled(self, signum: int) -> None:
        """
        SIGTERM or SIGINT reached this worker: retire gracefully, and let
        the master start a replacement at once.
        """
        if self.finishing:
            return
        self._replaceMe(ReplaceCause.SIGNAL)
        self.finish(f"received {signal.Signals(signum).name}", drain=False)

    def controlLost(self) -> None:
        if self.finishing and self.budget.open == 0:
            self._stopReactor()
            return
        self.finish("lost its master", drain=True)

    def finish(self, why: str, drain: bool) -> Deferred[None]:
        """
        Accept nothing more (after draining the queue, with C{drain}),
        tell the application (L{preforktwist.interfaces.IRetiring};
        twisted.web's keep-alive connections are closed once idle), then
        exit once the open connections are done, or when the grace period
        ends, whichever comes first.  Heartbeats go on meanwhile: a worker
        finishing long connections is not stuck.

        @return: fires once the listening sockets are closed.
        """
        if self._closed is not None:
            return self._closed if drain else succeed(None)
        self.finishing = True
        self._deadline = self.reactor.callLater(self.config.grace, self._graceOver)
        if drain:
            # The drain may take a while: say so now, and again once done.
            self.log.info(
                "{why}: accepting what is queued, then no more; "
                "{open} connections open",
                why=why,
                open=self.budget.open,
            )
        closed = self._closed = self.budget.close(drain=drain)
        # Without a drain the sockets close on the reactor's next turn: one
        # line then says why and how it ends, instead of two (every
        # replacement's retiring worker wrote both).
        closed.addCallback(self._portsClosed, None if drain else why)
        if self.retirement is not None:
            # After the close: what a protocol closes now cannot make room
            # for another accept, except in a stop's drain, whose accepts
            # are told too.
            self.retirement.begin()
        if not self._exiting:
            # Exiting already (nothing was open): the final figures went.
            self._sendCounts()
        self._idle()
        return closed

    def _portsClosed(self, result: None, why: str | None) -> None:
        self.log.info(
            "{why}stopped accepting after {accepted} connections; "
            "finishing {open} open",
            why="" if why is None else why + ": ",
            accepted=self.budget.accepted,
            open=self.budget.open,
        )
        self._idle()

    def _idle(self) -> None:
        if self.finishing and self.budget.open == 0 and not self.budget.ports:
            self._exit()

    def _graceOver(self) -> None:
        self.log.warn(
            "grace period of {grace}s over: closing {open} open connections",
            grace=self.config.grace,
            open=self.budget.open,
        )
        self.exitStatus = EXIT_GRACE_EXPIRED
        self._deadline = None
        self._stopReactor()

    def _exit(self) -> None:
        """
        Close the control channel (which flushes what is still to be sent),
        then stop the reactor from its C{connectionLost}.

        Only once: L{_idle} runs again after the close has begun (the ports'
        close fires inside L{finish}, which then checks for idleness itself),
        and stopping the reactor then would disconnect the channel without
        flushing it, losing this worker's C{ReplaceMe}: the master would take
        the exit for a crash, start the replacement only after it, and,
        within C{minUptime} of the worker's start, back off.
        """
        if self._exiting:
            return
        self._exiting = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if self._counts.running:
            self._counts.stop()
        if self.control is not None and self._sentCounts != self._figures():
            # The final figures, flushed before the close; not again if
            # the master has them (L{finish} sent them a turn ago): each
            # message is work for both ends, in every replacement.
            self._sendCounts()
        transport: Any = self.control and self.control.transport
        if transport and transport.connected and not transport.disconnecting:
            transport.loseConnection()
        else:
            self._stopReactor()

    def _stopReactor(self) -> None:
        if IReactorCore.providedBy(self.reactor) and self.reactor.running:
            self.reactor.stop()
