"""
The recipes in tap/recipes/, each served by C{twistd preforked} with the
real framework: requests through several workers and through recycling
(C{-m 3}), and a graceful stop (SIGTERM) while a request is in progress,
which completes (for the WSGI app, in its thread), or, for the WebSocket
recipe, whose client is sent a close frame with code 1001 (going away).
"""

from __future__ import annotations

import json
import re
import signal
import struct
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import websocket

from tests.conftest import StartMaster
from tests.harness import REPO, Master, waitUntil
from tests.test_status import STATUS, statusURL

RECIPES = REPO / "tap" / "recipes"


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as r:
        assert r.status == 200
        return r.read().decode()  # type: ignore[no-any-return]


def wsExchange(port: int, message: str) -> tuple[str, int | None]:
    """
    Open a WebSocket, send C{message}, and return the answer, or, if the
    server sent a close frame instead, its reason and code.
    """
    connection = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=15)
    try:
        connection.send(message)
        opcode, frame = connection.recv_data_frame(True)
    finally:
        connection.close()
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        (code,) = struct.unpack("!H", frame.data[:2])
        return frame.data[2:].decode(), code
    return frame.data.decode(), None


def ws(port: int, message: str) -> str:
    """
    The answer to C{message}, reconnecting as a client should when a
    retiring worker asks it to go away (its last connection under C{-m}).
    """
    for _ in range(5):
        answer, code = wsExchange(port, message)
        if code is None:
            return answer
        assert code == 1001, (answer, code)
    raise AssertionError("asked to go away five times in a row")


def wsGoingAway(port: int, stopping: threading.Event) -> str:
    """
    Ask for the slow answer and say how the server ended the WebSocket:
    C{close 1001 server going away} when its worker retired meanwhile.
    Asked to go away before the stop (the connection was its worker's
    last under C{-m}), reconnect and ask again.
    """
    while True:
        answer, code = wsExchange(port, "slow")
        if code is None or stopping.is_set():
            return answer if code is None else f"close {code} {answer}"


def httpHello(port: int) -> int:
    answer = get(port, "/")
    match = re.fullmatch(r"hello from (\d+)\n", answer)
    assert match, answer
    return int(match.group(1))


def wsgiHello(port: int) -> int:
    answer = get(port, "/")
    # In a thread of the worker reactor's pool, sized by --worker-init.
    match = re.fullmatch(r"hello from (\d+) in PoolThread-\S+ \(pool of 20\)\n", answer)
    assert match, answer
    return int(match.group(1))


def wsHello(port: int) -> int:
    pid, _, echoed = ws(port, "hi").partition(":")
    assert echoed == "hi"
    return int(pid)


Hello = Callable[[int], int]
Slow = Callable[[int, threading.Event], str]

#: What a request in progress at a graceful stop gets.
SLOW_DONE = "slow done by "
GOING_AWAY = "close 1001 server going away"

RECIPE_CASES: list[tuple[str, list[str], Hello, Slow, str]] = [
    (
        "twisted.web",
        ["-f", "webapp.site"],
        httpHello,
        lambda p, _: get(p, "/slow"),
        SLOW_DONE,
    ),
    (
        "klein",
        ["-f", "kleinapp.site"],
        httpHello,
        lambda p, _: get(p, "/slow"),
        SLOW_DONE,
    ),
    (
        "flask",
        ["-f", "flaskapp.site", "--worker-init", "flaskapp.workerInit"],
        wsgiHello,
        lambda p, _: get(p, "/slow"),
        SLOW_DONE,
    ),
    # The same, each worker a fresh interpreter rather than a fork.
    (
        "flask-no-fork-server",
        [
            "-f",
            "flaskapp.site",
            "--worker-init",
            "flaskapp.workerInit",
            "--no-fork-server",
        ],
        wsgiHello,
        lambda p, _: get(p, "/slow"),
        SLOW_DONE,
    ),
    ("autobahn", ["-f", "wsapp.factory"], wsHello, wsGoingAway, GOING_AWAY),
]


def openConnections(master: Master) -> int:
    with urllib.request.urlopen(statusURL(master) + "status.json", timeout=10) as r:
        snapshot: dict[str, Any] = json.loads(r.read())
    return int(snapshot["connections"]["open"])


@pytest.mark.parametrize(
    ("name", "args", "hello", "slow", "ending"),
    RECIPE_CASES,
    ids=[c[0] for c in RECIPE_CASES],
)
def test_recipe(
    serve: StartMaster,
    name: str,
    args: list[str],
    hello: Hello,
    slow: Slow,
    ending: str,
) -> None:
    master = serve(
        "-w",
        "2",
        "-m",
        "3",
        "--replace-at",
        "1",
        *args,
        *STATUS,
        env={"PYTHONPATH": f"{RECIPES}:{REPO}"},
    )
    master.waitForWorkers(2)
    pids = [hello(master.port) for _ in range(12)]
    # 12 connections at 3 per worker: at least four workers served them.
    assert len(set(pids)) >= 4, pids
    assert master.count("served its allowance of 3 connections") >= 3
    assert set(pids) <= set(master.workerPids())
    # A request in progress when the stop begins completes (a WebSocket is
    # asked to go away).
    answers: list[str] = []
    stopping = threading.Event()
    client = threading.Thread(
        target=lambda: answers.append(slow(master.port, stopping))
    )
    client.start()
    try:
        waitUntil(lambda: openConnections(master) == 1, 10, "the slow request")
        stopping.set()
        master.signal(signal.SIGTERM)
        assert master.wait(30) == 0
    finally:
        client.join(15)
    assert len(answers) == 1 and answers[0].startswith(ending), answers
    assert "grace period" not in master.output()


def test_websocket_clients_move_at_a_reload(serve: StartMaster) -> None:
    """
    At a rolling reload, each WebSocket of an old worker is sent a close
    frame with code 1001 at once; the client reconnects, to a new worker,
    and the old worker exits long before its grace period would end.
    """
    master = serve(
        "-w",
        "1",
        "--grace",
        "30",
        "-f",
        "wsapp.factory",
        env={"PYTHONPATH": f"{RECIPES}:{REPO}"},
    )
    master.waitForWorkers(1)
    connection = websocket.create_connection(
        f"ws://127.0.0.1:{master.port}/", timeout=15
    )
    try:
        connection.send("before")
        answer = connection.recv()
        assert isinstance(answer, str)
        old = int(answer.partition(":")[0])
        master.signal(signal.SIGHUP)
        opcode, frame = connection.recv_data_frame(True)
    finally:
        connection.close()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert frame.data == struct.pack("!H", 1001) + b"server going away"
    new = wsHello(master.port)
    assert new != old
    master.waitForLine(rf"\(pid {old}\) exited with status 0", 10)
    assert "grace period" not in master.output()
