"""TIPC numbers and limits, as the kernel defines and enforces them: the one place they live.

From include/uapi/linux/tipc.h, tipc_netlink.h and net/tipc/*.c (6.12). Everything else
in labkit (topology validation, the netlink client, the scapy layers, the traffic
endpoint, the verifications) reads these names, so a limit is checked at validation with
the same number the kernel will apply at `up`.

Standard library only: the traffic endpoint imports this inside emulated VMs, where every
imported package costs seconds.
"""

from __future__ import annotations

# -- the generic netlink family (tipc_netlink.h) -------------------------------------------

FAMILY = "TIPCv2"
FAMILY_VERSION = 1

# Commands labkit sends (enum tipc_nl_command, counted from TIPC_NL_UNSPEC = 0).
TIPC_NL_BEARER_ENABLE = 3
TIPC_NL_BEARER_GET = 4
TIPC_NL_LINK_GET = 8
TIPC_NL_NODE_GET = 13
TIPC_NL_NET_GET = 14
TIPC_NL_NET_SET = 15
TIPC_NL_NAME_TABLE_GET = 16
TIPC_NL_BEARER_ADD = 21
TIPC_NL_KEY_SET = 23
TIPC_NL_KEY_FLUSH = 24

COMMAND_NAMES = {
    TIPC_NL_BEARER_ENABLE: "BEARER_ENABLE",
    TIPC_NL_BEARER_GET: "BEARER_GET",
    TIPC_NL_LINK_GET: "LINK_GET",
    TIPC_NL_NODE_GET: "NODE_GET",
    TIPC_NL_NET_GET: "NET_GET",
    TIPC_NL_NET_SET: "NET_SET",
    TIPC_NL_NAME_TABLE_GET: "NAME_TABLE_GET",
    TIPC_NL_BEARER_ADD: "BEARER_ADD",
    TIPC_NL_KEY_SET: "KEY_SET",
    TIPC_NL_KEY_FLUSH: "KEY_FLUSH",
}

# -- limits the kernel enforces --------------------------------------------------------------

NET_ID_MIN, NET_ID_MAX = 1, 9999  # tipc_nl_net_set(): anything else is EINVAL
MAX_BEARERS = 3  # net/tipc/bearer.h MAX_BEARERS: a fourth BEARER_ENABLE is EINVAL
TIPC_MAX_LINK_PRI = 31  # link/bearer priority 0..31
TIPC_MAX_BEARER_NAME = 32  # "media:name" with its NUL
TIPC_MAX_IF_NAME = 16  # the name part with its NUL
TIPC_AEAD_ALG_NAME = 32  # struct tipc_aead_key.alg_name
AEAD_ALG = "gcm(aes)"  # the only algorithm the kernel accepts
TIPC_REKEYING_NOW = 0xFFFFFFFF  # REKEYING value meaning "rekey once, now"
# Minutes between automatic rekeys. 6.12 computes the delay as a u32 of milliseconds
# (crypto.c tipc_crypto_rekeying_sched: intv * 60 * 1000), which wraps above this.
REKEYING_MAX = (2**32 - 1) // 60_000  # 71582 (about 7 weeks)
MAX_MESSAGE = 66000  # TIPC_MAX_USER_MSG_SIZE: the largest rdm/seqpacket message

# -- identities ---------------------------------------------------------------------------

NODE_ID_LEN = 16  # bytes of a 128-bit node identity

# -- on the wire ---------------------------------------------------------------------------

ETH_P_TIPC = 0x88CA  # include/uapi/linux/if_ether.h
UDP_PORT = 6118  # net/tipc/udp_media.c UDP_PORT_DEFAULT (udp bearers)
TIPC_VERSION = 2  # plaintext messages (msg.h)
TIPC_EVERSION = 7  # encrypted messages (crypto.h): byte 0 >> 5 tells them apart

# -- sockets (CPython has AF_TIPC and the address types; not this option) ------------------

TIPC_MCAST_BROADCAST = 133  # SOL_TIPC option: multicast over the broadcast link
SIOCGETNODEID = 0x89E0 + 1  # SIOCPROTOPRIVATE + 1: the identity behind a node address
