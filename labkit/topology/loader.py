"""Topology file -> validated Topology, or a TopologyError listing every located problem.

Nothing here touches the kernel: `labkit validate` and the first step of `labkit up` are
the same call, so a bad file never leaves a half-built lab.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from labkit import features
from labkit.base.names import LAB_NAME_MAX
from labkit.errors import Loc, TopologyError
from labkit.topology import addressing
from labkit.topology.fields import (
    Problems,
    as_bool,
    as_iface,
    as_int,
    as_list,
    as_map,
    as_name,
    as_network,
    as_str,
    as_text,
    check_ifname,
    check_keys,
    shown,
    suggest,
)
from labkit.topology.located import LList, LMap, from_wire, load_text, read_text, wire_text
from labkit.topology.model import Check, Endpoint, Node, Route, Segment, Topology

TOP_KEYS = ["name", "description", "kernel", "addressing", "defaults", "nodes", "links", "lans",
            "checks", "exercises"]
NODE_KEYS = ["description", "kernel", "sysctls", "routes", "forwarding", "interfaces"]
DEFAULT_KEYS = ["sysctls", "routes", "forwarding"]
SEGMENT_KEYS = ["endpoints", "ipv4", "ipv6", "mtu", "description"]
IFACE_KEYS = ["ipv4", "ipv6", "mtu"]
ROUTE_KEYS = ["to", "via", "dev"]
CHECK_KEYS = ["name", "type", "from", "to", "proto", "family", "port", "expect"]
# A sysctl name as sysctl(8) writes it: dot-separated, or '/'-separated when a component
# holds a dot (net/ipv4/conf/eth1.100/rp_filter). Components: the kernel's own charset.
SYSCTL_PART = {".": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}"),
               "/": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")}
# A sysctl value: one whole number, several for the vector sysctls below, or, for the few
# net sysctls that take a name, one of the kernel's own names for that key. Checked per
# key at validation, so `forwarding: cubic` or `ip_forward: "1 2 3"` is refused before `up`.
SYSCTL_INT_RE = re.compile(r"-?[0-9]{1,19}")
SYSCTL_VECTORS = frozenset({  # the last component of net sysctls that take several numbers
    "tcp_rmem", "tcp_wmem", "tcp_mem", "udp_mem", "ip_local_port_range",
    "ping_group_range", "sctp_mem", "sctp_rmem", "sctp_wmem", "ip_local_reserved_ports"})
_CONGESTION = frozenset({
    "reno", "cubic", "bbr", "dctcp", "vegas", "westwood", "htcp", "hybla", "illinois",
    "scalable", "yeah", "lp", "veno", "bic", "highspeed", "nv", "cdg"})
SYSCTL_NAMES: dict[str, frozenset[str]] = {  # last component -> the names it takes
    "tcp_congestion_control": _CONGESTION,
    "tcp_allowed_congestion_control": _CONGESTION,
    "default_qdisc": frozenset({"pfifo_fast", "pfifo", "fq", "fq_codel", "fq_pie", "sfq",
                                "codel", "cake", "noqueue"}),
    "path_manager": frozenset({"kernel", "userspace"}),
    "scheduler": frozenset({"default"}),
}
# Nodes in one lab: the one place this limit is stated. Not a bridge limit (LANs of any
# size are trees of bridges, labkit.lab.lan): what has been built and checked on our 2-core
# machines (a 2000-member LAN). `up` holds ~5 file descriptors per namespace while it
# builds, so 4096 nodes exceed even a 20000 open-file limit.
MAX_NODES = 2048


def load(path: str) -> Topology:
    return loads(read_text(path), path)


def loads(text: str, path: str = "<string>") -> Topology:
    topo = parse(load_text(text, path), path)
    topo.source = text  # kept in the lab's state: a running lab is what was built
    return topo


def wire(topo: Topology) -> str | None:
    """The topology as read, in its JSON wire form (labkit.topology.located.to_wire), for a
    reader that should not import yaml: a lab VM's daemon. None if JSON cannot carry it."""
    return wire_text(load_text(topo.source, topo.path)) if topo.source else None


