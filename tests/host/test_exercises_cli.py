"""`labkit exercise` on lab 01's exercises (routed, on this machine's kernel): each check
fails on the fresh lab, a wrong answer is explained, `solve` makes it pass; hints, report,
exit codes and --json. One lab serves the module; it goes down at the end, pass or fail.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.exercises.api import Exercises
from tests.conftest import ROOT, require_root, run_cli, unique

pytestmark = pytest.mark.needs_root
EXERCISES = ROOT / "labs" / "exercises" / "01-first-lab.yaml"


def copy_topology(source: Path, dest_dir: Path, name: str) -> Path:
    """A renamed copy of a shipped topology whose `exercises:` still finds the shipped file."""
    text = re.sub(r"^name:.*$", f"name: {name}", source.read_text(), count=1, flags=re.M)
    text = re.sub(r"^exercises: *(\S+)",
                  lambda m: f"exercises: {(source.parent / m.group(1)).resolve()}", text,
                  count=1, flags=re.M)
    path = dest_dir / f"{name}.yaml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def lab_with_exercises(factory: pytest.TempPathFactory, topology: str,
                       learner: str = "tester") -> Iterator[Exercises]:
    """A renamed copy of a shipped topology up (here or in its VM), its exercises opened
    with progress in a fresh directory; down at the end, pass or fail."""
    require_root()
    from labkit.lab.lab import Lab

    os.environ["LABKIT_PROGRESS_DIR"] = str(factory.mktemp("progress"))
    name = unique("ex")
    path = copy_topology(ROOT / "topologies" / topology, factory.mktemp("topo"), name)
    lab = Lab.load(str(path)).up()
    try:
        yield Exercises.for_lab(name, learner=learner)
    finally:
        lab.down()
        os.environ.pop("LABKIT_PROGRESS_DIR", None)


@pytest.fixture(scope="module")
def progress_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("progress")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, progress_dir: Path) -> Iterator[str]:
    require_root()
    from labkit.lab.lab import Lab

    name = unique("ex")
    path = copy_topology(ROOT / "topologies" / "routed.yaml",
                         tmp_path_factory.mktemp("topo"), name)
    up = Lab.load(str(path)).up()
    try:
        yield name
    finally:
        up.down()


@pytest.fixture
def env(progress_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("LABKIT_PROGRESS_DIR", str(progress_dir))
    monkeypatch.setenv("LABKIT_LEARNER", "ana")
    return {**os.environ, "LABKIT_PROGRESS_DIR": str(progress_dir), "LABKIT_LEARNER": "ana"}


def exercise(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = run_cli("exercise", *args, env=env, timeout=300)
    return done.returncode, done.stdout, done.stderr


def checked(env: dict[str, str], lab: str, ex_id: str) -> tuple[int, dict]:
    code, out, err = exercise(env, "check", lab, ex_id, "--json")
    assert out, err
    doc = json.loads(out)
    assert doc["exit_code"] == code
    return code, doc["results"][0]


def by_name(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def test_list_shows_the_tasks_and_starts_them(lab: str, env: dict[str, str]) -> None:
    code, out, err = exercise(env, "list", lab, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["learner"] == "ana" and doc["file"] == str(EXERCISES)
    ids = [e["id"] for e in doc["exercises"]]
    assert ids == ["loopback-service", "count-packets", "stop-forwarding"]
    assert all(e["started"] and e["passed_at"] is None for e in doc["exercises"])
    code, out, _ = exercise(env, "list", lab)
    assert code == 0 and "Publish a service address behind h3a" in out


def test_loopback_service_wrong_answer_then_solution(lab: str, env: dict[str, str]) -> None:
    code, result = checked(env, lab, "loopback-service")
    assert code == 1 and result["outcome"] == "fail"
    assert all(c["outcome"] == "fail" for c in result["checks"]), result
    # half an answer: the address, but no route on r
    run_cli("exec", lab, "h3a", "--", "ip", "addr", "add", "192.0.2.10/32", "dev", "lo",
            env=env).check_returncode()
    code, result = checked(env, lab, "loopback-service")
    checks = by_name(result)
    assert code == 1
    assert checks["192.0.2.10/32 on h3a:lo"]["outcome"] == "pass"
    route = checks["route 192.0.2.10/32 via 198.18.3.2 in r"]
    assert route["outcome"] == "fail"
    assert route["missing"] == "route 192.0.2.10/32 via 198.18.3.2 in r"
    assert "no route to 192.0.2.10/32" in route["saw"]
    assert "0 packets received" in checks["h1a pings 192.0.2.10"]["saw"]
    code, out, err = exercise(env, "solve", lab, "loopback-service")
    assert code == 0, out + err
    code, result = checked(env, lab, "loopback-service")
    assert code == 0 and result["outcome"] == "pass", result


def test_count_packets_needs_the_counter_to_grow(lab: str, env: dict[str, str]) -> None:
    code, result = checked(env, lab, "count-packets")
    assert code == 1 and "since the exercise started" in result["checks"][0]["saw"]
    assert re.search(r"\d+ more \(it must grow by 500\)", result["checks"][0]["missing"])
    assert exercise(env, "solve", lab, "count-packets")[0] == 0
    code, result = checked(env, lab, "count-packets")
    assert code == 0, result


def test_stop_forwarding_with_its_positive_control(lab: str, env: dict[str, str]) -> None:
    code, result = checked(env, lab, "stop-forwarding")
    checks = by_name(result)
    assert code == 1
    assert checks["net.ipv6.conf.all.forwarding = 0 in r"]["saw"] == \
        "r: net.ipv6.conf.all.forwarding = 1"
    assert checks["h1a can no longer reach h3b over IPv6"]["outcome"] == "fail"
    assert checks["h1a still reaches h1b on lan1 over IPv6"]["outcome"] == "pass"
    assert exercise(env, "solve", lab, "stop-forwarding")[0] == 0
    code, result = checked(env, lab, "stop-forwarding")
    assert code == 0, result
    assert "unreachable as expected" in \
        by_name(result)["h1a can no longer reach h3b over IPv6"]["saw"]


def test_check_all_exit_code_and_text(lab: str, env: dict[str, str]) -> None:
    code, out, err = exercise(env, "check", lab)
    assert code == 0, out + err
    assert out.count("PASS") >= 3 + 7 and "NOT YET" not in out


def test_hints_one_at_a_time_then_none(lab: str, env: dict[str, str]) -> None:
    seen = [exercise(env, "hint", lab, "stop-forwarding") for _ in range(3)]
    assert [s[0] for s in seen] == [0, 0, 1]
    assert seen[0][1].startswith("hint 1/2: IPv6 forwarding is the sysctl")
    assert seen[1][1].startswith("hint 2/2:")
    assert "no more hints" in seen[2][1]


def test_report_csv_and_json(lab: str, env: dict[str, str]) -> None:
    code, out, err = exercise(env, "report", lab, "--format", "csv")
    assert code == 0, err
    rows = {r["exercise"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"loopback-service", "count-packets", "stop-forwarding"}
    fwd = rows["stop-forwarding"]
    assert (fwd["learner"], fwd["hints"], fwd["hints_total"], fwd["last_outcome"]) == \
        ("ana", "2", "2", "pass")
    assert fwd["passed_at"].endswith("Z") and fwd["solved"].endswith("Z")
    assert int(rows["loopback-service"]["checks"]) >= 3
    code, out, _ = exercise(env, "report", lab, "--format", "json")
    assert code == 0 and {r["exercise"] for r in json.loads(out)} == set(rows)
    assert exercise(env, "report", lab, "--format", "xlsx")[0] == 2


def test_progress_survives_in_a_new_session(lab: str, env: dict[str, str]) -> None:
    from labkit.exercises.api import Exercises

    status = {s.id: s for s in Exercises.for_lab(lab).status()}
    assert all(s.passed_at for s in status.values())
    assert status["stop-forwarding"].hints == 2
    assert Exercises.for_lab(lab).hints_taken("stop-forwarding")[1].startswith("In r:")
    other = {s.id: s for s in Exercises.for_lab(lab, learner="bo").status()}
    assert not any(s.passed_at for s in other.values())


def test_could_not_check_and_usage_errors(lab: str, env: dict[str, str],
                                          tmp_path: Path) -> None:
    odd = tmp_path / "odd.yaml"
    odd.write_text("exercises:\n  - id: odd\n    title: odd\n    task: t\n    check:\n"
                   "      - {type: sysctl, node: r, key: net.ipv4.no_such_knob, value: 1}\n")
    code, out, _ = exercise(env, "check", lab, "odd", "--file", str(odd), "--json")
    assert code == 2
    result = json.loads(out)["results"][0]
    assert result["outcome"] == "error" and "r has no sysctl net.ipv4.no_such_knob" in \
        result["checks"][0]["detail"]
    code, _, err = exercise(env, "check", lab, "stop-forwardin")
    assert code == 2 and "Did you mean 'stop-forwarding'?" in err
    odd.write_text("exercises:\n  - id: odd\n    title: odd\n    task: t\n    check:\n"
                   "      - {type: sysctl, node: rr, key: net.ipv4.ip_forward, value: 1}\n")
    code, _, err = exercise(env, "check", lab, "--file", str(odd))
    assert code == 2 and f"{odd}:6:30:" in err and "Did you mean 'r'?" in err
    code, _, err = exercise(env, "list", "nosuchlab")
    assert code == 2 and "not up" in err


def test_help_teaches() -> None:
    done = run_cli("exercise", "--help")
    assert done.returncode == 0
    for word in ("labkit exercise check", "hint", "report", "what it saw"):
        assert word in done.stdout
