"""
The baseline: one plain Twisted process serving a protocol on 127.0.0.1.

    python bench/single.py --port 8080 [--protocol bench.protocols.BurnHTTP]
    python bench/single.py --port 8080 --factory bench.webhello.site

The same listen backlog as preforktwist (1024), the default reactor (epoll
on Linux), no worker processes.  Prints C{listening on 127.0.0.1:PORT} when
ready; SIGTERM or SIGINT stops it, printing how many connections it took.
"""

from __future__ import annotations

import argparse
import os
import sys

# Runnable as a script from anywhere: make the checkout importable, so that
# "bench.protocols.BurnHTTP" and "preforktwist.examples.HelloHTTP" resolve.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loading import loadName, loadProtocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--protocol", default="preforktwist.examples.HelloHTTP")
    parser.add_argument(
        "--factory",
        help="serve this protocol factory (a twisted.web Site, say) "
        "instead of --protocol",
    )
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()

    from twisted.internet import reactor
    from twisted.internet.interfaces import IProtocolFactory
    from twisted.internet.protocol import ServerFactory
    from twisted.internet.tcp import Port

    if args.factory:
        factory: object = loadName(args.factory)
        if not IProtocolFactory.providedBy(factory):
            raise SystemExit(f"bench: {args.factory} is not a protocol factory")
    else:
        protocolFactory = ServerFactory.forProtocol(loadProtocol(args.protocol))
        protocolFactory.noisy = False
        factory = protocolFactory
    port = reactor.listenTCP(
        args.port,
        factory,  # type: ignore[arg-type]
        backlog=args.backlog,
        interface=args.interface,
    )
    assert isinstance(port, Port)
    print(
        f"single pid {os.getpid()} listening on {args.interface}:{args.port}",
        flush=True,
    )
    reactor.run()
    print(f"single pid {os.getpid()} served {port.sessionno} connections", flush=True)


if __name__ == "__main__":
    main()
