"""
Sphinx configuration for preforktwist's documentation.

The narrative pages are reStructuredText, as Twisted's own; the API
reference is made by pydoctor from the docstrings (epytext) during the
same build, through pydoctor's Sphinx extension, and the options, metrics,
status schema and changelog pages are generated from the code by the local
extension in C{_ext/}.  Build with warnings as errors::

    sphinx-build -W -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))

from inventories import pythonInventory, twistedInventory  # noqa: E402

import preforktwist  # noqa: E402

project = "preforktwist"
author = "the preforktwist developers"
copyright = "the preforktwist developers"
release = preforktwist.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.intersphinx",
    "pydoctor.sphinx_ext.build_apidocs",
    "preforktwist_docs",
]

exclude_patterns = ["_build", "_ext"]
templates_path: list[str] = []
# Every cross-reference must resolve: a renamed option, page or API name
# fails the build instead of leaving dead text.
nitpicky = True

# The benchmark's record lives beside the code, in bench/: the pages cite
# it, and never copy its figures.
rst_epilog = """
.. |results| replace:: :download:`bench/RESULTS.md </../bench/RESULTS.md>`
.. |bench-readme| replace:: :download:`bench/README.md </../bench/README.md>`
"""

html_theme = "furo"
html_title = f"preforktwist {release}"

# Twisted's API reference, for links from these pages and from the
# docstrings; its inventory is made from the installed Twisted (no network
# needed), once per Twisted version.
TWISTED_API = "https://docs.twisted.org/en/stable/api/"
_twisted = twistedInventory(HERE / "_build" / "inventories")
# Python's builtins, so that L{None} links as in Twisted's docstrings.
PYTHON_DOCS = "https://docs.python.org/3/"
_python = pythonInventory(HERE / "_build" / "inventories")
intersphinx_mapping = {
    "twisted": (TWISTED_API, str(_twisted)),
    "python": (PYTHON_DOCS, str(_python)),
}

# pydoctor builds the API reference into api/ of the HTML output and adds
# its inventory to intersphinx, so :py:class:`preforktwist.PreforkService`
# links into it.
pydoctor_args = [
    "--html-output={outdir}/api",
    "--project-name=preforktwist",
    f"--project-version={release}",
    "--project-url=../index.html",
    "--docformat=epytext",
    f"--project-base-dir={REPO}",
    f"--intersphinx-file={_twisted}::{TWISTED_API.rstrip('/')}",
    f"--intersphinx-file={_python}::{PYTHON_DOCS.rstrip('/')}",
    str(REPO / "preforktwist"),
]
pydoctor_url_path = "api/"
