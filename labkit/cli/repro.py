"""`labkit repro run FILE`, `labkit repro new LAB`, `labkit repro validate FILE`.

run: exit 0 if the scenario behaved as it says on every kernel, 1 if not, 2 if it could
not run (or the file is invalid).
"""

from __future__ import annotations

import json as jsonlib
import os
from typing import TYPE_CHECKING

import typer

from labkit.cli.output import console, err_console, require_root
from labkit.errors import Loc, UsageError

if TYPE_CHECKING:
    from labkit.repro.model import KernelPlan, Scenario

app = typer.Typer(help="Reproduce kernel bug reports on several kernels, one fresh VM each.",
                  no_args_is_help=True)


@app.command("run")
def run_cmd(
    file: str = typer.Argument(..., help="Scenario file (repro/*.yaml)."),
    kernel: list[str] = typer.Option(
        None, "--kernel", "-k",
        help="Run on this kernel only (repeat for several): one the scenario lists, or "
             "another (debian-6.12, debian-6.1, host, a bzImage or build tree), with no "
             "claim."),
    out: str = typer.Option("repro-bundles", "--out", "-o",
                            help="Directory the bundle (dir and .tar.gz) is written to."),
    include_keys: bool = typer.Option(False, "--include-keys",
                                      help="Keep key material in the bundle (never by "
                                           "default: bundles are meant to be shared)."),
    json: bool = typer.Option(False, "--json", help="The verdict as JSON on stdout."),
) -> None:
    """Run a scenario on each of its kernels (or --kernel ones) and print a table.

    Each kernel gets a lab in a VM of its own, booted with the scenario's kernel options
    and stopped afterwards; every step is bounded by its timeout. The bundle holds the
    scenario, kernel versions and configs, dmesg, captures, each step's output and timing,
    and verdict.json.
    """
    from labkit.repro import loader, runner

    scenario = loader.load(file)
    plans = _plans(scenario, kernel or [])
    require_root()
    _say(f"{scenario.name}: {scenario.title}")
    src = scenario.source
    named = " ".join(p for p in (src.commit, f'"{src.subject}"' if src.subject else "",
                                 src.url) if p)
    _say(f"source: {named or src.report[:100]}")
    report = runner.run(scenario, plans, out, include_keys=include_keys, say=_say)
    if json:
        with open(os.path.join(report.bundle, "verdict.json"), encoding="utf-8") as fh:
            data = jsonlib.load(fh)
        data.update(bundle=report.bundle, archive=report.archive)
        from labkit.cli.output import emit_json

        emit_json(data)
    else:
        from labkit.repro.table import rows

        header, body = rows(report.runs)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for row in [header, *body]:
            _print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        _print(f"bundle: {report.bundle} (and {os.path.basename(report.archive)})")
    raise typer.Exit(report.code)


def _print(text: str) -> None:
    """As written: no markup, no emoji (`{ipv4:b:eth1}` must not become a symbol)."""
    console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _say(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _plans(scenario: Scenario, wanted: list[str]) -> list[KernelPlan]:
    """The kernels to run: the scenario's, or those named by --kernel (one the scenario
    lists keeps its claim and options; another runs with no claim)."""
    from labkit.repro.loader import kernel_name
    from labkit.repro.model import KernelPlan
    from labkit.topology.fields import Problems

    if not wanted:
        return list(scenario.kernels)
    plans = []
    for text in wanted:
        known = next((k for k in scenario.kernels if text in (k.name, k.label)), None)
        if known is not None:
            plans.append(known)
            continue
        p = Problems()
        name = kernel_name(text, Loc("--kernel"), os.path.join(os.getcwd(), "x"), p)
        if name is None:
            raise UsageError(f"--kernel {text}: {p.items[0].message}", hint=p.items[0].hint)
        plans.append(KernelPlan(name=name))
    return plans


@app.command("validate")
def validate_cmd(file: str = typer.Argument(..., help="Scenario file.")) -> None:
    """Check a scenario file without running it (every problem, with FILE:LINE:COL)."""
    from labkit.repro import loader

    s = loader.load(file)
    kernels = ", ".join(k.name + (f" ({k.expect})" if k.expect else "") for k in s.kernels)
    _print(f"{file}: valid: scenario {s.name}, {len(s.steps)} steps, kernels {kernels}")


@app.command("new")
def new_cmd(
    lab: str = typer.Argument(..., help="A lab that is up (`labkit status` lists them)."),
    output: str = typer.Option(None, "--output", "-o",
                               help="File to write (default: LAB.yaml here)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the file if it exists."),
) -> None:
    """Write a scenario skeleton from a running lab: its topology, its kernel, and a
    commented list of steps to fill in, so what you found in a lab can be handed on."""
    from labkit.repro import skeleton

    require_root()
    path = output or f"{lab}.yaml"
    if os.path.exists(path) and not force:
        raise UsageError(f"{path} exists already.", hint="Pick another file with -o, or "
                                                         "pass --force to overwrite it.")
    text = skeleton.from_lab(lab)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    _print(f"wrote {path}: fill in source:, the kernels' expect: and the steps, then "
           f"`labkit repro validate {path}` and `labkit repro run {path}`.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="repro")
