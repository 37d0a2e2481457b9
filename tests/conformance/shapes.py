"""
What the server-side cases send and what the clients expect, known to both
sides: sizes, the deterministic contents of every transfer, and the names
of the environment variables that tell the servers where to put things.
"""

from __future__ import annotations

import hashlib

#: A directory where each case's server side writes what it observed, one
#: JSON file per connection, named after the token the client chose.
RECORDS = "PREFORKTWIST_CONFORMANCE_RECORDS"
#: A directory of files the servers serve (static web files, the FTP root,
#: the certificate and key for STARTTLS).
FILES = "PREFORKTWIST_CONFORMANCE_FILES"

#: The chunk a push producer writes per resumeProducing: well past
#: Twisted's 64 KiB buffer even after the kernel took what it could, so
#: every chunk pauses the producer once.
PUSH_CHUNK = 256 * 1024
#: Chunks the push producers write in all.
PUSH_CHUNKS = 8
#: The server's send buffer in the slow-reader cases (SO_SNDBUF), and the
#: client's receive buffer: small kernel buffers, so that what a case
#: writes waits in Twisted's buffer rather than in the kernel's.
SMALL_BUFFER = 16 * 1024
#: What the pull producer (FileSender) sends.
PULL_SIZE = 1024 * 1024
#: A write larger than any socket buffer, then a sequence of this many
#: 64 KiB pieces.
BIG_WRITE = 3 * 1024 * 1024
BIG_PIECES = 48
#: What a client uploads.
UPLOAD_SIZE = 4 * 1024 * 1024
#: The size of the POP3 message and of the files served over HTTP and FTP.
MESSAGE_SIZE = 300 * 1024
BIG_FILE = 2 * 1024 * 1024
#: The file whose descriptor the server passes, and what is in it.
FD_FILE = "passed.txt"
FD_CONTENT = b"this file was opened by the server\n"
#: The PROXY header the proxy carrier sends, and the addresses it names.
PROXY_HEADER = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n"


def pattern(size: int, label: str) -> bytes:
    """
    C{size} bytes that never repeat a block, different for each C{label}: a
    reordered, duplicated or dropped piece changes the digest.
    """
    return hashlib.shake_128(label.encode()).digest(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def writeOrderPieces() -> list[bytes]:
    """
    The pieces the write-order case writes, in order: small ones, one
    larger than the socket buffers, and one after C{loseConnection}.
    """
    return [
        b"first;",
        b"sequence-1;",
        b"sequence-2;",
        pattern(300_000, "write-order-big"),
        b"after-big;",
        b"sequence-3;",
        pattern(70_000, "write-order-sequence"),
        b"next-turn;",
        b"after-loseConnection;",
    ]


def bigWritePieces() -> list[bytes]:
    """
    One write larger than any socket buffer, then a sequence of pieces.
    """
    return [pattern(BIG_WRITE, "big-write")] + [
        pattern(64 * 1024, f"big-piece-{i}") for i in range(BIG_PIECES)
    ]
