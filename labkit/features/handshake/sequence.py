"""The upcall's message sequence drawn from a live trace (for the guided notebook): one
lane per kernel and daemon, an arrow per READY, ACCEPT and DONE in the order they
happened, and the TLS handshake between the two daemons. Pure Python, SVG out.
"""

from __future__ import annotations

from html import escape
from typing import Any

ROW = 34
WIDTH = 820


def rows(client: list[dict[str, Any]], server: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Arrows in time order: (from lane, to lane, label, time) from both nodes' events."""
    out: list[dict[str, Any]] = []
    for side, events in (("c", client), ("s", server)):
        kernel, daemon = (0, 1) if side == "c" else (3, 2)
        for e in events:
            kind = e.get("event")
            if kind == "ready":
                out.append({"t": e["time"], "a": kernel, "b": daemon,
                            "label": f"READY x{e['count']} (group tlshd)"})
            elif kind == "accept":
                out.append({"t": e["time"] - 1e-6, "a": daemon, "b": kernel,
                            "label": "ACCEPT (handler class tlshd)"})
                timeout = f", timeout {e['timeout_ms']} ms" if e.get("timeout_ms") else ""
                out.append({"t": e["time"], "a": kernel, "b": daemon,
                            "label": f"socket as fd {e['fd']} ({e.get('auth', '?')} "
                                     f"{e.get('role', '')}{timeout})"})
                if side == "c":
                    out.append({"t": e["time"] + 1e-6, "a": 1, "b": 2, "both": True,
                                "label": "TLS 1.3 handshake on the consumer's socket"})
            elif kind == "done":
                status = "0" if not e.get("status") else e.get("errno", e.get("status"))
                auth = ",".join(f"{x:#x}" for x in e.get("remote_auth") or [])
                out.append({"t": e["time"], "a": daemon, "b": kernel,
                            "label": f"kTLS on, DONE status {status}"
                                     + (f" remote-auth {auth}" if auth else "")})
    return sorted(out, key=lambda r: r["t"])


def svg(client: list[dict[str, Any]], server: list[dict[str, Any]],
        names: tuple[str, str] = ("host", "target")) -> str:
    arrows = rows(client, server)
    lanes = [f"kernel ({names[0]})", f"daemon ({names[0]})", f"daemon ({names[1]})",
             f"kernel ({names[1]})"]
    xs = [90, 300, 520, 730]
    height = 50 + ROW * len(arrows)
    t0 = arrows[0]["t"] if arrows else 0.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<defs><marker id="h" markerWidth="8" markerHeight="8" refX="7" refY="4" '
             'orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker>'
             '<marker id="t" markerWidth="8" markerHeight="8" refX="1" refY="4" '
             'orient="auto"><path d="M8,0 L0,4 L8,8 z"/></marker></defs>']
    for x, name in zip(xs, lanes, strict=True):
        parts.append(f'<text x="{x}" y="20" text-anchor="middle" font-weight="bold">'
                     f"{escape(name)}</text>")
        parts.append(f'<line x1="{x}" y1="30" x2="{x}" y2="{height - 10}" stroke="#999" '
                     'stroke-dasharray="4 3"/>')
    for i, r in enumerate(arrows):
        y = 50 + ROW * i
        x1, x2 = xs[r["a"]], xs[r["b"]]
        start = ' marker-start="url(#t)"' if r.get("both") else ""
        parts.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="black"'
                     f'{start} marker-end="url(#h)"/>')
        parts.append(f'<text x="{(x1 + x2) / 2}" y="{y - 5}" text-anchor="middle">'
                     f"{escape(r['label'])}</text>")
        parts.append(f'<text x="4" y="{y + 4}" fill="#666">+{(r["t"] - t0) * 1000:.0f} ms'
                     "</text>")
    parts.append("</svg>")
    return "".join(parts)
