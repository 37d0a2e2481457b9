"""
The words the pool uses for what happens to it: why a worker was replaced
(L{RestartCause}) and what its observers hear (L{PoolEvent}).

Each is spelled once, here.  A restart cause's value is its external
spelling: the key in the status JSON's C{restarts}, the C{cause} label of
C{preforktwist_worker_restarts_total}, and the word in the log.  The
causes a worker sends over its control channel are part of the contract
(L{preforktwist.protocol.control.ReplaceCause}) and have the same values.
"""

from __future__ import annotations

import enum

from preforktwist.protocol.control import ReplaceCause


class RestartCause(str, enum.Enum):
    """
    Why a worker was replaced, in the order the status page lists them.
    """

    #: It used its allowance of connections.
    ALLOWANCE = "allowance"
    #: It grew over C{--max-worker-memory}.
    MEMORY = "memory"
    #: It served longer than C{--max-worker-age}.
    AGE = "age"
    #: It died while it served.
    CRASH = "crash"
    #: It died, or could not be started, before it was ready.
    BOOT_FAILURE = "boot_failure"
    #: Its reactor stopped turning.
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    #: A rolling reload replaced it.
    RELOAD = "reload"
    #: The pool shrank.
    SCALING = "scaling"
    #: It received SIGTERM or SIGINT.
    SIGNAL = "signal"

    @classmethod
    def fromWorker(cls, cause: ReplaceCause) -> RestartCause:
        """
        The master's cause for what a worker said over its control channel.
        """
        return cls(cause.value)


class CloseCause(str, enum.Enum):
    """
    Why a worker closed a connection itself, for the causes that are
    counted: the key in the status JSON's C{closes}, the C{cause} label of
    C{preforktwist_connections_closed_total}.
    """

    #: Its client sent nothing within C{--first-byte-timeout}.
    FIRST_BYTE_TIMEOUT = "first_byte_timeout"


class PoolEvent(enum.Enum):
    """
    What the pool tells its observers (the systemd notifier).
    """

    #: The pool first has all its workers accepting.
    READY = "ready"
    #: A rolling reload began.
    RELOADING = "reloading"
    #: A rolling reload finished, or stopped after a failure.
    RELOADED = "reloaded"
    #: The pool is stopping.
    STOPPING = "stopping"
    #: A worker's state changed.
    CHANGED = "changed"
