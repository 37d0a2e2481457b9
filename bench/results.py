"""
Everything one run measured, as written to and read from its
C{results.json}: what C{--report-only} rewrites RESULTS.md from.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

Records = list[dict[str, Any]]


@dataclass
class Results:
    """
    One run's options, machine and measurements, case by case.
    """

    args: argparse.Namespace
    info: dict[str, str]
    runs: Records = field(default_factory=list)
    timelines: Records = field(default_factory=list)
    bursts: Records = field(default_factory=list)
    replacements: Records = field(default_factory=list)
    masters: Records = field(default_factory=list)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(
                {
                    "info": self.info,
                    "args": vars(self.args),
                    "runs": self.runs,
                    "timelines": self.timelines,
                    "bursts": self.bursts,
                    "replacements": self.replacements,
                    "masters": self.masters,
                },
                f,
                indent=1,
            )

    @classmethod
    def load(cls, path: str) -> Results:
        """
        A finished run's results; the cases an older run lacks are empty.
        """
        with open(path) as f:
            data = json.load(f)
        return cls(
            args=argparse.Namespace(**data["args"]),
            info=data["info"],
            runs=data["runs"],
            timelines=data["timelines"],
            bursts=data.get("bursts") or [],
            replacements=data.get("replacements") or [],
            masters=data.get("masters") or [],
        )
