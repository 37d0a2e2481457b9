"""
A release a user can install: C{python -m build} makes an sdist and a
wheel whose metadata an index accepts (C{twine check}); the wheel, installed
into a fresh virtualenv, makes C{twistd preforked} appear and serve a
connection, and uninstalling removes it.  (C{pip install .} builds the same
wheel with the same backend.)  This installs Twisted from the package index;
pip's cache makes that quick after the first run.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import preforktwist
from tests.harness import REPO, Master, exchange


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """
    The sdist and the wheel, built as a release is: the wheel from the
    sdist, so that the sdist is known to be complete.
    """
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO)
    (sdist,) = out.glob("preforktwist-*.tar.gz")
    (wheel,) = out.glob("preforktwist-*.whl")
    return sdist, wheel


def test_distributions_pass_twine_check(distributions: tuple[Path, Path]) -> None:
    """
    Both distributions' metadata and README render as an index would.
    """
    output = run(sys.executable, "-m", "twine", "check", "--strict", *distributions)
    assert output.count("PASSED") == 2, output


def test_version_declared_once(distributions: tuple[Path, Path]) -> None:
    """
    The version in the file names is the one C{pyproject.toml} declares,
    and C{preforktwist.__version__} reads it from the installed metadata.
    """
    sdist, wheel = distributions
    version = preforktwist.__version__
    assert sdist.name == f"preforktwist-{version}.tar.gz"
    assert wheel.name.startswith(f"preforktwist-{version}-py3-none-any")
    assert f'version = "{version}"' in (REPO / "pyproject.toml").read_text()


def test_wheel_contents(distributions: tuple[Path, Path]) -> None:
    """
    The wheel holds the package with its page, and the plugin module alone
    of C{twisted/}: no C{twisted/__init__.py} that would shadow Twisted's
    own, no tests or documentation.  Its metadata names the project's
    pages, the Python versions and the licence, whose text it carries.
    """
    _, wheel = distributions
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadataName,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadataName).decode()
    assert "preforktwist/master/status/status.html" in names
    assert "twisted/plugins/preforktwist_plugin.py" in names
    assert [n for n in names if n.startswith("twisted/")] == [
        "twisted/plugins/preforktwist_plugin.py"
    ]
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/"))]
    assert "Project-URL: Documentation, " in metadata
    assert "Classifier: Framework :: Twisted" in metadata
    assert "Requires-Python: >=3.10" in metadata
    assert "License-Expression: MIT" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_sdist_contents(distributions: tuple[Path, Path]) -> None:
    """
    The sdist carries what building the documentation and running the
    tests need, and nothing a build left behind.
    """
    sdist, _ = distributions
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in (
        "README.md",
        "LICENSE",
        "NEWS.rst",
        "docs/conf.py",
        "docs/index.rst",
        "tests/test_install.py",
        "tap/recipes/webapp.py",
    ):
        assert needed in names
    assert any(name.startswith("newsfragments/") for name in names)
    assert not any(name.startswith("docs/_build") for name in names)


def test_wheel_installs_and_serves(
    distributions: tuple[Path, Path], tmp_path: Path
) -> None:
    """
    Into a fresh virtualenv: C{twistd preforked} appears with the wheel,
    serves the echo example from the installed package (not this checkout),
    and goes away with it; Twisted's own package stays intact.
    """
    _, wheel = distributions
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    twistd = env / "bin" / "twistd"
    run(python, "-m", "pip", "install", "-q", "twisted")
    assert "preforked" not in run(twistd, "--help")
    run(python, "-m", "pip", "install", "-q", wheel)
    assert "preforked" in run(twistd, "--help")
    # The control command comes with it.
    assert "upgrade" in run(env / "bin" / "preforktwist-ctl", "--help")
    # Process titles come with a plain install, no extra needed.
    run(python, "-c", "import setproctitle")
    # Twisted's own package is intact: the wheel adds only the plugin module.
    run(python, "-c", "import twisted.plugins.twisted_web, twisted.web.tap")
    installed = run(
        python,
        "-c",
        "import preforktwist; print(preforktwist.__file__, preforktwist.__version__)",
        cwd=tmp_path,
    ).split()
    assert installed[0].startswith(str(env))
    assert installed[1] == preforktwist.__version__

    master = Master(
        ["-w", "1", "-l", "tcp:0:interface=127.0.0.1"],
        cwd=tmp_path,
        env={"PYTHONPATH": ""},
        command=[
            str(twistd),
            "-n",
            "--pidfile=",
            "--logfile=-",
            "preforked",
            "-w",
            "1",
            "-l",
            "tcp:0:interface=127.0.0.1",
        ],
    )
    try:
        master.waitForWorkers(1)
        assert exchange(master.port, b"hello", expect=5) == b"hello"
        master.waitForLine(r"serving the bundled example preforktwist\.examples\.Echo")
    finally:
        leaked = master.reap()
    assert leaked == []
    assert master.process.returncode == 0, master.output()

    run(python, "-m", "pip", "uninstall", "-q", "-y", "preforktwist")
    assert "preforked" not in run(twistd, "--help")
