"""
The documentation says what the code does: every C{twistd preforked}
command line in it parses with the real options, and the reference pages
that the build generates from the code cover all of it.  (The build
itself, with warnings as errors, runs in C{.ci/run}.)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.scripts import twistd

from preforktwist.settings import SETTINGS, optionGroups
from tests.harness import REPO
from tests.test_deploy import makeCertificate

sys.path.insert(0, str(REPO / "docs" / "_ext"))
import generated

#: Where command lines are looked for: the pages, the README, and the
#: deployment files and recipes the pages include.
SOURCES = ("docs", "README.md", "tap")
SUFFIXES = {".rst", ".md", ".py", ".tac", ".service", ".cfg"}

#: A command: the program (a path that ends in twistd), then its arguments.
TWISTD = re.compile(r"(?:^|[\s=])(?:sudo\s+)?(?:\S*/)?twistd\s+(.*)$")


def logicalLines(text: str) -> Iterator[tuple[int, str]]:
    """
    Each line of C{text} with its continuations (a line ending in a
    backslash) joined to it, with the number of its first line.
    """
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            # One backslash, or two in a Python docstring's source.
            pending.append(stripped.rstrip("\\"))
            continue
        pending.append(stripped)
        yield start, " ".join(part.strip() for part in pending)
        pending = []


#: The comment that marks a command shown to be refused (a lesson's
#: deliberate mistake): the check then wants it refused.
REFUSED = "# refused"


def commandLines(text: str) -> Iterator[tuple[int, list[str], bool]]:
    """
    The arguments after C{twistd} of every command line in C{text} that
    runs C{preforked}, as a shell would split them, and whether the line
    says it is refused; a shell's comment and anything after C{&&}, C{;}
    or C{|} are not part of it.
    """
    for number, line in logicalLines(text):
        match = TWISTD.search(line.lstrip("$ "))
        if match is None:
            continue
        try:
            words = shlex.split(match.group(1), comments=True)
        except ValueError:
            continue
        for stop in ("&&", ";", "|"):
            if stop in words:
                words = words[: words.index(stop)]
        if "preforked" in words:
            yield number, words, line.rstrip().endswith(REFUSED)


def documentedCommands() -> list[tuple[str, list[str], bool]]:
    found = []
    for root in SOURCES:
        path = REPO / root
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for each in files:
            relative = each.relative_to(REPO).as_posix()
            if (
                each.is_file()
                and each.suffix in SUFFIXES
                and not relative.startswith("docs/_build/")
            ):
                for number, words, refused in commandLines(each.read_text()):
                    found.append((f"{relative}:{number}", words, refused))
    return found


def parseError(words: list[str]) -> str | None:
    """
    Why twistd, with the preforked plugin's real options, refuses this
    command line, or C{None} if it takes it.
    """
    # twistd's own options for this platform, with every plugin's, ours too.
    options = twistd.ServerOptions()  # type: ignore[attr-defined,no-untyped-call]
    try:
        options.parseOptions(words)
    except SystemExit as e:
        return str(e.code)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    if options.subCommand != "preforked":
        return f"runs {options.subCommand!r}, not preforked"
    return None


#: Parses command lines as a systemd-activated twistd would: with a
#: listening socket on descriptor 3 and C{LISTEN_FDS} naming it C{web}, as
#: the documented C{systemd:} endpoints expect.
_CHILD = """
import json, os, socket, sys
listener = socket.create_server(("127.0.0.1", 0))
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web")
from tests.test_docs import parseError
print(json.dumps([parseError(words) for words in json.load(sys.stdin)]))
"""


def parseErrors(commands: list[list[str]], directory: Path) -> list[str | None]:
    """
    L{parseError} for each command, in a child process started in
    C{directory} that holds a socket as systemd passes one.
    """
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=True,
    )
    errors: list[str | None] = json.loads(done.stdout)
    return errors


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """
    A directory with C{key.pem} and C{cert.pem}, which the documented
    C{ssl:} endpoints name and the options read.
    """
    makeCertificate(tmp_path)
    return tmp_path


def test_documented_commands_parse(certificates: Path) -> None:
    """
    Every C{twistd ... preforked ...} line in the pages, the README and the
    files they include is one that twistd and the plugin accept, but for
    those the text shows being refused, which must be.
    """
    commands = documentedCommands()
    places = {place.split(":")[0] for place, _, _ in commands}
    assert len(commands) >= 30, commands
    assert "README.md" in places and "docs/howto/tuning.rst" in places
    assert any(refused for _, _, refused in commands)
    errors = parseErrors([words for _, words, _ in commands], certificates)
    wrong = [
        f"{place}: twistd {shlex.join(words)}\n    "
        + (error or "accepted, but the text shows it refused")
        for (place, words, refused), error in zip(commands, errors, strict=True)
        if (error is None) == refused
    ]
    assert not wrong, "\n".join(wrong)


def test_bad_flag_is_refused(
    certificates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The check would catch a documented command with a wrong option or a
    wrong value, with the plugin's own message.
    """
    text = (
        "Run it::\n\n"
        "   twistd -n preforked --workers 4 \\\n"
        "       --no-such-flag -p myapp.Echo   # a comment\n"
        "   $ twistd -n --pidfile= preforked -w 0\n"
        "   twistd -n preforked --grace 30 && echo done\n"
        "   twistd -ny app.tac\n"
        "   twistd -n preforked -w 0   # refused\n"
    )
    monkeypatch.chdir(certificates)
    found = list(commandLines(text))
    assert [(number, refused) for number, _, refused in found] == [
        (3, False),
        (5, False),
        (6, False),
        (8, True),
    ]
    assert found[0][1] == [
        "-n",
        "preforked",
        "--workers",
        "4",
        "--no-such-flag",
        "-p",
        "myapp.Echo",
    ]
    errors = [parseError(words) for _, words, _ in found]
    assert errors[0] is not None and "no-such-flag" in errors[0]
    assert errors[1] is not None and "--workers" in errors[1]
    assert errors[2] is None


