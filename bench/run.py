"""
The preforktwist benchmark: one command starts, loads, measures and stops
every server, then writes RESULTS.md and the charts.

    python bench/run.py            # full: 3 rounds of 8 s runs, ~25 minutes
    python bench/run.py --quick    # smoke test: 1 round of 3 s runs

See bench/README.md for what is measured and why.  Everything listens on
127.0.0.1 only, every run is bounded in time, and every process started is
stopped (its whole session, by pid) before the next run starts.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PYTHON = sys.executable
VENV_BIN = os.path.dirname(PYTHON)
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

MODES = ("close", "keepalive")
MODE_TITLES = {
    "close": "connection rate (Connection: close)",
    "keepalive": "keep-alive",
}


def tool(name: str) -> str:
    """
    A program from the virtualenv the harness runs in, else from PATH.
    """
    candidate = os.path.join(VENV_BIN, name)
    if os.path.exists(candidate):
        return candidate
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: {name} not found (see bench/README.md)")
    return found


def optionalTool(name: str) -> str:
    """
    L{tool}, or the bare name when it is missing (its version shows as
    "?"): a run of some servers only needs those servers' programs.
    """
    try:
        return tool(name)
    except SystemExit:
        return name


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    """
    One server configuration: how to start it, how to know it is ready,
    how to stop it.
    """

    key: str
    label: str
    kind: str  # preforktwist, single, naive, forking, perl, gunicorn, nginx
    workload: str  # "hello", "burn" or "heavy"
    argv: Callable[[int, str], list[str]]
    readyPattern: str | None = None  # regex in the server's output
    readyCount: int = 1  # matches (or the number in group 1) needed
    processes: int = 1  # processes that must exist before it is ready
    stopSignal: int = signal.SIGTERM
    workers: int = 1
    maxConnections: int = 0
    setup: Callable[[int, str], None] | None = None
    env: dict[str, str] | None = None  # added to the server's environment
    modes: tuple[str, ...] = MODES  # the loads it is run under

    def command(self, port: int, tmp: str) -> list[str]:
        return self.argv(port, tmp)


#: Accept-path variants of preforktwist for comparing designs (--accept-
#: variants), chosen with its settings: key suffix -> (label suffix, flags).
ACCEPT_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "": ("", []),
    "plain": (" plain epoll", ["--accept-wakeup", "plain"]),
    "r0": (" exclusive, no reorder", ["--accept-reorder", "0"]),
    "r4": (" exclusive, reorder 4", ["--accept-reorder", "4"]),
    "r64": (" exclusive, reorder 64", ["--accept-reorder", "64"]),
    # Not an accept path: the application imported once, in the fork server.
    "preload": (" --preload", ["--preload"]),
}


def preforkedCommand(
    twistd: str, port: int, served: list[str], workers: int
) -> list[str]:
    """
    The twistd command line every preforktwist case starts from.
    """
    return [
        twistd,
        "-n",
        "--pidfile=",
        "--logfile=-",
        "preforked",
        "-l",
        f"tcp:{port}:interface={HOST}",
        *served,
        "-w",
        str(workers),
    ]


def preforktwist(
    workers: int, maxConnections: int, workload: str = "hello", accept: str = ""
) -> Server:
    acceptLabel, acceptFlags = ACCEPT_VARIANTS[accept]
    # What the workers serve: a protocol (-p) or, for the Django app, the
    # twisted.web Site its module builds (-f).
    served = {
        "hello": ["-p", "preforktwist.examples.HelloHTTP"],
        "burn": ["-p", "bench.protocols.BurnHTTP"],
        "heavy": ["-f", "bench.heavyapp.site.site"],
    }[workload]
    suffix = "" if workload == "hello" else f" {workload}"

    def argv(port: int, tmp: str) -> list[str]:
        command = preforkedCommand(tool("twistd"), port, served, workers)
        if maxConnections:
            command += ["-m", str(maxConnections)]
        return command + acceptFlags

    key = f"pt-w{workers}-m{maxConnections}" + (
        "" if workload == "hello" else f"-{workload}"
    )
    key += f"-{accept}" if accept else ""
    return Server(
        key=key,
        label=f"preforktwist -w {workers} -m {maxConnections}{suffix}{acceptLabel}",
        kind="preforktwist",
        workload=workload,
        argv=argv,
        readyPattern=r"\((?:[^()]*, )?(\d+) accepting\)",
        readyCount=workers,
        processes=workers + 1,
        stopSignal=signal.SIGINT,  # Ctrl-C: the documented graceful stop
        workers=workers,
        maxConnections=maxConnections,
        # The heavy app is there for what recycling costs: connection rate.
        modes=("close",) if workload == "heavy" else MODES,
    )


def single(workload: str = "hello") -> Server:
    protocol = (
        "preforktwist.examples.HelloHTTP"
        if workload == "hello"
        else "bench.protocols.BurnHTTP"
    )
    return Server(
        key="single" if workload == "hello" else "single-burn",
        label="single Twisted process" + ("" if workload == "hello" else " burn"),
        kind="single",
        workload=workload,
        argv=lambda port, tmp: [
            PYTHON,
            os.path.join(BENCH, "single.py"),
            "--port",
            str(port),
            "--protocol",
            protocol,
        ],
        readyPattern=r"listening on",
    )


def naive(workers: int, workload: str = "hello", reuseport: bool = False) -> Server:
    protocol = (
        "preforktwist.examples.HelloHTTP"
        if workload == "hello"
        else "bench.protocols.BurnHTTP"
    )
    return Server(
        key=f"naive{'-rp' if reuseport else ''}-w{workers}"
        + ("" if workload == "hello" else "-burn"),
        label=f"naive Twisted pre-fork -w {workers}"
        + (" SO_REUSEPORT per worker" if reuseport else "")
        + ("" if workload == "hello" else " burn"),
        kind="naive",
        workload=workload,
        argv=lambda port, tmp: [
            PYTHON,
            os.path.join(BENCH, "naive_prefork.py"),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--protocol",
            protocol,
            *(["--reuseport"] if reuseport else []),
        ],
        readyPattern=r"child \d+ pid \d+ ready",
        readyCount=workers,
        processes=workers + 1,
        workers=workers,
    )


def forking() -> Server:
    return Server(
        key="forking",
        label="ForkingTCPServer (fork per connection)",
        kind="forking",
        workload="hello",
        argv=lambda port, tmp: [
            PYTHON,
            os.path.join(BENCH, "forking.py"),
            "--port",
            str(port),
        ],
        readyPattern=r"listening on",
    )


def perl() -> Server:
    return Server(
        key="perl",
        label="Perl Cookbook preforker (5 children, 5 clients each)",
        kind="perl",
        workload="hello",
        argv=lambda port, tmp: [
            tool("perl"),
            os.path.join(BENCH, "preforker.pl"),
            str(port),
        ],
        readyPattern=r"listening on",
        processes=6,
        stopSignal=signal.SIGINT,  # the recipe's HUNTSMAN
        workers=5,
        maxConnections=5,
    )


def gunicorn(workers: int = 2) -> Server:
    return Server(
        key=f"gunicorn-w{workers}",
        label=f"gunicorn sync -w {workers}",
        kind="gunicorn",
        workload="hello",
        argv=lambda port, tmp: [
            tool("gunicorn"),
            "--worker-class",
            "sync",
            "--workers",
            str(workers),
            "--bind",
            f"{HOST}:{port}",
            "--backlog",
            "1024",
            "--log-level",
            "info",
            "--error-logfile",
            "-",
            "--worker-tmp-dir",
            tmp,
            "bench.wsgi_hello:app",
        ],
        readyPattern=r"Booting worker with pid",
        readyCount=workers,
        processes=workers + 1,
        workers=workers,
    )


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port} backlog=1024;
        location / {{
            default_type text/plain;
            return 200 "hello";
        }}
    }}
}}
"""


def nginx(workers: int = 2) -> Server:
    def setup(port: int, tmp: str) -> None:
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(workers=workers, tmp=tmp, host=HOST, port=port))

    return Server(
        key=f"nginx-w{workers}",
        label=f"nginx return 200, {workers} workers (ceiling)",
        kind="nginx",
        workload="hello",
        argv=lambda port, tmp: [
            tool("nginx"),
            "-p",
            tmp,
            "-c",
            os.path.join(tmp, "nginx.conf"),
            "-e",
            os.path.join(tmp, "error.log"),
        ],
        processes=workers + 1,
        stopSignal=signal.SIGQUIT,  # graceful
        workers=workers,
        setup=setup,
    )


def allServers(acceptVariants: bool = False) -> list[Server]:
    variants = (
        [
            preforktwist(w, 0, accept=a)
            for a in ACCEPT_VARIANTS
            if a not in ("", "preload")
            for w in (2, 8)
        ]
        + [naive(w, reuseport=True) for w in (2, 8)]
        if acceptVariants
        else []
    )
    return [
        single(),
        preforktwist(2, 0),
        preforktwist(4, 0),
        preforktwist(8, 0),
        *variants,
        preforktwist(2, 1000),
        preforktwist(2, 100),
        naive(2),
        naive(4),
        naive(8),
        forking(),
        perl(),
        gunicorn(2),
        nginx(2),
        single("burn"),
        preforktwist(2, 0, "burn"),
        preforktwist(4, 0, "burn"),
        naive(2, "burn"),
        *(
            preforktwist(2, m, "heavy", accept=a)
            for a in ("", "preload")
            for m in (0, 1000)
        ),
    ]


