"""A lab that needs TIPC, brought up with --vm on a host without TIPC: listed, exec'd
into, inspected and brought down, with every labkit command forwarded to the VM."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from labkit.lab import state
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.vm
TIMEOUT = 900


@pytest.fixture(autouse=True)
def vm_tier_allowed() -> None:
    if os.environ.get("LABKIT_NO_VM") == "1":
        pytest.skip("LABKIT_NO_VM=1: the VM tests were explicitly opted out")


def qemu_for(vm: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if f"-name {vm}" in line]


def test_up_without_vm_names_the_missing_feature_and_the_command(topo_file) -> None:
    path, name = topo_file(ROOT / "topologies" / "cluster.yaml")
    result = run_cli("up", path)
    if result.returncode == 0:  # a host with TIPC runs it natively
        run_cli("down", name)
        pytest.skip("this host kernel has TIPC")
    assert result.returncode == 2
    text = result.stderr.replace("\n", " ")
    assert "has no tipc" in text and f"labkit up {path} --vm debian-6.12" in text
    assert state.load(name) is None


def test_lab_in_vm_listed_execd_down(topo_file) -> None:
    path, name = topo_file(ROOT / "topologies" / "cluster.yaml")
    vm = f"lab-{name.lower()}"
    up = run_cli("up", path, "--vm", "debian-6.12", timeout=TIMEOUT)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        listing = json.loads(run_cli("status", "--json").stdout)
        mine = [lab for lab in listing if lab["name"] == name]
        assert mine and mine[0]["host"]["kind"] == "vm" and mine[0]["host"]["vm"] == vm
        links = run_cli("exec", name, "n1", "--", "tipc", "link", "list", timeout=TIMEOUT)
        assert links.returncode == 0 and "n1:eth1-n2:eth1: up" in links.stdout, links.stderr
        assert run_cli("exec", name, "n2", "--", "sh", "-c", "exit 7",
                       timeout=TIMEOUT).returncode == 7
        tipc = run_cli("tipc", "status", name, "--json", timeout=TIMEOUT)
        assert tipc.returncode == 0, tipc.stderr
        assert json.loads(tipc.stdout)["nodes"]["n3"]["identity"] == "n3"
        assert qemu_for(vm), "the lab's VM should be running"
    finally:
        down = run_cli("down", name, timeout=TIMEOUT)
    assert down.returncode == 0, down.stderr
    assert state.load(name) is None
    assert not qemu_for(vm), "down must stop the lab's VM and leave no qemu behind"
