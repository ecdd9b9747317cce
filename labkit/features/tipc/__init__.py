"""TIPC: the TIPCv2 netlink client (netlink.py); topology support builds on it."""

from labkit.features.tipc.netlink import (
    Secret,
    TipcNetlink,
    aead_key,
    default_udp_remote,
    node_hash,
    node_id_bytes,
    node_id_str,
)

__all__ = [
    "Secret",
    "TipcNetlink",
    "aead_key",
    "default_udp_remote",
    "node_hash",
    "node_id_bytes",
    "node_id_str",
]
