"""The phase trace a command writes (labkit.base.trace): phases in time order, seconds since
the command started, saved as JSON; LABKIT_TRACE=1 prints each as it happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import time
from labkit.base import trace
trace.mark("second", at=time.time() + 1, vm="v")
trace.mark("first")
trace.save({path!r})
"""


def run(path: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(path=path)], env=env,
                          capture_output=True, text=True, timeout=60, check=True)


def test_trace_file_has_phases_in_order(tmp_path) -> None:
    path = str(tmp_path / "lab.trace.json")
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_TRACE"}
    res = run(path, env)
    data = json.loads(open(path).read())
    assert [p["phase"] for p in data["phases"]] == ["first", "second"]
    first, second = data["phases"]
    assert 0 <= first["t"] < second["t"] and second["vm"] == "v"
    assert res.stderr == ""  # printed only when asked


def test_labkit_trace_prints_each_phase(tmp_path) -> None:
    env = dict(os.environ, LABKIT_TRACE="1")
    res = run(str(tmp_path / "t.json"), env)
    assert "trace:" in res.stderr and "second" in res.stderr and "vm=v" in res.stderr


def test_nothing_marked_writes_nothing(tmp_path) -> None:
    path = tmp_path / "none.json"
    code = f"from labkit.base import trace; trace.save({str(path)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not path.exists()
