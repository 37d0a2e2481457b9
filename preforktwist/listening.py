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

import ctypes
import os
import socket
import stat
import struct
import sys
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
    try:
        result = endpoint.listen(factory)
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


#: SO_ATTACH_FILTER, from linux/asm-generic/socket.h.
_SO_ATTACH_FILTER = 26
#: A classic BPF program for a listening TCP socket, whose packets start at
#: the TCP header: let through any packet with ACK set (a handshake already
#: under way completes, and its connection is queued), drop the rest: new
#: SYNs.
_DROP_NEW = b"".join(
    struct.pack("=HBBI", code, jt, jf, k)
    for code, jt, jf, k in (
        (0x30, 0, 0, 13),  # ldb [13]: the TCP flags
        (0x45, 0, 1, 0x10),  # jset #ACK
        (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep it
        (0x06, 0, 0, 0),  # ret #0: drop it
    )
)


def _dropEverything(sock: socket.socket) -> None:
    """
    Attach a classic BPF socket filter that drops new connection attempts.
    Linux only; elsewhere, nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    program = ctypes.create_string_buffer(_DROP_NEW)
    fprog = struct.pack("@HP", len(_DROP_NEW) // 8, ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        pass


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
        if spec.inherited is not None:
            # systemd bound it, and keeps it across our restarts: adopt it
            # as it is, and never unlink it.
            sock = socket.socket(fileno=spec.inherited)
            sock.setblocking(False)
            self.socket = sock
            return
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

    def refuseNew(self) -> None:
        """
        Take no new connections from now on, while what is already queued
        stays queued for the workers to drain.  Called when the server
        stops, so that closing the socket later resets nothing: a client
        that connects after this moment is refused, never accepted and
        then dropped.

         - TCP (Linux): a socket filter that drops every incoming packet
           makes the kernel ignore new SYNs; a client retries its SYN and is
           refused once the socket is closed.  Connections already in the
           accept queue are whole sockets of their own, untouched.
         - UNIX: the path is removed, so new clients find nothing.
         - A socket inherited from systemd is left as it is: systemd keeps
           it, and its queue, for the next instance.
        """
        spec = self.spec
        if self.socket is None or spec.inherited is not None:
            return
        if spec.family == socket.AF_UNIX:
            self._unlinkPath()
        else:
            _dropEverything(self.socket)

    def close(self) -> None:
        """
        Close the master's copy; for a UNIX socket also remove its file, as
        the owner of the path.  Only ever called once no worker holds it.
        """
        if self.socket is None:
            return
        self.socket.close()
        self.socket = None
        if self.spec.inherited is None:
            self._unlinkPath()
        self._unlock()

    def _unlinkPath(self) -> None:
        path = self.spec.address
        if self.spec.family != socket.AF_UNIX or not isinstance(path, str):
            return
        if not path.startswith(("\0", "@")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
