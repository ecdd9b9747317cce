"""What every panel shares: a titled box, a progress bar and a message line, and long work
run in a thread so the notebook's kernel stays free while a lab boots or traffic runs.

Errors never show as tracebacks: a LabkitError appears as its one paragraph (what, where,
the fix), anything else as one line naming it a labkit bug. `wait()` lets a notebook run
top to bottom (CI, "Run All") sequence a step a button started, bounded by a deadline,
and re-raises the step's error there so a failing step fails the notebook.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from labkit.errors import LabkitError

Report = Callable[[int, int, str], None]  # (done, total, what), like Lab.up's progress

STYLE = """<style>
.lk-panel {border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 10px; margin: 4px 0;}
.lk-panel table {border-collapse: collapse; font-size: 12px;}
.lk-panel th, .lk-panel td {border-bottom: 1px solid #eaeef2; padding: 2px 8px;
  text-align: left; font-family: monospace;}
.lk-pass {color: #1a7f37; font-weight: bold;} .lk-fail {color: #cf222e; font-weight: bold;}
.lk-error {color: #9a6700; font-weight: bold;} .lk-muted {color: #57606a;}
</style>"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def table(header: list[str], rows: list[list[Any]], css: str = "") -> str:
    """An HTML table of plain values (escaped)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def explain(exc: BaseException) -> str:
    """One paragraph for a user: a LabkitError's message and hint, else a labkit bug."""
    if isinstance(exc, LabkitError):
        return exc.render()
    return (f"internal error: {type(exc).__name__}: {exc}. This is a labkit bug; the "
            "same step from the CLI with LABKIT_DEBUG=1 shows the traceback.")


class Busy(LabkitError):
    """A panel was asked to start work while its previous work still runs."""


class Panel:
    """A box with a title, a progress bar and a message line; runs one job at a time."""

    css = "lk-panel"

    def __init__(self, title: str) -> None:
        self.title = w.HTML(STYLE + f"<b>{esc(title)}</b>")
        self.progress = w.FloatProgress(value=0, min=0, max=1, layout=w.Layout(
            width="240px", visibility="hidden"))
        self.message = w.HTML("")
        self.error: BaseException | None = None
        self.job: str = ""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.box = w.VBox([self.title, *self.body(), w.HBox([self.progress, self.message])])
        self.box.add_class(self.css)
        for extra in getattr(self, "classes", ()):
            self.box.add_class(extra)

    def body(self) -> list[w.Widget]:
        """The panel's own widgets, between its title and its message line."""
        return []

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

    # -- messages ------------------------------------------------------------------
    def say(self, text: str, css: str = "lk-muted") -> None:
        self.message.value = f'<span class="{css}">{esc(text)}</span>'

    def show_error(self, exc: BaseException) -> None:
        self.message.value = f'<span class="lk-fail">{esc(explain(exc))}</span>'

    def report(self, done: int, total: int, what: str) -> None:
        """Progress from a job (Lab.up's callback shape); thread-safe as widget updates
        are sent through the kernel's IOPub thread."""
        self.progress.layout.visibility = "visible"
        self.progress.value = done / total if total else 0
        self.say(what + (f" ({done}/{total})" if total else ""))

    # -- jobs ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, what: str, job: Callable[[], Any],
              done: Callable[[Any], None] | None = None) -> Panel:
        """Run job() in a thread; done(result) afterwards (in that thread). A second start
        while one runs is refused on the message line (and raised as Busy)."""
        with self._lock:
            if self.busy:
                err = Busy(f"{self.job} is still running.",
                           hint="Wait for it to finish (or stop it) before starting another.")
                self.show_error(err)
                raise err
            self.job, self.error = what, None
            self.progress.layout.visibility = "visible"
            self.progress.value = 0
            self.say(f"{what}...")
            opening = self.message.value

            def run() -> None:
                started = time.monotonic()
                try:
                    result = job()
                    if done is not None:
                        done(result)
                except BaseException as exc:  # shown here; re-raised by wait()
                    self.error = exc
                    self.show_error(exc)
                else:
                    if self.message.value == opening:  # done() said nothing of its own
                        self.say(f"{what}: done in {time.monotonic() - started:.1f} s")
                finally:
                    self.progress.layout.visibility = "hidden"

            self._thread = threading.Thread(target=run, name=f"labkit {what}", daemon=True)
            self._thread.start()
        return self

    def clicked(self, fn: Callable[[], Any]) -> Callable[[Any], None]:
        """A button handler: never raises into the widget machinery (errors are shown)."""

        def handler(_: Any) -> None:
            try:
                fn()
            except LabkitError as exc:
                self.show_error(exc)
            except Exception as exc:  # a bug: one line on the panel, not a traceback
                self.show_error(exc)

        return handler

    def wait(self, timeout: float = 600.0) -> Panel:
        """Block until the running job ends (for a notebook run top to bottom); its error
        is raised here. Bounded: a job still running at the deadline is an error."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise LabkitError(f"{self.job} did not finish within {timeout:g} s.",
                                  hint="It still runs in the background; wait again, or "
                                       "run the clean-up cell.")
        if self.error is not None:
            err, self.error = self.error, None
            raise err
        return self
