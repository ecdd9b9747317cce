"""`labkit check NAME`: run the checks the topology declares. Exit 0 pass, 1 fail, 2 none."""

from __future__ import annotations

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import console, emit_json
from labkit.verify.verdict import Verdict, exit_code


def report(verdicts: list[Verdict], json: bool) -> int:
    code = exit_code(verdicts)
    if json:
        emit_json({"verdicts": [v.as_dict() for v in verdicts], "exit_code": code})
        return code
    if not verdicts:
        console.print("no checks declared in the topology (add a `checks:` list).")
    marks = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "error": "[yellow]ERROR[/]"}
    for v in verdicts:
        console.print(f"{marks[v.outcome]} {v.name}: {v.detail}")
    console.print(summary(verdicts))
    return code


def summary(verdicts: list[Verdict]) -> str:
    """`N passed, M failed, K could not run`: a check that could not run is not a failure
    of what it checks, and not a pass either (exit codes: labkit.verify.verdict)."""
    counts = {o: sum(v.outcome == o for v in verdicts) for o in ("pass", "fail", "error")}
    return (f"{counts['pass']} passed, {counts['fail']} failed, "
            f"{counts['error']} could not run")


def check(
    name: str = typer.Argument(..., help="Lab name."),
    json: bool = typer.Option(False, "--json", help="Verdicts as JSON."),
) -> None:
    """Run the lab's declared checks (`checks:` in the topology) and print a verdict each.

    Exit code 0 all passed, 1 something failed, 2 there was nothing to check.
    """
    raise typer.Exit(report(attach(name).checks(), json))


def register(app: typer.Typer) -> None:
    app.command()(check)
