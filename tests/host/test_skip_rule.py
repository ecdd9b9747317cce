"""The suite's skip rule itself (tests/conftest.py, tests/skips.py): under CI only the skips
by design of tests/skips.py's list stay skips; any other skip, in a test or at collection,
is a failure naming its reason. Outside CI they all stay skips (a developer's machine may
lack a tool). Shown on a throw-away test file run by a real pytest with the suite's rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import skips
from tests.conftest import ROOT

CASES = '''
import pytest
from tests import skips

def test_free_text_skip():
    pytest.skip("ethtool(8) is not here")

def test_tool_missing_marker():
    pass
test_tool_missing_marker = pytest.mark.skipif(True, reason="vagrant is missing")(
    test_tool_missing_marker)

def test_listed_skip():
    skips.skip("opt-in", "a long variant: set LABKIT_SOMETHING=1")

@pytest.mark.skipif(True, reason=skips.reason("host-kernel", "this host has it"))
def test_listed_marker():
    pass

def test_forged_prefix():
    pytest.skip("by design (whatever-i-like): not in the list")

def test_passes():
    pass
'''
COLLECTION = '''
import pytest
pytest.importorskip("no_such_module_anywhere", reason="no_such_module is not installed")

def test_never_collected():
    pass
'''


def run_rules(tmp_path: Path, body: str, ci: bool) -> tuple[dict[str, str], int]:
    """({test id: outcome}, exit code) of a pytest run of `body` with tests/conftest.py's
    hooks; a skip's id is its reason line."""
    (tmp_path / "test_cases.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "LABKIT_REQUIRE_ROOT")}
    if ci:
        env["CI"] = "true"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-rA", "-q", "--rootdir", str(tmp_path), "-c", os.devnull,
         str(tmp_path / "test_cases.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    outcomes: dict[str, str] = {}
    for line in out.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED", "ERROR") and rest:
            name = rest.split(" ")[0].split("::")[-1]
            if word == "SKIPPED":  # "SKIPPED [1] path:line: reason"
                name = rest
            outcomes[name] = word
    assert outcomes, out.stdout + out.stderr
    return outcomes, out.returncode


def test_outside_ci_every_skip_stays_a_skip(tmp_path: Path) -> None:
    got, code = run_rules(tmp_path, CASES, ci=False)
    assert sorted(got.values()) == ["PASSED"] + ["SKIPPED"] * 5, got
    assert code == 0


def test_under_ci_only_listed_skips_stay_skips(tmp_path: Path) -> None:
    got, code = run_rules(tmp_path, CASES, ci=True)
    skipped = [k for k, v in got.items() if v == "SKIPPED"]
    assert {k: v for k, v in got.items() if v != "SKIPPED"} == {
        "test_free_text_skip": "FAILED",
        "test_tool_missing_marker": "ERROR",  # a skipif marker skips in the setup phase
        "test_forged_prefix": "FAILED",
        "test_passes": "PASSED"}, got
    assert len(skipped) == 2, got
    assert any("by design (opt-in)" in k for k in skipped), got
    assert any("by design (host-kernel)" in k for k in skipped), got
    assert code == 1


def test_under_ci_a_collection_skip_fails_too(tmp_path: Path) -> None:
    got, code = run_rules(tmp_path, COLLECTION, ci=False)
    assert list(got.values()) == ["SKIPPED"] and code == 5, got  # 5: nothing collected
    got, code = run_rules(tmp_path, COLLECTION, ci=True)
    assert list(got.values()) == ["ERROR"] and code == 2, got  # 2: collection errors


def test_an_unknown_rule_is_refused_where_it_is_written() -> None:
    with pytest.raises(ValueError, match="not a by-design skip in tests/skips.py"):
        skips.reason("because-i-said-so", "x")
    assert skips.by_design(skips.reason("opt-in", "x"))
    assert not skips.by_design("by design (because-i-said-so): x")
    assert not skips.by_design("Skipped: ethtool is not installed")