def loads_wire(data: str, text: str, path: str) -> Topology:
    """A topology from its wire form, checked as loads checks it; text stays its source."""
    import json

    topo = parse(from_wire(json.loads(data), path), path)
    topo.source = text
    return topo


def parse(doc: Any, path: str) -> Topology:
    p = Problems()
    root_loc = getattr(doc, "loc", Loc(path, 1, 1))
    if not isinstance(doc, LMap):
        p.add(root_loc, "a topology file must be a mapping with `name:` and `nodes:` at the "
                        "top level.", "See topologies/pair.yaml for the shape.")
        raise TopologyError(p.items)
    feature_keys = features.keys()
    check_keys(doc, TOP_KEYS + feature_keys, "the topology", p, required=("name", "nodes"))

    name = as_name(doc["name"], doc.val_loc("name"), "the lab name", p, LAB_NAME_MAX) \
        if "name" in doc else "unnamed"
    topo = Topology(name=name or "invalid", path=path, loc=root_loc)
    if "description" in doc:
        topo.description = as_text(doc["description"], doc.val_loc("description"),
                                   "description", p) or ""

    if "kernel" in doc:
        topo.kernels = _parse_kernels(doc["kernel"], doc.val_loc("kernel"), topo.path, p)
        topo.kernel_loc = doc.val_loc("kernel")
    if "exercises" in doc:
        topo.exercises = _parse_exercises_path(doc, path, p)
    defaults = as_map(doc.get("defaults"), doc.val_loc("defaults"), "defaults", p)
    if defaults is not None:
        check_keys(defaults, DEFAULT_KEYS, "defaults", p)
    pools = _parse_addressing(doc, p)

    nodes_map = as_map(doc.get("nodes"), doc.val_loc("nodes"), "nodes", p)
    node_blocks: dict[str, LMap] = {}
    if nodes_map is not None:
        if not nodes_map and "nodes" in doc:
            p.add(doc.val_loc("nodes"), "the lab has no nodes.", "Add at least one node.")
        if len(nodes_map) > MAX_NODES:  # said alone: checking each node would take long
            p.add(doc.val_loc("nodes"), f"the lab has {len(nodes_map)} nodes; labkit builds "
                  f"at most {MAX_NODES}.", "Split it into several labs.")
            raise TopologyError(p.items)
        for node_name, block in nodes_map.items():
            node = _parse_node(node_name, block, nodes_map, defaults, feature_keys, p)
            if node is not None:
                topo.nodes[node.name] = node
                node_blocks[node.name] = block if isinstance(block, LMap) else LMap()

    _parse_segments(doc, topo, p)
    _attach_interfaces(nodes_map, topo, p)
    if not p:
        addressing.assign(topo, pools, p)
    if not p:
        _check_addresses(topo, p)
        _check_routes(topo, p)
    # the features this lab has: only their modules are imported (a VM's guest loads each
    # lab it builds, and there every import costs ~35x the host's)
    used = [key for key in feature_keys
            if key in doc or any(key in b for b in node_blocks.values())]
    _parse_checks(doc, topo, used, p)
    for key in used:
        blocks = {n: b[key] for n, b in node_blocks.items() if key in b}
        topo.features[key] = features.get(key).parse(doc.get(key), blocks, topo, p)
    for check in topo.checks:
        if check.kind == "reach":
            continue
        owner = features.owner_of_check(check.kind, used) or features.owner_of_check(check.kind)
        if owner is not None and owner not in topo.features:
            p.add(check.loc, f"check '{check.name}' is a {owner} check, but the lab has no "
                             f"`{owner}:` section.", f"Add `{owner}:` to the topology.")
    if p:
        raise TopologyError(p.items)
    return topo


