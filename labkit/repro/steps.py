"""What each scenario step does to a running lab, bounded by the step's timeout.

Commands run inside the node under coreutils' `timeout`, so a hanging command is stopped
where it runs (its partial output kept) and the runner's own wait is only a backstop.
Python work (verify, traffic) runs in a worker thread the runner stops waiting for.
Every step fills in a StepResult; nothing here raises for a step that merely fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from labkit.base import helper
from labkit.base.helper import HelperFailed
from labkit.errors import LabkitError
from labkit.hosts.host import LabHost
from labkit.lab.lab import Lab, Node
from labkit.repro import checks
from labkit.repro.model import (
    CaptureStep,
    ExecStep,
    ExpectStep,
    InjectStep,
    Outcome,
    Scenario,
    Step,
    SysctlStep,
    TrafficStep,
    VerifyStep,
    WaitForStep,
)
from labkit.repro.results import ERROR, FAILED, OK, TIMED_OUT, StepResult

T = TypeVar("T")
# What the runner adds to a step's own timeout before it stops waiting for the node: a
# command in a VM under TCG costs seconds to start and to report back.
SLACK = 60.0
KILL_AFTER = 5  # `timeout -k`: SIGKILL this long after SIGTERM
TIMEOUT_CODES = (124, 137)


class StepTimeout(Exception):
    """The runner stopped waiting for a step (its worker may still be winding down)."""


@dataclass
class Background:
    """A command or capture started by a step and still running."""

    proc: subprocess.Popen[Any]
    host: LabHost  # where the command runs: it knows how to interrupt it
    result: StepResult
    out: str  # file holding its stdout
    err: str
    deadline: float
    files: list[IO[Any]] = field(default_factory=list)

    def stop(self, grace: float = 15.0) -> None:
        """Ask it to end as Ctrl-C would (the host knows how to reach the command)."""
        if self.proc.poll() is None:
            try:
                self.host.interrupt(self.proc)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
            except OSError:
                pass
        for fh in self.files:
            fh.close()
        self.files = []


@dataclass
class Context:
    """One kernel's run in progress."""

    lab: Lab
    scenario: Scenario
    directory: str  # this kernel's bundle directory
    expand: Callable[[str], str]
    t0: float = field(default_factory=time.monotonic)
    results: dict[str, StepResult] = field(default_factory=dict)  # named steps
    background: dict[str, Background] = field(default_factory=dict)
    captures: dict[str, Background] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        return self.lab.node(name or next(iter(self.lab.nodes)))

    def path(self, *parts: str) -> str:
        full = os.path.join(self.directory, *parts)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return full

    def stop_all(self) -> None:
        for bg in [*self.background.values(), *self.captures.values()]:
            bg.stop()


def run(ctx: Context, step: Step, result: StepResult) -> None:
    """Run one step (not `up`) and record what happened in result."""
    start = time.monotonic()
    result.started = round(start - ctx.t0, 3)
    try:
        if isinstance(step, ExecStep):
            (_start_background if step.background else _exec)(ctx, step, result)
        elif isinstance(step, SysctlStep):
            _sysctl(ctx, step, result)
        elif isinstance(step, InjectStep):
            _inject(ctx, step, result)
        elif isinstance(step, TrafficStep):
            _traffic(ctx, step, result)
        elif isinstance(step, CaptureStep):
            _capture(ctx, step, result)
        elif isinstance(step, WaitForStep):
            _wait_for(ctx, step, result)
        elif isinstance(step, VerifyStep):
            _verify(ctx, step, result)
        elif isinstance(step, ExpectStep):
            checks.judge(ctx, step, result)
        else:
            raise LabkitError(f"{step.kind} steps cannot run here")
    except StepTimeout as exc:
        result.outcome, result.detail = TIMED_OUT, str(exc)
    except LabkitError as exc:
        timed = "did not finish within" in exc.message
        result.outcome = TIMED_OUT if timed else ERROR
        result.detail = exc.message.rstrip(".")
    except (OSError, ValueError, RuntimeError) as exc:
        result.outcome, result.detail = ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = round(time.monotonic() - start, 3)
    if step.name:
        ctx.results[step.name] = result


# -- commands ---------------------------------------------------------------------------


def bounded(words: list[str], timeout: float) -> list[str]:
    """words under coreutils `timeout`: SIGTERM at timeout, SIGKILL KILL_AFTER later."""
    return ["timeout", "-k", str(KILL_AFTER), f"{timeout:g}", *words]


