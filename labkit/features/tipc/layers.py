"""scapy layers for TIPC on the wire: the v2 header and the v7 encryption header.

Layout from net/tipc/msg.h and net/tipc/crypto.h. One entry layer, TIPC, is bound to
the TIPC ethertype and UDP port (uapi); it looks at the version bits (byte 0 >> 5) and, for
v2, the user field, and becomes the matching class: TIPCData (users 0-3), TIPCLinkConfig
(13, discovery), TIPCLinkProtocol (7), TIPCNameDistr (11), TIPCBundler (6),
TIPCFragmenter (12), TIPCTunnel (10), plain TIPC for other internal users, or TIPCv7
(encrypted: ciphertext and tag stay opaque).

Captures come from labs and from crafted frames, so dissection must never raise: every
layer stops at the first field the bytes cannot fill, marks itself truncated and leaves
the rest as Raw. That is done with scapy's public field API only (each field wrapped in a
ConditionalField that stops instead of raising), not by overriding its dissection loop.
crafted() builds the frames labs inject (FRAME_KINDS: a discovery from a node that does
not exist, one with a wrong net id, malformed headers).
"""

from __future__ import annotations

import os
import struct
from typing import Any

from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ConditionalField,
    Field,
    IntField,
    IP6Field,
    IPField,
    MACField,
    PacketListField,
    ShortField,
    StrFixedLenField,
    StrLenField,
    XIntField,
    XLongField,
    XShortEnumField,
)
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw, bind_bottom_up, bind_top_down

from labkit.features.tipc.identity import node_hash, node_id_bytes, node_id_str
from labkit.features.tipc.uapi import (
    ETH_P_TIPC,
    NET_ID_MAX,
    NODE_ID_LEN,
    TIPC_EVERSION,
    TIPC_VERSION,
    UDP_PORT,
)

TAG_LEN = 16

# Users (msg.h). 0-3 are data importances; 4 and 15 are in-kernel pseudo users.
USERS = {
    0: "LOW", 1: "MEDIUM", 2: "HIGH", 3: "CRITICAL", 4: "SYSTEM",
    5: "BCAST_PROTOCOL", 6: "MSG_BUNDLER", 7: "LINK_PROTOCOL", 8: "CONN_MANAGER",
    9: "GROUP_PROTOCOL", 10: "TUNNEL_PROTOCOL", 11: "NAME_DISTRIBUTOR",
    12: "MSG_FRAGMENTER", 13: "LINK_CONFIG", 14: "MSG_CRYPTO", 15: "TOP_SRV",
}
BCAST_PROTOCOL, MSG_BUNDLER, LINK_PROTOCOL = 5, 6, 7
TUNNEL_PROTOCOL, NAME_DISTRIBUTOR, MSG_FRAGMENTER, LINK_CONFIG = 10, 11, 12, 13

DATA_MTYPES = {
    0: "CONN", 1: "MCAST", 2: "NAMED", 3: "DIRECT",
    4: "GRP_MEMBER_EVT", 5: "GRP_BCAST", 6: "GRP_MCAST", 7: "GRP_UCAST",
}
DSC_MTYPES = {0: "DSC_REQ", 1: "DSC_RESP", 2: "DSC_TRIAL", 3: "DSC_TRIAL_FAIL"}
LINK_MTYPES = {0: "STATE", 1: "RESET", 2: "ACTIVATE"}
NAME_MTYPES = {0: "PUBLICATION", 1: "WITHDRAWAL"}
FRAG_MTYPES = {0: "FIRST_FRAGMENT", 1: "FRAGMENT", 2: "LAST_FRAGMENT"}
TUNNEL_MTYPES = {0: "SYNCH", 1: "FAILOVER"}
MEDIA_TYPES = {1: "eth", 2: "ib", 3: "udp"}

SHORT_H_SIZE, BASIC_H_SIZE, NAMED_H_SIZE, MCAST_H_SIZE = 24, 32, 40, 44
INT_H_SIZE, MAX_H_SIZE = 40, 60
EHDR_SIZE, EHDR_CFG_SIZE = 16, 28

# Header size the kernel uses per data message type when building (hsize left unset).
_DATA_HSIZE = {0: SHORT_H_SIZE, 1: MCAST_H_SIZE, 2: NAMED_H_SIZE, 3: BASIC_H_SIZE}

