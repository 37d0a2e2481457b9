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

import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conformance import protocols, transport
from tests.conformance.client import NO_HOOKS, ClientCase, Hooks, Outcome, Target
from tests.conformance.servers import (
    FACTORY,
    MODES,
    REACTORS,
    Oracle,
    Pool,
    Pools,
    World,
    listeningPorts,
    makeFiles,
    processes,
    tracebacks,
)
from tests.conftest import StartMaster
from tests.harness import waitUntil
from tests.test_deploy import makeCertificate


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    directory = tmp_path_factory.mktemp("conformance")
    files, records = directory / "files", directory / "records"
    files.mkdir()
    records.mkdir()
    makeFiles(files)
    cert, key = makeCertificate(files)
    return World(directory, files, records, cert, key)


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


@pytest.fixture(scope="module")
def pools(world: World) -> Iterator[Pools]:
    pools = Pools(world)
    yield pools
    leaked = pools.reapAll()
    assert not leaked, f"processes left running: {leaked}"


@pytest.fixture(scope="module")
def pool(request: pytest.FixtureRequest, pools: Pools) -> Iterator[Pool]:
    yield pools.get(request.param)
    leaked = pools.reap(request.param)
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


@pytest.mark.parametrize("pool", list(MODES), indirect=True, scope="module")
def test_pool_afterwards(pool: Pool) -> None:
    """
    After every case of a mode (tests run grouped by pool, this one last):
    the mode did what it says, and nothing went wrong unseen (no traceback
    in the pool's log).
    """
    served = processes(pool, 4)
    reactors = REACTORS[pool.mode.reactor]
    assert all(kind in reactors for _, _, kind in served), served
    preloaded = [pid != importedIn for pid, importedIn, _ in served]
    assert preloaded == ["--preload" in pool.mode.args] * len(served), served
    forked = pool.master.count("started the fork server")
    assert bool(forked) == ("--no-fork-server" not in pool.mode.args)
    if "-m" in pool.mode.args:
        # Four connections over two workers that serve three each.
        assert pool.master.count("served its allowance") >= 1
    errors = tracebacks(pool.master.log())
    assert not errors, f"the pool logged errors:\n{errors}"
