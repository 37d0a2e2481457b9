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
from tests.test_status import STATUS

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
    Two instances behind HAProxy with send-proxy-v2, checked by HAProxy on
    their readiness (/readyz on the status port).
    While a client streams connections through HAProxy: a rolling reload
    of one, then a stop and a start of the other.  No connection fails.
    """
    portA, portB, front = freePort(), freePort(), freePort()
    statusA, statusB = freePort(), freePort()

    def instance(port: int, status: int) -> Master:
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
            "--status",
            f"tcp:{status}:interface=127.0.0.1",
        )

    a, b = instance(portA, statusA), instance(portB, statusB)
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
    option httpchk GET /readyz
    http-check expect status 200
    default-server send-proxy-v2 check inter 200ms fall 1 rise 2
    server a 127.0.0.1:{portA} port {statusA}
    server b 127.0.0.1:{portB} port {statusB}
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
        b2 = instance(portB, statusB)
        b2.waitForWorkers(2)

        def servedByB2() -> bool:
            recent = {pid for _, pid in load.served[-100:]}
            return bool(recent & set(b2.liveWorkers()))

        waitUntil(servedByB2, 30, "the restarted instance to serve again")
        load.waitForMore(200)
    print("two instances behind HAProxy:", load.report())
    assert load.failed == []
    assert re.search(r"reload finished", "\n".join(a.log()))


def serverCheck(stats: Path, backend: str, server: str) -> tuple[str, str]:
    """
    A server's state and last check's outcome, from HAProxy's stats socket:
    C{("UP", "L7OK")}, C{("DOWN", "L7STS")} (an HTTP status that failed
    C{http-check expect}), ...
    """
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(stats))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if (row.get("pxname"), row.get("svname")) == (backend, server):
            return row["status"], row["check_status"]
    raise AssertionError(f"no {backend}/{server} in {lines}")


def test_readiness_takes_a_stopping_instance_out(
    serve: StartMaster, tmp_path: Path
) -> None:
    """
    HAProxy checks /readyz on the status port: a stopping instance that is
    still finishing a request (and still holds its listening socket) is
    marked down by its 503, before it is gone.
    """
    master = serve("-w", "1", "-p", "tests.apps.BlocksBriefly", *STATUS)
    master.waitForWorkers(1)
    status = int(
        master.waitForLine(r"status page on http://127\.0\.0\.1:(\d+)/").group(1)
    )
    front, stats = freePort(), tmp_path / "stats.sock"
    config = (
        DEFAULTS
        + f"""
    timeout check 1s
frontend app
    bind 127.0.0.1:{front}
    default_backend pool
backend pool
    option httpchk GET /readyz
    http-check expect status 200
    server a 127.0.0.1:{master.port} check port {status} inter 100ms fall 1 rise 1
"""
    ).replace("global\n", f"global\n    stats socket {stats} level admin\n", 1)
    with haproxy(config, tmp_path, front):
        waitUntil(lambda: serverCheck(stats, "pool", "a") == ("UP", "L7OK"), 10, "UP")
        with socket.create_connection(("127.0.0.1", master.port), timeout=10) as s:
            s.sendall(b"x")
            assert s.recv(100) == b"busy\n"
            master.signal(signal.SIGTERM)
            waitUntil(
                lambda: serverCheck(stats, "pool", "a") == ("DOWN", "L7STS"),
                2,
                "HAProxy to see the 503",
            )
            assert master.process.poll() is None
            assert master.count("closing the listening sockets") == 0
            assert s.recv(100) == b"done"
    assert master.wait(30) == 0
