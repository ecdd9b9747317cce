"""The TIPC verdicts fail when the evidence says so: crossover from recorded counts,
encryption from frames a real 6.12 kernel put on the wire (tests/fixtures/tipc); the
kernel tier runs the same judges on live labs."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from labkit.features.tipc.verdicts import (
    SAME_KERNEL_SCOPE,
    judge_crossover,
    judge_encryption,
    wire_evidence,
)

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


# -- encryption: the verdict on frames captured from a real kernel ---------------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tipc"


@functools.cache
def captured(name: str) -> tuple[bytes, ...]:
    return tuple(bytes(f) for f in rdpcap(str(FIXTURES / f"{name}.pcap")))


def judged(frames: list[bytes] | tuple[bytes, ...], marker: bytes = b"LKE-not-there"):
    return judge_encryption("enc", wire_evidence(list(frames), marker))


@pytest.mark.parametrize("name", ["v7_master_key", "v7_cluster_key"])
def test_all_v7_passes(name: str) -> None:
    v = judged(captured(name))
    assert v.outcome == "pass", v.detail
    ev = v.evidence
    assert ev["versions"] == {7: ev["tipc_frames"]} and ev["tipc_frames"] == len(captured(name))
    assert set(ev["users_by_version"]) == {7}
    assert sum(ev["users_by_version"][7].values()) == ev["tipc_frames"]


def test_udp_bearer_frames_are_judged_too() -> None:
    v = judged(captured("udp_bearer"))
    assert v.outcome == "fail" and v.evidence["tipc_frames"] > 0
    assert set(v.evidence["versions"]) == {2}


@pytest.mark.parametrize("name", ["v2_eth_cluster", "v2_bcast_data"])
def test_v2_fails(name: str) -> None:
    v = judged(captured(name))
    assert v.outcome == "fail" and "plaintext" in v.detail, v.detail
    assert v.evidence["versions"].get(2) == v.evidence["tipc_frames"]
    assert "LINK_PROTOCOL" in v.evidence["users_by_version"][2]


def test_one_plaintext_frame_among_encrypted_ones_fails() -> None:
    mixed = list(captured("v7_master_key")) + [captured("v2_eth_cluster")[0]]
    v = judged(mixed)
    assert v.outcome == "fail", v.detail
    assert v.evidence["versions"] == {7: len(mixed) - 1, 2: 1}
    assert v.detail.startswith("1 of ")


def test_marker_in_clear_fails_even_when_every_frame_is_v7() -> None:
    frames = captured("v7_master_key")
    marker = frames[5][40:56]  # bytes that really are on the wire
    v = judged(frames, marker)
    assert v.evidence["versions"] == {7: len(frames)}
    assert v.outcome == "fail" and "marker appeared in clear" in v.detail
    # the user data of v2_bcast_data carries its marker in clear
    v = judged(captured("v2_bcast_data"), b"SMALLMARK")
    assert v.outcome == "fail" and v.evidence["marker_frames"] >= 20


def test_no_tipc_frames_means_could_not_run() -> None:
    assert judged([]).outcome == "error"
    not_tipc = bytes(Ether(src="02:00:00:00:00:01") / ARP())
    v = judged([not_tipc] * 5)
    assert v.outcome == "error" and v.evidence["tipc_frames"] == 0


def test_scope_text_is_added() -> None:
    v = judge_encryption("enc", wire_evidence(list(captured("v7_cluster_key")), b"zz"),
                         SAME_KERNEL_SCOPE.format(broadcast=7))
    assert v.outcome == "pass" and "7 marked messages delivered" in v.detail
