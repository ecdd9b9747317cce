"""Draw a topology as text, Graphviz dot, or Mermaid."""

from __future__ import annotations

from labkit.topology.model import Topology


def _addr(ep) -> str:  # type: ignore[no-untyped-def]
    return " ".join(str(a) for a in (ep.ipv4, ep.ipv6) if a)


def text(topo: Topology) -> str:
    lines = [f"lab {topo.name}: {len(topo.nodes)} nodes"]
    for link in topo.links:
        a, b = link.endpoints
        lines.append(f"  {a.label} ({_addr(a)}) <-> {b.label} ({_addr(b)})")
    for lan in topo.lans.values():
        lines.append(f"  LAN {lan.name} {lan.ipv4 or ''} {lan.ipv6 or ''}".rstrip())
        lines += [f"    - {ep.label} ({_addr(ep)})" for ep in lan.endpoints]
    lonely = [n for n, node in topo.nodes.items() if not node.interfaces]
    if lonely:
        lines.append(f"  unconnected: {', '.join(lonely)}")
    return "\n".join(lines)


def dot(topo: Topology) -> str:
    out = [f'graph "{topo.name}" {{', "  node [shape=box];"]
    out += [f'  "{n}";' for n in topo.nodes]
    for link in topo.links:
        a, b = link.endpoints
        out.append(f'  "{a.node}" -- "{b.node}" [taillabel="{a.iface}", headlabel="{b.iface}", '
                   f'label="{link.ipv4 or ""}"];')
    for lan in topo.lans.values():
        out.append(f'  "lan:{lan.name}" [shape=ellipse, label="{lan.name}\\n{lan.ipv4 or ""}"];')
        out += [f'  "{ep.node}" -- "lan:{lan.name}" [taillabel="{ep.iface}"];'
                for ep in lan.endpoints]
    out.append("}")
    return "\n".join(out)


def mermaid(topo: Topology) -> str:
    out = ["graph LR"]
    for link in topo.links:
        a, b = link.endpoints
        out.append(f"  {a.node} ---|{a.iface} - {b.iface}| {b.node}")
    for lan in topo.lans.values():
        out.append(f"  lan_{lan.name}(({lan.name}))")
        out += [f"  {ep.node} ---|{ep.iface}| lan_{lan.name}" for ep in lan.endpoints]
    out += [f"  {n}" for n, node in topo.nodes.items() if not node.interfaces]
    return "\n".join(out)
