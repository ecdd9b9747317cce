"""The exercises of a running lab, for the CLI and the notebook widgets.

    ex = Exercises.for_lab("routed")       # or a Lab; the topology names the file
    ex.status(); ex.check("stop-forwarding"); ex.hint("stop-forwarding"); ex.solve(...)

Every action is recorded in the lab's progress (labkit.exercises.progress) under the
learner's name, so a notebook reload, a kernel restart or another terminal sees it.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from labkit.errors import LabkitError, UsageError
from labkit.exercises import checks, loader, progress
from labkit.exercises.kinds import BASELINED
from labkit.exercises.model import Exercise, ExerciseSet, Solution, Step
from labkit.exercises.result import CheckResult
from labkit.topology.fields import suggest
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


@dataclass
class Result:
    """One exercise checked: pass only when every one of its checks passed."""

    id: str
    title: str
    outcome: str  # pass | fail | error
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @property
    def needs(self) -> str:
        """What the lab's kernel lacks for this exercise ("" if nothing): no action of the
        learner's makes it pass there; the lab must be rebuilt on another kernel."""
        return next((c.needs for c in self.checks if c.needs), "")

    @property
    def summary(self) -> str:
        word = {"pass": "done", "fail": "not yet", "error": "could not check"}[self.outcome]
        if self.needs:
            return f"{self.id}: {word}: needs {self.needs}"
        todo = [c.missing for c in self.checks if c.outcome == "fail"]
        return f"{self.id}: {word}" + (f" (missing: {'; '.join(todo)})" if todo else "")

    def verdicts(self) -> list[Verdict]:
        return [c.verdict() for c in self.checks]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "outcome": self.outcome,
                "summary": self.summary, "needs": self.needs,
                "checks": [c.as_dict() for c in self.checks]}


@dataclass
class Status:
    id: str
    title: str
    started: float | None
    checks: int
    passed_at: float | None
    hints: int
    hints_total: int
    solution_shown: bool
    solved: bool
    last_outcome: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hint:
    index: int  # 1-based
    total: int
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Solved:
    id: str
    ok: bool
    steps: list[dict[str, Any]] = field(default_factory=list)  # node, text, rc, output

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcome_of(results: list[CheckResult]) -> str:
    if any(r.outcome == "error" for r in results):
        return "error"
    return "pass" if results and all(r.passed for r in results) else "fail"


