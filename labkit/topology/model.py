"""The typed topology: what a lab is, after validation, before any kernel work.

Every object keeps the Loc it came from so that a kernel error at `up` time can still
point at the line of the topology file that asked for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from labkit.errors import Loc

IPv4If = ipaddress.IPv4Interface
IPv6If = ipaddress.IPv6Interface
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Endpoint:
    """One end of a link, or one member of a LAN: an interface on a node."""

    node: str
    iface: str
    loc: Loc
    ipv4: IPv4If | None = None
    ipv6: IPv6If | None = None
    mtu: int | None = None
    segment: str = ""
    disabled: set[int] = field(default_factory=set)  # families turned off with `ipv4: false`
    addr_locs: dict[int, Loc] = field(default_factory=dict)  # where explicit addresses stood

    @property
    def label(self) -> str:
        return f"{self.node}:{self.iface}"


@dataclass
class Segment:
    """A broadcast domain: a point-to-point link (veth pair) or a LAN (bridge)."""

    kind: Literal["link", "lan"]
    name: str
    endpoints: list[Endpoint]
    loc: Loc
    ipv4: ipaddress.IPv4Network | None = None
    ipv6: ipaddress.IPv6Network | None = None
    mtu: int | None = None
    disabled: set[int] = field(default_factory=set)
    subnet_locs: dict[int, Loc] = field(default_factory=dict)


@dataclass
class Route:
    dst: Net
    via: Addr
    loc: Loc
    dev: str | None = None


@dataclass
class Node:
    name: str
    loc: Loc
    description: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    forwarding: bool = False
    interfaces: dict[str, Endpoint] = field(default_factory=dict)
    loopback: list[IPv4If | IPv6If] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    kernel: str | None = None  # this node's own kernel (a lab spanning kernels)

    def addresses(self, family: int | None = None) -> list[Addr]:
        """Every interface address of the node, loopback extras last; family 4 or 6."""
        out: list[Addr] = []
        for ep in self.interfaces.values():
            for ifa in (ep.ipv4, ep.ipv6):
                if ifa is not None and family in (None, ifa.version):
                    out.append(ifa.ip)
        out += [ifa.ip for ifa in self.loopback if family in (None, ifa.version)]
        return out


@dataclass
class Check:
    """A validation test declared in the topology (netlab style), run by `labkit check`."""

    name: str
    kind: str
    loc: Loc
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Topology:
    name: str
    path: str
    loc: Loc
    description: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)
    links: list[Segment] = field(default_factory=list)
    lans: dict[str, Segment] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the YAML text it was parsed from
    # Kernels the lab may run on, in order of preference: ["host"], ["debian-6.12", ...];
    # empty = any kernel that has the features (the host's first).
    kernels: list[str] = field(default_factory=list)
    kernel_loc: Loc | None = None
    # the lab's exercises file (`exercises:`, absolute), for `labkit exercise`
    exercises: str | None = None

    @property
    def segments(self) -> list[Segment]:
        return [*self.links, *self.lans.values()]

    def node(self, name: str) -> Node:
        return self.nodes[name]
