"""
Endpoint descriptions: what a C{--listen} asks for, parsed but not bound.

Both sides need this: the master to bind, the worker to build an C{ssl:}
listener's TLS context from the same description.

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
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

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
    @ivar address: C{(host, port)} for TCP, the path for UNIX sockets; for
        an inherited socket, where it listens.
    @ivar backlog: the listen backlog.
    @ivar mode: permission bits for a UNIX socket's file.
    @ivar lockfile: whether a UNIX socket is guarded by a C{.lock} file, as
        Twisted's own C{unix:} endpoint does (C{lockfile=1}, the default).
    @ivar tls: for C{ssl:}, the TLS context factory the endpoint built from
        its certificate and key; the workers wrap their factory with it.
    @ivar inherited: for C{systemd:}, the file descriptor systemd passed in;
        the master adopts it instead of binding.
    """

    description: str
    family: int
    address: tuple[str, int] | str
    backlog: int
    mode: int = 0o666
    lockfile: bool = True
    tls: Any = None
    inherited: int | None = None


class _RecordedError(Exception):
    """
    Raised by the recording reactor where the endpoint must not go on.
    """


class _RecordingReactor:
    """
    Just enough of a reactor for L{serverFromString} and its endpoints'
    C{listen} to tell us what they would listen on.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def listenTCP(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("tcp", args, kwargs))

    def listenSSL(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("ssl", args, kwargs))

    def listenUNIX(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("unix", args, kwargs))

    def adoptStreamPort(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("adopt", args, kwargs))
        # Fail on purpose: after a successful adopt, Twisted's systemd:
        # endpoint closes the inherited descriptor, which we want to keep.
        raise _RecordedError()


_SUPPORTED = "use tcp:, tcp6:, ssl:, unix: or systemd:"

#: Modules that only an optional extra installs, and that extra: Twisted's
#: C{ssl:} endpoint needs C{twisted[tls]}, which C{preforktwist[tls]} asks for.
_EXTRAS = {"OpenSSL": "tls", "service_identity": "tls", "idna": "tls"}


def endpointError(description: str, error: Exception) -> str:
    """
    One line for an endpoint that Twisted could not parse or use; a module
    missing because an optional extra is not installed names that extra.
    """
    if isinstance(error, ImportError):
        module = (error.name or "").split(".")[0]
        extra = _EXTRAS.get(module)
        if extra is not None:
            return (
                f"endpoint {description!r} needs {module}, which is not "
                f"installed: pip install 'preforktwist[{extra}]'"
            )
    return f"cannot parse endpoint {description!r}: {error}"


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
        raise ListenError(endpointError(description, e)) from None
    factory = Factory.forProtocol(Protocol)
    try:
        result = endpoint.listen(factory)
    except ImportError as e:
        raise ListenError(endpointError(description, e)) from None
    except Exception as e:
        raise ListenError(f"cannot use endpoint {description!r}: {e}") from None
    failures: list[Exception] = []
    result.addErrback(lambda f: failures.append(f.value))
    if failures and not isinstance(failures[0], (AttributeError, _RecordedError)):
        raise ListenError(f"cannot use endpoint {description!r}: {failures[0]}")
    if len(recorder.calls) != 1:
        raise ListenError(f"endpoint {description!r} is not supported: {_SUPPORTED}")
    kind, args, kwargs = recorder.calls[0]
    calledWith = args[2] if kind == "adopt" else args[1]
    if calledWith is not factory:
        # A wrapping endpoint (haproxy:, ...) would be silently dropped.
        raise ListenError(f"endpoint {description!r} is not supported: {_SUPPORTED}")
    wanted = kwargs.get("backlog", DEFAULT_BACKLOG)
    if backlog is not None:
        wanted = backlog
    elif ":backlog=" not in description:
        # The endpoint reported its own default (50), not a user's choice.
        wanted = DEFAULT_BACKLOG
    if kind == "adopt":
        return _inherited(description, args[0], args[1], wanted)
    if kind in ("tcp", "ssl"):
        port, interface = args[0], kwargs.get("interface", "")
        if not 0 <= port <= 65535:
            raise ListenError(f"endpoint {description!r}: no port {port}")
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        tls = kwargs.get("contextFactory") if kind == "ssl" else None
        return ListenSpec(description, family, (interface, port), wanted, tls=tls)
    path = args[0]
    return ListenSpec(
        description,
        socket.AF_UNIX,
        path,
        wanted,
        mode=kwargs.get("mode", 0o666),
        lockfile=bool(kwargs.get("wantPID", True)),
    )


def _inherited(description: str, fd: int, family: int, backlog: int) -> ListenSpec:
    """
    A socket passed in by systemd (C{LISTEN_FDS}): it must already listen.
    """
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise ListenError(f"{description}: no inherited socket: {e.strerror}") from None
    with probe:
        if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ListenError(f"{description}: the inherited socket is not listening")
        address = probe.getsockname()
    if isinstance(address, tuple):
        address = (address[0], address[1])
    return ListenSpec(description, family, address, backlog, inherited=fd)