# TIPC_NODE_CAPABILITIES as a 6.12 kernel sends it in discovery (seen on the wire).
TIPC_NODE_CAPABILITIES = 0xFFF


def _word0_fields(user: int) -> list[Field[Any, Any]]:
    return [
        BitField("version", TIPC_VERSION, 3),
        BitEnumField("user", user, 4, USERS),
        BitField("hsize", None, 4),  # header size in 32-bit words
        BitField("non_seq", 0, 1),
        BitField("dest_droppable", 0, 1),  # also keepalive (LINK_PROTOCOL)
        BitField("src_droppable", 0, 1),  # also ack_required / nagle_ack / rcast
        BitField("syn", 0, 1),
        BitField("size", None, 17),  # whole message, header included
    ]


class _Stops(ConditionalField):
    """A field that ends dissection where the bytes cannot fill it, instead of raising.

    The packet is marked truncated; the fields after it are skipped (their condition is
    "not truncated") and the bytes left over become the Raw payload. Built packets are
    never truncated, so building is unchanged.
    """

    # Read for every field of every packet: kept here instead of proxied to the field.
    _HOT = ("name", "islist", "holds_packets", "ismutable", "ismayend", "default")

    def __init__(self, fld: Field[Any, Any]) -> None:
        super().__init__(fld, lambda pkt: not pkt.truncated)
        for attr in self._HOT:
            self.__dict__[attr] = getattr(fld, attr)

    def getfield(self, pkt: Packet, s: Any) -> tuple[Any, Any]:
        if pkt.truncated:
            return s, None
        try:
            return self.fld.getfield(pkt, s)
        except Exception:
            pkt.truncated = True
            if isinstance(s, tuple):  # stopped inside a bit group: drop the partial byte
                s = s[0][1:] if s[0] else b""
            return s, None


def _stopping(fields: list[Field[Any, Any]]) -> list[Field[Any, Any]]:
    return [_Stops(f) for f in fields]


class _Robust:
    """Layers whose dissection stops instead of raising (see _Stops); .truncated says so."""

    truncated = False


