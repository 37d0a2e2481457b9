"""
What a worker is told when it starts: its configuration, as one JSON
argument on its command line (or one line to the fork server).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

#: What is served when neither C{--protocol} nor C{--factory} is given.
DEFAULT_PROTOCOL = "preforktwist.examples.Echo"

#: How a worker may wait on the shared sockets (C{--accept-wakeup}), the
#: default first: C{"exclusive"}, one worker woken per connection (epoll's
#: C{EPOLLEXCLUSIVE}, on the epoll reactor), or C{"plain"}, Twisted's own
#: registration, which wakes every idle worker.
ACCEPT_WAKEUPS = ("exclusive", "plain")

#: Accepts after which an exclusive registration is re-added
#: (C{--accept-reorder}): nginx's figure.
DEFAULT_ACCEPT_REORDER = 16


@dataclass(frozen=True)
class WorkerConfig:
    """
    Everything a worker is told at spawn, passed as one JSON argument.

    The master builds it from its settings (L{preforktwist.settings.
    workerConfig}): a field named like a setting carries that setting, and
    its default is the setting's; so no field has a default of its own.

    @ivar number: the worker's serial number, unique in this master's life.
    @ivar masterPid: the master's pid, to notice a master that died while
        the worker was starting.
    @ivar protocol: dotted name of a C{Protocol} subclass, or C{None}.
    @ivar factory: dotted name of a factory or factory callable, or C{None}.
    @ivar families: the address family of each listening socket, in fd order
        from L{FIRST_LISTEN_FD}.
    @ivar listen: the endpoint descriptions, for the process title and logs.
    @ivar tls: for each listening socket, whether it is an C{ssl:} one: the
        worker then builds the TLS context from its description.
    @ivar proxyProtocol: every connection starts with a PROXY header.
    @ivar allowance: connections to accept before retiring; 0 for never.
        This worker's own number, drawn by the master: C{-m} plus a random
        0 to C{--max-connections-jitter}, so that workers do not all retire
        together.
    @ivar replaceAt: the share of the allowance after which to ask for the
        replacement ahead of time; 1 to ask only when it is used up.
    @ivar maxConcurrent: connections to hold open at once; 0 for no cap;
        C{None} for what the worker's open-file limit allows.
    @ivar firstByteTimeout: seconds a connection may stay silent after it
        is accepted before it is closed; 0 for never.
    @ivar acceptBatch: connections to accept per wake-up at most; 0 for
        Twisted's own adaptive batch.
    @ivar acceptWakeup: one of L{ACCEPT_WAKEUPS}.
    @ivar acceptReorder: accepts after which an exclusive registration is
        re-added; 0 for never.
    @ivar standby: boot, then accept nothing until told L{Activate}.
    @ivar grace: seconds to finish open connections once told to stop.
    @ivar reactor: module of the master's reactor, to install the same one.
    @ivar countsInterval: seconds between L{Counts} reports.
    @ivar workerInit: dotted name of a callable to run before accepting.
    @ivar loadSlot: this worker's slot on the master's load board, whose
        descriptor follows the listening sockets; C{None} when the master
        keeps none (not Linux).
    """

    number: int
    masterPid: int
    protocol: str | None
    factory: str | None
    families: list[int]
    listen: list[str]
    tls: list[bool]
    proxyProtocol: bool
    allowance: int
    replaceAt: float
    maxConcurrent: int | None
    firstByteTimeout: float
    acceptBatch: int
    acceptWakeup: str
    acceptReorder: int
    standby: bool
    grace: float
    reactor: str
    countsInterval: float
    workerInit: str | None
    loadSlot: int | None

    def toJSON(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def fromJSON(cls, text: str) -> WorkerConfig:
        return cls(**json.loads(text))
