"""The live counters panel: interface counters and kTLS counters (/proc/net/tls_stat) per
node, and each feature's own counters (TIPC links, proxies, NICs: Feature.counters), with the
change since the previous reading, refreshed on demand or live (every second, for a bounded
time) while traffic runs.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import ipywidgets as w

from labkit import features
from labkit.errors import LabkitError
from labkit.widgets.base import Panel, esc, table
from labkit.widgets.session import LabSession

READINGS = "labkit.widgets.readings:counters"
LIVE_PERIOD = 1.0  # s between readings when live
MAX_LIVE = 300.0  # s a live refresh runs at most


def read_all(session: LabSession) -> dict[str, Any]:
    """One reading: {"nodes": {node: {...}}, "features": {key: status}, "t": time}."""
    lab = session.require("reading counters")
    nodes: dict[str, Any] = {}
    for host in lab.hosts:
        nodes.update(host.call(lab, READINGS)["nodes"])
    statuses = {key: lab.feature_status(key) for key in sorted(session.topo.features)}
    return {"t": time.monotonic(), "nodes": nodes, "features": statuses}


def _delta(now: int, before: int | None) -> str:
    return "" if before is None or now == before else f"+{now - before}"


def render(now: dict[str, Any], before: dict[str, Any] | None) -> str:
    """Tables of the reading, with the change since `before`."""
    old = before or {"nodes": {}, "features": {}}
    rows = []
    for node, info in now["nodes"].items():
        for iface, c in info["interfaces"].items():
            prev = old["nodes"].get(node, {}).get("interfaces", {}).get(iface, {})
            if iface == "lo" and not c["rx_packets"] and not prev:
                continue
            rows.append([node, iface, c["rx_packets"], _delta(c["rx_packets"],
                                                              prev.get("rx_packets")),
                         c["tx_packets"], _delta(c["tx_packets"], prev.get("tx_packets")),
                         c["rx_bytes"], c["tx_bytes"], c["rx_dropped"] + c["tx_dropped"]])
    out = ["<b>Interfaces</b>", table(["node", "iface", "rx pkts", "Δ", "tx pkts", "Δ",
                                       "rx bytes", "tx bytes", "drops"], rows,
                                      "lk-counters-ifaces")]
    out.append("<b>kTLS (/proc/net/tls_stat)</b>")
    tls = {n: i["tls"] for n, i in now["nodes"].items() if i["tls"] is not None}
    if not tls:
        out.append('<p class="lk-muted">No tls_stat here: the kernel running this lab has '
                   "no tls module loaded (kTLS labs load it).</p>")
    else:
        rows = []
        for node, counters in tls.items():
            prev = old["nodes"].get(node, {}).get("tls") or {}
            for key, value in counters.items():
                if value or prev.get(key):
                    rows.append([node, key, value, _delta(value, prev.get(key))])
        out.append(table(["node", "counter", "value", "Δ"], rows, "lk-counters-tls")
                   if rows else '<p class="lk-muted">every kTLS counter is 0.</p>')
    if not now.get("features"):
        out.append('<p class="lk-muted">This lab switches on no kernel feature (no '
                   f"{', '.join(f'<code>{k}:</code>' for k in features.keys())} block in its "
                   "topology): no feature counters.</p>")
    for key, status in now.get("features", {}).items():
        out.append(_feature(key, status, old.get("features", {}).get(key)))
    return "".join(out)


def _feature(key: str, status: dict[str, Any], before: dict[str, Any] | None) -> str:
    """A feature's counter rows as a table with the change of every number, or its status
    as it is when the feature has no counter rows."""
    feature = features.get(key)
    rows = feature.counters(status)
    if rows is None:
        text = json.dumps(status, indent=1, default=str)
        return (f"<details><summary><b>{esc(key)}</b> (its status)</summary>"
                f"<pre>{esc(text[:20000])}</pre></details>")
    prev = feature.counters(before) if before else None
    title = f"<b>{esc(feature.title or key)}</b>"
    if not rows:
        return title + '<p class="lk-muted">nothing to count yet.</p>'
    columns = list(next(iter(rows.values())))
    head = [key]
    for col in columns:
        head += [col, "Δ"] if isinstance(next(iter(rows.values()))[col], int) else [col]
    body = []
    for name, row in rows.items():
        line: list[Any] = [name]
        for col in columns:
            value = row.get(col)
            line.append(value)
            if isinstance(next(iter(rows.values()))[col], int):
                old = (prev or {}).get(name, {}).get(col)
                line.append(_delta(value, old) if isinstance(value, int) else "")
        body.append(line)
    return title + table(head, body, f"lk-counters-{key}")


class CountersPanel(Panel):
    """Counters per node; Refresh once, or Live for a bounded time."""

    classes = ("lk-counters-panel",)

    def __init__(self, session: LabSession) -> None:
        self.session = session
        self.readings: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.live_button = w.ToggleButton(description="Live", icon="eye", value=False,
                                          tooltip="refresh every second (at most 5 min)")
        self.view = w.HTML('<p class="lk-muted">Click Refresh (the lab must be up).</p>')
        self.view.add_class("lk-counters")
        super().__init__(f"Counters of lab {session.name}")
        self.refresh_button.on_click(self.clicked(self.refresh))
        self.live_button.observe(self._toggled, names="value")

    def body(self) -> list[w.Widget]:
        return [w.HBox([self.refresh_button, self.live_button]), self.view]

    @property
    def last(self) -> dict[str, Any] | None:
        return self.readings[-1] if self.readings else None

    def _take(self) -> dict[str, Any]:
        now = read_all(self.session)
        self.view.value = render(now, self.last)
        self.readings = [*self.readings[-50:], now]
        return now

    def refresh(self) -> CountersPanel:
        self.start("reading counters", self._take)
        return self

    def live(self, seconds: float = 30.0) -> CountersPanel:
        """Refresh every second for `seconds` (at most MAX_LIVE), or until stop()."""
        seconds = min(max(seconds, LIVE_PERIOD), MAX_LIVE)
        self._stop.clear()

        def loop() -> int:
            end = time.monotonic() + seconds
            n = 0
            try:
                while not self._stop.is_set() and time.monotonic() < end:
                    self._take()
                    n += 1
                    self.report(int(min(seconds, seconds - (end - time.monotonic()))),
                                int(seconds), "live")
                    self._stop.wait(LIVE_PERIOD)
            finally:
                self.live_button.value = False
            return n

        if self.session.lab() is None:
            raise LabkitError(f"lab '{self.session.name}' is not up, so there are no "
                              "counters to follow.", hint="Click Up in the lab panel first.")
        self.start("following counters", loop,
                   lambda n: self.say(f"{n} readings; live refresh ended"))
        return self

    def stop(self) -> None:
        self._stop.set()

    def _toggled(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            self.stop()
        elif not self.busy:
            try:
                self.live(MAX_LIVE)
            except Exception as exc:  # noqa: BLE001 (shown on the panel)
                self.show_error(exc)
                self.live_button.value = False
