"""
Twisted's own protocols, client side, with real clients: raw HTTP/1.1
(pipelined requests, a range, a chunked upload, a large file to a slow
reader), smtplib with STARTTLS, poplib, a DNS query over TCP built with
twisted.names' message codec, and ftplib in passive mode.  Each client
first sends the line that names its case, then speaks the protocol.
"""

from __future__ import annotations

import ftplib
import poplib
import re
import smtplib
import socket
import ssl
from typing import Any

from tests.conformance import shapes
from tests.conformance.client import (
    STALL,
    ClientCase,
    Connection,
    Hooks,
    Outcome,
    Target,
    readRecord,
    timed,
)

DONE = ["connectionLost", "ConnectionDone"]


# twisted.web


def parseResponses(data: bytes, methods: list[str]) -> list[Outcome]:
    """
    HTTP/1.1 responses read back to back, one per request C{methods}
    names: status, headers (without the Date, which changes), and the
    body's size and digest.
    """
    responses = []
    for method in methods:
        if not data:
            break
        head, _, data = data.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(line.split(": ", 1)) for line in lines]
        fields = {name.lower(): value for name, value in headers}
        body = b""
        if fields.get("transfer-encoding") == "chunked":
            while True:
                size, _, data = data.partition(b"\r\n")
                n = int(size, 16)
                body, data = body + data[:n], data[n + 2 :]
                if n == 0:
                    break
        elif method != "HEAD":
            n = int(fields.get("content-length", "0"))
            body, data = data[:n], data[n:]
        responses.append(
            {
                "status": status,
                "headers": sorted(h for h in headers if h[0].lower() != "date"),
                "body": [len(body), shapes.digest(body)[:16]],
            }
        )
    return responses


def request(
    method: str, path: str, headers: tuple[str, ...] = (), body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: conformance.example", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http(requests: list[bytes], slow: bool = False) -> Any:
    """
    Send the requests back to back on one connection (the last asks to
    close it) and read every response.
    """

    def run(target: Target, carrier: str, hooks: Hooks) -> Outcome:
        def go() -> Outcome:
            c = Connection(
                target,
                carrier,
                "web",
                receiveBuffer=shapes.SMALL_BUFFER if slow else None,
                hooks=hooks,
            )
            c.send(b"".join(requests))
            reading = c.readAll()
            c.close()
            return {
                "end": reading.end,
                "responses": parseResponses(
                    reading.data, [r.split(b" ", 1)[0].decode() for r in requests]
                ),
                "server": c.record(),
            }

        return timed(go)

    return run


PIPELINED = [
    request("GET", "/files/small.txt"),
    request("GET", "/files/big.bin", ("Range: bytes=1000-1999",)),
    request("HEAD", "/files/small.txt"),
    request("GET", "/files/missing"),
    request("GET", "/files/big.bin", ("Range: bytes=-10", "Connection: close")),
]


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [*pieces, b""])


UPLOADED = [shapes.pattern(n, f"chunk-{n}") for n in (1, 100, 65536, 200_000, 7)]
CHUNKED = request(
    "POST",
    "/digest",
    ("Transfer-Encoding: chunked", "Connection: close"),
    chunked(UPLOADED),
)
BIG = request("GET", "/files/big.bin", ("Connection: close",))


def checkPipelined(outcome: Outcome, carrier: str) -> bool:
    statuses = [r["status"] for r in outcome["responses"]]
    ranged = shapes.pattern(shapes.BIG_FILE, "big-file")[1000:2000]
    return statuses == [
        "HTTP/1.1 200 OK",
        "HTTP/1.1 206 Partial Content",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 404 Not Found",
        "HTTP/1.1 206 Partial Content",
    ] and outcome["responses"][1]["body"] == [1000, shapes.digest(ranged)[:16]]


def checkUpload(outcome: Outcome, carrier: str) -> bool:
    data = b"".join(UPLOADED)
    reply = b"%d %s" % (len(data), shapes.digest(data).encode())
    body: list[Any] = outcome["responses"][0]["body"]
    return body == [len(reply), shapes.digest(reply)[:16]]


def checkBig(outcome: Outcome, carrier: str) -> bool:
    data = shapes.pattern(shapes.BIG_FILE, "big-file")
    body: list[Any] = outcome["responses"][0]["body"]
    return body == [len(data), shapes.digest(data)[:16]]


# twisted.mail


def dispatch(target: Target, name: str) -> tuple[socket.socket, str]:
    """
    A connection for a library client, its case named: the socket and
    the token.
    """
    c = Connection(target, "tcp", name)
    c.sock.settimeout(STALL)
    return c.sock, c.token


class SMTP(smtplib.SMTP):
    def __init__(self, target: Target) -> None:
        self.target = target
        # Connects (the certificate is for localhost) and reads the greeting.
        super().__init__("localhost", 25, "client.example", timeout=STALL)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock, self.token = dispatch(self.target, "smtp")
        return sock


class POP3(poplib.POP3):
    def __init__(self, target: Target) -> None:
        self.target = target
        super().__init__("conformance.example", timeout=STALL)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock, self.token = dispatch(self.target, "pop3")
        return sock


class FTP(ftplib.FTP):
    def __init__(self, target: Target) -> None:
        self.target = target
        super().__init__(timeout=STALL)

    def connect(self, *args: Any, **kwargs: Any) -> str:
        self.sock, self.token = dispatch(self.target, "ftp")
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def waitForClose(sock: socket.socket) -> str:
    """
    After QUIT: wait for the server to close, so that its side of the
    close does not race the client's; over TLS, answer its close_notify.
    """
    try:
        while sock.recv(65536):
            pass
        if isinstance(sock, ssl.SSLSocket):
            sock.unwrap()
    except (OSError, ValueError) as e:
        return type(e).__name__
    return "eof"


