"""The lab panel: Up and Down with progress, where the lab runs, a status table of nodes
and interfaces as the kernel reports them, and the topology as a picture.

Up and Down run in a thread (a lab in a VM takes tens of seconds to boot under
emulation); the progress bar and message line follow Lab.up's progress and announcements.
"""

from __future__ import annotations

import time
from typing import Any

import ipywidgets as w

from labkit.widgets.base import Panel, esc, table
from labkit.widgets.picture import draw
from labkit.widgets.session import LabSession

WHERE = [("automatic (this kernel, else a VM)", ""), ("this machine's kernel", "host"),
         ("VM debian-6.12", "debian-6.12"), ("VM debian-6.1", "debian-6.1")]


def status_html(data: dict[str, Any] | None, condition: str) -> str:
    """The status table: one row per interface, then LANs; or why there is none."""
    if data is None:
        return (f'<p class="lk-muted">The lab is {esc(condition)}: no namespaces to show. '
                "Click <b>Up</b> to build it.</p>")
    rows = []
    for node, info in data["nodes"].items():
        if not info["present"]:
            rows.append([node, "(namespace missing)", "", "", ""])
        for i, link in enumerate(info["interfaces"]):
            shown = [a for a in link["addresses"] if not a.startswith("fe80:")]
            rows.append([node if i == 0 else "", link["ifname"], link["state"], link["mtu"],
                         " ".join(shown)])
    lans = "".join(f"<li>LAN {esc(n)}: {'up' if v['up'] else 'DOWN'}, members "
                   f"{esc(', '.join(m or '?' for m in v['members']))}</li>"
                   for n, v in data.get("lans", {}).items())
    head = (f'<p>lab <b>{esc(data["name"])}</b> is <b>{esc(data["status"])}</b> on '
            f'{esc(data["where"])}</p>')
    return (head + table(["node", "interface", "state", "MTU", "addresses (not fe80::)"], rows,
                         "lk-status-table") + (f"<ul>{lans}</ul>" if lans else ""))


class LabPanel(Panel):
    """Up/down, status table and topology picture for one lab."""

    classes = ("lk-lab-panel",)

    def __init__(self, session: LabSession) -> None:
        self.session = session
        self.last_up_seconds: float | None = None
        self.announcements: list[str] = []
        self.up_button = w.Button(description="Up", icon="play", button_style="success")
        self.down_button = w.Button(description="Down", icon="stop", button_style="danger")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.where = w.Dropdown(options=WHERE, value="", description="Run on:",
                                style={"description_width": "initial"})
        self.status = w.HTML()
        self.status.add_class("lk-status")
        self.picture = w.Image(format="png", layout=w.Layout(width="560px", min_width="320px"))
        self.picture.add_class("lk-topology")
        self.log = w.HTML()
        desc = session.topo.description.strip()
        self.description = w.HTML(f"<pre class='lk-muted'>{esc(desc)}</pre>" if desc else "")
        super().__init__(f"Lab {session.name} ({session.topo.path})")
        self.up_button.on_click(self.clicked(lambda: self.up(self.where.value or None)))
        self.down_button.on_click(self.clicked(self.down))
        self.refresh_button.on_click(self.clicked(self.refresh))
        try:
            self._show()  # at once: a cell that clicks Up next must not find the panel busy
        except Exception as exc:  # noqa: BLE001 (shown on the panel, never a traceback)
            self.show_error(exc)

    def body(self) -> list[w.Widget]:
        buttons = w.HBox([self.up_button, self.down_button, self.refresh_button, self.where])
        return [self.description, buttons, self.log, w.HBox([self.status, self.picture])]

    # -- actions -------------------------------------------------------------------
    def _announce(self, text: str) -> None:
        self.announcements.append(text)
        self.log.value = "".join(f'<div class="lk-muted">{esc(t)}</div>'
                                 for t in self.announcements[-5:])

    def up(self, on: str | None = None) -> LabPanel:
        """Build the lab in a thread (returns at once; wait() to block until it is up)."""

        def job() -> float:
            started = time.monotonic()
            self.session.up(on=on, progress=self.report, say=self._announce)
            return time.monotonic() - started

        def done(seconds: float) -> None:
            self.last_up_seconds = seconds
            lab = self.session.lab()
            where = lab.placement.describe() if lab else "?"
            self.say(f"lab '{self.session.name}' is up on {where} ({seconds:.1f} s)",
                     "lk-pass")
            self._show()

        self.start(f"bringing lab '{self.session.name}' up", job, done)
        return self

    def down(self) -> LabPanel:
        """Remove the lab wherever it runs, in a thread."""

        def done(removed: list[str]) -> None:
            self.say(f"lab '{self.session.name}' is down"
                     + (f" (removed {', '.join(removed)})" if removed else ""), "lk-pass")
            self._show()

        self.start(f"bringing lab '{self.session.name}' down", self.session.down, done)
        return self

    def refresh(self) -> LabPanel:
        """Re-read the lab's status from the kernel, in a thread."""
        self.start("reading the lab's status", lambda: None, lambda _: self._show())
        return self

    def ensure_up(self, timeout: float = 900.0, on: str | None = None) -> LabPanel:
        """For a notebook run top to bottom: wait for an Up already clicked, or start one;
        returns once the lab is up (bounded by timeout)."""
        self.wait(timeout)
        if self.session.lab() is None:
            self.up(on).wait(timeout)
        return self

    # -- view ----------------------------------------------------------------------
    def _show(self) -> None:
        """Everything is computed first, then shown at once (the status table last), so
        the table never says up beside a picture that still says down."""
        lab = self.session.lab()
        data = lab.status() if lab is not None else None
        running = {n for n, v in data["nodes"].items() if v["present"]} if data else None
        picture = draw(self.session.topo, running)
        table_html = status_html(data, self.session.condition())
        self.picture.value = picture
        self.up_button.disabled = lab is not None
        self.down_button.disabled = lab is None and self.session.condition() == "down"
        self.status.value = table_html
