"""The TIPCv2 requests labkit sends, byte for byte, against include/uapi/linux/tipc_netlink.h.

The expected bytes are assembled here with struct from the uapi numbers alone (not from
pyroute2), the way iproute2's tipc tool lays them out: nests flagged NLA_F_NESTED,
4-byte aligned attributes, host-order integers, raw sockaddrs. No TIPC kernel needed.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError

from labkit.base import netns
from labkit.errors import LabkitError, MissingFeatureError, UsageError
from labkit.features.tipc import client, identity, uapi
from labkit.features.tipc import messages as msgs
from labkit.features.tipc.attributes import tipcmsg
from tests import skips

FAMILY = 0x1D  # any genl family id: the kernel assigns it at module load
SEQ, PID = 7, 4242
ACK = NLM_F_REQUEST | NLM_F_ACK
DUMP = NLM_F_REQUEST | NLM_F_DUMP
NESTED = 1 << 15

# uapi numbers, spelled out independently of the module under test
NL_BEARER_ENABLE, NL_BEARER_GET = 3, 4
NL_LINK_GET, NL_NODE_GET, NL_NET_GET, NL_NET_SET, NL_NAME_TABLE_GET = 8, 13, 14, 15, 16
NL_BEARER_ADD, NL_KEY_SET, NL_KEY_FLUSH = 21, 23, 24
NLA_BEARER, NLA_NODE, NLA_NET = 1, 6, 7
BEARER_NAME, BEARER_PROP, BEARER_DOMAIN, BEARER_UDP_OPTS = 1, 2, 3, 4
UDP_LOCAL, UDP_REMOTE = 1, 2
PROP_PRIO = 1
NODE_ID, NODE_KEY, NODE_KEY_MASTER, NODE_REKEYING = 3, 4, 5, 6
NET_ID, NET_NODEID, NET_NODEID_W1 = 1, 3, 4


def attr(kind: int, payload: bytes = b"") -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def nest(kind: int, *children: bytes) -> bytes:
    return attr(kind | NESTED, b"".join(children))


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def message(cmd: int, *attrs: bytes, flags: int = ACK) -> bytes:
    body = struct.pack("=BBH", cmd, 1, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), FAMILY, flags, SEQ, PID) + body


def wire(msg: tipcmsg, flags: int = ACK) -> bytes:
    return msgs.encode(msg, FAMILY, flags, SEQ, PID)


def sockaddr_in(ip: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + \
        socket.inet_aton(ip) + bytes(8)


def sockaddr_in6(ip: str, port: int, scope: int = 0) -> bytes:
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + \
        socket.inet_pton(socket.AF_INET6, ip) + struct.pack("=I", scope)


def aead(key: bytes, alg: bytes = b"gcm(aes)") -> bytes:
    return alg.ljust(32, b"\0") + struct.pack("=I", len(key)) + key


# -- NET_SET ----------------------------------------------------------------------------


def test_net_set_id_and_name_identity() -> None:
    node_id = b"nodeA".ljust(16, b"\0")
    expected = message(
        NL_NET_SET,
        nest(NLA_NET, attr(NET_ID, u32(4711)), attr(NET_NODEID, node_id[:8]),
             attr(NET_NODEID_W1, node_id[8:])),
    )
    assert wire(msgs.build_net_set(4711, "nodeA")) == expected


def test_net_set_hex_identity_and_id_only() -> None:
    raw = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert wire(msgs.build_net_set(None, "00112233445566778899aabbccddeeff")) == message(
        NL_NET_SET, nest(NLA_NET, attr(NET_NODEID, raw[:8]), attr(NET_NODEID_W1, raw[8:])))
    assert wire(msgs.build_net_set(1)) == message(NL_NET_SET, nest(NLA_NET, attr(NET_ID, u32(1))))


@pytest.mark.parametrize("bad", [0, 10000, -1])
def test_net_id_range_is_checked_before_the_kernel(bad: int) -> None:
    with pytest.raises(UsageError, match="1..9999"):
        msgs.build_net_set(bad)


def test_net_set_needs_something() -> None:
    with pytest.raises(UsageError):
        msgs.build_net_set()


# -- identities -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("nodeA", b"nodeA"),
        ("a-b_c.d:e@f", b"a-b_c.d:e@f"),
        ("abc", b"abc"),  # a name first, as iproute2's str2nodeid decides
        ("1234567890abcdef1", bytes.fromhex("1234567890abcdef10")),  # odd hex: padded
        ("deadbeef" * 4, bytes.fromhex("deadbeef" * 4)),
    ],
)
def test_node_id_reading(text: str, raw: bytes) -> None:
    assert identity.node_id_bytes(text) == raw.ljust(16, b"\0")


@pytest.mark.parametrize("bad", ["", "has space", "x" * 33, "g" * 17, "\0" * 4, b"\0" * 16,
                                 b"x" * 17])
def test_node_id_rejects(bad: str | bytes) -> None:
    with pytest.raises(UsageError):
        identity.node_id_bytes(bad)


def test_node_id_printing_and_hash() -> None:
    assert identity.node_id_str(b"nodeA".ljust(16, b"\0")) == "nodeA"
    assert identity.node_id_str(bytes.fromhex("0a0b0c") + bytes(13)) == "0a0b0c"
    # hash128to32, as the 6.12 kernel printed it (`tipc node get identity`: 2f6f6465)
    assert identity.node_hash(b"nodeA") == 0x2F6F6465
    assert identity.node_hash(b"keyA") == 1801812289  # "Node number set to 1801812289"
    # words that XOR to zero fall back to OR
    assert identity.node_hash(b"abcdabcd") == struct.unpack("!I", b"abcd")[0]


# -- BEARER_ENABLE / ADD / DISABLE ------------------------------------------------------


def test_bearer_enable_eth_with_priority() -> None:
    expected = message(
        NL_BEARER_ENABLE,
        nest(NLA_BEARER, nest(BEARER_PROP, attr(PROP_PRIO, u32(20))),
             attr(BEARER_NAME, b"eth:veth0\0")),
    )
    assert wire(msgs.build_bearer_enable_eth("veth0", priority=20)) == expected


def test_bearer_enable_eth_plain_and_domain() -> None:
    assert wire(msgs.build_bearer_enable_eth("va")) == message(
        NL_BEARER_ENABLE, nest(NLA_BEARER, attr(BEARER_NAME, b"eth:va\0")))
    assert wire(msgs.build_bearer_enable_eth("va", domain=0x1001001)) == message(
        NL_BEARER_ENABLE,
        nest(NLA_BEARER, attr(BEARER_DOMAIN, u32(0x1001001)), attr(BEARER_NAME, b"eth:va\0")))


def test_bearer_enable_udp_ipv4_default_multicast() -> None:
    remote = msgs.default_udp_remote(4711)
    assert remote == ("228.0.18.103", 6118)  # 4711 = 0x1267
    msg = msgs.build_bearer_enable_udp("u1", msgs.sockaddr("10.0.0.1", 6118),
                                       msgs.sockaddr(*remote))
    expected = message(
        NL_BEARER_ENABLE,
        nest(NLA_BEARER, attr(BEARER_NAME, b"udp:u1\0"),
             nest(BEARER_UDP_OPTS, attr(UDP_LOCAL, sockaddr_in("10.0.0.1", 6118)),
                  attr(UDP_REMOTE, sockaddr_in("228.0.18.103", 6118)))),
    )
    assert wire(msg) == expected


def test_bearer_enable_udp_ipv6_with_priority() -> None:
    remote = msgs.default_udp_remote(4711, ipv6=True)
    assert remote == ("ff02::4711", 6118)  # iproute2 formats the net id as the last group
    msg = msgs.build_bearer_enable_udp(
        "udp:six", msgs.sockaddr("fe80::1", 6000, scope_id=3), msgs.sockaddr(*remote), priority=5)
    expected = message(
        NL_BEARER_ENABLE,
        nest(NLA_BEARER, nest(BEARER_PROP, attr(PROP_PRIO, u32(5))),
             attr(BEARER_NAME, b"udp:six\0"),
             nest(BEARER_UDP_OPTS, attr(UDP_LOCAL, sockaddr_in6("fe80::1", 6000, 3)),
                  attr(UDP_REMOTE, sockaddr_in6("ff02::4711", 6118)))),
    )
    assert wire(msg) == expected


def test_udp_families_must_match() -> None:
    with pytest.raises(UsageError, match="IPv4 or both IPv6"):
        msgs.build_bearer_enable_udp("u", msgs.sockaddr("10.0.0.1", 1), msgs.sockaddr("ff02::1", 1))


def test_bearer_add() -> None:
    assert wire(msgs.build_bearer_add("u1", msgs.sockaddr("10.0.0.2", 6118))) == message(
        NL_BEARER_ADD,
        nest(NLA_BEARER, attr(BEARER_NAME, b"udp:u1\0"),
             nest(BEARER_UDP_OPTS, attr(UDP_REMOTE, sockaddr_in("10.0.0.2", 6118)))))


@pytest.mark.parametrize("bad", ["eth:", "noprefix", "eth:" + "x" * 16, ":x"])
def test_bearer_names_are_checked(bad: str) -> None:
    with pytest.raises(UsageError):
        msgs.check_bearer_name(bad)
    with pytest.raises(UsageError):
        msgs.build_bearer_enable_eth("x" * 16)


@pytest.mark.parametrize("prio", [-1, 32])
def test_priority_range(prio: int) -> None:
    with pytest.raises(UsageError):
        msgs.build_bearer_enable_eth("va", priority=prio)


# -- KEY_SET / KEY_FLUSH ----------------------------------------------------------------

KEY = bytes(range(16)) + b"SALT"  # AES-128 key + 4-byte salt


def test_aead_key_struct() -> None:
    blob = msgs.aead_key(KEY)
    assert bytes(blob) == aead(KEY)
    assert len(blob) == 32 + 4 + 20
    assert struct.unpack_from("=I", blob, 32)[0] == 20


def test_key_set_cluster_key() -> None:
    assert wire(msgs.build_key_set(KEY)) == message(
        NL_KEY_SET, nest(NLA_NODE, attr(NODE_KEY, aead(KEY))))


def test_key_set_master_key() -> None:
    assert wire(msgs.build_key_set(KEY, master=True)) == message(
        NL_KEY_SET, nest(NLA_NODE, attr(NODE_KEY, aead(KEY)), attr(NODE_KEY_MASTER)))


def test_key_set_per_node_key_and_rekeying() -> None:
    key256 = os.urandom(36)
    assert wire(msgs.build_key_set(key256, node_id="nodeB", rekeying=60)) == message(
        NL_KEY_SET,
        nest(NLA_NODE, attr(NODE_KEY, aead(key256)),
             attr(NODE_ID, b"nodeB".ljust(16, b"\0")), attr(NODE_REKEYING, u32(60))))


def test_key_set_rekeying_only_and_now() -> None:
    assert wire(msgs.build_key_set(None, rekeying="now")) == message(
        NL_KEY_SET, nest(NLA_NODE, attr(NODE_REKEYING, u32(0xFFFFFFFF))))
    assert wire(msgs.build_key_set(None, rekeying=0)) == message(
        NL_KEY_SET, nest(NLA_NODE, attr(NODE_REKEYING, u32(0))))


@pytest.mark.parametrize("size", [0, 16, 19, 21, 32, 37])
def test_key_length_is_checked(size: int) -> None:
    with pytest.raises(UsageError, match="20, 28 or 36"):
        msgs.build_key_set(bytes(size))


def test_key_set_refuses_nonsense() -> None:
    with pytest.raises(UsageError, match="master"):
        msgs.build_key_set(KEY, master=True, node_id="nodeB")
    with pytest.raises(UsageError):
        msgs.build_key_set(None)
    with pytest.raises(UsageError):
        msgs.build_key_set(KEY, alg="x" * 32)
    with pytest.raises(UsageError):
        msgs.build_key_set(None, rekeying="soon")


def test_key_flush_and_dumps_have_no_attributes() -> None:
    assert wire(msgs.build_simple(NL_KEY_FLUSH)) == message(NL_KEY_FLUSH)
    for cmd in (NL_BEARER_GET, NL_LINK_GET, NL_NODE_GET, NL_NET_GET, NL_NAME_TABLE_GET):
        assert wire(msgs.build_simple(cmd), DUMP) == message(cmd, flags=DUMP)


# -- secrets ----------------------------------------------------------------------------


def test_key_never_shows_in_reprs() -> None:
    key = os.urandom(20)
    msg = msgs.build_key_set(key, master=True)
    wire(msg)
    for text in (repr(msg), str(msg), repr(msgs.aead_key(key)), str(msgs.aead_key(key))):
        assert key.hex() not in text and repr(key) not in text and "secret" in text


def test_kernel_errors_carry_text_not_request() -> None:
    exc = NetlinkError(errno.EPERM, "not found own node identity (set id?)")
    err = client.tipc_error(exc, uapi.TIPC_NL_KEY_SET, "lk-x.a")
    assert "KEY_SET" in err.message and "lk-x.a" in err.message
    assert "not found own node identity" in err.message
    assert "set_net" in err.hint
    err = client.tipc_error(NetlinkError(errno.EPERM), uapi.TIPC_NL_NET_SET, None)
    assert "before enabling bearers" in err.hint
    err = client.tipc_error(NetlinkError(client.ENOTSUPP, "not supported yet the algorithm"),
                        uapi.TIPC_NL_KEY_SET, None)
    assert "gcm(aes)" in err.hint and "not supported" in err.message


def nlmsgerr(code: int, echoed: bytes, text: bytes | None, capped: bool) -> bytes:
    flags = (0x100 if capped else 0) | (0x200 if text else 0)
    body = struct.pack("=i", -code) + (echoed[:16] if capped else echoed)
    if text:
        body += attr(1, text + b"\0")
    return struct.pack("=IHHII", 16 + len(body), 2, flags, SEQ, PID) + body


def test_error_replies_drop_the_echoed_request() -> None:
    key = os.urandom(20)
    request = wire(msgs.build_key_set(key))
    for capped in (True, False):
        msg = msgs.parse_error(nlmsgerr(errno.EPERM, request, b"no identity", capped))
        error = msg["header"]["error"]
        assert isinstance(error, NetlinkError) and error.code == errno.EPERM
        assert error.args[1] == "no identity"
        assert key not in bytes(msg.data)
    ack = msgs.parse_error(nlmsgerr(0, request, None, capped=True))
    assert ack["header"]["error"] is None


# -- replies ----------------------------------------------------------------------------


def reply(attrs: list) -> tipcmsg:
    msg = tipcmsg()
    msg["cmd"] = 0
    msg["version"] = 1
    msg["attrs"] = attrs
    msg.encode()
    parsed = tipcmsg(msg.data)
    parsed.decode()
    return parsed


def test_parse_link_reply() -> None:
    msg = reply([("TIPC_NLA_LINK", {"attrs": [
        ("TIPC_NLA_LINK_NAME", "nodeA:va-nodeB:vb"), ("TIPC_NLA_LINK_DEST", 0x2F6F6000),
        ("TIPC_NLA_LINK_MTU", 1500), ("TIPC_NLA_LINK_RX", 12), ("TIPC_NLA_LINK_TX", 13),
        ("TIPC_NLA_LINK_UP", True), ("TIPC_NLA_LINK_ACTIVE", True),
        ("TIPC_NLA_LINK_PROP", {"attrs": [("TIPC_NLA_PROP_PRIO", 10),
                                          ("TIPC_NLA_PROP_TOL", 1500),
                                          ("TIPC_NLA_PROP_WIN", 50)]}),
        ("TIPC_NLA_LINK_STATS", {"attrs": [("TIPC_NLA_STATS_RETRANSMITTED", 3),
                                           ("TIPC_NLA_STATS_TX_ACKS", 1)]}),
    ]})])
    link = msgs.parse_link(msg)
    assert link is not None
    assert link["name"] == "nodeA:va-nodeB:vb"
    assert (link["up"], link["active"], link["broadcast"]) == (True, True, False)
    assert (link["mtu"], link["rx_packets"], link["tx_packets"]) == (1500, 12, 13)
    assert link["retransmissions"] == 3 and link["stats"]["tx_acks"] == 1
    assert (link["priority"], link["tolerance"], link["window"]) == (10, 1500, 50)


def test_parse_bearer_net_and_publication_replies() -> None:
    bearer = msgs.parse_bearer(reply([("TIPC_NLA_BEARER", {"attrs": [
        ("TIPC_NLA_BEARER_NAME", "udp:u1"),
        ("TIPC_NLA_BEARER_PROP", {"attrs": [("TIPC_NLA_PROP_PRIO", 10),
                                            ("TIPC_NLA_PROP_MTU", 14000)]}),
        ("TIPC_NLA_BEARER_UDP_OPTS", {"attrs": [
            ("TIPC_NLA_UDP_LOCAL", sockaddr_in("10.9.0.1", 6118)),
            ("TIPC_NLA_UDP_REMOTE", sockaddr_in6("ff02::4711", 6118)),
            ("TIPC_NLA_UDP_MULTI_REMOTEIP", True)]}),
    ]})]))
    assert bearer == {"name": "udp:u1", "priority": 10, "mtu": 14000,
                      "udp": {"local": ("10.9.0.1", 6118), "remote": ("ff02::4711", 6118),
                              "multi_remote": True}}
    raw = b"nodeA".ljust(16, b"\0")
    w0, w1 = struct.unpack("=QQ", raw)
    net = msgs.parse_net(reply([("TIPC_NLA_NET", {"attrs": [
        ("TIPC_NLA_NET_ID", 4711), ("TIPC_NLA_NET_NODEID", w0),
        ("TIPC_NLA_NET_NODEID_W1", w1)]})]))
    assert net == {"net_id": 4711, "node_id": raw, "identity": "nodeA", "hash": 0x2F6F6465}
    publ = msgs.parse_publication(reply([("TIPC_NLA_NAME_TABLE", {"attrs": [
        ("TIPC_NLA_NAME_TABLE_PUBL", {"attrs": [
            ("TIPC_NLA_PUBL_TYPE", 18888), ("TIPC_NLA_PUBL_LOWER", 1),
            ("TIPC_NLA_PUBL_UPPER", 5), ("TIPC_NLA_PUBL_SCOPE", 2),
            ("TIPC_NLA_PUBL_NODE", 0x2F6F6465), ("TIPC_NLA_PUBL_REF", 99),
            ("TIPC_NLA_PUBL_KEY", 100)]})]})]))
    assert publ == {"type": 18888, "lower": 1, "upper": 5, "scope": 2, "node": 0x2F6F6465,
                    "port": 99, "key": 100}


def test_sockaddr_round_trip() -> None:
    assert msgs.parse_sockaddr(msgs.sockaddr("192.0.2.1", 1)) == ("192.0.2.1", 1)
    assert msgs.parse_sockaddr(msgs.sockaddr("2001:db8::1", 65535)) == ("2001:db8::1", 65535)
    assert msgs.parse_sockaddr(b"\x01") == ("", 0)
    with pytest.raises(UsageError):
        msgs.sockaddr("10.0.0.1", 70000)


# -- opening ----------------------------------------------------------------------------


def test_missing_namespace_is_an_error_not_created() -> None:
    name = "lk-tqhost.nosuchns"
    with pytest.raises(LabkitError, match="no network namespace"):
        client.TipcNetlink(name).open()
    assert not netns.exists(name)


def test_missing_tipc_is_a_missing_feature() -> None:
    if os.path.isdir("/sys/module/tipc"):  # checked at run time: other tests load it
        skips.skip("host-kernel", "this kernel has TIPC")
    with pytest.raises(MissingFeatureError, match="modprobe tipc"):
        client.TipcNetlink().open()


def test_closed_client_says_so() -> None:
    nl = client.TipcNetlink("lk-x.a")
    assert "closed" in repr(nl)
    with pytest.raises(RuntimeError, match="not open"):
        nl.links()


# -- the exchange, against this kernel's nlctrl family (no TIPC needed) -------------------


def _getfamily(name: str | None) -> object:
    from pyroute2.netlink import CTRL_CMD_GETFAMILY, ctrlmsg

    msg = ctrlmsg()
    msg["cmd"] = CTRL_CMD_GETFAMILY
    msg["version"] = 1
    msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", name)] if name else []
    return msg


def test_exchange_acks_dumps_and_refusals() -> None:
    from pyroute2.netlink import GENL_ID_CTRL, ctrlmsg

    sock = client._open_raw(None)
    try:
        one = client.exchange(sock, _getfamily("nlctrl"), GENL_ID_CTRL, ACK, ctrlmsg, 1)
        assert [r.get_attr("CTRL_ATTR_FAMILY_ID") for r in one] == [GENL_ID_CTRL]
        every = client.exchange(sock, _getfamily(None), GENL_ID_CTRL, DUMP, ctrlmsg, 2)
        names = {r.get_attr("CTRL_ATTR_FAMILY_NAME") for r in every}
        assert "nlctrl" in names and len(names) == len(every) > 1
        with pytest.raises(NetlinkError) as info:
            client.exchange(sock, _getfamily("no-such-family"), GENL_ID_CTRL, ACK, ctrlmsg, 3)
        assert info.value.code == errno.ENOENT
    finally:
        sock.close()


def test_dump_end_carries_its_errno() -> None:
    done = struct.pack("=IHHIIi", 20, 3, 0x2, SEQ, PID, 0)
    assert msgs.parse_done(done)["header"]["error"] is None
    failed = struct.pack("=IHHIIi", 20, 3, 0x2, SEQ, PID, -errno.EINTR)
    assert msgs.parse_done(failed)["header"]["error"].code == errno.EINTR


def test_rekeying_range_is_the_kernels() -> None:
    assert msgs.rekeying_value(uapi.REKEYING_MAX) == uapi.REKEYING_MAX == 71582
    assert uapi.REKEYING_MAX * 60 * 1000 < 2**32 <= (uapi.REKEYING_MAX + 1) * 60 * 1000
    for bad in (uapi.REKEYING_MAX + 1, -1, True):
        with pytest.raises(UsageError, match=str(uapi.REKEYING_MAX)):
            msgs.rekeying_value(bad)


def test_only_pyroute2_message_classes_are_extended() -> None:
    """pyroute2's documented extension point is its message classes (nla, genlmsg); its
    socket and Marshal internals change between releases, so the client owns its socket."""
    import inspect

    from labkit.features.tipc import attributes

    extended = set()
    for mod in (attributes, msgs, client):
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__:
                continue
            for base in cls.__mro__[1:]:
                if base.__module__.startswith("pyroute2"):
                    extended.add(base.__name__)
                    assert base.__module__ == "pyroute2.netlink", (cls, base)
    assert {"nla", "genlmsg"} <= extended
    source = inspect.getsource(client)
    assert "Marshal" not in source and "NetlinkSocket" not in source
