"""`labkit graph FILE`: draw the topology (text, Graphviz dot, Mermaid)."""

from __future__ import annotations

import enum

import typer

from labkit.topology import graph as draw
from labkit.topology import loader


class Format(enum.StrEnum):
    text = "text"
    dot = "dot"
    mermaid = "mermaid"


def graph(
    file: str = typer.Argument(..., help="Topology file."),
    format: Format = typer.Option(Format.text, "--format", "-f",
                                  help="text; dot (pipe to `dot -Tsvg`); mermaid (Markdown)."),
) -> None:
    """Draw the lab: nodes, links and LANs with their resolved addresses."""
    topo = loader.load(file)
    print({"text": draw.text, "dot": draw.dot, "mermaid": draw.mermaid}[format.value](topo))


def register(app: typer.Typer) -> None:
    app.command()(graph)
