"""What a running lab looks like in the kernel right now (for status, tests, widgets)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from labkit.base import netns
from labkit.base.rtnl import Rtnl
from labkit.lab import names, state

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

OPERSTATE = {0: "UNKNOWN", 2: "DOWN", 5: "DORMANT", 6: "UP"}


def node_links(ns: str) -> list[dict[str, Any]]:
    """Interfaces of a namespace with their addresses, like `ip -j addr` but in-process."""
    with Rtnl(ns) as sock:
        addrs: dict[int, list[str]] = {}
        for index, address in sock.addrs():
            addrs.setdefault(index, []).append(address)
        return [{"ifname": link["ifname"], "index": link["index"], "kind": link["kind"],
                 "state": link["state"], "up": bool(link["flags"] & 1), "mtu": link["mtu"],
                 "mac": link["mac"], "master": link["master"], "alias": link["alias"],
                 "addresses": addrs.get(link["index"], [])} for link in sock.links()]


def _visible(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lab interfaces, plus lo only when the topology gave it extra addresses."""
    return [i for i in links if i["ifname"] != "lo" or len(i["addresses"]) > 2]


def lab_status(lab: Lab) -> dict[str, Any]:
    st = state.load(lab.name)
    nodes = {}
    for name, node in lab.nodes.items():
        present = netns.exists(node.ns)
        nodes[name] = {
            "namespace": node.ns,
            "present": present,
            "interfaces": _visible(node_links(node.ns)) if present else [],
        }
    lans = {}
    lan_ns = names.lan_ns(lab.name)
    if lab.topo.lans and netns.exists(lan_ns):
        links = node_links(lan_ns)
        from labkit.lab.lan import members

        for lan in lab.topo.lans:
            br = next((i for i in links if i["ifname"] == lan), None)
            lans[lan] = {"up": bool(br and br["up"]), "members": members(links, lan)}
    return {
        "name": lab.name,
        "status": st.status if st else "down",
        "topology": st.topology if st else lab.topo.path,
        "placement": (st.placement if st else lab.placement).to_json(),
        "description": lab.topo.description,
        "nodes": nodes,
        "lans": lans,
        "processes": [p for p in (st.processes if st else [])
                      if os.path.exists(f"/proc/{p['pid']}")],
        "features": st.features if st else {},
    }
