"""Moved: the TIPC scapy layers are labkit.features.tipc.layers (the feature owns them).

A thin re-export for code not yet updated (labkit/packets/wireshark); new code imports
from the feature.
"""

from labkit.features.tipc.identity import NAME_CHARS, node_hash
from labkit.features.tipc.identity import node_hash as node_addr
from labkit.features.tipc.layers import *  # noqa: F403
from labkit.features.tipc.uapi import ETH_P_TIPC, NODE_ID_LEN, TIPC_EVERSION, TIPC_VERSION
from labkit.features.tipc.uapi import UDP_PORT as TIPC_UDP_PORT

__all__ = ["ETH_P_TIPC", "NAME_CHARS", "NODE_ID_LEN", "TIPC_EVERSION", "TIPC_UDP_PORT",
           "TIPC_VERSION", "node_addr", "node_hash"]
