"""
The master/worker boundary is a test, not a convention: a worker (and the
fork server it is forked from) must load no master module, or a worker
would carry the master's state and a reload could not renew the code.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "preforktwist"

#: What a worker may not load: the master side and what only the master's
#: command line needs.
FORBIDDEN = ("preforktwist.master", "preforktwist.tap", "preforktwist.settings")

#: The folders whose modules end up in a worker.
WORKER_SIDE = ("worker", "protocol", "common")


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_worker_entry_points_load_no_master_module() -> None:
    """
    Importing the worker's entry point and the fork server, in a fresh
    interpreter, leaves no master module in C{sys.modules}.
    """
    probe = (
        "import json, sys\n"
        "import preforktwist.worker.main, preforktwist.worker.forkserver\n"
        "import preforktwist.worker.serving\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.startswith('preforktwist'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    loaded = json.loads(out)
    assert "preforktwist.worker.main" in loaded
    assert [name for name in loaded if _forbidden(name)] == []


def _imported(path: Path) -> list[str]:
    """
    Every module a file imports, at the top or inside a function.
    """
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_worker_side_sources_import_no_master_module() -> None:
    """
    Not even a lazy import inside a function: the runtime check above only
    sees the code paths an import runs.
    """
    offenders = {
        str(path.relative_to(PACKAGE)): bad
        for folder in WORKER_SIDE
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        if (bad := [name for name in _imported(path) if _forbidden(name)])
    }
    assert offenders == {}


def test_the_check_sees_a_master_import(tmp_path: Path) -> None:
    """
    The source check would catch a lazy import of the master.
    """
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from preforktwist.master import pool\n")
    assert [name for name in _imported(sample) if _forbidden(name)] == [
        "preforktwist.master",
        "preforktwist.master.pool",
    ]
