"""
Process titles on a default install: the master, the fork server and each
worker say what they are in C{/proc/PID/cmdline} (what C{ps} and C{top}
show), forked or started as fresh interpreters, and a worker's count
against its allowance follows what it accepted.  (That setproctitle comes
with a plain install is checked by tests/test_install.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import StartMaster
from tests.harness import exchange, waitUntil

LISTEN = "tcp:0:interface=127.0.0.1"


def title(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return raw.replace(b"\0", b" ").decode().strip()


@pytest.mark.parametrize("mode", ["fork server", "fresh interpreters"])
def test_every_process_says_what_it_is(serve: StartMaster, mode: str) -> None:
    extra = ["--no-fork-server"] if mode == "fresh interpreters" else []
    master = serve(
        "-w", "2", "-m", "5", "--replace-at", "1", "-p", "tests.apps.PidEcho", *extra
    )
    master.waitForWorkers(2)
    assert title(master.pid) == f"preforktwist master {LISTEN} (2 workers)"
    servers = master.forkServers()
    if mode == "fork server":
        (server,) = servers
        assert title(server) == f"preforktwist fork server {LISTEN}"
    else:
        assert servers == []
    pattern = rf"preforktwist worker (\d+) {re.escape(LISTEN)} \((.*)\)"

    def states() -> list[str] | None:
        titles = [title(pid) for pid in master.liveWorkers()]
        found = [re.fullmatch(pattern, t) for t in titles]
        return sorted(m.group(2) for m in found if m) if len(found) == 3 else None

    # The standby may still be booting: its title comes when it is up.
    waitUntil(
        lambda: states() == ["0/5 accepted", "0/5 accepted", "standby"],
        20,
        "the titles",
    )
    # One connection: its worker's title counts it within a heartbeat.
    pid = int(exchange(master.port, b"hi").split(b":")[0])
    waitUntil(lambda: title(pid).endswith("(1/5 accepted)"), 10, "the count in ps")
