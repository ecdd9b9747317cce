"""Run a scenario on each of its kernels, one fresh VM each, and leave a bundle.

Kernels run one after another (a machine boots one VM at a time); each gets a lab of its
own (`rp` + random hex), in a VM booted for it with the scenario's kernel options and
stopped when its steps are done, pass or fail. A step that fails as a precondition stops
that kernel's run; `when:` checks are all judged, since together they are the verdict.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from labkit.errors import LabkitError
from labkit.lab import state
from labkit.lab.lab import Lab
from labkit.repro import bundle, placeholders, redact, steps
from labkit.repro.model import ALWAYS, HOST, KernelPlan, Scenario
from labkit.repro.results import ERROR, OK, KernelRun, StepResult, exit_code, judge
from labkit.topology import loader as topo_loader
from labkit.topology.model import Topology

Say = Callable[[str], None]
DMESG_TAIL = 5000  # lines kept from this machine's own kernel log (a VM's is kept whole)


@dataclass
class Report:
    scenario: Scenario
    runs: list[KernelRun] = field(default_factory=list)
    bundle: str = ""
    archive: str = ""
    code: int = 2


def run(scenario: Scenario, kernels: list[KernelPlan], out_dir: str, *,
        include_keys: bool = False, say: Say = lambda text: None,
        argv: list[str] | None = None) -> Report:
    """Every kernel in turn; the bundle is written (and archived) even if one fails."""
    session = Session(scenario, out_dir, include_keys=include_keys, say=say, argv=argv)
    try:
        for plan in kernels:
            session.kernel(plan)
    finally:
        session.close()
    return session.report


class Session:
    """One bundle that kernel runs are added to one at a time, then closed: `run` adds a
    fixed list; bisection and rerun add kernels as they decide which (one mechanism for
    the bundle, the verdict file and the redaction)."""

    def __init__(self, scenario: Scenario, out_dir: str, *, include_keys: bool = False,
                 say: Say = lambda text: None, argv: list[str] | None = None) -> None:
        os.makedirs(out_dir, exist_ok=True)
        self.report = Report(scenario, bundle=bundle.new_dir(out_dir, scenario))
        self.include_keys = include_keys
        self.say = say
        self.found: list[bytes] = []  # every lab's secrets, looked for in the whole bundle
        bundle.write_header(self.report.bundle, scenario,
                            argv if argv is not None else sys.argv)

    def kernel(self, plan: KernelPlan, subdir: str = "") -> KernelRun:
        """Run the scenario on one kernel (one VM boot); subdir keeps a retry's files
        apart from the first try's."""
        parent = os.path.join(self.report.bundle, subdir) if subdir else self.report.bundle
        kr = run_kernel(self.report.scenario, plan, parent, self.found, self.say)
        kr.bundle = os.path.relpath(os.path.join(parent, plan.label), self.report.bundle)
        self.report.runs.append(kr)
        return kr

    def close(self, extra: dict[str, object] | None = None) -> Report:
        """verdict.json and README.txt, secrets cut, the .tar.gz written."""
        report = self.report
        report.code = exit_code(report.runs) if report.runs else 2
        bundle.write_verdict(report.bundle, report.scenario, report.runs, report.code,
                             self.include_keys, extra)
        if not self.include_keys:
            redact.scrub_tree(report.bundle, sorted(set(self.found), key=len, reverse=True))
        report.archive = bundle.archive(report.bundle)
        return report


def lab_topology(scenario: Scenario, lab: str) -> Topology:
    """The scenario's topology under a lab name of this run's own."""
    doc = yaml.safe_load(scenario.topology_text) or {}
    doc["name"] = lab
    return topo_loader.loads(yaml.safe_dump(doc, sort_keys=False), scenario.topology_path)


def run_kernel(scenario: Scenario, plan: KernelPlan, parent: str, found: list[bytes],
               say: Say) -> KernelRun:
    """One kernel: up, the steps, what the kernel logged, down; the lab's secrets are added
    to found (read before `down` removes them)."""
    directory = os.path.join(parent, plan.label)
    os.makedirs(directory, exist_ok=True)
    name = "rp" + secrets.token_hex(3)
    lab = Lab(lab_topology(scenario, name))
    kr = KernelRun(plan, lab=name, steps=[StepResult.of(s) for s in scenario.steps])
    if plan.name != HOST:
        from labkit.repro import kernelsource

        kr.rerun = kernelsource.record(plan.name)
        kernelsource.bundle_patches(kr.rerun, directory)
    tell = _teller(plan, say)
    start = time.monotonic()
    broken: StepResult | None = None
    ctx: steps.Context | None = None
    built = False
    tell(f"lab {name}: up" + (f" with {' '.join(plan.options)}" if plan.options else ""))
    try:
        broken = _up(lab, plan, scenario.steps[0].timeout, kr.steps[0], tell)
        built = broken is None
        if built:
            ctx = steps.Context(lab, scenario, directory, placeholders.expander(
                lab.topo, scenario.directory, lambda n: lab.node(n).ns), t0=start)
            kr.version = _first_line(ctx, ["uname", "-r"])
            broken = _steps(ctx, scenario, kr, tell)
            _collect(ctx, plan, kr)
            found += redact.lab_secrets(lab.prepared, state.STATE_DIR, name)
    finally:
        if ctx is not None:
            ctx.stop_all()
        if built:
            tell(f"lab {name}: down")
            try:
                lab.down()
            except LabkitError as exc:
                tell(f"lab {name}: down failed: {exc.render()}")
        kr.seconds = time.monotonic() - start
        bundle.write_steps(directory, kr.steps)
    judge(kr, broken)
    verdict = "as expected" if kr.as_expected else "NOT as expected"
    tell(f"{kr.result}, {verdict} [{kr.seconds:.0f} s]"
         + (f": {kr.first_failure}" if kr.first_failure else ""))
    return kr


