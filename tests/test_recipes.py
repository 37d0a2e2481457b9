"""
The recipes in tap/recipes/, each served by C{twistd preforked} with the
real framework: requests through several workers and through recycling
(C{-m 3}), and a graceful stop (SIGTERM) while a request is in progress,
which completes: for the WSGI app, in its thread.
"""

from __future__ import annotations

import json
import re
import signal
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


def ws(port: int, message: str) -> str:
    connection = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=15)
    try:
        connection.send(message)
        answer = connection.recv()
    finally:
        connection.close()
    assert isinstance(answer, str)
    return answer


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
Slow = Callable[[int], str]

RECIPE_CASES: list[tuple[str, list[str], Hello, Slow]] = [
    ("twisted.web", ["-f", "webapp.site"], httpHello, lambda p: get(p, "/slow")),
    ("klein", ["-f", "kleinapp.site"], httpHello, lambda p: get(p, "/slow")),
    (
        "flask",
        ["-f", "flaskapp.site", "--worker-init", "flaskapp.workerInit"],
        wsgiHello,
        lambda p: get(p, "/slow"),
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
        lambda p: get(p, "/slow"),
    ),
    ("autobahn", ["-f", "wsapp.factory"], wsHello, lambda p: ws(p, "slow")),
]


def openConnections(master: Master) -> int:
    with urllib.request.urlopen(statusURL(master) + "status.json", timeout=10) as r:
        snapshot: dict[str, Any] = json.loads(r.read())
    return int(snapshot["connections"]["open"])


@pytest.mark.parametrize(
    ("name", "args", "hello", "slow"), RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES]
)
def test_recipe(
    serve: StartMaster, name: str, args: list[str], hello: Hello, slow: Slow
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
    # A request in progress when the stop begins completes.
    answers: list[str] = []
    client = threading.Thread(target=lambda: answers.append(slow(master.port)))
    client.start()
    try:
        waitUntil(lambda: openConnections(master) == 1, 10, "the slow request")
        master.signal(signal.SIGTERM)
        assert master.wait(30) == 0
    finally:
        client.join(15)
    assert len(answers) == 1 and answers[0].startswith("slow done by "), answers
    assert "grace period" not in master.output()
