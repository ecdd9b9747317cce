"""`labkit repro run` on this machine's kernel (netns and veth only, no VM): the table and
exit codes, the bundle's contents, a wrong expectation and a hanging step named, key
material kept out of bundles (with the positive control), and `labkit repro new`."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from labkit.repro import loader, redact, runner
from labkit.repro.model import KernelPlan
from labkit.repro.results import ERROR, FAILED, OK, KernelRun, StepResult, exit_code, judge
from tests import skips
from tests.conftest import ROOT, run_cli

FIXTURE = ROOT / "tests/fixtures/repro/host-udp.yaml"
pytestmark = pytest.mark.needs_root


def scenario_file(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(path: Path, out: Path, *args: str, timeout: float = 300) -> tuple[
        subprocess.CompletedProcess[str], Path]:
    done = run_cli("repro", "run", str(path), "-o", str(out), *args, timeout=timeout)
    found = re.search(r"^bundle: (\S+)", done.stdout, re.M)
    assert found, f"no bundle line:\n{done.stdout}\n{done.stderr}"
    return done, Path(found.group(1))


def assert_nothing_left(bundle: Path) -> None:
    verdict = json.loads((bundle / "verdict.json").read_text())
    labs = [k["lab"] for k in verdict["kernels"]]
    left = [n for n in os.listdir("/run/netns") if any(n.startswith(f"lk-{lab}.")
                                                       for lab in labs)]
    assert not left, left
    assert all(not Path(f"/run/labkit/labs/{lab}.json").exists() for lab in labs)


def test_a_run_prints_the_table_and_leaves_a_full_bundle(tmp_path: Path) -> None:
    done, bundle = run(FIXTURE, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split()[:3] == ["KERNEL", "EXPECTED", "RESULT"]
    assert row.startswith(f"host [{os.uname().release}]") and " yes " in row
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    for want in ("README.txt", "verdict.json", "scenario.yaml", "topology.yaml",
                 "labkit.json", "host/kernel.json", "host/dmesg.txt", "host/steps.json",
                 "host/steps/06-exec-send.out", "host/steps/03-exec-bg.out",
                 "host/pcaps/wire.pcap"):
        assert want in files, sorted(files)
    assert (bundle / "scenario.yaml").read_text() == FIXTURE.read_text()
    kernel = json.loads((bundle / "host/kernel.json").read_text())
    assert kernel["release"] == os.uname().release and kernel["cmdline"]
    steps = json.loads((bundle / "host/steps.json").read_text())
    assert [s["outcome"] for s in steps] == ["ok"] * 12
    assert all(s["seconds"] >= 0 and s["loc"].startswith(str(FIXTURE)) for s in steps)
    assert (bundle / "host/steps/06-exec-send.out").read_text().strip() == "sent 3"
    # the capture is a pcap a real peer reads: tshark finds the 3 port unreachables in it
    seen = subprocess.run(["tshark", "-n", "-r", str(bundle / "host/pcaps/wire.pcap"), "-Y",
                           "icmp.type == 3"], capture_output=True, text=True, timeout=60)
    assert len(seen.stdout.splitlines()) >= 3, seen.stdout + seen.stderr
    verdict = json.loads((bundle / "verdict.json").read_text())
    assert verdict["exit_code"] == 0 and verdict["kernels"][0]["result"] == "reproduced"
    with tarfile.open(f"{bundle}.tar.gz") as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
    assert members == {f"{bundle.name}/{f}" for f in files}
    assert_nothing_left(bundle)


def test_a_wrong_expectation_exits_1_naming_the_step(tmp_path: Path) -> None:
    text = FIXTURE.read_text().replace("match: '^sent 3$'", "match: '^sent 4$'")
    done, bundle = run(scenario_file(tmp_path, text), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    row = done.stdout.splitlines()[1]
    assert "not reproduced" in row and " NO " in row
    assert "step 12 (expect 'said-sent')" in row and "'^sent 4$'" in row
    verdict = json.loads((bundle / "verdict.json").read_text())
    assert verdict["kernels"][0]["first_failure"].startswith("step 12 (expect 'said-sent')")
    assert_nothing_left(bundle)


def test_a_hanging_step_is_stopped_by_its_timeout_and_reported(tmp_path: Path) -> None:
    marker = f"{600 + secrets.randbelow(1000) / 1000:.3f}"  # a sleep no one else runs
    hang = (f"  - exec: {{name: hang, node: a, cmd: \"sleep {marker}; echo never\", "
            "timeout: 3}\n")
    text = FIXTURE.read_text().replace("  - wait_for:\n      name: unreachables",
                                       hang + "  - wait_for:\n      name: unreachables")
    start = time.monotonic()
    done, bundle = run(scenario_file(tmp_path, text), tmp_path)
    took = time.monotonic() - start
    assert done.returncode == 1, done.stdout + done.stderr
    row = done.stdout.splitlines()[1]
    assert "step 7 (exec 'hang')" in row and "timed out" in row, row
    assert "did not finish within 3 s and was stopped" in row
    assert took < 90, took
    steps = json.loads((bundle / "host/steps.json").read_text())
    assert steps[6]["outcome"] == "timed out" and 3 <= steps[6]["seconds"] < 30
    assert steps[7]["outcome"] == "skipped"  # a failed precondition stops the run
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True)
    assert left.returncode == 1, "the hanging command is still running"
    assert_nothing_left(bundle)


def test_a_lab_that_cannot_come_up_exits_2(tmp_path: Path) -> None:
    from labkit.lab.placement import host_probes

    if host_probes()["tipc"].ok:
        skips.skip("host-kernel", "this kernel has TIPC, so a TIPC lab does come up here")
    text = FIXTURE.read_text().replace("    a: {}\n", "    a: {tipc: {bearers: [eth1]}}\n")
    done, bundle = run(scenario_file(tmp_path, text), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    row = done.stdout.splitlines()[1]
    assert "could not run" in row and "step 1 (up)" in row and "tipc" in row.lower()


def test_key_material_never_reaches_the_bundle_unless_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_bytes(16)
    real = redact.lab_secrets
    # The lab's own secret, as a feature's prepare() would hold it (TIPC keys are hex).
    monkeypatch.setattr(redact, "lab_secrets",
                        lambda prepared, d, n: real({"tipc": {"key": key.hex()}}, d, n))
    keylog = f"CLIENT_TRAFFIC_SECRET_0 {secrets.token_hex(32)} {secrets.token_hex(48)}"
    steps = (
        f"  - exec:\n      name: leaky\n      node: a\n      cmd: \"echo key={key.hex()}; "
        f"openssl genpkey -algorithm ed25519; echo '{keylog}'\"\n"
        "  - exec:\n      name: rawkey\n      node: a\n"
        "      cmd: [sh, -c, \"{python} -c \\\"import socket; "
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.sendto(bytes.fromhex('{key.hex()}'), ('{{ipv4:b:eth1}}', 9))\\\"\"]\n"
    )
    text = FIXTURE.read_text().replace("  - wait_for:\n      name: unreachables",
                                       steps + "  - wait_for:\n      name: unreachables")
    text = text.replace("IcmpOutDestUnreachs +3 ", "IcmpOutDestUnreachs +4 ")
    path = scenario_file(tmp_path, text)
    scenario = loader.load(str(path))
    found = {}
    for include in (False, True):  # the second run is the positive control
        report = runner.run(scenario, list(scenario.kernels), str(tmp_path / str(include)),
                            include_keys=include)
        assert report.code == 0, [r.first_failure for r in report.runs]
        blob = b"".join(p.read_bytes() for p in Path(report.bundle).rglob("*") if p.is_file())
        with tarfile.open(report.archive) as tar:
            blob += b"".join(tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                             if m.isfile())
        found[include] = {
            "hex key": key.hex().encode() in blob, "raw key in the pcap": key in blob,
            "PEM private key": b"PRIVATE KEY" in blob,
            "key log secret": keylog.split()[2].encode() in blob}
        leaky = Path(report.bundle) / "host/steps"
        assert any(leaky.glob("*-exec-leaky.out")), "the step's output was not kept at all"
    assert not any(found[False].values()), found[False]
    assert all(found[True].values()), found[True]  # the control: they were there to find


def test_repro_new_writes_a_skeleton_that_validates_and_runs(
        tmp_path: Path, lab_up: object) -> None:
    lab = lab_up(ROOT / "topologies/pair.yaml")  # type: ignore[operator]
    out = tmp_path / "found.yaml"
    done = run_cli("repro", "new", lab.name, "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "a:eth1" in text and "host: {}" in text and "# - capture:" in text
    again = run_cli("repro", "new", lab.name, "-o", str(out))
    assert again.returncode == 2 and "exists already" in again.stderr
    assert run_cli("repro", "validate", str(out)).returncode == 0
    ran, bundle = run(out, tmp_path / "b")
    assert ran.returncode == 0, ran.stdout + ran.stderr


# -- the verdict rule, without a kernel ---------------------------------------------------


def _run(expect: str | None, outcomes: list[tuple[str, str]]) -> KernelRun:
    kr = KernelRun(KernelPlan("debian-6.1", expect=expect))
    for i, (when, outcome) in enumerate(outcomes, start=2):
        kr.steps.append(StepResult(i, "expect", f"c{i}", f"f:{i}:1", when, True, outcome))
    judge(kr, None)
    return kr


def test_the_verdict_rule() -> None:
    bug = [("always", OK), ("reproduced", OK), ("not reproduced", FAILED)]
    fix = [("always", OK), ("reproduced", FAILED), ("not reproduced", OK)]
    assert _run("reproduced", bug).as_expected
    assert _run("not reproduced", fix).as_expected
    wrong = _run("reproduced", fix)
    assert not wrong.as_expected and wrong.first_failure.startswith("step 3 (expect 'c3')")
    assert "every `when: reproduced` check held" in _run("not reproduced", bug).first_failure
    neither = _run("not reproduced", [("reproduced", FAILED), ("not reproduced", FAILED)])
    assert not neither.as_expected and "c3" in neither.first_failure
    pre = _run("reproduced", [("always", FAILED), ("reproduced", OK)])
    assert not pre.as_expected and "c2" in pre.first_failure
    broken = KernelRun(KernelPlan("debian-6.1", expect="reproduced"))
    up = StepResult(1, "up", "", "f:1:1", "always", False, ERROR, "no VM")
    broken.steps.append(up)
    judge(broken, up)
    assert broken.result == "could not run" and broken.infrastructure
    assert exit_code([_run("reproduced", bug), broken]) == 2
    assert exit_code([wrong, broken]) == 1
    assert exit_code([_run("reproduced", bug), _run("not reproduced", fix)]) == 0


def test_scrubbing_keeps_pcaps_framed_and_text_readable() -> None:
    secret = bytes(range(16))
    found = redact.lab_secrets({"tipc": {"key": "0x" + secret.hex()}}, "/nonexistent", "x")
    binary, n = redact.scrub_bytes(b"head" + secret + b"tail", found, binary=True)
    assert n == 1 and binary == b"head" + b"*" * 16 + b"tail"
    text, _ = redact.scrub_bytes(f"key 0x{secret.hex()} ok".encode(), found, binary=False)
    assert secret.hex().encode() not in text and text.endswith(b" ok")


def test_a_labs_records_are_not_taken_for_its_secrets(tmp_path: Path) -> None:
    """The phase trace of `up` sits beside the lab's key files: its words are no secrets
    (taken for some, they cut `"seconds":` out of verdict.json and broke the JSON)."""
    secret = "a1" * 16
    (tmp_path / "x.tipc.key").write_text(secret + "\n")  # the control: a key file is read
    (tmp_path / "x.trace").write_text('{"phases": [{"what": "lab up", "seconds": 1.5}]}\n')
    (tmp_path / "x.json").write_text('{"name": "x", "created_at": 1234567.5}\n')
    found = redact.lab_secrets({}, str(tmp_path), "x")
    assert secret.encode() in found
    verdict = b'{"seconds": 1.5, "phases": [], "created_at": 1234567.5}'
    clean, cut = redact.scrub_bytes(verdict, found, binary=False)
    assert (clean, cut) == (verdict, 0)


INJECT = """\
scenario: host-inject
title: a report's pcap replayed, traffic, and the topology's checks
source: {report: labkit's own test}
topology:
  nodes: {a: {}, b: {}}
  links: [{endpoints: [a:eth1, b:eth1]}]
  checks: [{from: a, to: b, proto: tcp}]
kernels: [host]
steps:
  - up
  - capture: {name: rx, node: b, iface: eth1, duration: 60}
  - inject: {node: a, iface: eth1, pcap: report.pcap, count: 2, interval: 0.05}
  - traffic: {name: tcp, from: a, to: b, duration: 0.5}
  - verify: {kind: checks}
  - expect:
      pcap: {capture: rx, filter: 'eth.type == 0x88b5 && data.data contains 72:65:70:6f',
             equals: 6}
"""


def test_inject_replays_a_pcap_and_traffic_and_checks_run(tmp_path: Path) -> None:
    import struct

    frames = [b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"repo" + bytes([i]) * 46
              for i in range(3)]
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(
        struct.pack("<IIII", 0, 0, len(f), len(f)) + f for f in frames)
    (tmp_path / "report.pcap").write_bytes(pcap)
    done, bundle = run(scenario_file(tmp_path, INJECT), tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = json.loads((bundle / "host/steps.json").read_text())
    assert steps[2]["detail"].startswith("sent 6"), steps[2]
    assert "pass" in (bundle / "host/steps/05-verify.out").read_text()
    assert_nothing_left(bundle)


def test_json_gives_the_verdict_and_the_bundle(tmp_path: Path) -> None:
    done = run_cli("repro", "run", str(FIXTURE), "-o", str(tmp_path), "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # stdout is one JSON document, progress on stderr
    assert data["exit_code"] == 0 and data["kernels"][0]["result"] == "reproduced"
    assert Path(data["bundle"], "verdict.json").is_file() and Path(data["archive"]).is_file()
