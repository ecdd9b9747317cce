"""`labkit exercise`: a running lab's exercises from the shell (trainers, scripts, tests).

A thin layer over labkit.exercises.api, which the notebook widgets use too: progress
recorded here shows in the notebook and the other way round.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from labkit.cli.output import console, emit_json, info
from labkit.errors import UsageError

app = typer.Typer(
    help=(
        "Exercises: tasks you do in a running lab with the real tools, graded by checks.\n\n"
        "A topology names its exercises file (`exercises:`, e.g. labs/exercises/"
        "01-first-lab.yaml). Bring the lab up, read the tasks, type commands in the nodes "
        "(`labkit exec LAB NODE -- CMD` or `labkit shell LAB NODE`), then check:\n\n"
        "  labkit up topologies/routed.yaml\n"
        "  labkit exercise list routed\n"
        "  labkit exec routed r -- sysctl -w net.ipv6.conf.all.forwarding=0\n"
        "  labkit exercise check routed stop-forwarding  # 0 done, 1 not yet, 2 could not check\n"
        "  labkit exercise hint routed stop-forwarding   # the next hint\n"
        "  labkit exercise report routed --format csv    # who did what, when\n\n"
        "Each check says what it saw and what is still missing. Progress is kept per lab "
        "and learner (--learner, else $LABKIT_LEARNER, else the sudo user) in "
        "/var/lib/labkit/progress ($LABKIT_PROGRESS_DIR), and survives the lab going down."
    ),
    no_args_is_help=True,
)

LAB = typer.Argument(..., help="Name of a running lab (see `labkit status`).")
LEARNER = typer.Option(None, "--learner", help="Whose progress to record "
                       "(default: $LABKIT_LEARNER, else the sudo user, else the login).")
FILE = typer.Option(None, "--file", help="An exercises file to use instead of the one the "
                    "lab's topology names.")


def _open(lab: str, learner: str | None, file: str | None):  # type: ignore[no-untyped-def]
    from labkit.exercises.api import Exercises

    return Exercises.for_lab(lab, learner=learner, path=file)


@app.command("list")
def list_cmd(lab: str = LAB, json: bool = typer.Option(False, "--json",
                                                        help="Tasks and progress as JSON."),
             learner: str | None = LEARNER, file: str | None = FILE) -> None:
    """List the lab's exercises: id, title, and your progress (checked, passed, hints).

    Listing starts every exercise: checks that compare with a starting value (a counter,
    the TIPC key in use) read it now, once per lab instance.
    """
    ex = _open(lab, learner, file)
    info(f"reading the starting state of {len(ex.items)} exercises in lab '{ex.lab.name}'...")
    status = ex.status()
    if json:
        emit_json({"lab": ex.lab.name, "file": ex.file, "learner": ex.learner,
                   "exercises": [{**e.as_dict(), **s.as_dict()}
                                 for e, s in zip(ex.items, status, strict=True)]})
        return
    console.print(f"lab {ex.lab.name}: {len(ex.items)} exercises ({ex.file}), "
                  f"learner {ex.learner}", markup=False)
    for e, s in zip(ex.items, status, strict=True):
        mark = "done" if s.passed_at else {"fail": "not yet", "error": "could not check",
                                           None: "new"}.get(s.last_outcome, "")
        console.print(f"\n[bold]{escape(e.id)}[/] - {escape(e.title)}  "
                      f"({mark}; hints {s.hints}/{s.hints_total})")
        console.print(e.task.rstrip(), markup=False)


@app.command()
def check(lab: str = LAB, exercise: str | None = typer.Argument(
              None, help="Exercise id (default: every exercise)."),
          json: bool = typer.Option(False, "--json", help="Results as JSON."),
          learner: str | None = LEARNER, file: str | None = FILE) -> None:
    """Check your work: each check says what it saw and what is still missing.

    Exit code 0 done (every exercise checked passed), 1 not yet, 2 could not check.
    """
    ex = _open(lab, learner, file)
    ids = [exercise] if exercise else [e.id for e in ex.items]
    results = []
    for ex_id in ids:
        n = len(ex.get(ex_id).checks)
        info(f"checking {ex_id} in lab '{ex.lab.name}' ({n} check{'s' * (n != 1)})...")
        results.append(ex.check(ex_id))
    code = 2 if any(r.outcome == "error" for r in results) else \
        0 if all(r.passed for r in results) else 1
    if json:
        emit_json({"lab": ex.lab.name, "learner": ex.learner, "exit_code": code,
                   "results": [r.as_dict() for r in results]})
        raise typer.Exit(code)
    marks = {"pass": "[green]PASS[/]", "fail": "[red]NOT YET[/]", "error": "[yellow]ERROR[/]"}
    for r in results:
        console.print(f"{marks[r.outcome]} [bold]{escape(r.id)}[/] - {escape(r.title)}")
        for c in r.checks:
            console.print(f"  {marks[c.outcome]} {escape(c.name)}: {escape(c.detail)}")
    raise typer.Exit(code)


@app.command()
def hint(lab: str = LAB, exercise: str = typer.Argument(..., help="Exercise id."),
         learner: str | None = LEARNER, file: str | None = FILE) -> None:
    """Show the next hint of an exercise (each call one more; recorded in your progress)."""
    ex = _open(lab, learner, file)
    h = ex.hint(exercise)
    if h is None:
        taken = ex.hints_taken(exercise)
        console.print(f"no more hints for {exercise} ({len(taken)} given). "
                      f"`labkit exercise solution {lab} {exercise}` shows the reference "
                      "solution.", markup=False)
        raise typer.Exit(1)
    console.print(f"hint {h.index}/{h.total}: {h.text}", markup=False)


@app.command()
def solution(lab: str = LAB, exercise: str = typer.Argument(..., help="Exercise id."),
             json: bool = typer.Option(False, "--json", help="The solution as JSON."),
             learner: str | None = LEARNER, file: str | None = FILE) -> None:
    """Show the reference solution without applying it (recorded as shown)."""
    ex = _open(lab, learner, file)
    sol = ex.solution(exercise)
    if json:
        emit_json(sol.as_dict())
        return
    if sol.explain:
        console.print(sol.explain.rstrip(), markup=False)
    for step in sol.steps:
        console.print("  " + step.text.replace("LAB", ex.lab.name), markup=False)


@app.command()
def solve(lab: str = LAB, exercise: str = typer.Argument(..., help="Exercise id."),
          json: bool = typer.Option(False, "--json", help="Steps and their output as JSON."),
          learner: str | None = LEARNER, file: str | None = FILE) -> None:
    """Apply the reference solution in the lab's nodes (for instructors and tests).

    Recorded in the progress as solved by the tool, so the report tells it from the
    learner's own work. Exit 1 if a step failed.
    """
    ex = _open(lab, learner, file)
    info(f"applying the solution of {exercise} in lab '{ex.lab.name}'...")
    done = ex.solve(exercise)
    if json:
        emit_json(done.as_dict())
    else:
        for step in done.steps:
            mark = "ok" if step["rc"] == 0 else f"exit {step['rc']}"
            console.print(f"[{mark}] {step['text']}" + (f"\n{step['output']}"
                                                       if step["output"] else ""),
                          markup=False)
    raise typer.Exit(0 if done.ok else 1)


@app.command()
def report(lab: str = LAB, format: str = typer.Option("csv", "--format",
                                                      help="csv or json."),
           file: str | None = FILE) -> None:
    """Who did which exercise, when: checks, first pass, hints taken, solution shown or
    applied; one row per learner and exercise (times in UTC)."""
    from labkit.exercises.report import to_csv

    if format not in ("csv", "json"):
        raise UsageError(f"unknown report format '{format}'.", hint="Use --format csv or json.")
    rows = _open(lab, None, file).report()
    if format == "json":
        emit_json(rows)
    else:
        typer.echo(to_csv(rows), nl=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="exercise")
