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
             "another (debian-6.12, debian-6.1, debian-7.2, a point release such as 6.12.69, "
             "built:NAME, host, a bzImage or build tree), with no claim."),
    out: str = typer.Option("repro-bundles", "--out", "-o",
                            help="Directory the bundle (dir and .tar.gz) is written to."),
    include_keys: bool = typer.Option(False, "--include-keys",
                                      help="Keep key material in the bundle (never by "
                                           "default: bundles are meant to be shared)."),
    json: bool = typer.Option(False, "--json", help="The verdict as JSON on stdout."),
    bisect_exit: bool = typer.Option(
        False, "--bisect-exit",
        help="Exit as `git bisect run` wants it, for one kernel: 0 not reproduced, 1 "
             "reproduced, 125 could not run (skip this commit), 128 the scenario or an "
             "option is wrong (stops the bisection)."),
) -> None:
    """Run a scenario on each of its kernels (or --kernel ones) and print a table.

    Each kernel gets a lab in a VM of its own, booted with the scenario's kernel options
    and stopped afterwards; every step is bounded by its timeout. The bundle holds the
    scenario, kernel versions and configs, dmesg, captures, each step's output and timing,
    and verdict.json. In a kernel tree, after `make bzImage`:
    `git bisect run labkit repro run FILE --kernel . --bisect-exit`.
    """
    if bisect_exit:
        from labkit.errors import LabkitError

        try:
            code = _run(file, kernel or [], out, include_keys, json, bisect_exit=True)
        except UsageError as exc:
            _say(f"error: {exc.render()}")
            raise typer.Exit(BISECT_ABORT) from None
        except LabkitError as exc:
            _say(f"error: {exc.render()}")
            raise typer.Exit(BISECT_SKIP) from None
        raise typer.Exit(code)
    raise typer.Exit(_run(file, kernel or [], out, include_keys, json))


# `git bisect run`: 0 good, 1 bad, 125 skip this commit, >127 stop the bisection.
BISECT_SKIP, BISECT_ABORT = 125, 128


def _run(file: str, wanted: list[str], out: str, include_keys: bool, json: bool,
         bisect_exit: bool = False) -> int:
    from labkit.repro import loader, runner
    from labkit.repro.model import COULD_NOT_RUN, HOST, REPRODUCED

    scenario = loader.load(file)
    plans = _plans(scenario, wanted)
    if bisect_exit and len(plans) != 1:
        raise UsageError(f"--bisect-exit judges one kernel; {file} would run "
                         f"{len(plans)} ({', '.join(p.name for p in plans)}).",
                         hint="Name the kernel: `--kernel .` in a kernel tree.")
    require_root()
    _say(f"{scenario.name}: {scenario.title}")
    from labkit.repro import kernelsource

    for plan in plans:
        if plan.name != HOST:
            kernelsource.ensure(plan.name, _say)  # a Debian build is fetched when first used
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
    if bisect_exit:
        result = report.runs[0].result if report.runs else COULD_NOT_RUN
        code = {REPRODUCED: 1, COULD_NOT_RUN: BISECT_SKIP}.get(result, 0)
        _say(f"--bisect-exit: {result} -> exit {code}")
        return code
    return report.code


def _print(text: str) -> None:
    """As written: no markup, no emoji (`{ipv4:b:eth1}` must not become a symbol)."""
    console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _say(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)


def _plans(scenario: Scenario, wanted: list[str]) -> list[KernelPlan]:
    """The kernels to run: the scenario's, or those named by --kernel (one the scenario
    lists keeps its claim and options; another runs with no claim)."""
    from labkit.repro.loader import kernel_name
    from labkit.repro.model import HOST, KernelPlan
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
        plans.append(KernelPlan(name=name, options=() if name == HOST
                                else scenario.kernel_options))
    return plans


@app.command("bisect")
def bisect_cmd(
    file: str = typer.Argument(..., help="Scenario file (repro/*.yaml)."),
    first: str = typer.Option(..., "--from", help="The older end, e.g. debian-6.12.43."),
    last: str = typer.Option(..., "--to", help="The newer end, e.g. debian-6.12.118."),
    retries: int = typer.Option(0, "--retries", "-r",
                                help="Run each build this many more times (one boot "
                                     "each); a build whose verdicts differ is named flaky."),
    out: str = typer.Option("repro-bundles", "--out", "-o",
                            help="Directory the bundle (every run of the bisection) goes to."),
    json: bool = typer.Option(False, "--json", help="The answer as JSON on stdout."),
) -> None:
    """Find which release changed a scenario's verdict: the last build with one verdict
    and the first with the other, among the available builds from --from to --to.

    Both ends are run first (if they agree, there is nothing to find: exit 2); then the
    middle build of the range, halving it each time: at most 2 + ceil(log2(N-1)) boots
    for N builds without retries. Each build is fetched when first needed. Exit 0: the
    pair is named; 1: a flaky build (or only builds that could not run) stopped it; 2:
    nothing to bisect or usage error.
    """
    from labkit.repro import bisect, bisect_run, loader

    scenario = loader.load(file)
    require_root()
    _say(f"{scenario.name}: {scenario.title}")
    result, report = bisect_run.run(scenario, first, last, out, retries=retries, say=_say)
    if json:
        from labkit.cli.output import emit_json

        emit_json({**result.to_json(), "scenario": scenario.name,
                   "bundle": report.bundle, "archive": report.archive})
    else:
        from labkit.cli.output import columns

        columns(("KERNEL", "VERDICT", "TRIES", "TIME"),
                [(p.kernel, p.verdict, " / ".join(p.verdicts), f"{p.seconds:.0f} s")
                 for p in sorted(result.probes, key=lambda p: result.builds.index(p.kernel))])
        _print(f"answer: {result.sentence()}")
        _print(f"{result.boots} boots (budget {bisect.boot_budget(len(result.builds))} "
               f"without retries for {len(result.builds)} builds), {result.seconds:.0f} s")
        _print(f"bundle: {report.bundle} (and {os.path.basename(report.archive)})")
    raise typer.Exit(bisect_run.exit_code(result))


@app.command("rerun")
def rerun_cmd(
    bundle: str = typer.Argument(..., help="A bundle: its directory or its .tar.gz."),
    out: str = typer.Option("repro-bundles", "--out", "-o",
                            help="Directory the new run's bundle goes to."),
    json: bool = typer.Option(False, "--json", help="The comparison as JSON on stdout."),
) -> None:
    """Run a bundle's scenario again on the exact kernel builds it records and compare.

    Each kernel is fetched at the package version the bundle names (a newer build of the
    same name is refused, not silently used). The archive is checked member by member
    before anything is unpacked (no `..`, absolute paths, links or devices; bounded size).
    Exit 0: every verdict the same; 1: one differs; 2: one could not run, or the bundle
    is damaged or from an older labkit.
    """
    from labkit.repro import rerun

    require_root()
    rows, report, code = rerun.rerun(bundle, out, say=_say)
    if json:
        from dataclasses import asdict

        from labkit.cli.output import emit_json

        emit_json({"rows": [asdict(r) for r in rows], "exit_code": code,
                   "bundle": report.bundle if report else "",
                   "archive": report.archive if report else ""})
    else:
        from labkit.cli.output import columns

        columns(("KERNEL", "BUILD", "RECORDED", "NOW", "SAME", "DETAIL"),
                [(r.kernel, r.build or "-", r.recorded, r.now, r.same, r.detail or "-")
                 for r in rows])
        if report is not None:
            _print(f"bundle: {report.bundle} (and {os.path.basename(report.archive)})")
    raise typer.Exit(code)


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
