"""The TIPC netlink client against a kernel with TIPC (the debian-6.12 VM tier).

Two namespaces joined by a veth form a cluster through labkit's own client; iproute2's
`tipc` tool, run in the same namespaces, must see the same identities, links and
bindings. Each test's namespaces are removed in the fixture, pass or fail.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from labkit.base import netns
from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.features.tipc.client import TipcNetlink
from labkit.features.tipc.identity import node_hash, node_id_bytes, node_id_str
from labkit.features.tipc.messages import build_net_set
from labkit.features.tipc.uapi import ETH_P_TIPC

pytestmark = [pytest.mark.kernel, pytest.mark.needs("tipc")]

NET_ID = 4711
DEF_LINK_PRI = 10  # net/tipc/bearer.h TIPC_DEF_LINK_PRI: the eth and udp media's priority
LINK_TIMEOUT = 30.0  # s; discovery + address trial take ~2 s, TCG is slow


def _tipc_available() -> bool:
    subprocess.run(["modprobe", "tipc"], capture_output=True)
    return os.path.isdir("/sys/module/tipc")


@dataclass
class Pair:
    """Two namespaces a and b with a veth between them (ifa in a, ifb in b)."""

    a: str
    b: str
    ifa: str
    ifb: str
    id_a: str
    id_b: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def pair() -> Iterator[Callable[..., Pair]]:
    """Make namespace pairs on demand; every namespace made is deleted afterwards."""
    if not _tipc_available():
        pytest.skip("this kernel has no TIPC (run the kernel tier in the VM)")
    made: list[str] = []

    def make(addrs: tuple[str, str] | None = None) -> Pair:
        tag = secrets.token_hex(3)
        a, b = f"lk-tq{tag}.a", f"lk-tq{tag}.b"
        for ns in (a, b):
            netns.create(ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        ifa, ifb = f"tq{tag}a", f"tq{tag}b"
        _ip("link", "add", ifa, "netns", a, "type", "veth", "peer", "name", ifb, "netns", b)
        for ns, dev in ((a, ifa), (b, ifb)):
            _ip("-n", ns, "link", "set", dev, "up")
        if addrs:
            _ip("-n", a, "addr", "add", addrs[0], "dev", ifa)
            _ip("-n", b, "addr", "add", addrs[1], "dev", ifb)
        return Pair(a, b, ifa, ifb, f"n{tag}A", f"n{tag}B")

    try:
        yield make
    finally:
        for ns in made:
            netns.delete(ns)


def tipc_cmd(ns: str, *args: str) -> str:
    """iproute2's own view, from inside the namespace."""
    out = subprocess.run(["ip", "netns", "exec", ns, "tipc", *args], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_for(what: str, fn: Callable[[], object], timeout: float = LINK_TIMEOUT) -> object:
    return wait_until(fn, timeout, what, interval=0.2)


def form_cluster(p: Pair, ta: TipcNetlink, tb: TipcNetlink) -> None:
    ta.set_net(NET_ID, p.id_a)
    tb.set_net(NET_ID, p.id_b)
    assert ta.enable_bearer_eth(p.ifa) == f"eth:{p.ifa}"
    assert tb.enable_bearer_eth(p.ifb, priority=20) == f"eth:{p.ifb}"
    ta.wait_links_up(1, timeout=LINK_TIMEOUT)
    tb.wait_links_up(1, timeout=LINK_TIMEOUT)


def name_rows(tn: TipcNetlink) -> set[tuple[int, int, int, str, int, str]]:
    """(type, lower, upper, scope, port, node identity) per binding, like `tipc nametable`."""
    scopes = {1: "zone", 2: "cluster", 3: "node"}
    rows = set()
    for p in tn.name_table():
        raw = tn.node_id_of(p["node"])
        ident = node_id_str(raw) if raw else f"{p['node']:x}"
        rows.add((p["type"], p["lower"], p["upper"], scopes.get(p["scope"], "?"), p["port"],
                  ident))
    return rows


def iproute2_name_rows(ns: str) -> set[tuple[int, int, int, str, int, str]]:
    rows = set()
    for line in tipc_cmd(ns, "nametable", "show").splitlines()[1:]:
        f = line.split()
        if len(f) >= 6 and f[0].isdigit():
            rows.add((int(f[0]), int(f[1]), int(f[2]), f[3], int(f[4]), f[5]))
    return rows


def test_cluster_forms_and_iproute2_agrees(pair: Callable[..., Pair]) -> None:
    p = pair()
    with TipcNetlink(p.a) as ta, TipcNetlink(p.b) as tb:
        form_cluster(p, ta, tb)

        net = ta.net()
        assert net["net_id"] == NET_ID
        assert net["node_id"] == node_id_bytes(p.id_a)
        assert net["identity"] == p.id_a
        hash_a, hash_b = node_hash(node_id_bytes(p.id_a)), node_hash(node_id_bytes(p.id_b))
        assert ta.own_address() == hash_a
        assert tb.own_address() == hash_b

        links = [lk for lk in ta.links() if not lk["broadcast"]]
        assert len(links) == 1
        link = links[0]
        assert link["name"] == f"{p.id_a}:{p.ifa}-{p.id_b}:{p.ifb}"
        assert link["up"] and link["active"]
        assert link["mtu"] == 1500
        # A link starts at its own bearer's priority (a's: the eth media's default). The
        # peer's RESET/ACTIVATE messages carry priority 0, so a does not adopt b's 20
        # (net/tipc/link.c: tipc_link_build_reset_msg, tipc_link_proto_rcv); only a
        # STATE_MSG from a `link set priority` moves it (test_link_priority_set_...).
        assert link["priority"] == DEF_LINK_PRI
        # Positive control: b's link does carry its bearer's 20, so the reading is per link.
        assert [lk["priority"] for lk in tb.links() if not lk["broadcast"]] == [20]
        assert tipc_cmd(p.a, "link", "get", "priority", "link", link["name"]).split() == \
            [str(DEF_LINK_PRI)]
        assert "retransmitted" in link["stats"]
        assert any(lk["broadcast"] and lk["name"] == "broadcast-link" for lk in ta.links())

        assert [b["name"] for b in tb.bearers()] == [f"eth:{p.ifb}"]
        assert tb.bearers()[0]["priority"] == 20

        nodes = ta.nodes()
        assert [(n["addr"], n["identity"], n["up"]) for n in nodes] == [(hash_b, p.id_b, True)]

        # Both nodes publish their node-state binding (type 0) cluster wide.
        def both_nodes() -> bool:
            published = {(r["type"], r["node"]) for r in ta.name_table()}
            return {(0, hash_a), (0, hash_b)} <= published

        wait_for("both nodes in a's name table", both_nodes)

        # iproute2, in the same namespaces, agrees.
        out = tipc_cmd(p.a, "node", "get", "identity")
        assert re.search(rf"^{re.escape(p.id_a)}\s+{hash_a:08x}$", out, re.M), out
        assert tipc_cmd(p.a, "node", "get", "netid").strip() == str(NET_ID)
        out = tipc_cmd(p.a, "link", "list")
        assert f"{link['name']}: up" in out.splitlines(), out
        out = tipc_cmd(p.a, "node", "list")
        assert re.search(rf"^{re.escape(p.id_b)}\s+{hash_b:08x}\s+up$", out, re.M), out
        assert tipc_cmd(p.b, "bearer", "list").split() == [f"eth:{p.ifb}"]

        def same_table() -> bool:
            return name_rows(ta) == iproute2_name_rows(p.a)

        wait_for("labkit and iproute2 name tables to agree", same_table, timeout=10)


def test_link_priority_set_reaches_both_ends(pair: Callable[..., Pair]) -> None:
    """`tipc link set priority` on one end: that end's link has it at once (labkit reads
    what iproute2 reads), and the peer adopts it from the STATE_MSG that carries it
    (tipc_link_set_prio; tipc_link_proto_rcv resets the peer's link to apply it)."""
    p = pair()
    with TipcNetlink(p.a) as ta, TipcNetlink(p.b) as tb:
        form_cluster(p, ta, tb)

        def prio(tn: TipcNetlink) -> int:
            return next(lk["priority"] for lk in tn.links() if not lk["broadcast"])

        name = next(lk["name"] for lk in ta.links() if not lk["broadcast"])
        assert (prio(ta), prio(tb)) == (DEF_LINK_PRI, 20)  # before: each its bearer's
        tipc_cmd(p.a, "link", "set", "priority", "15", "link", name)
        assert prio(ta) == 15
        assert tipc_cmd(p.a, "link", "get", "priority", "link", name).split() == ["15"]
        wait_for("b's link to adopt priority 15", lambda: prio(tb) == 15)
        tb.wait_links_up(1, timeout=LINK_TIMEOUT)  # b reset its link to apply it
        ta.wait_links_up(1, timeout=LINK_TIMEOUT)
        assert (prio(ta), prio(tb)) == (15, 15)


def test_net_set_refused_once_bearers_exist(pair: Callable[..., Pair]) -> None:
    p = pair()
    with TipcNetlink(p.a) as ta, TipcNetlink(p.b) as tb:
        form_cluster(p, ta, tb)
        ta.set_net(NET_ID, p.id_a)  # nothing changes: accepted, as when a lab is set up twice
        with pytest.raises(LabkitError, match="before enabling bearers"):
            ta.set_net(NET_ID + 1)
        with pytest.raises(LabkitError, match="before enabling bearers"):
            ta.set_net(None, "someoneelse")
        # The kernel's own answer, bypassing the client's guard: EPERM.
        with pytest.raises(LabkitError, match="Operation not permitted") as err:
            ta._request(build_net_set(NET_ID + 1))
        assert "before enabling bearers" in err.value.hint
        assert ta.net()["net_id"] == NET_ID


def test_identity_is_not_silently_kept(pair: Callable[..., Pair]) -> None:
    p = pair()
    with TipcNetlink(p.a) as ta:
        ta.set_net(NET_ID, p.id_a)
        with pytest.raises(LabkitError, match="already"):
            ta.set_net(None, p.id_b)  # the kernel answers 0 and keeps the first identity
        assert ta.net()["identity"] == p.id_a


def test_kernel_error_text_reaches_the_user(pair: Callable[..., Pair]) -> None:
    p = pair()
    with TipcNetlink(p.a) as ta:
        with pytest.raises(LabkitError, match=r"own node identity") as err:
            ta.set_key(os.urandom(20), master=True)  # no identity yet: EPERM + ext-ack
        assert "set_net" in err.value.hint
        ta.set_net(NET_ID, p.id_a)
        with pytest.raises(LabkitError, match=r"Failed to enable media") as err:
            ta.enable_bearer_eth("nosuchdev0")
        assert "No such device" in str(err.value)


def capture_tipc(ns: str, dev: str, seconds: float, limit: int = 200) -> list[bytes]:
    """TIPC frames (the TIPC ethertype) seen on dev during the given time."""
    sock = netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_TIPC))
    frames: list[bytes] = []
    try:
        sock.bind((dev, ETH_P_TIPC))
        deadline = time.monotonic() + seconds
        while len(frames) < limit and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                frames.append(sock.recv(65535))
            except TimeoutError:
                break
    finally:
        sock.close()
    return frames


