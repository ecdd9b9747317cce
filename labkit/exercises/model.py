"""What an exercises file holds, after validation: exercises, their checks, hints and
reference solutions. Every object keeps its Loc so a failing check can name its line."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import Loc


@dataclass
class CheckSpec:
    """One declared check: a kind (`type:`) and its validated parameters."""

    kind: str
    name: str
    params: dict[str, Any]
    loc: Loc

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, **self.params}


@dataclass
class Step:
    """One step of a reference solution: a command in a node, or a file written there."""

    node: str
    loc: Loc
    run: list[str] | None = None  # argv
    shell: str | None = None  # a line for `sh -c`
    file: str | None = None
    content: str | None = None

    @property
    def text(self) -> str:
        """What a learner would type for this step."""
        if self.run is not None:
            return f"labkit exec LAB {self.node} -- {shlex.join(self.run)}"
        if self.shell is not None:
            return f"labkit exec LAB {self.node} -- sh -c {shlex.quote(self.shell)}"
        return f"write {self.file} in {self.node}:\n{self.content}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "text": self.text}
        for key in ("run", "shell", "file", "content"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class Solution:
    explain: str = ""
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"explain": self.explain, "steps": [s.as_dict() for s in self.steps]}


@dataclass
class Exercise:
    id: str
    title: str
    task: str
    checks: list[CheckSpec]
    loc: Loc
    hints: list[str] = field(default_factory=list)
    solution: Solution | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "task": self.task,
                "checks": [c.as_dict() for c in self.checks], "hints": len(self.hints),
                "has_solution": self.solution is not None}


@dataclass
class ExerciseSet:
    """The exercises of one file, in file order."""

    path: str
    items: list[Exercise] = field(default_factory=list)
    topology: str | None = None  # the topology the file names (absolute), if any

    def ids(self) -> list[str]:
        return [e.id for e in self.items]
