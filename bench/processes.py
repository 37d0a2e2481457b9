"""
How a server under test runs: the code and environment it runs with, its
start in a session of its own, the wait until it is ready, its graceful
stop, and the kill by pid of whatever is left of its session.
"""

from __future__ import annotations

import compileall
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from bench.common import BENCH, HOST, ROOT, readText
from bench.measurement import Proc, sessionProcs
from bench.servers import Server

#: Every process started and not yet stopped, by pid: what Ctrl-C stops.
LIVE: dict[int, subprocess.Popen[bytes]] = {}


def snapshot(revision: str) -> tuple[str, str]:
    """
    Export preforktwist/ at C{revision} into a temporary directory, so that
    a long run measures one version even while the working tree changes.
    """
    commit = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--verify", revision + "^{commit}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = tempfile.mkdtemp(prefix="bench-code-")
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", commit, "preforktwist"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return target, commit


@dataclass
class ServedCode:
    """
    The preforktwist code the servers run: the checkout's, or a
    C{--snapshot} export put before it on their C{PYTHONPATH}.
    """

    #: Directories put before the checkout on the servers' PYTHONPATH.
    path: list[str] = field(default_factory=list)
    #: What preforktwist code the servers run, for RESULTS.md.
    note: str = ""
    #: Source trees whose bytecode has been compiled (L{compile}).
    compiled: set[str] = field(default_factory=set)

    def useSnapshot(self, revision: str) -> str:
        """
        Run preforktwist as of C{revision}; return the export's directory.
        """
        directory, commit = snapshot(revision)
        self.path.insert(0, directory)
        self.note = f"{commit[:12]} (`--snapshot {revision}`: preforktwist/ "
        self.note += "exported from git, ahead of the working tree on PYTHONPATH)"
        return directory

    def compile(self) -> None:
        """
        Compile the Python code the servers run (preforktwist as exported by
        C{--snapshot}, or the checkout's, and C{bench/}'s own modules), once.

        A package installed by pip has its C{.pyc} files; a checkout or an
        export does not, and where C{PYTHONDONTWRITEBYTECODE} is set (it is
        on these machines) nothing ever writes them, so without this every
        forked worker would compile the modules it imports (C{--protocol}'s,
        say) from source: about 1.5 ms of each replacement that no installed
        server pays.
        """
        for tree in [
            *(os.path.join(path, "preforktwist") for path in self.path),
            os.path.join(ROOT, "preforktwist"),
            BENCH,
        ]:
            if tree not in self.compiled and os.path.isdir(tree):
                # bench/out/ holds raw results and a default-install virtualenv.
                compileall.compile_dir(tree, quiet=1, rx=re.compile(r"/bench/out/"))
                self.compiled.add(tree)

    def environment(self) -> dict[str, str]:
        """
        The environment the servers' code runs in: this one, with a
        C{--snapshot} export and the checkout first on C{PYTHONPATH}.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [*self.path, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        return env


#: The code every server of this harness runs.
CODE = ServedCode()


def freePort() -> int:
    """
    A free port below the ephemeral range, so that no client connection
    (thousands per second here) can already be using it.
    """
    for _ in range(200):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 10000
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def startServer(
    server: Server, port: int, tmp: str, log: str
) -> subprocess.Popen[bytes]:
    CODE.compile()
    if server.setup is not None:
        server.setup(port, tmp)
    env = CODE.environment()
    env["PYTHONUNBUFFERED"] = "1"
    env.update(server.env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            server.command(port, tmp),
            # Not the checkout: `python -m` puts its cwd first on sys.path,
            # so the fork server and workers would import the working tree
            # ahead of a --snapshot or --pt-rev export on PYTHONPATH.
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    LIVE[proc.pid] = proc
    return proc


def probe(port: int, timeout: float = 2.0) -> bool:
    """
    Whether one C{GET /} on a new connection is answered 200 C{hello}.
    """
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")


def isReady(server: Server, proc: subprocess.Popen[bytes], port: int, log: str) -> bool:
    """
    All the server's processes are there, its log says it is ready, and it
    answers a request.
    """
    ready = len(sessionProcs(proc.pid)) >= server.processes
    if ready and server.readyPattern:
        matches = re.findall(server.readyPattern, readText(log))
        if server.kind == "preforktwist":
            ready = bool(matches) and int(matches[-1]) >= server.readyCount
        else:
            ready = len(matches) >= server.readyCount
    return ready and probe(port)


def waitReady(
    server: Server,
    proc: subprocess.Popen[bytes],
    port: int,
    log: str,
    timeout: float = 40.0,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{server.label} exited with {proc.returncode} before it was "
                f"ready:\n{readText(log)[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.label} not ready after {timeout:g}s:\n{readText(log)[-2000:]}"
            )
        if isReady(server, proc, port, log):
            return
        time.sleep(0.1)


def kill(procs: list[Proc]) -> None:
    """
    SIGKILL each of C{procs}, by pid.
    """
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def reapSession(session: int) -> None:
    """
    Wait up to 5 s for a stopped server's session to empty, then kill what
    is left of it and wait 5 s more.
    """
    deadline = time.monotonic() + 5
    while True:
        left = sessionProcs(session)
        if not left:
            break
        if time.monotonic() > deadline:
            kill(left)
            time.sleep(0.2)
            if time.monotonic() > deadline + 5:
                break
        else:
            time.sleep(0.1)


def stopServer(
    server: Server, proc: subprocess.Popen[bytes], grace: float = 25.0
) -> None:
    """
    The server's own graceful stop, then SIGKILL for whatever is left of
    its session, each process by its pid.
    """
    try:
        if proc.poll() is None:
            proc.send_signal(server.stopSignal)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                print(
                    f"  ! {server.label}: no exit after {grace:g}s; killing", flush=True
                )
                proc.kill()
                proc.wait(5)
        reapSession(proc.pid)
    finally:
        LIVE.pop(proc.pid, None)


def stopEverything() -> None:
    """
    Kill every process still running and its session: the harness stops.
    """
    for proc in list(LIVE.values()):
        kill(sessionProcs(proc.pid))
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        LIVE.pop(proc.pid, None)


@dataclass
class Running:
    """
    One started server: its port, temporary directory, log and process.
    """

    server: Server
    port: int
    tmp: str
    log: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """
        The server's first process: its session's number too.
        """
        return self.proc.pid

    def waitReady(self) -> None:
        waitReady(self.server, self.proc, self.port, self.log)

    def stop(self) -> None:
        stopServer(self.server, self.proc)

    def command(self) -> str:
        """
        The command line it was started with, for the report.
        """
        return shlex.join(self.server.command(self.port, self.tmp))

    def keepLog(self, outdir: str, name: str) -> None:
        """
        Copy its log to C{outdir}/logs/C{name}.
        """
        keep = os.path.join(outdir, "logs", name)
        os.makedirs(os.path.dirname(keep), exist_ok=True)
        shutil.copy(self.log, keep)

    def remove(self) -> None:
        """
        Remove its temporary directory.
        """
        shutil.rmtree(self.tmp, ignore_errors=True)


def launch(server: Server, prefix: str) -> Running:
    """
    Start C{server} on a free port, in a new temporary directory named
    after C{prefix}, its output in C{server.log} there.
    """
    port = freePort()
    tmp = tempfile.mkdtemp(prefix=prefix)
    log = os.path.join(tmp, "server.log")
    return Running(server, port, tmp, log, startServer(server, port, tmp, log))
