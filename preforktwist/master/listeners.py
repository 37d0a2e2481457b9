"""
The master's listening sockets: endpoint description in, bound socket out.

The master parses a Twisted server endpoint description with Twisted's own
parser (L{preforktwist.common.endpoints}) and binds the socket itself,
keeping it for its whole life: a real Twisted port would be a trap here,
since its C{stopListening} shuts the socket down for every worker, and a
UNIX port unlinks the path.  The master only ever closes its own copy after
every worker is gone.
"""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import struct
import sys
from collections.abc import Iterator, Sequence

from twisted.application.service import Service
from twisted.python.lockfile import FilesystemLock

from preforktwist.common.endpoints import ListenError, ListenSpec
from preforktwist.common.logs import NamedLogger
from preforktwist.master.upgrade.handoff import Inheritance, socketKey

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


def repointLock(lock: FilesystemLock, successor: int) -> None:
    """
    Make the lock of a UNIX socket's path (Twisted's C{PATH.lock}, a
    symbolic link to its holder's pid) name C{successor}, at once.
    """
    name = os.fsdecode(lock.name)  # Twisted's UNIX port names it in bytes
    link = f"{name}.{successor}"
    try:
        os.symlink(str(successor), link)
        os.replace(link, name)
    except OSError:
        pass


def takeLock(path: str) -> FilesystemLock | None:
    """
    The lock of a UNIX socket's C{path}, if it names this process (an old
    master handed it over) or can be taken (its holder is gone).
    """
    lock = FilesystemLock(path + ".lock")
    try:
        mine = os.readlink(lock.name) == str(os.getpid())
    except OSError:
        mine = False
    if mine or lock.lock():
        lock.locked = True
        return lock
    return None


class Listener:
    """
    One listening socket, owned by the master from bind to close.
    """

    def __init__(self, spec: ListenSpec) -> None:
        self.spec = spec
        self.socket: socket.socket | None = None
        #: Another master accepts on it too (a hot upgrade): this one
        #: neither refuses new connections on it nor removes its path.
        self.shared = False
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

    def adopt(self, fd: int) -> None:
        """
        Take the socket the old master handed over (a hot upgrade) instead
        of binding: it is shared until L{takeOver}.

        @raise ListenError: C{fd} is not a listening socket of this kind.
        """
        spec = self.spec
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise ListenError(
                f"{spec.description}: no socket handed over: {e.strerror}"
            ) from None
        if sock.family != spec.family or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            sock.close()
            raise ListenError(
                f"{spec.description}: the socket handed over is not one it listens on"
            )
        sock.setblocking(False)
        self.socket = sock
        self.shared = True

    def handOver(self, successor: int) -> None:
        """
        The new master C{successor} serves this socket from now on: this
        master leaves it as it is when it stops, and its UNIX path's lock
        names the new master.
        """
        self.shared = True
        lock, self._lock = self._lock, None
        if lock is not None:
            repointLock(lock, successor)

    def takeOver(self) -> None:
        """
        The old master handed this socket over, or is gone: it is this
        master's alone, to refuse and remove when it stops (and its UNIX
        path's lock names this master).
        """
        self.shared = False
        path = self.spec.address
        if self.spec.family != socket.AF_UNIX or not isinstance(path, str):
            return
        if self.spec.lockfile and not path.startswith(("\0", "@")):
            self._lock = takeLock(path)

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
        if self.socket is None or spec.inherited is not None or self.shared:
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
        if self.spec.inherited is None and not self.shared:
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


def listenQueue(sock: socket.socket | None) -> tuple[int, int] | None:
    """
    How many connections wait in a TCP listening socket's accept queue, and
    the queue's size, from Linux's C{TCP_INFO}: for a listening socket,
    C{tcpi_unacked} is the queue's length and C{tcpi_sacked} its limit.

    @return: C{None} where the kernel cannot say (UNIX sockets, other
        systems).
    """
    tcpInfo = getattr(socket, "TCP_INFO", None)
    if sock is None or tcpInfo is None or sock.family == socket.AF_UNIX:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcpInfo, 104)
    except OSError:
        return None
    if len(info) < 32:
        return None
    queued, limit = struct.unpack_from("=II", info, 24)
    return queued, limit