#: A control command: C{preforktwist-ctl}, then its arguments.
CTL = re.compile(r"(?:^|\s)preforktwist-ctl\s+(.*)$")


def ctlLines(text: str) -> Iterator[tuple[int, list[str]]]:
    """
    The arguments of every C{preforktwist-ctl} command line in C{text}.
    """
    for number, line in logicalLines(text):
        match = CTL.search(line.lstrip("$ "))
        if match is not None:
            yield number, shlex.split(match.group(1), comments=True)


def ctlError(words: list[str]) -> str | None:
    """
    Why C{preforktwist-ctl}'s own options refuse these arguments, or
    C{None}.
    """
    from twisted.python import usage

    from preforktwist import ctl

    try:
        ctl.Options().parseOptions(words)
    except usage.UsageError as e:
        return str(e)
    return None


def test_documented_ctl_commands_parse() -> None:
    """
    Every C{preforktwist-ctl} line in the pages and the README is one its
    options accept; a wrong command would be caught.
    """
    found = []
    for root in ("docs", "README.md"):
        path = REPO / root
        files = [path] if path.is_file() else sorted(path.rglob("*.rst"))
        for each in files:
            if "_build" not in each.parts:
                for number, words in ctlLines(each.read_text()):
                    found.append((f"{each.relative_to(REPO)}:{number}", words))
    assert len(found) >= 8, found
    refused = [
        f"{place}: preforktwist-ctl {shlex.join(words)}: {error}"
        for place, words in found
        if (error := ctlError(words)) is not None
    ]
    assert not refused, "\n".join(refused)
    assert ctlError(["--socket", "/run/x.sock", "restart"]) is not None
    assert ctlError(["--socket", "/run/x.sock", "add", "0"]) is not None


def test_ctl_commands_page() -> None:
    """
    The control page lists every command of C{preforktwist-ctl}.
    """
    from preforktwist import ctl

    text = "\n".join(generated.ctlCommands())
    for name, *_ in ctl.Options.subCommands:
        assert f"``{name}" in text
    assert "--socket PATH" in text and "``--json``" in text


