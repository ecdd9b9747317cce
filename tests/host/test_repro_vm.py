"""`labkit repro run` in fresh VMs on debian-6.1 and debian-6.12 (booted from the host).

By default: the sockmap scenario's table on both kernels, and in one more VM a wrong
claim (exit 1, the failing step named) with a hanging step stopped by its timeout. The
other shipped scenarios (kTLS, TIPC) boot two VMs each: LABKIT_REPRO_ALL=1 runs them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import skips
from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.vm, pytest.mark.needs_root]
KERNELS = ("debian-6.1", "debian-6.12")
SHIPPED = sorted((ROOT / "repro").glob("*.yaml"))
DEFAULT = "sockmap-fionread.yaml"
RUN_TIMEOUT = 1500  # two TCG boots on a loaded 2-core machine, with room


@pytest.fixture
def session_vm() -> Iterator[None]:
    """Not the session's shared VM: every run here boots VMs of its own, one at a time."""
    yield None


@pytest.fixture(autouse=True)
def vm_wanted() -> None:
    if os.environ.get("LABKIT_NO_VM") == "1":
        skips.skip("opted-out", "LABKIT_NO_VM=1: these tests boot VMs")
    from labkit.hosts.vm import kernels

    for k in KERNELS:
        if kernels.cached(k) is None:
            pytest.skip(f"kernel {k} is not cached (scripts/setup.sh fetches it)")


def run(path: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path,
                                                     float]:
    start = time.monotonic()
    done = run_cli("repro", "run", str(path), "-o", str(out), *args, timeout=RUN_TIMEOUT)
    took = time.monotonic() - start
    found = re.search(r"^bundle: (\S+)", done.stdout, re.M)
    assert found, f"no bundle line:\n{done.stdout}\n{done.stderr}"
    return done, Path(found.group(1)), took


def assert_vms_gone(bundle: Path) -> None:
    from labkit.hosts.vm import persistent

    labs = [k["lab"] for k in json.loads((bundle / "verdict.json").read_text())["kernels"]]
    left = [v.name for v in persistent.list_vms() if any(v.name.endswith(lab) for lab in labs)]
    assert not left, f"VMs left behind: {left}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_gives_its_table_on_both_kernels(path: Path, tmp_path: Path) -> None:
    if path.name != DEFAULT and os.environ.get("LABKIT_REPRO_ALL") != "1":
        skips.skip("opt-in", "long variant (two more VM boots): set LABKIT_REPRO_ALL=1")
    from labkit.repro import loader

    scenario = loader.load(str(path))
    done, bundle, took = run(path, tmp_path)
    print(f"{path.name}: {took:.0f} s on {', '.join(KERNELS)}; load {os.getloadavg()[0]:.1f}")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = done.stdout.splitlines()[1:1 + len(scenario.kernels)]
    for plan, row in zip(scenario.kernels, rows, strict=True):
        kernel, expected, result, as_expected = re.split(r"\s{2,}", row)[:4]
        assert kernel.startswith(plan.name + " "), row
        assert expected == result == plan.expect and as_expected == "yes", row
    verdict = json.loads((bundle / "verdict.json").read_text())
    got = {k["kernel"]: k["result"] for k in verdict["kernels"]}
    assert got == {k.name: k.expect for k in scenario.kernels}
    for k in verdict["kernels"]:  # each kernel's identity, config and log are in the bundle
        kdir = bundle / k["label"]
        info = json.loads((kdir / "kernel.json").read_text())
        assert info["release"] == k["version"] and info["package_version"]
        assert (kdir / f"config-{info['release']}").is_file()
        assert f"Linux version {info['release']}" in (kdir / "dmesg.txt").read_text()
        for option in k["options"]:
            assert option in info["cmdline"].split()
    assert_vms_gone(bundle)


def test_a_wrong_claim_is_named_and_a_hanging_step_stopped_in_a_vm(tmp_path: Path) -> None:
    done, bundle, took = run(ROOT / "tests/fixtures/repro/vm-wrong.yaml", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    row = done.stdout.splitlines()[1]
    assert re.split(r"\s{2,}", row)[1:4] == ["reproduced", "not reproduced", "NO"], row
    assert "step 3 (expect 'fionread-says-0')" in row, row
    steps = json.loads((bundle / "debian-6.12/steps.json").read_text())
    hang = steps[3]
    assert hang["outcome"] == "timed out", hang
    assert "did not finish within 5 s and was stopped" in hang["detail"]
    assert 5 <= hang["seconds"] < 60, hang  # stopped in the guest, not by the backstop
    assert_vms_gone(bundle)
