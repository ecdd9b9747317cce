"""kproxy pairs in a real lab on this kernel: every mode carries 64 MiB intact both ways,
forwards half-closes and resets after the data before them, takes 100 connections at
once, and the L7 policy drops exactly the messages it should (counted) in the kernel and
in user space alike. A proxy that is killed leaves no BPF program or map behind, and
`labkit down` leaves nothing at all.

One lab (topologies/kproxy.yaml, renamed) serves most tests; the tests that kill a proxy
or take a lab down make their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labkit.base import netns
from labkit.base.wait import wait_until
from labkit.features.kproxy import bpfsys, measure, tcpstate
from labkit.features.kproxy.lab import config_of
from labkit.features.kproxy.setup import answers
from labkit.lab import names, state
from labkit.lab.lab import Lab
from tests.conftest import ROOT, renamed, unique

pytestmark = pytest.mark.needs_root
TOPOLOGY = ROOT / "topologies" / "kproxy.yaml"
PROXY_MODES = {"sockmap": "km", "splice": "ks", "boomerang": "kb"}
ALL_MODES = {**PROXY_MODES, "direct": "kd"}
POLICY_PAIRS = {"sockmap": "kl", "splice": "sl", "boomerang": "bl"}
MiB = 1 << 20


@pytest.fixture(autouse=True)
def no_leftover_namespaces() -> Iterator[None]:
    """The module's lab outlives single tests; its removal is checked at module end."""
    yield


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    name = unique("kp")
    path = tmp_path_factory.mktemp("kproxy") / f"{name}.yaml"
    path.write_text(renamed(TOPOLOGY, name))
    running = Lab.load(str(path)).up()
    try:
        yield running
    finally:
        running.down()
        assert not netns.list_names(names.lab_prefix(name))


def status_of(lab: Lab, pair: str) -> dict[str, Any]:
    live = answers(lab, config_of(lab).pairs[pair])
    assert live is not None, f"the proxy of {pair} does not answer"
    return live


# -- data -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(ALL_MODES))
def test_64_mib_arrive_intact_both_ways(lab: Lab, mode: str) -> None:
    """Intact both ways; through the sockmap pair the kernel moved them: the verdict
    program's own per-socket byte counters (a BPF map) judged all of them, and no
    connection fell back to the user-space relay (the control for both:
    test_a_sockmap_connection_the_kernel_refuses_is_relayed_in_user_space)."""
    pair = ALL_MODES[mode]
    before = status_of(lab, pair) if mode == "sockmap" else {}
    path = measure.path_of(lab, pair, None)
    got = measure.integrity(lab, path, 64 * MiB)
    assert got.get("error") is None, got
    assert got["up"] and got["down"], got
    if mode == "sockmap":
        after = status_of(lab, pair)
        assert after["user_space_fallbacks"] - before["user_space_fallbacks"] == 0, after
        for way in ("upstream", "downstream"):
            judged = after[way]["bytes"] - before[way]["bytes"]
            assert judged >= 64 * MiB, (way, judged, after)


# -- closes ---------------------------------------------------------------------------


class Legs:
    """A client socket connected through a pair and the server socket that accepted the
    proxy's (or, direct, the client's) connection."""

    def __init__(self, lab: Lab, pair_name: str) -> None:
        pair = config_of(lab).pairs[pair_name]
        assert pair.entry is not None
        self.listener = lab.node("server").socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((pair.upstream.address, pair.upstream.port))
        self.listener.listen(1)
        self.listener.settimeout(20)
        self.client = lab.node("client").socket()
        self.client.settimeout(20)
        self.client.connect((pair.entry.address, pair.entry.port))
        self.server, _ = self.listener.accept()
        self.server.settimeout(20)

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            s.close()


@pytest.fixture
def legs(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Legs]:
    made = Legs(lab, request.param)
    yield made
    made.close()


