"""What `labkit offload stats` and `labkit status` show, read next to the kernel: each
NIC's knobs, offload flag, counters and impairments, and each node's kTLS counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.base import netns
from labkit.features.offload import impair, module
from labkit.features.offload import nic as nicmod
from labkit.features.offload.config import OffloadConfig

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def status(lab: Lab, cfg: OffloadConfig) -> dict[str, Any]:
    nics: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for label, nic in cfg.nics.items():
        node = lab.node(nic.node)
        if not netns.exists(node.ns):
            continue  # another kernel's node (a lab spanning kernels), or not up
        assert nic.peer is not None
        peer_ns = lab.node(nic.peer.node).ns
        snap = nicmod.snapshot(node.ns, nic)
        snap["impair"] = {"declared": nic.impair.as_dict(),
                          "netem": impair.netem_stats(node.ns, peer_ns, nic)}
        nics[label] = snap
        for name in (nic.node, nic.peer.node):
            if name not in nodes:
                nodes[name] = {"tls_stat": nicmod.tls_stat(lab.node(name).ns)}
    return {"tls": {"version": cfg.version, "cipher": cfg.cipher},
            "module_loaded": module.loaded(), "notes": list(cfg.notes), "nics": nics,
            "nodes": nodes}