def _parse_addressing(doc: LMap, p: Problems) -> addressing.Pools:
    pools = addressing.Pools()
    block = as_map(doc.get("addressing"), doc.val_loc("addressing"), "addressing", p)
    if block is None:
        return pools
    check_keys(block, ["ipv4", "ipv6"], "addressing", p)
    for version in (4, 6):
        key = f"ipv{version}"
        if key not in block:
            continue
        if block[key] is False:
            setattr(pools, key, None)
            continue
        net = as_network(block[key], block.val_loc(key), f"addressing.{key}", p, version)
        if net is not None:
            setattr(pools, key, net)
    return pools


def _parse_node(name: str, block: Any, nodes_map: LMap, defaults: LMap | None,
                feature_keys: list[str], p: Problems) -> Node | None:
    loc = nodes_map.key_loc(name)
    if as_name(name, loc, "the node name", p) is None:
        return None
    block = as_map(block, nodes_map.val_loc(name), f"node '{name}'", p)
    if block is None:
        return None
    check_keys(block, NODE_KEYS + feature_keys, f"node '{name}'", p)
    node = Node(name=name, loc=loc)
    if "kernel" in block:
        wish = _parse_kernels(block["kernel"], block.val_loc("kernel"), "", p, single=True)
        node.kernel = wish[0] if wish else None
    if "description" in block:
        node.description = as_text(block["description"], block.val_loc("description"),
                                   f"node '{name}' description", p) or ""
    # Defaults first, node values over them; sysctls merge key by key.
    for source, where in ((defaults, "defaults"), (block, f"node '{name}'")):
        if not source:
            continue
        if "sysctls" in source:
            node.sysctls.update(_parse_sysctls(source, where, p))
        if "forwarding" in source:
            fwd = as_bool(source["forwarding"], source.val_loc("forwarding"),
                          f"{where} forwarding", p)
            node.forwarding = bool(fwd)
        if "routes" in source:
            node.routes = _parse_routes(source, where, p)
    return node


def _parse_exercises_path(doc: LMap, path: str, p: Problems) -> str | None:
    """`exercises: FILE`, relative to the topology file. Only resolved here: `labkit
    exercise` (a layer above) reads and validates it, so a lab that is up never fails to
    attach because its exercises file moved."""
    text = as_str(doc["exercises"], doc.val_loc("exercises"), "exercises", p)
    if text is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), text))


def _parse_kernels(value: Any, loc: Loc, path: str, p: Problems,
                   single: bool = False) -> list[str]:
    """`kernel: debian-6.12`, `kernel: [debian-6.12, debian-6.1]`, `host`, `any`, or a path
    to a bzImage or kernel build tree (relative to the topology file)."""
    from labkit.hosts import kernels

    items = [value] if not isinstance(value, list) else list(value)
    if single and len(items) != 1:
        p.add(loc, "a node's kernel is one kernel name, not a list.",
              "Write e.g. `kernel: debian-6.1`.")
        return []
    known = kernels.known_names()
    out = []
    for item in items:
        text = as_str(item, loc, "kernel", p)
        if text is None:
            continue
        if text in ("host", "any") or text in known or kernels.accepts(text):
            out.append(text)
        elif "/" in text:
            base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
            out.append(os.path.normpath(os.path.join(base, text)))
        else:
            p.add(loc, f"unknown kernel '{text}'.",
                  f"Use one of: host, any, {', '.join(known)}, or a path to a bzImage or a "
                  f"kernel build tree. {suggest(text, known)}".strip())
    if "any" in out and len(out) > 1:
        p.add(loc, "kernel `any` cannot be combined with other kernels.",
              "Write `kernel: any`, or list the kernels in order of preference.")
    return [] if out == ["any"] else out