def _run(ctx: Context, node: str, words: list[str], timeout: float,
         input: str | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = ctx.node(node).run(bounded(words, timeout), timeout=timeout + KILL_AFTER + SLACK,
                              input=input)
    return done, time.monotonic() - start


def _words(ctx: Context, step: ExecStep | WaitForStep) -> list[str]:
    return [ctx.expand(w) for w in step.command.words()]


def _exec(ctx: Context, step: ExecStep, result: StepResult) -> None:
    done, took = _run(ctx, step.node, _words(ctx, step), step.timeout)
    result.status, result.stdout, result.stderr = done.returncode, done.stdout, done.stderr
    hung = done.returncode in TIMEOUT_CODES and took >= step.timeout - 0.5
    if hung:
        result.outcome = OK if step.expect.hangs else TIMED_OUT
        result.detail = (f"`{step.command.describe()}` in {step.node} did not finish within "
                         f"{step.timeout:g} s and was stopped")
        return
    if step.expect.hangs:
        result.outcome, result.detail = FAILED, (
            f"`{step.command.describe()}` was expected to hang but exited with status "
            f"{done.returncode} after {took:.1f} s")
        return
    problem = mismatch(step.expect, done.returncode, done.stdout, done.stderr)
    result.outcome = FAILED if problem else OK
    result.detail = (f"`{step.command.describe()}` in {step.node}: {problem}" if problem
                     else f"exit status {done.returncode}")


def mismatch(want: Outcome, code: int | None, out: str, err: str) -> str:
    """Why an outcome does not match what was expected ("" if it does)."""
    import re

    if want.status is not None and code != want.status:
        tail = (err or out).strip().splitlines()[-1:] or [""]
        return f"exit status {code}, expected {want.status}" + (
            f" (last line: {tail[0][:160]})" if tail[0] else "")
    if want.stdout is not None and not re.search(want.stdout, out, re.M):
        return f"stdout does not match {want.stdout!r}"
    if want.stderr is not None and not re.search(want.stderr, err, re.M):
        return f"stderr does not match {want.stderr!r}"
    if want.stdout_absent is not None and re.search(want.stdout_absent, out, re.M):
        return f"stdout matches {want.stdout_absent!r}, which must be absent"
    return ""


def _start_background(ctx: Context, step: ExecStep, result: StepResult) -> None:
    stem = f"steps/{step.index:02d}-exec-{step.name}"
    out, err = ctx.path(stem + ".out"), ctx.path(stem + ".err")
    fo, fe = open(out, "wb"), open(err, "wb")
    node = ctx.node(step.node)
    proc = node.popen(bounded(_words(ctx, step), step.timeout), stdout=fo, stderr=fe)
    ctx.background[step.name] = Background(proc, node.host, result, out, err,
                                           time.monotonic() + step.timeout + SLACK, [fo, fe])
    result.outcome, result.detail = OK, f"started `{step.command.describe()}` in {step.node}"
    result.files += [os.path.relpath(out, ctx.directory), os.path.relpath(err, ctx.directory)]


def finish_background(ctx: Context, name: str, wait: float) -> StepResult:
    """The background step's result once its command has ended (waited for up to wait s)."""
    bg = ctx.background[name]
    res = bg.result
    if bg.proc.poll() is None:
        try:
            bg.proc.wait(timeout=max(0.1, min(wait, bg.deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            bg.stop()
            res.detail = "it was still running and was stopped"
    if bg.files:
        for fh in bg.files:
            fh.close()
        bg.files = []
    res.status = bg.proc.returncode
    with open(bg.out, errors="replace") as fh:
        res.stdout = fh.read()
    with open(bg.err, errors="replace") as fh:
        res.stderr = fh.read()
    return res


def _sysctl(ctx: Context, step: SysctlStep, result: StepResult) -> None:
    words = ["sysctl", "-w", *(f"{k}={v}" for k, v in step.values.items())]
    done, _ = _run(ctx, step.node, words, step.timeout)
    result.status, result.stdout, result.stderr = done.returncode, done.stdout, done.stderr
    result.outcome = OK if done.returncode == 0 else FAILED
    result.detail = (f"set {len(step.values)} in {step.node}" if done.returncode == 0 else
                     f"sysctl in {step.node}: {done.stderr.strip() or done.returncode}")


def _inject(ctx: Context, step: InjectStep, result: StepResult) -> None:
    node = ctx.node(step.node)
    if step.frame:
        from labkit import features

        mac = node.run(["cat", f"/sys/class/net/{step.iface}/address"], timeout=SLACK,
                       check=True).stdout.strip()
        family, _, kind = step.frame.partition(":")
        feature, config = features.get(family), ctx.lab.topo.features.get(family)
        frames = [feature.craft(config, kind, mac, **step.options) for _ in range(step.count)]
    else:
        from labkit.repro.pcapfile import read_pcap_file

        frames = read_pcap_file(step.pcap) * step.count
    words = [sys.executable, "-m", "labkit.repro.sendframes", step.iface,
             "--interval", f"{step.interval:g}"]
    done, _ = _run(ctx, step.node, words, step.timeout,
                   input="\n".join(f.hex() for f in frames) + "\n")
    result.status, result.stdout, result.stderr = done.returncode, done.stdout, done.stderr
    result.outcome = OK if done.returncode == 0 else FAILED
    result.detail = (done.stdout.strip() or done.stderr.strip()
                     or f"exit status {done.returncode}") + f" on {step.node}:{step.iface}"


def in_thread(fn: Callable[[], T], timeout: float, what: str) -> T:
    """fn() in a worker; StepTimeout if it has not returned within timeout."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise StepTimeout(f"{what} did not finish within {timeout:g} s and was abandoned "
                          "(the lab's teardown stops what it started)")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _traffic(ctx: Context, step: TrafficStep, result: StepResult) -> None:
    from labkit.traffic.meter import measure

    got = in_thread(lambda: measure(ctx.lab, step.src, step.dst, proto=step.proto,
                                    socket=step.socket, size=step.size,
                                    duration=step.duration),
                    step.timeout, f"traffic {step.src} -> {step.dst}")
    result.stdout = repr(got)
    result.outcome, result.detail = OK, f"{step.proto} {step.src} -> {step.dst}: {got}"


def _verify(ctx: Context, step: VerifyStep, result: StepResult) -> None:
    if step.kind_name == "checks":
        verdicts = in_thread(ctx.lab.checks, step.timeout, "the topology's checks")
    else:
        verdicts = [in_thread(lambda: ctx.lab.verify(step.kind_name, step.feature,
                                                     **step.options),
                              step.timeout, f"verify {step.kind_name}")]
    result.stdout = "\n".join(f"{v.outcome}: {v.name}: {v.detail}" for v in verdicts) + "\n"
    errors = [v for v in verdicts if v.outcome == "error"]
    if errors:
        result.outcome, result.detail = ERROR, f"could not run: {errors[0].detail}"
        return
    want_pass = step.outcome == "pass"
    wrong = [v for v in verdicts if v.passed != want_pass]
    result.outcome = FAILED if wrong else OK
    result.detail = (f"{wrong[0].name}: {wrong[0].outcome} (expected {step.outcome}): "
                     f"{wrong[0].detail}" if wrong else
                     f"{len(verdicts)} verdict(s) {step.outcome}")


def _wait_for(ctx: Context, step: WaitForStep, result: StepResult) -> None:
    import json

    u = step.until
    words = [sys.executable, "-m", "labkit.repro.poll", "--timeout", f"{step.timeout:g}",
             "--interval", f"{step.interval:g}"]
    words += ["--status", str(u.status)] if u.status is not None else []
    for flag, value in (("--stdout", u.stdout), ("--stderr", u.stderr),
                        ("--stdout-absent", u.stdout_absent)):
        words += [flag, value] if value is not None else []
    words += ["--", *_words(ctx, step)]
    done, took = _run(ctx, step.node, words, step.timeout + KILL_AFTER)
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        result.outcome = ERROR
        result.detail = (f"the poller in {step.node or 'the lab'} said nothing usable "
                         f"(exit status {done.returncode}: {done.stderr.strip()[-200:]})")
        return
    result.status, result.stdout, result.stderr = (report["status"], report["stdout"],
                                                   report["stderr"])
    what = f"`{step.command.describe()}`"
    if report["met"]:
        result.outcome = OK
        result.detail = f"{what} met after {report['attempts']} attempt(s), {took:.1f} s"
    else:
        last = mismatch(u, report["status"], report["stdout"], report["stderr"])
        result.outcome = TIMED_OUT
        result.detail = (f"{what} did not show the outcome within {step.timeout:g} s "
                         f"({report['attempts']} attempts; last: {last or 'matched late'})")


def _capture(ctx: Context, step: CaptureStep, result: StepResult) -> None:
    pcap = ctx.path("pcaps", f"{step.name}.pcap")
    fh = open(pcap, "wb")
    node = ctx.node(step.node)
    result.files.append(os.path.relpath(pcap, ctx.directory))
    try:  # the capture says "ready" on stderr once its socket is open
        started = helper.start(node, [sys.executable, "-m", "labkit.packets.capture",
                                      step.iface, "--count", str(step.count),
                                      "--duration", f"{step.duration:g}"],
                               what=f"capture on {step.node}:{step.iface}", on="stderr",
                               ready=lambda line: line.strip() == "ready",
                               timeout=SLACK * 2, stdout=fh)
    except HelperFailed as exc:  # its process is gone already
        fh.close()
        result.outcome, result.detail = ERROR, str(exc).rstrip(".")
        return
    ctx.captures[step.name] = Background(started.proc, node.host, result, pcap, "",
                                         time.monotonic() + step.duration + SLACK, [fh])
    result.outcome, result.detail = OK, f"capturing on {step.node}:{step.iface}"