# ------------------------------------------------------------ /proc views


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    ticks: int  # utime + stime + cutime + cstime
    session: int


def readProcs() -> Iterator[Proc]:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        close = stat.rfind(")")
        comm = stat[stat.find("(") + 1 : close]
        rest = stat[close + 2 :].split()
        # rest[0] is field 3 (state); field k is rest[k - 3].
        yield Proc(
            pid=int(entry),
            ppid=int(rest[1]),
            comm=comm,
            ticks=sum(int(x) for x in rest[11:15]),
            session=int(rest[3]),
        )


def sessionProcs(session: int) -> list[Proc]:
    """
    Every process of one server.  Each server is started in a session of
    its own (C{start_new_session}), which all its descendants inherit,
    even those that make their own process group, like preforktwist's
    workers, and even once orphaned.
    """
    return [p for p in readProcs() if p.session == session]


def cpuTicks(session: int) -> int:
    """
    CPU of the server so far: utime + stime of each live process, plus
    cutime + cstime, the CPU of the children each has reaped (retired
    workers, forked-per-connection children).  Differences of this sum
    over a window are the CPU spent in it, as long as every child is
    reaped by a process of the same server.
    """
    return sum(p.ticks for p in sessionProcs(session))


def machineBusy() -> int:
    """
    Ticks all CPUs spent not idle since boot, from /proc/stat.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def childrenCPU() -> float:
    """
    CPU seconds of this harness's reaped children: wrk, around a run.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def readKiB(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(session: int, master: int) -> dict[str, Any]:
    """
    PSS and RSS of each process of the server, in KiB.
    """
    procs = []
    for p in sessionProcs(session):
        try:
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = ""
        if p.pid == master:
            role = "master"
        elif "fork server" in cmdline or "forkserver" in cmdline:
            role = "fork server"
        else:
            role = "worker"
        procs.append(
            {
                "pid": p.pid,
                "ppid": p.ppid,
                "comm": p.comm,
                "cmdline": cmdline.strip()[:100],
                "role": role,
                "master": p.pid == master,
                "pss_kib": readKiB(f"/proc/{p.pid}/smaps_rollup", "Pss"),
                "rss_kib": readKiB(f"/proc/{p.pid}/status", "VmRSS"),
            }
        )
    return {
        "processes": len(procs),
        "pss_kib": sum(p["pss_kib"] for p in procs),
        "procs": procs,
    }


# ------------------------------------------------------------ processes

LIVE: dict[int, subprocess.Popen[bytes]] = {}
#: Directories put before the checkout on the servers' PYTHONPATH: with
#: --snapshot, an export of preforktwist/ at one git revision.
CODE_PATH: list[str] = []
#: What preforktwist code the servers run, for RESULTS.md.
CODE_NOTE = ""


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


#: Source trees whose bytecode has been compiled (L{compileServed}).
COMPILED: set[str] = set()


def compileServed() -> None:
    """
    Compile the Python code the servers run (preforktwist as exported by
    C{--snapshot}, or the checkout's, and C{bench/}'s own modules), once.

    A package installed by pip has its C{.pyc} files; a checkout or an
    export does not, and where C{PYTHONDONTWRITEBYTECODE} is set (it is on
    these machines) nothing ever writes them, so without this every forked
    worker would compile the modules it imports (C{--protocol}'s, say)
    from source: about 1.5 ms of each replacement that no installed server
    pays.
    """
    for tree in [
        *(os.path.join(path, "preforktwist") for path in CODE_PATH),
        os.path.join(ROOT, "preforktwist"),
        BENCH,
    ]:
        if tree not in COMPILED and os.path.isdir(tree):
            # bench/out/ holds raw results and a default-install virtualenv.
            compileall.compile_dir(tree, quiet=1, rx=re.compile(r"/bench/out/"))
            COMPILED.add(tree)


