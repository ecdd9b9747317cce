"""Graded checks a notebook computes itself (a fact read from the lab, judged against what
the exercise asks), shown like the verify button's verdicts, netlab style.

`must_pass` turns failures into an error, so a notebook executed top to bottom (CI) fails
when a graded check does.
"""

from __future__ import annotations

from typing import Any

from labkit.errors import LabkitError
from labkit.verify.verdict import Verdict
from labkit.widgets.verify_button import verdict_html


class NotPassed(LabkitError):
    """A graded check of a notebook did not pass."""


def grade(name: str, ok: bool, detail: str, evidence: dict[str, Any] | None = None,
          show: bool = True) -> Verdict:
    """A pass/fail verdict on a fact; displayed in the notebook unless show=False."""
    verdict = Verdict(name, "pass" if ok else "fail", detail, evidence or {})
    if show:
        from IPython.display import HTML, display

        display(HTML(verdict_html(verdict)))
    return verdict


def must_pass(*verdicts: Verdict) -> None:
    """Raise NotPassed naming every verdict that did not pass."""
    bad = [v for v in verdicts if not v.passed]
    if not verdicts:
        raise NotPassed("no graded check ran.", hint="Run the exercise's cells first.")
    if bad:
        raise NotPassed("graded check failed: " + "; ".join(
            f"{v.name} ({v.outcome}: {v.detail})" for v in bad) + ".",
            hint="Read the evidence under each verdict, fix the lab, and run the check "
                 "again.")
