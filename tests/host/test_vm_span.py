"""A lab spanning two kernels (debian-6.12 and debian-6.1): TIPC user data between the
kernels crosses the bearer, in clear without keys (the negative control, which must fail
the encryption check) and as TIPCv7 with a master key; no crossover between kernels."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from labkit.base import netns
from labkit.hosts.vm import backplane, persistent
from labkit.lab import state
from labkit.lab.lab import Lab
from tests import skips
from tests.conftest import ROOT, renamed, run_cli, unique

pytestmark = pytest.mark.vm
TIMEOUT = 900


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lab]]:
    if os.environ.get("LABKIT_NO_VM") == "1":
        skips.skip("opted-out", "LABKIT_NO_VM=1: the VM tests were explicitly opted out")
    from labkit.lab.placement import host_probes

    if host_probes()["tipc"].ok:
        skips.skip("host-kernel", "this host kernel has TIPC: only the node pinned to 6.1 "
                   "would be in a VM")
    made: dict[str, Lab] = {}
    tmp = tmp_path_factory.mktemp("span")
    try:
        for key, source in (("plain", "cluster-2k.yaml"),
                            ("encrypted", "cluster-2k-encrypted.yaml")):
            name = unique("s")
            path = tmp / f"{name}.yaml"
            path.write_text(renamed(ROOT / "topologies" / source, name))
            made[key] = Lab.load(str(path)).up()  # the second reuses both VMs
        yield made
    finally:
        for lab in made.values():
            lab.down()
    from tests.conftest import SESSION_VM_NAME

    assert persistent.info("lk-6-1") is None  # released by the last lab that used it
    if SESSION_VM_NAME:  # the session's holder lab keeps lk-6-12 (and the backplane) up
        assert state.load(SESSION_VM_NAME[0]) is not None
        assert backplane.in_use() == [backplane.tap_name("lk-6-12")]
    else:
        assert persistent.info("lk-6-12") is None
        assert not backplane.in_use() and not netns.exists(backplane.NS)
    assert all(state.load(lab.name) is None for lab in made.values())


def test_nodes_are_where_the_topology_says(labs: dict[str, Lab]) -> None:
    lab = labs["plain"]
    assert {p.kernel: sorted(p.nodes) for p in lab.placement.vms} == {
        "debian-6.12": ["n1", "n2"], "debian-6.1": ["n3"]}
    assert lab.node("n3").run(["uname", "-r"]).stdout.startswith("6.1.")
    assert lab.node("n1").run(["uname", "-r"]).stdout.startswith("6.12.")
    links = lab.feature_status("tipc")["nodes"]
    assert {lk["name"] for lk in links["n3"]["links"] if lk["up"]} == {
        "n3:eth1-n1:eth1", "n3:eth1-n2:eth1"}


def test_no_crossover_between_kernels_but_within_one(labs: dict[str, Lab]) -> None:
    name = labs["plain"].name
    across = run_cli("verify", "crossover", name, "--from", "n1", "--to", "n3", "--json",
                     timeout=TIMEOUT)
    assert across.returncode == 1, across.stderr
    [verdict] = json.loads(across.stdout)["verdicts"]
    assert "different kernels" in verdict["detail"]
    within = labs["plain"].verify("crossover", "tipc", src="n1", dst="n2")
    assert within.outcome == "pass", within.detail  # positive control, same lab


def test_user_data_between_kernels_is_in_clear_without_keys(labs: dict[str, Lab]) -> None:
    """The negative control: the encryption check must fail, and for the right reason."""
    res = run_cli("verify", "encryption", labs["plain"].name, "--feature", "tipc", "--json",
                  timeout=TIMEOUT)
    assert res.returncode == 1, res.stderr
    [v] = json.loads(res.stdout)["verdicts"]
    ev = v["evidence"]
    assert ev["marker_messages_delivered"] > 0 and ev["receiver_saw_marker"]
    assert ev["marker_frames"] > 0 and set(ev["versions"]) == {"2"}
    assert ev["users_by_version"]["2"].get("LOW", 0) > 0  # user data on the wire


def test_user_data_between_kernels_is_encrypted_with_a_master_key(
        labs: dict[str, Lab]) -> None:
    v = labs["encrypted"].verify("encryption", "tipc")
    assert v.outcome == "pass", v.detail
    ev = v.evidence
    assert ev["marker_messages_delivered"] > 0 and ev["receiver_saw_marker"]
    assert ev["marker_frames"] == 0 and set(ev["versions"]) == {7}
    key = state.secret_path(labs["encrypted"].name, "tipc.key")
    assert os.stat(key).st_mode & 0o777 == 0o600  # made here, given to both kernels


def test_declared_checks_reach_across_kernels(labs: dict[str, Lab]) -> None:
    verdicts = labs["encrypted"].checks()
    assert [v.outcome for v in verdicts] == ["pass", "pass", "pass"], [
        (v.name, v.detail) for v in verdicts]
