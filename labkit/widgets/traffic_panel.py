"""The traffic panel: protocol, socket kind, message size, duration, from and to; runs
bounded traffic (labkit.traffic.timeline) and plots throughput over time as it arrives,
every run of the session on one plot so protocols can be compared.
"""

from __future__ import annotations

import importlib
import io
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from matplotlib.figure import Figure

from labkit import features
from labkit.errors import UsageError
from labkit.widgets.base import Panel, table
from labkit.widgets.session import LabSession

if TYPE_CHECKING:
    from labkit.traffic.timeline import Sample, Timeline
    from labkit.widgets.counters_panel import CountersPanel

SIZES = [64, 512, 1400, 4096, 16384, 65536]
INTERVAL = 0.5  # s per plotted sample


def protocols(session: LabSession) -> dict[str, list[str]]:
    """Protocol -> socket kinds, for what this lab can carry (tcp, plus its features')."""
    out = {"tcp": ["stream"]}
    for proto, module in features.traffic_protocols().items():
        owner = next(k for k in features.keys() if proto in features.get(k).traffic)
        if session.has_feature(owner):
            out[proto] = list(importlib.import_module(module).SOCKETS)
    return out


def plot(runs: list[tuple[str, list[tuple[float, float]]]]) -> bytes:
    """PNG: Mbit/s over time, one line per run (label, [(t, bytes/s)])."""
    fig = Figure(figsize=(6.5, 2.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label, points in runs:
        if points:
            ax.plot([t for t, _ in points], [v * 8 / 1e6 for _, v in points], marker=".",
                    label=label)
    ax.set_xlabel("seconds since the first byte")
    ax.set_ylabel("Mbit/s at the receiver")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if runs:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class TrafficPanel(Panel):
    """Bounded traffic between two nodes, plotted live."""

    classes = ("lk-traffic-panel",)

    def __init__(self, session: LabSession, counters: CountersPanel | None = None) -> None:
        self.session = session
        self.counters = counters
        self.runs: list[Timeline] = []
        self._curves: list[tuple[str, list[tuple[float, float]]]] = []
        self._stop = threading.Event()
        self.kinds = protocols(session)
        nodes = list(session.topo.nodes)
        self.proto = w.Dropdown(options=list(self.kinds), value="tcp", description="protocol")
        self.socket = w.Dropdown(options=self.kinds["tcp"], description="socket")
        self.size = w.Dropdown(options=SIZES, value=65536, description="bytes/msg")
        self.duration = w.FloatSlider(value=3.0, min=1.0, max=30.0, step=0.5,
                                      description="seconds")
        self.src = w.Dropdown(options=nodes, value=nodes[0] if nodes else None,
                              description="from")
        self.dst = w.Dropdown(options=nodes, value=nodes[1] if len(nodes) > 1 else None,
                              description="to")
        self.run_button = w.Button(description="Send", icon="paper-plane",
                                   button_style="primary")
        self.stop_button = w.Button(description="Stop", icon="stop")
        self.chart = w.Image(format="png", value=plot([]), layout=w.Layout(max_width="660px"))
        self.chart.add_class("lk-traffic-chart")
        self.results = w.HTML()
        super().__init__(f"Traffic in lab {session.name}")
        self.proto.observe(self._proto_changed, names="value")
        self.run_button.on_click(self.clicked(self.run))
        self.stop_button.on_click(self.clicked(self.stop))

    def body(self) -> list[w.Widget]:
        return [w.HBox([w.VBox([self.proto, self.socket, self.size]),
                        w.VBox([self.src, self.dst, self.duration])]),
                w.HBox([self.run_button, self.stop_button]), self.chart, self.results]

    def _proto_changed(self, change: dict[str, Any]) -> None:
        self.socket.options = self.kinds[change["new"]]
        owners = [k for k in features.keys() if change["new"] in features.get(k).traffic]
        nodes = list(self.session.topo.nodes)
        # Only the nodes that run the feature can send it (a feature config lists them).
        cfg = self.session.topo.features.get(owners[0]) if owners else None
        able = [n for n in nodes if n in getattr(cfg, "nodes", nodes)] or nodes
        for dd in (self.src, self.dst):
            keep = dd.value if dd.value in able else None
            dd.options = able
            dd.value = keep or (able[0] if dd is self.src or len(able) < 2 else able[1])

    def run(self, proto: str | None = None, socket: str | None = None,
            size: int | None = None, duration: float | None = None, src: str | None = None,
            dst: str | None = None) -> TrafficPanel:
        """Send with the panel's settings (arguments set them first); returns at once."""
        if proto is not None:
            if proto not in self.kinds:
                raise UsageError(f"lab '{self.session.name}' cannot carry {proto} traffic.",
                                 hint=f"Choose one of: {', '.join(self.kinds)}.")
            self.proto.value = proto
        if socket is not None and socket not in self.socket.options:
            raise UsageError(f"{self.proto.value} has no socket kind '{socket}'.",
                             hint=f"Choose one of: {', '.join(self.socket.options)}.")
        for node in (src, dst):
            if node is not None and node not in self.src.options:
                raise UsageError(f"node '{node}' cannot send or receive "
                                 f"{self.proto.value} in lab '{self.session.name}'.",
                                 hint=f"Choose one of: {', '.join(self.src.options)}.")
        if size is not None and size not in self.size.options:
            if not 2 <= size <= 1 << 20:
                raise UsageError(f"a message of {size} bytes is out of range.",
                                 hint="Choose 2 to 1048576 bytes.")
            self.size.options = sorted({*self.size.options, size})
        if duration is not None and not 1 <= duration <= 30:
            raise UsageError(f"a run of {duration:g} s is out of range.",
                             hint="Choose 1 to 30 seconds (runs are bounded).")
        for widget, value in ((self.socket, socket), (self.size, size),
                              (self.duration, duration), (self.src, src), (self.dst, dst)):
            if value is not None:
                widget.value = value
        args = {"proto": self.proto.value, "socket": self.socket.value,
                "size": int(self.size.value), "duration": float(self.duration.value),
                "src": self.src.value, "dst": self.dst.value}
        label = f"{args['proto']}/{args['socket']} {args['src']}→{args['dst']} " \
                f"{args['size']} B"
        points: list[tuple[float, float]] = []
        self._stop.clear()

        def sample(s: Sample) -> None:
            points.append((s.t, s.bytes_per_s))
            self.chart.value = plot([*self._curves, (label, points)])
            self.report(int(s.t * 10), int(args["duration"] * 10), "sending")

        def job() -> Timeline:
            from labkit.traffic.timeline import measure_over_time

            lab = self.session.require("traffic")
            if self.counters is not None and not self.counters.busy:
                self.counters.live(args["duration"] + 3)
            return measure_over_time(lab, args["src"], args["dst"], proto=args["proto"],
                                     socket=args["socket"], size=args["size"],
                                     duration=args["duration"], interval=INTERVAL,
                                     on_sample=sample, stop=self._stop)

        def done(result: Timeline) -> None:
            self.runs.append(result)
            self._curves.append((label, points))
            self.chart.value = plot(self._curves)
            t = result.throughput
            self.say(f"{label}: {t.bytes_per_s * 8 / 1e6:.1f} Mbit/s over {t.seconds:.2f} s"
                     + (" (stopped early)" if result.stopped else ""), "lk-pass")
            self.results.value = table(
                ["run", "Mbit/s", "msg/s", "bytes received", "seconds"],
                [[lbl, f"{r.throughput.bytes_per_s * 8 / 1e6:.1f}",
                  f"{r.throughput.messages_per_s:.0f}", r.throughput.bytes,
                  f"{r.throughput.seconds:.2f}"]
                 for (lbl, _), r in zip(self._curves, self.runs, strict=True)],
                "lk-traffic-results")

        self.start(f"sending {label}", job, done)
        return self

    def stop(self) -> None:
        """End the running transfer early (what arrived is kept)."""
        self._stop.set()
