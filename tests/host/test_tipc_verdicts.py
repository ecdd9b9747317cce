"""The TIPC verdict logic fails when the wire says so (the kernel tier checks real runs)."""

from __future__ import annotations

from labkit.features.tipc.verdicts import judge_crossover

GOOD = {"messages_sent": 20, "messages_delivered": 20, "marker_frames_on_receiver_lo": 20,
        "marker_frames_on_bearers": {"n1:eth1": 0, "n2:eth1": 0}, "link_tx_packets_delta": 1}


def test_crossover_passes_on_clean_evidence() -> None:
    assert judge_crossover("x", "n2", dict(GOOD)).outcome == "pass"


def test_crossover_fails_when_marker_on_a_bearer() -> None:
    v = judge_crossover("x", "n2", {**GOOD, "marker_frames_on_bearers": {"n1:eth1": 3}})
    assert v.outcome == "fail" and "on a bearer" in v.detail


def test_crossover_fails_without_lo_clone_or_with_link_growth() -> None:
    assert judge_crossover("x", "n2", {**GOOD, "marker_frames_on_receiver_lo": 0}).outcome \
        == "fail"
    assert judge_crossover("x", "n2", {**GOOD, "link_tx_packets_delta": 25}).outcome == "fail"


def test_crossover_cannot_judge_lost_messages() -> None:
    assert judge_crossover("x", "n2", {**GOOD, "messages_delivered": 3}).outcome == "error"
