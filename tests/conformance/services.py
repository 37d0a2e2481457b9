"""
Twisted's own protocols as conformance cases: twisted.web (static files,
ranges, pipelining, a chunked upload), twisted.mail (ESMTP with STARTTLS,
POP3), twisted.names over TCP and twisted.protocols.ftp.  Each case builds
the protocol its factory would, on the connection the dispatcher hands
over.  Each module is imported when its case first runs, and each factory
built once per process, as a server would build it once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from zope.interface import implementer

from tests.conformance import shapes
from tests.conformance.recording import Recorder, case, tlsOptions

_factories: dict[str, IProtocolFactory] = {}


def served(name: str, make: Callable[[], IProtocolFactory]) -> IProtocolFactory:
    """
    The factory for C{name}, built and started on first use.
    """
    factory = _factories.get(name)
    if factory is None:
        factory = _factories[name] = make()
        factory.doStart()
    return factory


def files() -> Path:
    return Path(os.environ[shapes.FILES])


def build(factory: IProtocolFactory) -> IProtocol:
    from twisted.internet.address import IPv4Address

    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
    assert protocol is not None
    return protocol


# twisted.web


def makeSite() -> IProtocolFactory:
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import File

    class Digest(Resource):
        """
        Answer a POST with the length and digest of its body.
        """

        isLeaf = True

        def render_POST(self, request: Any) -> bytes:
            body = request.content.read()
            return b"%d %s" % (len(body), shapes.digest(body).encode())

    root = Resource()
    root.putChild(b"files", File(str(files() / "web")))
    root.putChild(b"digest", Digest())
    return Site(root)


@case("web")
def web(record: Recorder, args: list[str]) -> IProtocol:
    return build(served("web", makeSite))


# twisted.mail: ESMTP


def esmtp(record: Recorder, args: list[str]) -> IProtocol:
    from twisted.mail import smtp
    from twisted.mail.interfaces import IMessageDelivery, IMessageSMTP

    @implementer(IMessageSMTP)
    class Message:
        def __init__(self, recipient: str) -> None:
            self.recipient = recipient
            self.lines: list[bytes] = []

        def lineReceived(self, line: bytes) -> None:
            self.lines.append(line)

        def eomReceived(self) -> Deferred[str]:
            body = b"\n".join(self.lines)
            record.add("message", self.recipient, len(body), shapes.digest(body))
            return succeed("queued")

        def connectionLost(self) -> None:
            record.add("message lost", self.recipient)

    @implementer(IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
            return None

        def validateFrom(self, helo: Any, origin: Any) -> Any:
            record.add("from", str(origin))
            return origin

        def validateTo(self, user: Any) -> Callable[[], Message]:
            recipient = str(user.dest)
            return lambda: Message(recipient)

    protocol = smtp.ESMTP(contextFactory=tlsOptions())
    protocol.host = b"conformance.example"
    protocol.delivery = Delivery()
    protocol.factory = None
    return protocol


case("smtp")(esmtp)


# twisted.mail: POP3


def makePOP3() -> IProtocolFactory:
    from io import BytesIO

    from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
    from twisted.cred.portal import IRealm, Portal
    from twisted.internet.protocol import ServerFactory
    from twisted.mail import pop3

    message = b"Subject: large\r\n\r\n" + b"".join(
        b"line %06d %s\r\n" % (i, shapes.pattern(40, f"pop3-{i}").hex().encode())
        for i in range(shapes.MESSAGE_SIZE // 100)
    )

    @implementer(pop3.IMailbox)
    class Mailbox:
        def listMessages(self, i: int | None = None) -> Any:
            return [len(message)] if i is None else len(message)

        def getMessage(self, i: int) -> BytesIO:
            return BytesIO(message)

        def getUidl(self, i: int) -> bytes:
            return b"large-message"

        def deleteMessage(self, i: int) -> None:
            pass

        def undeleteMessages(self) -> None:
            pass

        def sync(self) -> None:
            pass

    @implementer(IRealm)
    class Realm:
        def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
            return pop3.IMailbox, Mailbox(), lambda: None

    portal = Portal(
        Realm(), [InMemoryUsernamePasswordDatabaseDontUse(reader=b"secret")]
    )

    class Server(pop3.POP3):
        def __init__(self) -> None:
            self.portal = portal  # type: ignore[assignment]

    factory = ServerFactory()
    factory.protocol = Server  # type: ignore[assignment]
    return factory


@case("pop3")
def pop3(record: Recorder, args: list[str]) -> IProtocol:
    return build(served("pop3", makePOP3))


# twisted.names


def makeDNS() -> IProtocolFactory:
    from twisted.names import authority, dns, server

    class Authority(authority.FileAuthority):
        """
        A zone held in memory.
        """

        def loadFile(self, filename: object) -> None:
            zone = b"example.test"
            soa = (
                zone,
                dns.Record_SOA(
                    mname=b"ns.example.test",
                    rname=b"root.example.test",
                    serial=1,
                    refresh=3600,
                    retry=600,
                    expire=86400,
                    minimum=300,
                    ttl=300,
                ),
            )
            # A TXT answer larger than a UDP datagram's 512 bytes.
            long = [shapes.pattern(60, f"txt-{i}").hex().encode() for i in range(12)]
            self.soa = soa  # type: ignore[assignment]
            self.records = {  # type: ignore[assignment]
                zone: [soa[1]],
                b"www.example.test": [
                    dns.Record_A("192.0.2.10", ttl=60),
                    dns.Record_A("192.0.2.11", ttl=60),
                ],
                b"long.example.test": [dns.Record_TXT(*long, ttl=60)],
            }

    return server.DNSServerFactory(authorities=[Authority(None)])


@case("dns")
def names(record: Recorder, args: list[str]) -> IProtocol:
    return build(served("dns", makeDNS))


# twisted.protocols.ftp


def makeFTP() -> IProtocolFactory:
    from twisted.cred.checkers import (
        AllowAnonymousAccess,
        InMemoryUsernamePasswordDatabaseDontUse,
    )
    from twisted.cred.portal import Portal
    from twisted.protocols.ftp import FTPFactory, FTPRealm

    root = files() / "ftp"
    realm = FTPRealm(str(root / "anonymous"), userHome=str(root / "home"))
    # Twisted's FTP server hands the checker the name and password as text.
    users = InMemoryUsernamePasswordDatabaseDontUse()
    users.addUser("user", "pw")  # type: ignore[arg-type]
    return FTPFactory(Portal(realm, [AllowAnonymousAccess(), users]))


@case("ftp")
def ftp(record: Recorder, args: list[str]) -> IProtocol:
    return build(served("ftp", makeFTP))
