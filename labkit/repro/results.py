"""What a run found: each step's result, and per kernel the verdict the table shows.

The verdict rule in one place: a kernel *reproduces* when every `when: reproduced` check
held; the run is *as the scenario says* when no `always` check failed and the result is
the kernel's `expect` (a fixed kernel must also show every `when: not reproduced` check).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.repro.model import (
    ALWAYS,
    COULD_NOT_RUN,
    NOT_REPRODUCED,
    REPRODUCED,
    KernelPlan,
    Step,
)

OK, FAILED, TIMED_OUT, ERROR, SKIPPED = "ok", "failed", "timed out", "error", "skipped"


@dataclass
class StepResult:
    """One step on one kernel. held: for checks, whether the expectation held."""

    index: int
    kind: str
    name: str
    loc: str
    when: str
    is_check: bool
    outcome: str = SKIPPED  # ok | failed | timed out | error | skipped
    detail: str = ""
    started: float = 0.0  # seconds since the kernel's run began
    seconds: float = 0.0
    status: int | None = None
    stdout: str = ""
    stderr: str = ""
    files: list[str] = field(default_factory=list)  # bundle paths this step wrote

    @classmethod
    def of(cls, step: Step) -> StepResult:
        return cls(index=step.index, kind=step.kind, name=step.name, loc=str(step.loc),
                   when=step.when, is_check=step.is_check)

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.kind}{' ' + repr(self.name) if self.name else ''})"

    @property
    def held(self) -> bool:
        return self.outcome == OK

    def sentence(self) -> str:
        """The one line the table and verdict.json give for a step that went wrong."""
        return f"{self.label} at {self.loc}: {self.outcome}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("stdout")
        data.pop("stderr")
        return data


@dataclass
class KernelRun:
    """One kernel's run: its steps and the verdict."""

    plan: KernelPlan
    steps: list[StepResult] = field(default_factory=list)
    result: str = COULD_NOT_RUN
    as_expected: bool = False
    infrastructure: bool = False  # could not run for a reason outside the scenario
    first_failure: str = ""
    version: str = ""
    seconds: float = 0.0
    lab: str = ""
    bundle: str = ""  # its directory in the bundle
    rerun: dict[str, Any] = field(default_factory=dict)  # how to get this kernel again

    def to_json(self) -> dict[str, Any]:
        return {"kernel": self.plan.name, "label": self.plan.label,
                "options": list(self.plan.options), "expected": self.plan.expect,
                "result": self.result, "as_expected": self.as_expected,
                "infrastructure": self.infrastructure, "first_failure": self.first_failure,
                "version": self.version, "seconds": round(self.seconds, 2), "lab": self.lab,
                "bundle": self.bundle, "rerun": self.rerun,
                "steps": [s.to_json() for s in self.steps]}


def judge(run: KernelRun, broken: StepResult | None) -> None:
    """Fill in result, as_expected and first_failure from the steps.

    broken: the step that stopped the run (setup failed, an `always` check failed), if any.
    """
    expect = run.plan.expect
    checks = [s for s in run.steps if s.is_check and s.outcome != SKIPPED]
    shows = [s for s in run.steps if s.is_check and s.when == REPRODUCED]
    fixed = [s for s in run.steps if s.is_check and s.when == NOT_REPRODUCED]
    if broken is not None:
        run.result = COULD_NOT_RUN
        run.as_expected = False
        run.infrastructure = broken.outcome == ERROR  # the lab or its VM, not the scenario
        run.first_failure = broken.sentence()
        return
    always = next((s for s in checks if s.when == ALWAYS and not s.held), None)
    missed = next((s for s in shows if not s.held), None)
    run.result = REPRODUCED if shows and missed is None else NOT_REPRODUCED
    if always is not None:  # judged to the end, yet a precondition failed: say which
        run.as_expected, run.first_failure = False, always.sentence()
        return
    if expect is None:
        run.as_expected = True
        return
    if expect == REPRODUCED:
        run.as_expected = missed is None and bool(shows)
        run.first_failure = "" if run.as_expected else (
            missed.sentence() if missed else "the scenario has no `when: reproduced` check")
        return
    unfixed = next((s for s in fixed if not s.held), None)
    if run.result == REPRODUCED:
        run.as_expected = False
        run.first_failure = ("every `when: reproduced` check held (" + ", ".join(
            s.label for s in shows) + ")")
    elif unfixed is not None:  # neither the bug nor the fix: say what the fix lacked
        run.as_expected, run.first_failure = False, unfixed.sentence()
    else:
        run.as_expected = True


def exit_code(runs: list[KernelRun]) -> int:
    """0: as the scenario says on every kernel; 1: it behaved otherwise somewhere; 2: it
    could not run (and nothing behaved otherwise)."""
    if all(r.as_expected for r in runs):
        return 0
    if any(not r.as_expected and not r.infrastructure for r in runs):
        return 1
    return 2
