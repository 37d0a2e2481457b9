"""
Twisted's Sphinx inventory, made from the installed Twisted by pydoctor.

Twisted publishes its inventory with its API reference, but a build must
not depend on reaching it: the inventory is made here instead, by the same
tool that makes Twisted's reference (so the names and addresses agree),
once per Twisted version, and kept under the build directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import twisted


def twistedInventory(cache: Path) -> Path:
    """
    The path of C{objects.inv} for the installed Twisted, made if missing.

    @param cache: where inventories are kept between builds.
    """
    output = cache / f"twisted-{twisted.__version__}"
    inventory = output / "objects.inv"
    if inventory.exists():
        return inventory
    package = Path(twisted.__file__).parent
    # Twisted's own docstrings warn about themselves: not this build's
    # business, so pydoctor's output is dropped unless it fails.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pydoctor",
            "--quiet",
            "--make-intersphinx",
            "--project-name=Twisted",
            f"--html-output={output}",
            str(package),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if not inventory.exists():
        raise RuntimeError(
            f"pydoctor made no inventory of Twisted (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return inventory