def _parse_sysctls(block: LMap, where: str, p: Problems) -> dict[str, str]:
    out: dict[str, str] = {}
    m = as_map(block["sysctls"], block.val_loc("sysctls"), f"{where} sysctls", p)
    for key, value in (m or {}).items():
        if not _sysctl_name_ok(key):
            p.add(m.key_loc(key), f"sysctl {shown(key)} in {where} is not a network sysctl.",
                  "Only per-namespace `net.*` sysctls can be set in a lab, written as "
                  "sysctl(8) does, e.g. net.ipv4.ip_forward (or net/ipv4/conf/eth1.100/"
                  "rp_filter for a name with a dot); others would change the host.")
            continue
        text = as_str(value, m.val_loc(key), f"sysctl {key}", p)
        if text is None:
            continue
        words = text.split()
        problem = _sysctl_value_problem(key, words)
        if problem:
            p.add(m.val_loc(key), f"sysctl {key} in {where} has the value {shown(text)}, "
                  "which is not a value this sysctl takes.", problem)
            continue
        out[key] = " ".join(words)
    return out


def _sysctl_value_problem(key: str, words: list[str]) -> str:
    """Why `words` cannot be this sysctl's value ("" if it can): the fix, for the error."""
    leaf = key.replace("/", ".").rsplit(".", 1)[-1]
    names = SYSCTL_NAMES.get(leaf)
    if names is not None:
        many = leaf == "tcp_allowed_congestion_control"
        if words and (many or len(words) == 1) and all(w in names for w in words):
            return ""
        return (f"{leaf} takes {'names' if many else 'one name'} the kernel knows for it: "
                f"{', '.join(sorted(names))}.")
    if leaf in SYSCTL_VECTORS:
        if 1 <= len(words) <= 8 and all(SYSCTL_INT_RE.fullmatch(w) for w in words):
            return ""
        return f"{leaf} takes whole numbers separated by spaces, e.g. '4096 131072 6291456'."
    if len(words) == 1 and SYSCTL_INT_RE.fullmatch(words[0]) \
            and abs(int(words[0])) < 2**63:
        return ""
    return (f"{leaf} takes one whole number (e.g. 1). Names are taken only by "
            f"{', '.join(sorted(SYSCTL_NAMES))}; several numbers only by "
            f"{', '.join(sorted(SYSCTL_VECTORS))}.")


def _sysctl_name_ok(key: str) -> bool:
    sep = "/" if "/" in key else "."
    parts = key.split(sep)
    return (len(key) <= 256 and len(parts) >= 3 and parts[0] == "net"
            and all(SYSCTL_PART[sep].fullmatch(part) and part not in (".", "..")
                    for part in parts))


def _parse_routes(block: LMap, where: str, p: Problems) -> list[Route]:
    routes: list[Route] = []
    items = as_list(block["routes"], block.val_loc("routes"), f"{where} routes", p)
    for i, item in enumerate(items or []):
        loc = items.item_loc(i)
        r = as_map(item, loc, f"route {i + 1} of {where}", p)
        if r is None:
            continue
        check_keys(r, ROUTE_KEYS, f"route {i + 1} of {where}", p, required=("to", "via"))
        if "to" not in r or "via" not in r:
            continue
        via_text = as_str(r["via"], r.val_loc("via"), "route via", p)
        try:
            via = ipaddress.ip_address(via_text or "")
        except ValueError:
            p.add(r.val_loc("via"), f"route gateway '{via_text}' is not an IP address.",
                  "Write the next hop's address without prefix, e.g. 198.18.1.1.")
            continue
        dst_text = as_str(r["to"], r.val_loc("to"), "route destination", p)
        if dst_text is None:
            continue
        if dst_text == "default":
            dst = ipaddress.ip_network("0.0.0.0/0" if via.version == 4 else "::/0")
        else:
            dst = as_network(dst_text, r.val_loc("to"), "route destination", p, via.version)
            if dst is None:
                continue
        dev = None
        if "dev" in r:
            dev = as_str(r["dev"], r.val_loc("dev"), "route dev", p)
        routes.append(Route(dst=dst, via=via, loc=loc, dev=dev))
    return routes


