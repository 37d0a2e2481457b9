"""
The fork server, C{python -m preforktwist.worker.forkserver}: a template process
that has already imported Twisted and preforktwist, and forks ready workers
on the master's request.

A fresh interpreter spends most of its start importing Twisted; a worker
forked from this template starts with that done, so a replacement costs
a small fraction of a fresh start (the fork, the copy-on-write faults the
new worker's code takes, the retiring worker's end and the master's part;
the documentation's "What a replacement costs" explains it, and
C{bench/RESULTS.md} has the figures).  That is what makes recycling
workers every few hundred connections affordable at thousands of
connections a second.

The template is spawned by the master with the listening sockets from fd 4
on and a control socket on fd 3.  It runs no reactor and creates no
thread: anything of that kind would be shared, or half-shared, by every
child after C{fork()} (an epoll instance, a lock held by a thread that does
not exist in the child).  By default it imports none of the user's code
either.  With C{--preload} (C{--preload DOTTED} arguments, one per name) it
installs the master's reactor type and imports the user's protocol or
factory and worker-init, so that no worker imports them again and all
share those pages; since user code may touch the reactor at import, each
child then gives the reactor a poller and waker of its own
(L{preforktwist.worker.afterfork}) before anything runs.  Its blocking loop
reads the master's commands, one a line (the messages are declared in
L{preforktwist.protocol.forking})::

    fork CONFIG-JSON

and forks a worker: the child gets a new control socket on fd 3, sockets
for its stdout and stderr, the listening sockets where they were, and runs
L{preforktwist.worker.main.run}; it never returns into this loop.  The template
answers with C{forked PID}, passing the master's ends of those three
sockets along (C{SCM_RIGHTS}).  When a child exits, the template reaps it
and tells the master C{exited PID STATUS}.  On C{close} or EOF from the
master, or C{SIGTERM}, it closes its copies of the listening sockets and
exits once its children have (they get the same EOF from their own control
channels).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
from typing import NoReturn

from twisted.protocols.basic import LineReceiver

from preforktwist.common.lifeline import dieWithParent, leaveTerminalGroup
from preforktwist.common.titles import setTitle
from preforktwist.protocol import forking
from preforktwist.protocol.config import WorkerConfig
from preforktwist.protocol.control import CONTROL_FD, FIRST_LISTEN_FD
from preforktwist.worker import main as workermain
from preforktwist.worker.afterfork import reactorFDs, renewReactor


def _preimport(reactorModule: str) -> None:
    """
    Import what every worker needs, so that each fork has it for free.  The
    reactor module is imported, not installed: installing it creates an
    epoll instance, which must be each worker's own.
    """
    import twisted.internet.protocol
    import twisted.protocols.amp  # noqa: F401
    from twisted.python.reflect import namedAny

    import preforktwist.worker.serving  # noqa: F401

    if reactorModule:
        try:
            namedAny(reactorModule)
        except Exception as e:
            # Each worker will say the same when it installs it; said once
            # here, the master's log shows why forks start slower.
            print(
                f"cannot import reactor {reactorModule} "
                f"({type(e).__name__}: {e}); workers import it themselves",
                file=sys.stderr,
            )
    assert "twisted.internet.reactor" not in sys.modules, "a reactor was installed"
    _warmInterfaces()


def _warmInterfaces() -> None:
    """
    Work out, once in the template, the interface declarations of the
    classes every worker instantiates.  zope.interface computes a class's
    declaration (its resolution order of interfaces) the first time an
    instance is asked what it provides, and caches it on the class: done
    here, every fork inherits the cache instead of computing it again, in
    every worker.
    """
    from twisted.internet import tcp, unix
    from twisted.internet.interfaces import ILoggingContext
    from zope.interface import implementedBy

    from preforktwist.worker import ports, serving, transports

    classes: list[type] = [
        tcp.Server,
        tcp.Port,
        unix.Server,
        unix.Port,
        ports.BudgetedTCPPort,
        ports.BudgetedUNIXPort,
        transports.CountedTCPServer,
        transports.CountedUNIXServer,
        transports.TimedTCPServer,
        transports.TimedUNIXServer,
        serving.WorkerControl,
    ]
    for cls in classes:
        implementedBy(cls)  # type: ignore[no-untyped-call]
        ILoggingContext.implementedBy(cls)


def _preload(reactorModule: str, names: list[str]) -> None:
    """
    C{--preload}: install the master's reactor type, then import the user's
    code, so that every worker forked from here has it imported already,
    sharing its pages with this template (copy-on-write) instead of
    importing it again.  User code may use the reactor at import
    (C{from twisted.internet import reactor}, C{callLater},
    C{getThreadPool()}): it gets the installed one, which never runs here;
    each child makes it its own (L{preforktwist.worker.afterfork}).

    A name that fails to import is reported and skipped: the workers then
    fail to import it too, each a boot failure the master counts and
    reports, just as without C{--preload}.
    """
    import threading

    from twisted.python.reflect import namedAny

    workermain.installReactor(reactorModule)
    for name in names:
        try:
            namedAny(name)
        except Exception as e:
            print(
                f"--preload: cannot import {name}: {type(e).__name__}: {e}",
                file=sys.stderr,
            )
    if threading.active_count() > 1:
        print(
            "--preload: the application started threads at import; "
            "forked workers have none of them",
            file=sys.stderr,
        )


def _parseArgs(args: list[str]) -> tuple[str, int, list[str], list[str]]:
    """
    C{REACTOR LISTEN-COUNT [--preload NAME]... [DESCRIPTION...]}.
    """
    reactorModule, listenCount, rest = args[0], int(args[1]), args[2:]
    preload = []
    while len(rest) >= 2 and rest[0] == "--preload":
        preload.append(rest[1])
        rest = rest[2:]
    return reactorModule, listenCount, preload, rest


class _Commands(LineReceiver):
    """
    The master's commands, framed into lines.  Only the parsing of a
    Twisted protocol is used: the template has no reactor and no transport,
    its own loop feeds the bytes in.
    """

    delimiter = forking.DELIMITER
    MAX_LENGTH = forking.MAX_LENGTH

    def __init__(self, template: ForkTemplate) -> None:
        self.template = template

    def lineReceived(self, line: bytes) -> None:
        command = forking.decodeCommand(line)
        if isinstance(command, forking.Fork):
            self.template.fork(command.config)
        elif isinstance(command, forking.Close):
            self.template.close()

    def lineLengthExceeded(self, line: bytes) -> None:
        raise ValueError(f"a command longer than {self.MAX_LENGTH} bytes")


class ForkTemplate:
    """
    The template process's loop: fork a worker per C{fork} command, report
    each birth and each exit, leave once closed and childless.
    """

    def __init__(
        self,
        control: socket.socket,
        listenCount: int,
        preloaded: frozenset[int] = frozenset(),
    ) -> None:
        """
        @param preloaded: descriptors the user's code opened at import
            (C{--preload}): they stay open in every worker, as they would
            after any fork.
        """
        self.control = control
        self.preloaded = set(preloaded)
        self.listenFDs = [FIRST_LISTEN_FD + i for i in range(listenCount)]
        self.children: set[int] = set()
        self.closing = False
        self._commands = _Commands(self)
        self._wakeRead, self._wakeWrite = os.pipe()
        os.set_blocking(self._wakeRead, False)
        os.set_blocking(self._wakeWrite, False)

    def serve(self) -> NoReturn:
        signal.set_wakeup_fd(self._wakeWrite)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.signal(signal.SIGTERM, lambda s, f: self.close())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while not (self.closing and not self.children):
            control = self.control.fileno()
            # Once closed, the control socket is no longer read: at the
            # master's end of file it stays readable for ever, and the
            # wait for the last children (a drain may take minutes) would
            # spin on it.  Their exits still wake the loop (SIGCHLD).
            watched = [self._wakeRead] if self.closing else [control, self._wakeRead]
            readable, _, _ = select.select(watched, [], [])
            if self._wakeRead in readable:
                try:
                    os.read(self._wakeRead, 512)
                except BlockingIOError:
                    pass
            self._reap()
            if control in readable and not self.closing:
                self._readCommands()
        os._exit(0)

    def close(self) -> None:
        """
        No more forks: give back the listening sockets, and leave once the
        children are gone.
        """
        if self.closing:
            return
        self.closing = True
        for fd in self.listenFDs:
            try:
                os.close(fd)
            except OSError:
                pass

    def _readCommands(self) -> None:
        try:
            data = self.control.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._commands.dataReceived(data)

    def _send(self, report: forking.Report, fds: list[int] | None = None) -> None:
        line = forking.encode(report) + forking.DELIMITER
        try:
            socket.send_fds(self.control, [line], fds or [])
        except OSError:
            self.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self._send(forking.Exited(pid, status))

    def fork(self, config: WorkerConfig) -> None:
        pairs = [socket.socketpair() for _ in range(3)]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._becomeWorker(config, pairs)
        masterEnds = [ours.fileno() for ours, _ in pairs]
        self.children.add(pid)
        self._send(forking.Forked(pid), masterEnds)
        for ours, theirs in pairs:
            ours.close()
            theirs.close()

    def _becomeWorker(
        self, config: WorkerConfig, pairs: list[tuple[socket.socket, socket.socket]]
    ) -> NoReturn:
        """
        In the child: put the descriptors where a worker expects them,
        forget everything of the template's, and run the worker.
        """
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            # Raw descriptors from here on: no socket object may later close
            # a number that the worker has reused.
            self.control.detach()
            for ours, _ in pairs:
                os.close(ours.detach())
            control, out, err = (theirs.detach() for _, theirs in pairs)
            os.dup2(control, CONTROL_FD)
            os.dup2(out, 1)
            os.dup2(err, 2)
            keep = {0, 1, 2, CONTROL_FD, *self.listenFDs, *self.preloaded}
            installed = sys.modules.get("twisted.internet.reactor")
            if installed is not None:
                # Preloaded code installed a reactor here: its poller and
                # waker are the template's.  Before anything else runs,
                # the worker gets its own.
                keep -= reactorFDs(installed)
                keep |= renewReactor(installed)
            _closeAllBut(keep)
            workermain.run(config, None)
        except BaseException:
            import traceback

            traceback.print_exc()
        os._exit(1)


def _closeAllBut(keep: set[int]) -> None:
    """
    Close every descriptor not in C{keep}, those open being listed.

    Not C{os.closerange} up to the open-file limit: it is one
    C{close_range} system call on Linux 5.9 and later (a little cheaper
    per worker), but where that call is missing or filtered CPython
    falls back to a C{close()} per number, and the master has raised the
    limit to the hard one, often a million or more.
    """
    for fd in _openFDs():
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _openFDs() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.exit(
            "usage: python -m preforktwist.worker.forkserver REACTOR LISTEN-COUNT "
            "[--preload DOTTED]... [DESCRIPTION...] (started by the preforktwist "
            "master, not by hand)"
        )
    reactorModule, listenCount, preload, descriptions = _parseArgs(args)
    control = socket.socket(fileno=CONTROL_FD)
    control.setblocking(True)
    if not dieWithParent(os.getppid()):
        os._exit(1)
    leaveTerminalGroup()
    _preimport(reactorModule)
    preloaded: set[int] = set()
    if preload:
        before = set(_openFDs())
        _preload(reactorModule, preload)
        owned = reactorFDs(sys.modules.get("twisted.internet.reactor"))
        preloaded = set(_openFDs()) - before - owned
    # Everything imported so far lives as long as every worker: keep the
    # collector away from it, so that a child's collections do not write
    # to (and so copy) the pages it shares with this template.
    gc.collect()
    gc.freeze()
    setTitle(" ".join(["preforktwist fork server", *descriptions]))
    print(json.dumps({"ready": os.getpid()}), flush=True)
    ForkTemplate(control, listenCount, frozenset(preloaded)).serve()


if __name__ == "__main__":
    main()
