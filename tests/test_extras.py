"""
Optional features say which extra they need: with the extra's module
missing, C{twistd preforked} ends with one line naming C{pip install
'preforktwist[...]'}, not a bare C{No module named ...}.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import StartMaster
from tests.harness import REPO, Master
from tests.test_health import probe
from tests.test_status import STATUS, statusURL


def without(module: str, directory: Path) -> dict[str, str]:
    """
    An environment whose imports of C{module} fail as if it were not
    installed.
    """
    blockers = directory / "blockers"
    blockers.mkdir(exist_ok=True)
    (blockers / f"{module}.py").write_text(
        f'raise ModuleNotFoundError("No module named {module!r}", name={module!r})\n'
    )
    return {"PYTHONPATH": f"{blockers}:{REPO}"}


@pytest.mark.parametrize("option", ["--listen", "--status"])
def test_ssl_without_pyopenssl_names_the_extra(tmp_path: Path, option: str) -> None:
    description = "ssl:0:interface=127.0.0.1:privateKey=key.pem:certKey=cert.pem"
    args = [option, description]
    if option == "--status":
        args += ["--listen", "tcp:0:interface=127.0.0.1"]
    master = Master(args, cwd=tmp_path, env=without("OpenSSL", tmp_path))
    assert master.wait(20) != 0
    assert master.reap() == []
    errors = [line for line in master.errors if line.strip()]
    assert len(errors) == 1, errors
    assert "pip install 'preforktwist[tls]'" in errors[0], errors[0]
    assert master.workerPids() == []


def test_metrics_without_prometheus_client_names_the_extra(
    serve: StartMaster, tmp_path: Path
) -> None:
    # One worker, said so: the default is one per CPU, and readiness waits
    # for all of them, so waiting for one alone raced the second's boot.
    master = serve("-w", "1", *STATUS, env=without("prometheus_client", tmp_path))
    master.waitForWorkers(1, 30)
    code, body = probe(statusURL(master) + "metrics")
    assert code == 501
    assert body == (
        "/metrics needs prometheus_client: pip install 'preforktwist[metrics]'\n"
    )
    assert probe(statusURL(master) + "readyz")[0] == 200