def test_options_reference_lists_every_option() -> None:
    """
    The generated options page has an entry for every setting, each with
    its flags, and in the settings table's order.
    """
    text = "\n".join(generated.optionsReference())
    entries = re.findall(r"^\.\. option:: (.+)$|^ {12}(--.+)$", text, re.MULTILINE)
    signatures = [first or rest for first, rest in entries]
    assert signatures == [generated.signature(s) for s in SETTINGS]
    for each in SETTINGS:
        assert f"``{each.name}``" in text
    assert "`--" not in text.replace("``--", "")
    assert sum(len(group) for group in optionGroups()) == len(SETTINGS)


def test_markdown_links_refused() -> None:
    with pytest.raises(ValueError):
        generated.inlineMarkdownToReST("see [the docs](https://example.com)")
    assert generated.inlineMarkdownToReST("`-m` *N*") == "``-m`` *N*"


def test_status_schema_page() -> None:
    """
    The schema page shows the scoreboard's annotated example, whole.
    """
    lines = generated.statusSchema()
    assert lines[0] == ".. code-block:: text"
    text = "\n".join(lines)
    for key in ('"schema": 1', '"listeners"', '"pool"', '"restarts"', '"workers"'):
        assert key in text


def test_metrics_page() -> None:
    """
    The metrics page names every family the collector exports, counters
    with their C{_total} suffix, and every restart cause.
    """
    text = "\n".join(generated.metricsReference())
    for name in (
        "preforktwist_connections_accepted_total",
        "preforktwist_workers",
        "preforktwist_worker_restarts_total",
        "preforktwist_listen_queue_depth",
        "preforktwist_uptime_seconds",
    ):
        assert f"``{name}``" in text
    for cause in ("allowance", "crash", "heartbeat_timeout", "reload"):
        assert f"``{cause}``" in text


def test_news_draft() -> None:
    """
    The changelog page's coming release is towncrier's draft of the news
    fragments.
    """
    assert generated.hasNewsFragments()
    lines = generated.newsDraft("9.9.9")
    assert lines[0] == "preforktwist 9.9.9 (unreleased)"
    assert any(line.startswith("- ") for line in lines)


def test_pool_events_page() -> None:
    """
    The hooks page lists every kind of event an observer is told of,
    linked to its API page, with its fields; C{WorkerEvent}, their common
    part, is not a kind.
    """
    from preforktwist.master import hooks

    text = "\n".join(generated.poolEventsReference())
    kinds = [kind.__name__ for kind in generated.poolEventKinds()]
    assert "WorkerEvent" not in kinds and "PoolEvent" not in kinds
    for name in ("PoolReady", "WorkerExited", "ReloadFailed", "WorkersChanged"):
        assert name in kinds
        assert f":py:class:`~preforktwist.master.hooks.{name}`" in text
        assert name in hooks.__all__
    assert "``cause``" in text and "``lifetime``" in text


def test_epytext_to_rest() -> None:
    assert (
        generated.epytextToReST("C{SIGTTIN}, L{ProcessEnd} and I{going\n away}")
        == "``SIGTTIN``, ``ProcessEnd`` and *going away*"
    )


def test_python_inventory(tmp_path: Path) -> None:
    """
    The builtins' inventory, which lets C{L{None}} link from a docstring,
    is in Sphinx's format and names the constants, exceptions, types and
    functions where Python's documentation has them.
    """
    import zlib

    from inventories import pythonInventory

    path = pythonInventory(tmp_path)
    assert pythonInventory(tmp_path) == path
    header, _, body = path.read_bytes().partition(b"zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2\n")
    lines = set(zlib.decompress(body).decode().splitlines())
    for line in (
        "None py:data 1 library/constants.html#$ -",
        "ValueError py:exception 1 library/exceptions.html#$ -",
        "int py:class 1 library/functions.html#$ -",
        "len py:function 1 library/functions.html#$ -",
    ):
        assert line in lines