class Exercises:
    """A running lab's exercises, and one learner's progress through them."""

    def __init__(self, lab: Lab, exercises: ExerciseSet, learner: str | None = None) -> None:
        self.lab = lab
        self.set = exercises
        self.file = exercises.path
        self.items = exercises.items
        self.learner = progress.learner_name(learner)

    @classmethod
    def for_lab(cls, lab: Lab | str, learner: str | None = None,
                path: str | None = None) -> Exercises:
        """The exercises of a lab that is up (a Lab, or its name); path overrides the
        file its topology names."""
        if isinstance(lab, str):
            from labkit.lab.lab import Lab as LabClass

            lab = LabClass.attach(lab)
        path = path or lab.topo.exercises
        if not path:
            raise UsageError(f"lab '{lab.name}' has no exercises: its topology "
                             f"({lab.topo.path}) names no exercises file.",
                             hint="Add `exercises: PATH` to the topology, or give --file.")
        return cls(lab, loader.load(path, list(lab.topo.nodes)), learner)

    # -- lookups -------------------------------------------------------------------------
    def get(self, ex_id: str) -> Exercise:
        for ex in self.items:
            if ex.id == ex_id:
                return ex
        ids = self.set.ids()
        raise UsageError(f"lab '{self.lab.name}' has no exercise '{ex_id}'.",
                         hint=f"{suggest(ex_id, ids)} Its exercises: {', '.join(ids)}."
                         .strip())

    def _instance(self) -> float | None:
        from labkit.lab import state

        try:
            st = state.load(self.lab.name)
        except LabkitError:
            return None
        return st.created if st else None

    # -- progress ------------------------------------------------------------------------
    def start(self, ex_id: str) -> None:
        """Record the start, and read what the exercise's checks compare against later
        (counters, keys in use), once per lab instance."""
        ex = self.get(ex_id)
        instance = self._instance()
        data = progress.read(self.lab.name)
        have = progress.baselines(data, instance).get(ex.id) or {}
        # read outside the lock (a capture takes seconds); a value that could not be
        # read (None) is tried again next time
        fresh = {str(i): checks.baseline(self.lab, c) for i, c in enumerate(ex.checks)
                 if c.kind in BASELINED and have.get(str(i)) is None}
        with progress.updating(self.lab.name) as data:
            rec = progress.entry(data, self.learner, ex.id)
            rec["started"] = rec["started"] or progress.now()
            values = progress.baselines(data, instance).setdefault(ex.id, {})
            for key, value in fresh.items():
                if values.get(key) is None:
                    values[key] = value

    def status(self) -> list[Status]:
        for ex in self.items:
            self.start(ex.id)
        data = progress.read(self.lab.name)
        out = []
        for ex in self.items:
            rec = progress.entry(data, self.learner, ex.id)
            out.append(Status(ex.id, ex.title, rec["started"], rec["checks"],
                              rec["passed_at"], rec["hints"], len(ex.hints),
                              rec["solution_shown"] is not None, rec["solved"] is not None,
                              rec["last_outcome"]))
        return out

    # -- actions -------------------------------------------------------------------------
    def check(self, ex_id: str) -> Result:
        ex = self.get(ex_id)
        self.start(ex.id)
        data = progress.read(self.lab.name)
        base = progress.baselines(data, self._instance()).get(ex.id) or {}
        results: list[CheckResult] = []
        for i, spec in enumerate(ex.checks):
            results.append(checks.run(self.lab, spec, base.get(str(i))))
            if results[-1].needs:  # the kernel cannot do it: one reason, not one per check
                break
        result = Result(ex.id, ex.title, outcome_of(results), results)
        with progress.updating(self.lab.name) as data:
            rec = progress.entry(data, self.learner, ex.id)
            rec["checks"] += 1
            rec["last_check"] = progress.now()
            rec["last_outcome"] = result.outcome
            if result.passed and rec["passed_at"] is None:
                rec["passed_at"] = rec["last_check"]
        return result

    def check_all(self) -> list[Result]:
        return [self.check(ex.id) for ex in self.items]

    def hints_taken(self, ex_id: str) -> list[str]:
        ex = self.get(ex_id)
        rec = progress.entry(progress.read(self.lab.name), self.learner, ex.id)
        return ex.hints[:rec["hints"]]

    def hint(self, ex_id: str) -> Hint | None:
        """The next hint (None once all were given); recorded."""
        ex = self.get(ex_id)
        with progress.updating(self.lab.name) as data:
            rec = progress.entry(data, self.learner, ex.id)
            if rec["hints"] >= len(ex.hints):
                return None
            rec["hints"] += 1
            return Hint(rec["hints"], len(ex.hints), ex.hints[rec["hints"] - 1])

    def solution(self, ex_id: str) -> Solution:
        ex = self.get(ex_id)
        if ex.solution is None:
            raise UsageError(f"exercise '{ex.id}' has no reference solution.",
                             hint=f"Add `solution:` to it in {self.file}.")
        with progress.updating(self.lab.name) as data:
            rec = progress.entry(data, self.learner, ex.id)
            rec["solution_shown"] = rec["solution_shown"] or progress.now()
        return ex.solution

    def solve(self, ex_id: str) -> Solved:
        """Apply the reference solution in the nodes (for instructors and tests)."""
        solution = self.solution(ex_id)
        self.start(ex_id)  # baselines first: the solution must count as the learner's act
        out = Solved(ex_id, True)
        for step in solution.steps:
            rc, text = apply_step(self.lab, step)
            out.steps.append({"node": step.node, "text": step.text.replace("LAB", self.lab.name),
                              "rc": rc, "output": text})
            if rc != 0:
                out.ok = False
                break
        with progress.updating(self.lab.name) as data:
            progress.entry(data, self.learner, ex_id)["solved"] = progress.now()
        return out

    def report(self) -> list[dict[str, Any]]:
        from labkit.exercises.report import rows

        return rows(self.lab.name, progress.read(self.lab.name), self.items)


def with_labkit_path(argv: list[str]) -> list[str]:
    """argv run with labkit's own bin directory (its venv) first on PATH, so `python3`
    imports labkit and `labkit` runs in a node, as exercises tell learners to type
    (`python3 -m labkit.exercises.keyupdate`); a VM's guest sees the same install."""
    return ["sh", "-c", 'PATH="$0:$PATH" exec "$@"', os.path.dirname(sys.executable), *argv]


def apply_step(lab: Lab, step: Step) -> tuple[int, str]:
    """Run one solution step in its node: (exit status, output)."""
    node = lab.node(step.node)
    if step.file is not None:
        res = node.run(["sh", "-c", 'cat > "$1"', "sh", step.file], input=step.content or "")
    else:
        argv = step.run if step.run is not None else ["sh", "-c", step.shell or ""]
        res = node.run(with_labkit_path(argv), timeout=120)
    text = ((res.stdout or "") + (res.stderr or "")).strip()
    if res.returncode != 0 and not text:
        text = f"`{shlex.join(res.args) if isinstance(res.args, list) else res.args}` " \
               f"exited {res.returncode}"
    return res.returncode, text
