"""
The status endpoint: JSON and Prometheus metrics that add up to what the
test sent, the listen queue made visible, the scoreboard page in a real
headless browser, and the endpoint's own HTTP server in process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.status.web import Answer, StatusSite, statusSite
from tests.conftest import StartMaster
from tests.harness import Load, Master, exchange, waitUntil
from tests.test_pool import Harness

STATUS = ["--status", "tcp:0:interface=127.0.0.1"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def statusURL(master: Master) -> str:
    match = master.waitForLine(r"status page on (http://127\.0\.0\.1:\d+/)")
    return match.group(1)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]


def snapshot(master: Master) -> dict[str, Any]:
    return json.loads(fetch(statusURL(master) + "status.json"))  # type: ignore[no-any-return]


def metrics(master: Master) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = fetch(statusURL(master) + "metrics").decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_json_and_metrics_add_up(serve: StartMaster) -> None:
    """
    200 connections through workers recycled every 30: the served totals,
    per-worker rows, restarts and metrics match what was sent.
    """
    master = serve(
        "-w", "2", "-m", "30", "--replace-at", "1", "-p", "tests.apps.PidEcho", *STATUS
    )
    master.waitForWorkers(2)
    for i in range(200):
        assert exchange(master.port, b"%d" % i).endswith(b":%d" % i)
    waitUntil(
        lambda: snapshot(master)["connections"]["served"] == 200, 15, "200 served"
    )
    waitUntil(lambda: snapshot(master)["pool"]["accepting"] == 2, 15, "2 accepting")
    status = snapshot(master)
    assert status["schema"] == 1
    assert status["connections"]["accepted"] == 200
    assert status["connections"]["open"] == 0
    assert status["pool"]["wanted"] == 2
    # Every worker that is gone used its allowance of exactly 30, and the
    # live ones account for the rest.
    restarts = status["restarts"]
    live = sum(row["accepted"] for row in status["workers"])
    assert restarts["allowance"] * 30 + live == 200
    assert restarts["crash"] == 0
    assert {w["pid"] for w in status["workers"]} == set(master.liveWorkers())
    states = sorted(row["state"] for row in status["workers"])
    # Recycling keeps a standby ready to take over.
    assert states == ["accepting", "accepting", "standby"]
    for row in status["workers"]:
        assert row["allowance_left"] == 30 - row["accepted"]
        assert row["rss"] > 1_000_000
        assert row["last_heartbeat"] < 5
    assert status["listeners"][0]["address"] == f"127.0.0.1:{master.port}"
    assert status["listeners"][0]["queue"] == 0

    samples = metrics(master)
    assert samples[("preforktwist_connections_served_total", ())] == 200
    assert samples[("preforktwist_connections_accepted_total", ())] == 200
    assert samples[("preforktwist_workers", (("state", "accepting"),))] == 2
    restartsByCause = {
        cause: samples[("preforktwist_worker_restarts_total", (("cause", cause),))]
        for cause in ("allowance", "crash")
    }
    assert restartsByCause == {
        "allowance": restarts["allowance"],
        "crash": restarts["crash"],
    }
    assert samples[("preforktwist_workers_wanted", ())] == 2


def test_listen_queue_depth_is_visible(serve: StartMaster) -> None:
    """
    One worker capped at one connection, holding it: three more clients
    wait in the kernel's queue, and the status says so.
    """
    master = serve("-w", "1", "-c", "1", "-p", "tests.apps.SlowReply", *STATUS)
    master.waitForWorkers(1)
    clients = [socket.create_connection(("127.0.0.1", master.port)) for _ in range(4)]
    try:
        clients[0].sendall(b"first")
        waitUntil(lambda: snapshot(master)["pool"]["paused"] == 1, 10, "paused worker")
        status = snapshot(master)
        assert status["listeners"][0]["queue"] == 3
        assert status["workers"][0]["state"] == "paused"
        key = (
            "preforktwist_listen_queue_depth",
            (("listener", "tcp:0:interface=127.0.0.1"),),
        )
        assert metrics(master)[key] == 3
    finally:
        for client in clients:
            client.close()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)
def test_scoreboard_page_in_a_browser(serve: StartMaster) -> None:
    """
    The page shows one row per live worker and follows a replacement
    without being reloaded, and draws the last minutes: the traffic, the
    connections held open, a reload and a crash.  Screenshots are kept in
    tests/artifacts/.
    """
    from playwright.sync_api import Page, sync_playwright

    executable = chromium()
    assert executable, "chromium is missing"
    master = serve("-w", "3", "-p", "tests.apps.PidEcho", *STATUS)
    master.waitForWorkers(3)
    url = statusURL(master)

    def rowPids(page: Page) -> set[int]:
        # A worker the fork server has not forked yet has no pid (null).
        return {
            int(p)
            for p in page.locator("#rows tr").evaluate_all(
                "rows => rows.map(r => r.dataset.pid)"
            )
            if p != "null"
        }

    def drawn(page: Page, selector: str) -> int:
        return page.locator(selector).count()

    idle: list[socket.socket] = []
    with (
        Load(master.port, clients=2, pause=0.02) as load,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(url)
            waitUntil(
                lambda: rowPids(page) == set(master.liveWorkers()),
                15,
                "a row per worker",
            )
            load.waitForMore(100)
            old = set(master.liveWorkers())
            master.signal(signal.SIGHUP)
            master.waitForLine("reload finished", 60)
            waitUntil(
                lambda: (
                    len(master.liveWorkers()) == 3
                    and not old & set(master.liveWorkers())
                ),
                30,
                "the old workers gone",
            )
            victim = master.liveWorkers()[0]
            os.kill(victim, signal.SIGKILL)
            waitUntil(
                lambda: (
                    victim not in rowPids(page)
                    and len(rowPids(page)) == 3
                    and rowPids(page) == set(master.liveWorkers())
                ),
                20,
                "the page to show the replacement",
            )
            assert page.locator("#restarts").inner_text().count("crash: 1") == 1
            # Clients that connect and say nothing: open connections to draw.
            idle += [
                socket.create_connection(("127.0.0.1", master.port)) for _ in "1234"
            ]
            # The picture: a line per series, the reload as a span, the
            # crash and the reload's replacements as restart ticks.
            waitUntil(
                lambda: (
                    drawn(page, "#chart-per_second rect.span-reload") == 1
                    and drawn(page, "#chart-open .restart[data-cause=crash]") == 1
                    and drawn(page, "#chart-queued .restart[data-cause=reload]") >= 1
                ),
                15,
                "the reload and the crash drawn",
            )
            assert drawn(page, "#chart-per_second polyline.series") >= 1
            waitUntil(
                lambda: page.locator("#now-open").inner_text() == "4",
                15,
                "the idle clients drawn as open",
            )
            load.waitForMore(200)
            assert "crash 1" in page.locator("#legend").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "status.png"), full_page=True)
            phone = browser.new_page(viewport={"width": 390, "height": 800})
            phone.goto(url)
            waitUntil(lambda: len(rowPids(phone)) == 3, 15, "rows on a phone")
            waitUntil(
                lambda: drawn(phone, "#chart-open .restart[data-cause=crash]") == 1,
                15,
                "the picture on a phone",
            )
            phone.screenshot(path=str(ARTIFACTS / "status-phone.png"), full_page=True)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px phone"
        finally:
            browser.close()
            for client in idle:
                client.close()
    assert load.failed == [], load.report()


# The endpoint's HTTP server, in process.


def ask(site: StatusSite, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """
    Feed one raw request to a channel of C{site}; the status code,
    headers (lower-cased names) and body of its answer.
    """
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(request)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    channel.connectionLost(Failure(ConnectionDone()))
    return int(status.split()[1]), headers, body


def pages(fails: bool = False) -> StatusSite:
    def boom() -> Answer:
        raise RuntimeError("a page's bug")

    site = statusSite(Scoreboard(Harness(1).pool, [], Clock()))
    if fails:
        site.pages[b"/boom"] = boom
    return site


def test_pages_answer_get_and_head_only() -> None:
    """
    GET answers with the page; HEAD with the same headers and no body;
    any other method 405 with what is allowed; an unknown path 404; every
    answer is marked not to be cached.
    """
    site = pages()
    code, headers, body = ask(site, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (code, body) == (200, b"ok: the master's reactor answered\n")
    assert headers[b"content-length"] == b"%d" % len(body)
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    code, headers, body = ask(site, b"HEAD /readyz?verbose HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (code, body) == (503, b"")
    assert int(headers[b"content-length"]) > 0
    code, headers, _ = ask(site, b"POST /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (code, headers[b"allow"]) == (405, b"GET, HEAD")
    code, _, _ = ask(site, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 404
    code, headers, _ = ask(site, b"GET /livez/ HTTP/1.0\r\n\r\n")
    assert code == 200 and headers[b"date"].endswith(b"GMT")
    code, headers, body = ask(site, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 200 and headers[b"content-type"].startswith(b"text/html")
    assert b"<html" in body.lower()


def test_a_page_that_raises_is_logged_and_answered_500() -> None:
    site = pages(fails=True)
    with capturedLogs() as events:
        code, _, body = ask(site, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (code, body) == (500, b"internal error\n")
    assert any("log_failure" in e for e in events)


def test_status_endpoint_leaves_twisted_web_server_out() -> None:
    """
    The endpoint does without C{twisted.web.server} (and the Perspective
    Broker, cred and templates it imports): 2.3 MB of the master's memory.
    """
    code = (
        "import sys; import preforktwist.master.status.web; "
        "sys.exit('twisted.web.server' in sys.modules or 'twisted.spread.pb' in "
        "sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
