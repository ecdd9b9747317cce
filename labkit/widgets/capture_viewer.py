"""The capture viewer: start and stop a bounded capture on one interface of one node,
see the packets dissected by scapy (TIPC layers included) in a table as they arrive,
click one to see its layers, and download the capture as a pcap.

The capture runs as `python -m labkit.packets.capture IFACE` inside the node (a local
namespace or a VM, through node.popen), streaming pcap to this process; a reader thread
parses records as they come.
"""

from __future__ import annotations

import base64
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as w

from labkit.base import helper
from labkit.base.helper import Spawner
from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.packets.capture import PCAP_HEADER, RECORD_HEADER
from labkit.widgets.base import Panel, esc
from labkit.widgets.session import LabSession

MAX_FRAMES = 5000  # a capture stops at this many frames whatever the user asks
MAX_SECONDS = 300.0
READY_TIMEOUT = 120.0  # s for the capture process to open its socket (slow in a VM)


class _Remembered:
    """The node as helper.start's spawner, keeping the process on the viewer as soon as it
    starts (so Stop reaches a capture still waiting for its socket)."""

    def __init__(self, viewer: CaptureViewer, node: Spawner) -> None:
        self.viewer, self.node = viewer, node

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        self.viewer._proc = self.node.popen(cmd, **kwargs)
        return self.viewer._proc


def dissect(frame: bytes) -> Any:
    """The frame as scapy layers, with every feature's own layers bound (TIPC v2 and v7)."""
    from scapy.layers.l2 import Ether

    from labkit import features

    features.bind_layers()
    return Ether(frame)


def summary(frame: bytes) -> str:
    try:
        return str(dissect(frame).summary())
    except Exception as exc:  # noqa: BLE001 (a frame scapy cannot parse is still listed)
        return f"undissectable frame ({len(frame)} bytes): {exc}"


def layers(frame: bytes) -> str:
    """Every layer and field of one frame, as scapy's show() prints it."""
    try:
        return str(dissect(frame).show(dump=True))
    except Exception as exc:  # noqa: BLE001
        return f"scapy cannot dissect this frame: {exc}"


