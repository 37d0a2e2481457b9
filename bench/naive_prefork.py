"""
A naive Twisted pre-fork, the obvious thing to write by hand:

    python bench/naive_prefork.py --port 8080 --workers 5

The parent binds and listens (backlog 1024, non-blocking), imports the
protocol, then C{os.fork()}s N children.  Each child installs a fresh epoll
reactor, adopts the inherited listening socket with
C{reactor.adoptStreamPort} and runs until told to stop.  Every child waits
on the same socket with plain C{EPOLLIN}, so every idle child wakes for
every connection (the thundering herd) and a woken child accepts up to
Twisted's whole batch (100+) at once.  No recycling, no respawn.

With C{--reuseport}, the experiment for nginx's C{listen ... reuseport}
design instead: the parent opens one C{SO_REUSEPORT} socket per worker
slot on the same address and holds them all; child K adopts only socket K,
so the kernel hashes each connection to one child's queue and wakes only
that child.

Each child prints C{child K pid P ready} when serving and C{child K pid P
served N connections} when stopped; the parent forwards SIGTERM/SIGINT to
the children and waits for them.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loading import loadProtocol


def child(number: int, listening: socket.socket, protocol: type) -> int:
    # The parent's handlers must not run here; the reactor installs its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # A reactor per process, created after the fork: an epoll fd inherited
    # from the parent would be shared by every child.
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    factory = Factory.forProtocol(protocol)
    factory.noisy = False
    port = reactor.adoptStreamPort(  # type: ignore[attr-defined]
        listening.fileno(), socket.AF_INET, factory
    )
    listening.close()  # adoptStreamPort dup()ed it
    pid = os.getpid()
    print(f"child {number} pid {pid} ready", flush=True)
    reactor.run()
    print(f"child {number} pid {pid} served {port.sessionno} connections", flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--workers", "-w", type=int, default=2)
    parser.add_argument("--protocol", default="preforktwist.examples.HelloHTTP")
    parser.add_argument("--backlog", type=int, default=1024)

    parser.add_argument(
        "--reuseport",
        action="store_true",
        help="one SO_REUSEPORT socket per child, all held by the parent",
    )
    args = parser.parse_args()

    def listen() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if args.reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((args.interface, args.port))
        s.listen(args.backlog)
        s.setblocking(False)
        return s

    slots = [listen() for _ in range(args.workers if args.reuseport else 1)]
    protocol = loadProtocol(args.protocol)  # imported once, shared by the forks

    children: set[int] = set()
    for number in range(1, args.workers + 1):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                mine = slots[(number - 1) % len(slots)]
                for other in slots:
                    if other is not mine:
                        other.close()
                status = child(number, mine, protocol)
            finally:
                sys.stdout.flush()
                os._exit(status)
        children.add(pid)
    print(
        f"naive parent pid {os.getpid()} listening on "
        f"{args.interface}:{args.port} with {len(children)} children",
        flush=True,
    )

    def forward(signum: int, frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while children:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
    for s in slots:
        s.close()


if __name__ == "__main__":
    main()
