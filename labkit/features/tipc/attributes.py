"""The attribute layout of the TIPCv2 family (tipc_netlink.h) as pyroute2 message classes.

pyroute2 has no TIPC support; its documented way to add a family is to declare the
attribute maps as nla classes, which is all this module does. Nests carry NLA_F_NESTED,
as iproute2's mnl_attr_nest_start does (KEY_SET's node nest is parsed strictly and needs
it).
"""

from __future__ import annotations

from pyroute2.netlink import genlmsg, nla


class tipc_prop(nla):
    """Link properties, shared by bearer, link and media nests."""

    prefix = "TIPC_NLA_PROP_"
    nla_map = (
        ("TIPC_NLA_PROP_UNSPEC", "none"),
        ("TIPC_NLA_PROP_PRIO", "uint32"),
        ("TIPC_NLA_PROP_TOL", "uint32"),
        ("TIPC_NLA_PROP_WIN", "uint32"),
        ("TIPC_NLA_PROP_MTU", "uint32"),
        ("TIPC_NLA_PROP_BROADCAST", "uint32"),
        ("TIPC_NLA_PROP_BROADCAST_RATIO", "uint32"),
    )


class tipc_udp_opts(nla):
    prefix = "TIPC_NLA_UDP_"
    nla_map = (
        ("TIPC_NLA_UDP_UNSPEC", "none"),
        ("TIPC_NLA_UDP_LOCAL", "cdata"),  # struct sockaddr_in / sockaddr_in6
        ("TIPC_NLA_UDP_REMOTE", "cdata"),
        ("TIPC_NLA_UDP_MULTI_REMOTEIP", "flag"),
    )


class tipc_bearer(nla):
    prefix = "TIPC_NLA_BEARER_"
    nla_map = (
        ("TIPC_NLA_BEARER_UNSPEC", "none"),
        ("TIPC_NLA_BEARER_NAME", "asciiz"),
        ("TIPC_NLA_BEARER_PROP", "prop | nested"),
        ("TIPC_NLA_BEARER_DOMAIN", "uint32"),
        ("TIPC_NLA_BEARER_UDP_OPTS", "udp_opts | nested"),
    )
    prop = tipc_prop
    udp_opts = tipc_udp_opts


STATS_NAMES = (
    "UNSPEC", "RX_INFO", "RX_FRAGMENTS", "RX_FRAGMENTED", "RX_BUNDLES", "RX_BUNDLED",
    "TX_INFO", "TX_FRAGMENTS", "TX_FRAGMENTED", "TX_BUNDLES", "TX_BUNDLED", "MSG_PROF_TOT",
    "MSG_LEN_CNT", "MSG_LEN_TOT", "MSG_LEN_P0", "MSG_LEN_P1", "MSG_LEN_P2", "MSG_LEN_P3",
    "MSG_LEN_P4", "MSG_LEN_P5", "MSG_LEN_P6", "RX_STATES", "RX_PROBES", "RX_NACKS",
    "RX_DEFERRED", "TX_STATES", "TX_PROBES", "TX_NACKS", "TX_ACKS", "RETRANSMITTED",
    "DUPLICATES", "LINK_CONGS", "MAX_QUEUE", "AVG_QUEUE",
)


class tipc_stats(nla):
    prefix = "TIPC_NLA_STATS_"
    nla_map = tuple(
        (f"TIPC_NLA_STATS_{n}", "none" if n == "UNSPEC" else "uint32") for n in STATS_NAMES
    )


class tipc_link(nla):
    prefix = "TIPC_NLA_LINK_"
    nla_map = (
        ("TIPC_NLA_LINK_UNSPEC", "none"),
        ("TIPC_NLA_LINK_NAME", "asciiz"),
        ("TIPC_NLA_LINK_DEST", "uint32"),
        ("TIPC_NLA_LINK_MTU", "uint32"),
        ("TIPC_NLA_LINK_BROADCAST", "flag"),
        ("TIPC_NLA_LINK_UP", "flag"),
        ("TIPC_NLA_LINK_ACTIVE", "flag"),
        ("TIPC_NLA_LINK_PROP", "prop | nested"),
        ("TIPC_NLA_LINK_STATS", "stats | nested"),
        ("TIPC_NLA_LINK_RX", "uint32"),
        ("TIPC_NLA_LINK_TX", "uint32"),
    )
    prop = tipc_prop
    stats = tipc_stats


class tipc_node(nla):
    prefix = "TIPC_NLA_NODE_"
    nla_map = (
        ("TIPC_NLA_NODE_UNSPEC", "none"),
        ("TIPC_NLA_NODE_ADDR", "uint32"),
        ("TIPC_NLA_NODE_UP", "flag"),
        ("TIPC_NLA_NODE_ID", "cdata"),
        ("TIPC_NLA_NODE_KEY", "cdata"),  # struct tipc_aead_key
        ("TIPC_NLA_NODE_KEY_MASTER", "flag"),
        ("TIPC_NLA_NODE_REKEYING", "uint32"),
    )


class tipc_net(nla):
    prefix = "TIPC_NLA_NET_"
    nla_map = (
        ("TIPC_NLA_NET_UNSPEC", "none"),
        ("TIPC_NLA_NET_ID", "uint32"),
        ("TIPC_NLA_NET_ADDR", "uint32"),
        ("TIPC_NLA_NET_NODEID", "uint64"),  # node id bytes 0-7, host order
        ("TIPC_NLA_NET_NODEID_W1", "uint64"),  # node id bytes 8-15, host order
        ("TIPC_NLA_NET_ADDR_LEGACY", "flag"),
    )


class tipc_publ(nla):
    prefix = "TIPC_NLA_PUBL_"
    nla_map = (
        ("TIPC_NLA_PUBL_UNSPEC", "none"),
        ("TIPC_NLA_PUBL_TYPE", "uint32"),
        ("TIPC_NLA_PUBL_LOWER", "uint32"),
        ("TIPC_NLA_PUBL_UPPER", "uint32"),
        ("TIPC_NLA_PUBL_SCOPE", "uint32"),
        ("TIPC_NLA_PUBL_NODE", "uint32"),
        ("TIPC_NLA_PUBL_REF", "uint32"),
        ("TIPC_NLA_PUBL_KEY", "uint32"),
    )


class tipc_name_table(nla):
    prefix = "TIPC_NLA_NAME_TABLE_"
    nla_map = (
        ("TIPC_NLA_NAME_TABLE_UNSPEC", "none"),
        ("TIPC_NLA_NAME_TABLE_PUBL", "publ | nested"),
    )
    publ = tipc_publ


class tipcmsg(genlmsg):
    """A TIPCv2 genl message: genlmsghdr (cmd, version) + TIPC_NLA_* attributes."""

    prefix = "TIPC_NLA_"
    nla_map = (
        ("TIPC_NLA_UNSPEC", "none"),
        ("TIPC_NLA_BEARER", "bearer | nested"),
        ("TIPC_NLA_SOCK", "hex"),
        ("TIPC_NLA_PUBL", "publ | nested"),
        ("TIPC_NLA_LINK", "link | nested"),
        ("TIPC_NLA_MEDIA", "hex"),
        ("TIPC_NLA_NODE", "node | nested"),
        ("TIPC_NLA_NET", "net | nested"),
        ("TIPC_NLA_NAME_TABLE", "name_table | nested"),
        ("TIPC_NLA_MON", "hex"),
        ("TIPC_NLA_MON_PEER", "hex"),
    )
    bearer = tipc_bearer
    publ = tipc_publ
    link = tipc_link
    node = tipc_node
    net = tipc_net
    name_table = tipc_name_table
