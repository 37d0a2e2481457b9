"""
The fork server, C{python -m preforktwist.worker.forkserver}: a template process
that has already imported Twisted and preforktwist, and forks ready workers
on the master's request.

A fresh interpreter that imports Twisted costs about 0.3 s of CPU; forking
this template costs about a millisecond.  That is what makes recycling
workers every hundred connections affordable at thousands of connections
a second.

The template is spawned by the master with the listening sockets from fd 4
on and a control socket on fd 3.  It runs no reactor, creates no thread and
imports none of the user's code: anything of that kind would be shared, or
half-shared, by every child after C{fork()} (an epoll instance, a lock held
by a thread that does not exist in the child).  Its blocking loop reads the
master's commands, one a line (the messages are declared in
L{preforktwist.protocol.forking}):

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
        except Exception:
            pass
    assert "twisted.internet.reactor" not in sys.modules, "a reactor was installed"


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

    def __init__(self, control: socket.socket, listenCount: int) -> None:
        self.control = control
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
            readable, _, _ = select.select([control, self._wakeRead], [], [])
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
        self._commands.dataReceived(data)  # type: ignore[no-untyped-call]

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
            keep = {0, 1, 2, CONTROL_FD, *self.listenFDs}
            for fd in _openFDs():
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            workermain.run(config, None)
        except BaseException:
            import traceback

            traceback.print_exc()
        os._exit(1)


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
            "[DESCRIPTION...] (started by the preforktwist master, not by hand)"
        )
    reactorModule, listenCount, descriptions = args[0], int(args[1]), args[2:]
    control = socket.socket(fileno=CONTROL_FD)
    control.setblocking(True)
    if not dieWithParent(os.getppid()):
        os._exit(1)
    leaveTerminalGroup()
    _preimport(reactorModule)
    # Everything imported so far lives as long as every worker: keep the
    # collector away from it, so that a child's collections do not write
    # to (and so copy) the pages it shares with this template.
    gc.collect()
    gc.freeze()
    setTitle(" ".join(["preforktwist fork server", *descriptions]))
    print(json.dumps({"ready": os.getpid()}), flush=True)
    ForkTemplate(control, listenCount).serve()


if __name__ == "__main__":
    main()
