"""
The reference pages' text that the code already says, rendered as
reStructuredText at each build: the options from the settings table, the
status JSON's schema from its module, the Prometheus metrics from the
collector itself, and the coming release's changelog from the news
fragments.  Nothing here is copied by hand, so a page cannot drift from the
code it describes.

Plain functions, free of Sphinx, so that the tests can run them.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from preforktwist.master import events
from preforktwist.master.events import CloseCause, RestartCause
from preforktwist.master.status import scoreboard
from preforktwist.settings import (
    Choice,
    Endpoints,
    Flag,
    Kind,
    Number,
    Setting,
    Text,
    Whole,
    WholeOrAuto,
    optionGroups,
)

REPO = Path(__file__).resolve().parents[2]

#: The program the options belong to, as Sphinx's C{program} directive
#: names it.
PROGRAM = "twistd preforked"

_CODE = re.compile(r"`([^`]+)`")
_FLAG = re.compile(r"(--[a-z][\w-]*)")


def inlineMarkdownToReST(text: str) -> str:
    """
    The settings' texts use Markdown's code spans, C{`--grace`}; in
    reStructuredText that is C{``--grace``}.  Emphasis (C{*word*}) is the
    same in both.  Anything else of Markdown (links) is refused, so that it
    cannot reach a page unrendered.
    """
    if "](" in text:
        raise ValueError(f"Markdown link in a setting's text: {text!r}")
    return _CODE.sub(r"``\1``", text)


def placeholder(setting: Setting) -> str:
    """
    What follows the flag in the reference: its metavar, or a word for the
    kind of value it takes (none for a flag).
    """
    if isinstance(setting.kind, Flag):
        return ""
    if setting.metavar:
        return setting.metavar
    what = getattr(setting.kind, "what", "")
    return "SECONDS" if "seconds" in what else "VALUE"


def signature(setting: Setting) -> str:
    """
    The option as Sphinx's C{option} directive takes it: C{-l ENDPOINT,
    --listen ENDPOINT}.
    """
    value = placeholder(setting)
    names = [f"--{setting.flag}"]
    if setting.short:
        names.insert(0, f"-{setting.short}")
    return ", ".join(f"{name} {value}".strip() for name in names)


def values(kind: Kind) -> str:
    """
    What values a setting takes, in words.
    """
    if isinstance(kind, Flag):
        return "a flag, off unless given"
    if isinstance(kind, Endpoints):
        return "an endpoint description; the option may be given more than once"
    if isinstance(kind, Choice):
        return " or ".join(f"``{choice}``" for choice in kind.choices)
    if isinstance(kind, WholeOrAuto):
        return f"{kind.what}, or ``auto``"
    if isinstance(kind, (Whole, Number)):
        doc = kind.coerceDoc
        return doc.strip("()") if doc else kind.what
    if isinstance(kind, Text):
        return kind.what
    raise TypeError(f"no words for {kind!r}")


def default(setting: Setting) -> str | None:
    """
    The default as the reference shows it, in the flag's unit; C{None} when
    the default is worked out from other settings or the machine (the
    setting's text says how).
    """
    if isinstance(setting.kind, Flag):
        return None
    value = setting.optionDefault
    if value is None:
        return None
    if isinstance(value, tuple):
        return ", ".join(f"``{each}``" for each in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"``{value}``"


def optionEntry(group: tuple[Setting, ...]) -> list[str]:
    """
    One entry of the options reference: the option (or options that share
    a text), the text, then for each option the values it takes, its
    default, the C{PreforkService} keyword and the process that reads it.
    """
    first = group[0]
    assert first.doc is not None
    lines = [f".. option:: {signature(first)}"]
    lines += [f"            {signature(other)}" for other in group[1:]]
    lines += ["", "   " + inlineMarkdownToReST(first.doc)]
    for each in group:
        facts = [
            ("Values", values(each.kind)),
            ("Default", default(each)),
            ("Keyword", f"``{each.name}``"),
            ("Read by", _readers(each)),
        ]
        line = " · ".join(f"*{name}:* {text}" for name, text in facts if text)
        if len(group) > 1:
            line = f"``--{each.flag}``: {line}"
        lines += ["", "   " + line]
    lines.append("")
    return lines


def _readers(setting: Setting) -> str:
    return {
        "master": "the master",
        "worker": "each worker",
        "both": "the master and each worker",
    }[setting.side.value]


def optionsReference() -> list[str]:
    """
    Every option of C{twistd preforked}, in the settings table's order.
    """
    lines = [f".. program:: {PROGRAM}", ""]
    for group in optionGroups():
        lines += optionEntry(group)
    return lines


def statusSchema() -> list[str]:
    """
    The annotated example of C{/status.json} that the scoreboard's module
    documents, as a literal block.
    """
    doc = scoreboard.__doc__ or ""
    _, marker, rest = doc.partition("keys are only ever added::\n")
    if not marker:
        raise ValueError("the scoreboard's docstring no longer shows its schema")
    block = textwrap.dedent(rest).strip("\n")
    return [".. code-block:: text", ""] + [
        "   " + line if line else "" for line in block.splitlines()
    ]


class _Snapshot:
    """
    A scoreboard that always shows one snapshot: enough for the metrics
    collector to name every family it exports.
    """

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> dict[str, Any]:
        return self._snapshot


def sampleSnapshot() -> dict[str, Any]:
    """
    A snapshot with every part the metrics read: one listener, every state,
    every cause.
    """
    return {
        "uptime": 1.0,
        "listeners": [{"description": "tcp:8080", "queue": 0, "backlog": 1024}],
        "pool": {
            **{state: 0 for state in scoreboard.STATES},
            "wanted": 1,
            "spawned": 1,
            "reloading": False,
            "saturated": False,
            "queued": 0,
        },
        "connections": {"accepted": 0, "served": 0, "open": 0},
        "restarts": {cause.value: 0 for cause in RestartCause},
        "closes": {cause.value: 0 for cause in CloseCause},
    }


def metricsReference() -> list[str]:
    """
    A table of the metrics C{/metrics} exports, made by running the
    collector on a sample snapshot and reading its exposition back.
    """
    from prometheus_client.parser import text_string_to_metric_families

    from preforktwist.master.status.metrics import exposition

    body, _ = exposition(_Snapshot(sampleSnapshot()))  # type: ignore[arg-type]
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 35 10 20 35",
        "",
        "   * - metric",
        "     - type",
        "     - labels",
        "     - meaning",
    ]
    for family in text_string_to_metric_families(body.decode()):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: dict[str, set[str]] = {}
        for sample in family.samples:
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
        described = "; ".join(
            f"``{label}``"
            + (
                f": {', '.join(f'``{c}``' for c in sorted(v))}"
                if label == "cause"
                else ""
            )
            for label, v in sorted(labels.items())
        )
        meaning = _literalFlags(family.documentation)
        lines += [
            f"   * - ``{name}``",
            f"     - {family.type}",
            f"     - {described or 'none'}",
            f"     - {meaning}",
        ]
    return lines


_EPYTEXT = re.compile(r"([CLI])\{([^{}]*)\}")


def epytextToReST(text: str) -> str:
    """
    The inline markup of a docstring's prose: C{C{code}} and C{L{link}} as
    literals, C{I{word}} as emphasis.
    """

    def convert(match: re.Match[str]) -> str:
        kind, body = match.groups()
        body = " ".join(body.split())
        return f"*{body}*" if kind == "I" else f"``{body}``"

    return _EPYTEXT.sub(convert, text)


def summary(cls: type) -> str:
    """
    The first paragraph of a class's docstring, on one line, in
    reStructuredText.
    """
    first = (cls.__doc__ or "").strip().split("\n\n", 1)[0]
    return epytextToReST(" ".join(first.split()))


def poolEventKinds() -> list[type[events.PoolEvent]]:
    """
    Every kind of event an observer may be told of, in the order the
    module declares them: the subclasses of C{PoolEvent} that have a name
    of their own (C{WorkerEvent} is only their common part).
    """
    kinds = [
        value
        for value in vars(events).values()
        if isinstance(value, type)
        and issubclass(value, events.PoolEvent)
        and value is not events.PoolEvent
        and "name" in vars(value)
    ]
    return kinds


def poolEventsReference() -> list[str]:
    """
    A table of the pool's events: class, name in records, when it is told,
    and its fields besides C{at}.
    """
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 25 45 30",
        "",
        "   * - event",
        "     - when",
        "     - fields besides ``at``",
    ]
    for kind in poolEventKinds():
        names = [f.name for f in dataclasses.fields(kind) if f.name != "at"]
        lines += [
            f"   * - :py:class:`~preforktwist.master.hooks.{kind.__name__}`"
            f" (``{kind.name}``)",
            f"     - {summary(kind)}",
            f"     - {', '.join(f'``{n}``' for n in names) or 'none'}",
        ]
    return lines


def _literalFlags(text: str) -> str:
    # "--control" as a literal, or reStructuredText makes its dashes one.
    return _FLAG.sub(r"``\1``", text)


def ctlCommands() -> list[str]:
    """
    The commands of C{preforktwist-ctl}, from its own options: each with
    its arguments, its flags and what it does.
    """
    from preforktwist import ctl

    lines = [".. program:: preforktwist-ctl", ""]
    for flag, short, _, text in ctl.Options.optParameters:
        lines += [f".. option:: -{short} PATH, --{flag} PATH", ""]
        lines += [f"   {_literalFlags(text or '')}", ""]
    for name, _, options, text in ctl.Options.subCommands:
        synopsis = getattr(options, "synopsis", None)
        lines += [f"``{name} {synopsis}``" if synopsis else f"``{name}``"]
        lines += [f"   {text}"]
        for flag, _, description in getattr(options, "optFlags", []):
            lines += ["", f"   ``--{flag}``: {_literalFlags(description)}"]
        lines.append("")
    return lines


def hasNewsFragments() -> bool:
    """
    Whether C{newsfragments/} holds anything for the coming release.
    """
    directory = REPO / "newsfragments"
    return any(p.is_file() and p.name != ".gitignore" for p in directory.iterdir())


def newsDraft(version: str) -> list[str]:
    """
    The coming release's changelog as towncrier would write it into
    C{NEWS.rst}, or nothing when there are no news fragments.
    """
    if not hasNewsFragments():
        return []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "towncrier",
            "build",
            "--draft",
            "--version",
            version,
            "--date",
            "unreleased",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    # The draft alone is on standard output; towncrier's chatter on error.
    draft = done.stdout.strip("\n")
    if f"{version} (unreleased)" not in draft.splitlines()[0]:
        raise ValueError(f"towncrier's draft is not as expected:\n{done.stdout}")
    return draft.splitlines()
