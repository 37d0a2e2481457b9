"""
Fork per connection: Python's C{socketserver.ForkingTCPServer}.

    python bench/forking.py --port 8080

Answers the same HTTP/1.1 "hello" as L{preforktwist.examples.HelloHTTP}
(keep-alive unless the client says C{Connection: close}), one forked child
per connection.  The listen backlog is raised to 1024 and the child limit
to 1024, so neither the default backlog of 5 nor the default limit of 40
children (the server blocks when it is reached) decides the result.
Prints C{listening on 127.0.0.1:PORT} when ready; SIGTERM or SIGINT stops
it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socketserver

BODY = b"hello"


def response(keepAlive: bool) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n"
        b"Connection: %s\r\n\r\n%s"
        % (len(BODY), b"keep-alive" if keepAlive else b"close", BODY)
    )


KEEP_ALIVE = response(True)
CLOSE = response(False)


class HelloHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            requestLine = self.rfile.readline(65537)
            if not requestLine.strip():
                return
            connection = b""
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"connection":
                    connection = value.strip().lower()
            if requestLine.split()[-1] == b"HTTP/1.0":
                keepAlive = connection == b"keep-alive"
            else:
                keepAlive = connection != b"close"
            self.wfile.write(KEEP_ALIVE if keepAlive else CLOSE)
            if not keepAlive:
                return


class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    request_queue_size = 1024
    max_children = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args()

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with Server((args.interface, args.port), HelloHandler) as server:
        print(
            f"forking pid {os.getpid()} listening on {args.interface}:{args.port}",
            flush=True,
        )
        server.serve_forever()


if __name__ == "__main__":
    main()
