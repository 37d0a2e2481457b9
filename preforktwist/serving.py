"""
One worker's life, from adopting the listening sockets to its last open
connection: the logic behind L{preforktwist.worker}, kept apart from the
program's start-up so it reads as one story.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from preforktwist.accepting import AcceptBudget, adoptListener
from preforktwist.control import (
    BootFailed,
    ControlChannel,
    Counts,
    Ready,
    ReplaceMe,
    Retire,
    Stop,
    WorkerConfig,
)
from preforktwist.loading import FactoryError, loadFactory

#: Exit status of a worker that could not start serving.
EXIT_BOOT_FAILURE = 3
#: Exit status of a worker whose grace period ran out with connections open.
EXIT_GRACE_EXPIRED = 4


class _WorkerControl(ControlChannel):
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

    @Stop.responder
    def stop(self) -> dict[str, Any]:
        self.worker.finish("told to stop", drain=True)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.worker.controlLost()


class Worker:
    """
    A worker: serves its share of the listening sockets until told to stop,
    until its allowance is used, or until its master is gone.

    @ivar exitStatus: the status the process exits with.
    """

    log = Logger()

    def __init__(self, config: WorkerConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.exitStatus = 0
        self.budget = AcceptBudget(
            allowance=config.allowance,
            maxOpen=config.maxOpen,
            onExhausted=self._allowanceUsed,
            onIdle=self._idle,
        )
        self.control: _WorkerControl | None = None
        self.finishing = False
        self._counts = LoopingCall(self._sendCounts)
        self._deadline: Any = None

    def start(self, controlFD: int, firstListenFD: int) -> None:
        """
        Connect the control channel, build the factory, adopt the sockets,
        and tell the master we are ready.
        """
        control = self.control = _WorkerControl(self)
        os.set_blocking(controlFD, False)
        self.reactor.adoptStreamConnection(
            controlFD, socket.AF_UNIX, Factory.forProtocol(lambda: control)
        )
        os.close(controlFD)
        try:
            factory = loadFactory(self.config.protocol, self.config.factory)
        except FactoryError as e:
            for offset in range(len(self.config.families)):
                os.close(firstListenFD + offset)
            self._bootFailed(str(e))
            return
        for offset, family in enumerate(self.config.families):
            fd = firstListenFD + offset
            adoptListener(self.reactor, fd, family, factory, self.budget)
            os.close(fd)
        self._call(Ready, pid=os.getpid())
        self._counts.start(self.config.countsInterval, now=False)

    def _bootFailed(self, reason: str) -> None:
        self.log.error("cannot start: {reason}", reason=reason)
        self.exitStatus = EXIT_BOOT_FAILURE
        self.finishing = True
        d = self._call(BootFailed, reason=reason)
        d.addBoth(lambda _: self._exit())

    def _call(self, command: type[amp.Command], **kwargs: Any) -> Any:
        """
        Send a command to the master; a master that is gone is not an error
        here: L{controlLost} deals with that.
        """
        assert self.control is not None
        d = self.control.callRemote(command, **kwargs)  # type: ignore[no-untyped-call]
        d.addErrback(lambda f: None)
        return d

    def _sendCounts(self) -> None:
        b = self.budget
        self._call(Counts, accepted=b.accepted, open=b.open, served=b.served)

    def _allowanceUsed(self) -> None:
        self.log.info(
            "served its allowance of {n} connections; asking for a replacement",
            n=self.budget.allowance,
        )
        self._call(ReplaceMe, accepted=self.budget.accepted, open=self.budget.open)
        self.finish("allowance used", drain=False)

    def signalled(self, signum: int) -> None:
        """
        SIGTERM or SIGINT reached this worker: retire gracefully, and let
        the master start a replacement at once.
        """
        if self.finishing:
            return
        name = signal.Signals(signum).name
        self._call(ReplaceMe, accepted=self.budget.accepted, open=self.budget.open)
        self.finish(f"received {name}", drain=False)

    def controlLost(self) -> None:
        if self.finishing and self.budget.open == 0:
            self._stopReactor()
            return
        self.finish("lost its master", drain=True)

    def finish(self, why: str, drain: bool) -> None:
        """
        Accept nothing more, then exit once the open connections are done,
        or when the grace period ends, whichever comes first.
        """
        if self.finishing:
            return
        self.finishing = True
        self.budget.close(drain=drain)
        if self._counts.running:
            self._counts.stop()
        self._sendCounts()
        self.log.info(
            "{why}: stopped accepting after {accepted} connections; "
            "finishing {open} open",
            why=why,
            accepted=self.budget.accepted,
            open=self.budget.open,
        )
        if self.budget.open == 0:
            self._exit()
        else:
            self._deadline = self.reactor.callLater(self.config.grace, self._graceOver)

    def _idle(self) -> None:
        if self.finishing:
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
        """
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        transport: Any = self.control and self.control.transport
        if transport and transport.connected and not transport.disconnecting:
            transport.loseConnection()
        else:
            self._stopReactor()

    def _stopReactor(self) -> None:
        if IReactorCore.providedBy(self.reactor) and self.reactor.running:
            self.reactor.stop()
