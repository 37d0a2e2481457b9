"""
The master's listening sockets: endpoint description in, bound socket out.

The master parses a Twisted server endpoint description with Twisted's own
parser, but hands it a recording stand-in for the reactor, so the endpoint
says *what* to listen on without Twisted building a port object around the
socket.  A real Twisted port would be a trap here: its C{stopListening} shuts
the socket down for every worker, and a UNIX port unlinks the path.  The
master binds the socket itself, keeps it for its whole life, and only ever
closes its own copy after every worker is gone.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.python.lockfile import FilesystemLock

#: The listen backlog when neither C{--backlog} nor the endpoint sets one.
#: Twisted's endpoints default to 50, far too short for a pre-forking server
#: whose whole point is that connections may wait briefly for a worker.
DEFAULT_BACKLOG = 1024


class ListenError(Exception):
    """
    A listening socket could not be made.  The message is one line, fit to be
    shown to the user as it is.
    """


@dataclass(frozen=True)
class ListenSpec:
    """
    What one C{--listen} description asks for, parsed but not yet bound.

    @ivar description: the description as the user wrote it.
    @ivar family: the address family of the socket.
    @ivar address: C{(host, port)} for TCP, the path for UNIX sockets.
    @ivar backlog: the listen backlog.
    @ivar mode: permission bits for a UNIX socket's file.
    @ivar lockfile: whether a UNIX socket is guarded by a C{.lock} file, as
        Twisted's own C{unix:} endpoint does (C{lockfile=1}, the default).
    """

    description: str
    family: int
    address: tuple[str, int] | str
    backlog: int
    mode: int = 0o666
    lockfile: bool = True


class _RecordingReactor:
    """
    Just enough of a reactor for L{serverFromString} and its endpoints'
    C{listen} to tell us what they would listen on.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def listenTCP(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("tcp", args, kwargs))

    def listenUNIX(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("unix", args, kwargs))


def parseListen(description: str, backlog: int | None = None) -> ListenSpec:
    """
    Parse a server endpoint description without binding anything.

    @param backlog: C{--backlog}; it overrides what the description says.
    @raise ListenError: the description is not one we can serve.
    """
    recorder = _RecordingReactor()
    try:
        endpoint = serverFromString(recorder, description)
    except Exception as e:
        raise ListenError(f"cannot parse endpoint {description!r}: {e}") from None
    factory = Factory.forProtocol(Protocol)
    result = endpoint.listen(factory)
    failures: list[Exception] = []
    result.addErrback(lambda f: failures.append(f.value))
    if failures and not isinstance(failures[0], AttributeError):
        raise ListenError(f"cannot use endpoint {description!r}: {failures[0]}")
    if len(recorder.calls) != 1:
        raise ListenError(
            f"endpoint {description!r} is not supported: use tcp:, tcp6: or unix:"
        )
    kind, args, kwargs = recorder.calls[0]
    if args[1] is not factory:
        # A wrapping endpoint (haproxy:, ...) would be silently dropped.
        raise ListenError(
            f"endpoint {description!r} is not supported: use tcp:, tcp6: or unix:"
        )
    wanted = kwargs.get("backlog", DEFAULT_BACKLOG)
    if backlog is not None:
        wanted = backlog
    elif ":backlog=" not in description:
        # The endpoint reported its own default (50), not a user's choice.
        wanted = DEFAULT_BACKLOG
    if kind == "tcp":
        port, interface = args[0], kwargs.get("interface", "")
        if not 0 <= port <= 65535:
            raise ListenError(
                f"endpoint {description!r}: port {port} is not 0 to 65535"
            )
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        return ListenSpec(description, family, (interface, port), wanted)
    path = args[0]
    return ListenSpec(
        description,
        socket.AF_UNIX,
        path,
        wanted,
        mode=kwargs.get("mode", 0o666),
        lockfile=bool(kwargs.get("wantPID", True)),
    )


class Listener:
    """
    One listening socket, owned by the master from bind to close.
    """

    def __init__(self, spec: ListenSpec) -> None:
        self.spec = spec
        self.socket: socket.socket | None = None
        self._lock: FilesystemLock | None = None

    def bind(self) -> None:
        """
        Create, bind and listen.  The socket is made non-blocking here, once:
        C{O_NONBLOCK} lives on the open file description that every worker
        shares, and a worker adopting a blocking socket would freeze inside
        C{accept()}.

        @raise ListenError: with a one-line reason.
        """
        spec = self.spec
        sock = socket.socket(spec.family, socket.SOCK_STREAM)
        try:
            if spec.family == socket.AF_UNIX:
                self._bindUNIX(sock, str(spec.address))
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if spec.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(spec.address)
            sock.listen(spec.backlog)
            sock.setblocking(False)
        except (OSError, OverflowError, ValueError) as e:
            sock.close()
            self._unlock()
            reason = getattr(e, "strerror", None) or str(e)
            raise ListenError(
                f"cannot listen on {spec.description}: {reason}"
            ) from None
        self.socket = sock

    def _bindUNIX(self, sock: socket.socket, path: str) -> None:
        abstract = path.startswith("\0") or path.startswith("@")
        if abstract:
            sock.bind(path.replace("@", "\0", 1))
            return
        if self.spec.lockfile:
            lock = FilesystemLock(path + ".lock")
            if not lock.lock():
                raise OSError(0, "another server holds " + path + ".lock")
            self._lock = lock
            if not lock.clean:
                self._removeStaleSocket(path)
        elif os.path.exists(path):
            self._removeStaleSocket(path)
        sock.bind(path)
        os.chmod(path, self.spec.mode)

    @staticmethod
    def _removeStaleSocket(path: str) -> None:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.remove(path)
        except FileNotFoundError:
            pass

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None

    @property
    def fileno(self) -> int:
        assert self.socket is not None, "bind() first"
        return self.socket.fileno()

    def describeAddress(self) -> str:
        """
        Where the socket really listens, with an ephemeral port resolved.
        """
        assert self.socket is not None, "bind() first"
        name = self.socket.getsockname()
        if self.spec.family == socket.AF_UNIX:
            return str(name)
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        """
        Close the master's copy; for a UNIX socket also remove its file, as
        the owner of the path.  Only ever called once no worker holds it.
        """
        if self.socket is None:
            return
        self.socket.close()
        self.socket = None
        path = self.spec.address
        if self.spec.family == socket.AF_UNIX and isinstance(path, str):
            if not path.startswith(("\0", "@")):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self._unlock()
