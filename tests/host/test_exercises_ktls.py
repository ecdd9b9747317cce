"""Lab 05's `key-update` exercise: rekey a kTLS connection with a TLS 1.3 KeyUpdate and
watch the kernel's rekey counters, on a kernel that has kTLS KeyUpdate (debian-7.2).

On the fresh lab the check fails, naming each counter that has not moved and what moves
it; a KeyUpdate in one direction only (`k`, update_not_requested) passes the first three
checks and names t's sending key and h's receiving key as missing; `exercise solve` (and
the CLI's exit 0) passes. The kernel without KeyUpdate (6.12) is tested beside lab 05's
other exercises (test_exercises_labs.py: it could not check, exit 2, and says why).
Loader errors for the new kind need no lab.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from labkit.errors import TopologyError
from labkit.exercises import loader
from labkit.exercises.api import Exercises, Result, with_labkit_path
from tests.conftest import ROOT, require_root, run_cli, unique
from tests.host.test_exercises_cli import copy_topology

KERNEL = "debian-7.2"
EX = "key-update"
SERVE = ("setsid python3 -m labkit.exercises.keyupdate serve </dev/null "
         ">/tmp/keyupdate-test.log 2>&1 & for i in $(seq 300); do ss -Hltn sport = :4433 "
         "| grep -q . && exit 0; sleep 0.2; done; cat /tmp/keyupdate-test.log; exit 1")
CONNECT = "printf 'hello\\n{k}\\nbye\\n' | python3 -m labkit.exercises.keyupdate connect " \
          "198.18.4.1"


def by_name(result: Result) -> dict[str, object]:
    return {c.name: c for c in result.checks}


@pytest.fixture
def session_vm() -> Iterator[None]:
    """Not the session's shared debian-6.12 VM: this module's lab runs on debian-7.2."""
    yield None


@contextlib.contextmanager
def nvme_tls_on(factory: pytest.TempPathFactory, kernel: str) -> Iterator[Exercises]:
    """A renamed nvme-tls lab up in a VM with this kernel, its exercises opened with
    progress in a fresh directory; down at the end, pass or fail."""
    require_root()
    from labkit.lab.lab import Lab

    os.environ["LABKIT_PROGRESS_DIR"] = str(factory.mktemp("progress"))
    name = unique("rk")
    path = copy_topology(ROOT / "topologies" / "nvme-tls.yaml", factory.mktemp("topo"), name)
    lab = Lab.load(str(path)).up(on=kernel)
    try:
        yield Exercises.for_lab(name, learner="tester")
    finally:
        lab.down()
        os.environ.pop("LABKIT_PROGRESS_DIR", None)


@pytest.mark.vm
@pytest.mark.needs_root
def test_key_update_fails_fresh_explains_one_way_then_solved(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with nvme_tls_on(tmp_path_factory, KERNEL) as ex:
        lab = ex.lab.name
        fresh = ex.check(EX)
        checks = by_name(fresh)
        assert fresh.outcome == "fail", fresh.as_dict()
        tx = checks["h sent a KeyUpdate and moved its sending key on"]
        assert tx.outcome == "fail" and "TlsTxRekeyOk in h is 0, +0 since" in tx.saw, tx
        assert "h's kernel has installed no new transmit key" in tx.missing, tx
        rx = checks["t installed h's next key"]
        assert "the receiver in t has not installed a new key" in rx.missing, rx
        assert checks["no rekey was refused in h"].passed  # control: the kernel was read
        cli = run_cli("exercise", "check", lab, EX, timeout=300)
        assert cli.returncode == 1, cli.stdout + cli.stderr  # not yet

        # A wrong answer: a KeyUpdate that does not ask t to update (`k`): one direction
        # typed as in the exercise's box, where `python3` is labkit's
        served = ex.lab.node("t").run(with_labkit_path(["sh", "-c", SERVE]), timeout=120)
        assert served.returncode == 0, served.stdout + served.stderr
        sent = ex.lab.node("h").run(with_labkit_path(["sh", "-c", CONNECT.format(k="k")]),
                                    timeout=120)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout == "hello\nbye\n", sent.stdout  # echoed across the KeyUpdate
        assert "sent KeyUpdate (update_not_requested)" in sent.stderr, sent.stderr
        wrong = ex.check(EX)
        checks = by_name(wrong)
        assert wrong.outcome == "fail", wrong.as_dict()
        for passed in ("h sent a KeyUpdate and moved its sending key on",
                       "t's kernel received the KeyUpdate", "t installed h's next key"):
            assert checks[passed].passed, checks[passed]  # control: h's direction counted
        t_tx = checks["t moved its own sending key on too"]
        assert t_tx.outcome == "fail" and "TlsTxRekeyOk in t is 0, +0 since" in t_tx.saw
        assert t_tx.missing.startswith("1 more TlsTxRekeyOk in t: t's kernel has installed "
                                       "no new transmit key"), t_tx.missing
        h_rx = checks["h installed t's next key"]
        assert h_rx.outcome == "fail" and "TlsRxRekeyOk in h is 0" in h_rx.saw, h_rx

        solved = ex.solve(EX)
        assert solved.ok, solved.as_dict()
        assert "received KeyUpdate (update_requested)" not in solved.steps[-1]["output"]
        assert "sent KeyUpdate (update_requested)" in solved.steps[-1]["output"]
        assert "received KeyUpdate (update_not_requested)" in solved.steps[-1]["output"]
        done = ex.check(EX)
        assert done.passed, done.as_dict()
        assert "TlsTxRekeyOk in t is 1, +1 since" in by_name(done)[
            "t moved its own sending key on too"].saw  # type: ignore[attr-defined]
        cli = run_cli("exercise", "check", lab, EX, timeout=300)
        assert cli.returncode == 0, cli.stdout + cli.stderr


def test_a_wrong_rekey_counter_is_named_with_its_line() -> None:
    text = (ROOT / "labs" / "exercises" / "05-handshake.yaml").read_text()
    bad = text.replace("counter: TlsRxRekeyOk}", "counter: TlsRxRekeyOK}", 1)
    assert bad != text
    with pytest.raises(TopologyError) as err:
        loader.loads(bad, "05.yaml", ["t", "h"])
    line = bad[:bad.index("TlsRxRekeyOK")].count("\n") + 1
    shown = err.value.problems[0].render()
    assert f"05.yaml:{line}:" in shown and "TlsRxRekeyOk" in shown, shown
    good = loader.loads(text, "05.yaml", ["t", "h"])  # control: the shipped file loads
    assert [c.kind for c in good.items[-1].checks] == ["ktls_rekey"] * 6


class FakeExercises:
    """What ExercisePanel._solve asks of the exercises API, answering one check result."""

    def __init__(self, first: Result) -> None:
        self.first, self.solved = first, False

    def check(self, ex_id: str) -> Result:
        return self.first

    def solve(self, ex_id: str) -> object:
        self.solved = True
        raise AssertionError("a solution applied on a kernel that cannot do the exercise")

    def status(self) -> list[object]:
        from labkit.exercises.api import Status

        return [Status(EX, "t", None, 1, None, 0, 3, False, False, self.first.outcome)]

    def hints_taken(self, ex_id: str) -> list[str]:
        return []


def panel_with(result: Result) -> tuple[object, FakeExercises]:
    pytest.importorskip("ipywidgets", reason="ipywidgets is not installed (scripts/setup.sh)")
    from labkit.widgets.exercise import ExercisePanel
    from labkit.widgets.session import LabSession

    panel = ExercisePanel(LabSession(str(ROOT / "topologies" / "nvme-tls.yaml"), name="rkw"), EX)
    fake = FakeExercises(result)
    panel.api = lambda: fake  # type: ignore[method-assign]
    return panel, fake


def test_the_notebook_says_why_it_does_not_solve_on_a_kernel_without_rekey() -> None:
    """LABKIT_SOLVE=1 on 6.12: the cell notes 'could not check: needs ...' and leaves the
    exercise unsolved, without failing the notebook; an error without that reason still
    fails it (control)."""
    from labkit.errors import LabkitError
    from labkit.exercises.result import unknown

    needs = "kTLS KeyUpdate (debian-7.2)"
    why = unknown("h sent a KeyUpdate", "needs kTLS KeyUpdate (debian-7.2): h's kernel ...",
                  needs=needs)
    panel, fake = panel_with(Result(EX, "t", "error", [why]))
    panel._solve(1.0)  # type: ignore[attr-defined]
    assert not fake.solved
    assert panel._notes == [  # type: ignore[attr-defined]
        f"before the solution: {EX}: could not check: needs {needs}",
        f"not solved here: {EX} needs {needs}; rebuild the lab on that kernel to do it"]
    assert "COULD NOT CHECK" in panel.result.value  # type: ignore[attr-defined]
    broken = unknown("h sent a KeyUpdate", "`cat /proc/net/tls_stat` in h did not finish")
    panel, fake = panel_with(Result(EX, "t", "error", [broken]))
    with pytest.raises(LabkitError):
        panel._solve(1.0)  # type: ignore[attr-defined]
    assert not fake.solved
