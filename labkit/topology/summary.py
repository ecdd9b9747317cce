"""A plain-data view of a validated topology (for --json, graphs and widgets)."""

from __future__ import annotations

from typing import Any

from labkit.topology.model import Topology


def summarize(topo: Topology) -> dict[str, Any]:
    return {
        "name": topo.name,
        "file": topo.path,
        "description": topo.description,
        "nodes": {
            n.name: {
                "interfaces": {
                    i: [str(a) for a in (ep.ipv4, ep.ipv6) if a]
                    for i, ep in n.interfaces.items()
                },
                "routes": [{"to": str(r.dst), "via": str(r.via)} for r in n.routes],
                "forwarding": n.forwarding,
                "sysctls": n.sysctls,
            }
            for n in topo.nodes.values()
        },
        "links": [
            {"endpoints": [e.label for e in s.endpoints],
             "ipv4": str(s.ipv4) if s.ipv4 else None, "ipv6": str(s.ipv6) if s.ipv6 else None}
            for s in topo.links
        ],
        "lans": {
            s.name: {"endpoints": [e.label for e in s.endpoints],
                     "ipv4": str(s.ipv4) if s.ipv4 else None,
                     "ipv6": str(s.ipv6) if s.ipv6 else None}
            for s in topo.lans.values()
        },
        "checks": [{"name": c.name, **c.params} for c in topo.checks],
        "features": sorted(topo.features),
    }
