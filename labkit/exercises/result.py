"""A check's outcome in the learner's terms: what it saw, and what is still missing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from labkit.verify.verdict import Verdict

Outcome = Literal["pass", "fail", "error"]


@dataclass
class CheckResult:
    name: str
    outcome: Outcome
    saw: str
    missing: str = ""  # empty when passed
    evidence: dict[str, Any] = field(default_factory=dict)
    # error because the kernel lacks a capability, e.g. "kTLS KeyUpdate (debian-7.2)":
    # the lab must be rebuilt elsewhere; no action of the learner's changes it
    needs: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @property
    def detail(self) -> str:
        if self.outcome == "error":
            return f"could not check: {self.saw}"
        return f"saw: {self.saw}" + (f"; missing: {self.missing}" if self.missing else "")

    def verdict(self) -> Verdict:
        return Verdict(self.name, self.outcome, self.detail, self.evidence)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "detail": self.detail}


def judged(name: str, ok: bool, saw: str, missing: str,
           evidence: dict[str, Any] | None = None) -> CheckResult:
    """pass with what was seen, or fail with what is still missing."""
    return CheckResult(name, "pass" if ok else "fail", saw, "" if ok else missing,
                       evidence or {})


def unknown(name: str, why: str, evidence: dict[str, Any] | None = None,
            needs: str = "") -> CheckResult:
    return CheckResult(name, "error", why, "", evidence or {}, needs)
