"""
Hot upgrade (SIGUSR2) end to end: a new master started from the code on
disk takes the listening sockets over under a steady stream of new
connections, and none is lost; a new master that cannot boot leaves the old
one serving.  Each scenario reports connections attempted and failed, and
the processes left.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import REPO, TWISTD, Master, isAlive, processState, waitUntil

TWIST = str(Path(TWISTD).with_name("twist"))

#: The application the tests upgrade: its answer names its version.
APP = """\
import os

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol

VERSION = {version!r}


class Versioned(Protocol):
    def dataReceived(self, data):
        self.transport.write(VERSION + b":%d:" % os.getpid() + data)
        self.transport.loseConnection()


def init():
    # Never ready while the file named by UPGRADE_HANG exists.
    if os.path.exists(os.environ.get("UPGRADE_HANG", "/nonexistent")):
        return Deferred()
    return None
"""


def writeApp(directory: Path, version: bytes, broken: bool = False) -> None:
    """
    Write the application module: C{version} answers; C{broken} has a
    syntax error.
    """
    text = APP.format(version=version)
    if broken:
        text += "\ndef broken(:\n"
    (directory / "upgradeapp.py").write_text(text)


def environment(directory: Path, **more: str) -> dict[str, str]:
    """
    The masters' environment: the application importable, and no bytecode
    cache that could outlive a rewrite within the same second.
    """
    return {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(directory)]),
        "PYTHONDONTWRITEBYTECODE": "1",
        **more,
    }


class Clients:
    """
    A client thread opening connections in a loop, each sending C{ping} and
    reading the answer (C{VERSION:PID:ping}) to the close: what it was
    answered, when, by which version and process, or how it failed.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, bytes, int]] = []
        self.failed: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def attempted(self) -> int:
        return len(self.answers) + len(self.failed)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), 10) as s:
                    s.sendall(b"ping")
                    reply = b""
                    while chunk := s.recv(4096):
                        reply += chunk
            except OSError as e:
                self.failed.append((at, f"{type(e).__name__}: {e}"))
                continue
            version, _, rest = reply.partition(b":")
            pid, _, echoed = rest.partition(b":")
            if echoed == b"ping":
                self.answers.append((at, version, int(pid)))
            else:
                self.failed.append((at, f"answered {reply!r}"))

    def __enter__(self) -> Clients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def waitFor(self, count: int, version: bytes, timeout: float = 30.0) -> None:
        """Wait until C{count} more connections were answered by C{version}."""

        def answered() -> int:
            return sum(1 for _, v, _ in self.answers if v == version)

        target = answered() + count
        waitUntil(lambda: answered() >= target, timeout, f"{count} {version!r}")

    def versions(self, since: float = 0.0) -> set[bytes]:
        return {v for at, v, _ in self.answers if at >= since}

    def pids(self, version: bytes) -> set[int]:
        return {pid for _, v, pid in self.answers if v == version}

    def report(self) -> str:
        return (
            f"attempted {self.attempted}, answered {len(self.answers)}, "
            f"failed {len(self.failed)} {self.failed[:3]}"
        )