def _parse_endpoint(text: Any, loc: Loc, where: str, topo: Topology,
                    p: Problems) -> Endpoint | None:
    s = as_str(text, loc, f"an endpoint of {where}", p)
    if s is None:
        return None
    if ":" not in s:
        p.add(loc, f"endpoint '{s}' of {where} must be NODE:INTERFACE.",
              f"Write it like containerlab does, e.g. '{s}:eth1'.")
        return None
    node, iface = s.split(":", 1)
    if node not in topo.nodes:
        hint = suggest(node, list(topo.nodes))
        p.add(loc, f"endpoint '{s}' of {where} names node '{node}', which is not defined "
                   f"under nodes:.", hint or f"Define it, or use one of: "
                                            f"{', '.join(topo.nodes) or '(no nodes)'}.")
        return None
    if iface == "lo":
        p.add(loc, f"endpoint '{s}' of {where} uses the loopback interface.",
              "Give the link its own interface name, e.g. eth1.")
        return None
    if not check_ifname(iface, loc, f"endpoint '{s}'", p):
        return None
    return Endpoint(node=node, iface=iface, loc=loc)


def _parse_families(block: LMap, where: str, p: Problems, parse: Any, target: Any,
                    disabled: set[int], locs: dict[int, Loc]) -> None:
    """ipv4:/ipv6: keys: a value parsed onto target, or `false` to turn the family off."""
    for version in (4, 6):
        key = f"ipv{version}"
        if key not in block:
            continue
        if block[key] is False:
            disabled.add(version)
            continue
        value = parse(block[key], block.val_loc(key), f"{where} {key}", p, version)
        if value is not None:
            setattr(target, key, value)
            locs[version] = block.val_loc(key)


def _parse_segment_common(seg: Segment, block: LMap, where: str, p: Problems) -> None:
    _parse_families(block, where, p, as_network, seg, seg.disabled, seg.subnet_locs)
    if "mtu" in block:
        seg.mtu = as_int(block["mtu"], block.val_loc("mtu"), f"{where} mtu", p, 68, 65535)


def _segment_block(item: Any, loc: Loc, where: str, topo: Topology,
                   p: Problems) -> tuple[LMap, LList, list[Endpoint | None]] | None:
    """The part links and LANs share: allowed keys, and the endpoints list parsed."""
    block = as_map(item, loc, where, p)
    if block is None:
        return None
    check_keys(block, SEGMENT_KEYS, where, p, required=("endpoints",))
    eps = as_list(block.get("endpoints"), block.val_loc("endpoints"), f"{where} endpoints", p)
    if eps is None or "endpoints" not in block:
        return None
    parsed = [_parse_endpoint(e, eps.item_loc(j), where, topo, p) for j, e in enumerate(eps)]
    return block, eps, parsed


def _parse_segments(doc: LMap, topo: Topology, p: Problems) -> None:
    links = as_list(doc.get("links"), doc.val_loc("links"), "links", p)
    for i, item in enumerate(links or []):
        loc, where = links.item_loc(i), f"link {i + 1}"
        got = _segment_block(item, loc, where, topo, p)
        if got is None:
            continue
        block, eps, parsed = got
        if len(eps) != 2:
            p.add(block.val_loc("endpoints"), f"{where} must join exactly two endpoints, not "
                  f"{len(eps)}.", "For three or more members, declare a LAN under lans:.")
            continue
        if None in parsed:
            continue
        a, b = parsed
        if a.node == b.node and a.iface == b.iface:
            p.add(loc, f"{where} joins {a.label} to itself.", "Use two different interfaces.")
            continue
        seg = Segment(kind="link", name=f"{a.label}--{b.label}", endpoints=[a, b], loc=loc)
        _parse_segment_common(seg, block, where, p)
        topo.links.append(seg)

    lans = as_map(doc.get("lans"), doc.val_loc("lans"), "lans", p)
    for lan_name, item in (lans or {}).items():
        loc, where = lans.key_loc(lan_name), f"LAN '{lan_name}'"
        if as_name(lan_name, loc, "the LAN name", p, 15) is None:
            continue
        if lan_name == "lo" or re.fullmatch(r"p\d+", lan_name):
            p.add(loc, f"the LAN name '{lan_name}' is reserved (loopback and bridge ports "
                       "use it).", "Pick another name, e.g. lan1.")
            continue
        got = _segment_block(item, lans.val_loc(lan_name), where, topo, p)
        if got is None:
            continue
        block, eps, parsed = got
        if not eps:
            p.add(block.val_loc("endpoints"), f"{where} has no endpoints.",
                  "List its members as NODE:INTERFACE.")
        seg = Segment(kind="lan", name=lan_name, loc=loc,
                      endpoints=[e for e in parsed if e is not None])
        _parse_segment_common(seg, block, where, p)
        topo.lans[lan_name] = seg


