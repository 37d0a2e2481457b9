"""
The transport contract's cases, client side: ITransport and IConsumer
(writes, producers, closing), ITCPTransport and IUNIXTransport (addresses,
descriptors), IHalfCloseableProtocol, TLS and STARTTLS.  Each returns an
outcome to compare between plain Twisted and the pool, and says what a
correct one must show.
"""

from __future__ import annotations

import array
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from tests.conformance import shapes
from tests.conformance.client import (
    Check,
    ClientCase,
    Connection,
    Events,
    Hooks,
    Outcome,
    Run,
    Target,
    compress,
    timed,
)

ALL = ("tcp", "unix", "tls")
DONE = ["connectionLost", "ConnectionDone"]
LOST = ["connectionLost", "ConnectionLost"]


def resetReason(carrier: str) -> list[str]:
    """
    How the server sees a client that goes away with data unread or with
    SO_LINGER 0: TCP resets the connection; a UNIX socket just closes.
    """
    return DONE if carrier == "unix" else LOST


PRODUCER_CALLS = {"pauseProducing", "resumeProducing"}


def unregistered(events: Events) -> int:
    """
    Where the producer's unregistration is in C{events} (0 if nowhere).
    """
    return next((i for i, e in enumerate(events) if e[0] == "unregisterProducer"), 0)


def producerCalls(events: Events) -> Events:
    """
    The events with the pause and resume calls before the producer
    unregisters written as one: whether they alternate, starting with a
    pause (how many there are depends on how fast the client reads, and
    on how much of each write the kernel takes at once).  Anything after
    the unregistration is kept as it is.
    """
    end = unregistered(events)
    names = [e[0] for e in events[:end] if e[0] in PRODUCER_CALLS]
    alternating = ["pauseProducing", "resumeProducing"] * len(names)
    summary: Any = names
    if not names:
        summary = "none"
    elif names == alternating[: len(names)]:
        summary = "alternating"
    kept = [e for e in events[:end] if e[0] not in PRODUCER_CALLS] + events[end:]
    return [["pause and resume before unregistering", summary], *kept]


def withoutProducerCalls(events: Events) -> Events:
    """
    The events without pause and resume calls, whose number depends on how
    far a client read before it went away, and a note of whether there
    were any.
    """
    kept = [e for e in events if e[0] not in PRODUCER_CALLS]
    return [["producer called", any(e[0] in PRODUCER_CALLS for e in events)], *kept]


def afterUnregistering(events: Events) -> Events:
    """
    The events from the producer's unregistration on: whether it was
    paused before depends on how much the kernel took at once.
    """
    return events[unregistered(events) :]


def readToEnd(
    name: str, slow: bool = False, normalise: Callable[[Events], Any] = compress
) -> Run:
    """
    A client that reads what the case sends until the server closes: a
    slow reader (a small receive buffer) when C{slow}.
    """

    def run(target: Target, carrier: str, hooks: Hooks) -> Outcome:
        def go() -> Outcome:
            c = Connection(
                target,
                carrier,
                name,
                receiveBuffer=shapes.SMALL_BUFFER if slow else None,
                hooks=hooks,
            )
            reading = c.readAll()
            c.close()
            return {**reading.summary(), "server": normalise(c.record())}

        return timed(go)

    return run


def sent(data: bytes, events: list[Any], overTLS: bytes | None = None) -> Check:
    """
    A check: the client read C{data} (C{overTLS} on a TLS connection, if
    given) to a clean end and the server observed C{events} (as the
    client normalised them).
    """

    def check(outcome: Outcome, carrier: str) -> bool:
        received = overTLS if overTLS is not None and carrier == "tls" else data
        return outcome == {
            "bytes": len(received),
            "sha256": shapes.digest(received)[:16],
            "end": "eof",
            "server": events,
        }

    return check