class TIPC(_Robust, Packet):
    """The entry layer: a generic TIPCv2 internal message, and the dispatcher.

    TIPC(bytes) becomes the class for the version and user in the bytes; TIPC(user=13)
    builds a TIPCLinkConfig, and so on. pkt[TIPC] matches every TIPC class.
    """

    name = "TIPC"
    match_subclass = True
    _fixed_hlen = 8
    _data_fields: tuple[str, ...] = ()
    fields_desc = _stopping([
        *_word0_fields(BCAST_PROTOCOL),
        BitField("mtype", 0, 3),
        BitField("w1", 0, 29),
        StrLenField("hdr_words", b"", length_from=lambda p: max(0, p._hlen() - 8)),
    ])

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        try:
            if _pkt:
                version = _pkt[0] >> 5
                if version == TIPC_EVERSION:
                    return TIPCv7
                if version != TIPC_VERSION:
                    return TIPC
                return _BY_USER.get((_pkt[0] >> 1) & 0xF, TIPC)
            if kargs.get("version") == TIPC_EVERSION:
                return TIPCv7
            return _BY_USER.get(kargs.get("user", BCAST_PROTOCOL), TIPC)
        except Exception:
            return TIPC

    # -- sizes ----------------------------------------------------------------------------

    def _hlen(self) -> int:
        """Header length in bytes: from hsize when known, else what the class builds."""
        if self.hsize is not None:
            return int(self.hsize) * 4
        return self._default_hlen()

    def _default_hlen(self) -> int:
        return INT_H_SIZE

    def _data_len(self) -> int:
        """Bytes of this layer's own fields that are message data, not header."""
        total = 0
        for name in self._data_fields:
            fld = self.get_field(name)
            total += len(fld.addfield(self, b"", self.getfieldval(name)))
        return total

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        w0 = struct.unpack("!I", pkt[:4])[0] if len(pkt) >= 4 else 0
        if self.hsize is None:
            hwords = min(0xF, (len(pkt) - self._data_len()) // 4)
            w0 = (w0 & ~(0xF << 21)) | (hwords << 21)
        if self.size is None:
            w0 = (w0 & ~0x1FFFF) | ((len(pkt) + len(pay)) & 0x1FFFF)
        if len(pkt) >= 4:
            pkt = struct.pack("!I", w0) + pkt[4:]
        return pkt + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        """Payload is what size says is left after the header; the rest is padding."""
        if self.truncated or self.size is None or self.hsize is None:
            return s, b""
        consumed = max(self._hlen(), self._fixed_hlen) + self._data_len()
        n = max(0, int(self.size) - consumed)
        return s[:n], s[n:]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return Raw

    def mysummary(self) -> str:
        user = USERS.get(self.user, str(self.user))
        return f"TIPCv{self.version} {user} mtype={self.mtype} size={self.size}"


# -- data messages --------------------------------------------------------------------


def _hs(p: Packet) -> int:
    return p._hlen()


class TIPCData(TIPC):
    """A payload message (users 0-3): CONN, MCAST, NAMED or DIRECT by mtype.

    Which fields exist depends on the header size: 24 (ports), 32 (+ nodes),
    40 (+ name type/instance), 44 (+ upper), up to 60. In a broadcast-mode MCAST
    message word 5 (dest_port) carries the net id instead (msg_mc_netid).
    """

    name = "TIPC data"
    _fixed_hlen = SHORT_H_SIZE
    fields_desc = _stopping([
        *_word0_fields(0),
        BitEnumField("mtype", 2, 3, DATA_MTYPES),
        BitField("errcode", 0, 4),
        BitField("reroute_cnt", 0, 4),
        BitField("lookup_scope", 0, 2),
        BitField("w1_rsvd", 0, 3),
        BitField("bcast_ack", 0, 16),
        BitField("ack", 0, 16),
        BitField("seqno", 0, 16),
        XIntField("prev_node", 0),
        IntField("orig_port", 0),
        IntField("dest_port", 0),
        ConditionalField(XIntField("orig_node", 0), lambda p: _hs(p) >= BASIC_H_SIZE),
        ConditionalField(XIntField("dest_node", 0), lambda p: _hs(p) >= BASIC_H_SIZE),
        ConditionalField(IntField("name_type", 0), lambda p: _hs(p) >= NAMED_H_SIZE),
        ConditionalField(IntField("name_instance", 0), lambda p: _hs(p) >= NAMED_H_SIZE),
        ConditionalField(IntField("name_upper", 0), lambda p: _hs(p) >= MCAST_H_SIZE),
        ConditionalField(
            StrLenField("hdr_extra", b"", length_from=lambda p: _hs(p) - MCAST_H_SIZE),
            lambda p: _hs(p) > MCAST_H_SIZE,
        ),
    ])

    def _default_hlen(self) -> int:
        return _DATA_HSIZE.get(self.mtype, BASIC_H_SIZE)

    def mysummary(self) -> str:
        mtype = DATA_MTYPES.get(self.mtype, str(self.mtype))
        return (f"TIPC {mtype} {self.orig_port} -> {self.dest_port}"
                f" ({USERS.get(self.user, self.user)}) size={self.size}")


# -- discovery (LINK_CONFIG) ------------------------------------------------------------


def _media(p: Packet) -> int:
    return p.media_type


def _udp(p: Packet, proto: int | None) -> bool:
    if p.media_type != 3:
        return False
    if proto is None:
        return p.udp_proto not in (0x0800, 0x86DD)
    return p.udp_proto == proto


class TIPCLinkConfig(TIPC):
    """A discovery message (user 13, 76 bytes): who I am, on which net, reachable where.

    Word 1 holds the capabilities in bits 27-15 and the node signature in bits 15-0 (the
    kernel reads them overlapping: its 16-bit signature includes capability bit 0; here
    'signature' is bits 14-0). The media info (32 bytes) is a MAC for eth, a UDP
    address (proto, port, IPv4/IPv6) for udp. The 16-byte node id follows the header.
    """

    name = "TIPC link config"
    _fixed_hlen = MAX_H_SIZE
    _data_fields = ("node_id",)
    fields_desc = _stopping([
        *_word0_fields(LINK_CONFIG),
        BitEnumField("mtype", 0, 3, DSC_MTYPES),
        BitField("w1_rsvd", 0, 1),
        BitField("capabilities", TIPC_NODE_CAPABILITIES, 13),
        BitField("signature", 0, 15),
        XIntField("dest_domain", 0),
        XIntField("prev_node", 0),  # the sender's (trial) node address
        IntField("net_id", 4711),
        StrFixedLenField("media_rsvd", b"\0\0\0", 3),
        ByteEnumField("media_type", 1, MEDIA_TYPES),
        ConditionalField(MACField("media_mac", "00:00:00:00:00:00"), lambda p: _media(p) == 1),
        ConditionalField(StrFixedLenField("media_pad", b"", 22), lambda p: _media(p) == 1),
        ConditionalField(
            XShortEnumField("udp_proto", 0x0800, {0x0800: "IPv4", 0x86DD: "IPv6"}),
            lambda p: _media(p) == 3,
        ),
        ConditionalField(ShortField("udp_port", UDP_PORT), lambda p: _media(p) == 3),
        ConditionalField(IPField("udp_ipv4", "0.0.0.0"), lambda p: _udp(p, 0x0800)),
        ConditionalField(StrFixedLenField("udp_pad4", b"", 20), lambda p: _udp(p, 0x0800)),
        ConditionalField(IP6Field("udp_ipv6", "::"), lambda p: _udp(p, 0x86DD)),
        ConditionalField(StrFixedLenField("udp_pad6", b"", 8), lambda p: _udp(p, 0x86DD)),
        ConditionalField(StrFixedLenField("udp_addr", b"", 24), lambda p: _udp(p, None)),
        ConditionalField(
            StrFixedLenField("media_addr", b"", 28), lambda p: _media(p) not in (1, 3)
        ),
        XIntField("peer_hash", 0),  # hash_mix(init_net) ^ hash_mix(net) ^ random
        XIntField("sugg_addr", 0),
        StrFixedLenField("node_id", b"", NODE_ID_LEN),
    ])

    def _default_hlen(self) -> int:
        return MAX_H_SIZE

    def mysummary(self) -> str:
        mtype = DSC_MTYPES.get(self.mtype, str(self.mtype))
        return f"TIPC {mtype} node={node_id_str(self.node_id or b'')} net={self.net_id}"


# -- link protocol ----------------------------------------------------------------------


class TIPCLinkProtocol(TIPC):
    """A link protocol message (user 7): STATE (keepalive/ack), RESET or ACTIVATE."""

    name = "TIPC link protocol"
    _fixed_hlen = INT_H_SIZE
    fields_desc = _stopping([
        *_word0_fields(LINK_PROTOCOL),
        BitEnumField("mtype", 0, 3, LINK_MTYPES),
        BitField("seq_gap", 0, 13),
        BitField("bcast_ack", 0, 16),  # also dest session (ACTIVATE)
        BitField("ack", 0, 16),
        BitField("seqno", 0, 16),
        XIntField("prev_node", 0),
        BitField("last_bcast", 0, 16),
        BitField("next_sent", 0, 16),
        BitField("session", 0, 16),
        BitField("w5_rsvd", 0, 1),
        BitField("bc_ack_invalid", 0, 1),
        BitField("peer_stopping", 0, 1),
        BitField("redundant_link", 0, 1),
        BitField("bearer_id", 0, 3),
        BitField("link_prio", 0, 5),
        BitField("net_plane", 0, 3),
        BitField("probe", 0, 1),
        XIntField("orig_node", 0),
        XIntField("dest_node", 0),
        BitField("w8_rsvd", 0, 22),
        BitField("bc_gap", 0, 10),
        BitField("max_pkt_words", 0, 16),  # max packet / 4
        BitField("link_tolerance", 0, 16),
        ConditionalField(
            StrLenField("hdr_extra", b"", length_from=lambda p: _hs(p) - INT_H_SIZE),
            lambda p: _hs(p) > INT_H_SIZE,
        ),
    ])

    def mysummary(self) -> str:
        mtype = LINK_MTYPES.get(self.mtype, str(self.mtype))
        return f"TIPC LINK_PROTOCOL {mtype} session={self.session} size={self.size}"


# -- name distribution ------------------------------------------------------------------


class TIPCNameItem(_Robust, Packet):
    """struct distr_item: one binding published or withdrawn (5 big-endian words)."""

    name = "TIPC name item"
    fields_desc = _stopping([
        IntField("type", 0),
        IntField("lower", 0),
        IntField("upper", 0),
        IntField("port", 0),
        IntField("key", 0),
    ])

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class TIPCNameDistr(TIPC):
    """A name distributor message (user 11): PUBLICATION or WITHDRAWAL items."""

    name = "TIPC name distributor"
    _fixed_hlen = INT_H_SIZE
    _data_fields = ("items",)
    fields_desc = _stopping([
        *_word0_fields(NAME_DISTRIBUTOR),
        BitEnumField("mtype", 0, 3, NAME_MTYPES),
        BitField("w1", 0, 29),
        BitField("ack", 0, 16),
        BitField("seqno", 0, 16),
        XIntField("prev_node", 0),
        XIntField("w4", 0),
        XIntField("w5", 0),
        XIntField("orig_node", 0),
        XIntField("dest_node", 0),
        XIntField("w8", 0),
        XIntField("w9", 0),
        ConditionalField(
            StrLenField("hdr_extra", b"", length_from=lambda p: _hs(p) - INT_H_SIZE),
            lambda p: _hs(p) > INT_H_SIZE,
        ),
        PacketListField(
            "items", [], TIPCNameItem,
            length_from=lambda p: _items_len(p),
        ),
    ])

    def mysummary(self) -> str:
        mtype = NAME_MTYPES.get(self.mtype, str(self.mtype))
        return f"TIPC NAME_DISTR {mtype} items={len(self.items or [])}"


def _items_len(p: Packet) -> int:
    if p.size is None:
        return 1 << 20  # building or unknown: everything
    return max(0, int(p.size) - max(_hs(p), INT_H_SIZE))


# -- bundler, fragmenter, tunnel --------------------------------------------------------


class _BundleField(PacketListField):
    """Messages packed back to back, each padded to 4 bytes (tipc_msg_try_bundle)."""

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, list[Packet]]:
        n = self.length_from(pkt) if self.length_from else len(s)
        body, rest = s[:n], s[n:]
        out: list[Packet] = []
        while body and len(out) < 1024:
            if len(body) < 4:
                out.append(Raw(body))
                break
            size = struct.unpack("!I", body[:4])[0] & 0x1FFFF
            if size < 4 or size > len(body):
                out.append(Raw(body))
                break
            out.append(TIPC(body[:size]))
            body = body[(size + 3) & ~3:]
        return rest, out

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:
        for p in val or []:
            b = bytes(p)
            s += b + b"\0" * (-len(b) % 4)
        return s