def _attach_interfaces(nodes_map: LMap | None, topo: Topology, p: Problems) -> None:
    """Give each node its interfaces; refuse one interface used by two segments."""
    for seg in topo.segments:
        for ep in seg.endpoints:
            ep.segment = seg.name
            node = topo.nodes[ep.node]
            if ep.iface in node.interfaces:
                other = node.interfaces[ep.iface]
                p.add(ep.loc, f"interface {ep.label} is used twice (also at line "
                              f"{other.loc.line}).",
                      f"Give it another name, e.g. {ep.node}:eth{len(node.interfaces) + 1}.")
                continue
            ep.mtu = seg.mtu
            node.interfaces[ep.iface] = ep
    for node_name, block in (nodes_map or {}).items():
        if node_name not in topo.nodes or not isinstance(block, LMap):
            continue
        _apply_interface_settings(topo.nodes[node_name], block, p)


def _apply_interface_settings(node: Node, block: LMap, p: Problems) -> None:
    ifaces = as_map(block.get("interfaces"), block.val_loc("interfaces"),
                    f"node '{node.name}' interfaces", p)
    for iface, settings in (ifaces or {}).items():
        loc = ifaces.key_loc(iface)
        where = f"interface {node.name}:{iface}"
        s = as_map(settings, ifaces.val_loc(iface), where, p)
        if s is None:
            continue
        check_keys(s, IFACE_KEYS, where, p)
        if iface == "lo":
            for version in (4, 6):
                if f"ipv{version}" in s:
                    ifa = as_iface(s[f"ipv{version}"], s.val_loc(f"ipv{version}"),
                                   f"{where} ipv{version}", p, version)
                    if ifa is not None:
                        node.loopback.append(ifa)
            continue
        ep = node.interfaces.get(iface)
        if ep is None:
            hint = suggest(iface, list(node.interfaces))
            p.add(loc, f"{where} is not an endpoint of any link or LAN.",
                  hint or "Add it to a link (endpoints: [...]) or a LAN first.")
            continue
        _parse_families(s, where, p, as_iface, ep, ep.disabled, ep.addr_locs)
        if "mtu" in s:
            ep.mtu = as_int(s["mtu"], s.val_loc("mtu"), f"{where} mtu", p, 68, 65535)


def _check_addresses(topo: Topology, p: Problems) -> None:
    seen: dict[Any, Endpoint] = {}
    for node in topo.nodes.values():
        for ep in node.interfaces.values():
            for ifa in (ep.ipv4, ep.ipv6):
                if not ifa:
                    continue
                other = seen.get(ifa.ip)
                if other is not None:
                    p.add(ep.addr_locs.get(ifa.version, ep.loc),
                          f"address {ifa.ip} on {ep.label} is also on {other.label}.",
                          "Each address may be used once in a lab: change one of them.")
                seen[ifa.ip] = ep