def _teller(plan: KernelPlan, say: Say) -> Say:
    return lambda text: say(f"[{plan.label}] {text}")


def _up(lab: Lab, plan: KernelPlan, timeout: float, res: StepResult,
        tell: Say) -> StepResult | None:
    """Bring the lab up on the plan's kernel within timeout; the failed step, if it fails."""
    start = time.monotonic()
    seen: set[str] = set()

    def progress(done: int, total: int, what: str) -> None:
        if what not in seen and "(MB)" not in what:
            seen.add(what)
            tell(what)

    watchdog = None
    if plan.name != HOST:
        from labkit.lab.placement import vm_name

        watchdog = threading.Timer(timeout, _stop_vm, args=(vm_name(plan.name, lab.name),))
        watchdog.daemon = True
        watchdog.start()
    try:
        if plan.name == HOST:
            lab.up(on=HOST, progress=progress, say=tell)
        else:
            lab.up(on=plan.name, isolated=True, kernel_options=list(plan.options),
                   progress=progress, say=tell)
        res.outcome, res.detail = OK, f"up on {lab.placement.describe()}"
    except LabkitError as exc:
        late = time.monotonic() - start >= timeout
        res.outcome = ERROR
        res.detail = (f"the lab was not up within {timeout:g} s and its VM was stopped"
                      if late else exc.render())
    finally:
        if watchdog is not None:
            watchdog.cancel()
        res.seconds = round(time.monotonic() - start, 3)
    tell(f"{res.label}: {res.outcome} ({res.seconds:.1f} s)")
    return None if res.outcome == OK else res


def _stop_vm(vm: str) -> None:
    from labkit.hosts import vms

    try:
        vms.stop(vm)
    except LabkitError:
        pass


def _steps(ctx: steps.Context, scenario: Scenario, kr: KernelRun,
           tell: Say) -> StepResult | None:
    for step, res in zip(scenario.steps[1:], kr.steps[1:], strict=True):
        tell(f"{res.label}: running (at most {step.timeout:g} s)")  # a wait says what for
        steps.run(ctx, step, res)
        tell(f"{res.label}: {res.outcome} ({res.seconds:.1f} s)"
             + (f": {res.detail}" if res.outcome != OK else ""))
        stops = res.outcome == ERROR or (res.outcome != OK and (
            not step.is_check or step.when == ALWAYS))
        if stops:
            return res
    return None


def _first_line(ctx: steps.Context, words: list[str]) -> str:
    try:
        done = ctx.node("").run(words, timeout=steps.SLACK)
    except LabkitError:
        return ""
    return (done.stdout or "").strip().splitlines()[0] if done.stdout.strip() else ""


def _collect(ctx: steps.Context, plan: KernelPlan, kr: KernelRun) -> None:
    """The kernel's log, identity and configuration, into its bundle directory."""
    node = ctx.node("")
    try:
        log = node.run(["dmesg"], timeout=steps.SLACK).stdout or ""
        cmdline = node.run(["cat", "/proc/cmdline"], timeout=steps.SLACK).stdout.strip()
    except LabkitError as exc:
        log, cmdline = f"(could not read the kernel log: {exc.message})\n", ""
    if plan.name == HOST:
        log = "\n".join(log.splitlines()[-DMESG_TAIL:]) + "\n"
    with open(os.path.join(ctx.directory, "dmesg.txt"), "w", encoding="utf-8") as fh:
        fh.write(log)
    info = {"kernel": plan.name, "release": kr.version, "cmdline": cmdline,
            "options": list(plan.options), "placement": ctx.lab.placement.describe()}
    if kr.rerun:
        info["rerun"] = kr.rerun
        info.update({k: kr.rerun[k] for k in ("package", "package_version", "source")
                     if k in kr.rerun})
    bundle.write_kernel(ctx.directory, info, bundle.kernel_config(plan.name, kr.version))
