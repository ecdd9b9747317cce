"""Send crafted TIPC frames from a node's interface and report what the kernel made of them.

The frames come from layers.crafted(), each injection under a fresh node identity that no
node has seen before, so any effect can be pinned on this injection: the report compares
the TIPC view (peers, links) of every TIPC node on the same segment before and after. A
ghost discovery creates a peer (whose link never comes up); a wrong net id or a malformed
header must change nothing, which is observed for a named, bounded window.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

from labkit.base.wait import poll
from labkit.errors import UsageError
from labkit.features.tipc.client import TipcNetlink
from labkit.features.tipc.config import TipcConfig
from labkit.hosts.rpc import remote

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

MAX_FRAMES = 100
OBSERVE_WINDOW = 2.0  # s to watch for an effect (a kernel answers a discovery within ms)


def _view(lab: Lab, nodes: list[str]) -> dict[str, Any]:
    out = {}
    for n in nodes:
        with TipcNetlink(lab.node(n).ns) as nl:
            out[n] = {"peers": sorted(p["identity"] or str(p["addr"]) for p in nl.nodes()),
                      "links_up": sorted(lk["name"] for lk in nl.links()
                                         if lk["up"] and not lk["broadcast"])}
    return out


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {n: {"new_peers": sorted(set(after[n]["peers"]) - set(before[n]["peers"])),
                "new_links_up": sorted(set(after[n]["links_up"]) - set(before[n]["links_up"]))}
            for n in before}


def fresh_identity() -> str:
    """A node identity no lab node has (labkit never names a node like this)."""
    return "ghost-" + secrets.token_hex(5)


def craft(kind: str, net_id: int) -> dict[str, str]:
    """One frame of `kind` from a host that does not exist, under a fresh identity: made
    by scapy where the command runs (the host), so a lab VM's kernel-side part only sends
    bytes (its daemon never imports scapy)."""
    from labkit.features.tipc.layers import FRAME_KINDS, crafted

    if kind not in FRAME_KINDS:
        raise UsageError(f"unknown frame kind '{kind}'.",
                         hint=f"Use one of: {', '.join(FRAME_KINDS)}.")
    mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))  # a host that does not exist
    identity = fresh_identity()
    return {"kind": kind, "mac": mac, "identity": identity,
            "frame": bytes(crafted(kind, mac, net_id, identity)).hex()}


def inject(lab: Lab, cfg: TipcConfig, node: str, iface: str, kind: str, count: int = 3,
           window: float = OBSERVE_WINDOW, made: dict[str, str] | None = None
           ) -> dict[str, Any]:
    """Send `count` frames of `kind` (made: craft()'s result, crafted here if None), then
    watch the segment's TIPC nodes for up to `window` seconds; the watch ends early once
    every one of them shows a change."""
    made = made or craft(kind, cfg.net_id)
    if made.get("kind") != kind:
        raise UsageError(f"the crafted frame is a {made.get('kind')}, not a {kind}.")
    if not 1 <= count <= MAX_FRAMES:
        raise UsageError(f"--count must be between 1 and {MAX_FRAMES}.")
    spec = lab.topo.nodes[lab.node(node).name]
    if iface not in spec.interfaces:
        raise UsageError(f"node {node} has no interface {iface}.",
                         hint=f"Its interfaces: {', '.join(spec.interfaces)}.")
    segment = spec.interfaces[iface].segment
    watchers = [n for n in cfg.nodes if n != node and any(
        ep.segment == segment for ep in lab.topo.nodes[n].interfaces.values())]
    mac, identity, frame = made["mac"], made["identity"], bytes.fromhex(made["frame"])
    before = _view(lab, watchers)
    sock = lab.node(node).socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        with lab.node(node).entered():
            sock.bind((iface, 0))
        for _ in range(count):
            sock.send(frame)
    finally:
        sock.close()

    def changed() -> dict[str, Any] | None:
        diff = _changes(before, _view(lab, watchers))
        seen = all(c["new_peers"] or c["new_links_up"] for c in diff.values())
        return diff if watchers and seen else None

    poll(changed, window, interval=0.1)
    after = _view(lab, watchers)
    return {"kind": kind, "from": f"{node}:{iface}", "src_mac": mac, "identity": identity,
            "frames": count, "frame_bytes": len(frame), "watchers": watchers,
            "window_s": window, "before": before, "after": after,
            "changes": _changes(before, after)}


@remote
def inject_json(lab: Lab, node: str, iface: str, kind: str, count: int = 3,
                window: float = 2.0, made: dict[str, str] | None = None) -> dict[str, Any]:
    """inject() for a caller on another machine (the CLI, for a lab in a VM), which
    crafts the frame (craft()) and passes it as `made`."""
    return inject(lab, lab.feature_config("tipc"), node, iface, kind, count, window, made)