class CaptureViewer(Panel):
    """A capture on NODE:IFACE, its packets in a table, one packet's layers on click."""

    classes = ("lk-capture-viewer",)

    def __init__(self, session: LabSession, node: str | None = None,
                 iface: str | None = None) -> None:
        self.session = session
        self.frames: list[tuple[float, bytes]] = []
        self._pcap = bytearray()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        nodes = list(session.topo.nodes)
        self.node = w.Dropdown(options=nodes, value=node or (nodes[0] if nodes else None),
                               description="node")
        self.iface = w.Dropdown(description="interface")
        self.count = w.BoundedIntText(value=200, min=1, max=MAX_FRAMES, description="frames")
        self.seconds = w.BoundedFloatText(value=20, min=1, max=MAX_SECONDS,
                                          description="seconds")
        self.start_button = w.Button(description="Start", icon="circle",
                                     button_style="warning")
        self.stop_button = w.Button(description="Stop", icon="stop")
        self.table = w.Select(options=[], rows=12, layout=w.Layout(width="100%"))
        self.table.add_class("lk-capture-table")
        self.detail = w.HTML()
        self.download = w.HTML()
        super().__init__(f"Capture in lab {session.name}")
        self.node.observe(lambda _: self._ifaces(), names="value")
        self._ifaces(iface)
        self.start_button.on_click(self.clicked(self.capture))
        self.stop_button.on_click(self.clicked(self.stop))
        self.table.observe(self._picked, names="value")

    def body(self) -> list[w.Widget]:
        return [w.HBox([self.node, self.iface]), w.HBox([self.count, self.seconds]),
                w.HBox([self.start_button, self.stop_button, self.download]), self.table,
                self.detail]

    def _ifaces(self, prefer: str | None = None) -> None:
        spec = self.session.topo.nodes.get(self.node.value)
        names = [*(spec.interfaces if spec else {}), "lo"]
        self.iface.options = names
        self.iface.value = prefer if prefer in names else names[0]

    # -- capture -------------------------------------------------------------------
    def capture(self, node: str | None = None, iface: str | None = None,
                count: int | None = None, seconds: float | None = None) -> CaptureViewer:
        """Start capturing (returns once the process runs; ready() waits for its socket)."""
        if node is not None:
            self.node.value = node
        if iface is not None:
            self._ifaces(iface)
        if count is not None:
            self.count.value = min(count, MAX_FRAMES)
        if seconds is not None:
            self.seconds.value = min(seconds, MAX_SECONDS)
        where = f"{self.node.value}:{self.iface.value}"
        lab = self.session.require(f"a capture on {where}")
        self.frames, self._pcap = [], bytearray()
        self.table.options, self.detail.value, self.download.value = [], "", ""
        self._ready.clear()
        n = lab.node(self.node.value)
        argv = [sys.executable, "-m", "labkit.packets.capture", self.iface.value,
                "--count", str(int(self.count.value)), "--duration", str(float(
                    self.seconds.value))]

        def job() -> int:
            # The capture says "ready" on stderr once its socket is open; a Stop pressed
            # before that ends the process the spawner recorded.
            started = helper.start(_Remembered(self, n), argv, on="stderr",
                                   ready=lambda line: line.strip() == "ready",
                                   what=f"the capture on {where}", timeout=READY_TIMEOUT,
                                   hint="Choose an interface the node has (the lab panel's "
                                        "status table lists them).")
            with started:
                self._ready.set()
                self.say(f"capturing on {where}")
                self._read(started.proc)
            return len(self.frames)

        def done(frames: int) -> None:
            self.say(f"{frames} frames captured on {where}", "lk-pass")
            self._offer_download(where)

        self.start(f"capturing on {where}", job, done)
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """Parse the pcap stream record by record, adding rows as frames arrive."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        header_done = False
        started = time.monotonic()
        limit = float(self.seconds.value) + READY_TIMEOUT + 30
        while time.monotonic() - started < limit:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            self._pcap += chunk
            buf += chunk
            if not header_done:
                if len(buf) < PCAP_HEADER.size:
                    continue
                buf = buf[PCAP_HEADER.size:]
                header_done = True
            rows = []
            while len(buf) >= RECORD_HEADER.size:
                sec, usec, incl, _ = RECORD_HEADER.unpack_from(buf)
                if len(buf) < RECORD_HEADER.size + incl:
                    break
                frame = buf[RECORD_HEADER.size:RECORD_HEADER.size + incl]
                buf = buf[RECORD_HEADER.size + incl:]
                self.frames.append((sec + usec / 1e6, frame))
                rows.append(self._row(len(self.frames) - 1))
            if rows:
                self.table.options = [*self.table.options, *rows]

    def _row(self, i: int) -> tuple[str, int]:
        ts, frame = self.frames[i]
        rel = ts - self.frames[0][0]
        return (f"{i + 1:>4}  {rel:8.3f}  {len(frame):>5} B  {summary(frame)}", i)

    def ready(self, timeout: float = READY_TIMEOUT) -> CaptureViewer:
        """Block until the capture socket is open (so traffic sent next is seen)."""
        wait_until(lambda: self._ready.is_set() or (self.error is not None) or
                   not self.busy, timeout, "the capture to start")
        if not self._ready.is_set():
            self.wait(10)
            raise LabkitError("the capture ended before it started.")
        return self

    def stop(self) -> None:
        """End the capture now; what was captured stays."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    # -- results -------------------------------------------------------------------
    def _picked(self, change: dict[str, Any]) -> None:
        if change["new"] is None:
            return
        ts, frame = self.frames[change["new"]]
        self.detail.value = (f"<b>frame {change['new'] + 1}</b> ({len(frame)} bytes)"
                             f"<pre class='lk-packet'>{esc(layers(frame))}</pre>")

    def pcap(self) -> bytes:
        """The capture as a classic pcap file (what Wireshark and tshark open)."""
        if not self._pcap:
            return b""
        data = bytes(self._pcap)
        # A stopped capture may end mid-record: keep whole records only.
        pos = PCAP_HEADER.size
        while pos + RECORD_HEADER.size <= len(data):
            incl = struct.unpack_from("<I", data, pos + 8)[0]
            if pos + RECORD_HEADER.size + incl > len(data):
                break
            pos += RECORD_HEADER.size + incl
        return data[:pos]

    def save(self, path: str) -> str:
        with open(path, "wb") as fh:
            fh.write(self.pcap())
        return path

    def _offer_download(self, where: str) -> None:
        data = self.pcap()
        if len(self.frames) == 0:
            self.download.value = '<span class="lk-muted">nothing captured</span>'
            return
        name = f"{self.session.name}-{where.replace(':', '-')}.pcap"
        self.download.value = (
            f'<a download="{esc(name)}" href="data:application/vnd.tcpdump.pcap;base64,'
            f'{base64.b64encode(data).decode()}">Download {esc(name)}</a>')

    def summaries(self) -> list[str]:
        return [summary(f) for _, f in self.frames]
