"""
How a case's server side is declared and what it writes down: the
registry of cases the dispatcher knows, the L{Recorder} whose events the
test reads back, and small helpers shared by the cases.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.interfaces import IAddress, IProtocol
from twisted.internet.protocol import Protocol

from tests.conformance import shapes

#: What a client's token looks like: it names a file.
TOKEN = re.compile(r"[0-9a-f]{32}\Z")


class Recorder:
    """
    What the server side of one connection observed, in order.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.events: list[list[Any]] = []

    def add(self, *event: Any) -> None:
        self.events.append(list(event))

    def save(self) -> None:
        """
        Write the events where the test looks for them, atomically: a
        file that exists is complete.
        """
        directory = Path(os.environ[shapes.RECORDS])
        final = directory / f"{self.token}.json"
        partial = directory / f"{self.token}.partial"
        partial.write_text(json.dumps(self.events))
        os.replace(partial, final)


def describeAddress(address: IAddress) -> list[Any]:
    """
    An address as JSON: its class, then what identifies it.
    """
    kind = type(address).__name__
    if hasattr(address, "port"):
        return [kind, getattr(address, "type", ""), address.host, address.port]  # type: ignore[attr-defined]
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return [kind, name]


def rawSocket(transport: object) -> socket.socket | None:
    """
    The socket under a transport, through TLS and PROXY wrappers.
    """
    for _ in range(4):
        getHandle = getattr(transport, "getHandle", None)
        if getHandle is not None:
            handle = getHandle()
            if isinstance(handle, socket.socket):
                return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            break
    return None


def smallSendBuffer(transport: object) -> None:
    """
    Shrink the kernel's send buffer, so what the case writes waits in
    Twisted's buffer and the producer calls happen as a slow reader makes
    them.
    """
    skt = rawSocket(transport)
    assert skt is not None, f"no socket under {transport!r}"
    skt.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, shapes.SMALL_BUFFER)


class Case(Protocol):
    """
    A case's server side: a protocol with a recorder and the client's
    arguments.
    """

    transport: Any

    def __init__(self, record: Recorder, args: list[str]) -> None:
        self.record = record
        self.args = args


Builder = Callable[[Recorder, list[str]], IProtocol]
CASES: dict[str, Builder] = {}

B = TypeVar("B", bound=Builder)


def case(name: str) -> Callable[[B], B]:
    """
    Register a case under C{name}: a L{Case} subclass or any callable
    building a protocol from a recorder and the client's arguments.
    """

    def register(builder: B) -> B:
        CASES[name] = builder
        return builder

    return register


def later(delay: float, call: Callable[..., object], *args: object) -> None:
    from twisted.internet import reactor

    reactor.callLater(delay, call, *args)


def tlsOptions() -> Any:
    """
    The server's TLS context, from the certificate the test made.
    """
    from twisted.internet import ssl

    files = Path(os.environ[shapes.FILES])
    pem = (files / "cert.pem").read_bytes() + (files / "key.pem").read_bytes()
    return ssl.PrivateCertificate.loadPEM(pem).options()
