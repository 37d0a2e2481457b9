"""
The documentation's source layout (docs/reference/layout.rst) lists every
module of the package, and nothing that is not there: the map a newcomer
reads must be the territory.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYOUT = REPO / "docs" / "reference" / "layout.rst"


def firstCells() -> list[str]:
    """
    The first cell of each row of the page's list table (a row starts with
    C{* -}, its first cell on the same line), the header's included.
    """
    return [
        line.split("* -", 1)[1].strip()
        for line in LAYOUT.read_text().splitlines()
        if line.lstrip().startswith("* -")
    ]


def listedPaths() -> set[str]:
    """
    Every path named in the first column of the layout table, with a bare
    file name (C{status.html}) taken to sit beside the row's first path.
    """
    listed: set[str] = set()
    for first in firstCells():
        names = re.findall(r"``([^`]+)``", first)
        for name in names:
            if "/" not in name and names[0] != name:
                name = str(Path(names[0]).parent / name)
            listed.add(name)
    return listed


def test_every_module_is_listed() -> None:
    """
    Each module and data file of the package has its row (a package's
    C{__init__.py} is its folder's row).
    """
    package = REPO / "preforktwist"
    expected = {
        str(path.relative_to(REPO))
        for path in package.rglob("*")
        if path.is_file()
        and path.suffix in (".py", ".html")
        and path.name != "__init__.py"
        and "__pycache__" not in path.parts
    }
    missing = expected - listedPaths()
    assert not missing, f"{LAYOUT.name} lacks {sorted(missing)}"


def test_every_listed_path_exists() -> None:
    stale = sorted(name for name in listedPaths() if not (REPO / name).exists())
    assert not stale, f"{LAYOUT.name} names what is not there: {stale}"


def test_folders_are_listed() -> None:
    """
    The four folders of the package, each with the rule it keeps.
    """
    listed = listedPaths()
    for folder in ("master", "protocol", "worker", "common"):
        assert f"preforktwist/{folder}/" in listed


def test_rows_are_read() -> None:
    """
    The table is read as the page shows it: a row per file, the header
    first.
    """
    cells = firstCells()
    assert cells[0] == "file"
    assert "``preforktwist/tap.py``" in cells
    assert len(cells) > 60
