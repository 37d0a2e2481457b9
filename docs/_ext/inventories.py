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


def pythonInventory(cache: Path) -> Path:
    """
    The path of an inventory of Python's builtins (the constants, the
    built-in functions and types, the exceptions), made from the running
    interpreter's C{builtins} module, so that C{L{None}} or
    C{L{ValueError}} in a docstring links to Python's documentation as it
    does in Twisted's, without fetching Python's inventory.
    """
    import builtins
    import zlib

    inventory = cache / f"python-{sys.version_info[0]}.{sys.version_info[1]}.inv"
    if inventory.exists():
        return inventory
    lines = []
    for name, value in sorted(vars(builtins).items()):
        if name.startswith("_"):
            continue
        if name in ("None", "True", "False", "Ellipsis", "NotImplemented"):
            lines.append(f"{name} py:data 1 library/constants.html#$ -")
        elif isinstance(value, type) and issubclass(value, BaseException):
            lines.append(f"{name} py:exception 1 library/exceptions.html#$ -")
        elif isinstance(value, type):
            lines.append(f"{name} py:class 1 library/functions.html#$ -")
        elif callable(value):
            lines.append(f"{name} py:function 1 library/functions.html#$ -")
    header = (
        "# Sphinx inventory version 2\n"
        "# Project: Python\n"
        f"# Version: {sys.version_info[0]}.{sys.version_info[1]}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    cache.mkdir(parents=True, exist_ok=True)
    inventory.write_bytes(
        header.encode() + zlib.compress(("\n".join(lines) + "\n").encode())
    )
    return inventory
