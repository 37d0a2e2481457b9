"""
Conformance with Twisted itself: every case runs the same protocol and the
same client against one plain Twisted process (L{tests.conformance.plain})
and against the pool, and the outcomes must be equal: the bytes and their
order, how the connection ended, and what the server's side observed
(producer calls, half-closes, addresses, the reason C{connectionLost} got).

One plain server per reactor and one pool per mode serve every case (the
client's first line names it: L{tests.conformance.apps}).  The pool runs
with the fork server, with fresh interpreters, with C{--preload}, with
recycling (C{-m 3}), on the poll reactor (transport cases, against a plain
server on poll too), and behind C{--proxy-protocol}; and one test stops a
pool while transfers are running, which must complete.

Each plain outcome is also checked against what the case says any correct
outcome shows, so that a case cannot pass by being broken the same way on
both sides.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import protocols, shapes, transport
from tests.conformance.client import (
    NO_HOOKS,
    ClientCase,
    Connection,
    Hooks,
    Outcome,
    Target,
)
from tests.conformance.shapes import pattern
from tests.conftest import StartMaster
from tests.harness import REPO, Master, waitUntil
from tests.test_deploy import makeCertificate

FACTORY = "tests.conformance.apps.dispatcherFactory"


@dataclass(frozen=True)
class World:
    """
    What every server of this module shares: the files it serves, where
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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    directory = tmp_path_factory.mktemp("conformance")
    files, records = directory / "files", directory / "records"
    files.mkdir()
    records.mkdir()
    makeFiles(files)
    cert, key = makeCertificate(files)
    return World(directory, files, records, cert, key)


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
            assert server.reactor == REACTORS[reactor], server.reactor
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


@pytest.fixture(scope="module")
def oracle(world: World) -> Iterator[Oracle]:
    oracle = Oracle(world)
    yield oracle
    leaked = []
    for server in oracle.servers.values():
        leaked += server.stop()
    assert not leaked, f"plain servers left running: {leaked}"
    for server in oracle.servers.values():
        errors = server.tracebacks()
        assert not errors, f"the plain server logged errors:\n{errors}"


@dataclass(frozen=True)
class Mode:
    """
    How a pool is run: its options, and its reactor (twistd's C{-r}).
    """

    args: tuple[str, ...] = ()
    reactor: str | None = None


