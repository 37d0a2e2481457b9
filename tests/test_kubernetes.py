"""
tap/kubernetes.yaml and tap/Dockerfile, checked without a cluster or an
image builder: the probes name the real health endpoints on the status
port, the grace period covers C{--grace}, the Service sends traffic to the
listener, and the command is a valid C{twistd preforked} line, the same
in both files.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from twisted.internet.task import Clock

from preforktwist.common.endpoints import parseListen
from preforktwist.master.status.scoreboard import Scoreboard
from preforktwist.master.status.web import statusSite
from preforktwist.tap import Options
from tests.harness import REPO
from tests.test_pool import Harness

TAP = REPO / "tap"


def manifest() -> dict[str, dict[str, Any]]:
    documents = yaml.safe_load_all((TAP / "kubernetes.yaml").read_text())
    return {document["kind"]: document for document in documents}


def preforkedOptions(command: list[str]) -> Options:
    """
    The options after C{preforked}, parsed as C{twistd preforked} does.
    """
    assert command[0] == "twistd" and "-n" in command
    options = Options()
    options.parseOptions(command[command.index("preforked") + 1 :])
    return options


def port(description: str) -> int:
    address = parseListen(description).address
    assert isinstance(address, tuple)
    return address[1]


def test_deployment_and_service() -> None:
    kinds = manifest()
    deployment, service = kinds["Deployment"], kinds["Service"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    options = preforkedOptions(container["command"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (listen,) = options["listen"]
    assert ports["http"] == port(listen)
    assert ports["status"] == port(options["status"])
    # The probes ask the endpoints the status site really serves.
    routes = statusSite(Scoreboard(Harness(1).pool, [], Clock())).pages
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        check = container[probe]["httpGet"]
        assert check["path"] == path and path.encode() in routes
        assert ports[check["port"]] == ports["status"]
    # The kubelet's SIGKILL comes only after preStop, --grace and a margin.
    preStop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert preStop[0] == "sleep"
    assert (
        pod["terminationGracePeriodSeconds"] >= float(preStop[1]) + options["grace"] + 1
    )
    # One pod at a time, never fewer than the replicas serving.
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)
    # The Service sends traffic to the listener, never to the status port.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_dockerfile_runs_the_same_command() -> None:
    text = (TAP / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    (container,) = manifest()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert json.loads(cmd) == container["command"]
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    options = preforkedOptions(json.loads(cmd))
    exposed = re.findall(r"^EXPOSE (.*)$", text, re.MULTILINE)[0].split()
    assert {port(options["listen"][0]), port(options["status"])} == set(
        map(int, exposed)
    )
    # The served module is in the image, where twistd starts.
    factory = options["factory"].partition(".")[0]
    assert f"COPY tap/recipes/{factory}.py /app/" in text
    assert "WORKDIR /app" in text
