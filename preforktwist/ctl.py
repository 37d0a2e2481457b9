"""
C{preforktwist-ctl}: commands to a running master over its control socket
(C{--control unix:PATH})::

    preforktwist-ctl --socket PATH status [--json]
    preforktwist-ctl --socket PATH add [N] | remove [N]
    preforktwist-ctl --socket PATH reload | upgrade | stop
    preforktwist-ctl --socket PATH stack WORKER

Each command waits until what it asked for is done (a reload finished, an
upgrade's new master ready, the master exited) and exits 0, or prints one
line saying why not and exits 1.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python import usage
from twisted.python.failure import Failure

from preforktwist.protocol.admin import (
    ControlError,
    Reload,
    Resize,
    Stack,
    Status,
    Stop,
    Upgrade,
)

PROGRAM = "preforktwist-ctl"


class _Count(usage.Options):
    synopsis = "[N]"

    def parseArgs(self, count: str = "1") -> None:
        try:
            self["count"] = int(count)
        except ValueError:
            raise usage.UsageError(f"N must be a whole number, not {count!r}") from None
        if self["count"] < 1:
            raise usage.UsageError(f"N must be 1 or more, not {count}")


class _Status(usage.Options):
    optFlags = [
        ["json", None, "Print the same JSON as the status page's /status.json."]
    ]


class _Stack(usage.Options):
    synopsis = "WORKER"

    def parseArgs(self, worker: str | None = None) -> None:
        if worker is None:
            raise usage.UsageError("give WORKER: a worker's number or its pid")
        self["worker"] = worker


class _Nothing(usage.Options):
    pass


#: The commands: name, options, what it does.
_COMMANDS: list[list[Any]] = [
    ["status", None, _Status, "The pool and each worker, as a table."],
    ["add", None, _Count, "N workers more (default 1)."],
    ["remove", None, _Count, "N workers fewer (default 1); at least 1 stays."],
    ["reload", None, _Nothing, "A rolling reload (as SIGHUP), until it is over."],
    ["upgrade", None, _Nothing, "A hot upgrade (as SIGUSR2), until it is over."],
    ["stack", None, _Stack, "A worker's Python stacks (its number or pid)."],
    ["stop", None, _Nothing, "A graceful stop, until the master has exited."],
]


class Options(usage.Options):
    """
    The command line: the socket, then one command.
    """

    synopsis = "--socket PATH COMMAND [ARGUMENTS]"
    longdesc = "Control a running preforktwist master over its --control socket."
    optParameters = [
        ["socket", "s", None, "The master's control socket (its --control unix:PATH)."]
    ]
    subCommands = _COMMANDS

    def postOptions(self) -> None:
        if not self["socket"]:
            raise usage.UsageError("give --socket PATH")
        if self.subCommand is None:
            raise usage.UsageError(
                "give a command: " + ", ".join(name for name, *_ in _COMMANDS)
            )
        if self["socket"].startswith("unix:"):
            self["socket"] = self["socket"][len("unix:") :]


class _Connection(amp.AMP):
    """
    The ctl's end: tells when the master closes it.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.AMP.connectionLost(self, reason)
        if not self.lost.called:
            self.lost.callback(None)


