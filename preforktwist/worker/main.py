"""
The worker program, C{python -m preforktwist.worker.main CONFIG-JSON}.

Spawned by the master as a fresh interpreter, it installs the master's
reactor type, imports the user's factory, adopts the inherited listening
sockets and serves until it is told to stop, uses up its allowance, or
loses its master.  Whatever ends it, it ends the same way: accept nothing
more, finish the open connections (within the grace period), close the
control channel, exit.
"""

from __future__ import annotations

import faulthandler
import os
import re
import resource
import signal
import sys
from types import FrameType
from typing import Any, NoReturn, TextIO

from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    eventAsText,
    globalLogBeginner,
)
from twisted.python.reflect import namedAny
from zope.interface import implementer

from preforktwist.common.fdlimit import FileLimit, raiseFileLimit
from preforktwist.common.lifeline import dieWithParent, leaveTerminalGroup
from preforktwist.common.reactors import preforkReactor
from preforktwist.protocol.config import WorkerConfig
from preforktwist.protocol.control import CONTROL_FD, FIRST_LISTEN_FD
from preforktwist.worker.serving import Worker

log = Logger(namespace="preforktwist.worker")


#: Twisted's own lines about a worker's life (its port opening and closing,
#: its factory starting and stopping, its reactor ending): the master logs
#: the same facts once per worker, and with recycling (C{-m 100} at
#: thousands of connections a second) these would be most of the log.
_ROUTINE_FORMATS = frozenset(
    {
        "Starting factory {factory!r}",
        "Stopping factory {factory!r}",
        "Main loop terminated.",
    }
)
_ROUTINE_TEXT = re.compile(r"\S+ starting on \S+|\((TCP |UNIX )?Port \S+ Closed\)")


def isRoutine(event: dict[str, Any], text: str) -> bool:
    """
    Whether C{event} (rendered as C{text}) is one of Twisted's routine
    lines about a port, a factory or the reactor, which a worker leaves out.
    """
    if event.get("log_level", LogLevel.info) > LogLevel.info:
        return False
    if event.get("log_format") in _ROUTINE_FORMATS:
        return True
    return event.get("log_namespace") == "log_legacy" and bool(
        _ROUTINE_TEXT.fullmatch(text)
    )


@implementer(ILogObserver)
class _PipeObserver:
    """
    Write log events as plain lines to the master's pipes: informational
    ones to stdout, warnings and worse to stderr.  The master adds time,
    worker number and pid.  A master that died leaves broken pipes; writing
    to them must never break the worker's shutdown.  Twisted's routine
    lines about the worker's own port, factory and reactor are left out
    (L{isRoutine}).
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out, self._err = out, err

    def __call__(self, event: dict[str, Any]) -> None:
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        if isRoutine(event, text):
            return
        level = event.get("log_level", LogLevel.info)
        stream = self._err if level >= LogLevel.warn else self._out
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


#: File descriptors kept free beside the connections: the control channel,
#: the pipes, the listening sockets, and whatever the user's code opens.
FD_RESERVE = 64


def concurrencyCap(wanted: int | None, soft: int) -> int:
    """
    The cap on open connections a worker keeps, for C{--max-concurrent}
    C{wanted} and a soft open-file limit C{soft}: what the limit allows
    (less L{FD_RESERVE}) for C{auto} (C{None}), and never more than that
    for a number; 0 stays 0 (no cap).

    A worker that runs out of descriptors makes Twisted accept and close
    queued connections to recover (losing them); a worker at its cap leaves
    them queued for its siblings instead.
    """
    if wanted == 0:
        return 0
    if soft == resource.RLIM_INFINITY:
        return wanted or 0
    allowed = max(1, soft - FD_RESERVE)
    return allowed if wanted is None else min(wanted, allowed)


def _fitToFileLimit(worker: Worker, limit: FileLimit) -> None:
    """
    Set the worker's cap from its (raised) open-file limit, and say both in
    one line: an operator reading an idle flood's log sees at once how
    many connections each worker holds.
    """
    wanted = worker.config.maxConcurrent
    cap = worker.budget.maxConcurrent = concurrencyCap(wanted, limit.soft)
    if wanted and cap < wanted:
        worker.log.warn(
            "{limit}; --max-concurrent {wanted} is above what the file-descriptor "
            "limit ({soft}) allows; using {cap}",
            limit=limit.describe(),
            wanted=wanted,
            soft=limit.soft,
            cap=cap,
        )
        return
    held = f"at most {cap} connections open at once" if cap else "no cap"
    worker.log.info(
        "{limit}; {held} (--max-concurrent {setting})",
        limit=limit.describe(),
        held=held,
        setting="auto" if wanted is None else wanted,
    )


#: The reactor module whose worker variant L{installReactor} installs.
def installReactor(name: str) -> None:
    """
    Install the reactor named C{name} (the master's type) unless one is
    installed already; one that cannot be installed leaves the default.
    """
    if name and "twisted.internet.reactor" not in sys.modules:
        try:
            namedAny(name).install()
        except Exception as e:
            print(
                f"cannot install reactor {name} ({e}); using the default",
                file=sys.stderr,
            )


def main(argv: list[str] | None = None) -> None:
    """
    The program started by the master: C{python -m preforktwist.worker.main
    CONFIG-JSON}.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit(
            "usage: python -m preforktwist.worker.main CONFIG-JSON "
            "(started by the preforktwist master, not by hand)"
        )
    config = WorkerConfig.fromJSON(args[0])
    run(config, config.masterPid)


def run(config: WorkerConfig, parentPid: int | None) -> NoReturn:
    """
    Run one worker to its end, then exit the process directly: nothing of
    the interpreter's teardown may write to a pipe whose reader is gone.

    @param parentPid: the master, when it started this worker itself: its
        death then ends the worker too (a backstop to the control channel's
        EOF).  C{None} for a worker forked by the fork server, which must
        outlive the fork server if need be.
    """
    leaveTerminalGroup()
    installReactor(config.reactor)
    reactor = preforkReactor()

    globalLogBeginner.beginLoggingTo(
        [_PipeObserver(sys.__stdout__, sys.__stderr__)],  # type: ignore[arg-type]
        redirectStandardIO=True,
    )
    worker = Worker(config, reactor)
    if parentPid is not None and not dieWithParent(parentPid):
        log.warn("the process that started this worker is gone")
        os._exit(1)
    # The master sends SIGUSR2 to a worker that stopped turning its reactor:
    # faulthandler writes every thread's stack to stderr, from C, even while
    # the Python code is stuck.
    faulthandler.register(signal.SIGUSR2, file=2, all_threads=True)
    _fitToFileLimit(worker, raiseFileLimit())
    worker.updateTitle()

    def installSignals() -> None:
        def graceful(signum: int, frame: FrameType | None) -> None:
            reactor.callFromThread(worker.signalled, signum)

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, graceful)

    reactor.callWhenRunning(installSignals)
    reactor.callWhenRunning(worker.start, CONTROL_FD, FIRST_LISTEN_FD)
    reactor.run()
    os._exit(worker.exitStatus)


if __name__ == "__main__":
    main()
