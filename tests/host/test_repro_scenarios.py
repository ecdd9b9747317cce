"""Scenario files are validated like topologies: every problem at once, FILE:LINE:COL, a fix,
did-you-mean for unknown keys, exit 2 and no traceback; every shipped scenario is valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labkit.repro import loader
from tests.conftest import ROOT, run_cli

SHIPPED = sorted((ROOT / "repro").glob("*.yaml"))
FIXTURE = ROOT / "tests/fixtures/repro/host-udp.yaml"

BAD = """\
scenario: bad one
title: broken on purpose
source: {subject: "no commit, url or report"}
topology:
  nodes:
    a: {}
    b: {}
  links:
    - endpoints: [a:eth1, b:eth1]
kernals: [debian-6.12]
kernels:
  debian-6.12: {expect: reprodcued}
  debian-9.9: {}
steps:
  - up
  - exce: {node: a, cmd: "true"}
  - exec: {node: c, cmd: "{python} {ipv4:z}"}
  - expect: {output: {step: nothere, match: x}}
  - wait_for: {node: a, cmd: "true", until: {stdout: '(unclosed'}}
"""


def problems_of(text: str, tmp_path: Path) -> tuple[str, list[str]]:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(loader.ScenarioError) as exc:
        loader.load(str(path))
    return str(path), [p.render() for p in exc.value.problems]


def test_every_problem_is_reported_at_once_with_its_position(tmp_path: Path) -> None:
    path, found = problems_of(BAD, tmp_path)
    text = "\n".join(found)
    expected = {
        "scenario name": (1, "bad one"),
        "no source": (3, "neither an upstream commit"),
        "unknown key": (10, "kernals"),
        "bad expect": (12, "reprodcued"),
        "unknown kernel": (13, "unknown kernel 'debian-9.9'"),
        "unknown step kind": (16, "unknown kind 'exce'"),
        "unknown node": (17, "node 'c'"),
        "placeholder": (17, "{ipv4:z}"),
        "unknown step ref": (18, "'nothere'"),
        "bad regex": (19, "not a valid regular expression"),
    }
    for what, (line, words) in expected.items():
        hits = [p for p in found if words in p and p.startswith(f"{path}:{line}:")]
        assert hits, f"{what}: nothing at line {line} mentions {words!r}:\n{text}"
    assert re.search(r"Did you mean .?kernels", text), text  # did-you-mean
    assert re.search(r"Did you mean .?exec", text), text
    assert "reproduced" in next(p for p in found if "reprodcued" in p)  # the fix is named


def test_the_cli_says_it_in_paragraphs_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    done = run_cli("repro", "validate", str(path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{path}:10:1" in done.stderr
    run = run_cli("repro", "run", str(path))  # run validates first, touches nothing
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"{path}:16:5" in run.stderr


def test_a_claim_needs_a_check_that_shows_it(tmp_path: Path) -> None:
    text = FIXTURE.read_text().replace("when: reproduced", "when: always")
    _, found = problems_of(text, tmp_path)
    assert any("no check says what reproducing looks like" in p for p in found), found


def test_up_comes_first_and_a_missing_file_is_named(tmp_path: Path) -> None:
    text = FIXTURE.read_text().replace("  - up\n", "", 1)
    _, found = problems_of(text, tmp_path)
    assert any("no `up` step" in p for p in found), found
    with pytest.raises(loader.ScenarioError) as exc:
        loader.load(str(tmp_path / "nothere.yaml"))
    assert "no such scenario file" in exc.value.render()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_are_valid_and_name_their_source(path: Path) -> None:
    s = loader.load(str(path))
    assert s.source.describe()
    assert {k.name for k in s.kernels} >= {"debian-6.1", "debian-6.12"}
    assert {k.expect for k in s.kernels} == {"reproduced", "not reproduced"}
    for step in s.steps:  # the scripts a scenario runs ship in the repo
        for word in getattr(getattr(step, "command", None), "words", lambda: [])():
            for script in re.findall(r"\{dir\}/(\S+\.py)", word):
                assert (path.parent / script).is_file(), script


def test_shipped_scenarios_cover_tipc_ktls_and_sockmap() -> None:
    names = " ".join(p.stem for p in SHIPPED)
    for topic in ("tipc", "ktls", "sockmap"):
        assert topic in names, names


def test_a_display_filter_tshark_rejects_is_located(tmp_path: Path) -> None:
    import shutil

    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (scripts/setup.sh installs it)")
    text = FIXTURE.read_text().replace("filter: 'icmp.type == 3 && icmp.code == 3'",
                                       "filter: 'icmp.type in {3 4}'")
    path, found = problems_of(text, tmp_path)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "{3 4}" in ln)
    assert any(p.startswith(f"{path}:{line}:") and "tshark" in p for p in found), found


CRAFTED = """\
scenario: crafted-options
title: options reach a crafted frame only as its feature declares them
source: {report: labkit's own test}
topology:
  tipc: {net_id: 4711}
  nodes: {a: {}, b: {}}
  links: [{endpoints: [a:eth1, b:eth1]}]
kernels: [debian-6.12]
steps:
  - up
  - inject: {node: a, iface: eth1, frame: tipc:ghost_discovery, options: {net_id: 4712}}
  - inject: {node: a, iface: eth1, frame: tipc:ghost_discovery, options: {netid: 4712}}
  - inject: {node: a, iface: eth1, frame: tipc:ghost_discovery, options: {net_id: 10000}}
  - inject: {node: a, iface: eth1, pcap: nothere.pcap, options: {net_id: 1}}
"""


def test_inject_options_are_the_features_own(tmp_path: Path) -> None:
    """`options:` are checked against the feature's craft_options (TIPC: net_id 1..9999,
    the kernel's range); the valid step keeps its value (the control)."""
    path, found = problems_of(CRAFTED, tmp_path)
    text = "\n".join(found)
    assert any(p.startswith(f"{path}:12:") and "take no option 'netid'" in p
               and "net_id" in p for p in found), text
    assert any(p.startswith(f"{path}:13:") and "10000" in p for p in found), text
    assert any(p.startswith(f"{path}:14:") and "not to a replayed pcap" in p
               for p in found), text
    assert not any(f"{path}:11:" in p for p in found), text  # the valid one is not blamed
    good = tmp_path / "good.yaml"
    good.write_text("\n".join(CRAFTED.splitlines()[:11]) + "\n")
    step = loader.load(str(good)).steps[1]
    assert step.options == {"net_id": 4712}
