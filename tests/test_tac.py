"""
The .tac files in tap/ start with C{twistd -ny} and serve.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import threading
from pathlib import Path

from tests.harness import REPO, TWISTD, Master, exchange, waitUntil


def runTac(tmp_path: Path, name: str, env: dict[str, str]) -> Master:
    return Master(
        [],
        cwd=tmp_path,
        env=env,
        command=[TWISTD, "-ny", str(REPO / "tap" / name), "--pidfile=", "--logfile=-"],
    )


def test_echo_tac(tmp_path: Path) -> None:
    master = runTac(
        tmp_path,
        "echo.tac",
        {
            "PREFORKTWIST_LISTEN": "tcp:0:interface=127.0.0.1",
            "PREFORKTWIST_WORKERS": "2",
        },
    )
    try:
        master.waitForWorkers(2)
        assert exchange(master.port, b"tac", expect=3) == b"tac"
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
    finally:
        assert master.reap() == []


def test_composed_tac(tmp_path: Path) -> None:
    master = runTac(
        tmp_path,
        "composed.tac",
        {
            "PREFORKTWIST_LISTEN": "tcp:0:interface=127.0.0.1",
            "PREFORKTWIST_ECHO_LISTEN": "tcp:0:interface=127.0.0.1",
            "PREFORKTWIST_TICK": "0.2",
        },
    )
    try:
        master.waitForWorkers(2)
        reply = exchange(master.port, b"GET / HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"hello")

        def echoPort() -> int | None:
            for line in master.log():
                match = re.search(r"\] Factory starting on (\d+)", line)
                if match and "[worker" not in line:
                    return int(match.group(1))
            return None

        port = waitUntil(echoPort, 10, "the master's own echo port")
        assert exchange(port, b"in the master", expect=13) == b"in the master"
        master.waitForLine(r"pool: 2 accepting", 10)
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
    finally:
        assert master.reap() == []


def test_two_pools_tac(tmp_path: Path) -> None:
    """
    Two pools in one master: both serve, and one SIGHUP reloads both.
    """
    master = runTac(
        tmp_path,
        "two-pools.tac",
        {
            "PREFORKTWIST_HTTP_LISTEN": "tcp:0:interface=127.0.0.1",
            "PREFORKTWIST_ECHO_LISTEN": "tcp:0:interface=127.0.0.1",
        },
    )
    try:
        master.waitForWorkers(2)
        master.waitForWorkers(1)
        ports = [
            int(p)
            for p in re.findall(
                r"listening on 127\.0\.0\.1:(\d+)", "\n".join(master.log())
            )
        ]
        assert len(ports) == 2
        http, echo = ports
        assert exchange(http, b"GET / HTTP/1.0\r\n\r\n").endswith(b"hello")
        assert exchange(echo, b"echo", expect=4) == b"echo"
        master.signal(signal.SIGHUP)
        waitUntil(
            lambda: master.count("reload finished") == 2, 60, "both pools reloaded"
        )
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
    finally:
        assert master.reap() == []


class _AlertServer(http.server.HTTPServer):
    """An alert webhook: keeps each JSON body posted to it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Alerts)
        self.posted: list[dict[str, object]] = []


class _Alerts(http.server.BaseHTTPRequestHandler):
    server: _AlertServer

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        self.server.posted.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_hooks_tac(tmp_path: Path) -> None:
    """
    The hooks example logs every pool event, and posts a crash to its
    alert URL (from a thread of the master's).
    """
    alerts = _AlertServer()
    posted = alerts.posted
    thread = threading.Thread(target=alerts.serve_forever, daemon=True)
    thread.start()
    master = runTac(
        tmp_path,
        "hooks.tac",
        {
            "PREFORKTWIST_LISTEN": "tcp:0:interface=127.0.0.1",
            "PREFORKTWIST_WORKERS": "1",
            "PREFORKTWIST_ALERT_URL": f"http://127.0.0.1:{alerts.server_port}/",
        },
    )
    try:
        master.waitForLine(r"pool event ready: size=1")
        (victim,) = master.liveWorkers()
        os.kill(victim, signal.SIGKILL)
        waitUntil(lambda: posted, 20, "the crash alert")
        assert posted[0]["event"] == "worker_exited"
        assert (posted[0]["pid"], posted[0]["cause"]) == (victim, "crash")
        master.waitForLine(r"pool event worker_exited: .*cause=crash")
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
        assert len(posted) == 1
    finally:
        alerts.shutdown()
        alerts.server_close()
        assert master.reap() == []
