"""
The servers under test: for each, the command that starts it, how to know
it is ready and the signal that stops it gracefully.  L{allServers} is the
wrk plan, in its order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import BENCH, HOST, MODES, PYTHON, tool


@dataclass
class Server:
    """
    One server configuration: how to start it, how to know it is ready,
    how to stop it.
    """

    key: str
    label: str
    kind: str  # preforktwist, single, naive, forking, perl, gunicorn, nginx
    workload: str  # "hello", "site", "burn" or "heavy"
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

#: What the preforktwist master logs when its workers are accepting; group
#: 1 is how many are.
PT_READY = r"\((?:[^()]*, )?(\d+) accepting\)"

#: What preforktwist's workers serve: a protocol (-p) or a factory (-f),
#: the twisted.web Site of the hello resource or of the Django app.
PT_SERVED = {
    "hello": ["-p", "preforktwist.examples.HelloHTTP"],
    "site": ["-f", "bench.webhello.site"],
    "burn": ["-p", "bench.protocols.BurnHTTP"],
    "heavy": ["-f", "bench.heavyapp.site.site"],
}

#: What bench/single.py and bench/naive_prefork.py serve, per workload.
SERVED = {
    "hello": ["--protocol", "preforktwist.examples.HelloHTTP"],
    "site": ["--factory", "bench.webhello.site"],
    "burn": ["--protocol", "bench.protocols.BurnHTTP"],
}

#: The single processes every ratio is taken against: C{--only} keeps them.
BASELINES = ("single", "single-burn", "single-site")


def labelSuffix(workload: str) -> str:
    """
    What a server's label adds for its workload: nothing for the hello.
    """
    return {"hello": "", "site": " Site"}.get(workload, f" {workload}")


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
    served = PT_SERVED[workload]
    suffix = labelSuffix(workload)

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
        readyPattern=PT_READY,
        readyCount=workers,
        processes=workers + 1,
        stopSignal=signal.SIGINT,  # Ctrl-C: the documented graceful stop
        workers=workers,
        maxConnections=maxConnections,
        # The heavy app is there for what recycling costs: connection rate.
        modes=("close",) if workload == "heavy" else MODES,
    )


def single(workload: str = "hello") -> Server:
    served = SERVED[workload]
    return Server(
        key="single" if workload == "hello" else f"single-{workload}",
        label=f"single Twisted process{labelSuffix(workload)}",
        kind="single",
        workload=workload,
        argv=lambda port, tmp: [
            PYTHON,
            os.path.join(BENCH, "single.py"),
            "--port",
            str(port),
            *served,
        ],
        readyPattern=r"listening on",
    )


def naive(workers: int, workload: str = "hello", reuseport: bool = False) -> Server:
    served = SERVED[workload]
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
            *served,
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


def acceptVariantServers() -> list[Server]:
    """
    preforktwist's other accept paths at -w 2 and -w 8, and the naive
    pre-fork with a SO_REUSEPORT socket per worker (C{--accept-variants}).
    """
    return [
        preforktwist(w, 0, accept=a)
        for a in ACCEPT_VARIANTS
        if a not in ("", "preload")
        for w in (2, 8)
    ] + [naive(w, reuseport=True) for w in (2, 8)]


def allServers(acceptVariants: bool = False) -> list[Server]:
    """
    Every server of the wrk plan, in its order.
    """
    variants = acceptVariantServers() if acceptVariants else []
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
        single("site"),
        preforktwist(2, 0, "site"),
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


def baselineKey(server: Server) -> str:
    """
    What a server's "vs single" ratios are taken against: the single
    process serving the same workload; for the Django app, preforktwist
    -w 2 -m 0 serving it (its cases are about what recycling costs).
    """
    return {"hello": "single", "burn": "single-burn", "site": "single-site"}.get(
        server.workload, "pt-w2-m0-heavy"
    )
