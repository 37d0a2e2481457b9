"""
Protocols and hooks the fault tests (L{tests.test_faults}) serve, imported
by the workers by dotted name (C{tests.faultapps.Tracked}).

Several of them keep a ledger: with C{PREFORKTWIST_FAULT_DIR} set, each
worker appends C{+PORT} to C{DIR/PID} when it accepts a connection from
client port C{PORT}, and C{-PORT} when that connection is gone.  The writes
go straight to the kernel, so the ledger survives a SIGKILL of the worker:
the test knows which connections a killed worker had open at that moment.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

_ledger: int | None = None


def _record(sign: bytes, transport: Any) -> None:
    global _ledger
    directory = os.environ.get("PREFORKTWIST_FAULT_DIR")
    if not directory or transport is None:
        return
    if _ledger is None:
        _ledger = os.open(
            os.path.join(directory, str(os.getpid())),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
    os.write(_ledger, b"%s%d\n" % (sign, transport.getPeer().port))


class Tracked(Protocol):
    """
    Answer the first message with C{PID:message} and close, keeping the
    ledger.
    """

    def connectionMade(self) -> None:
        _record(b"+", self.transport)

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"%d:%s" % (os.getpid(), data))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        _record(b"-", self.transport)


class SlowTracked(Tracked):
    """
    Answer the first message after C{DELAY} seconds, keeping the ledger: an
    exchange still in progress when the test stops or kills something.
    """

    DELAY = float(os.environ.get("PREFORKTWIST_FAULT_DELAY", "1.5"))

    def dataReceived(self, data: bytes) -> None:
        reactor.callLater(self.DELAY, self._reply, data)

    def _reply(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.connected:  # type: ignore[attr-defined]
            self.transport.write(b"%d:%s" % (os.getpid(), data))
            self.transport.loseConnection()


class Held(Tracked):
    """
    Greet with C{PID\\n} at once, answer the first message with
    C{PID:message} and close: a connection the client holds open as long as
    it likes, and can tell from a queued one (no greeting yet).
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        self.transport.write(b"%d\n" % os.getpid())


class RaisesInConnectionMade(Tracked):
    """
    Raise in C{connectionMade} for clients whose port is even; serve the
    others like L{Tracked}.  A client that sends to a broken connection
    makes C{dataReceived} raise too (its state was never set up).
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        if self.transport.getPeer().port % 2 == 0:  # type: ignore[attr-defined]
            raise RuntimeError("connectionMade blew up on purpose")
        self.ready = True

    def dataReceived(self, data: bytes) -> None:
        if not self.ready:
            raise RuntimeError("dataReceived on a connection that never started")
        super().dataReceived(data)

    ready = False


class RaisesInDataReceived(Tracked):
    """
    Raise in C{dataReceived} when the message is C{raise}; answer others.
    """

    def dataReceived(self, data: bytes) -> None:
        if data.startswith(b"raise"):
            raise RuntimeError("dataReceived blew up on purpose")
        super().dataReceived(data)


_hogged: list[int] = []


class Hog(Tracked):
    """
    C{hog SECONDS}: open C{/dev/null} until the worker is out of file
    descriptors (EMFILE), answer C{PID:hogged N}, close, take the
    descriptor that closing freed too, and close them all again after
    SECONDS.  Anything else is answered like L{Tracked}.
    """

    hogging = False

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if not data.startswith(b"hog"):
            super().dataReceived(data)
            return
        self.hogging = True
        _hogAll()
        self.transport.write(b"%d:hogged %d" % (os.getpid(), len(_hogged)))
        self.transport.loseConnection()
        reactor.callLater(float(data.split()[1]), _release)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if self.hogging:
            _hogAll()


def _hogAll() -> None:
    while True:
        try:
            _hogged.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            return


def _release() -> None:
    released = len(_hogged)
    while _hogged:
        os.close(_hogged.pop())
    print(f"hog: released {released} file descriptors")


def _controlFD() -> int:
    """
    The worker's end of its control channel.  It arrives as fd 3 but the
    worker adopts a duplicate and closes fd 3 at once (fd 3 is then reused,
    by a listening socket), so the real one is found on the worker object.
    """
    from preforktwist.worker.serving import Worker

    for thing in gc.get_objects():
        if isinstance(thing, Worker) and thing.control is not None:
            transport: Any = thing.control.transport
            return int(transport.fileno())
    raise RuntimeError("no worker object in this process")


#: Not AMP: a key length of 0xffff, more than AMP allows (255).
GARBAGE = b"\xff\xff this is not AMP \x00\x01\x02" * 64


class Saboteur(Tracked):
    """
    C{garbage}: write bytes that are not AMP to the control channel.
    C{close}: close the worker's end of the control channel behind the
    reactor's back: the socket is closed, and its descriptor number now
    names C{/dev/null} (a plain C{os.close} would let the next accepted
    client connection take that number, and the reactor would then speak
    AMP to a client).  C{shutdown}: shut the channel down both ways, which
    the worker's own reactor notices too.  C{partial}: write the start of
    an AMP box that never ends.  Anything else is answered like
    L{Tracked}.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        fd = (
            _controlFD()
            if data in (b"garbage", b"close", b"shutdown", b"partial")
            else -1
        )
        if data == b"garbage":
            os.write(fd, GARBAGE)
        elif data == b"close":
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, fd)
            os.close(null)
        elif data == b"shutdown":
            with socket.socket(fileno=os.dup(fd)) as channel:
                channel.shutdown(socket.SHUT_RDWR)
        elif data == b"partial":
            # A box whose first key announces 200 bytes and brings 3.
            os.write(fd, b"\x00\xc8abc")
        super().dataReceived(data)


def failingInit() -> None:
    raise RuntimeError("worker-init fails on purpose")


def hangingInit() -> None:
    """
    A --worker-init that never returns (it blocks the reactor, as a
    connection to a database that does not answer would).
    """
    time.sleep(3600)


def initFailsWhileMarked() -> None:
    """
    Fail while the file named by C{PREFORKTWIST_TEST_BREAK} exists.
    """
    marker = os.environ.get("PREFORKTWIST_TEST_BREAK", "")
    if marker and os.path.exists(marker):
        raise RuntimeError("init is broken on purpose")
