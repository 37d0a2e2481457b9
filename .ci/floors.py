"""
Pip constraints pinning dependencies to the lowest versions pyproject.toml
admits: the project's requirement on each name given must have one C{>=}
bound, and C{name==bound} is printed.  CI installs with them to test the
floor the project promises, read from the one place that states it.

Usage: C{python .ci/floors.py twisted > constraints.txt}
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def floors(pyproject: Path, names: list[str]) -> list[str]:
    """
    The constraint lines for C{names}, in their order.

    @raise SystemExit: with a one-line reason, for a name the project does
        not depend on or whose requirement has no single C{>=} bound.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = {
        canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])
    }
    pins = []
    for name in names:
        requirement = requirements.get(canonicalize_name(name))
        if requirement is None:
            raise SystemExit(f"{pyproject.name}: no dependency on {name}")
        bounds = [s.version for s in requirement.specifier if s.operator == ">="]
        if len(bounds) != 1:
            raise SystemExit(
                f"{pyproject.name}: {requirement} has no single >= bound to pin"
            )
        pins.append(f"{requirement.name}=={bounds[0]}")
    return pins


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: floors.py NAME [NAME ...]")
    print("\n".join(floors(PYPROJECT, sys.argv[1:])))