class TIPCBundler(TIPC):
    """A bundle (user 6): several small messages in one, msgcnt in word 9."""

    name = "TIPC bundler"
    _fixed_hlen = INT_H_SIZE
    _data_fields = ("msgs",)
    fields_desc = _stopping([
        *_word0_fields(MSG_BUNDLER),
        BitField("mtype", 0, 3),
        BitField("w1", 0, 29),
        BitField("ack", 0, 16),
        BitField("seqno", 0, 16),
        XIntField("prev_node", 0),
        XIntField("w4", 0),
        XIntField("w5", 0),
        XIntField("orig_node", 0),
        XIntField("dest_node", 0),
        XIntField("w8", 0),
        BitField("msgcnt", None, 16),
        BitField("w9_rsvd", 0, 13),
        BitField("importance", 0, 3),
        ConditionalField(
            StrLenField("hdr_extra", b"", length_from=lambda p: _hs(p) - INT_H_SIZE),
            lambda p: _hs(p) > INT_H_SIZE,
        ),
        _BundleField("msgs", [], TIPC, length_from=lambda p: _items_len(p)),
    ])

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.msgcnt is None and len(pkt) >= 40:
            pkt = pkt[:36] + struct.pack("!H", len(self.msgs or [])) + pkt[38:]
        return super().post_build(pkt, pay)