def test_master_key_set_and_reported(pair: Callable[..., Pair]) -> None:
    from scapy.layers.l2 import Ether

    from labkit.features.tipc.layers import TIPCv7, version_of

    p = pair()
    key = os.urandom(20)  # AES-128 + 4-byte salt
    with TipcNetlink(p.a) as ta, TipcNetlink(p.b) as tb:
        ta.set_net(NET_ID, p.id_a)
        tb.set_net(NET_ID, p.id_b)
        ta.set_key(key, master=True)
        tb.set_key(key, master=True)
        ta.enable_bearer_eth(p.ifa)
        tb.enable_bearer_eth(p.ifb)
        ta.wait_links_up(1, timeout=LINK_TIMEOUT)

        # The kernel reports its keys on the wire: every frame is TIPCv7, and the
        # encryption header says the sender holds a master key (M bit).
        frames = [Ether(f) for f in capture_tipc(p.b, p.ifb, seconds=4)]
        assert frames, "no TIPC frames on the link"
        assert {version_of(f) for f in frames} == {7}
        assert all(f[TIPCv7].master_key == 1 for f in frames)
        assert tipc_cmd(p.a, "link", "list").count(": up") == 2

        # A refused key never shows its bytes.
        with pytest.raises(LabkitError) as err:
            ta.set_key(key, alg="cbc(aes)")
        text = f"{err.value} {err.value.hint} {err.value!r}"
        assert key.hex() not in text and repr(key) not in text
        assert "gcm(aes)" in err.value.hint

        ta.set_key(os.urandom(20), node_id=p.id_a)  # per-node TX key
        ta.set_key(os.urandom(36), node_id=p.id_b)  # per-node RX key for b
        ta.set_key(None, rekeying=0)
        ta.flush_keys()


