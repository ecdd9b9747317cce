"""What `labkit tipc status` shows: identities, bearers, links, name table, keys.

Keys are reported as present (mode, rekeying) from the lab's own record: the kernel has
no way to read them back, and their bytes are never shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.features.tipc.client import TipcNetlink
from labkit.features.tipc.config import TipcConfig

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def node_status(ns: str) -> dict[str, Any]:
    with TipcNetlink(ns) as nl:
        net = nl.net()
        return {
            "net_id": net["net_id"],
            "identity": net["identity"],
            "address": net["hash"],
            "bearers": nl.bearers(),
            "links": [
                {k: link[k] for k in ("name", "up", "active", "mtu", "tx_packets",
                                      "rx_packets", "retransmissions")}
                for link in nl.links() if not link["broadcast"]
            ],
            "peers": nl.nodes(),
            "name_table": nl.name_table(),
        }


def status(lab: Lab, cfg: TipcConfig) -> dict[str, Any]:
    enc = cfg.encryption
    return {
        "net_id": cfg.net_id,
        "keys": {"present": enc is not None,
                 "mode": enc.mode if enc else None,
                 "key_bits": enc.key_bits if enc else None,
                 "rekeying_minutes": enc.rekeying if enc else None},
        "expected_links": len(cfg.expected_links),
        "nodes": {name: node_status(lab.node(name).ns) for name in cfg.nodes
                  if lab.here(name)},
    }
