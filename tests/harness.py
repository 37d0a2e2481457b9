"""
Helpers for end-to-end tests: a real C{twistd preforked} master in its own
process, its log read line by line, real client sockets on 127.0.0.1, and a
strict account of every process the test started.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))

T = TypeVar("T")


def waitUntil(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02
) -> T:
    """
    Poll C{condition} until it returns something true; fail after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def processState(pid: int) -> str | None:
    """
    The state letter of a process (C{R}, C{S}, C{Z}, ...), or L{None} if
    there is no such process.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()[0]


def isAlive(pid: int) -> bool:
    """
    Whether C{pid} is a running process (a zombie is not running).
    """
    return processState(pid) not in (None, "Z", "X")


class Master:
    """
    A C{twistd -n preforked} process started for one test.
    """

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        twistdArgs: list[str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), environment.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        environment.update(env or {})
        self.command = command or [
            TWISTD,
            "-n",
            "--pidfile=",
            "--logfile=-",
            *(twistdArgs or []),
            "preforked",
            *args,
        ]
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session, as a server started from a terminal or a
            # service manager is: signals the test sends reach it alone.
            start_new_session=True,
        )
        self.pid = self.process.pid
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines)),
            threading.Thread(
                target=self._read, args=(self.process.stderr, self.errors)
            ),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, stream: object, into: list[str]) -> None:
        assert hasattr(stream, "readline")
        for raw in iter(stream.readline, b""):
            with self._lock:
                into.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def log(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines + self.errors)

    def waitForLine(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in self.log():
                match = regex.search(line)
                if match:
                    return match
            if self.process.poll() is not None:
                raise AssertionError(
                    f"master exited ({self.process.returncode}) before logging "
                    f"{pattern!r}:\n{self.output()}"
                )
            return None

        return waitUntil(found, timeout, f"log line {pattern!r}")

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.log() if regex.search(line))

    @property
    def port(self) -> int:
        return int(self.waitForLine(r"listening on 127\.0\.0\.1:(\d+)").group(1))

    def waitForWorkers(self, count: int, timeout: float = 30.0) -> None:
        """
        Wait until C{count} workers have said they are accepting.
        """
        self.waitForLine(rf"[(, ]{count} accepting[,)]", timeout)

    def workerPids(self) -> list[int]:
        """
        Every worker pid this master ever started, from its log.
        """
        pids: dict[int, None] = {}
        # A spawned worker's pid is on its "started" line; a forked one's
        # on its own lines and the pool's later ones.
        for found in re.findall(
            r"worker \d+ \(pid (\d+)\)|\[worker \d+ pid (\d+)\]",
            "\n".join(self.log()),
        ):
            pids[int(found[0] or found[1])] = None
        return list(pids)

    def poolSummaries(self) -> list[dict[str, int]]:
        """
        The pool's state after each change it logged: C{(1 booting, 2
        accepting)} at the end of a line becomes C{{"booting": 1,
        "accepting": 2}}.
        """
        summaries = []
        for line in self.log():
            match = re.search(r"\(((?:\d+ \w+(?:, )?)+|none)\)$", line)
            if match and "preforktwist.pool" in line:
                pairs = re.findall(r"(\d+) (\w+)", match.group(1))
                summaries.append({state: int(n) for n, state in pairs})
        return summaries

    def mostBusy(self) -> int:
        """
        The most workers booting or accepting at once, as the pool logged.
        """
        return max(
            (s.get("booting", 0) + s.get("accepting", 0) for s in self.poolSummaries()),
            default=0,
        )

    def liveWorkers(self) -> list[int]:
        """
        The workers alive now (whether the master started them or its fork
        server forked them).
        """
        return [pid for pid in self.workerPids() if isAlive(pid)]

    def forkServers(self) -> list[int]:
        """
        Every fork server this master ever started, from its log.
        """
        pattern = r"started the fork server \(pid (\d+)\)"
        return [int(p) for p in re.findall(pattern, "\n".join(self.log()))]

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 40.0) -> int:
        return self.process.wait(timeout)

    def reap(self) -> list[int]:
        """
        End the master and every worker it ever started.  Returns the pids
        that were still alive after a graceful attempt: a test that leaves
        any has leaked processes.
        """
        leaked = []
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                leaked.append(self.pid)
                self.process.kill()
                self.process.wait(10)
        workers = self.workerPids() + self.forkServers()
        try:
            waitUntil(
                lambda: not any(isAlive(pid) for pid in workers), 10, "workers to exit"
            )
        except AssertionError:
            for pid in workers:
                if isAlive(pid):
                    leaked.append(pid)
                    os.kill(pid, signal.SIGKILL)
        for reader in self._readers:
            reader.join(5)
        return leaked


def exchange(
    port: int, payload: bytes, timeout: float = 15.0, expect: int | None = None
) -> bytes:
    """
    Connect, send C{payload}, and read until the server closes or
    C{expect} bytes arrived.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        received = b""
        while expect is None or len(received) < expect:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


class Load:
    """
    Clients that stream connections to C{port} from a few threads until
    stopped (or until C{limit} connections), recording for each whether it
    was served and by which worker.  The server must answer like
    C{tests.apps.PidEcho}: C{PID:payload}.
    """

    def __init__(
        self, port: int, clients: int = 4, limit: int = 100_000, pause: float = 0.0
    ) -> None:
        self.port = port
        self.limit = limit
        self.pause = pause
        self.served: list[tuple[float, int]] = []
        self.failed: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    @property
    def attempted(self) -> int:
        return len(self.served) + len(self.failed)

    def _run(self) -> None:
        while not self._stop.is_set() and self.attempted < self.limit:
            at = time.monotonic()
            try:
                reply = exchange(self.port, b"load", timeout=10)
            except OSError as e:
                self.failed.append((at, type(e).__name__))
                continue
            pid, _, echoed = reply.partition(b":")
            if echoed == b"load":
                self.served.append((at, int(pid)))
            else:
                self.failed.append((at, f"short answer {reply!r}"))
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def waitForMore(self, count: int, timeout: float = 30.0) -> None:
        """
        Wait until C{count} more connections were served.
        """
        target = len(self.served) + count
        waitUntil(lambda: len(self.served) >= target, timeout, f"{count} more served")

    def pidsSince(self, since: float) -> set[int]:
        return {pid for at, pid in self.served if at >= since}

    def report(self) -> str:
        return (
            f"attempted {self.attempted}, served {len(self.served)}, "
            f"failed {len(self.failed)} {self.failed[:5]}"
        )
