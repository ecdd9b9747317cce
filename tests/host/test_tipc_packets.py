"""scapy TIPC layers against frames captured from a real 6.12 kernel, plus fuzzing.

The fixtures (tests/fixtures/tipc/*.pcap, see README.md there) were captured in the
debian-6.12 VM by capture_fixtures.py. Every captured frame must dissect into the
expected layer and rebuild to the same bytes; random, truncated and mutated bytes must
never make dissection raise.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw, raw
from scapy.utils import rdpcap

from labkit.features.tipc import layers as T
from labkit.features.tipc import uapi
from labkit.features.tipc.identity import node_hash

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tipc"
PCAPS = ("v2_eth_cluster", "v2_bcast_data", "crossover_lo", "udp_bearer", "inject_ghost",
         "v7_master_key", "v7_cluster_key")


@functools.cache
def frames(name: str) -> list[Packet]:
    return list(rdpcap(str(FIXTURES / f"{name}.pcap")))


def tipc_layers(name: str) -> list[Packet]:
    out = []
    for f in frames(name):
        layer = f.getlayer(T.TIPC) or f.getlayer(T.TIPCv7)
        if layer is not None:
            out.append(layer)
    return out


def of(name: str, cls: type[Packet]) -> list[Packet]:
    return [layer for layer in tipc_layers(name) if type(layer) is cls]


# -- captured frames -------------------------------------------------------------------


@pytest.mark.parametrize("name", PCAPS)
def test_every_captured_frame_dissects_and_rebuilds(name: str) -> None:
    assert frames(name), f"{name}.pcap is empty"
    for f in frames(name):
        layer = f.getlayer(T.TIPC) or f.getlayer(T.TIPCv7)
        assert layer is not None, f.summary()
        assert not layer.truncated
        assert raw(f) == bytes(f.original)
        f.summary()
        repr(f)


def test_v2_cluster_formation() -> None:
    assert {T.version_of(f) for f in frames("v2_eth_cluster")} == {2}
    configs = of("v2_eth_cluster", T.TIPCLinkConfig)
    assert {c.mtype for c in configs} == {0, 1, 2}  # DSC_REQ, DSC_RESP, DSC_TRIAL
    for c in configs:
        eth = c.underlayer
        assert (c.version, c.user, c.hsize, c.size, c.non_seq) == (2, 13, 15, 76, 1)
        assert c.net_id == 4711
        assert c.capabilities == T.TIPC_NODE_CAPABILITIES
        assert c.media_type == 1 and c.media_mac == eth.src  # the sender's own MAC
        assert c.node_id.rstrip(b"\0") in (b"nodeA", b"nodeB")
        assert c.prev_node == node_hash(c.node_id)  # trial address = hash of the id
    resp = [c for c in configs if c.mtype == 1]
    assert all(c.dest_domain == node_hash(b"nodeA" if c.node_id.startswith(b"nodeB")
                                            else b"nodeB") for c in resp)
    protos = of("v2_eth_cluster", T.TIPCLinkProtocol)
    assert {p.mtype for p in protos} == {0, 1, 2}  # STATE, RESET, ACTIVATE
    for p in protos:
        assert p.hsize == 10 and p.size in (44, 56)
        assert {p.orig_node, p.dest_node} == {node_hash("nodeA"), node_hash("nodeB")}
    reset = next(p for p in protos if p.mtype == 1)
    assert reset.max_pkt_words * 4 == 1500
    assert bytes(reset.payload).rstrip(b"\0") in (b"va", b"vb")  # the sender's bearer


def test_name_distribution_bulk_and_single() -> None:
    distr = of("v2_eth_cluster", T.TIPCNameDistr)
    items = [(d.mtype, i.type, i.lower, i.upper) for d in distr for i in d.items]
    from_b = {t for m, t, lo, up in items if m == 0 and 30000 <= t < 30012}
    assert from_b == set(range(30000, 30012))  # the 12 bindings made before link-up
    assert (0, 0, node_hash("nodeB"), node_hash("nodeB")) in items  # node binding
    assert (0, 31000, 5, 5) in items and (1, 31000, 5, 5) in items  # publish, withdraw
    for d in distr:
        assert d.size == 40 + 20 * len(d.items)


def test_broadcast_multicast_reaches_the_wire() -> None:
    data = of("v2_bcast_data", T.TIPCData)
    marks = sorted(bytes(d.payload) for d in data)
    assert marks == [b"SMALLMARK-%02d" % i for i in range(20)]
    for d in data:
        assert d.mtype == 1 and d.hsize == 11  # MCAST, 44-byte header
        assert (d.name_type, d.name_instance, d.name_upper) == (18890, 0, 10)
        assert d.dest_port == 4711  # word 5 carries the net id in broadcast multicast
    frags = of("v2_bcast_data", T.TIPCFragmenter)
    assert [f.mtype for f in frags] == [0, 1, 2]  # FIRST, FRAGMENT, LAST
    whole = b"".join(bytes(f.payload) for f in frags)
    inner = T.TIPC(whole)
    assert isinstance(inner, T.TIPCData) and inner.mtype == 1
    assert bytes(inner.payload) == b"BIGMARK-" + b"x" * 4000


def test_crossover_data_on_lo() -> None:
    data = of("crossover_lo", T.TIPCData)
    for f in frames("crossover_lo"):
        assert f.src == f.dst == "00:00:00:00:00:00" and f.type == T.ETH_P_TIPC
    by_mark = {bytes(d.payload)[:13]: d for d in data if bytes(d.payload)}
    named = by_mark[b"MARKER-NAMED-"]
    assert (named.mtype, named.hsize, named.name_type, named.name_instance) == (2, 10, 18888, 1)
    assert named.orig_node == node_hash("dataA") and named.dest_node == node_hash("dataB")
    mcast = by_mark[b"MARKER-MCAST-"]
    assert (mcast.mtype, mcast.hsize, mcast.name_upper) == (1, 11, 5)
    direct = by_mark[b"MARKER-DIRECT"]
    assert (direct.mtype, direct.hsize) == (3, 8)  # 32-byte header, no name
    assert not hasattr(direct, "name_type") or direct.name_type is None
    conn = by_mark[b"MARKER-CONN-0"]
    assert (conn.mtype, conn.hsize) == (0, 6)  # 24-byte header: ports only
    assert any(d.syn for d in data)  # the connection request


def test_udp_bearer() -> None:
    for f in frames("udp_bearer"):
        assert f[UDP].sport == f[UDP].dport == 6118
    configs = of("udp_bearer", T.TIPCLinkConfig)
    assert configs
    for c in configs:
        ip = c.underlayer.underlayer
        assert c.media_type == 3 and c.udp_proto == 0x0800 and c.udp_port == 6118
        assert c.udp_ipv4 == ip.src
    multicast = [c for c in configs if c.underlayer.underlayer.dst == "228.0.18.103"]
    assert multicast and all(c.mtype in (0, 2) for c in multicast)  # requests, trials
    assert of("udp_bearer", T.TIPCLinkProtocol) and of("udp_bearer", T.TIPCNameDistr)


def test_injected_ghost_and_the_kernel_answer() -> None:
    layers = tipc_layers("inject_ghost")
    ghost = [c for c in layers if isinstance(c, T.TIPCLinkConfig)
             and c.node_id.startswith(b"ghost") and c.mtype == 0 and c.version == 2]
    assert {c.net_id for c in ghost} >= {4711, 4712}
    assert any(c.hsize == 5 for c in ghost) and any(c.size == 1500 for c in ghost)
    assert any(type(x) is T.TIPC and x.version == 3 for x in layers)
    ghost_mac = next(c.media_mac for c in ghost)
    answers = [f for f in frames("inject_ghost") if f.dst == ghost_mac]
    kinds = {(type(f[T.TIPC]).__name__, f[T.TIPC].mtype) for f in answers}
    assert ("TIPCLinkConfig", 1) in kinds  # DSC_RESP to the node that does not exist
    assert ("TIPCLinkProtocol", 1) in kinds  # RESET: it tries to bring a link up


@pytest.mark.parametrize(("name", "master"), [("v7_master_key", 1), ("v7_cluster_key", 0)])
def test_encrypted_clusters(name: str, master: int) -> None:
    assert {T.version_of(f) for f in frames(name)} == {7}
    layers = tipc_layers(name)
    assert all(isinstance(x, T.TIPCv7) and x.master_key == master for x in layers)
    assert {x.user for x in layers} == {0, 7, 13}
    for x in layers:
        assert len(x.tag) == 16
        frame_len = len(x)
        if x.user == 13:  # discovery: node id instead of the address, 76 encrypted bytes
            assert x.node_id.rstrip(b"\0") in (b"keyA", b"keyB", b"clA", b"clB")
            assert len(x.ciphertext) == 76 and frame_len == 28 + 76 + 16
        else:
            assert x.addr in {node_hash(i) for i in ("keyA", "keyB", "clA", "clB")}
            assert frame_len == 16 + len(x.ciphertext) + 16
        assert x.seqno > 0
    if master:
        assert {x.tx_key for x in layers} == {0}  # the master key is key 0
    else:
        assert {x.tx_key for x in layers} != {0}


# -- building -------------------------------------------------------------------------


def test_built_discovery_matches_captured_bytes() -> None:
    cap = of("v2_eth_cluster", T.TIPCLinkConfig)[0]
    built = T.TIPCLinkConfig(
        mtype=cap.mtype, non_seq=1, capabilities=cap.capabilities, signature=cap.signature,
        dest_domain=cap.dest_domain, prev_node=cap.prev_node, net_id=cap.net_id,
        media_type=1, media_mac=cap.media_mac, peer_hash=cap.peer_hash,
        sugg_addr=cap.sugg_addr, node_id=cap.node_id,
    )
    assert raw(built) == raw(cap)


def test_built_link_protocol_matches_captured_bytes() -> None:
    cap = next(p for p in of("v2_eth_cluster", T.TIPCLinkProtocol) if p.mtype == 1)
    fields = {f.name: cap.getfieldval(f.name) for f in cap.fields_desc
              if f.name not in ("hsize", "size")}
    built = T.TIPCLinkProtocol(**fields) / Raw(bytes(cap.payload))
    assert raw(built) == raw(cap)[: cap.size]


def test_dispatch_by_version_and_user() -> None:
    assert type(T.TIPC(user=13)) is T.TIPCLinkConfig
    assert type(T.TIPC(user=2)) is T.TIPCData
    assert type(T.TIPC(version=7)) is T.TIPCv7
    for user, cls in T._BY_USER.items():
        b = raw(cls(user=user))
        assert type(T.TIPC(b)) is cls
    assert type(T.TIPC(b"\xe0" + bytes(40))) is T.TIPCv7
    assert type(T.TIPC(b"\x7b" + bytes(40))) is T.TIPC  # version 3: generic


@pytest.mark.parametrize(("mtype", "hsize"), [(0, 24), (1, 44), (2, 40), (3, 32)])
def test_data_header_sizes(mtype: int, hsize: int) -> None:
    pkt = T.TIPCData(mtype=mtype, orig_port=1, dest_port=2) / b"hello"
    b = raw(pkt)
    assert len(b) == hsize + 5
    back = T.TIPC(b)
    assert (back.hsize * 4, back.size, bytes(back.payload)) == (hsize, hsize + 5, b"hello")


def test_name_distr_and_bundle_build() -> None:
    items = [T.TIPCNameItem(type=100 + i, lower=i, upper=i, port=7, key=8) for i in range(3)]
    nd = T.TIPCNameDistr(items=items)
    b = raw(nd)
    assert len(b) == 40 + 60 and int.from_bytes(b[:4], "big") & 0x1FFFF == 100
    assert [i.type for i in T.TIPC(b).items] == [100, 101, 102]
    inner = [T.TIPCData(mtype=0) / b"abc", T.TIPCData(mtype=0) / b"defgh"]
    bundle = T.TIPCBundler(msgs=inner)
    back = T.TIPC(raw(bundle))
    assert isinstance(back, T.TIPCBundler) and back.msgcnt == 2
    assert [bytes(m.payload) for m in back.msgs] == [b"abc", b"defgh"]


def test_v7_build() -> None:
    cfg = T.TIPCv7(user=13, master_key=1, seqno=5, node_id=b"keyA".ljust(16, b"\0"),
                   ciphertext=b"c" * 76, tag=b"t" * 16)
    b = raw(cfg)
    assert len(b) == 28 + 76 + 16 and b[0] >> 5 == 7
    back = T.TIPC(b)
    assert isinstance(back, T.TIPCv7) and back.ciphertext == b"c" * 76 and back.tag == b"t" * 16
    state = T.TIPCv7(user=7, destined=1, tx_key=2, addr=0x01020304, ciphertext=b"x" * 44)
    back = T.TIPCv7(raw(state))
    assert (back.tx_key, back.addr, len(back.ciphertext)) == (2, 0x01020304, 44)


def test_layers_bind_to_ethertype_and_udp_port() -> None:
    frame = Ether(src="02:00:00:00:00:01") / T.TIPCLinkConfig(net_id=1, node_id=b"n1")
    assert frame.type == uapi.ETH_P_TIPC
    assert isinstance(Ether(raw(frame))[T.TIPC], T.TIPCLinkConfig)
    for sport, dport in ((6118, 40000), (40000, 6118)):
        pkt = IP(raw(IP() / UDP(sport=sport, dport=dport) / T.TIPCData(mtype=0)))
        assert isinstance(pkt[UDP].payload, T.TIPCData)
    built = IP() / UDP() / T.TIPCData()
    assert built[UDP].dport == 6118


def test_crafted_frames() -> None:
    mac, ident = "02:00:00:00:00:02", "ghost-1234"
    frames_ = {kind: T.crafted(kind, mac, 4711, ident) for kind in T.FRAME_KINDS}
    ghost = frames_["ghost_discovery"][T.TIPCLinkConfig]
    assert ghost.net_id == 4711 and ghost.node_id.rstrip(b"\0") == ident.encode()
    assert ghost.prev_node == node_hash(ident) and ghost.media_mac == mac
    assert Ether(raw(frames_["wrong_netid"]))[T.TIPC].net_id == 4712
    words = {k: int.from_bytes(raw(v)[14:18], "big") for k, v in frames_.items()}
    assert (words["short_hsize"] >> 21) & 0xF == 5
    assert words["size_mismatch"] & 0x1FFFF == 1500
    assert words["bad_version"] >> 29 == 3
    assert (words["ghost_discovery"] >> 21) & 0xF == 15
    assert words["ghost_discovery"] & 0x1FFFF == 76
    assert T.crafted("wrong_netid", mac, uapi.NET_ID_MAX, ident)[T.TIPC].net_id == 1
    # every kind is the ghost discovery under the same identity but for its one defect
    for kind, frame in frames_.items():
        assert frame[T.TIPC].node_id.rstrip(b"\0") == ident.encode(), kind
    with pytest.raises(ValueError):
        T.crafted("nonsense", mac, 4711, ident)


def test_dissection_uses_scapys_public_api_only() -> None:
    """No layer replaces scapy's dissection loop (a private copy drifts from upstream):
    truncation is handled by fields (ConditionalField), the documented extension point."""
    for cls in (*T.ALL_LAYERS, T.TIPCNameItem):
        assert "do_dissect" not in vars(cls) and not any(
            "do_dissect" in vars(base) for base in cls.__mro__
            if base.__module__.startswith("labkit")), cls


# -- robustness -----------------------------------------------------------------------


def _poke(pkt: Packet) -> None:
    repr(pkt)
    pkt.summary()
    pkt.show(dump=True)
    for layer in pkt.layers():
        pkt.getlayer(layer)


@pytest.mark.parametrize("name", PCAPS)
def test_every_truncation_of_every_captured_frame(name: str) -> None:
    # Each distinct byte string once: frames of a capture repeat (keepalives) and share
    # their headers, so many cuts are the same bytes, which dissect the same way.
    seen: set[bytes] = set()
    seen_tipc: set[bytes] = set()
    for f in frames(name):
        data = bytes(f.original)
        for n in range(14, len(data) + 1):  # below 14 bytes scapy's own Ether raises
            if data[:n] not in seen:
                seen.add(data[:n])
                _poke(Ether(data[:n]))
        payload = raw(f.getlayer(T.TIPC) or f.getlayer(T.TIPCv7))
        for n in range(len(payload) + 1):
            if payload[:n] not in seen_tipc:
                seen_tipc.add(payload[:n])
                _poke(T.TIPC(payload[:n]))
    assert seen and seen_tipc


def test_truncated_header_is_marked() -> None:
    cfg = raw(of("v2_eth_cluster", T.TIPCLinkConfig)[0])
    short = T.TIPC(cfg[:30])
    assert isinstance(short, T.TIPCLinkConfig) and short.truncated
    assert not T.TIPC(cfg).truncated


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    pkt = T.TIPC(data)
    _poke(pkt)
    if data:
        assert raw(pkt) == data  # whatever was read (header, payload, padding) is kept
    _poke(T.TIPCv7(data))
    _poke(Ether(b"\xff" * 6 + b"\x02" * 6 + b"\x88\xca" + data))
    _poke(Ether(raw(Ether() / IP() / UDP(sport=6118, dport=6118))[:42] + data))


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, 15), st.integers(0, 7), st.integers(0, 15), st.integers(0, 0x1FFFF),
       st.binary(max_size=120))
def test_plausible_headers_never_raise(user: int, version: int, hsize: int, size: int,
                                       rest: bytes) -> None:
    w0 = (version << 29) | (user << 25) | (hsize << 21) | size
    data = w0.to_bytes(4, "big") + rest
    pkt = T.TIPC(data)
    _poke(pkt)
    if version == 2 and not pkt.truncated:
        assert type(pkt) is T._BY_USER.get(user, T.TIPC)


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(PCAPS), st.data())
def test_mutated_captured_frames_never_raise(name: str, data: st.DataObject) -> None:
    frame = bytearray(bytes(data.draw(st.sampled_from(frames(name))).original))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(14, len(frame)))
    _poke(Ether(bytes(frame[:cut])))
