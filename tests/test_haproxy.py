"""
preforktwist behind a real HAProxy: the PROXY protocol v1 and v2, and two
instances behind one frontend, one reloaded and the other stopped and
started again, while a client streams connections: nothing lost.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import StartMaster
from tests.harness import Load, Master, waitUntil

HAPROXY = shutil.which("haproxy")

pytestmark = pytest.mark.skipif(
    HAPROXY is None and not os.environ.get("CI"),
    reason="HAProxy is not installed (.ci/run installs it)",
)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def haproxy(
    config: str, directory: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    path = directory / "haproxy.cfg"
    path.write_text(config)
    assert HAPROXY is not None
    process = subprocess.Popen(
        [HAPROXY, "-f", str(path), "-db"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        waitUntil(lambda: accepts(port), 10, "HAProxy to listen")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


DEFAULTS = """
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch 1
"""


def test_proxy_v1_and_v2(serve: StartMaster, tmp_path: Path) -> None:
    """
    Through HAProxy's send-proxy and send-proxy-v2, the protocol sees the
    client's own address and port already in connectionMade.
    """
    master = serve("-w", "2", "--proxy-protocol", "-p", "tests.apps.PeerAtConnect")
    master.waitForWorkers(2)
    v1, v2 = freePort(), freePort()
    config = (
        DEFAULTS
        + f"""
frontend v1
    bind 127.0.0.1:{v1}
    default_backend v1
backend v1
    server a 127.0.0.1:{master.port} send-proxy
frontend v2
    bind 127.0.0.1:{v2}
    default_backend v2
backend v2
    server a 127.0.0.1:{master.port} send-proxy-v2
"""
    )
    with haproxy(config, tmp_path, v1):
        waitUntil(lambda: accepts(v2), 10, "the second frontend")
        for port in (v1, v2):
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    clientPort = s.getsockname()[1]
                    s.sendall(b"who")
                    reply = s.recv(1000)
                assert reply == b"127.0.0.1:%d|who" % clientPort, reply


def test_two_instances_reload_and_restart(serve: StartMaster, tmp_path: Path) -> None:
    """
    Two instances behind HAProxy with health checks and send-proxy-v2.
    While a client streams connections through HAProxy: a rolling reload
    of one, then a stop and a start of the other.  No connection fails.
    """
    portA, portB, front = freePort(), freePort(), freePort()

    def instance(port: int) -> Master:
        return serve(
            "-w",
            "2",
            "--proxy-protocol",
            "-p",
            "tests.apps.PidEcho",
            "--grace",
            "10",
            "-l",
            f"tcp:{port}:interface=127.0.0.1",
        )

    a, b = instance(portA), instance(portB)
    a.waitForWorkers(2)
    b.waitForWorkers(2)
    config = (
        DEFAULTS
        + f"""
frontend app
    bind 127.0.0.1:{front}
    default_backend pool
backend pool
    balance roundrobin
    default-server send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 2
    server a 127.0.0.1:{portA}
    server b 127.0.0.1:{portB}
"""
    )
    with haproxy(config, tmp_path, front), Load(front, clients=4) as load:
        load.waitForMore(200)
        a.signal(signal.SIGHUP)
        a.waitForLine("reload finished", 60)
        load.waitForMore(200)
        b.signal(signal.SIGTERM)
        assert b.wait(30) == 0
        load.waitForMore(200)
        b2 = instance(portB)
        b2.waitForWorkers(2)

        def servedByB2() -> bool:
            recent = {pid for _, pid in load.served[-100:]}
            return bool(recent & set(b2.liveWorkers()))

        waitUntil(servedByB2, 30, "the restarted instance to serve again")
        load.waitForMore(200)
    print("two instances behind HAProxy:", load.report())
    assert load.failed == []
    assert re.search(r"reload finished", "\n".join(a.log()))
