"""LAN segments as bridges in the lab's LAN namespace, and what large LANs need to work.

A LAN is one bridge named after it, one veth port per member (`p<N>` on the bridge side,
the member's interface on the node side). Two kernel limits shape a large LAN:

- A bridge takes at most 1023 ports (BR_MAX_PORTS is 1024 and port number 0 is reserved,
  net/bridge/br_if.c find_portno): one more gives "Exchange full". A LAN with more members
  is built as a two-level tree: its bridge is the root and holds only trunks, one veth pair
  per leaf bridge, and the leaves hold the members. Trees have no loops, so STP stays off.
- A bridge floods a broadcast (ARP) by transmitting it on every port; a veth hands each
  copy to the backlog of this CPU, which holds net.core.netdev_max_backlog frames (1000).
  The rest are dropped (softnet_stat column 2): at ~1000 members ARP itself fails. That
  sysctl is global (a lab namespace does not have it) and the host's is not ours to change.
  Instead, for LANs of more than NAPI_MEMBERS members, each copy goes through the receiving
  veth's own NAPI ring (GRO on in the node, TSO off on the bridge port: drivers/net/veth.c
  veth_xmit and veth_skb_is_eligible_for_gro), which bypasses the shared backlog.

Large LANs also get quieter members: IPv6 router solicitations and link-local DAD off in
the member namespaces (every one of them is a multicast flooded to every member, N^2
frames while the lab comes up) and multicast snooping off on their bridges (with no
querier it only floods anyway, and its table would overflow). Everything is set in the
lab's own namespaces; the host's root namespace is never touched.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit.base import netns
from labkit.base.rtnl import Rtnl, bridge_data, kernel_error, peer_data
from labkit.lab import names
from labkit.topology.model import Endpoint, Segment

BRIDGE_MAX_PORTS = 1023  # ports a Linux bridge takes (see the module docstring)
NAPI_MEMBERS = 256  # LANs larger than this flood through per-port NAPI rings
# Sysctls for the members of large LANs, written before their interface exists so the
# interface inherits them from `default`.
QUIET_MEMBER_SYSCTLS = {
    "net/ipv6/conf/default/router_solicitations": "0",
    "net/ipv6/conf/default/dad_transmits": "0",
}

SIOCETHTOOL = 0x8946
ETHTOOL_STSO = 0x1F
ETHTOOL_SGRO = 0x2C


@dataclass
class Bridge:
    """One bridge of a LAN: the root (named like the LAN) or a leaf under it."""

    name: str
    alias: str
    members: list[Endpoint] = field(default_factory=list)
    trunk: tuple[str, str] | None = None  # (root-side, leaf-side) veth names of a leaf


def plan(lan: Segment, number: int, max_ports: int | None = None) -> list[Bridge]:
    """The bridges of a LAN, root first. `number` tells LANs apart in the leaves' names.

    Leaf and trunk names contain a '.', which LAN names cannot, and port names are p<N>,
    so no generated name can collide with a LAN's.
    """
    max_ports = max_ports or BRIDGE_MAX_PORTS
    members = lan.endpoints
    if len(members) <= max_ports:
        return [Bridge(lan.name, f"LAN {lan.name}", list(members))]
    per_leaf = max_ports - 1  # one port of each leaf is its trunk
    count = -(-len(members) // per_leaf)
    if count > max_ports:
        raise ValueError(f"LAN {lan.name} needs {count} leaf bridges; a root takes "
                         f"{max_ports}")
    n = len(members)
    out = [Bridge(lan.name, f"LAN {lan.name} (root of {count} leaf bridges)")]
    for k in range(count):  # balanced: leaf sizes differ by one at most
        out.append(Bridge(f"b{number}.{k + 1}", f"LAN {lan.name} leaf {k + 1}/{count}",
                          list(members[k * n // count:(k + 1) * n // count]),
                          (f"t{number}.{k + 1}", f"u{number}.{k + 1}")))
    return out


def members(links: list[dict[str, Any]], lan: str) -> list[str]:
    """The members of a LAN as `status` shows them, from `inspect.node_links` of the LAN
    namespace: the aliases of the ports on its bridge and on the leaves under it."""
    by_name = {i["ifname"]: i for i in links}
    root = by_name.get(lan)
    if root is None:
        return []
    bridges = {root["index"]}
    for i in links:  # leaves say whose they are in their alias (see plan)
        if i["kind"] == "bridge" and (i.get("alias") or "").startswith(f"LAN {lan} leaf "):
            bridges.add(i["index"])
    ports = [i for i in links if i["master"] in bridges and i["ifname"].startswith("p")
             and "." not in i["ifname"]]
    ports.sort(key=lambda i: int(i["ifname"][1:]))
    return [i["alias"] for i in ports]


class LanBuilder:
    """Builds every LAN of a lab in its LAN namespace, over the Builder's sockets."""

    def __init__(self, lan_ns: str, ipr: Rtnl, node_ns: Callable[[str], str],
                 node_fd: Callable[[str], int], step: Callable[[str], None]) -> None:
        self.lan_ns = lan_ns
        self.ipr = ipr
        self.node_ns = node_ns
        self.node_fd = node_fd
        self.step = step
        self.port = 0

    def build(self, lans: list[Segment], max_ports: int | None = None) -> None:
        for number, lan in enumerate(lans, start=1):
            self._lan(lan, number, max_ports)

    def _lan(self, lan: Segment, number: int, max_ports: int | None) -> None:
        large = len(lan.endpoints) > NAPI_MEMBERS
        bridges = plan(lan, number, max_ports)
        root = self._bridge(bridges[0], lan, large)
        for leaf in bridges[1:]:
            index = self._bridge(leaf, lan, large)
            self._trunk(leaf, root, index, lan)
        if large:
            self._quiet_members(lan.endpoints)
        for bridge in bridges:
            master = root if bridge is bridges[0] else self.ipr.index(bridge.name)
            for ep in bridge.members:
                self._port(ep, master, lan)
        if large:
            self._napi(lan.endpoints)

    def _bridge(self, bridge: Bridge, lan: Segment, large: bool) -> int:
        try:
            self.ipr.add_link(bridge.name, "bridge",
                              bridge_data(mcast_snooping=False if large else None))
            index = self.ipr.index(bridge.name)
            self.ipr.set_link(index, up=True, alias=bridge.alias)
        except Exception as exc:
            raise kernel_error(exc, f"create bridge {bridge.name} of LAN {lan.name}",
                               lan.loc) from exc
        return index

    def _trunk(self, leaf: Bridge, root: int, leaf_index: int, lan: Segment) -> None:
        assert leaf.trunk is not None
        up, down = leaf.trunk
        try:
            self.ipr.add_link(up, "veth", peer_data(down), master=root)
            self.ipr.set_link(name=down, master=leaf_index, up=True,
                              alias=f"{leaf.alias}: trunk to the root")
            self.ipr.set_link(name=up, up=True, alias=f"LAN {lan.name}: trunk to "
                              f"leaf {leaf.name}")
        except Exception as exc:
            raise kernel_error(exc, f"join leaf bridge {leaf.name} to LAN {lan.name}",
                               lan.loc) from exc

    def _port(self, ep: Endpoint, master: int, lan: Segment) -> None:
        self.port += 1
        pname = names.lan_port(self.port)
        try:
            self.ipr.add_link(pname, "veth", peer_data(ep.iface, self.node_fd(ep.node)),
                              master=master)
            # The alias tells `status` and captures which node a port serves.
            self.ipr.set_link(name=pname, up=True, alias=ep.label, mtu=ep.mtu or None)
        except Exception as exc:
            raise kernel_error(exc, f"attach {ep.label} to LAN {lan.name}", ep.loc) from exc
        self.step("LAN ports")

    def _quiet_members(self, eps: list[Endpoint]) -> None:
        for node in dict.fromkeys(ep.node for ep in eps):
            with netns.entered(self.node_ns(node)):
                for key, value in QUIET_MEMBER_SYSCTLS.items():
                    _write_proc(key, value, missing_ok=True)  # absent without IPv6

    def _napi(self, eps: list[Endpoint]) -> None:
        """Per-port NAPI rings instead of the CPU backlog, for every member's port."""
        with netns.entered(self.lan_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            for pname in _port_names(self.port - len(eps) + 1, self.port):
                _ethtool_set(sock, pname, ETHTOOL_STSO, 0)
        by_node: dict[str, list[str]] = {}
        for ep in eps:
            by_node.setdefault(ep.node, []).append(ep.iface)
        for node, ifaces in by_node.items():
            with netns.entered(self.node_ns(node)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                for iface in ifaces:
                    _ethtool_set(sock, iface, ETHTOOL_SGRO, 1)


def _port_names(first: int, last: int) -> list[str]:
    return [names.lan_port(i) for i in range(first, last + 1)]


def _ethtool_set(sock: socket.socket, ifname: str, cmd: int, value: int) -> None:
    """One legacy ethtool set (struct ethtool_value) on an interface of the socket's netns."""
    data = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    ifreq = struct.pack("16sP16x", ifname.encode(), ctypes.addressof(data))
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError as exc:
        raise kernel_error(exc, f"set offloads of {ifname} for a large LAN") from exc


def _write_proc(key: str, value: str, missing_ok: bool = False) -> None:
    """/proc/sys/net resolves to the namespace of the opening thread."""
    try:
        with open(f"/proc/sys/{key}", "w") as fh:
            fh.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
