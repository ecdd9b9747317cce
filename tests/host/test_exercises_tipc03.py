"""Lab 03's exercises (topologies/cluster-encrypted.yaml: a master key on every node):
rekeying while the links carry traffic, and a node whose keys are flushed. Each check
fails on the fresh lab; a new key on three of four nodes names the fourth; `solve` makes
each pass. One lab serves the module and goes down at the end, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labkit.base.wait import poll
from labkit.exercises.api import Exercises, Result
from tests.conftest import run_cli
from tests.host.test_exercises_cli import lab_with_exercises
from tests.host.test_exercises_tipc02 import by_name, passes

pytestmark = [pytest.mark.vm, pytest.mark.needs_root]
NEW_KEY = "0x" + "cd" * 20


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exercises]:
    with lab_with_exercises(tmp_path_factory, "cluster-encrypted.yaml") as opened:
        yield opened


REKEY = "a new TIPC key on every node"


def test_rekey_fails_fresh_names_the_node_left_out_then_solved(ex: Exercises) -> None:
    first = ex.check("rekey-under-traffic")  # starts it: the keys in use now are recorded
    key = by_name(first)[REKEY]
    assert first.outcome == "fail", first.as_dict()
    assert key.missing == "a new key on n1, n2, n3, n4", key.as_dict()  # type: ignore[attr-defined]
    assert "still the key from the start on n1" in key.saw  # type: ignore[attr-defined]
    assert by_name(first)["every TIPC frame on the bearers is v7"].passed  # type: ignore[attr-defined]
    for node in ("n1", "n2", "n3"):  # as a learner types it
        done = run_cli("exec", ex.lab.name, node, "--", "tipc", "node", "set", "key", NEW_KEY,
                       "algname", "gcm(aes)", timeout=120)
        assert done.returncode == 0, done.stderr

    def names_n4() -> Result | None:
        r = ex.check("rekey-under-traffic")
        return r if by_name(r)[REKEY].missing == "a new key on n4" else None  # type: ignore[attr-defined]

    wrong = poll(names_n4, 150, interval=2)
    assert wrong is not None, ex.check("rekey-under-traffic").as_dict()
    assert "still the key from the start on n4" in by_name(wrong)[REKEY].saw  # type: ignore[attr-defined]
    assert ex.solve("rekey-under-traffic").ok
    done = passes(ex, "rekey-under-traffic", timeout=180)
    assert done.passed, done.as_dict()
    for name, c in by_name(done).items():
        if "never reset" in name:
            assert "link protocol messages since the start" in c.saw  # type: ignore[attr-defined]


def test_intruder_fails_fresh_then_solved(ex: Exercises) -> None:
    first = ex.check("intruder")
    assert first.outcome == "fail"
    assert by_name(first)["TIPC link n1 - n2 down"].missing == \
        "no TIPC link n1 - n2 up"  # type: ignore[attr-defined]
    assert by_name(first)["TIPC link n1 - n3 up"].passed  # type: ignore[attr-defined]
    assert ex.solve("intruder").ok
    done = passes(ex, "intruder")
    assert done.passed, done.as_dict()

