"""Topology -> running namespaces, in one ordered pass over rtnetlink.

Order matters: namespaces, loopbacks, bridges, veth pairs (created straight into their
namespaces, so the host's root namespace never holds a lab link), addresses, sysctls,
routes, then kernel features. The caller (Lab.up) owns atomicity: any exception here is
followed by a full teardown.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from labkit.base import netns
from labkit.base.rtnl import Rtnl, kernel_error, peer_data
from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.lab import names
from labkit.lab.span import Span
from labkit.lab.state import LabState
from labkit.topology.model import Endpoint, Node, Segment, Topology

IFA_F_NODAD = 0x02
IFF_LOWER_UP = 0x10000
Progress = Callable[[int, int, str], None]


@dataclass
class Builder:
    topo: Topology
    state: LabState
    progress: Progress = lambda done, total, what: None
    here: set[str] | None = None  # nodes placed in this kernel (None: all of them)
    span: Span | None = None  # how to reach nodes in other kernels (labs spanning VMs)
    sockets: dict[str, Rtnl] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    _done: int = 0
    _total: int = 0

    def ns(self, node: str) -> str:
        return names.node_ns(self.topo.name, node)

    def mine(self, node: str) -> bool:
        return self.here is None or node in self.here

    @property
    def nodes(self) -> list[Node]:
        return [n for n in self.topo.nodes.values() if self.mine(n.name)]

    def lans(self) -> list[Segment]:
        """This kernel's part of each LAN: its local members (LANs without any are not
        built here)."""
        out = []
        for lan in self.topo.lans.values():
            members = [ep for ep in lan.endpoints if self.mine(ep.node)]
            if members:
                out.append(replace(lan, endpoints=members))
        return out

    def step(self, what: str) -> None:
        self._done += 1
        self.progress(self._done, self._total, what)

    def run(self) -> None:
        eps = [ep for n in self.nodes for ep in n.interfaces.values()]
        lan_eps = sum(len(lan.endpoints) for lan in self.lans())
        self._total = (2 * len(self.nodes) + 2 * bool(self.lans()) + lan_eps
                       + len(self.topo.links) + 2 * len(eps))
        try:
            self._namespaces()
            self._lans()
            self._links()
            self._addresses()
            self._node_settings()
            self._wait_carrier()
        finally:
            self.close()

    def close(self) -> None:
        for ipr in self.sockets.values():
            ipr.close()
        for fd in self.fds.values():
            os.close(fd)
        self.sockets.clear()
        self.fds.clear()

    # -- steps -------------------------------------------------------------------------
    def _namespaces(self) -> None:
        wanted = [self.ns(n.name) for n in self.nodes]
        if self.lans():
            wanted.append(names.lan_ns(self.topo.name))
        self.state.namespaces = wanted
        self.state.save()  # intent first: a SIGKILL from here on leaves a record
        for ns in wanted:
            try:
                netns.create(ns)
            except OSError as exc:
                raise kernel_error(exc, f"create network namespace {ns}") from exc
            ipr = self.sockets[ns] = Rtnl(ns)
            ipr.set_link(1, up=True)  # lo is always ifindex 1 in a new netns
            self.step("namespaces")

    def _fd(self, ns: str) -> int:
        if ns not in self.fds:
            self.fds[ns] = netns.open_fd(ns)
        return self.fds[ns]

    def _lans(self) -> None:
        """Every LAN as bridges in the lab's LAN namespace (see labkit.lab.lan)."""
        lans = self.lans()
        if not lans:
            return
        from labkit.lab.lan import LanBuilder

        lan_ns = names.lan_ns(self.topo.name)
        # The switch namespace needs no IPv6 of its own: no link-local chatter on ports.
        with netns.entered(lan_ns), contextlib.suppress(FileNotFoundError):
            for key in ("all", "default"):  # absent when the kernel runs without IPv6
                _write_sysctl(f"net.ipv6.conf.{key}.disable_ipv6", "1")
        LanBuilder(lan_ns, self.sockets[lan_ns], self.ns, lambda node: self._fd(self.ns(node)),
                   self.step).build(lans)
        if self.span is not None:
            from labkit.lab import span

            for lan in self.topo.lans.values():
                if self.span.spans(lan):
                    span.carry_lan(self.span, lan)
        self.step("bridges")

    def _links(self) -> None:
        for link in self.topo.links:
            a, b = link.endpoints
            if not (self.mine(a.node) and self.mine(b.node)):
                if self.span is not None and self.span.spans(link):
                    from labkit.lab import span

                    span.carry_link(self.span, link)
                    self.step("links")
                continue
            kind = link_kind(self.topo, link)
            try:
                _add_pair(self.sockets[self.ns(a.node)], kind, a.iface, b.iface,
                          self._fd(self.ns(b.node)))
            except Exception as exc:
                raise kernel_error(exc, f"create the {kind} pair {link.name}", link.loc) from exc
            self.step("links")

    def _addresses(self) -> None:
        for node in self.nodes:
            ipr = self.sockets[self.ns(node.name)]
            index = {link["ifname"]: link["index"] for link in ipr.links()}
            for ep in node.interfaces.values():
                self._configure(ipr, index[ep.iface], ep)
            for ifa in node.loopback:
                _add_addr(ipr, 1, ifa, node.loc, f"{node.name}:lo")

    def _configure(self, ipr: Rtnl, idx: int, ep: Endpoint) -> None:
        try:
            ipr.set_link(idx, up=True, mtu=ep.mtu or None)
        except Exception as exc:
            raise kernel_error(exc, f"bring up {ep.label}", ep.loc) from exc
        self.step("interfaces")
        for ifa in (ep.ipv4, ep.ipv6):
            if ifa:
                _add_addr(ipr, idx, ifa, ep.addr_locs.get(ifa.version, ep.loc), ep.label)
        self.step("addresses")

    def _node_settings(self) -> None:
        for node in self.nodes:
            ns = self.ns(node.name)
            _apply_sysctls(node, ns)
            ipr = self.sockets[ns]
            for route in node.routes:
                try:
                    ipr.add_route(str(route.dst), str(route.via),
                                  ipr.index(route.dev) if route.dev else None)
                except Exception as exc:
                    raise kernel_error(exc, f"add route {route.dst} via {route.via} on "
                                            f"{node.name}", route.loc) from exc
            self.step("routes")

    def _wait_carrier(self, timeout: float = 5.0) -> None:
        """Return only when every lab interface has carrier, so traffic flows.

        IFF_LOWER_UP is set synchronously when both veth ends are up; operstate follows
        later through linkwatch (up to a second) and would only slow `up` down.
        """
        pending = {self.ns(n.name): set(n.interfaces) for n in self.nodes}

        def all_up() -> bool:
            for ns in list(pending):
                pending[ns] -= {link["ifname"] for link in self.sockets[ns].links()
                                if link["flags"] & IFF_LOWER_UP}
                if not pending[ns]:
                    del pending[ns]
            return not pending

        wait_until(all_up, timeout, "every lab interface to have carrier", interval=0.02,
                   detail=lambda: ", ".join(f"{ns}:{i}" for ns, ifs in pending.items()
                                            for i in ifs),
                   hint="Check `dmesg` for veth, bridge or tunnel errors.")