def smtp(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        client = SMTP(target)
        steps: list[Any] = [client.ehlo()]
        steps.append(client.starttls(context=target.tlsContext()))
        steps.append(client.ehlo())
        message = b"Subject: hello\r\n\r\n" + b"line\r\n" * 5000 + b".dot\r\n"
        steps.append(client.sendmail("from@example.test", ["to@example.test"], message))
        steps.append(client.docmd("QUIT"))
        assert client.sock is not None
        steps.append(waitForClose(client.sock))
        client.close()
        return {"steps": repr(steps), "server": readRecord(target, client.token)}

    return timed(go)


def checkSMTP(outcome: Outcome, carrier: str) -> bool:
    data = b"Subject: hello\n\n" + b"line\n" * 5000 + b".dot"
    message = ["message", "to@example.test", len(data), shapes.digest(data)]
    return message in outcome["server"] and outcome["server"][-1] == DONE


def pop3(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        client = POP3(target)
        welcome = re.sub(rb"<[^>]*>", b"<magic>", client.getwelcome())
        steps: list[Any] = [welcome, client.user("reader"), client.pass_("secret")]
        steps += [client.stat(), client.list()]
        response, lines, octets = client.retr(1)
        steps.append([response, len(lines), shapes.digest(b"\n".join(lines)), octets])
        steps.append(client.quit())
        return {"steps": repr(steps), "server": readRecord(target, client.token)}

    return timed(go)


def checkPOP3(outcome: Outcome, carrier: str) -> bool:
    return "+OK" in outcome["steps"] and outcome["server"] == [DONE]


# twisted.names


def dns(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    """
    Three queries sent back to back on one TCP connection, each with its
    two-byte length; the answers as the codec reads them.
    """
    from twisted.names import dns as codec

    def go() -> Outcome:
        c = Connection(target, carrier, "dns")
        queries = [(1, b"www.example.test", codec.A)]
        queries += [(2, b"long.example.test", codec.TXT)]
        queries += [(3, b"nowhere.example.test", codec.A)]
        for id, name, kind in queries:
            m = codec.Message(id=id, recDes=True)
            m.queries = [codec.Query(name, kind, codec.IN)]
            wire = m.toStr()
            c.send(len(wire).to_bytes(2, "big") + wire)
        answers: list[list[Any]] = []
        stream = b""
        while len(answers) < len(queries):
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            messages, stream = frames(stream + chunk)
            for wire in messages:
                m = codec.Message()
                m.fromStr(wire)
                answers.append(
                    [m.id, m.rCode, m.auth, sorted(repr(a.payload) for a in m.answers)]
                )
        c.close()
        return {"answers": sorted(answers), "server": c.record()}

    return timed(go)


def frames(stream: bytes) -> tuple[list[bytes], bytes]:
    """
    The whole messages at the front of a DNS-over-TCP stream (each after
    its two-byte length), and what is left.
    """
    messages = []
    while len(stream) >= 2:
        size = int.from_bytes(stream[:2], "big")
        if len(stream) < 2 + size:
            break
        messages.append(stream[2 : 2 + size])
        stream = stream[2 + size :]
    return messages, stream


def checkDNS(outcome: Outcome, carrier: str) -> bool:
    answers = outcome["answers"]
    return (
        [a[1] for a in answers] == [0, 0, 3]
        and len(answers[0][3]) == 2
        and answers[1][3][0].startswith("<TXT data=")
    )


# twisted.protocols.ftp


def ftp(target: Target, carrier: str, hooks: Hooks) -> Outcome:
    def go() -> Outcome:
        client = FTP(target)
        steps: list[Any] = [client.connect(), client.login("user", "pw")]
        steps += [client.pwd(), sorted(client.nlst("pub"))]
        listing: list[str] = []
        steps += [client.retrlines("LIST pub", listing.append), listing]
        received: list[bytes] = []
        steps.append(client.retrbinary("RETR pub/big.bin", received.append))
        steps.append(shapes.digest(b"".join(received)))
        name = f"upload-{client.token}.bin"
        data = shapes.pattern(300_000, "ftp-upload")
        steps.append(client.storbinary(f"STOR {name}", _Reader(data)))
        steps.append(client.size(name))
        back: list[bytes] = []
        steps.append(client.retrbinary(f"RETR {name}", back.append))
        steps.append(b"".join(back) == data)
        steps.append(client.delete(name))
        steps.append(client.quit())
        text = repr(steps).replace(client.token, "TOKEN")
        return {"steps": text, "server": readRecord(target, client.token)}

    return timed(go)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) if size < 0 else size
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk


def checkFTP(outcome: Outcome, carrier: str) -> bool:
    big = shapes.digest(shapes.pattern(shapes.BIG_FILE, "big-file"))
    return big in outcome["steps"] and "True" in outcome["steps"]


CASES = [
    ClientCase("web-pipelined", ("tcp",), http(PIPELINED), checkPipelined, True),
    ClientCase("web-chunked-upload", ("tcp",), http([CHUNKED]), checkUpload, True),
    ClientCase("web-large-file", ("tcp",), http([BIG], slow=True), checkBig, True),
    ClientCase("smtp-starttls", ("tcp",), smtp, checkSMTP, True),
    ClientCase("pop3-retr", ("tcp",), pop3, checkPOP3, True),
    ClientCase("dns-tcp", ("tcp",), dns, checkDNS, True),
    ClientCase("ftp-passive", ("tcp",), ftp, checkFTP, True),
]