def exited(pid: int) -> bool:
    """
    Whether process C{pid} has exited (a zombie has), as far as this
    process can see: a master in another PID namespace counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


#: How long the ctl waits for a master whose connection ended to be gone.
EXIT_WAIT = 30.0


@inlineCallbacks
def _gone(reactor: Any, pid: int) -> Any:
    for _ in range(int(EXIT_WAIT / 0.05)):
        if exited(pid):
            return
        yield task.deferLater(reactor, 0.05, lambda: None)


def connectionError(path: str, failure: Failure) -> str:
    """
    One line for a connection that could not be made.
    """
    code = getattr(failure.value, "osError", None)
    if code in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
        return f"no server at {path}"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied: {path}"
    return f"cannot connect to {path}: {failure.getErrorMessage()}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.1f} MiB"


def statusTable(snapshot: dict[str, Any]) -> str:
    """
    The snapshot as the operator reads it: the pool, the listeners, then a
    row per worker.
    """
    pool, connections = snapshot["pool"], snapshot["connections"]
    states = ", ".join(
        f"{pool[s]} {s}"
        for s in ("booting", "standby", "accepting", "paused", "retiring", "stopping")
        if pool.get(s)
    )
    lines = [
        f"pool: {pool['wanted']} wanted, {pool['alive']} alive"
        f" ({states or 'none'}){', reloading' if pool['reloading'] else ''}"
        f"{', saturated' if pool.get('saturated') else ''}",
        f"connections: {connections['accepted']} accepted, "
        f"{connections['served']} served, {connections['open']} open, "
        f"{connections['per_second']:.1f}/s",
    ]
    for listener in snapshot["listeners"]:
        queue = listener["queue"]
        lines.append(
            f"listening: {listener['description']} on {listener['address']}, "
            f"queue {'-' if queue is None else queue} of {listener['backlog']}"
        )
    header = ("WORKER", "PID", "STATE", "OPEN", "ACCEPTED", "SERVED", "LEFT", "AGE")
    rows = [(*header, "HEARTBEAT", "RSS")]
    for w in snapshot["workers"]:
        left = w["allowance_left"]
        rows.append(
            (
                str(w["number"]),
                str(w["pid"] or "-"),
                w["state"],
                str(w["open"]),
                str(w["accepted"]),
                str(w["served"]),
                "-" if left is None else str(left),
                _seconds(w["age"]),
                _seconds(w["last_heartbeat"]),
                _bytes(w["rss"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) for cell, w in zip(row, widths, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)


@inlineCallbacks
def _command(
    connection: _Connection, options: Options, say: Callable[[str], None]
) -> Any:
    """
    Carry out the command; its answer is printed with C{say}.
    """
    command, sub = options.subCommand, options.subOptions
    if command == "status":
        answer = yield connection.callRemote(Status)
        snapshot = answer["snapshot"]
        say(snapshot if sub["json"] else statusTable(json.loads(snapshot)))
    elif command in ("add", "remove"):
        delta = sub["count"] if command == "add" else -sub["count"]
        answer = yield connection.callRemote(Resize, delta=delta)
        say(f"pool size {answer['size'] - delta} -> {answer['size']}")
    elif command == "reload":
        answer = yield connection.callRemote(Reload)
        say(answer["message"])
    elif command == "upgrade":
        answer = yield connection.callRemote(Upgrade)
        say(f"upgraded: the new master (pid {answer['pid']}) serves")
    elif command == "stack":
        answer = yield connection.callRemote(Stack, worker=sub["worker"])
        say(f"worker {sub['worker']} (pid {answer['pid']}):\n{answer['stack']}")
    elif command == "stop":
        answer = yield connection.callRemote(Stop)
        say(f"stopping the master (pid {answer['pid']}) gracefully...")
        # Its connection ends as the process does; the process itself is
        # gone a moment later.
        yield connection.lost
        yield _gone(connection.reactor, answer["pid"])
        say("stopped")


@inlineCallbacks
def run(
    reactor: Any,
    options: Options,
    say: Callable[[str], None] = print,
    complain: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Any:
    """
    Connect to the socket and carry out the command.

    @return: a L{Deferred} firing with the exit status.
    """
    path = options["socket"]
    endpoint = UNIXClientEndpoint(reactor, path)
    try:
        connection = yield connectProtocol(endpoint, _Connection(reactor))
    except ConnectError:
        complain(f"{PROGRAM}: {connectionError(path, Failure())}")
        return 1
    try:
        yield _command(connection, options, say)
    except ControlError as e:
        complain(f"{PROGRAM}: {e}")
        return 1
    except (ConnectionDone, ConnectionLost):
        complain(f"{PROGRAM}: the master closed the connection")
        return 1
    finally:
        if connection.transport is not None:
            connection.transport.loseConnection()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """
    The console script.
    """
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        raise SystemExit(f"{PROGRAM}: {e} (see {PROGRAM} --help)") from None

    def react(reactor: Any) -> Deferred[None]:
        d: Deferred[Any] = run(reactor, options)
        return d.addCallback(_exit)

    task.react(react)


def _exit(status: int) -> None:
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
