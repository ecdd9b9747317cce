"""The notebook widgets without a browser: what each panel shows when the lab is down or
lacks a feature, bad input as one-paragraph errors, the topology picture, and (as root, on
this kernel) a capture that tshark reads, traffic sampled over time, and the counters.

Widgets work without a Jupyter kernel (their messages go nowhere), so the panels are driven
here exactly as their buttons drive them.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labkit.errors import LabkitError, UsageError
from tests.conftest import ROOT

pytest.importorskip("ipywidgets", reason="ipywidgets is not installed (scripts/setup.sh)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (scripts/setup.sh)")

from labkit.ktls.stat import parse as parse_tls_stat  # noqa: E402
from labkit.widgets import (  # noqa: E402 (after the skips)
    CaptureViewer,
    CountersPanel,
    LabPanel,
    LabSession,
    TrafficPanel,
    VerifyButton,
)
from labkit.widgets.base import Busy, Panel, explain  # noqa: E402
from labkit.widgets.counters_panel import render  # noqa: E402
from labkit.widgets.picture import draw, layout  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
TOPOLOGIES = sorted(p.name for p in (ROOT / "topologies").glob("*.yaml"))


@pytest.fixture
def down_session(topo_file: Callable[..., tuple[str, str]]) -> LabSession:
    """A session on a lab that is not up (a unique name nobody builds)."""
    path, name = topo_file(ROOT / "topologies" / "routed.yaml")
    return LabSession(path, name=name)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_topology_draws_as_a_picture(topology: str) -> None:
    session = LabSession(ROOT / "topologies" / topology)
    assert draw(session.topo).startswith(PNG)
    assert draw(session.topo, running=set(session.topo.nodes)).startswith(PNG)


def test_layout_is_deterministic_and_inside_the_frame() -> None:
    edges = [(0, 1), (1, 2), (2, 0), (2, 3)]
    a, b = layout(4, edges), layout(4, edges)
    assert (a == b).all()
    assert a.min() >= 0 and a.max() <= 1
    assert len({tuple(p.round(3)) for p in a}) == 4  # no two vertices on one spot


def test_a_lab_that_is_down_shows_so_everywhere(down_session: LabSession) -> None:
    panel = LabPanel(down_session)
    assert "Click <b>Up</b>" in panel.status.value
    assert bytes(panel.picture.value).startswith(PNG)
    assert panel.down_button.disabled and not panel.up_button.disabled
    counters = CountersPanel(down_session)
    counters.refresh()
    with pytest.raises(LabkitError, match="is not up"):
        counters.wait(30)
    assert "Click Up in the lab panel" in counters.message.value
    verify = VerifyButton(down_session)
    verify.run()
    with pytest.raises(LabkitError, match="is not up"):
        verify.wait(30)
    assert not verify.passed
    with pytest.raises(LabkitError, match="is not up"):
        CaptureViewer(down_session).capture()
    traffic = TrafficPanel(down_session)
    traffic.run(src="h1a", dst="h3b")
    with pytest.raises(LabkitError, match="is not up"):
        traffic.wait(30)


def test_missing_feature_is_said_not_offered(down_session: LabSession) -> None:
    """routed has no TIPC: tcp is the only protocol, and the counters say why there are no
    feature counters; a TIPC lab (the positive control) offers tipc, and its links are
    counted with their changes."""
    assert list(TrafficPanel(down_session).kinds) == ["tcp"]
    with pytest.raises(UsageError, match="cannot carry tipc"):
        TrafficPanel(down_session).run(proto="tipc")
    tipc = LabSession(ROOT / "topologies" / "cluster.yaml")
    kinds = TrafficPanel(tipc).kinds
    assert kinds["tipc"] == ["stream", "rdm", "seqpacket"]
    panel = TrafficPanel(tipc)
    panel.proto.value = "tipc"
    assert "r" not in panel.src.options  # the router runs no TIPC
    reading = {"nodes": {"a": {"interfaces": {}, "tls": None}}, "features": {}}
    html = render(reading, None)
    assert "switches on no kernel feature" in html and "no tls module" in html
    link = {"name": "1.1.1:eth1-1.1.2:eth1", "up": True, "tx_packets": 5, "rx_packets": 4,
            "retransmissions": 0}
    before = dict(reading, features={"tipc": {"nodes": {"n1": {"links": [link]}}}})
    now = dict(reading, features={"tipc": {"nodes": {"n1": {"links": [
        dict(link, tx_packets=12)]}}}})
    html = render(now, before)
    assert "lk-counters-tipc" in html and "+7" in html and "switches on no" not in html


def test_bad_traffic_input_is_one_paragraph(down_session: LabSession) -> None:
    panel = TrafficPanel(down_session)
    with pytest.raises(UsageError, match="node 'nope'") as err:
        panel.run(src="nope")
    assert "Choose one of: r, h1a" in err.value.render()
    with pytest.raises(UsageError, match="out of range"):
        panel.run(size=1)
    with pytest.raises(UsageError, match="out of range"):
        panel.run(duration=3600)
    with pytest.raises(UsageError, match="no socket kind"):
        panel.run(socket="rdm")
    panel.run(size=1000, src="h1a", dst="h3b")  # a size not in the list is added, not refused
    with pytest.raises(LabkitError):
        panel.wait(30)  # the lab is down
    assert 1000 in panel.size.options


def test_bad_lab_names_and_paths_are_refused() -> None:
    with pytest.raises(UsageError, match="was not found"):
        LabSession("topologies/nope.yaml")
    with pytest.raises(UsageError):
        LabSession("topologies/routed.yaml", name="../etc")


def test_one_job_at_a_time_and_errors_as_one_paragraph() -> None:
    panel = Panel("t")
    gate = threading.Event()
    panel.start("a slow job", lambda: gate.wait(10))
    with pytest.raises(Busy, match="a slow job is still running"):
        panel.start("another", lambda: None)
    gate.set()
    panel.wait(10)
    panel.start("a broken job", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        panel.wait(10)
    assert "internal error: ZeroDivisionError" in panel.message.value
    assert "Traceback" not in panel.message.value
    assert explain(UsageError("what.", hint="fix.")) == "what. fix."


def test_wait_is_bounded() -> None:
    panel = Panel("t")
    gate = threading.Event()
    panel.start("a stuck job", lambda: gate.wait(10))
    with pytest.raises(LabkitError, match="did not finish within 0.2 s"):
        panel.wait(0.2)
    gate.set()
    panel.wait(10)


def test_tls_stat_parsing() -> None:
    text = "TlsCurrTxSw                     \t1\nTlsTxDevice 0\nTlsDecryptError  -1\nbad line x y\n"
    assert parse_tls_stat(text) == {"TlsCurrTxSw": 1, "TlsTxDevice": 0, "TlsDecryptError": -1}


# -- with a lab on this kernel ----------------------------------------------------------


@pytest.fixture
def pair(topo_file: Callable[..., tuple[str, str]]) -> Iterator[LabSession]:
    path, name = topo_file(ROOT / "topologies" / "pair.yaml")
    session = LabSession(path, name=name)
    panel = LabPanel(session)
    try:
        panel.up().wait(120)
        yield session
    finally:
        panel.wait(120)
        if session.condition() != "down":
            session.down()


@pytest.mark.needs_root
def test_lab_panel_up_and_down(pair: LabSession) -> None:
    panel = LabPanel(pair)
    assert "lk-status-table" in panel.status.value and "198.19.0.1/30" in panel.status.value
    assert panel.up_button.disabled
    panel.down().wait(120)
    assert pair.condition() == "down"
    assert "Click <b>Up</b>" in panel.status.value
    assert "removed 2 namespaces" in panel.message.value


@pytest.mark.needs_root
def test_capture_viewer_pcap_opens_in_tshark(pair: LabSession, tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (scripts/setup.sh installs it)")
    viewer = CaptureViewer(pair, node="b", iface="eth1")
    viewer.capture(count=500, seconds=30).ready(30)
    traffic = TrafficPanel(pair)
    traffic.run(src="a", dst="b", size=1400, duration=1).wait(60)
    viewer.stop()
    viewer.wait(30)
    tcp = [s for s in viewer.summaries() if "TCP" in s and "198.19.0.1" in s]
    assert tcp, viewer.summaries()[:5]
    viewer._picked({"new": 0})
    assert "###[ Ethernet ]###" in viewer.detail.value
    path = viewer.save(str(tmp_path / "c.pcap"))
    out = subprocess.run(["tshark", "-r", path, "-Y", "tcp", "-T", "fields", "-e",
                          "ip.src"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "198.19.0.1" in out.stdout.split()
    total = subprocess.run(["tshark", "-r", path], capture_output=True, text=True, timeout=120)
    assert len(total.stdout.splitlines()) == len(viewer.frames)
    assert "download=" in viewer.download.value


@pytest.mark.needs_root
def test_traffic_over_time_and_counters(pair: LabSession) -> None:
    counters = CountersPanel(pair)
    counters.refresh().wait(30)
    before = counters.last["nodes"]["b"]["interfaces"]["eth1"]["rx_bytes"]
    traffic = TrafficPanel(pair, counters=counters)
    traffic.run(src="a", dst="b", duration=2).wait(60)
    counters.wait(30)
    run = traffic.runs[-1]
    assert len(run.samples) >= 3
    assert sum(s.bytes for s in run.samples) == run.throughput.bytes
    counters.refresh().wait(30)
    after = counters.last["nodes"]["b"]["interfaces"]["eth1"]["rx_bytes"]
    assert after - before >= run.throughput.bytes  # the kernel counted at least that much
    assert bytes(traffic.chart.value).startswith(PNG)


@pytest.mark.needs_root
def test_traffic_stops_early_when_asked(pair: LabSession) -> None:
    traffic = TrafficPanel(pair)
    traffic.run(src="a", dst="b", duration=30)
    from labkit.base.wait import wait_until

    wait_until(lambda: traffic.progress.value > 0, 60, "the first sample")
    traffic.stop()
    traffic.wait(60)
    run = traffic.runs[-1]
    assert run.stopped and run.throughput.bytes > 0
    assert run.samples[-1].t < 25


@pytest.mark.needs_root
def test_declared_checks_and_a_verification_error(pair: LabSession) -> None:
    checks = VerifyButton(pair)
    checks.run().wait(120)
    assert checks.passed and "2 passed, 0 failed" in checks.message.value
    tipc = VerifyButton(pair, "crossover", "tipc", src="a", dst="b")
    tipc.run()
    with pytest.raises(UsageError, match="no tipc"):
        tipc.wait(30)
    assert not tipc.passed
