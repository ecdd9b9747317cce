"""`labkit graph`: node names that are keywords, and every resolved address in every format."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from labkit.topology import graph, loader
from labkit.topology.model import Topology
from tests.conftest import ROOT, run_cli

# Mermaid keywords and characters dot and Mermaid treat specially, as node names.
AWKWARD = """name: t
nodes:
  end: {interfaces: {lo: {ipv4: 198.19.255.1/32}}}
  graph: {}
  a-b: {}
  subgraph: {}
  style: {}
  lonely: {}
links:
  - endpoints: [end:eth1, graph:eth1]
lans:
  lan1:
    endpoints: [end:eth2, a-b:eth1, subgraph:eth1, style:eth1]
"""


@pytest.fixture
def topo() -> Topology:
    return loader.loads(AWKWARD, "awkward.yaml")


def addresses(topo: Topology) -> set[str]:
    out = {str(ifa) for node in topo.nodes.values() for ifa in node.loopback}
    for seg in topo.segments:
        out |= {str(n) for n in (seg.ipv4, seg.ipv6) if n}
        out |= {str(a) for ep in seg.endpoints for a in (ep.ipv4, ep.ipv6) if a}
    return out


@pytest.mark.parametrize("fmt", ["text", "dot", "mermaid"])
def test_every_address_is_drawn(topo: Topology, fmt: str) -> None:
    """`graph --help` promises resolved addresses; before, dot and Mermaid had none."""
    out = getattr(graph, fmt)(topo)
    missing = sorted(a for a in addresses(topo) if a not in out)
    assert not missing, f"{fmt} lacks {missing}"


QUOTED = r'"[^"]*"'
MERMAID_LINE = [
    re.compile(rf"  (?P<def>n\d+)\[{QUOTED}\]"),
    re.compile(rf"  (?P<def>lan\d+)\(\({QUOTED}\)\)"),
    re.compile(rf"  (?P<a>n\d+) ---\|{QUOTED}\| (?P<b>n\d+|lan\d+)"),
]


def test_mermaid_ids_are_generated_and_names_only_quoted(topo: Topology) -> None:
    """Before: `end ---|eth1 - eth1| graph` (ids were node names: `end` closes a block)."""
    text = graph.mermaid(topo)
    defined: set[str] = set()
    lines = text.splitlines()
    assert lines[0] == "graph LR"
    for line in lines[1:]:
        match = next((m for r in MERMAID_LINE if (m := r.fullmatch(line))), None)
        assert match, f"not a line of the Mermaid subset we emit: {line!r}"
        groups = match.groupdict()
        if groups.get("def"):
            assert groups["def"] not in defined, f"{groups['def']} defined twice"
            defined.add(groups["def"])
        for end in ("a", "b"):
            if groups.get(end):
                assert groups[end] in defined, f"{groups[end]} used before it is defined"
        unquoted = re.sub(QUOTED, "", line)
        for name in topo.nodes:
            assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", unquoted), line
    assert len(defined) == len(topo.nodes) + len(topo.lans)
    for name in topo.nodes:
        assert f'"{name}' in text


def test_dot_is_accepted_by_graphviz(topo: Topology) -> None:
    if shutil.which("dot") is None:
        pytest.skip("graphviz's `dot` is not installed (apt-get install graphviz)")
    text = graph.dot(topo)
    result = subprocess.run(["dot", "-Tplain"], input=text, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    drawn = {line.split()[1].strip('"') for line in result.stdout.splitlines()
             if line.startswith("node ")}
    assert drawn == set(topo.nodes) | {f"lan:{lan}" for lan in topo.lans}
    edges = [line for line in result.stdout.splitlines() if line.startswith("edge ")]
    assert len(edges) == len(topo.links) + sum(len(lan.endpoints) for lan in topo.lans.values())


def test_graph_cli_formats() -> None:
    for fmt, needle in (("text", "LAN lan1"), ("dot", 'graph "routed"'),
                        ("mermaid", "graph LR")):
        out = run_cli("graph", str(ROOT / "topologies" / "routed.yaml"), "--format", fmt)
        assert out.returncode == 0 and needle in out.stdout
        assert "198.18.1.2/24" in out.stdout, f"{fmt}: h1a's address"
