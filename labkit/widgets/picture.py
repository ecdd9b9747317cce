"""The topology drawn as a picture (PNG, matplotlib), not text: nodes as boxes, LANs as
ellipses, links as lines labelled with interface and address at each end.

Pure Python layout (a small force-directed pass seeded from a circle, deterministic for a
given topology) so no graphviz binary is needed. Nodes that are running are green, absent
ones grey, so the same picture tells the lab's state.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, FancyBboxPatch

from labkit.topology.model import Endpoint, Topology

UP = "#d1f0d8"
DOWN = "#eaeef2"
LAN = "#ddeeff"


def _vertices(topo: Topology) -> tuple[list[str], list[tuple[int, int, Endpoint | None]]]:
    """Vertices (node names, then "lan:NAME") and edges (a, b, the endpoint at a)."""
    verts = list(topo.nodes) + [f"lan:{name}" for name in topo.lans]
    index = {v: i for i, v in enumerate(verts)}
    edges: list[tuple[int, int, Endpoint | None]] = []
    for link in topo.links:
        a, b = link.endpoints
        edges.append((index[a.node], index[b.node], None))
    for name, lan in topo.lans.items():
        for ep in lan.endpoints:
            edges.append((index[ep.node], index[f"lan:{name}"], ep))
    return verts, edges


def layout(n: int, edges: list[tuple[int, int]], rounds: int = 300) -> np.ndarray:
    """Fruchterman-Reingold positions in [0, 1]^2, from a circle (deterministic)."""
    if n == 0:
        return np.zeros((0, 2))
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    pos = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 0.5
    k = 1.0 / math.sqrt(n)
    temp = 0.1
    for _ in range(rounds):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.linalg.norm(delta, axis=2) + 1e-9
        force = (delta / dist[..., None]) * (k * k / dist)[..., None]
        disp = force.sum(axis=1)
        for a, b in edges:
            d = pos[a] - pos[b]
            length = np.linalg.norm(d) + 1e-9
            pull = d / length * (length * length / k)
            disp[a] -= pull
            disp[b] += pull
        length = np.linalg.norm(disp, axis=1) + 1e-9
        pos += disp / length[:, None] * np.minimum(length, temp)[:, None]
        temp *= 0.985
    pos -= pos.min(axis=0)
    span = pos.max(axis=0)
    span[span == 0] = 1
    return pos / span


def draw(topo: Topology, running: set[str] | None = None, width: float = 6.2) -> bytes:
    """A PNG of the topology; `running`: nodes present now (None: the lab is down)."""
    verts, edges = _vertices(topo)
    pos = layout(len(verts), [(a, b) for a, b, _ in edges])
    height = max(3.5, min(7.0, 1.2 + 0.45 * len(verts)))
    fig = Figure(figsize=(width, height), dpi=90)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.15, 1.15)
    ax.axis("off")
    state = "down" if running is None else f"{len(running)}/{len(topo.nodes)} nodes running"
    fig.suptitle(f"lab {topo.name}: {state}", fontsize=10)
    for a, b, ep in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        ax.plot([x1, x2], [y1, y2], color="#57606a", linewidth=1, zorder=1)
        if ep is not None:
            addr = str(ep.ipv4.ip) if ep.ipv4 else (str(ep.ipv6.ip) if ep.ipv6 else "")
            ax.text(x1 + (x2 - x1) * 0.42, y1 + (y2 - y1) * 0.42, f"{ep.iface} {addr}",
                    fontsize=6.5, color="#0550ae", ha="center", va="center", zorder=3,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    for link in topo.links:
        a_ep, b_ep = link.endpoints
        a, b = verts.index(a_ep.node), verts.index(b_ep.node)
        for ep, (x1, y1), (x2, y2) in ((a_ep, pos[a], pos[b]), (b_ep, pos[b], pos[a])):
            addr = str(ep.ipv4.ip) if ep.ipv4 else ""
            ax.text(x1 + (x2 - x1) * 0.25, y1 + (y2 - y1) * 0.25, f"{ep.iface} {addr}",
                    fontsize=6.5, color="#0550ae", ha="center", va="center", zorder=3,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    for i, v in enumerate(verts):
        x, y = pos[i]
        if v.startswith("lan:"):
            name = v[4:]
            lan = topo.lans[name]
            ax.add_patch(Ellipse((x, y), 0.2, 0.09, facecolor=LAN, edgecolor="#0969da",
                                 zorder=2))
            sub = str(lan.ipv4) if lan.ipv4 else (str(lan.ipv6) if lan.ipv6 else "")
            ax.text(x, y, f"{name}\n{sub}", fontsize=7, ha="center", va="center", zorder=4)
            continue
        node = topo.nodes[v]
        color = UP if running is not None and v in running else DOWN
        ax.add_patch(FancyBboxPatch((x - 0.06, y - 0.035), 0.12, 0.07,
                                    boxstyle="round,pad=0.01", facecolor=color,
                                    edgecolor="#1f2328", zorder=2))
        extra = [*sorted(node.features), *([node.kernel] if node.kernel else [])]
        label = v + (f"\n{' '.join(extra)}" if extra else "")
        ax.text(x, y, label, fontsize=8, ha="center", va="center", zorder=4,
                fontweight="bold")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
