"""`labkit verify KIND NAME`: a verdict on what the kernel did, from a lab feature.

Exit codes: 0 pass, 1 fail, 2 could not run. The kinds and the features that answer them
come from the feature registry.
"""

from __future__ import annotations

from typing import Any

import typer

from labkit import features
from labkit.cli.check import report
from labkit.cli.lab_arg import attach

app = typer.Typer(help="Verify what the kernel did (exit 0 pass, 1 fail, 2 could not run).",
                  no_args_is_help=True)

_HELP = {
    "crossover": "Traffic between nodes of one kernel takes a shortcut that skips the wire.",
    "encryption": "Capture what crosses the lab's links and judge it: pass when the feature's "
                  "traffic is encrypted and a marker sent through it never appears in clear.",
    "throughput": "Measure throughput on the feature's path and compare it with a threshold "
                  "(from the topology or --threshold).",
}


def _make(kind: str) -> None:
    owners = features.with_verification(kind)
    aliases = sorted({a for k in owners for a in features.get(k).aliases})
    also = "".join(
        f"; {a} = the lab's {'/'.join(k for k in owners if a in features.get(k).aliases)}"
        for a in aliases)

    def command(
        name: str = typer.Argument(..., help="Lab name."),
        feature: str = typer.Option(None, "--feature",
                                    help=f"Which feature's traffic: {', '.join(owners)}{also} "
                                    "(default: the lab's only one that can)."),
        src: str = typer.Option(None, "--from", help="Sending node, where it matters."),
        dst: str = typer.Option(None, "--to", help="Receiving node, where it matters."),
        pair: str = typer.Option(None, "--pair", help="Proxy pair or flow, where it matters."),
        count: int = typer.Option(None, "--count", min=1, max=100000,
                                  help="Messages to send."),
        seconds: float = typer.Option(None, "--seconds", min=0.1, max=600,
                                      help="How long to capture or measure."),
        threshold: float = typer.Option(None, "--threshold",
                                        help="Pass/fail threshold (throughput: MB/s)."),
        json: bool = typer.Option(False, "--json", help="Verdict as JSON."),
    ) -> None:
        options: dict[str, Any] = {k: v for k, v in {
            "src": src, "dst": dst, "pair": pair, "count": count, "seconds": seconds,
            "threshold": threshold}.items() if v is not None}
        verdict = attach(name).verify(kind, feature, **options)
        raise typer.Exit(report([verdict], json))

    specific = [features.get(k).verification_help.get(kind, k) for k in owners]
    command.__doc__ = (_HELP.get(kind, f"The {kind} verification.") + "\n\n"
                       + "\n\n".join(specific))
    app.command(kind)(command)


for _kind in features.verification_kinds():
    _make(_kind)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="verify")
