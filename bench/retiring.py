"""
What a retiring worker does with its HTTP keep-alive connections: how long
a graceful stop, a rolling reload and recycling take with twisted.web's
C{Site} when clients keep their connections open, and what the clients
and the workers' exit statuses say.

    python bench/retiring.py idle --clients 100 --grace 30
    python bench/retiring.py reload --connections 50
    python bench/retiring.py recycle --connections 50 -m 20 --duration 10
    python bench/retiring.py idle --code /tmp/old     # preforktwist from another tree

C{idle}: C{-w 2} serving L{site}; C{--clients} HTTP/1.1 clients each make
one request and keep the connection open; then C{SIGTERM}.  Reports the
seconds until the master exited, the workers' exit statuses, the grace
warnings, and how each client's connection ended (a clean end of stream,
a reset, or still open when the master was gone).

C{reload}: C{wrk -t1 -c50} (keep-alive) for C{--duration} seconds; one
second in, C{SIGHUP}.  Reports the seconds until the log says the reload
finished, wrk's errors and the workers' exit statuses.

C{recycle}: the same load with C{-m}; reports how many workers retired,
how long each took from its last accept to its exit, their exit statuses,
and wrk's errors.

Everything listens on 127.0.0.1; every process started is reaped.  Not run
in CI.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PYTHON = sys.executable
TWISTD = os.path.join(os.path.dirname(PYTHON), "twistd")
HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"hello\n"


class QuietSite(Site):
    """
    A C{Site} that writes no access log line (one per request would make
    the master's log relay the load).
    """

    def log(self, request: http.Request) -> None:
        pass


#: The factory the workers serve: C{--factory bench.retiring.site}.
site = QuietSite(_Hello())


class Server:
    """
    A C{twistd -n preforked} master serving L{site}, its log collected.
    """

    def __init__(self, args: list[str], code: str | None) -> None:
        env = dict(os.environ)
        paths = [p for p in (code, ROOT, env.get("PYTHONPATH")) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self.log: list[str] = []
        self.process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "--logfile=-",
                "preforked",
                "-l",
                f"tcp:0:interface={HOST}",
                "-f",
                "bench.retiring.site",
                *args,
            ],
            cwd=tempfile.gettempdir(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            self.log.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def waitFor(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                match = regex.search(line)
                if match:
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"no {pattern!r} in the log:\n" + "\n".join(self.log))

    def port(self) -> int:
        return int(self.waitFor(r"listening on 127\.0\.0\.1:(\d+)").group(1))

    def exitStatuses(self) -> list[str]:
        return re.findall(
            r"worker \d+ \(pid \d+\) (exited with status \d+|was killed by \w+)",
            "\n".join(self.log),
        )

    def graceWarnings(self) -> int:
        return sum("grace period of" in line for line in self.log)

    def reap(self) -> None:
        """
        Stop the master if it still runs, then kill whatever is left in its
        session.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._reader.join(5)


def readResponse(sock: socket.socket) -> bytes:
    """
    One response with a C{Content-Length} from C{sock}.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return head


def ending(sock: socket.socket) -> str:
    """
    How a connection the server should have closed ended.
    """
    sock.settimeout(0)
    try:
        data = sock.recv(1)
    except BlockingIOError:
        return "still open"
    except ConnectionResetError:
        return "reset"
    return "clean end" if data == b"" else "unexpected data"


def idle(options: argparse.Namespace) -> dict[str, Any]:
    server = Server(
        ["-w", str(options.workers), "--grace", str(options.grace)], options.code
    )
    clients: list[socket.socket] = []
    try:
        port = server.port()
        server.waitFor(rf"[(, ]{options.workers} accepting[,)]")
        for _ in range(options.clients):
            sock = socket.create_connection((HOST, port), timeout=10)
            sock.sendall(REQUEST)
            readResponse(sock)
            clients.append(sock)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(options.grace + 60)
        took = time.monotonic() - started
        endings: dict[str, int] = {}
        for sock in clients:
            how = ending(sock)
            endings[how] = endings.get(how, 0) + 1
        return {
            "stop_seconds": round(took, 2),
            "master_status": server.process.returncode,
            "workers": statusCounts(server.exitStatuses()),
            "grace_warnings": server.graceWarnings(),
            "clients": endings,
        }
    finally:
        for sock in clients:
            sock.close()
        server.reap()


def statusCounts(statuses: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


def runWrk(port: int, connections: int, duration: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://{HOST}:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wrkErrors(text: str) -> dict[str, int]:
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if match:
        for name, value in zip(errors, match.groups(), strict=False):
            errors[name] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    requests = re.search(r"(\d+) requests in", text)
    errors["requests"] = int(requests.group(1)) if requests else -1
    return errors


def reload(options: argparse.Namespace) -> dict[str, Any]:
    server = Server(
        ["-w", str(options.workers), "--grace", str(options.grace)], options.code
    )
    try:
        port = server.port()
        server.waitFor(rf"[(, ]{options.workers} accepting[,)]")
        old = set(re.findall(r"\(pid (\d+)\) is accepting", "\n".join(server.log)))
        wrk = runWrk(port, options.connections, options.duration)
        time.sleep(1.0)
        started = time.monotonic()
        server.process.send_signal(signal.SIGHUP)
        server.waitFor("reload finished", options.grace + 60)
        newReady = time.monotonic() - started
        gone: set[str] = set()
        deadline = started + options.grace + 30
        while gone != old and time.monotonic() < deadline:
            text = "\n".join(server.log)
            gone = old & set(re.findall(r"\(pid (\d+)\) exited", text))
            time.sleep(0.01)
        oldGone = time.monotonic() - started
        out, _ = wrk.communicate(timeout=options.duration + options.grace + 60)
        return {
            "new_workers_accepting_seconds": round(newReady, 2),
            "old_workers_exited_seconds": round(oldGone, 2),
            "wrk": wrkErrors(out),
            "workers": statusCounts(server.exitStatuses()),
            "grace_warnings": server.graceWarnings(),
        }
    finally:
        server.reap()


def recycle(options: argparse.Namespace) -> dict[str, Any]:
    server = Server(
        [
            "-w",
            str(options.workers),
            "--grace",
            str(options.grace),
            "-m",
            str(options.m),
        ],
        options.code,
    )
    try:
        port = server.port()
        server.waitFor(rf"[(, ]{options.workers} accepting[,)]")
        stopped: dict[str, float] = {}
        exited: dict[str, float] = {}
        wrk = runWrk(port, options.connections, options.duration)
        seen = 0
        deadline = time.monotonic() + options.duration + options.grace + 5
        while time.monotonic() < deadline and (
            wrk.poll() is None or len(exited) < len(stopped)
        ):
            lines = server.log[seen:]
            seen += len(lines)
            now = time.monotonic()
            for line in lines:
                m = re.search(
                    r"\[worker \d+ pid (\d+)\] .*stopped accepting after", line
                )
                if m:
                    stopped.setdefault(m.group(1), now)
                m = re.search(r"worker \d+ \(pid (\d+)\) exited", line)
                if m:
                    exited.setdefault(m.group(1), now)
            time.sleep(0.01)
        out, _ = wrk.communicate(timeout=options.grace + 60)
        lingering = sorted(
            exited[pid] - stopped[pid] for pid in stopped if pid in exited
        )
        return {
            "retired": len(stopped),
            "exited": len(lingering),
            "never_exited": len([p for p in stopped if p not in exited]),
            "last_accept_to_exit_s": {
                "median": round(lingering[len(lingering) // 2], 2)
                if lingering
                else None,
                "max": round(lingering[-1], 2) if lingering else None,
            },
            "wrk": wrkErrors(out),
            "workers": statusCounts(server.exitStatuses()),
            "grace_warnings": server.graceWarnings(),
        }
    finally:
        server.reap()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["idle", "reload", "recycle"])
    parser.add_argument("--code", help="a tree whose preforktwist/ to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("-m", type=int, default=20)
    options = parser.parse_args()
    result = {"idle": idle, "reload": reload, "recycle": recycle}[options.case](options)
    print(options.case, result)


if __name__ == "__main__":
    main()