class TIPCFragmenter(TIPC):
    """A fragment (user 12) of a message too big for the link MTU."""

    name = "TIPC fragmenter"
    _fixed_hlen = INT_H_SIZE
    fields_desc = _stopping([
        *_word0_fields(MSG_FRAGMENTER),
        BitEnumField("mtype", 0, 3, FRAG_MTYPES),
        BitField("w1", 0, 29),
        BitField("ack", 0, 16),
        BitField("seqno", 0, 16),
        XIntField("prev_node", 0),
        BitField("fragm_no", 0, 16),
        BitField("nof_fragms", 0, 16),
        XIntField("w5", 0),
        XIntField("orig_node", 0),
        XIntField("dest_node", 0),
        XIntField("w8", 0),
        BitField("w9_rsvd", 0, 29),
        BitField("importance", 0, 3),
        ConditionalField(
            StrLenField("hdr_extra", b"", length_from=lambda p: _hs(p) - INT_H_SIZE),
            lambda p: _hs(p) > INT_H_SIZE,
        ),
    ])


class TIPCTunnel(TIPC):
    """A changeover message (user 10): SYNCH or FAILOVER wrapping another message."""

    name = "TIPC tunnel"
    _fixed_hlen = INT_H_SIZE
    fields_desc = _stopping([
        *_word0_fields(TUNNEL_PROTOCOL),
        BitEnumField("mtype", 0, 3, TUNNEL_MTYPES),
        BitField("w1", 0, 29),
        StrLenField("hdr_words", b"\0" * 32, length_from=lambda p: max(0, _hs(p) - 8)),
    ])

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return TIPC


