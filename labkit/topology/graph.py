"""Draw a topology as text, Graphviz dot, or Mermaid, with every resolved address.

Node names are user text: in Mermaid a node named `end` or `graph` is a keyword, so
Mermaid ids are generated (n1, n2, lan1...) and names only ever appear in quoted labels;
dot ids are always quoted strings.
"""

from __future__ import annotations

from labkit.topology.model import Endpoint, Node, Segment, Topology


def _addr(ep: Endpoint) -> str:
    return " ".join(str(a) for a in (ep.ipv4, ep.ipv6) if a)


def _subnets(seg: Segment) -> list[str]:
    return [str(n) for n in (seg.ipv4, seg.ipv6) if n]


def _loopbacks(node: Node) -> list[str]:
    return [str(ifa) for ifa in node.loopback]


def text(topo: Topology) -> str:
    lines = [f"lab {topo.name}: nodes {', '.join(topo.nodes) or '(none)'}"]
    for name, node in topo.nodes.items():
        if node.loopback:
            lines.append(f"  {name}:lo ({' '.join(_loopbacks(node))})")
    for link in topo.links:
        a, b = link.endpoints
        lines.append(f"  {a.label} ({_addr(a)}) <-> {b.label} ({_addr(b)})  "
                     f"link {' '.join(_subnets(link))}".rstrip())
    for lan in topo.lans.values():
        lines.append(f"  LAN {lan.name} {' '.join(_subnets(lan))}".rstrip())
        lines += [f"    - {ep.label} ({_addr(ep)})" for ep in lan.endpoints]
    lonely = [n for n, node in topo.nodes.items() if not node.interfaces]
    if lonely:
        lines.append(f"  unconnected: {', '.join(lonely)}")
    return "\n".join(lines)


def _dq(value: str) -> str:
    """A dot double-quoted string (ids and labels); \\n inside labels is a line break."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(*lines: str) -> str:
    return _dq("\n".join(line for line in lines if line)).replace("\n", "\\n")


def dot(topo: Topology) -> str:
    out = [f"graph {_dq(topo.name)} {{", "  node [shape=box];"]
    for name, node in topo.nodes.items():
        out.append(f"  {_dq(name)} [label={_dot_label(name, *_loopbacks(node))}];")
    for link in topo.links:
        a, b = link.endpoints
        out.append(f"  {_dq(a.node)} -- {_dq(b.node)} [taillabel={_dot_label(a.iface, _addr(a))}"
                   f", headlabel={_dot_label(b.iface, _addr(b))}"
                   f", label={_dot_label(*_subnets(link))}];")
    for lan in topo.lans.values():
        lan_id = _dq(f"lan:{lan.name}")
        out.append(f"  {lan_id} [shape=ellipse, label={_dot_label(lan.name, *_subnets(lan))}];")
        out += [f"  {_dq(ep.node)} -- {lan_id} [taillabel={_dot_label(ep.iface, _addr(ep))}];"
                for ep in lan.endpoints]
    out.append("}")
    return "\n".join(out)


def _mq(*lines: str) -> str:
    """A quoted Mermaid label: entity codes for what Mermaid would parse, <br/> between lines."""
    def esc(s: str) -> str:
        return (s.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;")
                .replace(">", "#gt;"))
    return '"' + "<br/>".join(esc(line) for line in lines if line) + '"'


def mermaid(topo: Topology) -> str:
    ids = {name: f"n{i}" for i, name in enumerate(topo.nodes, start=1)}
    out = ["graph LR"]
    out += [f"  {ids[name]}[{_mq(name, *_loopbacks(node))}]" for name, node in topo.nodes.items()]
    for link in topo.links:
        a, b = link.endpoints
        label = _mq(" ".join(_subnets(link)), f"{a.iface} {_addr(a)}".strip(),
                    f"{b.iface} {_addr(b)}".strip())
        out.append(f"  {ids[a.node]} ---|{label}| {ids[b.node]}")
    for i, lan in enumerate(topo.lans.values(), start=1):
        out.append(f"  lan{i}(({_mq(lan.name, *_subnets(lan))}))")
        out += [f"  {ids[ep.node]} ---|{_mq(f'{ep.iface} {_addr(ep)}'.strip())}| lan{i}"
                for ep in lan.endpoints]
    return "\n".join(out)
