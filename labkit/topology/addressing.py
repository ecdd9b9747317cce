"""Default lab addressing: every segment gets a subnet and every endpoint an address.

Lab traffic must stay in ranges that can never be a real destination: 198.18.0.0/15
(RFC 2544 benchmarking) and a ULA prefix. The first half of each pool goes to LANs
(/24 and /64 each, so LAN k is 198.18.k.0/24), the second half to point-to-point links
(/30 and /64). Endpoint k of a segment gets host k+1; explicit addresses win and are
skipped by the allocator.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any

from labkit.topology.fields import Problems
from labkit.topology.model import Segment, Topology

DEFAULT_V4 = ipaddress.ip_network("198.18.0.0/15")
DEFAULT_V6 = ipaddress.ip_network("fd00:1ab::/48")


@dataclass
class Pools:
    ipv4: ipaddress.IPv4Network | None = DEFAULT_V4
    ipv6: ipaddress.IPv6Network | None = DEFAULT_V6


@dataclass
class _Allocator:
    """Hands out aligned subnets from a range, never one overlapping a taken subnet."""

    space: Any
    taken: list[Any] = field(default_factory=list)
    cursor: dict[int, int] = field(default_factory=dict)

    def take(self, prefix: int) -> Any | None:
        if prefix < self.space.prefixlen:
            return None
        step = 1 << (self.space.max_prefixlen - prefix)
        count = 1 << (prefix - self.space.prefixlen)
        base = int(self.space.network_address)
        i = self.cursor.get(prefix, 0)
        while i < count:
            net = ipaddress.ip_network((base + i * step, prefix))
            i += 1
            if not any(net.overlaps(t) for t in self.taken):
                self.cursor[prefix] = i
                self.taken.append(net)
                return net
        self.cursor[prefix] = i
        return None


def _halves(pool: Any) -> tuple[Any, Any]:
    if pool.prefixlen >= pool.max_prefixlen - 2:
        return pool, pool
    lans, links = pool.subnets(prefixlen_diff=1)
    return lans, links


def _lan_prefix(version: int, members: int) -> int:
    if version == 6:
        return 64
    need = max(members + 2, 4)
    return min(24, 32 - math.ceil(math.log2(need)))


def assign(topo: Topology, pools: Pools, p: Problems) -> None:
    for version in (4, 6):
        _assign_family(topo, version, getattr(pools, f"ipv{version}"), p)


def _assign_family(topo: Topology, version: int, pool: Any, p: Problems) -> None:
    key = f"ipv{version}"
    taken: list[tuple[Any, Segment]] = []

    def claim(net: Any, seg: Segment) -> bool:
        for other_net, other in taken:
            if net.overlaps(other_net):
                where = "link" if seg.kind == "link" else "LAN"
                p.add(seg.subnet_locs.get(version, seg.loc),
                      f"subnet {net} of {where} {seg.name} overlaps {other_net} of "
                      f"{other.name}.", "Give each link and LAN its own subnet.")
                return False
        taken.append((net, seg))
        return True

    pending: list[Segment] = []
    for seg in topo.segments:
        if version in seg.disabled:
            continue
        net = getattr(seg, key)
        if net is None:
            explicit = [getattr(ep, key) for ep in seg.endpoints if getattr(ep, key)]
            net = explicit[0].network if explicit else None
            setattr(seg, key, net)
        if net is not None:
            claim(net, seg)
        elif pool is not None:
            pending.append(seg)

    if pool is not None:
        lan_half, link_half = _halves(pool)
        allocators = {
            "lan": _Allocator(lan_half, [n for n, _ in taken]),
            "link": _Allocator(link_half, [n for n, _ in taken]),
        }
        for seg in pending:
            prefix = _lan_prefix(version, len(seg.endpoints)) if seg.kind == "lan" else (
                30 if version == 4 else 64)
            net = allocators[seg.kind].take(prefix)
            if net is None:
                p.add(seg.loc, f"the {key} pool {pool} has no room left for {seg.name}.",
                      f"Give a larger pool under addressing.{key}, or subnets per link/LAN.")
                return
            setattr(seg, key, net)
            taken.append((net, seg))

    for seg in topo.segments:
        net = getattr(seg, key)
        if net is not None and version not in seg.disabled:
            _assign_hosts(seg, net, key, p)


def _assign_hosts(seg: Segment, net: Any, key: str, p: Problems) -> None:
    used = set()
    version = net.version
    reserved = {net.network_address, net.broadcast_address} if (
        version == 4 and net.prefixlen < 31) else set()
    for ep in seg.endpoints:
        ifa = getattr(ep, key)
        if not ifa:
            continue
        loc = ep.addr_locs.get(version, ep.loc)
        if ifa.ip not in net:
            p.add(loc, f"address {ifa} of {ep.label} is outside its subnet {net} "
                       f"({seg.name}).", f"Use an address inside {net}, or change the "
                                         f"subnet of the {seg.kind}.")
        elif ifa.network != net:
            p.add(loc, f"address {ifa} of {ep.label} has prefix /{ifa.network.prefixlen} but "
                       f"its {seg.kind} subnet is {net}.",
                  f"Write it as {ifa.ip}/{net.prefixlen}.")
        elif ifa.ip in reserved:
            p.add(loc, f"address {ifa} of {ep.label} is the "
                       f"{'network' if ifa.ip == net.network_address else 'broadcast'} "
                       f"address of {net}.", "Pick a host address inside the subnet.")
        used.add(ifa.ip)
    hosts = net.hosts() if version == 4 else (net.network_address + i for i in range(1, 1 << 16))
    for ep in seg.endpoints:
        if getattr(ep, key) or version in ep.disabled:
            continue
        for ip in hosts:
            if ip not in used:
                setattr(ep, key, ipaddress.ip_interface(f"{ip}/{net.prefixlen}"))
                used.add(ip)
                break
        else:
            p.add(seg.loc, f"subnet {net} of {seg.name} is too small for the "
                           f"endpoints of {seg.name} ({len(seg.endpoints)}).",
                  "Give it a shorter prefix.")
            return
