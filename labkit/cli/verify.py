"""`labkit verify crossover|encryption NAME`: verdicts with exit codes 0 pass, 1 fail,
2 could not run."""

from __future__ import annotations

import enum

import typer

from labkit.cli.check import report
from labkit.cli.forward import local_lab

app = typer.Typer(help="Verify what the kernel did (exit 0 pass, 1 fail, 2 could not run).",
                  no_args_is_help=True)


class Feature(enum.StrEnum):
    tipc = "tipc"


@app.command()
def crossover(
    name: str = typer.Argument(..., help="Lab name."),
    src: str = typer.Option(..., "--from", help="Sending TIPC node."),
    dst: str = typer.Option(..., "--to", help="Receiving TIPC node."),
    count: int = typer.Option(20, "--count", min=2, max=1000, help="Messages to send."),
    json: bool = typer.Option(False, "--json", help="Verdict as JSON."),
) -> None:
    """TIPC user data between namespaces of one kernel goes socket to socket: send marked
    messages, capture on the sender's bearers and the receiver's lo; pass when the marker
    is on lo, never on a bearer, and the link counters did not grow with the data."""
    from labkit.features.tipc.lab import config_of
    from labkit.features.tipc.verify import crossover as run

    lab = local_lab(name)
    raise typer.Exit(report([run(lab, config_of(lab), src, dst, count)], json))


@app.command()
def encryption(
    name: str = typer.Argument(..., help="Lab name."),
    feature: Feature = typer.Option(Feature.tipc, "--feature", help="Which traffic to judge."),
    seconds: float = typer.Option(3.0, "--seconds", min=0.5, max=60,
                                  help="How long to capture on the bearers."),
    json: bool = typer.Option(False, "--json", help="Verdict as JSON."),
) -> None:
    """Capture on every bearer: pass when every TIPC frame is TIPCv7 (encrypted) and a
    marker sent through the lab never appears in clear; fail on any version-2 frame."""
    from labkit.features.tipc.lab import config_of
    from labkit.features.tipc.verify import encryption as run

    lab = local_lab(name)
    raise typer.Exit(report([run(lab, config_of(lab), seconds)], json))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="verify")
