"""
A WebSocket burst: how evenly long-lived connections that arrive together
are spread over the workers.

    python bench/wsburst.py --workers 2 --clients 200 --runs 20
    python bench/wsburst.py --snapshot main     # preforktwist as of a revision

Each run starts the Autobahn echo recipe (C{tap/recipes/wsapp.py}) with
C{twistd -n preforked -w N} on 127.0.0.1, then opens C{--clients}
connections at once with the C{websockets} library (asyncio; the
C{bench} extra installs it).  Each client completes its handshake, sends
one message and reads the echo, which names the worker's pid; all stay
open until every client has its answer, then close.  The run's figure is
the busiest worker's count over the idlest's (a worker that got none
makes it infinite).  With C{--same-server} every run uses one server,
started once, and each burst waits until the last one's connections are
all closed.

Printed: each run's per-worker counts (busiest first), its ratio and the
load average as it started (the machine may be shared), then the median
and worst ratio and how many runs stayed within C{--bound}.  Not run in
CI; C{tests/test_loadboard.py} holds the quick end-to-end check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from websockets.asyncio.client import ClientConnection, connect

from bench.common import HOST, tool
from bench.processes import CODE, Running, freePort, launch, stopEverything
from bench.servers import Server, preforkedCommand


def wsServer(workers: int, statusPort: int, extra: list[str]) -> Server:
    """
    The WebSocket recipe at C{-w workers}, its status endpoint on
    C{statusPort}.
    """

    def argv(port: int, tmp: str) -> list[str]:
        served = ["-f", "tap.recipes.wsapp.factory"]
        command = preforkedCommand(tool("twistd"), port, served, workers)
        return [*command, "--status", f"tcp:{statusPort}:interface={HOST}", *extra]

    return Server(
        key=f"ws-w{workers}",
        label=f"preforktwist -w {workers} wsapp",
        kind="preforktwist",
        workload="websocket",
        argv=argv,
        processes=workers + 1,
        stopSignal=signal.SIGINT,
        workers=workers,
    )


class WSServer:
    """
    One running server, read through its C{/status.json}.
    """

    def __init__(self, workers: int, extra: list[str]) -> None:
        self.workers = workers
        self.statusPort = freePort()
        self.running: Running = launch(
            wsServer(workers, self.statusPort, extra), "wsburst-"
        )

    @property
    def port(self) -> int:
        return self.running.port

    def status(self) -> dict[str, Any]:
        url = f"http://{HOST}:{self.statusPort}/status.json"
        with urllib.request.urlopen(url, timeout=5) as answer:
            status: dict[str, Any] = json.load(answer)
            return status

    def waitUntil(
        self, what: str, test: Callable[[dict[str, Any]], bool], timeout: float = 40.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.running.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.logTail()}")
            try:
                if test(self.status()):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not {what}:\n{self.logTail()}")
            time.sleep(0.1)

    def waitAccepting(self) -> None:
        self.waitUntil(
            f"accepting with {self.workers} workers",
            lambda s: (
                s["pool"]["accepting"] == self.workers
                and len(s["workers"]) == self.workers
            ),
        )

    def waitIdle(self) -> None:
        """
        Every connection of the last burst closed, as the workers told the
        master, and a pause longer than the workers' memory of the closes.
        """
        self.waitUntil("idle", lambda s: s["connections"]["open"] == 0)
        time.sleep(0.5)

    def workerPids(self) -> list[int]:
        return [w["pid"] for w in self.status()["workers"]]

    def logTail(self) -> str:
        with open(self.running.log, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        self.running.stop()
        self.running.remove()


async def burst(port: int, clients: int, timeout: float) -> tuple[Counter[int], int]:
    """
    Open C{clients} WebSocket connections at once; each sends one message
    and reads the echo.  Returns how many each worker's pid answered, and
    how many clients failed.
    """
    uri = f"ws://{HOST}:{port}/"

    async def one(i: int) -> tuple[ClientConnection, int]:
        ws = await connect(uri, open_timeout=timeout, ping_interval=None)
        await ws.send(str(i))
        reply = await asyncio.wait_for(ws.recv(), timeout)
        assert isinstance(reply, str)
        return ws, int(reply.split(":", 1)[0])

    results = await asyncio.gather(
        *(one(i) for i in range(clients)), return_exceptions=True
    )
    held: Counter[int] = Counter()
    opened = []
    for result in results:
        if isinstance(result, BaseException):
            continue
        opened.append(result[0])
        held[result[1]] += 1
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return held, clients - len(opened)


def ratio(counts: list[int]) -> float:
    return max(counts) / min(counts) if min(counts) else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--bound", type=float, default=1.5)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--same-server", action="store_true")
    parser.add_argument("--snapshot", metavar="REV", help="run preforktwist as of REV")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="passed to preforked"
    )
    args = parser.parse_args()
    exported = CODE.useSnapshot(args.snapshot) if args.snapshot else None
    if exported:
        print(CODE.note)

    ratios = []
    server: WSServer | None = None
    try:
        for run in range(1, args.runs + 1):
            if server is None:
                server = WSServer(args.workers, args.server_arg)
                server.waitAccepting()
            else:
                server.waitIdle()
            pids = server.workerPids()
            load = os.getloadavg()
            held, errors = asyncio.run(burst(server.port, args.clients, args.timeout))
            counts = sorted((held.get(pid, 0) for pid in pids), reverse=True)
            others = sum(n for pid, n in held.items() if pid not in pids)
            ratios.append(ratio(counts))
            print(
                f"run {run:2}/{args.runs}  per worker {' '.join(map(str, counts))}"
                f"  ratio {ratios[-1]:.2f}"
                + (f"  errors {errors}" if errors else "")
                + (f"  by other pids {others}" if others else "")
                + f"  (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
                flush=True,
            )
            if not args.same_server:
                server.stop()
                server = None
    finally:
        if server is not None:
            server.stop()
        stopEverything()
        if exported:
            shutil.rmtree(exported, ignore_errors=True)
    within = sum(r <= args.bound for r in ratios)
    print(
        f"-w {args.workers}, {args.clients} clients: median ratio "
        f"{statistics.median(ratios):.2f}, worst {max(ratios):.2f}, "
        f"{within} of {len(ratios)} within {args.bound:g}"
    )


if __name__ == "__main__":
    main()