class Probes:
    """
    A thread asking C{/readyz} in a loop, as a load balancer would: every
    answer's status, or how the request failed.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.codes: list[int] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("GET", "/readyz")
                self.codes.append(connection.getresponse().status)
            except OSError as e:
                self.failed.append(f"{type(e).__name__}: {e}")
            finally:
                connection.close()
            self._stop.wait(0.01)

    def __enter__(self) -> Probes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


class WorkerCount:
    """
    A thread counting, every few milliseconds, the worker processes alive
    (children of either master's fork server), and keeping the most.
    """

    def __init__(self, master: Master) -> None:
        self.master = master
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            parents = set(self.master.forkServers())
            alive = 0
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                state, ppid = stat.rsplit(")", 1)[1].split()[:2]
                if int(ppid) in parents and state not in ("Z", "X"):
                    alive += 1
            self.most = max(self.most, alive)
            self._stop.wait(0.02)

    def __enter__(self) -> WorkerCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def newMasters(master: Master) -> list[int]:
    """Every new master the old one started, from the log."""
    found = re.findall(r"the new master \(pid (\d+)\) runs", "\n".join(master.log()))
    return [int(pid) for pid in dict.fromkeys(found)]


def gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    """
    Wait until none of C{pids} exists, not even as a zombie; return those
    left (killed first, so that nothing outlives the test).
    """
    try:
        waitUntil(
            lambda: all(processState(pid) is None for pid in pids),
            timeout,
            "processes to be gone and reaped",
        )
        return []
    except AssertionError:
        left = [pid for pid in pids if processState(pid) is not None]
        for pid in left:
            if isAlive(pid):
                os.kill(pid, signal.SIGKILL)
        return left


def everyProcess(master: Master) -> list[int]:
    """Both masters' every process: masters, fork servers, workers."""
    return [
        master.pid,
        *newMasters(master),
        *master.forkServers(),
        *master.workerPids(),
    ]


@pytest.fixture
def upgrading(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    """
    C{upgrading(args, ...)} starts a master (C{twistd -n preforked ARGS}
    by default) serving C{upgradeapp.Versioned} version C{v1}; afterwards
    every process of it and of every new master it started is stopped, and
    the test fails if any is left, alive or as a zombie.
    """
    started: list[Master] = []

    def start(
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        **kwargs: object,
    ) -> Master:
        writeApp(tmp_path, b"v1")
        master = Master(
            args or [],
            cwd=tmp_path,
            env=environment(tmp_path, **(env or {})),
            **kwargs,  # type: ignore[arg-type]
        )
        started.append(master)
        return master

    yield start
    left: list[int] = []
    for master in started:
        for pid in newMasters(master):
            if isAlive(pid):
                os.kill(pid, signal.SIGTERM)
        left += master.reap()
        left += gone(everyProcess(master))
    assert not left, f"processes left: {left}"


def serving(*more: str) -> list[str]:
    return [
        "-w",
        "2",
        "-l",
        "tcp:0:interface=127.0.0.1",
        "-p",
        "upgradeapp.Versioned",
        *more,
    ]


def test_upgrade_under_load(upgrading: Callable[..., Master], tmp_path: Path) -> None:
    """
    SIGUSR2 while a client opens connections in a loop and a probe asks
    C{/readyz}: every connection is answered, by the old code or the new;
    after the old master's exit only the new code answers; the old master
    and its pool are gone; the status endpoint never failed a probe; at
    most twice the pool ran; a second SIGUSR2 meanwhile is ignored.
    """
    pidfile = tmp_path / "master.pid"
    master = upgrading(
        serving("--status", "tcp:0:interface=127.0.0.1"),
        twistdArgs=[f"--pidfile={pidfile}"],
    )
    master.waitForWorkers(2)
    statusPort = int(
        master.waitForLine(r"status page on http://[\d.]+:(\d+)/").group(1)
    )
    with Clients(master.port) as clients, Probes(statusPort) as probes:
        with WorkerCount(master) as count:
            clients.waitFor(50, b"v1")
            writeApp(tmp_path, b"v2-new")
            master.signal(signal.SIGUSR2)
            master.waitForLine(r"upgrade: started the new master")
            master.signal(signal.SIGUSR2)
            master.waitForLine(r"upgrade refused: an upgrade is under way")
            assert master.wait(60) == 0
            exited = time.monotonic()
            clients.waitFor(100, b"v2-new")
    (successor,) = newMasters(master)
    print("upgrade under load:", clients.report())
    print(f"readyz probes: {len(probes.codes)}, failed {len(probes.failed)}")
    assert clients.failed == []
    assert clients.versions() == {b"v1", b"v2-new"}
    assert clients.versions(since=exited) == {b"v2-new"}
    assert probes.failed == [] and set(probes.codes) == {200}
    assert count.most <= 4, f"{count.most} workers ran at once"
    assert not any(isAlive(pid) for pid in clients.pids(b"v1"))
    assert isAlive(successor)
    assert pidfile.read_text() == str(successor)
    assert not Path(f"{pidfile}.oldbin").exists()
    # The old master's own processes are gone, and reaped.
    old = [master.pid, master.forkServers()[0], *clients.pids(b"v1")]
    assert gone(old) == []
    print(f"processes of the old master left: 0 of {len(old)}")


def test_failed_upgrade_keeps_serving(
    upgrading: Callable[..., Master], tmp_path: Path
) -> None:
    """
    A new master whose code has a syntax error never becomes ready: it is
    stopped, the old one goes on serving (nothing lost), and the pidfile
    names the old master again; a later upgrade with the code mended
    succeeds.
    """
    pidfile = tmp_path / "master.pid"
    master = upgrading(serving(), twistdArgs=[f"--pidfile={pidfile}"])
    master.waitForWorkers(2)
    with Clients(master.port) as clients:
        clients.waitFor(30, b"v1")
        oldWorkers = set(master.liveWorkers())
        writeApp(tmp_path, b"v2", broken=True)
        master.signal(signal.SIGUSR2)
        failure = master.waitForLine(r"upgrade failed: (.*); this master goes on")
        master.waitForLine(r"upgrade: the new master \(pid \d+\) is gone")
        clients.waitFor(30, b"v1")
        (broken,) = newMasters(master)
        assert processState(broken) is None
        assert set(master.liveWorkers()) >= oldWorkers
        assert pidfile.read_text() == str(master.pid)
        print("failed upgrade:", clients.report(), "-", failure.group(1))
        assert clients.failed == [] and clients.versions() == {b"v1"}
        writeApp(tmp_path, b"v3")
        master.signal(signal.SIGUSR2)
        assert master.wait(60) == 0
        clients.waitFor(30, b"v3")
    assert clients.failed == []
    assert "exited with status 1 before it was ready" in failure.group(1)


def test_upgrade_not_ready_in_time(
    upgrading: Callable[..., Master], tmp_path: Path
) -> None:
    """
    A new master whose workers never become ready is stopped after
    C{--boot-timeout}, with its workers; the old one goes on serving.
    """
    hang = tmp_path / "hang"
    master = upgrading(
        serving("--worker-init", "upgradeapp.init", "--boot-timeout", "3"),
        env={"UPGRADE_HANG": str(hang)},
    )
    master.waitForWorkers(2)
    with Clients(master.port) as clients:
        clients.waitFor(20, b"v1")
        hang.touch()
        master.signal(signal.SIGUSR2)
        master.waitForLine(
            r"upgrade failed: the new master \(pid \d+\) was not ready within 3s"
        )
        master.waitForLine(r"upgrade: the new master \(pid \d+\) is gone", 30)
        clients.waitFor(20, b"v1")
    print("upgrade timed out:", clients.report())
    assert clients.failed == []
    assert master.process.poll() is None


def test_upgrade_tac(upgrading: Callable[..., Master], tmp_path: Path) -> None:
    """
    C{twistd -y app.tac}: the new master runs the .tac file anew.
    """
    tac = tmp_path / "app.tac"
    tac.write_text(
        "from twisted.application.service import Application\n"
        "from preforktwist import PreforkService\n"
        "application = Application('upgrade')\n"
        "PreforkService(listen='tcp:0:interface=127.0.0.1', workers=2,\n"
        "    protocol='upgradeapp.Versioned').setServiceParent(application)\n"
    )
    master = upgrading(
        command=[TWISTD, "-n", "--pidfile=", "--logfile=-", "-y", str(tac)]
    )
    upgradeOnce(master, tmp_path)


def test_upgrade_twist(upgrading: Callable[..., Master], tmp_path: Path) -> None:
    """
    C{twist preforked ...}: the same command line starts the new master.
    """
    master = upgrading(command=[TWIST, "--log-format=text", "preforked", *serving()])
    upgradeOnce(master, tmp_path)


def upgradeOnce(master: Master, directory: Path) -> None:
    """
    Upgrade C{master} under load to C{v2} and check that nothing was lost
    and that the old master exited 0.
    """
    master.waitForWorkers(2)
    with Clients(master.port) as clients:
        clients.waitFor(20, b"v1")
        writeApp(directory, b"v2")
        master.signal(signal.SIGUSR2)
        assert master.wait(60) == 0
        clients.waitFor(20, b"v2")
    print("upgrade:", clients.report())
    assert clients.failed == []
    assert len(newMasters(master)) == 1


def test_upgrade_daemon_pidfile(tmp_path: Path) -> None:
    """
    twistd as a daemon, with its pidfile: the new master daemonizes too,
    its twistd starts although the old master's pidfile named a live
    process, and the pidfile names it once the old master has exited;
    when it stops, the pidfile is removed.
    """
    writeApp(tmp_path, b"v1")
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    env = {**os.environ, **environment(tmp_path)}
    starter = Master(
        [],
        cwd=tmp_path,
        env=env,
        command=[
            TWISTD,
            f"--pidfile={pidfile}",
            f"--logfile={logfile}",
            "preforked",
            *serving(),
        ],
    )
    pids: list[int] = []
    try:
        assert starter.wait(30) == 0
        old = int(waitUntil(pidfile.read_text, 20, "the pidfile"))
        pids.append(old)
        port = int(
            waitUntil(
                lambda: re.search(
                    r"listening on 127\.0\.0\.1:(\d+)", logfile.read_text()
                ),
                20,
                "the port",
            ).group(1)
        )
        waitUntil(lambda: "(2 accepting)" in logfile.read_text(), 30, "the workers")
        with Clients(port) as clients:
            clients.waitFor(20, b"v1")
            writeApp(tmp_path, b"v2")
            os.kill(old, signal.SIGUSR2)
            waitUntil(lambda: not isAlive(old), 60, "the old master to exit")
            new = int(pidfile.read_text())
            pids.append(new)
            clients.waitFor(20, b"v2")
        print("daemon upgrade:", clients.report())
        assert clients.failed == []
        assert new != old and isAlive(new)
        assert not Path(f"{pidfile}.oldbin").exists()
        os.kill(new, signal.SIGTERM)
        waitUntil(lambda: not pidfile.exists(), 30, "the pidfile to be removed")
    finally:
        for pid in pids:
            if isAlive(pid):
                os.kill(pid, signal.SIGTERM)
        text = logfile.read_text() if logfile.exists() else ""
        workers = [
            int(p)
            for p in re.findall(
                r"\[worker \d+ pid (\d+)\]|fork server \(pid (\d+)\)", text
            )
            for p in p
            if p
        ]
        assert gone(pids + workers) == []
        starter.reap()


def test_upgrade_systemd(tmp_path: Path) -> None:
    """
    Under systemd: the socket it passed in (C{LISTEN_FDS}) is handed over
    at the same descriptor, the new master finds it (C{LISTEN_PID} is its
    own), and systemd is told the new master's pid (C{MAINPID=}) by the
    old one, then hears the new one.
    """
    activate = shutil.which("systemd-socket-activate")
    if activate is None and not os.environ.get("CI"):
        pytest.skip("systemd-socket-activate is not installed (.ci/run installs it)")
    assert activate is not None
    writeApp(tmp_path, b"v1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(30)
        # systemd-socket-activate passes on only what -E names.
        passed = environment(tmp_path, NOTIFY_SOCKET=address)
        master = Master(
            [],
            cwd=tmp_path,
            command=[
                activate,
                *[f"-E{name}={value}" for name, value in passed.items()],
                "-l",
                f"127.0.0.1:{port}",
                "--fdname=web",
                TWISTD,
                "-n",
                "--pidfile=",
                "--logfile=-",
                "preforked",
                "-w",
                "2",
                "-p",
                "upgradeapp.Versioned",
                "-l",
                "systemd:domain=INET:name=web",
            ],
        )
        messages: list[list[str]] = []

        def until(wanted: Callable[[list[str]], bool]) -> list[str]:
            while True:
                for message in messages:
                    if wanted(message):
                        return message
                messages.append(notify.recv(4096).decode().split("\n"))

        try:
            waitUntil(
                lambda: any("Listening on" in line for line in master.errors),
                10,
                "bind",
            )
            with Clients(port) as clients:
                clients.waitFor(20, b"v1")
                until(lambda m: "READY=1" in m)
                writeApp(tmp_path, b"v2")
                messages.clear()
                master.signal(signal.SIGUSR2)
                (new,) = waitUntil(lambda: newMasters(master), 30, "the new master")
                mainPid = f"MAINPID={new}"
                # The old master tells systemd; then the new one speaks.
                handover = until(lambda m: mainPid in m)
                assert "READY=1" in handover
                assert master.wait(60) == 0
                clients.waitFor(20, b"v2")
                own = until(lambda m: mainPid in m and m is not handover)
            print("systemd upgrade:", clients.report())
            assert clients.failed == []
            assert "READY=1" in own
            assert any(f.startswith("STATUS=") and "accepting" in f for f in own)
            # Nothing from the old master after it handed over.
            assert messages.index(own) == messages.index(handover) + 1
        finally:
            for pid in newMasters(master):
                if isAlive(pid):
                    os.kill(pid, signal.SIGTERM)
            assert master.reap() == []
            assert gone(everyProcess(master)) == []
