"""Run the checks a topology declares (its `checks:` list) against a running lab.

A check names a target node; a node has several addresses, and the sender may reach only
some of them (`{from: y, to: r}` where y shares a LAN with r but not r's other links). The
address is the one the sender's kernel would reach most directly: on a subnet the sender
is attached to first, then one its routes reach, and the verdict says which and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labkit import features
from labkit.hosts.rpc import remote
from labkit.topology.model import Check
from labkit.traffic.exchange import exchange_nodes
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab, Node


@dataclass(frozen=True)
class Route:
    """What the sender's kernel says about one destination (`ip route get`)."""

    dev: str
    gateway: str | None = None  # None: on a subnet the sender is attached to


@dataclass(frozen=True)
class Choice:
    address: str
    reason: str


def choose_address(node: str, routes: dict[str, Route | None], sender: str) -> Choice:
    """Of a node's addresses (in its order, with the sender's route to each), the one the
    sender reaches directly, else through a route, else the first (the check then shows
    it unreachable, which is right for `expect: fail`)."""
    for address, route in routes.items():
        if route is not None and route.gateway is None:
            return Choice(address, f"{node}'s address on {sender}'s {route.dev} subnet")
    for address, route in routes.items():
        if route is not None:
            return Choice(address, f"{node}'s first address {sender} has a route to "
                                   f"(via {route.gateway} on {route.dev})")
    return Choice(next(iter(routes)), f"{sender} has no route to any address of {node}; "
                                      "tried its first")


def node_routes(node: Node, addresses: list[str]) -> dict[str, Route | None]:
    """kernel_routes for a node wherever it runs (next to its kernel)."""
    found = node.call(routes_json, addresses)
    return {a: Route(*r) if r else None for a, r in found.items()}


@remote
def routes_json(lab: Lab, node: str, addresses: list[str]) -> dict[str, list[Any] | None]:
    return {a: [r.dev, r.gateway] if r else None
            for a, r in kernel_routes(lab.node(node).ns, addresses).items()}


def kernel_routes(ns: str, addresses: list[str]) -> dict[str, Route | None]:
    """`ip route get` inside a namespace for each address: device, and gateway if any."""
    from pyroute2.netlink.exceptions import NetlinkError

    from labkit.base.rtnl import opened

    out: dict[str, Route | None] = {}
    with opened(ns) as ipr:
        for address in addresses:
            try:
                msg = ipr.route("get", dst=address)[0]
            except NetlinkError:  # ENETUNREACH, EHOSTUNREACH...
                out[address] = None
                continue
            if msg["type"] not in (1, 2):  # RTN_UNICAST, RTN_LOCAL; not blackhole etc.
                out[address] = None
                continue
            oif = msg.get_attr("RTA_OIF")
            link = ipr.link("get", index=oif)[0] if oif else None
            dev = link.get_attr("IFLA_IFNAME") if link is not None else "?"
            out[address] = Route(dev, msg.get_attr("RTA_GATEWAY"))
    return out


def run_check(lab: Lab, check: Check) -> Verdict:
    p = check.params
    src = lab.node(p["from"])
    why = ""
    if p["to"] in lab.nodes:
        candidates = lab.node(p["to"]).addresses(p["family"])
        if not candidates:
            return Verdict(check.name, "error",
                           f"node {p['to']} has no IPv{p['family']} address to reach.")
        choice = choose_address(p["to"], node_routes(src, candidates), p["from"])
        address, why, dst = choice.address, choice.reason, lab.node(p["to"])
    else:
        address = p["to"]
        owner = next((n for n in lab.nodes.values() if address in n.addresses()), None)
        if owner is None:
            return Verdict(check.name, "error",
                           f"no node of the lab owns {address}, so nothing can answer there.")
        dst = owner
    result = exchange_nodes(src, dst, address, p["port"], p["proto"])
    used = f" [{address}: {why}]" if why else ""
    if not result.ran:
        return Verdict(check.name, "error", result.detail + used)
    expected = p["expect"] == "pass"
    outcome = "pass" if result.ok == expected else "fail"
    detail = result.detail if expected else (
        f"unreachable as expected ({result.detail})" if not result.ok
        else f"reachable but expected not to be ({result.detail})")
    return Verdict(check.name, outcome, detail + used,
                   {"from": p["from"], "to": address, "proto": p["proto"],
                    "rtt_ms": result.rtt_ms, **({"address_choice": why} if why else {})})


def run_checks(lab: Lab) -> list[Verdict]:
    out = []
    for check in lab.topo.checks:
        if check.kind == "reach":
            out.append(run_check(lab, check))
            continue
        key = features.owner_of_check(check.kind)
        out.append(features.get(key).run_check(lab, lab.topo.features[key], check))
    return out