def servedEnvironment() -> dict[str, str]:
    """
    The environment the servers' code runs in: this one, with a
    C{--snapshot} export and the checkout first on C{PYTHONPATH}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*CODE_PATH, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def startServer(
    server: Server, port: int, tmp: str, log: str
) -> subprocess.Popen[bytes]:
    compileServed()
    if server.setup is not None:
        server.setup(port, tmp)
    env = servedEnvironment()
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


def readText(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


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
        ready = len(sessionProcs(proc.pid)) >= server.processes
        if ready and server.readyPattern:
            matches = re.findall(server.readyPattern, readText(log))
            if server.kind == "preforktwist":
                ready = bool(matches) and int(matches[-1]) >= server.readyCount
            else:
                ready = len(matches) >= server.readyCount
        if ready and probe(port):
            return
        time.sleep(0.1)


def stopServer(
    server: Server, proc: subprocess.Popen[bytes], grace: float = 25.0
) -> None:
    """
    The server's own graceful stop, then SIGKILL for whatever is left of
    its session, each process by its pid.
    """
    session = proc.pid
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
        deadline = time.monotonic() + 5
        while True:
            left = sessionProcs(session)
            if not left:
                break
            if time.monotonic() > deadline:
                for p in left:
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.2)
                if time.monotonic() > deadline + 5:
                    break
            else:
                time.sleep(0.1)
    finally:
        LIVE.pop(proc.pid, None)


def stopEverything() -> None:
    for proc in list(LIVE.values()):
        session = proc.pid
        for p in sessionProcs(session):
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        LIVE.pop(proc.pid, None)


# ------------------------------------------------------------ wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrkCommand(port: int, mode: str, duration: int) -> list[str]:
    command = [
        "wrk",
        "-t1",
        "-c50",
        f"-d{duration}s",
        "--latency",
    ]
    if mode == "close":
        command += ["-H", "Connection: close"]
    return [*command, f"http://{HOST}:{port}/"]


def parseWrk(text: str) -> dict[str, Any]:
    def number(pattern: str) -> float | None:
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else None

    def latency(percent: str) -> float | None:
        m = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else None

    socketErrors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if m:
        for name, value in zip(socketErrors, m.groups(), strict=False):
            socketErrors[name] = int(value)
    non2xx = int(number(r"Non-2xx or 3xx responses: (\d+)") or 0)
    requests = number(r"^\s*(\d+) requests in")
    rps = number(r"^Requests/sec:\s+([\d.]+)")
    if requests is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    return {
        "requests": int(requests),
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "socket_errors": socketErrors,
        "non2xx": non2xx,
        "errors": sum(socketErrors.values()) + non2xx,
    }


# ------------------------------------------------------------ worker share

PT_STOPPED = re.compile(
    r"\[worker (\d+) pid (\d+)\] .*stopped accepting after (\d+) connections"
)
NAIVE_SERVED = re.compile(r"child (\d+) pid (\d+) served (\d+) connections")
# No pid when a fork server forks the worker later.
PT_STARTED = re.compile(r"started worker (\d+)\b")


def workerShare(server: Server, log: str) -> dict[str, Any]:
    """
    Connections each worker accepted, from the workers' own last words:
    preforktwist's "stopped accepting after N connections" (logged when a
    worker retires or is told to stop), the naive pre-fork's "served N".
    """
    text = readText(log)
    pattern = PT_STOPPED if server.kind == "preforktwist" else NAIVE_SERVED
    counts: dict[str, int] = {}
    for number, pid, n in pattern.findall(text):
        counts[f"{number}/{pid}"] = int(n)
    result: dict[str, Any] = {"counts": sorted(counts.values(), reverse=True)}
    if server.kind == "preforktwist":
        result["workers_started"] = len(PT_STARTED.findall(text))
        result["worker_errors"] = len(
            re.findall(r"#(?:error|critical)\]|Traceback|killed by SIG", text)
        )
        result["boot_failures"] = len(re.findall(r"boot failure", text))
    values = result["counts"]
    if values and not server.maxConnections:
        result["max_over_min"] = (
            max(values) / min(values) if min(values) > 0 else float("inf")
        )
    return result


# ------------------------------------------------------------ one run


def measure(
    server: Server, mode: str, duration: int, outdir: str, tag: str = ""
) -> dict[str, Any]:
    port = freePort()
    tmp = tempfile.mkdtemp(prefix=f"bench-{server.key}-")
    log = os.path.join(tmp, "server.log")
    result: dict[str, Any] = {"server": server.key, "mode": mode}
    proc = startServer(server, port, tmp, log)
    try:
        waitReady(server, proc, port, log)
        time.sleep(0.3)
        before = cpuTicks(proc.pid)
        busyBefore, clientBefore, t0 = machineBusy(), childrenCPU(), time.monotonic()
        command = wrkCommand(port, mode, duration)
        result["wrk_command"] = shlex.join(command)
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 30
        )
        after = cpuTicks(proc.pid)
        busy, wall = machineBusy() - busyBefore, time.monotonic() - t0
        mem = memory(proc.pid, proc.pid)
        result.update(parseWrk(out.stdout))
        result["cpu_s"] = (after - before) / CLK_TCK
        result["client_cpu_s"] = childrenCPU() - clientBefore
        # Whatever else ran on the machine meanwhile, in cores.
        result["other_cores"] = max(
            0.0, (busy / CLK_TCK - result["cpu_s"] - result["client_cpu_s"]) / wall
        )
        result["cpu_per_1000"] = (
            result["cpu_s"] / result["requests"] * 1000 if result["requests"] else None
        )
        result.update(mem)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        result["failed"] = str(e)
    finally:
        stopServer(server, proc)
    result["command"] = shlex.join(server.command(port, tmp))
    if server.kind in ("preforktwist", "naive"):
        result["share"] = workerShare(server, log)
    if "failed" in result or server.kind == "preforktwist":
        keep = os.path.join(outdir, "logs", f"{server.key}-{mode}{tag}.log")
        os.makedirs(os.path.dirname(keep), exist_ok=True)
        shutil.copy(log, keep)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


# ------------------------------------------------------------ timelines


def timeline(
    server: Server, duration: int, hupAt: float | None, outdir: str, name: str
) -> dict[str, Any]:
    port = freePort()
    tmp = tempfile.mkdtemp(prefix=f"bench-timeline-{server.key}-")
    log = os.path.join(tmp, "server.log")
    result: dict[str, Any] = {"name": name, "server": server.key}
    proc = startServer(server, port, tmp, log)
    client: subprocess.Popen[bytes] | None = None
    try:
        waitReady(server, proc, port, log)
        time.sleep(0.3)
        before = cpuTicks(proc.pid)
        command = [
            PYTHON,
            os.path.join(BENCH, "timeline.py"),
            "--port",
            str(port),
            "--duration",
            str(duration),
            "--concurrency",
            "50",
        ]
        result["client_command"] = shlex.join(command)
        client = subprocess.Popen(
            command, stdout=subprocess.PIPE, start_new_session=True
        )
        LIVE[client.pid] = client
        if hupAt is not None:
            time.sleep(hupAt + 0.3)  # the client's interpreter takes ~0.3 s to start
            result["hup_wall"] = time.time()
            os.kill(proc.pid, signal.SIGHUP)
        out, _ = client.communicate(timeout=duration + 40)
        LIVE.pop(client.pid, None)
        after = cpuTicks(proc.pid)
        data = json.loads(out)
        result.update(data)
        result["cpu_s"] = (after - before) / CLK_TCK
        if "hup_wall" in result:
            result["hup_at"] = result["hup_wall"] - data["start"]
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
        result["failed"] = str(e)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(5)
            LIVE.pop(client.pid, None)
        stopServer(server, proc)
    result["command"] = shlex.join(server.command(port, tmp))
    text = readText(log)
    result["workers_started"] = len(PT_STARTED.findall(text))
    keep = os.path.join(outdir, "logs", f"timeline-{name}.log")
    os.makedirs(os.path.dirname(keep), exist_ok=True)
    shutil.copy(log, keep)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


# ------------------------------------------------------------ long-lived burst

BURST_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def establishedInodes(port: int) -> set[int]:
    """
    Socket inodes of the established TCP connections whose local port is
    C{port}: the server's ends of its clients' connections.
    """
    inodes: set[int] = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], int(fields[9])
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            continue
    return inodes


def openPerWorker(session: int, master: int, port: int) -> list[int]:
    """
    Connections each worker holds open on C{port}, busiest first, counted
    from the kernel's socket table and each worker's descriptors: the same
    measure for every server, whatever it logs.
    """
    established = establishedInodes(port)
    counts = []
    for p in memory(session, master)["procs"]:
        if p["role"] != "worker":
            continue
        held = 0
        try:
            for fd in os.listdir(f"/proc/{p['pid']}/fd"):
                try:
                    target = os.readlink(f"/proc/{p['pid']}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and int(target[8:-1]) in established:
                    held += 1
        except OSError:
            continue
        counts.append(held)
    return sorted(counts, reverse=True)


def burst(server: Server, clients: int, window: float, outdir: str) -> dict[str, Any]:
    """
    Long-lived connections that arrive together: C{clients} connections
    opened evenly over C{window} seconds, each sends one keep-alive request
    and reads its answer, and all stay open while the connections each
    worker holds are counted.
    """
    port = freePort()
    tmp = tempfile.mkdtemp(prefix=f"bench-burst-{server.key}-")
    log = os.path.join(tmp, "server.log")
    result: dict[str, Any] = {"server": server.key, "clients": clients}
    proc = startServer(server, port, tmp, log)
    socks: list[socket.socket] = []
    try:
        waitReady(server, proc, port, log)
        time.sleep(0.3)
        errors = 0
        t0 = time.monotonic()
        for i in range(clients):
            delay = t0 + i * window / clients - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                s = socket.create_connection((HOST, port), timeout=10)
                s.sendall(BURST_REQUEST)
            except OSError:
                errors += 1
                continue
            socks.append(s)
        result["connect_s"] = time.monotonic() - t0
        for s in socks:
            data = b""
            try:
                while not data.endswith(b"hello"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            if not (data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")):
                errors += 1
        result["answered_s"] = time.monotonic() - t0
        time.sleep(0.2)
        counts = openPerWorker(proc.pid, proc.pid, port)
        result["errors"] = errors
        result["counts"] = counts
        result["held"] = sum(counts)
        if counts:
            result["max_over_min"] = (
                max(counts) / min(counts) if min(counts) else float("inf")
            )
    except (RuntimeError, OSError) as e:
        result["failed"] = str(e)
    finally:
        for s in socks:
            s.close()
        stopServer(server, proc)
    result["command"] = shlex.join(server.command(port, tmp))
    if "failed" in result:
        keep = os.path.join(outdir, "logs", f"burst-{server.key}.log")
        os.makedirs(os.path.dirname(keep), exist_ok=True)
        shutil.copy(log, keep)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def burstServers(acceptVariants: bool) -> list[Server]:
    servers = [preforktwist(w, 0) for w in (2, 4, 8)]
    if acceptVariants:
        servers += [
            preforktwist(w, 0, accept=a) for a in ("plain", "r0") for w in (2, 4, 8)
        ]
        servers += [naive(w, reuseport=True) for w in (2, 4, 8)]
    return servers + [naive(w) for w in (2, 4, 8)]


# ------------------------------------------------------------ replacement cost

PT_ACCEPTING = re.compile(r"worker (\d+) \(pid (\d+)\) is accepting")


class LogFollower:
    """
    The workers a server's log says are accepting, read as the log grows:
    C{pids} maps each worker's number to its pid.
    """

    def __init__(self, path: str, pattern: re.Pattern[str]) -> None:
        self._file = open(path, "rb")
        self._pattern = pattern
        self._partial = b""
        self.pids: dict[str, int] = {}

    def new(self) -> int:
        """
        Read what the log gained; return how many new matching lines.
        """
        self._partial += self._file.read()
        *lines, self._partial = self._partial.split(b"\n")
        found = 0
        for line in lines:
            match = self._pattern.search(line.decode("utf-8", "replace"))
            if match:
                self.pids[match.group(1)] = int(match.group(2))
                found += 1
        return found

    def close(self) -> None:
        self._file.close()


def replacementCost(server: Server, count: int, outdir: str) -> dict[str, Any]:
    """
    CPU of one replacement, all processes of the server: SIGTERM to one
    accepting worker (it retires and asks for a replacement), until a new
    worker is accepting and the old one is reaped; C{count} times, one
    after the other, less the CPU the idle server uses in as long.  CPU is
    counted in clock ticks (10 ms), hence the repetitions.
    """
    port = freePort()
    tmp = tempfile.mkdtemp(prefix=f"bench-replace-{server.key}-")
    log = os.path.join(tmp, "server.log")
    result: dict[str, Any] = {"server": server.key, "replacements": count}
    proc = startServer(server, port, tmp, log)
    accepting = LogFollower(log, PT_ACCEPTING)
    try:
        waitReady(server, proc, port, log)
        time.sleep(1.0)
        t0, idle0 = time.monotonic(), cpuTicks(proc.pid)
        time.sleep(3.0)
        idleRate = (cpuTicks(proc.pid) - idle0) / (time.monotonic() - t0)
        walls = []
        accepting.new()
        before, start = cpuTicks(proc.pid), time.monotonic()
        for _ in range(count):
            # The harness polls lightly (the new part of the log, one /proc
            # entry while it waits): it shares the two cores with the
            # server, and walking the processes' memory maps cost about 5%
            # of the machine's samples in perf.  Only the server's own processes are
            # candidates: a retired worker's pid may have been reused.
            mine = {p.pid for p in sessionProcs(proc.pid)}
            workers = [pid for pid in accepting.pids.values() if pid in mine]
            if not workers:
                raise RuntimeError("no accepting worker to replace")
            victim = workers[0]
            t = time.monotonic()
            os.kill(victim, signal.SIGTERM)
            deadline = t + 30
            started = 0
            while not (started and not os.path.exists(f"/proc/{victim}")):
                if time.monotonic() > deadline:
                    raise RuntimeError("no replacement accepting within 30 s")
                time.sleep(0.002)
                started += accepting.new()
            walls.append(time.monotonic() - t)
        elapsed = time.monotonic() - start
        ticks = cpuTicks(proc.pid) - before - idleRate * elapsed
        result["cpu_ms_each"] = ticks / CLK_TCK / count * 1000
        result["idle_cpu_ms_per_s"] = idleRate / CLK_TCK * 1000
        result["wall_ms_median"] = statistics.median(walls) * 1000
    except (RuntimeError, OSError) as e:
        result["failed"] = str(e)
    finally:
        accepting.close()
        stopServer(server, proc)
    result["command"] = shlex.join(server.command(port, tmp))
    keep = os.path.join(outdir, "logs", f"replace-{server.key}.log")
    os.makedirs(os.path.dirname(keep), exist_ok=True)
    shutil.copy(log, keep)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def forkFloor(preload: Sequence[str] = (), count: int = 300) -> dict[str, Any]:
    """
    The floor under a replacement's CPU (C{bench/forkfloor.py}): forking a
    template like the fork server's, with C{preload} imported as
    C{--preload} would, the child exiting at once.  Run with the servers'
    code and environment.
    """
    env = servedEnvironment()
    command = [PYTHON, os.path.join(BENCH, "forkfloor.py"), "--count", str(count)]
    for name in preload:
        command += ["--preload", name]
    compileServed()
    label = "fork server template"
    if preload:
        label += f", --preload {' '.join(preload)}"
    result: dict[str, Any] = {"server": label, "floor": True}
    try:
        done = subprocess.run(
            command,
            cwd=tempfile.gettempdir(),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        result["failed"] = str(e)
        return result
    result["cpu_ms_each"] = result["parent_ms_each"] + result["child_ms_each"]
    return result


def extraReport(
    bursts: list[dict[str, Any]],
    replacements: list[dict[str, Any]],
    masters: list[dict[str, Any]] | None = None,
) -> list[str]:
    """
    RESULTS.md's sections for the long-lived burst and the replacement cost.
    """
    lines: list[str] = []
    w = lines.append
    if bursts:
        w("## Long-lived burst: open connections per worker")
        w("")
        clients = bursts[0].get("clients")
        w(
            f"{clients} keep-alive clients connect evenly over the burst window, "
            "each sends one request, reads its answer and stays open; then "
            "the connections each worker holds are counted (kernel socket "
            "table). Busiest / idlest per round; target <= 1.5."
        )
        w("")
        w("| server | busiest / idlest, median (worst) | counts per round | errors |")
        w("| --- | --- | --- | --- |")
        keys = list(dict.fromkeys(b["server"] for b in bursts))
        for key in keys:
            mine = [b for b in bursts if b["server"] == key and "failed" not in b]
            ratios = [b["max_over_min"] for b in mine if "max_over_min" in b]
            m = med(ratios)
            w(
                f"| {key} | "
                + (f"{fmtShare(m)} ({fmtShare(max(ratios))})" if m else "n/a")
                + " | "
                + "; ".join(str(b["counts"]) for b in mine)
                + f" | {sum(b['errors'] for b in mine)} |"
            )
        w("")
    if replacements:
        w("## CPU of one replacement")
        w("")
        w(
            "SIGTERM to one accepting worker until its replacement is "
            "accepting and it is reaped, repeated; CPU of every process of "
            "the server (clock ticks, reaped children included) less the "
            "idle server's. Target <= 5 ms."
        )
        w("")
        w("| server | CPU per replacement | wall, median | idle CPU |")
        w("| --- | --- | --- | --- |")
        floors = [r for r in replacements if r.get("floor")]
        for r in replacements:
            if r.get("floor"):
                continue
            if "failed" in r:
                w(f"| {r['server']} | failed: {r['failed'][:80]} | | |")
            else:
                w(
                    f"| {r['server']} | {r['cpu_ms_each']:.1f} ms "
                    f"(x{r['replacements']}) | {r['wall_ms_median']:.0f} ms | "
                    f"{r['idle_cpu_ms_per_s']:.1f} ms/s |"
                )
        w("")
        if floors:
            w(
                "The floor under those (`python bench/forkfloor.py`): a process "
                "that imports what the fork server imports forks children that "
                "exit at once. Parent: the copy of the page tables; child: "
                "Python's after-fork work, its copy-on-write faults and the "
                "teardown of the address space. No replacement can cost less."
            )
            w("")
            w(
                "| template | CPU per fork | parent | child | child's faults "
                "| template RSS |"
            )
            w("| --- | --- | --- | --- | --- | --- |")
            for r in floors:
                if "failed" in r:
                    w(f"| {r['server']} | failed: {r['failed'][:80]} | | | | |")
                    continue
                w(
                    f"| {r['server']} | {r['cpu_ms_each']:.2f} ms (x{r['forks']}) | "
                    f"{r['parent_ms_each']:.2f} ms | {r['child_ms_each']:.2f} ms | "
                    f"{r['child_faults_each']:.0f} | {r['template_rss_mib']:.1f} MiB |"
                )
            w("")
    if masters:
        w("## The master's memory")
        w("")
        w(
            "preforktwist -w 2, idle, then after 2,000 connections (served "
            "by the workers), from a virtualenv with a default install "
            "(`pip install .`: core dependencies only) and from the bench's "
            "own, which has every extra: with pyOpenSSL importable, "
            "Twisted's tcp module imports it and cryptography. Target <= 40 MiB."
        )
        w("")
        w("| install | --status | RSS at start | RSS after load | PSS after load |")
        w("| --- | --- | ---: | ---: | ---: |")
        for r in masters:
            if "failed" in r:
                w(
                    f"| {r['install']} | {r['status']} | "
                    f"failed: {r['failed'][:80]} | | |"
                )
                continue
            w(
                f"| {r['install']} | {'yes' if r['status'] else 'no'} | "
                f"{r['rss_start_mib']:.1f} MiB | {r['rss_mib']:.1f} MiB | "
                f"{r['pss_mib']:.1f} MiB |"
            )
        w("")
    return lines


# ------------------------------------------------------------ master memory

#: The virtualenv of a default install (`pip install .`, no extras), kept
#: between runs: what a user who installs preforktwist gets.
DEFAULT_VENV = os.path.join(BENCH, "out", "venv-default")


def defaultInstall() -> str:
    """
    The bin directory of a virtualenv holding a default install of this
    checkout: core dependencies only.  The bench's own virtualenv has the
    extras, and with pyOpenSSL importable Twisted's C{tcp} module imports
    it and cryptography (about 10 MiB), in the master too.
    """
    python = os.path.join(DEFAULT_VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([PYTHON, "-m", "venv", DEFAULT_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", ROOT], check=True)
    else:
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--force-reinstall",
                ROOT,
            ],
            check=True,
        )
    return os.path.dirname(python)


def masterServer(bin: str, install: str, status: bool) -> Server:
    """
    preforktwist -w 2 run from the virtualenv in C{bin}, optionally with
    the status endpoint, for the master's memory alone.
    """
    statusPort = freePort()

    def argv(port: int, tmp: str) -> list[str]:
        command = preforkedCommand(
            os.path.join(bin, "twistd"),
            port,
            ["-p", "preforktwist.examples.HelloHTTP"],
            2,
        )
        if status:
            command += ["--status", f"tcp:{statusPort}:interface={HOST}"]
        return command

    key = f"master-{install}" + ("-status" if status else "")
    return Server(
        key=key,
        label=f"preforktwist -w 2, {install}" + (", --status" if status else ""),
        kind="preforktwist",
        workload="hello",
        argv=argv,
        readyPattern=r"\((?:[^()]*, )?(\d+) accepting\)",
        readyCount=2,
        processes=3,
        stopSignal=signal.SIGINT,
        workers=2,
        # Only the snapshot's code (if any) ahead of the install's own.
        env={"PYTHONPATH": os.pathsep.join(CODE_PATH)},
    )


def masterMemory(connections: int = 2000) -> list[dict[str, Any]]:
    """
    The master's RSS and PSS after start and after C{connections}
    connections (served by the workers; the master only watches), in the
    default install and in the bench's virtualenv with every extra.
    """
    results = []
    installs = [
        ("default install", defaultInstall()),
        ("bench venv, all extras", VENV_BIN),
    ]
    for install, bin in installs:
        for status in (False, True):
            server = masterServer(bin, install, status)
            port = freePort()
            tmp = tempfile.mkdtemp(prefix="bench-master-")
            log = os.path.join(tmp, "server.log")
            result: dict[str, Any] = {"install": install, "status": status}
            proc = startServer(server, port, tmp, log)
            try:
                waitReady(server, proc, port, log)
                result["rss_start_mib"] = (
                    readKiB(f"/proc/{proc.pid}/status", "VmRSS") / 1024
                )
                for _ in range(connections):
                    probe(port)
                time.sleep(0.5)
                result["rss_mib"] = readKiB(f"/proc/{proc.pid}/status", "VmRSS") / 1024
                result["pss_mib"] = (
                    readKiB(f"/proc/{proc.pid}/smaps_rollup", "Pss") / 1024
                )
            except (RuntimeError, OSError) as e:
                result["failed"] = str(e)
            finally:
                stopServer(server, proc)
            result["command"] = shlex.join(server.command(port, tmp))
            shutil.rmtree(tmp, ignore_errors=True)
            results.append(result)
    return results


# ------------------------------------------------------------ statistics


def med(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def spread(values: Sequence[float | None]) -> tuple[float, float] | None:
    clean = [v for v in values if v is not None]
    return (min(clean), max(clean)) if clean else None


def baselineKey(server: Server) -> str:
    """
    What a server's "vs single" ratios are taken against: the single
    process serving the same workload; for the Django app, preforktwist
    -w 2 -m 0 serving it (its cases are about what recycling costs).
    """
    return {"hello": "single", "burn": "single-burn"}.get(
        server.workload, "pt-w2-m0-heavy"
    )


def byRound(
    runs: list[dict[str, Any]], key: str, mode: str
) -> dict[int, dict[str, Any]]:
    return {
        r["round"]: r
        for r in runs
        if r["server"] == key and r["mode"] == mode and "failed" not in r
    }


def ratios(
    runs: list[dict[str, Any]], key: str, base: str, mode: str, field: str = "rps"
) -> list[float]:
    """
    key / base for each round where both ran: same-round ratios.
    """
    mine, theirs = byRound(runs, key, mode), byRound(runs, base, mode)
    out = []
    for rnd, r in sorted(mine.items()):
        b = theirs.get(rnd)
        if b and r.get(field) is not None and b.get(field):
            out.append(r[field] / b[field])
    return out


def summarize(servers: list[Server], runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for server in servers:
        for mode in MODES:
            mine = [r for r in runs if r["server"] == server.key and r["mode"] == mode]
            if not mine:
                continue
            good = [r for r in mine if "failed" not in r]
            rps = [r["rps"] for r in good]
            entry: dict[str, Any] = {
                "runs": len(mine),
                "failed": len(mine) - len(good),
                "rps": rps,
                "rps_median": med(rps),
                "rps_spread": spread(rps),
                "ratio": ratios(runs, server.key, baselineKey(server), mode),
                "cpu_ratio": ratios(
                    runs, server.key, baselineKey(server), mode, "cpu_per_1000"
                ),
                "p50_ms": med([r["p50_ms"] for r in good]),
                "p99_ms": med([r["p99_ms"] for r in good]),
                "p99_spread": spread([r["p99_ms"] for r in good]),
                "errors": sum(r["errors"] for r in good),
                "requests": sum(r["requests"] for r in good),
                "cpu_per_1000": med([r["cpu_per_1000"] for r in good]),
                "cpu_spread": spread([r["cpu_per_1000"] for r in good]),
                "pss_mib": med([r["pss_kib"] / 1024 for r in good]),
                "processes": med([r["processes"] for r in good]),
                "other_cores": med([r.get("other_cores") for r in good]),
                "client_cpu_per_1000": med(
                    [
                        r["client_cpu_s"] / r["requests"] * 1000
                        for r in good
                        if r.get("requests")
                    ]
                ),
            }
            entry["ratio_median"] = med(entry["ratio"])
            entry["ratio_spread"] = spread(entry["ratio"])
            entry["cpu_ratio_median"] = med(entry["cpu_ratio"])
            shares = [
                r["share"]["max_over_min"]
                for r in good
                if "share" in r and "max_over_min" in r["share"]
            ]
            if shares:
                entry["share_median"] = med(shares)
                entry["share_worst"] = max(shares)
                entry["share_counts"] = [
                    r["share"]["counts"] for r in good if "share" in r
                ]
            started = [
                r["share"]["workers_started"]
                for r in good
                if "share" in r and "workers_started" in r["share"]
            ]
            if started:
                entry["workers_started"] = med(started)
            entry["log_errors"] = sum(
                r["share"].get("worker_errors", 0) for r in good if "share" in r
            )
            summary[f"{server.key}/{mode}"] = entry
    return summary


# ------------------------------------------------------------ targets


def fmtRatio(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"{m:.2f}x ({min(values):.2f}-{max(values):.2f})"


def targets(
    runs: list[dict[str, Any]],
    summary: dict[str, Any],
    bursts: Sequence[dict[str, Any]] = (),
    replacements: Sequence[dict[str, Any]] = (),
    masters: Sequence[dict[str, Any]] = (),
) -> list[tuple[str, str, str, str]]:
    """
    (target, threshold, measured, verdict) for each of issue 12's targets,
    numbered as the issue numbers them.
    """
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    def check(
        name: str, threshold: str, values: list[float], ok: Callable[[float], bool]
    ) -> None:
        m = med(values)
        rows.append(
            (name, threshold, fmtRatio(values), verdict(None if m is None else ok(m)))
        )

    def reference(name: str, values: list[float]) -> None:
        rows.append((name, "-", fmtRatio(values), "(reference)"))

    check(
        "1. connection rate, -w 2 vs single",
        ">= 1.15x",
        ratios(runs, "pt-w2-m0", "single", "close"),
        lambda m: m >= 1.15,
    )
    check(
        "1. CPU per connection, -w 2 vs single",
        "<= 1.05x",
        ratios(runs, "pt-w2-m0", "single", "close", "cpu_per_1000"),
        lambda m: m <= 1.05,
    )
    reference(
        "1. (for comparison) naive pre-fork -w 2 vs single, connection rate",
        ratios(runs, "naive-w2", "single", "close"),
    )
    check(
        "2. connection rate, -w 8 vs -w 2",
        ">= 0.95x",
        ratios(runs, "pt-w8-m0", "pt-w2-m0", "close"),
        lambda m: m >= 0.95,
    )
    check(
        "2. CPU per connection, -w 8 vs -w 2",
        "<= 1.05x",
        ratios(runs, "pt-w8-m0", "pt-w2-m0", "close", "cpu_per_1000"),
        lambda m: m <= 1.05,
    )
    reference(
        "2. (for comparison) naive pre-fork -w 8 vs -w 2, connection rate",
        ratios(runs, "naive-w8", "naive-w2", "close"),
    )
    check(
        "3. keep-alive, -w 2 vs single",
        ">= 1.3x",
        ratios(runs, "pt-w2-m0", "single", "keepalive"),
        lambda m: m >= 1.3,
    )
    for w in (2, 4, 8):
        s = summary.get(f"pt-w{w}-m0/close", {})
        if "share_median" in s:
            rows.append(
                (
                    f"4. balance, connection rate, -w {w} (busiest / idlest worker)",
                    "<= 1.5",
                    f"median {s['share_median']:.2f}, worst {s['share_worst']:.2f}",
                    verdict(s["share_worst"] <= 1.5),
                )
            )
        else:
            rows.append(
                (f"4. balance, connection rate, -w {w}", "<= 1.5", "n/a", "n/a")
            )
    for w in (2, 4, 8):
        held = [
            b["max_over_min"]
            for b in bursts
            if b["server"] == f"pt-w{w}-m0" and "max_over_min" in b
        ]
        rows.append(
            (
                f"4. balance, long-lived burst, -w {w} (busiest / idlest worker)",
                "<= 1.5",
                f"median {fmtShare(statistics.median(held))}, "
                f"worst {fmtShare(max(held))}"
                if held
                else "n/a",
                verdict(max(held) <= 1.5) if held else "n/a",
            )
        )
    for m, need in ((1000, 0.95), (100, 0.75)):
        values = ratios(runs, f"pt-w2-m{m}", "pt-w2-m0", "close")
        errors = summary.get(f"pt-w2-m{m}/close", {}).get("errors")
        mm = med(values)
        rows.append(
            (
                f"5. recycling -m {m} vs -m 0 (-w 2, connection rate), zero errors",
                f">= {need}x, 0 errors",
                f"{fmtRatio(values)}; errors {errors}",
                verdict(None if mm is None else (mm >= need and errors == 0)),
            )
        )
    for r in replacements:
        if "cpu_ms_each" in r and r.get("floor"):
            rows.append(
                (
                    f"5. (for comparison) fork + immediate exit, {r['server']}",
                    "-",
                    f"{r['cpu_ms_each']:.2f} ms (x{r['forks']})",
                    "(floor)",
                )
            )
        elif "cpu_ms_each" in r:
            rows.append(
                (
                    f"5. CPU of one replacement, all processes ({r['server']})",
                    "<= 5 ms",
                    f"{r['cpu_ms_each']:.1f} ms (x{r['replacements']}), wall "
                    f"{r['wall_ms_median']:.0f} ms",
                    verdict(r["cpu_ms_each"] <= 5),
                )
            )
    for suffix, label in (("", ""), ("-preload", ", --preload")):
        values = ratios(
            runs, f"pt-w2-m1000-heavy{suffix}", f"pt-w2-m0-heavy{suffix}", "close"
        )
        if values:
            check(
                f"6. heavy app{label}: -m 1000 vs -m 0 (-w 2, connection rate)",
                ">= 0.95x",
                values,
                lambda m: m >= 0.95,
            )
    for w in (2, 4, 8):
        for mode in MODES:
            check(
                f"7. -w {w} vs naive pre-fork -w {w} ({mode})",
                ">= 1.0x",
                ratios(runs, f"pt-w{w}-m0", f"naive-w{w}", mode),
                lambda m: m >= 1.0,
            )
    check(
        "7. -w 2 vs gunicorn sync -w 2 (connection rate)",
        ">= 2x",
        ratios(runs, "pt-w2-m0", "gunicorn-w2", "close"),
        lambda m: m >= 2.0,
    )
    for r in masters:
        if "rss_mib" in r:
            rows.append(
                (
                    f"7. master RSS, -w 2, {r['install']}"
                    + (", --status" if r["status"] else ""),
                    "<= 40 MiB",
                    f"{r['rss_mib']:.1f} MiB (at start {r['rss_start_mib']:.1f})",
                    verdict(r["rss_mib"] <= 40),
                )
            )
    return rows


def cpuCeiling(summary: dict[str, Any], cores: int) -> list[str]:
    """
    RESULTS.md's paragraph on what bounds the rate targets on this machine:
    wrk and the server share its cores, so with C{c} seconds of server CPU
    and C{k} of wrk's per 1,000 requests no server can pass C{cores / (c +
    k)} thousand requests per second, and one process is bounded by one
    core as well.  Computed from this run's own medians.
    """
    lines: list[str] = []
    for mode, need in (("close", 1.15), ("keepalive", 1.3)):
        one = summary.get(f"single/{mode}", {})
        two = summary.get(f"pt-w2-m0/{mode}", {})
        if not (one.get("cpu_per_1000") and two.get("cpu_per_1000")):
            continue
        if not (one.get("client_cpu_per_1000") and two.get("client_cpu_per_1000")):
            continue
        wrk = two["client_cpu_per_1000"]
        ceiling = cores / (two["cpu_per_1000"] + wrk) * 1000
        target = need * one["rps_median"]
        budget = cores / (target / 1000) - wrk
        lines.append(
            f"- {MODE_TITLES[mode]}: one process served {one['rps_median']:,.0f} "
            f"req/s at {one['cpu_per_1000'] * 1000:.0f} ms of CPU per 1,000 "
            f"(wrk: {one['client_cpu_per_1000'] * 1000:.0f} ms). preforktwist -w 2 "
            f"spends {two['cpu_per_1000'] * 1000:.0f} ms and wrk "
            f"{wrk * 1000:.0f} ms per 1,000, so {cores} cores allow at most "
            f"{ceiling:,.0f} req/s ({ceiling / one['rps_median']:.2f}x one "
            f"process); measured {two['rps_median']:,.0f}. {need:g}x "
            f"({target:,.0f} req/s) would need the server at "
            f"{budget * 1000:.0f} ms per 1,000 or less, "
            f"{budget / one['cpu_per_1000']:.2f}x what one process spends."
        )
    if not lines:
        return []
    return [
        "## What bounds the rate targets on this machine",
        "",
        "The load generator runs on the same cores as the server. From this "
        "run's medians:",
        "",
        *lines,
        "",
    ]


# ------------------------------------------------------------ machine


def capture(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (
        (out.stdout + out.stderr).strip().splitlines()[0]
        if (out.stdout + out.stderr).strip()
        else "?"
    )


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    twisted = capture([PYTHON, "-c", "import twisted; print(twisted.__version__)"])
    commit = capture(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = capture(["git", "-C", ROOT, "status", "--porcelain", "--", "preforktwist"])
    return {
        "nproc": capture(["nproc"]),
        "cpu": cpu,
        "kernel": capture(["uname", "-r"]),
        "python": platform.python_version(),
        "twisted": twisted,
        "wrk": capture(["wrk", "-v"]),
        "nginx": capture([optionalTool("nginx"), "-v"]),
        "perl": capture([optionalTool("perl"), "-e", "print $^V"]),
        "gunicorn": capture([optionalTool("gunicorn"), "--version"]),
        "preforktwist": CODE_NOTE
        or commit
        + (
            " (working tree, with uncommitted changes in preforktwist/)"
            if dirty not in ("", "?")
            else ""
        ),
        "loadavg_start": loadavg(),
    }


# ------------------------------------------------------------ charts


def charts(
    servers: list[Server],
    summary: dict[str, Any],
    timelines: list[dict[str, Any]],
    outdir: str,
) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "bench: matplotlib is not installed: no charts (pip install -e '.[bench]')",
            flush=True,
        )
        return []
    written = []
    colours = {
        "preforktwist": "tab:blue",
        "single": "tab:gray",
        "naive": "tab:orange",
        "forking": "tab:red",
        "perl": "tab:purple",
        "gunicorn": "tab:green",
        "nginx": "black",
    }

    def barChart(
        fieldName: str, spreadName: str, title: str, xlabel: str, name: str
    ) -> None:
        panels = [
            ("hello", "close"),
            ("hello", "keepalive"),
            ("burn", "close"),
            ("burn", "keepalive"),
        ]
        fig, axes = plt.subplots(
            len(panels),
            1,
            figsize=(9, 14),
            gridspec_kw={"height_ratios": [12, 12, 4, 4]},
        )
        for ax, (workload, mode) in zip(axes, panels, strict=False):
            rows = [
                (s, summary[f"{s.key}/{mode}"])
                for s in servers
                if s.workload == workload
                and f"{s.key}/{mode}" in summary
                and summary[f"{s.key}/{mode}"][fieldName] is not None
            ]
            rows.reverse()
            labels = [s.label for s, _ in rows]
            values = [e[fieldName] for _, e in rows]
            low = [
                e[fieldName] - e[spreadName][0] if e[spreadName] else 0 for _, e in rows
            ]
            high = [
                e[spreadName][1] - e[fieldName] if e[spreadName] else 0 for _, e in rows
            ]
            ax.barh(
                labels,
                values,
                xerr=[low, high],
                color=[colours.get(s.kind, "tab:gray") for s, _ in rows],
                capsize=3,
            )
            for y, v in enumerate(values):
                ax.text(
                    v,
                    y,
                    f" {v:,.0f}" if v >= 10 else f" {v:.2f}",
                    va="center",
                    fontsize=8,
                )
            what = "HTTP hello" if workload == "hello" else "CPU-bound (~1 ms/request)"
            ax.set_title(f"{what}, {MODE_TITLES[mode]}", fontsize=10)
            ax.tick_params(axis="y", labelsize=8)
            ax.set_xlabel(xlabel, fontsize=9)
        fig.suptitle(title)
        fig.tight_layout()
        path = os.path.join(outdir, name)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    barChart(
        "rps_median",
        "rps_spread",
        "Requests per second (median of rounds; bars: min-max)",
        "requests/s",
        "requests_per_second.png",
    )
    barChart(
        "cpu_per_1000",
        "cpu_spread",
        "Server CPU seconds per 1,000 requests (all processes; lower is better)",
        "CPU s / 1,000 requests",
        "cpu_per_1000.png",
    )

    good = [t for t in timelines if "failed" not in t]
    if good:
        fig, axes = plt.subplots(len(good), 1, figsize=(9, 3 * len(good)), sharex=True)
        if len(good) == 1:
            axes = [axes]
        steady = next((t for t in good if t["name"] == "steady"), None)
        for ax, t in zip(axes, good, strict=False):
            # A completion in second k (k <= t < k+1) is drawn at k + 0.5.
            xs = [k + 0.5 for k in range(len(t["ok"]))]
            if steady is not None and t is not steady:
                ax.plot(
                    [k + 0.5 for k in range(len(steady["ok"]))],
                    steady["ok"],
                    color="tab:gray",
                    linestyle=":",
                    label="steady -w 2 -m 0 (reference)",
                )
            ax.plot(xs, t["ok"], marker="o", label="completed connections/s")
            ax.bar(xs, t["errors"], color="tab:red", label="errors/s")
            if "hup_at" in t:
                ax.axvline(
                    t["hup_at"], color="tab:orange", linestyle="--", label="SIGHUP"
                )
            ax.set_ylim(bottom=0)
            ax.set_ylabel("per second")
            ax.set_title(
                f"{t['title']}: {sum(t['ok']):,} ok, {sum(t['errors'])} errors, "
                f"{t['workers_started']} workers started",
                fontsize=10,
            )
            ax.legend(fontsize=7, loc="best")
        axes[-1].set_xlabel("seconds since the client started")
        axes[-1].set_xlim(0, max(len(t["ok"]) for t in good))
        fig.tight_layout()
        path = os.path.join(outdir, "timeline.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


# ------------------------------------------------------------ report


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def shortPaths(command: str) -> str:
    return command.replace(VENV_BIN + "/", "").replace(ROOT + "/", "")


def fmtShare(v: float) -> str:
    return "inf (a worker took none)" if v == float("inf") else f"{v:.2f}"


def fmtSpread(s: tuple[float, float] | None, digits: int = 0) -> str:
    return "-" if s is None else f"{s[0]:,.{digits}f}-{s[1]:,.{digits}f}"


def report(
    args: argparse.Namespace,
    servers: list[Server],
    runs: list[dict[str, Any]],
    summary: dict[str, Any],
    timelines: list[dict[str, Any]],
    info: dict[str, str],
    images: list[str],
    elapsed: float,
    bursts: Sequence[dict[str, Any]] = (),
    replacements: Sequence[dict[str, Any]] = (),
    masters: Sequence[dict[str, Any]] = (),
) -> str:
    lines: list[str] = []
    w = lines.append
    invocation = info.get(
        "invocation", shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    )
    now = info.get("date") or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    w("# preforktwist benchmark results")
    w("")
    w(
        f"Generated by `{invocation}` on {now}, in {elapsed / 60:.0f} min: "
        f"{args.rounds} interleaved rounds (A B C ... C B A) of "
        f"{args.duration} s runs. "
        "Every ratio is taken within one round, against the plain single "
        "Twisted process serving the same protocol under the same load, "
        "and reported as the median of the rounds (min-max in brackets). "
        "See [README.md](README.md) for the method."
    )
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("| --- | --- |")
    for k in (
        "nproc",
        "cpu",
        "kernel",
        "python",
        "twisted",
        "wrk",
        "nginx",
        "perl",
        "gunicorn",
        "preforktwist",
        "loadavg_start",
        "loadavg_end",
    ):
        w(f"| {k} | {info.get(k, '?')} |")
    w("")
    w(
        "The machine has 2 cores and wrk shares them with the server: a "
        "server can use at most about one core while wrk takes the other, "
        "so CPU per 1,000 requests (measured from /proc for all the "
        "server's processes) is the fairer measure of efficiency. The "
        "machine is shared with other work, so expect noise; the spread "
        "shows it."
    )
    other = [r["other_cores"] for r in runs if "other_cores" in r]
    if other:
        w("")
        w(
            f"**Noise in this run:** other work used a median of "
            f"{statistics.median(other):.2f} cores (max {max(other):.2f}) of "
            f"the {info.get('nproc', '?')} during the measurements (column "
            '"other load"). '
            + (
                "That is a heavily shared machine: throughput ratios are "
                "unreliable, and CPU per 1,000 requests is the figure to trust."
                if statistics.median(other) > 0.5
                else "A quiet machine: the ratios can be trusted within their spread."
            )
        )
    w("")
    w("## Targets (issue 12)")
    w("")
    w(
        "| target | threshold | measured (median, min-max of same-round ratios) "
        "| verdict |"
    )
    w("| --- | --- | --- | --- |")
    for row in targets(runs, summary, bursts, replacements, masters):
        w("| " + " | ".join(row) + " |")
    w("")
    for workload, title in (
        ("hello", "HTTP hello"),
        ("burn", "CPU-bound: BurnHTTP, about 1 ms of CPU per request"),
        ("heavy", "Django app (WSGI, about 300 ms to import), -w 2"),
    ):
        for mode in MODES:
            if not any(
                s.workload == workload and f"{s.key}/{mode}" in summary for s in servers
            ):
                continue
            w(f"## {title}, {MODE_TITLES[mode]}")
            if workload == "heavy":
                w("")
                w(
                    'Here "vs single" is against preforktwist -w 2 -m 0 '
                    "serving the same app without --preload."
                )
            w("")
            header = [
                "server",
                "req/s median",
                "req/s min-max",
                "vs single (same round)",
                "p50 ms",
                "p99 ms",
                "errors",
                "CPU s/1k req",
                "CPU vs single",
                "wrk CPU s/1k",
                "other load, cores",
                "PSS MiB",
                "procs",
                "worker share max/min",
            ]
            w("| " + " | ".join(header) + " |")
            w("| --- |" + " ---: |" * (len(header) - 1))
            for s in servers:
                e = summary.get(f"{s.key}/{mode}")
                if s.workload != workload or e is None:
                    continue
                share = "-"
                if "share_median" in e:
                    share = f"{fmtShare(e['share_median'])} (worst "
                    share += f"{fmtShare(e['share_worst'])})"
                elif "workers_started" in e:
                    share = f"recycled: {e['workers_started']:.0f} workers started"
                if e.get("log_errors"):
                    share += f"; {e['log_errors']} error lines in the server logs"
                failed = f" ({e['failed']} failed)" if e["failed"] else ""
                cells = [
                    f"{s.label}{failed}",
                    fmt(e["rps_median"]),
                    fmtSpread(e["rps_spread"]),
                    fmtRatio(e["ratio"]),
                    fmt(e["p50_ms"], 2),
                    fmt(e["p99_ms"], 2),
                    str(e["errors"]),
                    fmt(e["cpu_per_1000"], 3),
                    fmtRatio(e["cpu_ratio"]),
                    fmt(e["client_cpu_per_1000"], 3),
                    fmt(e["other_cores"], 2),
                    fmt(e["pss_mib"], 1),
                    fmt(e["processes"]),
                    share,
                ]
                w("| " + " | ".join(cells) + " |")
            w("")
    w("## Connections taken by each worker")
    w("")
    w(
        "From each worker's own count when it stopped (preforktwist: "
        '"stopped accepting after N connections"; naive pre-fork: '
        '"served N connections"), busiest first, one list per round. '
        "Includes the one readiness probe."
    )
    w("")
    w("| server | mode | per-worker connections, each round |")
    w("| --- | --- | --- |")
    for s in servers:
        if s.kind not in ("preforktwist", "naive") or s.maxConnections:
            continue
        for mode in MODES:
            e = summary.get(f"{s.key}/{mode}")
            if e and "share_counts" in e:
                w(
                    f"| {s.label} | {mode} | "
                    + "; ".join(str(c) for c in e["share_counts"])
                    + " |"
                )
    w("")
    w("## Memory per process (last round, connection rate)")
    w("")
    w("| server | processes: RSS / PSS MiB (master first) |")
    w("| --- | --- |")
    for s in servers:
        last = [
            r
            for r in runs
            if r["server"] == s.key and r["mode"] == "close" and "procs" in r
        ]
        if not last:
            continue
        order = {"master": 0, "fork server": 1, "worker": 2}
        procs = sorted(
            last[-1]["procs"], key=lambda p: (order.get(p.get("role"), 2), p["pid"])
        )

        def name(p: dict[str, Any], kind: str = s.kind) -> str:
            if kind == "preforktwist":
                return str(p.get("role", p["comm"]))
            return str(p["comm"]) + (" (master)" if p["master"] else "")

        desc = ", ".join(
            f"{name(p)} {p['rss_kib'] / 1024:.1f} / {p['pss_kib'] / 1024:.1f}"
            for p in procs[:8]
        )
        if len(procs) > 8:
            desc += f", ... ({len(procs)} processes)"
        w(f"| {s.label} | {desc} |")
    w("")
    if timelines:
        w("## Timelines: recycle storm and rolling reload")
        w("")
        w(
            "Connections completed per second by `bench/timeline.py` (asyncio, "
            "50 concurrent connection loops, `Connection: close`, 5 s timeout "
            "per exchange). This Python client is itself CPU-bound at a few "
            "thousand connections/s, so the level is the client's; what "
            "matters is whether the line dips or errors appear."
        )
        w("")
        w(
            "| scenario | server command | ok | errors | min/s | median/s "
            "| workers started | server CPU s |"
        )
        w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for t in timelines:
            if "failed" in t:
                why = t["failed"][:200].replace("\n", " ")
                w(f"| {t['title']} | `{t['command']}` | failed: {why} | | | | | |")
                continue
            body = t["ok"][1:-1] or t["ok"]
            t = {**t, "command": shortPaths(t["command"])}
            w(
                f"| {t['title']} | `{t['command']}` | {sum(t['ok']):,} | "
                f"{sum(t['errors'])} {t['error_kinds'] or ''} | {min(body):,} | "
                f"{statistics.median(body):,.0f} | {t['workers_started']} | "
                f"{t['cpu_s']:.1f} |"
            )
        w("")
        for t in timelines:
            if "failed" not in t:
                hup = f" (SIGHUP at {t['hup_at']:.1f} s)" if "hup_at" in t else ""
                w(f"- {t['title']}{hup}: per second {t['ok']}; errors {t['errors']}")
        w("")
    if images:
        w("## Charts")
        w("")
        for image in images:
            base = os.path.basename(image)
            w(f"![{base}]({base})")
            w("")
    w("## Exact commands")
    w("")
    w("Load, against each server (port chosen per run):")
    w("")
    w("```sh")
    w(shlex.join(wrkCommand(0, "close", args.duration)).replace(":0/", ":PORT/"))
    w(shlex.join(wrkCommand(0, "keepalive", args.duration)).replace(":0/", ":PORT/"))
    w("```")
    w("")
    w("Servers (from the last round; PORT and temporary paths vary):")
    w("")
    w("```sh")
    seen = set()
    for r in runs:
        if r["server"] not in seen and "command" in r:
            seen.add(r["server"])
            w(shortPaths(r["command"]))
    w("```")
    w("")
    w(
        "All Python servers run with `PYTHONPATH` set to the checkout (a "
        "snapshot's export first) and `cwd` in a temporary directory; nginx "
        "runs as root with its configuration, pid file and error log there."
    )
    failures = [r for r in runs + timelines if "failed" in r]
    if failures:
        w("")
        w("## Failed runs")
        w("")
        for r in failures:
            what = f"{r.get('server')} {r.get('mode', r.get('name'))}"
            w(f"- {what}: {r['failed'][:500]!r}")
    w("")
    return "\n".join(lines)


# ------------------------------------------------------------ main


def plan(servers: list[Server]) -> list[tuple[Server, str]]:
    return [(s, mode) for s in servers for mode in s.modes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s runs")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (8; 3)")
    parser.add_argument(
        "--timeline-duration", type=int, help="seconds per timeline (16; 6)"
    )
    parser.add_argument(
        "--only", help="regex: run only servers whose key matches (plus the baselines)"
    )
    parser.add_argument("--no-timelines", action="store_true")
    parser.add_argument(
        "--accept-variants",
        action="store_true",
        help="also run preforktwist's other accept paths (plain epoll, "
        "exclusive without reorder, other reorder intervals) at -w 2 and 8",
    )
    parser.add_argument(
        "--burst-clients",
        type=int,
        default=300,
        help="long-lived burst: clients (default 300; 0 skips the burst)",
    )
    parser.add_argument(
        "--burst-window",
        type=float,
        default=1.0,
        help="long-lived burst: seconds over which they connect (1.0)",
    )
    parser.add_argument(
        "--replacements",
        type=int,
        help="replacement cost: replacements measured (20; 5 with --quick; 0 skips)",
    )
    parser.add_argument(
        "--no-master-memory",
        dest="master_memory",
        action="store_false",
        help="skip the master's memory in a default install (which makes a "
        "virtualenv in bench/out/venv-default the first time)",
    )
    parser.add_argument(
        "--snapshot",
        metavar="REV",
        help="run preforktwist/ as of this git revision (exported to a "
        "temporary directory) instead of the working tree",
    )
    parser.add_argument(
        "--out",
        help="where RESULTS.md and the charts go (default bench/, or "
        "bench/out/quick/ with --quick)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite RESULTS.md and the charts from the last run's "
        "results.json (of the full run, or of the quick one with --quick)",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 8)
    args.timeline_duration = args.timeline_duration or (6 if args.quick else 16)
    if args.replacements is None:
        args.replacements = 5 if args.quick else 20
    outdir = args.out or (os.path.join(BENCH, "out", "quick") if args.quick else BENCH)
    os.makedirs(outdir, exist_ok=True)
    rawdir = os.path.join(BENCH, "out", "quick" if args.quick else "full")
    os.makedirs(rawdir, exist_ok=True)
    if args.report_only:
        reportOnly(rawdir, outdir)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")

    servers = allServers(args.accept_variants)
    bursters = burstServers(args.accept_variants) if args.burst_clients else []
    replaced = (
        [
            preforktwist(2, 0, workload, accept=a)
            for workload in ("hello", "heavy")
            for a in ("", "preload")
        ]
        if args.replacements
        else []
    )
    if args.only:
        servers = [
            s
            for s in servers
            if re.search(args.only, s.key) or s.key in ("single", "single-burn")
        ]
        bursters = [s for s in bursters if re.search(args.only, s.key)]
        replaced = [s for s in replaced if re.search(args.only, s.key)]
        args.master_memory = args.master_memory and bool(re.search(args.only, "master"))

    def terminate(signum: int, frame: object) -> None:
        stopEverything()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)

    global CODE_NOTE
    snapshotDir = None
    if args.snapshot:
        snapshotDir, commit = snapshot(args.snapshot)
        CODE_PATH.insert(0, snapshotDir)
        CODE_NOTE = f"{commit[:12]} (`--snapshot {args.snapshot}`: preforktwist/ "
        CODE_NOTE += "exported from git, ahead of the working tree on PYTHONPATH)"
    info = machine()
    info["invocation"] = shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    info["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    started = time.monotonic()
    order = plan(servers)
    total = len(order) * args.rounds
    perRun = args.duration + 3.0
    runs: list[dict[str, Any]] = []
    timelines: list[dict[str, Any]] = []
    bursts: list[dict[str, Any]] = []
    replacements: list[dict[str, Any]] = []
    masters: list[dict[str, Any]] = []
    try:
        done = 0
        for rnd in range(args.rounds):
            for server, mode in order if rnd % 2 == 0 else list(reversed(order)):
                done += 1
                t0 = time.monotonic()
                result = measure(
                    server, mode, args.duration, rawdir, f"-round{rnd + 1}"
                )
                result["round"] = rnd
                runs.append(result)
                perRun = 0.7 * perRun + 0.3 * (time.monotonic() - t0)
                elapsed = time.monotonic() - started
                left = (total - done) * perRun
                if "failed" in result:
                    what = "FAILED: " + result["failed"].splitlines()[0][:120]
                else:
                    what = (
                        f"{result['rps']:8,.0f} req/s  "
                        f"p99 {result['p99_ms'] or 0:7.1f} ms  "
                        f"errors {result['errors']}  "
                        f"CPU/1k {result['cpu_per_1000'] or 0:.3f} s  "
                        f"other load {result['other_cores']:.2f} cores"
                    )
                bad = result.get("share", {}).get("worker_errors")
                if bad:
                    what += f"  ! {bad} error lines in the server log"
                print(
                    f"[{done:3d}/{total}] round {rnd + 1}/{args.rounds} "
                    f"{server.label:<52} {mode:<9} {what}  "
                    f"({elapsed / 60:.1f} min, ~{left / 60:.1f} min left)",
                    flush=True,
                )
        for rnd in range(args.rounds if bursters else 0):
            for server in bursters if rnd % 2 == 0 else list(reversed(bursters)):
                b = burst(server, args.burst_clients, args.burst_window, rawdir)
                b["round"] = rnd
                bursts.append(b)
                if "failed" in b:
                    what = "FAILED: " + b["failed"].splitlines()[0][:120]
                else:
                    what = (
                        f"held {b['held']} open, per worker {b['counts']}, "
                        f"busiest/idlest {fmtShare(b.get('max_over_min', 0))}, "
                        f"errors {b['errors']}, connected in {b['connect_s']:.2f} s"
                    )
                print(
                    f"[burst] round {rnd + 1}/{args.rounds} {server.label}: {what}",
                    flush=True,
                )
        for server in replaced:
            r = replacementCost(server, args.replacements, rawdir)
            replacements.append(r)
            if "failed" in r:
                what = "FAILED: " + r["failed"].splitlines()[0][:120]
            else:
                what = (
                    f"{r['cpu_ms_each']:.1f} ms CPU each (x{args.replacements}), "
                    f"wall {r['wall_ms_median']:.0f} ms"
                )
            print(f"[replacement] {server.label}: {what}", flush=True)
        if replaced:
            for preload in ([], ["bench.heavyapp.site"]):
                r = forkFloor(preload)
                replacements.append(r)
                what = r.get("failed") or (
                    f"{r['cpu_ms_each']:.2f} ms CPU per fork "
                    f"(parent {r['parent_ms_each']:.2f}, child "
                    f"{r['child_ms_each']:.2f}), "
                    f"template {r['template_rss_mib']:.0f} MiB"
                )
                print(f"[floor] {r['server']}: {what}", flush=True)
        if args.master_memory:
            masters = masterMemory()
            for r in masters:
                what = r.get("failed") or (
                    f"RSS {r['rss_start_mib']:.1f} MiB at start, "
                    f"{r['rss_mib']:.1f} MiB after 2,000 connections"
                )
                print(
                    f"[master] {r['install']}, status {r['status']}: {what}", flush=True
                )
        if not args.no_timelines:
            scenarios = [
                (
                    "steady",
                    "steady: preforktwist -w 2 -m 0",
                    preforktwist(2, 0),
                    None,
                ),
                (
                    "recycle-storm",
                    "recycle storm: preforktwist -w 2 -m 50",
                    preforktwist(2, 50),
                    None,
                ),
                (
                    "rolling-reload",
                    "rolling reload: preforktwist -w 2, SIGHUP mid-run",
                    preforktwist(2, 0),
                    args.timeline_duration / 2,
                ),
            ]
            for name, title, server, hupAt in scenarios:
                t = timeline(server, args.timeline_duration, hupAt, rawdir, name)
                t["title"] = title
                timelines.append(t)
                if "failed" in t:
                    what = "FAILED: " + t["failed"].splitlines()[0][:120]
                else:
                    what = (
                        f"{sum(t['ok']):,} ok, {sum(t['errors'])} errors, "
                        f"min {min(t['ok'][1:-1] or t['ok'])}/s, "
                        f"{t['workers_started']} workers started"
                    )
                print(f"[timeline] {title}: {what}", flush=True)
    finally:
        stopEverything()
        if snapshotDir is not None:
            shutil.rmtree(snapshotDir, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    info["elapsed_s"] = f"{time.monotonic() - started:.0f}"
    with open(os.path.join(rawdir, "results.json"), "w") as f:
        json.dump(
            {
                "info": info,
                "args": vars(args),
                "runs": runs,
                "timelines": timelines,
                "bursts": bursts,
                "replacements": replacements,
                "masters": masters,
            },
            f,
            indent=1,
        )
    writeReport(
        args,
        servers,
        runs,
        timelines,
        info,
        outdir,
        rawdir,
        bursts,
        replacements,
        masters,
    )


def writeReport(
    args: argparse.Namespace,
    servers: list[Server],
    runs: list[dict[str, Any]],
    timelines: list[dict[str, Any]],
    info: dict[str, str],
    outdir: str,
    rawdir: str,
    bursts: list[dict[str, Any]] | None = None,
    replacements: list[dict[str, Any]] | None = None,
    masters: list[dict[str, Any]] | None = None,
) -> None:
    summary = summarize(servers, runs)
    with open(os.path.join(rawdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    images = charts(servers, summary, timelines, outdir)
    text = report(
        args,
        servers,
        runs,
        summary,
        timelines,
        info,
        images,
        float(info.get("elapsed_s", 0)),
        bursts or [],
        replacements or [],
        masters or [],
    )
    cores = int(info.get("nproc") or os.cpu_count() or 1)
    text += "\n".join(
        [
            "",
            *extraReport(bursts or [], replacements or [], masters or []),
            *cpuCeiling(summary, cores),
        ]
    )
    path = os.path.join(outdir, "RESULTS.md")
    with open(path, "w") as f:
        f.write(text)
    print(
        f"bench: wrote {path} and {len(images)} charts; raw data in {rawdir}",
        flush=True,
    )
    for row in targets(runs, summary, bursts or [], replacements or [], masters or []):
        print("  " + " | ".join(row), flush=True)


def reportOnly(rawdir: str, outdir: str) -> None:
    """
    Rewrite RESULTS.md and the charts from a finished run's results.json.
    """
    with open(os.path.join(rawdir, "results.json")) as f:
        data = json.load(f)
    args = argparse.Namespace(**data["args"])
    keys = {r["server"] for r in data["runs"]}
    servers = [s for s in allServers(True) if s.key in keys]
    writeReport(
        args,
        servers,
        data["runs"],
        data["timelines"],
        data["info"],
        outdir,
        rawdir,
        data.get("bursts"),
        data.get("replacements"),
        data.get("masters"),
    )


if __name__ == "__main__":
    main()
