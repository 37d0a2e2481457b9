"""
Connections per second over time, for the recycle-storm and rolling-reload
charts (wrk reports only totals).

    python bench/timeline.py --port 8080 --duration 15 --concurrency 50

A bounded asyncio client: C{--concurrency} loops, each opening a new TCP
connection, sending C{GET / HTTP/1.1} with C{Connection: close}, reading
to EOF and checking for a 200 "hello", until C{--duration} seconds have
passed.  Every completion is counted in the second (since the start) in
which it finished, as a success or an error (refused, reset, timed out,
or a wrong answer).  Prints one JSON object: C{start} (wall-clock time of
second 0), C{ok} and C{errors} (counts per second) and C{latency_max} (the
slowest exchange in each second, in seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


class Exchange(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[bytes]) -> None:
        self.done = done
        self.data = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(bytes(self.data))
        else:
            self.done.set_exception(exc)


class Timeline:
    def __init__(self, host: str, port: int, duration: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.duration = duration
        self.timeout = timeout
        self.ok = [0] * duration
        self.errors = [0] * duration
        self.latencyMax = [0.0] * duration
        self.errorKinds: dict[str, int] = {}

    async def once(self) -> str | None:
        """
        One exchange; C{None} on success, else the kind of error.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()
        transport = None
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: Exchange(done), self.host, self.port),
                self.timeout,
            )
            data = await asyncio.wait_for(done, self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            return type(e).__name__
        finally:
            if transport is not None:
                transport.abort()
        if data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nhello"):
            return None
        return "bad response"

    async def loop(self, start: float) -> None:
        end = start + self.duration
        while True:
            began = time.monotonic()
            if began >= end:
                return
            error = await self.once()
            finished = time.monotonic()
            second = int(finished - start)
            if second >= self.duration:
                return
            if error is None:
                self.ok[second] += 1
            else:
                self.errors[second] += 1
                self.errorKinds[error] = self.errorKinds.get(error, 0) + 1
                await asyncio.sleep(0.01)  # a refused port must not spin
            self.latencyMax[second] = max(self.latencyMax[second], finished - began)

    async def run(self, concurrency: int) -> float:
        wallStart = time.time()
        start = time.monotonic()
        loops = [asyncio.ensure_future(self.loop(start)) for _ in range(concurrency)]
        # Bounded: every exchange has its own timeout, and the whole run too.
        await asyncio.wait(loops, timeout=self.duration + 2 * self.timeout + 5)
        for task in loops:
            task.cancel()
        return wallStart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    timeline = Timeline(args.host, args.port, args.duration, args.timeout)
    start = asyncio.run(timeline.run(args.concurrency))
    print(
        json.dumps(
            {
                "start": start,
                "duration": args.duration,
                "concurrency": args.concurrency,
                "ok": timeline.ok,
                "errors": timeline.errors,
                "error_kinds": timeline.errorKinds,
                "latency_max": [round(x, 4) for x in timeline.latencyMax],
            }
        )
    )


if __name__ == "__main__":
    main()
