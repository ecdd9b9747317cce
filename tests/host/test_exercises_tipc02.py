"""Lab 02's exercises (topologies/cluster.yaml, a TIPC cluster in a debian-6.12 VM): each
check fails on the fresh lab and passes after `solve`; a key set on three of four nodes
names the fourth. One lab serves the module and goes down at the end, pass or fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.base.wait import poll
from labkit.exercises.api import Exercises, Result
from tests.conftest import run_cli
from tests.host.test_exercises_cli import lab_with_exercises

pytestmark = [pytest.mark.vm, pytest.mark.needs_root]
KEY = "0x" + "ab" * 20  # a learner's AES-128 key and salt (40 hex digits)


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exercises]:
    with lab_with_exercises(tmp_path_factory, "cluster.yaml") as opened:
        yield opened


def passes(ex: Exercises, ex_id: str, timeout: float = 120) -> Result:
    """Check until it passes (TIPC links come and go within seconds), or the last result."""
    last: list[Result] = []

    def once() -> bool:
        last.append(ex.check(ex_id))
        return last[-1].passed

    poll(once, timeout, interval=2)
    return last[-1]


def by_name(result: Result) -> dict[str, object]:
    return {c.name: c for c in result.checks}


def test_link_n1_n4_fails_fresh_then_solved(ex: Exercises) -> None:
    first = ex.check("link-n1-n4")
    assert first.outcome == "fail", first.as_dict()
    c = by_name(first)["TIPC link n1 - n4 up"]
    assert c.missing == "a TIPC link n1 - n4 that is up"  # type: ignore[attr-defined]
    assert "n1:eth1-n2:eth1 up" in c.saw  # type: ignore[attr-defined]
    assert ex.solve("link-n1-n4").ok
    done = passes(ex, "link-n1-n4")
    assert done.passed, done.as_dict()
    assert "n1:wan-n4:wan up" in by_name(done)["TIPC link n1 - n4 up"].saw  # type: ignore[attr-defined]


def test_n3_off_lan_fails_fresh_then_solved(ex: Exercises) -> None:
    first = ex.check("n3-off-lan")
    checks = by_name(first)
    assert first.outcome == "fail"
    assert checks["TIPC bearer eth:eth1 disabled in n3"].saw == \
        "n3's bearers: eth:eth1, udp:wan"  # type: ignore[attr-defined]
    assert checks["TIPC link n3 - n4 up"].passed  # type: ignore[attr-defined]
    assert ex.solve("n3-off-lan").ok
    done = passes(ex, "n3-off-lan")
    assert done.passed, done.as_dict()


def test_key_on_three_of_four_nodes_names_the_fourth(ex: Exercises) -> None:
    first = ex.check("key-everywhere")
    key = by_name(first)["a TIPC key on every node"]
    assert first.outcome == "fail"
    assert "plaintext (TIPC v2) frames from n1, n2, n3, n4" in key.saw  # type: ignore[attr-defined]
    for node in ("n1", "n2", "n3"):  # as a learner types it
        done = run_cli("exec", ex.lab.name, node, "--", "tipc", "node", "set", "key", KEY,
                       "algname", "gcm(aes)", timeout=120)
        assert done.returncode == 0, done.stderr

    def names_n4() -> Result | None:
        r = ex.check("key-everywhere")
        c = by_name(r)["a TIPC key on every node"]
        return r if c.missing == "a key on n4" else None  # type: ignore[attr-defined]

    wrong = poll(names_n4, 120, interval=2)
    assert wrong is not None, ex.check("key-everywhere").as_dict()
    c = by_name(wrong)["a TIPC key on every node"]
    assert "a key in use on n1, n2, n3" in c.saw and \
        "plaintext (TIPC v2) frames from n4" in c.saw  # type: ignore[attr-defined]
    assert ex.solve("key-everywhere").ok
    done = passes(ex, "key-everywhere")
    assert done.passed, done.as_dict()


def test_cli_check_all_and_report(ex: Exercises) -> None:
    env = {**os.environ, "LABKIT_LEARNER": "tester"}
    done = run_cli("exercise", "check", ex.lab.name, "--json", env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_cli("exercise", "report", ex.lab.name, "--format", "csv", env=env)
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and all(",tester," in line and line.count("Z") >= 3
                                   for line in lines[1:]), done.stdout



STAYED_UP = """\
exercises:
  - id: steady
    title: links that must not reset
    task: keep n1's links up
    check:
      - {type: tipc_link, node: n1, peer: n2, stayed_up: true}
      - {type: tipc_link, node: n1, peer: n4, stayed_up: true}
"""


def test_a_link_reset_is_caught_and_an_untouched_link_passes(ex: Exercises,
                                                             tmp_path: Path) -> None:
    """`stayed_up` with its control: n2's bearer is switched off and on again, so the
    link n1 - n2 comes back up, but reset; n1 - n4 (untouched) passes."""
    path = tmp_path / "steady.yaml"
    path.write_text(STAYED_UP)
    steady = Exercises.for_lab(ex.lab.name, learner="tester", path=str(path))
    steady.start("steady")
    for verb in ("disable", "enable"):
        done = run_cli("exec", ex.lab.name, "n2", "--", "tipc", "bearer", verb, "media",
                       "eth", "device", "eth1", timeout=120)
        assert done.returncode == 0, done.stderr
    name = "TIPC link n1 - n2 up, never reset"

    def back_up() -> Result | None:
        r = steady.check("steady")
        return r if "n1:eth1-n2:eth1 up" in by_name(r)[name].saw else None  # type: ignore[attr-defined]

    r = poll(back_up, 120, interval=2)
    assert r is not None, steady.check("steady").as_dict()
    reset, control = by_name(r)[name], by_name(r)["TIPC link n1 - n4 up, never reset"]
    assert reset.outcome == "fail", r.as_dict()  # type: ignore[attr-defined]
    assert "was reset since the exercise started" in reset.missing  # type: ignore[attr-defined]
    assert control.passed, r.as_dict()  # type: ignore[attr-defined]