_BY_USER: dict[int, type[Packet]] = {
    0: TIPCData, 1: TIPCData, 2: TIPCData, 3: TIPCData,
    MSG_BUNDLER: TIPCBundler,
    LINK_PROTOCOL: TIPCLinkProtocol,
    TUNNEL_PROTOCOL: TIPCTunnel,
    NAME_DISTRIBUTOR: TIPCNameDistr,
    MSG_FRAGMENTER: TIPCFragmenter,
    LINK_CONFIG: TIPCLinkConfig,
}


# -- v7: encryption header ---------------------------------------------------------------


class TIPCv7(_Robust, Packet):
    """The encryption header (crypto.h), then the encrypted v2 message and a 16-byte tag.

    user is 13 for LINK_CONFIG (then a 16-byte node id follows the seqno instead of the
    4-byte previous-node address), 7 for LINK_PROTOCOL STATE, 0 for everything else.
    The AES-GCM nonce is salt ^ address plus the 64-bit seqno.
    """

    name = "TIPCv7"
    match_subclass = True
    fields_desc = _stopping([
        BitField("version", TIPC_EVERSION, 3),
        BitEnumField("user", 0, 4, USERS),
        BitField("destined", 0, 1),
        BitField("tx_key", 0, 2),
        BitField("rx_key_active", 0, 2),
        BitField("keepalive", 0, 1),
        BitField("master_key", 0, 1),
        BitField("rx_nokey", 0, 1),
        BitField("reserved_1", 0, 1),
        BitField("reserved_2", 0, 16),
        XLongField("seqno", 0),
        ConditionalField(XIntField("addr", 0), lambda p: p.user != LINK_CONFIG),
        ConditionalField(
            StrFixedLenField("node_id", b"", NODE_ID_LEN), lambda p: p.user == LINK_CONFIG
        ),
        StrLenField("ciphertext", b"", length_from=lambda p: p._ct_len()),
        StrFixedLenField("tag", b"\0" * TAG_LEN, TAG_LEN),
    ])

    _remaining: int | None = None

    def pre_dissect(self, s: bytes) -> bytes:
        self._remaining = len(s)
        return s

    def _ct_len(self) -> int:
        if self._remaining is None:  # building
            return len(self.ciphertext or b"")
        hdr = EHDR_CFG_SIZE if self.user == LINK_CONFIG else EHDR_SIZE
        return max(0, self._remaining - hdr - TAG_LEN)

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s  # nothing follows: the ciphertext runs to the tag at the end

    def mysummary(self) -> str:
        user = USERS.get(self.user, str(self.user))
        flags = "".join(c for c, on in (("D", self.destined), ("K", self.keepalive),
                                        ("M", self.master_key), ("N", self.rx_nokey)) if on)
        return f"TIPCv7 {user} tx_key={self.tx_key} seqno={self.seqno} {flags}".rstrip()