def _check_routes(topo: Topology, p: Problems) -> None:
    for node in topo.nodes.values():
        nets = [ifa.network for ep in node.interfaces.values()
                for ifa in (ep.ipv4, ep.ipv6) if ifa]
        for route in node.routes:
            if route.dev is not None and route.dev not in node.interfaces:
                p.add(route.loc, f"route on node '{node.name}' uses dev '{route.dev}', which "
                                 f"the node does not have.",
                      f"Its interfaces: {', '.join(node.interfaces) or '(none)'}.")
            if not any(route.via in net for net in nets):
                same = [str(n) for n in nets if n.version == route.via.version]
                p.add(route.loc, f"route gateway {route.via} of node '{node.name}' is not on "
                                 f"any subnet the node is attached to.",
                      f"Use an address of a neighbour on one of: {', '.join(same) or '(none)'}.")


def _parse_checks(doc: LMap, topo: Topology, used: list[str], p: Problems) -> None:
    """used: the lab's features, whose check types are looked up first; the other features
    are imported only for a type none of them has (to name its owner, or refuse it)."""
    items = as_list(doc.get("checks"), doc.val_loc("checks"), "checks", p)
    feature_kinds = features.check_kinds(used)
    for i, item in enumerate(items or []):
        loc = items.item_loc(i)
        where = f"check {i + 1}"
        c = as_map(item, loc, where, p)
        if c is None:
            continue
        kind = str(c.get("type", "reach"))
        if kind != "reach" and kind not in feature_kinds:
            feature_kinds = features.check_kinds()
        kinds = ["reach", *feature_kinds]
        if kind not in kinds:
            p.add(c.val_loc("type"), f"{where} has unknown type '{kind}'.",
                  f"Supported: {', '.join(kinds)}. {suggest(kind, kinds)}".strip())
            continue
        required = ("from", "to") if kind == "reach" else feature_kinds[kind]
        check_keys(c, CHECK_KEYS, where, p, required=required)
        if kind != "reach":
            for key in ("from", "to"):
                if key not in c:
                    continue
                value = as_str(c[key], c.val_loc(key), f"{where} {key}", p)
                if value is not None and value not in topo.nodes:
                    p.add(c.val_loc(key), f"{where} names '{value}', which is not a node.",
                          suggest(value, list(topo.nodes)))
            topo.checks.append(Check(name=str(c.get("name") or kind.replace("_", " ")),
                                     kind=kind, loc=loc,
                                     params={k: c[k] for k in ("from", "to") if k in c}))
            continue
        params: dict[str, Any] = {"proto": "tcp", "family": 4, "port": 7000, "expect": "pass"}
        for key in ("from", "to"):
            if key not in c:
                continue
            value = as_str(c[key], c.val_loc(key), f"{where} {key}", p)
            if value is None:
                continue
            if key == "from" and value not in topo.nodes:
                p.add(c.val_loc(key), f"{where} starts from '{value}', which is not a node.",
                      suggest(value, list(topo.nodes)))
                continue
            if key == "to" and value not in topo.nodes:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    p.add(c.val_loc(key), f"{where} goes to '{value}', which is neither a node "
                          "nor an IP address.", suggest(value, list(topo.nodes)))
                    continue
            params[key] = value
        if "proto" in c and c["proto"] not in ("tcp", "udp"):
            p.add(c.val_loc("proto"), f"{where} proto must be tcp or udp.")
        elif "proto" in c:
            params["proto"] = c["proto"]
        if "family" in c:
            fam = str(c["family"]).removeprefix("ipv")
            if fam not in ("4", "6"):
                p.add(c.val_loc("family"), f"{where} family must be 4 or 6.")
            else:
                params["family"] = int(fam)
        if "port" in c:
            params["port"] = as_int(c["port"], c.val_loc("port"), f"{where} port", p, 1, 65535)
        if "expect" in c:
            if c["expect"] not in ("pass", "fail"):
                p.add(c.val_loc("expect"), f"{where} expect must be pass or fail.",
                      "Use `fail` to assert that something must NOT be reachable.")
            else:
                params["expect"] = c["expect"]
        name = c.get("name") or f"{params.get('from')} -> {params.get('to')} " \
                                 f"{params['proto']}/ipv{params['family']}"
        topo.checks.append(Check(name=str(name), kind=kind, loc=loc, params=params))