def link_kind(topo: Topology, link: Segment) -> str:
    """veth, unless a feature builds this link as a veth-like kind of its own (offload:
    emulated NICs, kind tlsnic): its config's `link_kinds` maps link names to kinds."""
    for config in topo.features.values():
        kind = getattr(config, "link_kinds", {}).get(link.name)
        if kind:
            return str(kind)
    return "veth"


def _add_pair(ipr: Rtnl, kind: str, name: str, peer: str, peer_ns_fd: int) -> None:
    """A pair across two namespaces in one request. A veth-like kind (offload's tlsnic)
    takes its peer as veth does: VETH_INFO_PEER in IFLA_INFO_DATA."""
    ipr.add_link(name, kind, peer_data(peer, peer_ns_fd))


def _add_addr(ipr: Rtnl, idx: int, ifa: Any, loc: Any, label: str) -> None:
    try:
        ipr.add_addr(idx, str(ifa.ip), ifa.network.prefixlen,
                     IFA_F_NODAD if ifa.version == 6 else 0)
    except Exception as exc:
        raise kernel_error(exc, f"add address {ifa} to {label}", loc) from exc


def _apply_sysctls(node: Node, ns: str) -> None:
    values = dict(node.sysctls)
    if node.forwarding:
        values.setdefault("net.ipv4.ip_forward", "1")
        values.setdefault("net.ipv6.conf.all.forwarding", "1")
    if not values:
        return
    with netns.entered(ns):
        for key, value in values.items():
            try:
                _write_sysctl(key, value)
            except OSError as exc:
                hint = ("No such sysctl in this kernel's network namespace."
                        if isinstance(exc, FileNotFoundError) else "")
                raise LabkitError(f"cannot set sysctl {key}={value} on node {node.name}: "
                                  f"{exc.strerror}.", hint=hint, loc=node.loc) from exc


def _write_sysctl(key: str, value: str) -> None:
    """/proc/sys/net resolves to the namespace of the opening thread.

    Like sysctl(8): a key containing '/' keeps its dots (for names such as eth1.100).
    """
    path = key.translate(str.maketrans("./", "/.")) if "/" in key else key.replace(".", "/")
    with open("/proc/sys/" + path, "w") as fh:
        fh.write(value)
