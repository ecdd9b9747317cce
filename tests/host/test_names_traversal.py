"""Lab names typed on the command line become file names under the state directory: every
verb that takes a lab name refuses one that is not a name, before touching any file.

Before: `labkit down ../../../tmp/x/victim` deleted /tmp/x/victim.lock and exited 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.base.names import check_lab
from labkit.errors import UsageError
from labkit.lab import state
from tests.conftest import run_cli

pytestmark = pytest.mark.needs_root

BAD = ["../../../tmp/x/victim", "a/b", "..", ".hidden", "name with space", "x" * 25, "a.b"]


def verbs(name: str) -> list[list[str]]:
    """Every verb that takes a lab name, with whatever else it needs to get that far."""
    return [
        ["down", name], ["status", name], ["exec", name, "n1", "--", "true"],
        ["shell", name, "n1"], ["check", name], ["run", name],
        ["capture", name, "n1", "eth1", "-w", "/dev/null"],
        ["traffic", name, "--from", "a", "--to", "b"],
        ["verify", "encryption", name], ["verify", "crossover", name, "--from", "a", "--to",
                                         "b"],
        ["tipc", "status", name], ["inject", name, "n1", "eth1", "--frame", "wrong_netid"],
    ]


@pytest.mark.parametrize("bad", BAD)
def test_check_lab_refuses_what_is_not_a_name(bad: str) -> None:
    with pytest.raises(UsageError, match="is not a lab name"):
        check_lab(bad)
    with pytest.raises(UsageError):
        state.locked(bad).__enter__()


def test_every_verb_refuses_a_traversing_name_and_touches_nothing(tmp_path: Path) -> None:
    victim_dir = Path("/tmp/x")
    victim_dir.mkdir(exist_ok=True)
    victim = victim_dir / "victim.lock"
    victim.write_text("keep me\n")
    json_victim = victim_dir / "victim.json"
    json_victim.write_text("{}\n")
    try:
        for argv in verbs("../../../tmp/x/victim"):
            res = run_cli(*argv)
            text = res.stdout + res.stderr
            if argv[0] == "run":  # `run` takes a topology file, which does not exist
                assert res.returncode == 2 and "no such topology file" in text, argv
            else:
                assert res.returncode == 2, (argv, text)
                assert "is not a lab name" in text, (argv, text)
            assert "Traceback" not in text, argv
            assert victim.read_text() == "keep me\n" and json_victim.exists(), argv
        ok = run_cli("down", "a-valid_name1")  # the positive control: a real name passes
        assert ok.returncode == 0 and "nothing to remove" in ok.stdout
    finally:
        victim.unlink(missing_ok=True)
        json_victim.unlink(missing_ok=True)
