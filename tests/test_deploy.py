"""
Deployment: TLS, PROXY protocol (direct and through a real HAProxy),
systemd socket activation and notification, several listeners, privilege
drop, and two instances behind HAProxy surviving a reload and a restart.
"""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartMaster
from tests.harness import REPO, TWISTD, Master, exchange, waitUntil


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def makeCertificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    certPath, keyPath = directory / "cert.pem", directory / "key.pem"
    certPath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certPath, keyPath


def tlsExchange(port: int, payload: bytes, cert: Path, prefix: bytes = b"") -> bytes:
    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(prefix)
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(payload)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
            return received


def test_tls(serve: StartMaster, tmp_path: Path) -> None:
    """
    ssl: endpoint, TLS terminated in the workers, through recycling.
    """
    cert, key = makeCertificate(tmp_path)
    master = serve(
        "-w",
        "2",
        "-m",
        "3",
        "-p",
        "tests.apps.PidEcho",
        "-l",
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    master.waitForWorkers(2)
    port = master.port
    pids = set()
    for i in range(12):
        pid, _, echoed = tlsExchange(port, b"%d" % i, cert).partition(b":")
        assert echoed == b"%d" % i
        pids.add(int(pid))
    assert len(pids) >= 4


def test_bad_certificate_is_one_line(tmp_path: Path) -> None:
    master = Master(
        ["-l", f"ssl:0:privateKey={tmp_path}/nokey.pem:certKey={tmp_path}/nocert.pem"],
        cwd=tmp_path,
    )
    assert master.wait(20) != 0
    assert master.reap() == []
    assert len([line for line in master.errors if line.strip()]) == 1
    assert "--listen" in master.errors[0] and "ssl:0" in master.errors[0]


def test_proxy_protocol_direct(serve: StartMaster, tmp_path: Path) -> None:
    """
    A PROXY v1 header, sent by hand: the protocol sees the client it names
    already in connectionMade; and the header comes before TLS.
    """
    cert, key = makeCertificate(tmp_path)
    master = serve(
        "-w",
        "1",
        "--proxy-protocol",
        "-p",
        "tests.apps.PeerAtConnect",
        "-l",
        "tcp:0:interface=127.0.0.1",
        "-l",
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    master.waitForWorkers(1)
    header = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n"
    ports = [
        int(m)
        for m in __import__("re").findall(
            r"listening on 127\.0\.0\.1:(\d+)", "\n".join(master.log())
        )
    ]
    assert len(ports) == 2
    assert exchange(ports[0], header + b"hi") == b"203.0.113.7:56324|hi"
    assert (
        tlsExchange(ports[1], b"tls", cert, prefix=header) == b"203.0.113.7:56324|tls"
    )
    # No header: disconnected before the protocol ever sees it.
    assert exchange(ports[0], b"GET / HTTP/1.0\r\n\r\n") == b""


def test_several_listeners_share_the_allowance(
    serve: StartMaster, tmp_path: Path
) -> None:
    path = tmp_path / "s.sock"
    master = serve(
        "-w",
        "1",
        "-m",
        "4",
        "--replace-at",
        "1",
        "-p",
        "tests.apps.PidEcho",
        "-l",
        "tcp:0:interface=127.0.0.1",
        "-l",
        f"unix:{path}:mode=600",
    )
    master.waitForWorkers(1)
    port = master.port
    assert path.stat().st_mode & 0o777 == 0o600
    pids = []
    for i in range(8):
        if i % 2:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(b"u")
                pids.append(int(s.recv(100).partition(b":")[0]))
        else:
            pids.append(int(exchange(port, b"t").partition(b":")[0]))
    assert len(set(pids)) == 2
    assert pids[:4] == [pids[0]] * 4
    master.signal(signal.SIGTERM)
    assert master.wait() == 0
    assert not path.exists()


def test_systemd_socket_activation(tmp_path: Path) -> None:
    """
    systemd-socket-activate binds the socket and starts the master at the
    first connection, which is queued meanwhile and served.
    """
    activate = shutil.which("systemd-socket-activate")
    if activate is None and not os.environ.get("CI"):
        pytest.skip("systemd-socket-activate is not installed (.ci/run installs it)")
    assert activate is not None
    port = freePort()
    master = Master(
        [],
        cwd=tmp_path,
        command=[
            activate,
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
            "tests.apps.PidEcho",
            "-l",
            "systemd:domain=INET:index=0",
        ],
    )
    try:
        waitUntil(
            lambda: any("Listening on" in line for line in master.errors), 10, "bind"
        )
        first = exchange(port, b"first", timeout=30)
        assert first.endswith(b":first")
        master.waitForWorkers(2)
        assert exchange(port, b"second").endswith(b":second")
        assert (
            master.count(r"systemd:domain=INET:index=0 listening on 127\.0\.0\.1") == 1
        )
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
    finally:
        assert master.reap() == []


def test_systemd_notify(serve: StartMaster, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(20)
        master = serve("-w", "2", env={"NOTIFY_SOCKET": address})
        messages: list[str] = []

        def until(field: str) -> None:
            while not any(field in m.split("\n") for m in messages):
                messages.append(notify.recv(4096).decode())

        until("READY=1")
        assert f"MAINPID={master.pid}" in messages[-1].split("\n")
        master.waitForWorkers(2)
        master.signal(signal.SIGHUP)
        until("RELOADING=1")
        reloading = len(messages)
        messages.clear()
        until("READY=1")
        master.signal(signal.SIGTERM)
        until("STOPPING=1")
        assert master.wait() == 0
        assert reloading >= 1
        assert any(m.startswith("STATUS=") for m in messages)


@pytest.fixture(scope="module")
def systemVenv() -> Iterator[Path]:
    """
    The package installed into a virtualenv of the system's Python, in a
    directory anyone may read: what an unprivileged worker can run (the
    test runner's own Python may live under /root).
    """
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None:
        pytest.skip("no system python3")
    directory = Path(tempfile.mkdtemp(prefix="preforktwist-venv-"))
    directory.chmod(0o755)
    env = directory / "venv"
    subprocess.run([python, "-m", "venv", str(env)], check=True, timeout=120)
    subprocess.run(
        [str(env / "bin" / "pip"), "install", "-q", str(REPO)],
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    yield env
    shutil.rmtree(directory)


def idsOf(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_privilege_drop(systemVenv: Path) -> None:
    """
    twistd --uid/--gid: the master binds a port below 1024 as root; it and
    its workers then run as nobody.
    """
    nobody = pwd.getpwnam("nobody")
    port = next(p for p in range(900, 1000) if _free(p))
    workdir = Path(tempfile.mkdtemp(prefix="preforktwist-"))
    workdir.chmod(0o755)
    master = Master(
        ["-w", "2", "-l", f"tcp:{port}:interface=127.0.0.1"],
        cwd=workdir,
        command=[
            str(systemVenv / "bin" / "twistd"),
            "-n",
            "--pidfile=",
            "--logfile=-",
            f"--uid={nobody.pw_uid}",
            f"--gid={nobody.pw_gid}",
            "preforked",
            "-w",
            "2",
            "-l",
            f"tcp:{port}:interface=127.0.0.1",
        ],
    )
    try:
        master.waitForWorkers(2)
        assert exchange(port, b"low port", expect=8) == b"low port"
        assert idsOf(master.pid) == (nobody.pw_uid, nobody.pw_gid)
        workers = master.liveWorkers()
        assert len(workers) == 2
        for pid in workers:
            assert idsOf(pid) == (nobody.pw_uid, nobody.pw_gid)
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
    finally:
        assert master.reap() == []
        shutil.rmtree(workdir)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
