"""The traffic meters start their servers through labkit.base.helper: a run measures, a
server that cannot start is reported with its own error, and no agent is left in the
nodes afterwards either way."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from labkit.base import netns
from labkit.errors import LabkitError
from labkit.lab.lab import Lab
from labkit.traffic import meter, timeline
from tests.conftest import ROOT

PAIR = ROOT / "topologies" / "pair.yaml"


def agents_in(lab: Lab) -> list[int]:
    """Processes still running in the lab's nodes (a meter leaves none)."""
    inodes = {netns.inode(lab.node(n).ns) for n in ("a", "b")}
    return netns.pids_in({i for i in inodes if i is not None})


def test_meter_measures_and_leaves_nothing(lab_up: Callable[..., Lab]) -> None:
    lab = lab_up(PAIR)
    got = meter.measure(lab, "a", "b", duration=0.5, port=5301)
    assert got.bytes > 0 and got.sent_bytes >= got.bytes
    assert agents_in(lab) == []


def test_meter_reports_a_server_that_cannot_start(lab_up: Callable[..., Lab]) -> None:
    lab = lab_up(PAIR)
    address = lab.node("b").addresses(4)[0]
    with lab.node("b").socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((address, 5302))
        taken.listen(1)
        with pytest.raises(LabkitError) as exc:
            meter.measure(lab, "a", "b", duration=0.5, port=5302)
    assert exc.value.message.startswith("the traffic server on b did not start: ")
    assert "Address already in use" in exc.value.message
    assert "Traceback" not in exc.value.message
    assert agents_in(lab) == []
    # positive control: the same port measures once it is free
    assert meter.measure(lab, "a", "b", duration=0.5, port=5302).bytes > 0


def test_timeline_samples_and_leaves_nothing(lab_up: Callable[..., Lab]) -> None:
    lab = lab_up(PAIR)
    seen: list[timeline.Sample] = []
    got = timeline.measure_over_time(lab, "a", "b", duration=1.0, interval=0.25,
                                     on_sample=seen.append)
    assert seen and got.samples == seen
    assert got.throughput.bytes > 0
    assert agents_in(lab) == []
