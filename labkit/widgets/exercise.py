"""One exercise in a notebook: its task, a terminal-like box that runs the learner's
commands in a node of the lab, and Check / Hint / Show solution.

Everything goes through `labkit.exercises.api` (the same as `labkit exercise ...`), so the
progress the widget shows (hints taken, checks, passed) lives in the lab's progress file:
re-running the cell after a kernel restart or a page reload shows the same state.

    from labkit.widgets import ExercisePanel
    ExercisePanel(session, "loopback-service").auto()

`auto()` is what a notebook cell runs: it shows the learner's state; with LABKIT_SOLVE=1
(tests, instructors) it first proves the check fails, applies the reference solution and
checks until the exercise passes (bounded), raising if it does not.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from labkit.base import wait
from labkit.errors import LabkitError, UsageError
from labkit.topology.fields import suggest
from labkit.widgets.base import Panel, esc
from labkit.widgets.session import LabSession
from labkit.widgets.verify_button import verdict_html

if TYPE_CHECKING:
    from labkit.exercises.api import Exercises, Result
    from labkit.exercises.model import Exercise

SOLVE_VARIABLE = "LABKIT_SOLVE"
OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output kept (the rest is cut, and said so)
COMMAND_TIMEOUT = 60  # s a learner's command may run
SOLVE_DEADLINE = 240.0  # s to wait for a solved exercise to pass (TIPC keys take seconds)

STYLE = """<style>
.lk-exercise .lk-task {font-size: 13px; line-height: 1.45;}
.lk-exercise .lk-task code {background: #f6f8fa; padding: 0 3px; border-radius: 3px;}
.lk-term {background: #0d1117; color: #e6edf3; font-family: monospace; font-size: 12px;
  padding: 6px 8px; border-radius: 6px; max-height: 320px; overflow: auto;
  white-space: pre-wrap; margin: 0;}
.lk-term .lk-prompt {color: #7ee787;} .lk-term .lk-rc {color: #ff7b72;}
.lk-hint {background: #fff8c5; border-left: 3px solid #d4a72c; padding: 3px 8px; margin: 2px 0;}
.lk-solution {background: #f6f8fa; border-left: 3px solid #57606a; padding: 3px 8px;}
</style>"""


def solving() -> bool:
    """LABKIT_SOLVE=1: the exercise cells apply the reference solution (tests, trainers)."""
    return os.environ.get(SOLVE_VARIABLE) == "1"


def markdown(text: str) -> str:
    """The task as HTML (mistune, which JupyterLab's nbconvert brings); escaped text
    if it is missing."""
    try:
        import mistune
    except ImportError:
        return f"<pre>{esc(text)}</pre>"
    return str(mistune.html(text))


def shell_argv(command: str, timeout: int = COMMAND_TIMEOUT,
               limit: int = OUTPUT_LIMIT) -> list[str]:
    """The learner's line as argv: bash (pipes, globs, $(...), `&` for a server left
    running), stderr with stdout, stopped after `timeout` s. Output goes to a file capped
    at twice the limit (ulimit), not to a pipe, so a job left in the background never
    holds the command open; limit+1 bytes are shown (one more tells a cut)."""
    script = ('out=$(mktemp) || exit 1; '
              f'( ulimit -f {2 * limit // 1024}; exec timeout -k 2 {timeout} bash -c "$1" ) '
              '>"$out" 2>&1 </dev/null; rc=$?; '
              f'head -c {limit + 1} "$out"; rm -f "$out"; exit $rc')
    from labkit.exercises.api import with_labkit_path  # `python3` there imports labkit

    return with_labkit_path(["bash", "-c", script, "labkit-exercise", command])


def terminal_entry(node: str, command: str, rc: int, output: str,
                   limit: int = OUTPUT_LIMIT) -> str:
    """One command and its output, terminal style (HTML)."""
    cut = len(output.encode()) > limit
    if cut:
        output = output.encode()[:limit].decode(errors="replace")
    status = ""
    if rc == 124:
        status = f"[stopped after {COMMAND_TIMEOUT} s]"
    elif rc:
        status = f"[exit {rc}]"
    return (f'<span class="lk-prompt">{esc(node)}# </span>{esc(command)}\n{esc(output)}'
            + ("\n[output cut at 64 KiB]" if cut else "")
            + (f'<span class="lk-rc">{esc(status)}</span>\n' if status else ""))


def result_html(result: Result) -> str:
    word = {"pass": ("PASSED", "lk-pass"), "fail": ("NOT YET", "lk-fail"),
            "error": ("COULD NOT CHECK", "lk-error")}[result.outcome]
    todo = [c.missing for c in result.checks if c.outcome == "fail" and c.missing]
    lines = [f'<div class="lk-result"><span class="{word[1]}">{word[0]}</span> '
             f"{esc(result.title)}</div>"]
    if todo:
        lines.append(f'<div class="lk-muted">still missing: {esc("; ".join(todo))}</div>')
    return "".join(lines) + "".join(verdict_html(v) for v in result.verdicts())


class ExercisePanel(Panel):
    """One exercise of the session's lab (its topology names the exercises file)."""

    classes = ("lk-exercise",)

    def __init__(self, session: LabSession, exercise: str, node: str | None = None,
                 learner: str | None = None) -> None:
        self.session, self.exercise_id, self.learner = session, exercise, learner
        self._ex: Exercises | None = None
        self._ex_for: object = None
        item = self._item()
        nodes = list(session.topo.nodes)
        first = node or (item.solution.steps[0].node if item.solution and
                         item.solution.steps else nodes[0])
        self.item = item
        self.task = w.HTML(STYLE + f'<div class="lk-task">{markdown(self.fill(item.task))}'
                                   "</div>")
        self.node = w.Dropdown(options=nodes, value=first, description="node",
                               layout=w.Layout(width="170px"))
        self.command = w.Text(placeholder="a command, run in the node (Enter or Run)",
                              continuous_update=False, layout=w.Layout(width="560px"))
        self.command.add_class("lk-command")
        self.run_button = w.Button(description="Run", icon="terminal",
                                   layout=w.Layout(width="80px"))
        self.terminal = w.HTML('<pre class="lk-term">(commands you run appear here)</pre>')
        self.terminal.add_class("lk-terminal")
        self.check_button = w.Button(description="Check", icon="check", button_style="info")
        self.hint_button = w.Button(description="Hint", icon="lightbulb-o")
        self.solution_button = w.Button(description="Show solution", icon="eye",
                                        button_style="warning")
        self.hints = w.HTML()
        self.result = w.HTML()
        self.result.add_class("lk-exercise-result")
        self.solution_box = w.HTML()
        self.state = w.HTML()
        self.state.add_class("lk-exercise-state")
        self.history: list[str] = []
        self._notes: list[str] = []
        self.last: Result | None = None
        super().__init__(f"Exercise {item.id}: {item.title}")
        self.run_button.on_click(self.clicked(lambda: self._submit(self.command.value)))
        self.command.observe(self._entered, names="value")
        self.check_button.on_click(self.clicked(self.check))
        self.hint_button.on_click(self.clicked(self.hint))
        self.solution_button.on_click(self.clicked(self.show_solution))
        self._submitted = ""

    def body(self) -> list[w.Widget]:
        return [self.task, self.state,
                w.HBox([self.node, self.command, self.run_button]), self.terminal,
                w.HBox([self.check_button, self.hint_button, self.solution_button]),
                self.hints, self.result, self.solution_box]

    def fill(self, text: str) -> str:
        """A task's, hint's or step's text with LAB replaced by this lab's name."""
        return re.sub(r"\bLAB\b", self.session.name, text)

    # -- the exercises API ---------------------------------------------------------------
    def _item(self) -> Exercise:
        from labkit.exercises import loader

        path = self.session.topo.exercises
        if not path:
            raise LabkitError(f"{self.session.topo.path} names no exercises file.",
                              hint="Add `exercises: PATH` to the topology.")
        found = loader.load(path, list(self.session.topo.nodes))
        for item in found.items:
            if item.id == self.exercise_id:
                return item
        raise UsageError(f"{path} has no exercise '{self.exercise_id}'.",
                         hint=f"{suggest(self.exercise_id, found.ids())} Its exercises: "
                              f"{', '.join(found.ids())}.".strip())

    def api(self) -> Exercises:
        """The lab's exercises for this learner (re-made when the lab was rebuilt)."""
        from labkit.exercises.api import Exercises

        lab = self.session.require(f"exercise {self.exercise_id}")
        if self._ex is None or self._ex_for is not lab:
            self._ex, self._ex_for = Exercises.for_lab(lab, learner=self.learner), lab
        return self._ex

    # -- what the learner does -------------------------------------------------------------
    def _entered(self, change: dict[str, Any]) -> None:
        """Enter in the command box (or leaving it) sends the line, once."""
        self.clicked(lambda: self._submit(change.get("new") or ""))(None)

    def _submit(self, line: str) -> None:
        line = line.strip()
        if line and not (line == self._submitted and self.busy):
            self.run_command(line)

    def run_command(self, command: str | None = None, node: str | None = None) -> ExercisePanel:
        """Run the command box's line (or `command`) in the chosen node, in a thread."""
        line = (command if command is not None else self.command.value).strip()
        where = node or self.node.value
        if not line:
            self.say("type a command first (e.g. ip -br addr)")
            return self
        self._submitted = line

        def job() -> tuple[int, str]:
            lab = self.session.require("a command")
            res = lab.node(where).run(shell_argv(line), timeout=COMMAND_TIMEOUT + 15,
                                      input="")
            return res.returncode, (res.stdout or "") + (res.stderr or "")

        def done(out: tuple[int, str]) -> None:
            self.history.append(terminal_entry(where, line, *out))
            self.history = self.history[-20:]
            self.terminal.value = f'<pre class="lk-term">{"".join(self.history)}</pre>'
            self.command.value = ""
            self._submitted = ""
            self.say(f"ran in {where}: exit {out[0]}", "lk-muted")

        self.start(f"running `{line[:40]}` in {where}", job, done)
        return self

    def check(self) -> ExercisePanel:
        """Run the exercise's checks (in a thread); wait() then read `last`."""

        def done(result: Result) -> None:
            self.last = result
            self.result.value = result_html(result)
            self.refresh_state()
            self.say(result.summary, {"pass": "lk-pass", "fail": "lk-fail"}.get(
                result.outcome, "lk-error"))

        self.start(f"checking {self.exercise_id}", lambda: self.api().check(self.exercise_id),
                   done)
        return self

    def hint(self) -> ExercisePanel:
        got = self.api().hint(self.exercise_id)
        if got is None:
            self.say("no more hints: Show solution gives the answer")
        self.refresh_state()
        return self

    def show_solution(self) -> ExercisePanel:
        sol = self.api().solution(self.exercise_id)
        steps = "".join(f"<pre>{esc(self.fill(s.text))}</pre>" for s in sol.steps)
        self.solution_box.value = (f'<div class="lk-solution"><b>Solution.</b> '
                                   f"{markdown(sol.explain)}{steps}</div>")
        self.refresh_state()
        return self

    # -- state from the progress store ---------------------------------------------------
    def refresh_state(self) -> ExercisePanel:
        """Hints taken, checks, passed: read back from the lab's progress file."""
        ex = self.api()
        st = next(s for s in ex.status() if s.id == self.exercise_id)
        taken = ex.hints_taken(self.exercise_id)
        self.hints.value = "".join(f'<div class="lk-hint"><b>Hint {i}/{st.hints_total}.</b> '
                                   f"{markdown(self.fill(h))}</div>"
                                   for i, h in enumerate(taken, 1))
        self.hint_button.disabled = st.hints >= st.hints_total
        if st.passed_at is not None:
            when = time.strftime("%H:%M:%S", time.localtime(st.passed_at))
            word = f'<span class="lk-pass">passed</span> at {when}'
        else:
            word = '<span class="lk-fail">not yet</span>'
        extra = [f"{st.checks} check(s)", f"{st.hints}/{st.hints_total} hints"]
        if st.solution_shown:
            extra.append("solution shown")
        if st.solved:
            extra.append("solution applied")
        self.state.value = (f'<div class="lk-state-line">{self.exercise_id}: {word} '
                            f'<span class="lk-muted">({", ".join(extra)})</span></div>')
        if st.solution_shown and not self.solution_box.value:
            self.show_solution()
        return self

    @property
    def passed(self) -> bool:
        st = next(s for s in self.api().status() if s.id == self.exercise_id)
        return st.passed_at is not None

    # -- a notebook cell -----------------------------------------------------------------
    def auto(self, deadline: float = SOLVE_DEADLINE) -> ExercisePanel:
        """Show the exercise with the learner's state. With LABKIT_SOLVE=1: check (it must
        not pass yet), apply the reference solution, check until it passes. The work runs
        in the panel's thread (as a click would): pyroute2, which some checks use, cannot
        run inside the notebook kernel's own event loop."""
        from IPython.display import display

        display(self)
        job = self._solve if solving() else self.refresh_state
        self.start(f"exercise {self.exercise_id}", lambda: job(deadline) if solving()
                   else job())
        self.wait(deadline + 600)
        for line in self._notes:
            print(line)
        return self

    def _solve(self, deadline: float) -> None:
        self.refresh_state()
        before = self.api().check(self.exercise_id)
        self._note(f"before the solution: {before.summary}")
        if before.needs:  # this kernel cannot do it: say so, as a learner would see it
            self.last = before
            self.result.value = result_html(before)
            self._note(f"not solved here: {self.exercise_id} needs {before.needs}; "
                       "rebuild the lab on that kernel to do it")
            return
        if before.outcome != "fail":
            raise LabkitError(f"exercise {self.exercise_id} is '{before.outcome}' before "
                              "the learner acted: " + before.summary,
                              hint="A check that passes (or cannot run) on a fresh lab "
                                   "grades nothing; fix the exercise's checks.")
        solved = self.api().solve(self.exercise_id)
        for step in solved.steps:
            self.history.append(terminal_entry(step["node"], self.fill(step["text"]),
                                               step["rc"], step["output"]))
        self.terminal.value = f'<pre class="lk-term">{"".join(self.history)}</pre>'
        if not solved.ok:
            raise LabkitError(f"the reference solution of {self.exercise_id} failed: "
                              f"{solved.steps[-1]}")
        checks: list[Any] = []

        def passes() -> bool:
            checks.append(self.api().check(self.exercise_id))
            return bool(checks[-1].passed)

        wait.poll(passes, deadline, interval=3.0)  # a learner clicking Check again
        after = checks[-1]
        self.last = after
        self.result.value = result_html(after)
        self.refresh_state()
        self._note(f"after the solution: {after.summary}")
        if not after.passed:
            raise LabkitError(f"exercise {self.exercise_id} does not pass after its "
                              f"reference solution: {after.summary}")

    def _note(self, text: str) -> None:
        self._notes.append(text)
        self.say(text)

def progress_table(session: LabSession, learner: str | None = None) -> str:
    """Every exercise of the lab and where the learner is (HTML): what a notebook's last
    exercise cell shows."""
    from labkit.exercises.api import Exercises
    from labkit.widgets.base import table

    ex = Exercises.for_lab(session.require("the exercises' progress"), learner=learner)
    with ThreadPoolExecutor(1) as pool:  # off the kernel's event loop (baselines may read)
        status = pool.submit(ex.status).result(timeout=600)
    def state(s: Any) -> str:
        return "passed" if s.passed_at else \
            "could not check" if s.last_outcome == "error" else "not yet"

    rows = [[s.id, s.title, state(s), s.checks,
             f"{s.hints}/{s.hints_total}", "yes" if s.solved else "-"] for s in status]
    return STYLE + table(["exercise", "title", "state", "checks", "hints", "solved"], rows,
                         "lk-progress")