def read_to_end(sock: socket.socket) -> tuple[bytes, str]:
    """Everything until the stream ends; how it ended: 'eof' or 'reset'."""
    buf = bytearray()
    while True:
        try:
            chunk = sock.recv(MiB)
        except ConnectionResetError:
            return bytes(buf), "reset"
        if not chunk:
            return bytes(buf), "eof"
        buf += chunk


class Reader(threading.Thread):
    """read_to_end in the background, so that a sender never waits on full buffers."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.result: tuple[bytes, str] = (b"", "not finished")

    def run(self) -> None:
        self.result = read_to_end(self.sock)

    def outcome(self) -> tuple[bytes, str]:
        self.join(30)
        return self.result


def started(reader: Reader) -> Reader:
    reader.start()
    return reader


@pytest.mark.parametrize("legs", list(ALL_MODES.values()), indirect=True,
                         ids=list(ALL_MODES))
def test_half_close_reaches_the_other_side_after_the_data_both_ways(legs: Legs) -> None:
    up, down = os.urandom(3 * MiB), os.urandom(2 * MiB)
    reader = started(Reader(legs.server))
    legs.client.sendall(up)
    legs.client.shutdown(socket.SHUT_WR)
    got, how = reader.outcome()
    assert (len(got), how) == (len(up), "eof") and got == up
    # the other direction still works after the half-close, and closes the same way
    reader = started(Reader(legs.client))
    legs.server.sendall(down)
    legs.server.shutdown(socket.SHUT_WR)
    got, how = reader.outcome()
    assert (len(got), how) == (len(down), "eof") and got == down


@pytest.mark.parametrize("mode", list(PROXY_MODES))
def test_a_request_and_fin_sent_before_the_proxy_joins_still_arrive(lab: Lab,
                                                                    mode: str) -> None:
    """A client may send everything and half-close before the proxy has connected
    upstream; sockmap refuses sockets that are no longer ESTABLISHED (EOPNOTSUPP), so the
    sockmap proxy relays such a connection in user space instead (whether the FIN beat
    the join is up to timing; test_kproxy_bpf shows the refusal itself)."""
    pair = config_of(lab).pairs[PROXY_MODES[mode]]
    assert pair.entry is not None
    listener = lab.node("server").socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((pair.upstream.address, pair.upstream.port))
    listener.listen(1)
    listener.settimeout(20)
    client = lab.node("client").socket()
    client.settimeout(20)
    try:
        client.connect((pair.entry.address, pair.entry.port))
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        answer_half_closed_request(listener, client)
    finally:
        client.close()
        listener.close()


def test_a_sockmap_connection_the_kernel_refuses_is_relayed_in_user_space(lab: Lab) -> None:
    """The positive control of the sockmap mechanism checks above. The server's accept
    queue is held full, so it drops the proxy's SYN (TCP resends it a second later): the
    client's request and FIN are in before the upstream connection exists, sockmap
    refuses the half-closed socket, and the proxy relays that connection in user space.
    Then, and only then, the fallback counter moves, while the verdict program's byte
    counters do not."""
    pair = config_of(lab).pairs["km"]
    assert pair.entry is not None
    upstream = (pair.upstream.address, pair.upstream.port)
    listener = lab.node("server").socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(upstream)
    listener.listen(0)  # room for one queued connection: the filler's
    listener.settimeout(20)
    filler = lab.node("server").socket()
    client = lab.node("client").socket()
    client.settimeout(20)
    before = status_of(lab, "km")
    try:
        filler.connect(upstream)
        client.connect((pair.entry.address, pair.entry.port))
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        wait_until(lambda: lab.node("proxy").run(
            ["ss", "-Htn", "state", "close-wait", f"( sport = :{pair.entry.port} )"]
        ).stdout.strip() != "", 20, "the proxy's client socket to have the client's FIN")
        held, _ = listener.accept()  # the filler: the proxy's resent SYN now fits
        held.close()
        answer_half_closed_request(listener, client)
    finally:
        for s in (client, filler, listener):
            s.close()
    after = status_of(lab, "km")
    assert after["user_space_fallbacks"] - before["user_space_fallbacks"] == 1, after
    assert after["upstream"]["bytes"] == before["upstream"]["bytes"], after


def answer_half_closed_request(listener: socket.socket, client: socket.socket) -> None:
    """The server accepts, reads the client's whole request (ended by its FIN), answers and
    half-closes; the client must read the whole answer, then the end of the stream."""
    server, _ = listener.accept()
    with server:
        server.settimeout(20)
        assert read_to_end(server) == (b"GET / HTTP/1.0\r\n\r\n", "eof")
        server.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
        server.shutdown(socket.SHUT_WR)
        assert read_to_end(client) == (b"HTTP/1.0 200 OK\r\n\r\nhello", "eof")


def reset_after(sender: socket.socket, receiver: socket.socket,
                data: bytes) -> tuple[bytes, str]:
    """Send, wait until the next hop acknowledged everything, then reset (RST); what the
    receiver got and how its stream ended."""
    reader = started(Reader(receiver))
    sender.sendall(data)
    wait_until(lambda: tcpstate.outq(sender) == 0, 20, "the data to be acknowledged")
    tcpstate.reset(sender)
    return reader.outcome()


@pytest.mark.parametrize("legs", list(ALL_MODES.values()), indirect=True,
                         ids=list(ALL_MODES))
def test_a_client_reset_reaches_the_server_after_the_data(legs: Legs) -> None:
    data = os.urandom(MiB)
    got, how = reset_after(legs.client, legs.server, data)
    assert how == "reset", "the server saw a FIN where the client had reset"
    assert got == data


@pytest.mark.parametrize("legs", list(ALL_MODES.values()), indirect=True,
                         ids=list(ALL_MODES))
def test_a_server_reset_reaches_the_client_after_the_data(legs: Legs) -> None:
    data = os.urandom(MiB)
    got, how = reset_after(legs.server, legs.client, data)
    assert how == "reset", "the client saw a FIN where the server had reset"
    assert got == data


# -- many connections -----------------------------------------------------------------


@pytest.mark.parametrize("mode", list(PROXY_MODES))
def test_100_concurrent_connections_through_one_pair(lab: Lab, mode: str) -> None:
    pair = PROXY_MODES[mode]
    path = measure.path_of(lab, pair, None)
    before = status_of(lab, pair)
    server = measure.start_server(lab, path, timeout=120, connections=100)
    try:
        results = measure.run_client(lab, path, [
            {"test": "up", "id": f"c{i}", "bytes": 256 * 1024, "hash": True,
             "parallel": True} for i in range(100)], timeout=120)
    finally:
        measure.stop(server, wait=30)
    assert len(results) == 100
    bad = [r for r in results if "error" in r or r["sent"]["sha256"] != r["server"]["sha256"]]
    after = status_of(lab, pair)
    assert not bad, json.dumps([bad[:3], after])
    assert after["accepted"] - before["accepted"] == 100
    # every connection was closed both ways (FIN forwarded each way), none left open
    wait_until(lambda: status_of(lab, pair)["active"] == 0, 30, f"{pair} to close them all")
    assert status_of(lab, pair)["half_closes"] - before["half_closes"] == 200


# -- the L7 policy --------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(POLICY_PAIRS))
def test_the_policy_drops_exactly_the_matching_messages_and_counts_them(
        lab: Lab, mode: str) -> None:
    pair = POLICY_PAIRS[mode]
    path = measure.path_of(lab, pair, None)
    before = status_of(lab, pair)["upstream"]
    spec = {"test": "policy", "id": "policy", "framed": 4, "prefix": b"DROP".hex(),
            "messages": 3000, "every": 7, "max_payload": 5000}
    server = measure.start_server(lab, path, timeout=60, connections=1)
    try:
        res = measure.run_client(lab, path, [spec], timeout=60)[0]
    finally:
        measure.stop(server, wait=30)
    assert "error" not in res, res
    expected = res["messages_sent"] - res["expected_drops"]
    assert 0 < res["expected_drops"] < res["messages_sent"]  # both kinds were sent
    assert res["server"]["messages"] == expected
    assert res["server"]["bytes"] == res["expected_bytes"]
    assert res["server"]["sha256"] == res["expected_sha256"]  # the rest passed intact
    after = status_of(lab, pair)["upstream"]
    assert after["dropped_messages"] - before["dropped_messages"] == res["expected_drops"]
    # the proxy also passed the test's own control message (framed JSON) ahead of them
    assert after["messages"] - before["messages"] == expected + 1


@pytest.mark.parametrize("legs", list(POLICY_PAIRS.values()), indirect=True,
                         ids=list(POLICY_PAIRS))
def test_a_message_over_max_message_resets_both_sides(legs: Legs) -> None:
    ok = (5).to_bytes(4, "big") + b"hello"
    legs.client.sendall(ok + (65537).to_bytes(4, "big") + b"x" * 100)
    got, how = read_to_end(legs.server)
    assert (got, how) == (ok, "reset")  # the valid message passed, then the stream died
    _, how = read_to_end(legs.client)
    assert how == "reset"


# -- what a proxy leaves behind ---------------------------------------------------------

SMALL = """name: {name}
nodes:
  client: {{}}
  proxy: {{}}
  server: {{}}