def test_udp_bearer_default_multicast(pair: Callable[..., Pair]) -> None:
    p = pair(("10.77.0.1/24", "10.77.0.2/24"))
    with TipcNetlink(p.a) as ta, TipcNetlink(p.b) as tb:
        ta.set_net(NET_ID, p.id_a)
        tb.set_net(NET_ID, p.id_b)
        assert ta.enable_bearer_udp("u1", ("10.77.0.1", 6118)) == "udp:u1"
        tb.enable_bearer_udp("u1", "10.77.0.2")
        (bearer,) = ta.bearers()
        assert bearer["udp"]["local"] == ("10.77.0.1", 6118)
        assert bearer["udp"]["remote"] == (f"228.0.{NET_ID >> 8}.{NET_ID & 0xFF}", 6118)
        with pytest.raises(LabkitError, match="Invalid argument"):
            ta.add_udp_remote("u1", "10.77.0.9")  # not on a multicast bearer
        links = ta.wait_links_up(1, timeout=LINK_TIMEOUT)
        assert any(lk["up"] and lk["name"] == f"{p.id_a}:u1-{p.id_b}:u1" for lk in links)
        assert tipc_cmd(p.a, "bearer", "list").split() == ["udp:u1"]


def test_udp_bearer_unicast_replicast(pair: Callable[..., Pair]) -> None:
    p = pair(("10.78.0.1/24", "10.78.0.2/24"))
    with TipcNetlink(p.a) as ta, TipcNetlink(p.b) as tb:
        ta.set_net(NET_ID, p.id_a)
        tb.set_net(NET_ID, p.id_b)
        ta.enable_bearer_udp("r1", "10.78.0.1", ("10.78.0.2", 6118))
        tb.enable_bearer_udp("r1", "10.78.0.2", "10.78.0.1")
        ta.add_udp_remote("r1", "10.78.0.3")
        assert ta.bearers()[0]["udp"]["multi_remote"] is True
        ta.wait_links_up(1, timeout=LINK_TIMEOUT)
        remotes = tipc_cmd(p.a, "bearer", "get", "media", "udp", "name", "r1", "remoteip")
        assert set(remotes.split()) == {"10.78.0.2", "10.78.0.3"}


def test_no_namespace_is_created_by_accident() -> None:
    name = f"lk-tq{secrets.token_hex(3)}.ghost"
    with pytest.raises(LabkitError, match="no network namespace"):
        TipcNetlink(name).open()
    assert not netns.exists(name)
