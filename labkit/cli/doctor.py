"""`labkit doctor`: what this kernel can do, and where each lab feature will run."""

from __future__ import annotations

import os

import typer

from labkit.cli.output import console, emit_json
from labkit.hosts.doctor import lab_features, probe_all


def doctor(json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Probe this kernel (netns, veth, bridge, tun, netem, BPF sockmap, TIPC, kTLS,
    handshake netlink, root) and say, per lab feature, whether it runs here or in a VM.

    Each probe tries the real operation in a scratch namespace that is removed at once.
    """
    results = probe_all()
    features = lab_features(results)
    if json:
        emit_json({"kernel": os.uname().release,
                   "capabilities": {k: {"ok": v.ok, "detail": v.detail}
                                    for k, v in results.items()},
                   "features": features})
        return
    console.print(f"kernel {os.uname().release}")
    for key, probe in results.items():
        mark = "[green]yes[/]" if probe.ok else "[red]no [/]"
        console.print(f"  {mark} {key:12} {probe.detail}")
    console.print("lab features:")
    for feature, info in features.items():
        where = info["runs"]
        colour = "green" if where == "host" else "yellow"
        console.print(f"  {feature:38} [{colour}]{where}[/]"
                      + (f"  (missing: {', '.join(info['missing'])})" if info["missing"] else ""))


def register(app: typer.Typer) -> None:
    app.command()(doctor)
