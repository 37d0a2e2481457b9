"""
The control socket's parts in process: long answers over AMP, a worker's
stack read back from its stderr, the commands' refusals, and the ctl's
table, messages and command line.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python import usage
from twisted.python.failure import Failure

from preforktwist.common.reactors import preforkReactor
from preforktwist.ctl import Options, connectionError, exited, statusTable
from preforktwist.master.control.server import ControlCommands, _worker
from preforktwist.master.control.stacks import StackCapture
from preforktwist.protocol.admin import BigText, ControlError, Stack
from tests.test_pool import Harness


def test_big_text_spans_keys() -> None:
    """
    Text longer than an AMP value may be (65,535 bytes) travels whole,
    multi-byte characters cut anywhere included.
    """
    text = "é" * 100_000 + "end"
    box = Stack.makeResponse({"pid": 1, "stack": text}, None)
    assert max(len(value) for value in box.values()) <= 0xFFFF
    assert len([key for key in box if key.startswith(b"stack")]) == 4
    parsed = Stack.parseResponse(amp.AmpBox(box), None)
    assert parsed["stack"] == text and parsed["pid"] == 1
    assert (
        Stack.parseResponse(Stack.makeResponse({"pid": 1, "stack": ""}, None), None)[
            "stack"
        ]
        == ""
    )
    assert isinstance(BigText(), amp.Argument)


class DumpingWorker:
    def __init__(self, number: int = 3) -> None:
        self.number = number
        self.stderrObservers: list[Any] = []
        self.dumps = 0

    def dumpStack(self) -> None:
        self.dumps += 1

    def write(self, *lines: str) -> None:
        for line in lines:
            for observer in list(self.stderrObservers):
                observer(line)


def test_stack_read_back_until_quiet() -> None:
    clock, worker = Clock(), DumpingWorker()
    result: list[str] = []
    StackCapture(worker, clock).capture().addCallback(result.append)
    assert worker.dumps == 1
    worker.write("a log line before the dump")
    worker.write(
        "Thread 0x00007f01 (most recent call first):",
        '  File "a.py", line 1 in run',
        "",
        "Current thread 0x00007f02 (most recent call first):",
    )
    worker.write("an unrelated line", '  File "b.py", line 2 in main', "")
    clock.advance(StackCapture.QUIET - 0.01)
    assert result == []
    clock.advance(0.01)
    assert result == [
        "Thread 0x00007f01 (most recent call first):\n"
        '  File "a.py", line 1 in run\n'
        "\n"
        "Current thread 0x00007f02 (most recent call first):\n"
        '  File "b.py", line 2 in main\n'
    ]
    assert worker.stderrObservers == []


def test_no_stack_in_time() -> None:
    clock, worker = Clock(), DumpingWorker()
    failures: list[Failure] = []
    StackCapture(worker, clock).capture().addErrback(failures.append)
    worker.write("not a stack")
    clock.advance(StackCapture.TIMEOUT)
    assert failures[0].getErrorMessage() == "worker 3 wrote no stack within 5s"
    assert worker.stderrObservers == []


class FakeService:
    def __init__(self, size: int = 2) -> None:
        self.harness = Harness(size)
        self.pool = self.harness.pool
        self.pool.start()


def test_resize_exactly_and_within_bounds() -> None:
    service = FakeService(2)
    commands = ControlCommands(service, preforkReactor(Clock()))  # type: ignore[arg-type]
    assert commands.resize(3) == {"size": 5}
    assert commands.resize(-4) == {"size": 1}
    with pytest.raises(ControlError, match="cannot remove 1: the pool has 1 worker "):
        commands.resize(-1)
    with pytest.raises(ControlError, match="keeps at most 1024"):
        commands.resize(1024)
    service.pool.stop()
    with pytest.raises(ControlError, match="the server is stopping"):
        commands.resize(1)


def test_worker_by_number_or_pid() -> None:
    pool = FakeService(2).pool
    first, second = sorted(pool.workers.values(), key=lambda w: w.number)
    second.pid = 4242
    assert _worker(pool, str(first.number)) is first
    assert _worker(pool, "4242") is second
    with pytest.raises(ControlError, match=r"no worker 7 \(workers: 1, 2\)"):
        _worker(pool, "7")
    with pytest.raises(ControlError, match="give a number or a pid"):
        _worker(pool, "first")


def test_status_table() -> None:
    snapshot = {
        "pool": {
            "wanted": 2,
            "alive": 3,
            "booting": 1,
            "accepting": 2,
            "reloading": True,
            "saturated": False,
        },
        "connections": {"accepted": 10, "served": 9, "open": 1, "per_second": 2.5},
        "listeners": [
            {
                "description": "tcp:8080",
                "address": "0.0.0.0:8080",
                "queue": 0,
                "backlog": 1024,
            }
        ],
        "workers": [
            {
                "number": 1,
                "pid": 101,
                "state": "accepting",
                "open": 1,
                "accepted": 10,
                "served": 9,
                "allowance_left": None,
                "age": 61.25,
                "last_heartbeat": 0.4,
                "rss": 31457280,
            },
            {
                "number": 2,
                "pid": None,
                "state": "booting",
                "open": 0,
                "accepted": 0,
                "served": 0,
                "allowance_left": 100,
                "age": 0.1,
                "last_heartbeat": 0.1,
                "rss": None,
            },
        ],
    }
    lines = [line.split("  ") for line in statusTable(snapshot).splitlines()]
    assert [[cell.strip() for cell in line if cell] for line in lines] == [
        ["pool: 2 wanted, 3 alive (1 booting, 2 accepting), reloading"],
        ["connections: 10 accepted, 9 served, 1 open, 2.5/s"],
        ["listening: tcp:8080 on 0.0.0.0:8080, queue 0 of 1024"],
        "WORKER PID STATE OPEN ACCEPTED SERVED LEFT AGE HEARTBEAT RSS".split(),
        ["1", "101", "accepting", "1", "10", "9", "-", "61.2s", "0.4s", "30.0 MiB"],
        ["2", "-", "booting", "0", "0", "0", "100", "0.1s", "0.1s", "-"],
    ]
    # The columns line up.
    table = statusTable(snapshot).splitlines()[3:]
    assert table[1].index("61.2s") == table[0].index("AGE")


@pytest.mark.parametrize(
    "code, message",
    [
        (errno.ENOENT, "no server at /run/x.sock"),
        (errno.ECONNREFUSED, "no server at /run/x.sock"),
        (errno.EACCES, "permission denied: /run/x.sock"),
    ],
)
def test_connection_errors(code: int, message: str) -> None:
    assert connectionError("/run/x.sock", Failure(ConnectError(code))) == message


def test_command_line() -> None:
    options = Options()
    options.parseOptions(["--socket", "unix:/run/x.sock", "remove", "2"])
    assert options["socket"] == "/run/x.sock"
    assert (options.subCommand, options.subOptions["count"]) == ("remove", 2)
    options = Options()
    options.parseOptions(["-s", "/run/x.sock", "add"])
    assert options.subOptions["count"] == 1
    for wrong, why in [
        (["status"], "give --socket PATH"),
        (["-s", "x"], "give a command"),
        (["-s", "x", "add", "0"], "N must be 1 or more"),
        (["-s", "x", "stack"], "give WORKER"),
    ]:
        with pytest.raises(usage.UsageError, match=why):
            Options().parseOptions(wrong)


def test_exited() -> None:
    import os

    assert not exited(os.getpid())
    assert exited(2**22 + 12345)