links:
  - endpoints: [client:eth1, proxy:eth1]
  - endpoints: [proxy:eth2, server:eth1]
kproxy:
  pairs:
    - {{name: p, mode: sockmap, proxy: proxy, listen: 9000, upstream: "server:9100",
       client: client, policy: {{drop_prefix: DROP}}}}
    - {{name: s, mode: splice, proxy: proxy, listen: 9001, upstream: "server:9101",
       client: client}}
"""


@pytest.fixture
def small_lab(tmp_path: Path) -> Iterator[Lab]:
    name = unique("kq")
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMALL.format(name=name))
    running = Lab.load(str(path)).up()
    try:
        yield running
    finally:
        running.down()


def bpf_ids(live: dict[str, Any]) -> list[tuple[str, int]]:
    return [("prog", i) for i in live["bpf"]["progs"]] + \
        [("map", i) for i in live["bpf"]["maps"]]


def test_killing_the_proxy_leaves_no_bpf_program_or_map(small_lab: Lab) -> None:
    live = status_of(small_lab, "p")
    objects = bpf_ids(live)
    assert len(objects) == 6  # verdict, parser; peers, active, flows, misses
    assert all(bpfsys.exists(kind, i) for kind, i in objects)  # positive control
    # a connection through it, so that sockets sit in its maps when it dies
    legs = Legs(small_lab, "p")
    try:
        os.kill(live["pid"], signal.SIGKILL)
        wait_until(lambda: not any(bpfsys.exists(kind, i) for kind, i in objects), 20,
                   "the kernel to free the killed proxy's programs and maps")
    finally:
        legs.close()
    assert not [o for o in bpfsys.listing("prog", "kp_") if o.id in live["bpf"]["progs"]]


def test_down_leaves_nothing(tmp_path: Path) -> None:
    name = unique("kr")
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMALL.format(name=name))
    running = Lab.load(str(path)).up()
    try:
        live = [status_of(running, p) for p in ("p", "s")]
        objects = bpf_ids(live[0])
        files = [f for f in os.listdir(state.STATE_DIR) if f.startswith(f"{name}.kproxy-")]
        pids = [x["pid"] for x in live]
        # positive controls: everything the checks below look for is there now
        assert objects and all(bpfsys.exists(kind, i) for kind, i in objects)
        assert {f"{name}.kproxy-p.sock", f"{name}.kproxy-p.log"} <= set(files)
        assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
        assert netns.list_names(names.lab_prefix(name))
    finally:
        removed = running.down()
    assert set(pids) <= set(removed.processes)
    assert not netns.list_names(names.lab_prefix(name))
    assert not [f for f in os.listdir(state.STATE_DIR) if f.startswith(f"{name}.")]
    wait_until(lambda: not any(bpfsys.exists(kind, i) for kind, i in objects), 20,
               "the kernel to free the proxies' programs and maps")
    assert not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


# -- the verbs ------------------------------------------------------------------------


def test_verify_throughput_passes_fails_and_cannot_run(lab: Lab) -> None:
    from tests.conftest import run_cli

    # kb declares `threshold: 10` in the topology; nothing on the command line
    ok = run_cli("verify", "throughput", lab.name, "--pair", "kb", "--seconds", "1", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "at or above 10 MB/s" in json.loads(ok.stdout)["verdicts"][0]["detail"]
    too_much = run_cli("verify", "throughput", lab.name, "--pair", "km", "--threshold",
                       "1e9", "--seconds", "1")
    assert too_much.returncode == 1 and "below 1e+09 MB/s" in too_much.stdout
    no_threshold = run_cli("verify", "throughput", lab.name, "--pair", "ks")
    assert no_threshold.returncode == 2 and "--threshold" in no_threshold.stdout


def test_kproxy_status_shows_pairs_counters_and_bpf_ids(lab: Lab) -> None:
    import typer
    from typer.testing import CliRunner

    from labkit.features.kproxy import cli as kproxy

    app = typer.Typer()
    kproxy.register(app)
    shown = CliRunner().invoke(app, ["kproxy", "status", lab.name, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)["pairs"]
    assert set(data) == {"km", "ks", "kb", "kd", "kl", "sl", "bl"}
    assert data["kd"]["proxy_process"] is None  # direct: no proxy
    km = data["km"]["proxy_process"]
    assert km["listening"] and km["mode"] == "sockmap" and len(km["bpf"]["progs"]) == 1
    assert all(bpfsys.exists("prog", i) for i in km["bpf"]["progs"])
    text = CliRunner().invoke(app, ["kproxy", "status", lab.name])
    assert "FIN/RST FWD" in text.output and "km    sockmap" in text.output
    # the counters panel's rows: one per proxied pair, none for direct
    from labkit.features.kproxy.feature import FEATURE

    rows = FEATURE.counters(json.loads(shown.output))
    assert set(rows) == {"km sockmap", "ks splice", "kb boomerang", "kl sockmap",
                         "sl splice", "bl boomerang"}
    assert rows["km sockmap"]["state"] == "listening"


# -- the meter-vs-iperf3 check ---------------------------------------------------------


def qdiscs(lab: Lab, node: str) -> list[str]:
    shown = lab.node(node).run(["tc", "-j", "qdisc", "show"], timeout=30).stdout
    return sorted(q["kind"] for q in json.loads(shown or "[]") if q.get("root"))


@pytest.mark.parametrize("pair,entry_node", [("kb", "proxy"), ("kd", "server")])
def test_the_shaped_check_holds_both_tools_to_the_rate_then_unshapes(
        lab: Lab, pair: str, entry_node: str) -> None:
    """Held to 20 MB/s, neither labkit's meter nor iperf3 goes over it (tbf's 256 KiB
    burst is 1.3% of a second), both ways; afterwards no tbf is left, and the same meter
    runs far above the cap (the control: the cap was the shaper, not the machine)."""
    assert "tbf" not in qdiscs(lab, "client") + qdiscs(lab, entry_node)
    got = measure.agreement(lab, pair, None, runs=1, seconds=1.0, shaped_MBps=20)
    assert len(got["shaped_on"]) == 2 and got["shaped_on"][1].startswith(entry_node + ":")
    for way in ("up", "down"):
        rates = got[way]["meter_MBps"] + got[way]["iperf3_MBps"]
        assert len(rates) == 2 and not got[way]["errors"], got
        assert all(0 < r <= 20 * 1.05 for r in rates), got
    assert "tbf" not in qdiscs(lab, "client") + qdiscs(lab, entry_node)
    path = measure.path_of(lab, pair, None)
    free = measure._meter_once(lab, path, "up", 1.0)
    assert free["MBps"] > 20 * 3, free
