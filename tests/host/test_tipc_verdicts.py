"""The TIPC verdict logic fails when the wire says so (the kernel tier checks real runs)."""

from __future__ import annotations

from labkit.features.tipc.verify import judge_crossover, tipc_payload

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


def test_tipc_payload_finds_ethernet_and_udp_bearers() -> None:
    eth = bytes(12) + b"\x88\xca" + b"\x40" + bytes(40)
    assert tipc_payload(eth)[0] >> 5 == 2
    ip = bytes([0x45]) + bytes(8) + bytes([17]) + bytes(10)  # IPv4, proto UDP, ihl 5
    udp = (6118).to_bytes(2, "big") * 2 + bytes(4) + b"\xe0" + bytes(30)
    frame = bytes(12) + b"\x08\x00" + ip + udp
    assert tipc_payload(frame)[0] >> 5 == 7
    assert tipc_payload(bytes(12) + b"\x08\x06" + bytes(28)) is None
    assert tipc_payload(b"\x00\x01") is None
