"""The trainer's view: one row per learner and exercise, for JSON or CSV."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from labkit.exercises.model import Exercise

COLUMNS = ["lab", "learner", "exercise", "title", "started", "checks", "last_outcome",
           "passed_at", "hints", "hints_total", "solution_shown", "solved"]


def _when(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


def rows(lab: str, data: dict[str, Any], items: list[Exercise]) -> list[dict[str, Any]]:
    """Every learner's record of every exercise of the file (in file order), times in UTC
    ISO 8601; exercises a learner never opened are left out."""
    titles = {e.id: e for e in items}
    out = []
    for learner in sorted(data.get("learners", {})):
        recs = data["learners"][learner]
        for ex_id in [e.id for e in items] + sorted(set(recs) - set(titles)):
            rec = recs.get(ex_id)
            if rec is None:
                continue
            ex = titles.get(ex_id)
            out.append({
                "lab": lab, "learner": learner, "exercise": ex_id,
                "title": ex.title if ex else "", "started": _when(rec.get("started")),
                "checks": rec.get("checks", 0), "last_outcome": rec.get("last_outcome"),
                "passed_at": _when(rec.get("passed_at")), "hints": rec.get("hints", 0),
                "hints_total": len(ex.hints) if ex else 0,
                "solution_shown": _when(rec.get("solution_shown")),
                "solved": _when(rec.get("solved")),
            })
    return out


def to_csv(report: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    return buf.getvalue()
