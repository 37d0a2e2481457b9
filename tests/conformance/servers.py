"""
The servers the conformance tests compare: plain Twisted (one process per
reactor, L{tests.conformance.plain}) and pools in each mode, all serving
the dispatcher (L{tests.conformance.apps}) from the same files, with the
same certificate, saving their records in the same place.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conformance import shapes
from tests.conformance.client import (
    NO_HOOKS,
    ClientCase,
    Connection,
    Outcome,
    Target,
)
from tests.conformance.shapes import pattern
from tests.harness import REPO, Master, waitUntil

FACTORY = "tests.conformance.apps.dispatcherFactory"


@dataclass(frozen=True)
class World:
    """
    What every server of the suite shares: the files it serves, where
    it saves its records, its certificate, its environment.
    """

    directory: Path
    files: Path
    records: Path
    cert: Path
    key: Path

    @property
    def env(self) -> dict[str, str]:
        return {shapes.RECORDS: str(self.records), shapes.FILES: str(self.files)}

    def tlsListener(self) -> str:
        return f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"


def makeFiles(files: Path) -> None:
    """
    The static web files, the FTP tree and the file whose descriptor is
    passed.
    """
    big = pattern(shapes.BIG_FILE, "big-file")
    for directory in ("web", "ftp/anonymous", "ftp/home/user/pub"):
        (files / directory).mkdir(parents=True)
    (files / "web" / "small.txt").write_bytes(b"a small file\n")
    (files / "web" / "big.bin").write_bytes(big)
    (files / "ftp/home/user/pub/big.bin").write_bytes(big)
    (files / "ftp/home/user/pub/notes.txt").write_bytes(b"notes\n")
    (files / shapes.FD_FILE).write_bytes(shapes.FD_CONTENT)


class PlainServer:
    """
    One plain Twisted process serving the dispatcher on TCP, UNIX, TLS and
    PROXY (Twisted's C{haproxy:} endpoint) listeners.
    """

    def __init__(self, world: World, reactor: str | None) -> None:
        name = reactor or "default"
        self.portfile = world.directory / f"plain-{name}.ports"
        self.errors = world.directory / f"plain-{name}.log"
        path = str(world.directory / f"plain-{name}.sock")
        command = [sys.executable, "-m", "tests.conformance.plain"]
        command += ["--factory", FACTORY, "--portfile", str(self.portfile)]
        for listen in (
            "tcp:0:interface=127.0.0.1",
            f"unix:{path}",
            world.tlsListener(),
            "haproxy:tcp:0:interface=127.0.0.1",
        ):
            command += ["--listen", listen]
        if reactor:
            command += ["--reactor", reactor]
        env = {**os.environ, **world.env, "PYTHONPATH": str(REPO)}
        with self.errors.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=world.directory,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        waitUntil(self._listening, 30, "the plain server to listen")
        found = json.loads(self.portfile.read_text())
        self.reactor: str = found["reactor"]
        ports = found["listening"]
        self.target = Target(
            tcp=ports[0][2],
            unix=path,
            tls=ports[2][2],
            proxy=ports[3][2],
            cert=world.cert,
            records=world.records,
        )

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"plain server exited: {self.errors.read_text()}")
        return self.portfile.exists()

    def stop(self) -> list[int]:
        """
        Stop the server; the pids still running after a graceful attempt.
        """
        leaked = []
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            leaked.append(self.process.pid)
            self.process.kill()
            self.process.wait(10)
        return leaked

    def tracebacks(self) -> str:
        return tracebacks(self.errors.read_text().splitlines())


def tracebacks(lines: list[str]) -> str:
    """
    The unexpected errors a server logged, each with the lines around it.
    """
    found = []
    for i, line in enumerate(lines):
        if "Traceback" in line or "Unhandled" in line:
            found += [*lines[max(0, i - 2) : i + 4], "..."]
    return "\n".join(found)


class Oracle:
    """
    Plain Twisted's outcome of each case, run once per reactor.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.servers: dict[str | None, PlainServer] = {}
        self.outcomes: dict[tuple[str | None, str, str], Outcome] = {}

    def server(self, reactor: str | None) -> PlainServer:
        if reactor not in self.servers:
            server = self.servers[reactor] = PlainServer(self.world, reactor)
            assert server.reactor in REACTORS[reactor], server.reactor
        return self.servers[reactor]

    def outcome(self, case: ClientCase, carrier: str, reactor: str | None) -> Outcome:
        key = (reactor, case.name, carrier)
        if key not in self.outcomes:
            outcome = case.run(self.server(reactor).target, carrier, NO_HOOKS)
            assert case.check(outcome, carrier), (
                f"plain Twisted's outcome is not what the case expects: {outcome}"
            )
            self.outcomes[key] = outcome
        return self.outcomes[key]


@dataclass(frozen=True)
class Mode:
    """
    How a pool is run: its options, and its reactor (twistd's C{-r}).
    """

    args: tuple[str, ...] = ()
    reactor: str | None = None


#: The reactor classes each C{-r} name may install (the pool's workers on
#: epoll use a subclass of Twisted's).
REACTORS = {None: ("EPollReactor", "WorkerEPollReactor"), "poll": ("PollReactor",)}

MODES = {
    "fork-server": Mode(),
    "fresh-interpreter": Mode(("--no-fork-server",)),
    "preload": Mode(("--preload",)),
    "recycling": Mode(("-m", "3")),
    "poll-reactor": Mode(reactor="poll"),
    "proxy-protocol": Mode(("--proxy-protocol", "-w", "1")),
}


class Pool:
    """
    A pool serving the dispatcher in one mode, and where it listens.  It is
    started at once; L{ready} waits for its workers.
    """

    def __init__(self, world: World, name: str) -> None:
        self.name = name
        self.mode = MODES[name]
        self.world = world
        self.path = str(world.directory / f"pool-{name}.sock")
        if name == "proxy-protocol":
            listeners = ["tcp:0:interface=127.0.0.1"]
        else:
            listeners = ["tcp:0:interface=127.0.0.1", f"unix:{self.path}"]
            listeners.append(world.tlsListener())
        args = ["-w", "2", *self.mode.args, "--factory", FACTORY]
        for listen in listeners:
            args += ["-l", listen]
        twistdArgs = ["-r", self.mode.reactor] if self.mode.reactor else []
        self.master = Master(
            args, cwd=world.directory, env=world.env, twistdArgs=twistdArgs
        )

    def ready(self) -> Target:
        """
        Where the pool listens, once its workers accept.
        """
        proxied = self.name == "proxy-protocol"
        self.master.waitForWorkers(1 if proxied else 2)
        ports = listeningPorts(self.master)
        self.target = Target(
            tcp=ports[0],
            unix=self.path,
            tls=ports[-1],
            proxy=ports[0] if proxied else None,
            cert=self.world.cert,
            records=self.world.records,
        )
        return self.target


class Pools:
    """
    The pools of a module, one per mode: while the tests use one, the next
    (in L{MODES}' order) is already starting, so that its workers' start
    overlaps the cases rather than adding to them.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.started: dict[str, Pool] = {}

    def start(self, name: str) -> Pool:
        if name not in self.started:
            self.started[name] = Pool(self.world, name)
        return self.started[name]

    def get(self, name: str) -> Pool:
        """
        The pool for mode C{name}, ready; the next one starting.
        """
        pool = self.start(name)
        names = list(MODES)
        following = names[names.index(name) + 1 :]
        if following:
            self.start(following[0])
        pool.ready()
        return pool

    def reap(self, name: str) -> list[int]:
        """
        End one pool; the pids that had to be killed.
        """
        pool = self.started.pop(name, None)
        return [] if pool is None else pool.master.reap()

    def reapAll(self) -> list[int]:
        return [pid for name in list(self.started) for pid in self.reap(name)]


def listeningPorts(master: Master) -> list[int]:
    """
    The TCP ports a master listens on, in the order of its C{-l} options.
    """
    found = re.findall(r"listening on 127\.0\.0\.1:(\d+)", "\n".join(master.log()))
    return [int(port) for port in found]


def processes(pool: Pool, count: int) -> list[list[Any]]:
    """
    Where C{count} connections were served: each worker's pid, the pid that
    imported the application, and the worker's reactor.
    """
    served = []
    carrier = "proxy" if pool.target.proxy else "tcp"
    for _ in range(count):
        c = Connection(pool.target, carrier, "process")
        c.readAll()
        c.close()
        served += c.record()[:1]
    return served