class BindsEarly(Service):
    """
    A service that listens as early as it can: in C{privilegedStartService}
    when twistd calls it (before dropping privileges, so a low port can be
    bound), or else in C{startService}.  A port in use is then one line
    before any worker starts.  Subclasses say how to L{bind} and what to
    L{announce} once listening.
    """

    def bind(self) -> None:
        """
        Listen now, if not yet.

        @raise ListenError: with a one-line reason.
        """
        raise NotImplementedError

    def announce(self) -> None:
        """
        Log where this service listens, once it runs.
        """

    def privilegedStartService(self) -> None:
        self.bind()
        Service.privilegedStartService(self)

    def startService(self) -> None:
        Service.startService(self)
        self.bind()
        self.announce()


class ListeningSockets(BindsEarly):
    """
    Every listening socket of one server, as a service: bound in
    L{privilegedStartService} (while twistd may still be root), held for the
    server's whole life, and closed only once no worker will accept again.

    Stopping is in two steps, because a queued connection must never be
    reset: L{refuseNew} the moment a stop begins (new clients are refused,
    what the kernel already queued stays), L{closeDrained} once the workers
    have accepted what was queued; L{stopService} closes whatever is left.
    """

    log = NamedLogger("preforktwist.service.PreforkService")

    def __init__(
        self, specs: Sequence[ListenSpec], inheritance: Inheritance | None = None
    ) -> None:
        """
        @param inheritance: the sockets an old master handed over, if this
            master was started by a hot upgrade: each is taken instead of
            binding anew.
        """
        self.listeners = [Listener(spec) for spec in specs]
        self.inheritance = inheritance

    def __iter__(self) -> Iterator[Listener]:
        return iter(self.listeners)

    @property
    def descriptions(self) -> list[str]:
        return [listener.spec.description for listener in self.listeners]

    def fds(self) -> list[int]:
        """
        The sockets' descriptors, in order: a worker gets them from fd 4 on.
        """
        return [listener.fileno for listener in self.listeners]

    def bind(self) -> None:
        """
        Bind every socket not bound yet.

        @raise ListenError: with a one-line reason; none is left bound.
        """
        try:
            for listener in self.listeners:
                if listener.socket is not None:
                    continue
                fd = None
                if self.inheritance is not None:
                    fd = self.inheritance.claim(self.key(listener))
                if fd is None:
                    listener.bind()
                else:
                    listener.adopt(fd)
        except Exception:
            self.close()
            raise

    @staticmethod
    def key(listener: Listener) -> str:
        """How C{listener} is named in a hot upgrade's handoff."""
        return socketKey("listen", listener.spec.description)

    def handoffSockets(self) -> list[tuple[str, int]]:
        """Every socket bound, with its handoff key."""
        return [
            (self.key(listener), listener.fileno)
            for listener in self.listeners
            if listener.socket is not None
        ]

    @property
    def shared(self) -> bool:
        """Another master accepts on these sockets too."""
        return any(listener.shared for listener in self.listeners)

    def handOver(self, successor: int) -> None:
        for listener in self.listeners:
            listener.handOver(successor)

    def takeOver(self) -> None:
        for listener in self.listeners:
            listener.takeOver()

    def announce(self) -> None:
        for listener in self.listeners:
            self.log.info(
                "{description} listening on {address} (backlog {backlog})",
                description=listener.spec.description,
                address=listener.describeAddress(),
                backlog=listener.spec.backlog,
            )

    def refuseNew(self) -> None:
        for listener in self.listeners:
            listener.refuseNew()

    def closeDrained(self) -> None:
        """
        No worker will accept again: close the sockets now, so that new
        clients are refused at once rather than queued and reset later.
        """
        if any(listener.socket is not None for listener in self.listeners):
            self.log.info("workers drained the queue: closing the listening sockets")
            self.close()

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    def stopService(self) -> None:
        Service.stopService(self)
        self.close()