PUSHED = b"".join(
    shapes.pattern(shapes.PUSH_CHUNK, f"push-{i}") for i in range(shapes.PUSH_CHUNKS)
)
PUSHED_THEN = [
    ["pause and resume before unregistering", "alternating"],
    ["unregisterProducer"],
    DONE,
]
#: FileSender reads 16 KiB per resume, and once more to find the end.
PULL_CALLS = [["resumeProducing", f"x{shapes.PULL_SIZE // 2**14 + 1}"], ["sent"], DONE]


def readThenReset(name: str, limit: int) -> Run:
    """
    Read C{limit} bytes of an endless transfer, then reset the connection:
    the transport stops the producer.
    """

    def run(target: Target, carrier: str, hooks: Hooks) -> Outcome:
        def go() -> Outcome:
            c = Connection(target, carrier, name, receiveBuffer=shapes.SMALL_BUFFER)
            reading = c.readAll(limit=limit)
            c.reset()
            return {"end": reading.end, "server": withoutProducerCalls(c.record())}

        return timed(go)

    return run


def upload(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        data = shapes.pattern(shapes.UPLOAD_SIZE, "upload")
        c = Connection(target, carrier, "upload")
        c.send(b"%d\n" % len(data) + data)
        reading = c.readAll()
        c.close()
        return {
            "reply": reading.data.decode(),
            "end": reading.end,
            "server": c.record(),
        }

    return timed(go)


def idle(how: str) -> Run:
    """
    The connection ends while the server waits: the client closes it,
    resets it, or asks the server to close it.
    """

    def run(target: Target, carrier: str, hooks: Hooks) -> Outcome:
        def go() -> Outcome:
            c = Connection(target, carrier, "idle")
            ready = c.readLine()
            end = ""
            if how == "client closes":
                c.close()
            elif how == "client resets":
                c.reset()
            else:
                c.send(b"close\n")
                end = c.readAll().end
                c.close()
            return {"ready": ready.decode(), "end": end, "server": c.record()}

        return timed(go)

    return run


def writeAfterReset(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        c = Connection(target, carrier, "write-after-reset")
        waiting = c.readLine()
        c.reset()
        return {"waiting": waiting.decode(), "server": c.record()}

    return timed(go)


#: How the client sees an aborted connection end, by carrier.
ABORT_ENDS = {"tcp": ("reset",), "unix": ("eof",), "tls": ("reset",)}


def abort(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        c = Connection(target, carrier, "abort")
        reading = c.readAll()
        c.close()
        # What was written in the same turn as the abort is dropped: it
        # was still in the transport's buffer.
        return {"end": reading.end, "bytes": len(reading.data), "server": c.record()}

    return timed(go)


def halfCloseByClient(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        c = Connection(target, carrier, "half-close-client")
        c.send(shapes.pattern(100_000, "half-close-upload"))
        c.shutdownWrite()
        reading = c.readAll()
        c.close()
        return {
            "reply": reading.data.decode(),
            "end": reading.end,
            "server": c.record(),
        }

    return timed(go)


def halfCloseByServer(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        c = Connection(target, carrier, "half-close-server")
        reading = c.readAll()
        # The server closed its side only: it still reads.
        c.send(b"after")
        c.shutdownWrite()
        after = c.readAll()
        c.close()
        return {**reading.summary(), "after": after.summary(), "server": c.record()}

    return timed(go)


def transportPause(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        c = Connection(target, carrier, "transport-pause")
        paused = c.readLine()
        c.send(b"early end\n")
        reading = c.readAll()
        c.close()
        return {
            "paused": paused.decode(),
            "reply": reading.data.decode(),
            "server": c.record(),
        }

    return timed(go)


def addresses(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    """
    Addresses as the server saw them, with the values the client knows
    (its own port, the server's port or path) named rather than numbered.
    """

    def go() -> Outcome:
        c = Connection(target, carrier, "addresses")
        known: dict[Any, str] = {}
        if carrier == "unix":
            known[target.unix] = "the listener's path"
        elif carrier != "proxy":
            # Behind a PROXY header the addresses are the header's.
            known[c.sock.getsockname()[1]] = "the client's port"
            known[c.sock.getpeername()[1]] = "the listener's port"
        ready = c.readLine()
        c.close()
        server = [[known.get(v, v) for v in e] for e in c.record()]
        return {"ready": ready.decode(), "server": server}

    return timed(go)


def sendDescriptor(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    """
    Receive the byte and the descriptor that travels with it; read the
    file through it.
    """

    def go() -> Outcome:
        c = Connection(target, carrier, "send-fd")
        fds = array.array("i")
        data, ancillary, _, _ = c.sock.recvmsg(1, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        contents = []
        for fd in fds:
            contents.append(os.pread(fd, 1000, 0).decode())
            os.close(fd)
        rest = c.readAll()
        c.close()
        return {
            "byte": data.decode(),
            "descriptors": len(fds),
            "read through them": contents,
            "then": rest.summary(),
            "server": c.record(),
        }

    return timed(go)


def startTLS(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        c = Connection(target, carrier, "starttls")
        c.send(b"STARTTLS\n")
        answer = c.readLine()
        c.sock = target.tlsContext().wrap_socket(c.sock, server_hostname="localhost")
        c.send(b"hello\n")
        line = c.readLine()
        reading = c.readAll()
        version = c.sock.version() if isinstance(c.sock, ssl.SSLSocket) else None
        c.close()
        return {
            "answer": answer.decode(),
            "line": line.decode(),
            **reading.summary(),
            "protocol": version,
            "server": c.record(),
        }

    return timed(go)


def seenAddresses(seen: list[list[Any]]) -> bool:
    """
    Whether the server saw the addresses the client knows: its own and the
    listener's, or those the PROXY header names.
    """
    tcp = [
        ["getPeer", "IPv4Address", "TCP", "127.0.0.1", "the client's port"],
        ["getHost", "IPv4Address", "TCP", "127.0.0.1", "the listener's port"],
    ]
    unix = [
        ["getPeer", "UNIXAddress", None],
        ["getHost", "UNIXAddress", "the listener's path"],
    ]
    proxy = [
        ["getPeer", "IPv4Address", "TCP", "203.0.113.7", 56324],
        ["getHost", "IPv4Address", "TCP", "192.0.2.1", 443],
    ]
    return seen in (tcp, unix, proxy)


CASES = [
    ClientCase(
        "write-order",
        (*ALL, "proxy"),
        readToEnd("write-order"),
        # TLS drops what is written after loseConnection; TCP sends it.
        sent(
            b"".join(shapes.writeOrderPieces()),
            [DONE],
            overTLS=b"".join(shapes.writeOrderPieces()[:-1]),
        ),
    ),
    ClientCase(
        "big-write",
        ALL,
        readToEnd("big-write", slow=True),
        sent(b"".join(shapes.bigWritePieces()), [DONE]),
    ),
    ClientCase(
        "upload",
        ALL,
        upload,
        lambda o, carrier: (
            o["reply"] == shapes.digest(shapes.pattern(shapes.UPLOAD_SIZE, "upload"))
        ),
    ),
    ClientCase(
        "push",
        (*ALL, "proxy"),
        readToEnd("push", slow=True, normalise=producerCalls),
        sent(PUSHED, PUSHED_THEN),
    ),
    ClientCase(
        "push-lose",
        ALL,
        readToEnd("push-lose", slow=True, normalise=producerCalls),
        sent(PUSHED, PUSHED_THEN),
    ),
    ClientCase(
        "push-stop",
        # On a UNIX socket whether the server first reads the end or fails
        # to write depends on timing, in Twisted alone too.
        ("tcp",),
        readThenReset("push-endless", 1024 * 1024),
        lambda o, carrier: (
            o["server"]
            == [["producer called", True], ["stopProducing"], resetReason(carrier)]
        ),
    ),
    ClientCase(
        "unregister",
        ALL,
        readToEnd("unregister", slow=True, normalise=afterUnregistering),
        sent(
            shapes.pattern(shapes.PUSH_CHUNK, "push-0") + b"tail",
            [["unregisterProducer"], DONE],
        ),
    ),
    ClientCase(
        "pull",
        ALL,
        readToEnd("pull", slow=True),
        sent(shapes.pattern(shapes.PULL_SIZE, "pull"), PULL_CALLS),
    ),
    ClientCase(
        "pull-lose",
        # Not over TLS: Twisted's TLS layer drops what its small-write
        # buffer holds when the producer unregisters after loseConnection
        # (one plain Twisted run in a hundred, as often pre-forked).
        ("tcp", "unix"),
        readToEnd("pull-lose", slow=True),
        sent(shapes.pattern(shapes.PULL_SIZE, "pull"), PULL_CALLS),
    ),
    ClientCase(
        "pull-stop",
        ("tcp",),
        readThenReset("pull-endless", 1024 * 1024),
        lambda o, carrier: (
            o["server"][1:]
            == [
                ["stopProducing"],
                ["failed", "Consumer asked us to stop producing"],
                resetReason(carrier),
            ]
        ),
    ),
    ClientCase(
        "closed-by-client",
        ALL,
        idle("client closes"),
        lambda o, carrier: o["server"] == [DONE],
    ),
    ClientCase(
        "reset-by-client",
        ("tcp", "unix"),
        idle("client resets"),
        lambda o, carrier: o["server"] == [resetReason(carrier)],
    ),
    ClientCase(
        "closed-by-server",
        ALL,
        idle("server closes"),
        lambda o, carrier: o["end"] == "eof" and o["server"][-1] == DONE,
    ),
    ClientCase(
        "write-after-reset",
        ("tcp",),
        writeAfterReset,
        lambda o, carrier: o["server"] == [["reset seen", True], LOST],
    ),
    ClientCase(
        "abort",
        ALL,
        abort,
        # Over TLS the TLS layer reports the aborted transport as lost.
        lambda o, carrier: (
            o["server"]
            == [LOST if carrier == "tls" else ["connectionLost", "ConnectionAborted"]]
            and o["end"] in ABORT_ENDS[carrier]
            and o["bytes"] == 0
        ),
    ),
    ClientCase(
        "half-close-client",
        ("tcp", "unix"),
        halfCloseByClient,
        lambda o, carrier: (
            o["reply"] == "received 100000"
            and o["server"]
            == [["readConnectionLost", 100000], ["writeConnectionLost"], DONE]
        ),
    ),
    ClientCase(
        "half-close-server",
        ("tcp", "unix"),
        halfCloseByServer,
        lambda o, carrier: (
            o["bytes"] == 200_000
            and o["server"]
            == [
                ["writeConnectionLost"],
                ["dataReceived", "after"],
                ["readConnectionLost"],
                DONE,
            ]
        ),
    ),
    ClientCase(
        "transport-pause",
        ALL,
        transportPause,
        lambda o, carrier: (
            o["server"]
            == [["paused"], ["resumed"], ["dataReceived", "early end\n"], DONE]
        ),
    ),
    ClientCase(
        "addresses",
        (*ALL, "proxy"),
        addresses,
        lambda o, carrier: o["server"][2] == DONE and seenAddresses(o["server"][:2]),
    ),
    ClientCase(
        "send-fd",
        ("unix",),
        sendDescriptor,
        lambda o, carrier: (
            o["descriptors"] == 1
            and o["read through them"] == [shapes.FD_CONTENT.decode()]
        ),
    ),
    ClientCase(
        "starttls",
        ("tcp",),
        startTLS,
        lambda o, carrier: o["line"] == "tls:hello\n" and o["bytes"] == 200_000,
    ),
]