#: The reactor class each C{-r} name installs (the pool's workers use a
#: subclass of epoll's).
REACTORS = {None: "EPollReactor", "poll": "PollReactor"}

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
    A pool serving the dispatcher in one mode, and where it listens.
    """

    def __init__(self, world: World, name: str) -> None:
        self.mode = MODES[name]
        path = str(world.directory / f"pool-{name}.sock")
        if name == "proxy-protocol":
            listeners = ["tcp:0:interface=127.0.0.1"]
        else:
            listeners = ["tcp:0:interface=127.0.0.1", f"unix:{path}"]
            listeners.append(world.tlsListener())
        args = ["-w", "2", *self.mode.args, "--factory", FACTORY]
        for listen in listeners:
            args += ["-l", listen]
        twistdArgs = ["-r", self.mode.reactor] if self.mode.reactor else []
        self.master = Master(
            args, cwd=world.directory, env=world.env, twistdArgs=twistdArgs
        )
        self.master.waitForWorkers(1 if name == "proxy-protocol" else 2)
        ports = listeningPorts(self.master)
        self.target = Target(
            tcp=ports[0],
            unix=path,
            tls=ports[-1],
            proxy=ports[0] if name == "proxy-protocol" else None,
            cert=world.cert,
            records=world.records,
        )


def listeningPorts(master: Master) -> list[int]:
    """
    The TCP ports a master listens on, in the order of its C{-l} options.
    """
    found = re.findall(r"listening on 127\.0\.0\.1:(\d+)", "\n".join(master.log()))
    return [int(port) for port in found]


@pytest.fixture(scope="module")
def pool(request: pytest.FixtureRequest, world: World) -> Iterator[Pool]:
    started = Pool(world, request.param)
    yield started
    leaked = started.master.reap()
    assert not leaked, f"processes left running: {leaked}"


def carried(cases: list[ClientCase], exclude: str = "proxy") -> list[Any]:
    return [
        pytest.param(case, carrier, id=f"{case.name}-{carrier}")
        for case in cases
        for carrier in case.carriers
        if carrier != exclude
    ]


def compare(pool: Pool, case: ClientCase, carrier: str, oracle: Oracle) -> None:
    expected = oracle.outcome(case, carrier, pool.mode.reactor)
    outcome = case.run(pool.target, carrier, NO_HOOKS)
    assert outcome == expected


ALL_MODES = [m for m in MODES if m != "proxy-protocol"]
EPOLL_MODES = [m for m in ALL_MODES if MODES[m].reactor is None]


@pytest.mark.parametrize("pool", ALL_MODES, indirect=True, scope="module")
@pytest.mark.parametrize(("case", "carrier"), carried(transport.CASES))
def test_transport(pool: Pool, case: ClientCase, carrier: str, oracle: Oracle) -> None:
    """
    The transport contract, on TCP, UNIX and TLS listeners.
    """
    compare(pool, case, carrier, oracle)


@pytest.mark.parametrize("pool", EPOLL_MODES, indirect=True, scope="module")
@pytest.mark.parametrize(("case", "carrier"), carried(protocols.CASES))
def test_twisted_protocol(
    pool: Pool, case: ClientCase, carrier: str, oracle: Oracle
) -> None:
    """
    Twisted's own protocols with real clients.
    """
    compare(pool, case, carrier, oracle)


@pytest.mark.parametrize("pool", ["proxy-protocol"], indirect=True, scope="module")
@pytest.mark.parametrize(
    ("case", "carrier"),
    [
        pytest.param(case, "proxy", id=case.name)
        for case in transport.CASES
        if "proxy" in case.carriers
    ],
)
def test_proxy_protocol(
    pool: Pool, case: ClientCase, carrier: str, oracle: Oracle
) -> None:
    """
    Behind a PROXY header (Twisted's C{haproxy:} endpoint on the plain
    side): the addresses are the header's, the rest unchanged.
    """
    compare(pool, case, carrier, oracle)


class Paused(Hooks):
    """
    Hooks that hold a client after its first bytes until told to go on.
    """

    def __init__(self, go: threading.Event) -> None:
        self.started = threading.Event()
        self.go = go

    def begun(self) -> None:
        self.started.set()
        assert self.go.wait(30), "never told to go on"


GRACEFUL = [
    (transport.CASES, "big-write", "tcp"),
    (transport.CASES, "push", "unix"),
    (transport.CASES, "pull", "tcp"),
    (transport.CASES, "big-write", "tls"),
    (protocols.CASES, "web-large-file", "tcp"),
]


def test_graceful_stop_completes_transfers(
    serve: StartMaster, world: World, oracle: Oracle
) -> None:
    """
    SIGTERM while transfers are running: each completes as it would have
    without the stop, and the master exits cleanly.
    """
    path = str(world.directory / "graceful.sock")
    master = serve(
        "-w",
        "2",
        "--factory",
        FACTORY,
        "-l",
        "tcp:0:interface=127.0.0.1",
        "-l",
        f"unix:{path}",
        "-l",
        world.tlsListener(),
        env=world.env,
    )
    master.waitForWorkers(2)
    ports = listeningPorts(master)
    target = Target(ports[0], path, ports[-1], None, world.cert, world.records)
    cases = [
        (next(c for c in cases if c.name == name), carrier)
        for cases, name, carrier in GRACEFUL
    ]
    expected = [oracle.outcome(case, carrier, None) for case, carrier in cases]
    go = threading.Event()
    hooks = [Paused(go) for _ in cases]
    outcomes: list[Outcome | None] = [None] * len(cases)

    def run(i: int) -> None:
        case, carrier = cases[i]
        outcomes[i] = case.run(target, carrier, hooks[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    try:
        waitUntil(
            lambda: all(h.started.is_set() for h in hooks),
            30,
            "every transfer to begin",
        )
        master.signal(signal.SIGTERM)
        waitUntil(
            lambda: master.count("told to stop") >= 2, 30, "the workers to be told"
        )
    finally:
        go.set()
        for thread in threads:
            thread.join(60)
    assert outcomes == expected
    assert master.wait(30) == 0


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


@pytest.mark.parametrize("pool", list(MODES), indirect=True, scope="module")
def test_pool_afterwards(pool: Pool) -> None:
    """
    After every case of a mode (tests run grouped by pool, this one last):
    the mode did what it says, and nothing went wrong unseen (no traceback
    in the pool's log).
    """
    served = processes(pool, 4)
    reactor = REACTORS[pool.mode.reactor]
    assert all(kind.endswith(reactor) for _, _, kind in served), served
    preloaded = [pid != importedIn for pid, importedIn, _ in served]
    assert preloaded == ["--preload" in pool.mode.args] * len(served), served
    forked = pool.master.count("started the fork server")
    assert bool(forked) == ("--no-fork-server" not in pool.mode.args)
    if "-m" in pool.mode.args:
        # Four connections over two workers that serve three each.
        assert pool.master.count("served its allowance") >= 1
    errors = tracebacks(pool.master.log())
    assert not errors, f"the pool logged errors:\n{errors}"