# -- bindings ---------------------------------------------------------------------------

ALL_LAYERS: tuple[type[Packet], ...] = (
    TIPC, TIPCData, TIPCLinkConfig, TIPCLinkProtocol, TIPCNameDistr, TIPCBundler,
    TIPCFragmenter, TIPCTunnel, TIPCv7,
)

bind_bottom_up(Ether, TIPC, type=ETH_P_TIPC)
bind_bottom_up(UDP, TIPC, dport=UDP_PORT)
bind_bottom_up(UDP, TIPC, sport=UDP_PORT)
for _cls in ALL_LAYERS:
    bind_top_down(Ether, _cls, type=ETH_P_TIPC)
    bind_top_down(UDP, _cls, sport=UDP_PORT, dport=UDP_PORT)


# -- inspection helpers -----------------------------------------------------------------


def version_of(frame: Packet) -> int | None:
    """2 or 7 for a frame carrying TIPC (over Ethernet or UDP), None otherwise."""
    layer = frame.getlayer(TIPC) or frame.getlayer(TIPCv7)
    return int(layer.version) if layer is not None else None


# -- crafted frames ---------------------------------------------------------------------


def discovery(
    *,
    src_mac: str,
    net_id: int,
    node_id: bytes | str,
    mtype: int = 0,
    dst_mac: str = "ff:ff:ff:ff:ff:ff",
    capabilities: int = TIPC_NODE_CAPABILITIES,
    signature: int | None = None,
    peer_hash: int | None = None,
    prev_node: int | None = None,
    dest_domain: int = 0,
) -> Packet:
    """An Ethernet discovery frame (DSC_REQ by default) as a kernel would broadcast it.

    The media address is src_mac, as the kernel requires (it answers there and ignores
    discoveries that carry its own address or a broadcast one).
    """
    raw_id = node_id_bytes(node_id)
    rnd = os.urandom(6)
    return Ether(dst=dst_mac, src=src_mac) / TIPCLinkConfig(
        mtype=mtype,
        non_seq=1,
        capabilities=capabilities,
        signature=signature if signature is not None else int.from_bytes(rnd[:2]) & 0x7FFF,
        dest_domain=dest_domain,
        prev_node=prev_node if prev_node is not None else node_hash(raw_id),
        net_id=net_id,
        media_type=1,
        media_mac=src_mac,
        peer_hash=peer_hash if peer_hash is not None else int.from_bytes(rnd[2:]),
        node_id=raw_id,
    )


# What each crafted frame is, and what a kernel with the lab's net id does with it.
FRAME_KINDS = {
    "ghost_discovery": "a discovery from a node that does not exist; a kernel with the "
                       "same net id answers and lists the node, whose link never comes up",
    "wrong_netid": "the same discovery with another net id; the kernel ignores it",
    "short_hsize": "a discovery whose header size is 5 words (< 24 bytes); "
                   "tipc_msg_validate drops it",
    "size_mismatch": "a discovery whose size claims more bytes than the frame holds; dropped",
    "bad_version": "a discovery with version 3, neither v2 nor v7; dropped",
}


def crafted(kind: str, src_mac: str, net_id: int, identity: str,
            dst_mac: str = "ff:ff:ff:ff:ff:ff") -> Packet:
    """The frame of one FRAME_KINDS kind, sent as node `identity` from src_mac.

    Every kind is the same discovery but for its one defect, so a kernel that accepted a
    malformed frame would show the same effect as for ghost_discovery: a new peer with
    that identity.
    """
    wrong = kind == "wrong_netid"
    frame = discovery(src_mac=src_mac, net_id=(net_id % NET_ID_MAX) + 1 if wrong else net_id,
                      node_id=identity, dst_mac=dst_mac)
    layer = frame[TIPCLinkConfig]
    if kind == "short_hsize":
        layer.hsize = 5
    elif kind == "size_mismatch":
        layer.size = 1500
    elif kind == "bad_version":
        layer.version = 3
    elif kind not in ("ghost_discovery", "wrong_netid"):
        raise ValueError(f"unknown frame kind {kind!r}")
    return frame
