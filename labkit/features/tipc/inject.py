"""Send crafted TIPC frames from a node's interface and report what the kernel made of them.

The frames come from labkit.packets.tipc.crafted(); the report compares the TIPC view
(peers, links) of every node on the same segment before and after, so a lab can show
that a wrong net id is ignored while a ghost discovery creates a peer whose link never
comes up.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from labkit.errors import UsageError
from labkit.features.tipc.config import TipcConfig
from labkit.features.tipc.netlink import TipcNetlink
from labkit.packets.tipc import crafted

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

KINDS = ("ghost_discovery", "wrong_netid", "short_hsize", "size_mismatch", "bad_version")


def _view(lab: Lab, nodes: list[str]) -> dict[str, Any]:
    out = {}
    for n in nodes:
        with TipcNetlink(lab.node(n).ns) as nl:
            out[n] = {"peers": sorted(p["identity"] or str(p["addr"]) for p in nl.nodes()),
                      "links_up": sorted(lk["name"] for lk in nl.links()
                                         if lk["up"] and not lk["broadcast"])}
    return out


def inject(lab: Lab, cfg: TipcConfig, node: str, iface: str, kind: str, count: int = 3,
           settle: float = 2.0) -> dict[str, Any]:
    if kind not in KINDS:
        raise UsageError(f"unknown frame kind '{kind}'.", hint=f"Use one of: {', '.join(KINDS)}.")
    if not 1 <= count <= 100:
        raise UsageError("--count must be between 1 and 100.")
    spec = lab.topo.nodes[lab.node(node).name]
    if iface not in spec.interfaces:
        raise UsageError(f"node {node} has no interface {iface}.",
                         hint=f"Its interfaces: {', '.join(spec.interfaces)}.")
    segment = spec.interfaces[iface].segment
    watchers = [n for n in cfg.nodes if n != node and any(
        ep.segment == segment for ep in lab.topo.nodes[n].interfaces.values())]
    mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))  # a host that does not exist
    frame = bytes(crafted(mac, cfg.net_id)[kind])
    before = _view(lab, watchers)
    sock = lab.node(node).socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        with lab.node(node).entered():
            sock.bind((iface, 0))
        for _ in range(count):
            sock.send(frame)
            time.sleep(0.05)
    finally:
        sock.close()
    time.sleep(settle)
    after = _view(lab, watchers)
    changes = {n: {"new_peers": sorted(set(after[n]["peers"]) - set(before[n]["peers"])),
                   "new_links_up": sorted(set(after[n]["links_up"])
                                          - set(before[n]["links_up"]))}
               for n in watchers}
    return {"kind": kind, "from": f"{node}:{iface}", "src_mac": mac, "frames": count,
            "frame_bytes": len(frame), "watchers": watchers, "before": before,
            "after": after, "changes": changes}
