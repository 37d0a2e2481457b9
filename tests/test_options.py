"""
Bad options end twistd with one line naming the option and the reason, a
non-zero status, and no worker started.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from preforktwist.tap import Options
from tests.harness import Master


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers"),
        (["-w", "-3"], "--workers"),
        (["-w", "many"], "--workers"),
        (["-w", "99999999"], "--workers"),
        (["-m", "-1"], "--max-connections-per-worker"),
        (["--grace", "-1"], "--grace"),
        (["--grace", "nan"], "--grace"),
        (["--backlog", "0"], "--backlog"),
        (["--listen", "nosuch:80"], "--listen"),
        (["--listen", "tcp:notaport"], "--listen"),
        (["-p", "a.B", "-f", "c.d"], "--protocol and --factory"),
        (["--no-such-option"], "no-such-option"),
        (["-w", "1.5"], "--workers"),
        (["-w", ""], "--workers"),
        (["-w", "1025"], "--workers"),
        (["-m", "1e3"], "--max-connections-per-worker"),
        (["-m", str(2**63)], "--max-connections-per-worker"),
        (["--max-connections-jitter", "-1"], "--max-connections-jitter"),
        (["--replace-at", "0"], "--replace-at"),
        (["--replace-at", "1.5"], "--replace-at"),
        (["--replace-at", "nan"], "--replace-at"),
        (["-c", "-1"], "--max-concurrent"),
        (["-c", str(2**40)], "--max-concurrent"),
        (["-c", "lots"], "--max-concurrent"),
        (["--first-byte-timeout", "0.05"], "--first-byte-timeout"),
        (["--first-byte-timeout", "-1"], "--first-byte-timeout"),
        (["--first-byte-timeout", "never"], "--first-byte-timeout"),
        (["--heartbeat-timeout", "0.5"], "--heartbeat-timeout"),
        (["--heartbeat-timeout", "-1"], "--heartbeat-timeout"),
        (["--heartbeat-timeout", "inf"], "--heartbeat-timeout"),
        (["--reload-batch", "0"], "--reload-batch"),
        (["--reload-batch", "99999"], "--reload-batch"),
        (["--boot-timeout", "0"], "--boot-timeout"),
        (["--boot-timeout", "inf"], "--boot-timeout"),
        (["--boot-timeout", "soon"], "--boot-timeout"),
        (["--grace", "1e400"], "--grace"),
        (["--grace", "86401"], "--grace"),
        (["--backlog", "65536"], "--backlog"),
        (["--backlog", "-5"], "--backlog"),
        (["--backlog", "1.5"], "--backlog"),
        (["--listen", "tcp:70000"], "--listen"),
        (["--listen", "tcp:-1"], "--listen"),
        (["--listen", ""], "--listen"),
        (["--listen", "tcp:8080:backlog=many"], "--listen"),
        (["--listen", "ssl:8443"], "--listen"),
        (["--listen", "tcp:80", "--listen", "stdio:"], "--listen"),
    ],
)
def test_bad_option(args: list[str], message: str) -> None:
    options = Options()
    with pytest.raises(SystemExit) as raised:
        options.parseOptions(args)
    text = str(raised.value.code)
    assert "\n" not in text
    assert text.startswith("twistd preforked: ")
    assert message in text


def test_defaults() -> None:
    options = Options()
    options.parseOptions([])
    assert options["listen"] == ["tcp:8080"]
    assert options["workers"] >= 1
    assert options["max-connections-per-worker"] == 0
    assert options["grace"] == 30.0


def test_twistd_bad_option_one_line(tmp_path: Path) -> None:
    master = Master(["--workers", "0"], cwd=tmp_path)
    assert master.wait(20) != 0
    assert master.reap() == []
    errors = [line for line in master.errors if line.strip()]
    assert len(errors) == 1, errors
    assert "--workers" in errors[0]
    assert master.lines == []


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        master = Master(["--listen", f"tcp:{port}:interface=127.0.0.1"], cwd=tmp_path)
        assert master.wait(20) != 0
    assert master.reap() == []
    errors = [line for line in master.errors if line.strip()]
    assert len(errors) == 1, errors
    assert "Address already in use" in errors[0] and str(port) in errors[0]
    assert master.workerPids() == []
