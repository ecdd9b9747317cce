"""The outcome of a verification: pass, fail, or could not run, with the evidence.

Exit codes follow netlab: 0 all passed, 1 something failed, 2 nothing could be checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["pass", "fail", "error"]


@dataclass
class Verdict:
    name: str
    outcome: Outcome
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(verdicts: list[Verdict]) -> int:
    if not verdicts or all(v.outcome == "error" for v in verdicts):
        return 2
    return 0 if all(v.passed for v in verdicts) else 1
