"""
What the code, the README and the documentation say stays true as the
project moves: no issue numbers, commit hashes or dated measurements in
them.  Those belong to the record, C{bench/RESULTS.md}, C{bench/README.md}
and the changelog, which say when and how a figure was taken; prose that
copies them goes stale without anyone noticing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tests.harness import REPO

#: What is read: the package, the plugin, the deployment files and
#: recipes, the documentation and the README.
SCANNED = ("preforktwist", "twisted", "tap", "docs", "README.md")

#: The record, where dates and figures belong: the changelog, and what a
#: documentation build leaves behind.
EXEMPT = ("docs/_build", "docs/changelog.rst")

#: Files read as text; pictures and other binaries are skipped.
TEXT_SUFFIXES = {
    ".py",
    ".tac",
    ".html",
    ".md",
    ".rst",
    ".txt",
    ".cfg",
    ".yaml",
    ".service",
    ".socket",
    "",
}

ISSUE = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)
#: A word of 7 to 40 hex digits with at least one digit and one letter
#: (so neither C{1234567} nor C{defaced}), not part of a longer name, a
#: path or a colour.
COMMIT = re.compile(
    r"(?<![\w./#-])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w-])"
)
DATE = re.compile(r"\b(?:19|20)\d\d-[01]\d-[0-3]\d\b")

FINDERS = {"issue number": ISSUE, "commit hash": COMMIT, "date": DATE}


def findings(text: str, name: str) -> Iterator[str]:
    """
    Each issue number, commit hash or date in C{text}, as
    C{name:line: what: the line}.
    """
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in FINDERS.items():
            for match in pattern.finditer(line):
                yield f"{name}:{number}: {what} {match.group(0)!r}: {line.strip()}"


def scannedFiles() -> Iterator[Path]:
    for root in SCANNED:
        path = REPO / root
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for candidate in candidates:
            relative = candidate.relative_to(REPO).as_posix()
            if (
                candidate.is_file()
                and candidate.suffix in TEXT_SUFFIXES
                and "__pycache__" not in candidate.parts
                and not relative.startswith(EXEMPT)
            ):
                yield candidate


def test_no_issue_numbers_hashes_or_dates() -> None:
    """
    None of the scanned files names an issue, a commit or a date.
    """
    found = [
        finding
        for path in scannedFiles()
        for finding in findings(
            path.read_text(errors="replace"), path.relative_to(REPO).as_posix()
        )
    ]
    assert not found, "move these to bench/ or the changelog:\n" + "\n".join(found)


def test_scan_reads_the_documentation() -> None:
    """
    The scan covers the README and the documentation's pages, so a finding
    there would be reported.
    """
    names = {path.relative_to(REPO).as_posix() for path in scannedFiles()}
    assert "README.md" in names
    assert "docs/index.rst" in names
    assert "preforktwist/tap.py" in names
    assert not any(name.startswith("docs/_build/") for name in names)


def test_findings() -> None:
    """
    What the scan reports, and what it leaves alone.
    """
    reported = list(
        findings(
            "Fixed in issue 12 and Issue #7.\n"
            "before = 7af2579, after 0123456789abcdef0123456789abcdef01234567\n"
            "Measured on 2026-12-06.\n",
            "f",
        )
    )
    assert [r.split(": ")[1] for r in reported] == [
        "issue number 'issue 12'",
        "issue number 'Issue #7'",
        "commit hash '7af2579'",
        "commit hash '0123456789abcdef0123456789abcdef01234567'",
        "date '2026-12-06'",
    ]
    assert reported[0].startswith("f:1: ")
    innocent = (
        "1234567 connections, defaced, 0x00007f, colour #1a2b3c4,\n"
        "bench/abc1234d.json, my-deadbeef1, issues with HTTP/2, 12:30\n"
    )
    assert list(findings(innocent, "f")) == []
