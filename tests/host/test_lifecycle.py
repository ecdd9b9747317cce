"""Labs up and down on the real kernel: connectivity, isolation, atomicity, crash cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from labkit.base import netns
from labkit.errors import LabkitError, UsageError
from labkit.lab import names, state
from labkit.lab.lab import Lab
from labkit.verify.checks import run_checks
from tests.conftest import LABKIT, ROOT, lab_namespaces, run_cli

TOPOS = ROOT / "topologies"


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


@pytest.mark.parametrize("topology", ["pair.yaml", "routed.yaml", "star64.yaml"])
def test_shipped_topology_up_checks_down(topology: str, lab_up) -> None:
    links_before = root_links()
    lab = lab_up(TOPOS / topology)
    verdicts = run_checks(lab)
    assert verdicts and all(v.passed for v in verdicts), [v.as_dict() for v in verdicts]
    assert root_links() == links_before, "a lab must never put links in the root namespace"
    removed = lab.down()
    assert len(removed.namespaces) == len(lab.nodes) + bool(lab.topo.lans)
    assert not netns.list_names(names.lab_prefix(lab.name))
    assert state.load(lab.name) is None


def test_routed_lab_crosses_router_both_families(lab_up) -> None:
    lab = lab_up(TOPOS / "routed.yaml")
    routes = lab.node("h1a").run(["ip", "-j", "route", "get", "198.18.3.3"], check=True)
    assert json.loads(routes.stdout)[0]["gateway"] == "198.18.1.1"
    for proto in ("tcp", "udp"):
        for family, dst in ((4, "h3b"), (6, "h2b")):
            from labkit.topology.model import Check

            check = Check(name="x", kind="reach", loc=lab.topo.loc, params={
                "from": "h1a", "to": dst, "proto": proto, "family": family, "port": 7100,
                "expect": "pass"})
            from labkit.verify.checks import run_check

            verdict = run_check(lab, check)
            assert verdict.passed, verdict.detail


def test_check_fails_when_router_does_not_forward(lab_up) -> None:
    text = (TOPOS / "routed.yaml").read_text().replace("forwarding: true", "forwarding: false")
    lab = lab_up(text=text)
    verdicts = {v.name: v for v in run_checks(lab)}
    assert verdicts["same LAN"].passed
    assert verdicts["across the router (IPv4 TCP)"].outcome == "fail"
    assert verdicts["across the router (IPv6 UDP)"].outcome == "fail"


def test_only_lab_interfaces_and_lab_routes(lab_up) -> None:
    """Closed world: lo plus declared interfaces, and every route stays in lab subnets."""
    lab = lab_up(TOPOS / "routed.yaml")
    lab_nets = [seg.ipv4 for seg in lab.topo.segments] + [seg.ipv6 for seg in lab.topo.segments]
    for name, node in lab.nodes.items():
        ifaces = {i["ifname"] for i in node.links()}
        assert ifaces == {"lo", *node.spec.interfaces}, name
        for family in ("-4", "-6"):
            out = node.run(["ip", "-j", family, "route"], check=True).stdout
            for route in json.loads(out):
                gw = route.get("gateway")
                if gw:
                    import ipaddress

                    assert any(ipaddress.ip_address(gw) in n for n in lab_nets), (name, route)


def test_two_labs_at_once(lab_up) -> None:
    one = lab_up(TOPOS / "pair.yaml")
    two = lab_up(TOPOS / "pair.yaml")
    assert one.name != two.name
    assert all(v.passed for v in run_checks(one) + run_checks(two))
    one.down()
    assert all(v.passed for v in run_checks(two)), "removing one lab must not touch another"


def test_same_name_twice_is_refused(topo_file) -> None:
    path, name = topo_file(TOPOS / "pair.yaml")
    first = run_cli("up", path)
    try:
        assert first.returncode == 0, first.stderr
        second = run_cli("up", path)
        assert second.returncode == 2
        assert f"a lab named '{name}' is already up" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        assert run_cli("down", name).returncode == 0


def test_kernel_refusal_rolls_back_everything(topo_file) -> None:
    text = (TOPOS / "pair.yaml").read_text().replace(
        "  b: {}", "  b:\n    sysctls: {net.ipv4.no_such_knob: 1}")
    path, name = topo_file(text=text)
    lab = Lab.load(path)
    with pytest.raises(LabkitError) as info:
        lab.up()
    assert "net.ipv4.no_such_knob" in info.value.render()
    assert not netns.list_names(names.lab_prefix(name))
    assert state.load(name) is None
    assert not os.path.exists(os.path.join(state.STATE_DIR, f"{name}.lock"))
    result = run_cli("up", path)
    assert result.returncode == 1 and "no_such_knob" in result.stderr
    assert "Traceback" not in result.stderr
    assert not netns.list_names(names.lab_prefix(name))


@pytest.mark.parametrize("after", [0, 1, 20, 50, 64])
def test_sigkill_during_up_then_down_by_name(after: int, topo_file) -> None:
    """Kill `up` once `after` namespaces exist; `down NAME` must remove every trace."""
    path, name = topo_file(TOPOS / "star64.yaml")
    prefix = names.lab_prefix(name)
    proc = subprocess.Popen([*LABKIT, "up", path], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(netns.list_names(prefix)) < after and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    made = len(netns.list_names(prefix))
    if after:
        assert after <= made < 65, f"the kill should land mid-build ({made} namespaces made)"
    result = run_cli("down", name)
    assert result.returncode == 0, result.stderr
    assert not netns.list_names(prefix)
    assert state.load(name) is None
    assert not os.path.exists(os.path.join(state.STATE_DIR, f"{name}.lock"))
    again = run_cli("down", name)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_background_processes_are_stopped_at_down(lab_up) -> None:
    lab = lab_up(TOPOS / "pair.yaml")
    proc = lab.node("a").popen(["sleep", "300"])
    stray = subprocess.Popen(["ip", "netns", "exec", lab.node("b").ns, "sleep", "300"],
                             start_new_session=True)  # not tracked: found by namespace
    time.sleep(0.2)
    removed = lab.down()
    assert proc.wait(timeout=5) is not None
    assert stray.wait(timeout=5) is not None
    assert set(removed.processes) >= {proc.pid, stray.pid}


def test_exec_passes_exit_status_and_output(topo_file) -> None:
    path, name = topo_file(TOPOS / "pair.yaml")
    assert run_cli("up", path).returncode == 0
    try:
        ok = run_cli("exec", name, "a", "--", "ip", "-j", "addr", "show", "eth1")
        assert ok.returncode == 0
        assert json.loads(ok.stdout)[0]["addr_info"][0]["local"] == "198.19.0.1"
        assert run_cli("exec", name, "b", "--", "sh", "-c", "exit 7").returncode == 7
        bad = run_cli("exec", name, "nosuch", "--", "true")
        assert bad.returncode == 2 and "has no node 'nosuch'" in bad.stderr
    finally:
        run_cli("down", name)


def test_status_json_and_listing(topo_file) -> None:
    path, name = topo_file(TOPOS / "routed.yaml")
    assert run_cli("up", path).returncode == 0
    try:
        data = json.loads(run_cli("status", name, "--json").stdout)
        assert data["status"] == "up"
        r = {i["ifname"]: i for i in data["nodes"]["r"]["interfaces"]}
        assert "198.18.2.1/24" in r["eth2"]["addresses"]
        assert data["lans"]["lan1"]["members"] == ["r:eth1", "h1a:eth1", "h1b:eth1"]
        listing = json.loads(run_cli("status", "--json").stdout)
        assert any(lab["name"] == name and lab["status"] == "up" for lab in listing)
        assert run_cli("check", name).returncode == 0
    finally:
        run_cli("down", name)
    gone = run_cli("status", name)
    assert gone.returncode == 2 and "is not up" in gone.stderr


def test_capture_writes_pcap_with_lab_traffic(lab_up, tmp_path: Path) -> None:
    import threading

    from scapy.all import TCP, rdpcap

    from labkit.packets.capture import capture

    lab = lab_up(TOPOS / "pair.yaml")
    result: list = []
    t = threading.Thread(target=lambda: result.append(
        capture(lab.node("b").ns, "eth1", count=50, duration=3)))
    t.start()
    time.sleep(0.3)
    assert all(v.passed for v in run_checks(lab))
    t.join()
    pcap = tmp_path / "b.pcap"
    result[0].write(str(pcap))
    packets = rdpcap(str(pcap))
    assert any(TCP in p and p[TCP].dport == 7000 for p in packets)


def test_cli_run_is_up_check_down(topo_file) -> None:
    path, name = topo_file(TOPOS / "routed.yaml")
    result = run_cli("run", path, "--json")
    assert result.returncode == 0, result.stderr
    verdicts = json.loads(result.stdout)["verdicts"]
    assert len(verdicts) == 5 and all(v["outcome"] == "pass" for v in verdicts)
    assert not netns.list_names(names.lab_prefix(name))


def test_run_with_failing_check_exits_1(topo_file) -> None:
    text = (TOPOS / "pair.yaml").read_text() + "  - {from: a, to: 198.18.77.1}\n"
    path, name = topo_file(text=text)
    result = run_cli("run", path)
    assert result.returncode == 1, "one check could not find its target: the run fails"
    assert "ERROR" in result.stdout and "2 passed, 1 failed" in result.stdout
    assert not netns.list_names(names.lab_prefix(name))


def test_api_context_manager_cleans_up_on_exception(topo_file) -> None:
    path, name = topo_file(TOPOS / "pair.yaml")
    with pytest.raises(RuntimeError), Lab.load(path) as lab:
        assert lab.node("a").run(["ip", "-br", "link"]).returncode == 0
        raise RuntimeError("boom")
    assert not netns.list_names(names.lab_prefix(name))


def test_attach_unknown_lab_is_usage_error() -> None:
    with pytest.raises(UsageError):
        Lab.attach("nosuchlab")


def test_graph_formats() -> None:
    for fmt, needle in (("text", "LAN lan1"), ("dot", "graph \"routed\""),
                        ("mermaid", "graph LR")):
        out = run_cli("graph", str(TOPOS / "routed.yaml"), "--format", fmt)
        assert out.returncode == 0 and needle in out.stdout


def test_doctor_json_reports_host_capabilities() -> None:
    out = run_cli("doctor", "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    caps = data["capabilities"]
    assert caps["netns"]["ok"] and caps["veth"]["ok"] and caps["bridge"]["ok"]
    assert set(data["features"]) >= {"tipc", "handshake", "kproxy", "offload"}
    assert not any(n.startswith("lk-doctor-") for n in lab_namespaces()), "scratch ns left"


def test_run_never_removes_a_lab_it_did_not_build(topo_file) -> None:
    path, name = topo_file(TOPOS / "pair.yaml")
    assert run_cli("up", path).returncode == 0
    try:
        again = run_cli("run", path)
        assert again.returncode == 2 and "already up" in again.stderr
        assert len(netns.list_names(names.lab_prefix(name))) == 2, "the running lab survived"
        assert state.load(name).status == "up"
    finally:
        run_cli("down", name)


def test_with_attached_lab_leaves_it_running(lab_up) -> None:
    lab = lab_up(TOPOS / "pair.yaml")
    with Lab.attach(lab.name) as same:
        assert same.node("a").run(["true"]).returncode == 0
    assert len(netns.list_names(names.lab_prefix(lab.name))) == 2
    with pytest.raises(UsageError, match="already up"), Lab.load(lab.topo.path):
        pass
    assert len(netns.list_names(names.lab_prefix(lab.name))) == 2


def test_attach_uses_what_was_built_not_the_edited_file(lab_up) -> None:
    lab = lab_up(TOPOS / "pair.yaml")
    Path(lab.topo.path).write_text("name: something-else\nnodes: {x: {}}\n")
    again = Lab.attach(lab.name)
    assert set(again.nodes) == {"a", "b"}
    assert all(v.passed for v in run_checks(again))


def test_negative_check_cannot_pass_when_it_could_not_run(lab_up) -> None:
    from labkit.topology.model import Check
    from labkit.verify.checks import run_check

    lab = lab_up(TOPOS / "pair.yaml")
    busy = lab.node("b").socket()
    busy.bind(("198.19.0.2", 7300))
    busy.listen()
    try:
        check = Check(name="n", kind="reach", loc=lab.topo.loc, params={
            "from": "a", "to": "b", "proto": "tcp", "family": 4, "port": 7300,
            "expect": "fail"})
        assert run_check(lab, check).outcome == "error"
    finally:
        busy.close()


def test_capture_sees_only_its_interface(lab_up) -> None:
    import threading

    from labkit.packets.capture import capture

    lab = lab_up(TOPOS / "routed.yaml")
    result: list = []
    t = threading.Thread(target=lambda: result.append(
        capture(lab.node("r").ns, "eth1", count=10_000, duration=2)))
    t.start()
    time.sleep(0.2)
    # lan3 -> lan2 traffic crosses r on eth3/eth2, never on eth1
    from labkit.verify.checks import run_check

    check = next(c for c in lab.topo.checks if "IPv6 TCP" in c.name)  # h3a -> h2b
    assert run_check(lab, check).passed
    t.join()
    lan23 = (bytes([198, 18, 2]), bytes([198, 18, 3]))
    assert not [f for _, f, _ in result[0].frames if any(x in f for x in lan23)]
    assert not [f for _, f, _ in result[0].frames if b"\xfd\x00\x01\xab\x00\x00\x00\x02" in f]


def test_lock_file_is_gone_after_failed_and_successful_runs(topo_file) -> None:
    path, name = topo_file(TOPOS / "pair.yaml")
    assert run_cli("run", path).returncode == 0
    assert not [f for f in os.listdir(state.STATE_DIR) if f.startswith(f"{name}.")]


def test_sigterm_during_up_rolls_back(topo_file) -> None:
    """A polite kill (CI timeout, systemd) must not leave a half-built lab behind."""
    path, name = topo_file(TOPOS / "star64.yaml")
    prefix = names.lab_prefix(name)
    proc = subprocess.Popen([*LABKIT, "up", path], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(netns.list_names(prefix)) < 10 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    assert not netns.list_names(prefix), "up must roll back on SIGTERM"
    assert state.load(name) is None
