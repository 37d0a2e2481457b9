"""
The oracle: one plain Twisted process serving a factory on endpoints, with
Twisted's own reactor and C{endpoints.serverFromString}, nothing of
preforktwist.

    python -m tests.conformance.plain --factory DOTTED --listen ENDPOINT
        [--listen ENDPOINT ...] --portfile FILE [--reactor poll]

Once every endpoint listens, FILE holds JSON: the reactor's class name and
the addresses (C{[type, host, port]} or C{[type, path]}), in the order
given.  The
process stops when its standard input closes (the test that started it is
gone) or on SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.application.reactors import installReactor
from twisted.python import usage
from twisted.python.reflect import namedAny


class Options(usage.Options):
    optParameters = [
        ["factory", "f", None, "Dotted name of a protocol factory."],
        ["portfile", None, None, "Where to write the addresses listened on."],
        ["reactor", "r", None, "Short name of the reactor to install."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        A server endpoint description; may be given more than once.
        """
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not (self["factory"] and self["portfile"] and self["listen"]):
            raise usage.UsageError("--factory, --portfile and --listen are needed")


def describe(address: Any) -> list[Any]:
    if hasattr(address, "port"):
        return [type(address).__name__, address.host, address.port]
    name = address.name
    return [type(address).__name__, name.decode() if isinstance(name, bytes) else name]


def main(argv: list[str]) -> None:
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise SystemExit(f"plain: {e}") from None
    if options["reactor"]:
        installReactor(options["reactor"])

    from twisted.internet import reactor, stdio
    from twisted.internet.defer import gatherResults
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import Protocol
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    factory = namedAny(options["factory"])
    listening = [
        serverFromString(reactor, description).listen(factory)
        for description in options["listen"]
    ]

    def announce(ports: list[Any]) -> None:
        partial = options["portfile"] + ".partial"
        with open(partial, "w") as f:
            json.dump(
                {
                    "reactor": type(reactor).__name__,
                    "listening": [describe(port.getHost()) for port in ports],
                },
                f,
            )
        os.replace(partial, options["portfile"])

    def failed(failure: Any) -> None:
        failure.printTraceback(file=sys.stderr)
        reactor.stop()

    gatherResults(listening).addCallbacks(announce, failed)

    class ParentGone(Protocol):
        def connectionLost(self, reason: object = None) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(ParentGone())
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
