"""
The client side of the conformance cases: where a server listens, one
connection that names its case, reads that tell a stall from an end, and
the server's record read back.

Every case's client returns an outcome (a JSON-like dictionary): what the
client received and how the connection ended, and what the server's side
observed.  The test runs the same client against plain Twisted and against
the pool and compares the outcomes.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conformance import shapes
from tests.harness import waitUntil

#: Seconds without a byte after which a transfer counts as stalled.
STALL = 4.0
#: Seconds a server may take to save its record after the connection ends.
RECORD_TIMEOUT = 10.0

Outcome = dict[str, Any]
Events = list[list[Any]]


@dataclass(frozen=True)
class Target:
    """
    Where one server (plain Twisted, or a pool) listens.

    @ivar tcp: the port of its C{tcp:} listener.
    @ivar unix: the path of its C{unix:} listener.
    @ivar tls: the port of its C{ssl:} listener.
    @ivar proxy: the port of a listener that expects a PROXY header.
    @ivar cert: the certificate the TLS listeners present.
    @ivar records: where the servers save what their side observed.
    """

    tcp: int
    unix: str
    tls: int
    proxy: int | None
    cert: Path
    records: Path

    def tlsContext(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


class Hooks:
    """
    Where a test may step into a running client: C{begun} is called once
    the first bytes of a transfer arrived (the graceful-stop test stops
    the server there, then lets the client go on).
    """

    def begun(self) -> None:
        pass


NO_HOOKS = Hooks()


@dataclass
class Reading:
    """
    What a read to the end got, and how it ended: C{eof}, C{reset},
    C{stalled} (nothing for L{STALL} seconds) or C{limit}.
    """

    data: bytes
    end: str

    def summary(self) -> Outcome:
        return {
            "bytes": len(self.data),
            "sha256": shapes.digest(self.data)[:16],
            "end": self.end,
        }


class Connection:
    """
    One client connection that starts by naming its case.
    """

    def __init__(
        self,
        target: Target,
        carrier: str,
        name: str,
        *args: str,
        receiveBuffer: int | None = None,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.target = target
        self.carrier = carrier
        self.token = uuid.uuid4().hex
        self.hooks = hooks
        self.sock = connect(target, carrier, receiveBuffer)
        self.sock.sendall(" ".join([name, self.token, *args]).encode() + b"\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readLine(self) -> bytes:
        """
        One line (the cases' own short messages), byte by byte so that
        nothing after it is consumed.
        """
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                break
            line += chunk
        return line

    def readAll(self, limit: int | None = None, size: int = 16384) -> Reading:
        """
        Read until the server closes, resets, stalls, or C{limit} bytes came.
        """
        self.sock.settimeout(STALL)
        data = bytearray()
        first = True
        while limit is None or len(data) < limit:
            try:
                chunk = self.sock.recv(size)
            except TimeoutError:
                return Reading(bytes(data), "stalled")
            except ConnectionResetError:
                return Reading(bytes(data), "reset")
            if not chunk:
                return Reading(bytes(data), "reset" if wasReset(self.sock) else "eof")
            data += chunk
            if first:
                first = False
                self.hooks.begun()
        return Reading(bytes(data), "limit")

    def shutdownWrite(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """
        Close; over TLS, answer the server's close_notify first, as a client
        that reads to the end does.
        """
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock = self.sock.unwrap()
            except (OSError, ValueError):
                pass
        self.sock.close()

    def reset(self) -> None:
        """
        Close with a reset (RST) rather than a FIN.
        """
        raw = self.sock
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()

    def record(self) -> list[list[Any]]:
        return readRecord(self.target, self.token)


def readRecord(target: Target, token: str) -> list[list[Any]]:
    """
    What the server's side of the connection C{token} observed, once it
    saved it.
    """
    path = target.records / f"{token}.json"
    waitUntil(path.exists, RECORD_TIMEOUT, f"the server's record {path.name}")
    events: list[list[Any]] = json.loads(path.read_text())
    return events


#: Linux's TCP state of a connection its peer reset (include/net/tcp_states.h).
TCP_CLOSE = 7


def wasReset(sock: socket.socket) -> bool:
    """
    Whether the end of a TLS connection just read was a reset.  Python's
    ssl module before 3.13 reads a reset as an end of file (C{b""}, a
    "ragged EOF"), where 3.13 raises L{ConnectionResetError}; the TCP state
    tells the two apart (closed after a reset, close-wait after a FIN).
    """
    if not isinstance(sock, ssl.SSLSocket):
        return False
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    return info[0] == TCP_CLOSE


def connect(target: Target, carrier: str, receiveBuffer: int | None) -> socket.socket:
    """
    A connected socket: C{tcp}, C{unix}, C{tls}, or C{proxy} (TCP, with a
    PROXY header sent first).
    """
    family = socket.AF_UNIX if carrier == "unix" else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    if receiveBuffer:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    raw.settimeout(STALL)
    address: Any = {
        "tcp": ("127.0.0.1", target.tcp),
        "unix": target.unix,
        "tls": ("127.0.0.1", target.tls),
        "proxy": ("127.0.0.1", target.proxy),
    }[carrier]
    raw.connect(address)
    if carrier == "proxy":
        raw.sendall(shapes.PROXY_HEADER)
    if carrier == "tls":
        return target.tlsContext().wrap_socket(raw, server_hostname="localhost")
    return raw


def compress(events: list[list[Any]]) -> list[Any]:
    """
    Runs of the same event written once with their count: easier to read
    in a failed comparison.
    """
    out: list[Any] = []
    for event in events:
        if out and out[-1][0] == event:
            out[-1][1] += 1
        else:
            out.append([event, 1])
    return [event if n == 1 else [*event, f"x{n}"] for event, n in out]


#: A case's client: where to connect, over what, and the hooks to call.
Run = Callable[[Target, str, Hooks], Outcome]
#: What any correct outcome shows, on a carrier.
Check = Callable[[Outcome, str], bool]


@dataclass(frozen=True)
class ClientCase:
    """
    One case as the test sees it: the client to run on a carrier, and
    what any correct outcome must show (checked on plain Twisted's, so
    that a case that tests nothing fails).

    @ivar service: one of Twisted's own protocols (TCP, epoll only).
    """

    name: str
    carriers: tuple[str, ...]
    run: Run
    check: Check
    service: bool = False


def timed(run: Callable[[], Outcome]) -> Outcome:
    """
    Run a client, turning a failure on the client's side (a stall, a
    reset, a protocol error from a library client) into an outcome rather
    than an error: a difference like any other.
    """
    started = time.monotonic()
    try:
        return run()
    except Exception as e:
        return {
            "client error": f"{type(e).__name__}: {e}"[:200],
            "after": f"{time.monotonic() - started:.0f}s",
        }
