"""
A plain install into a fresh virtualenv makes `twistd preforked` appear,
and uninstalling removes it.  This installs Twisted from the package index
(pip's cache makes that quick after the first run).
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

from tests.harness import REPO


def run(*command: str | Path) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_plugin_listed_after_plain_install(tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    twistd = env / "bin" / "twistd"
    run(python, "-m", "pip", "install", "-q", "twisted")
    assert "preforked" not in run(twistd, "--help")
    run(python, "-m", "pip", "install", "-q", REPO)
    assert "preforked" in run(twistd, "--help")
    # Process titles come with a plain install, no extra needed.
    run(python, "-c", "import setproctitle")
    # Twisted's own package is intact: the wheel adds only the plugin module.
    run(python, "-c", "import twisted.plugins.twisted_web, twisted.web.tap")
    run(python, "-m", "pip", "uninstall", "-q", "-y", "preforktwist")
    assert "preforked" not in run(twistd, "--help")
