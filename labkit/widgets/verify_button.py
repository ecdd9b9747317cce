"""The verify button: one verification (`lab.verify(kind, feature, ...)`) or the topology's
declared checks (`lab.checks()`), shown netlab style as pass / fail / could not run, each
with its evidence. Notebooks grade exercises with it: `passed` is what the grade reads.
"""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as w

from labkit.verify.verdict import Verdict
from labkit.widgets.base import Panel, esc
from labkit.widgets.session import LabSession

BADGE = {"pass": ("PASS", "lk-pass"), "fail": ("FAIL", "lk-fail"),
         "error": ("COULD NOT RUN", "lk-error")}


def verdict_html(v: Verdict) -> str:
    word, css = BADGE.get(v.outcome, (v.outcome.upper(), "lk-error"))
    evidence = (f"<details><summary>evidence</summary><pre>"
                f"{esc(json.dumps(v.evidence, indent=1, default=str))}</pre></details>"
                if v.evidence else "")
    return (f'<div class="lk-verdict"><span class="{css}">{word}</span> {esc(v.name)}: '
            f"{esc(v.detail)}{evidence}</div>")


class VerifyButton(Panel):
    """A button that runs a verification (kind given) or every declared check (none)."""

    classes = ("lk-verify",)

    def __init__(self, session: LabSession, kind: str | None = None,
                 feature: str | None = None, label: str | None = None,
                 **options: Any) -> None:
        self.session = session
        self.kind, self.feature, self.options = kind, feature, options
        self.verdicts: list[Verdict] = []
        text = label or (f"Verify {kind}" if kind else "Run the lab's checks")
        self.button = w.Button(description=text, icon="check", button_style="info",
                               layout=w.Layout(width="auto"))
        self.result = w.HTML()
        self.result.add_class("lk-verdicts")
        super().__init__(text)
        self.button.on_click(self.clicked(self.run))

    def body(self) -> list[w.Widget]:
        return [self.button, self.result]

    def run(self) -> VerifyButton:
        """Run it in a thread; wait() then read `passed` and `verdicts`."""

        def job() -> list[Verdict]:
            lab = self.session.require("a verification")
            if self.kind is None:
                return lab.checks()
            return [lab.verify(self.kind, self.feature, **self.options)]

        def done(verdicts: list[Verdict]) -> None:
            self.verdicts = verdicts
            self.result.value = "".join(verdict_html(v) for v in verdicts) or \
                '<p class="lk-muted">this lab declares no checks.</p>'
            self.say(self.outcome_text(), "lk-pass" if self.passed else "lk-fail")

        self.verdicts = []
        self.result.value = ""
        self.start(self.button.description, job, done)
        return self

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)

    def outcome(self, name: str) -> str | None:
        """The outcome of the named check (pass, fail, error), or None if it did not run."""
        return next((v.outcome for v in self.verdicts if v.name == name), None)

    def outcome_text(self) -> str:
        counts = {k: sum(v.outcome == k for v in self.verdicts) for k in BADGE}
        return (f"{counts['pass']} passed, {counts['fail']} failed"
                + (f", {counts['error']} could not run" if counts["error"] else ""))
