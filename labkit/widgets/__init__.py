"""Notebook widgets over the lab API (ipywidgets): lab, traffic, counters, capture and
verify panels sharing one LabSession.

    from labkit.widgets import LabSession, LabPanel
    session = LabSession("topologies/routed.yaml", name="routed")
    LabPanel(session)

Imported lazily, so that labkit.widgets.readings (called inside a lab's VM) never pulls
in ipywidgets or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LabSession": "session", "lab_name": "session", "find_topology": "session",
    "cleanup": "session",
    "LabPanel": "lab_panel", "TrafficPanel": "traffic_panel",
    "CountersPanel": "counters_panel", "CaptureViewer": "capture_viewer",
    "VerifyButton": "verify_button", "grade": "grading", "must_pass": "grading",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'labkit.widgets' has no attribute '{name}'")
    return getattr(importlib.import_module(f"labkit.widgets.{module}"), name)
