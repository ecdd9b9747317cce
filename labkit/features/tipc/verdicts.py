"""TIPC verdicts from recorded evidence: pure functions, so every outcome is testable anywhere.

verify.py gathers the evidence in a lab (captures, counters, delivered messages); the
functions here decide pass, fail or could-not-run from it, and host tests feed them
frames from the fixture captures.
"""

from __future__ import annotations

from typing import Any

from scapy.layers.l2 import Ether

from labkit.features.tipc.layers import TIPC, USERS, TIPCv7
from labkit.features.tipc.uapi import TIPC_EVERSION, TIPC_VERSION
from labkit.verify.verdict import Verdict

SAME_KERNEL_SCOPE = (
    "In one kernel, unicast TIPC user data takes the crossover and never reaches a "
    "bearer; only link traffic (LINK_PROTOCOL/LINK_CONFIG, name distribution) and "
    "broadcast-mode multicast data ({broadcast} marked messages delivered) crossed the "
    "bearers. Unicast user data on the wire needs nodes in two kernels."
)


CROSS_KERNEL_SCOPE = (
    "{a} and {b} run in different kernels, so their unicast user data crossed the bearer "
    "between them (no crossover between kernels): the marked messages were on the wire."
)


def judge_crossover(name: str, dst: str, evidence: dict[str, Any]) -> Verdict:
    """Did user data go socket to socket? From delivered counts, lo clones, bearer frames
    and link counters."""
    count, delivered = evidence["messages_sent"], evidence["messages_delivered"]
    on_lo, on_bearers = evidence["marker_frames_on_receiver_lo"], \
        evidence["marker_frames_on_bearers"]
    grew = evidence["link_tx_packets_delta"]
    if delivered < count:
        return Verdict(name, "error", f"only {delivered} of {count} messages arrived, so "
                       "the path could not be judged.", evidence)
    problems = []
    if on_lo == 0:
        problems.append(f"the marker never appeared on {dst}'s lo")
    if any(on_bearers.values()):
        problems.append(f"the marker was on a bearer ({on_bearers})")
    if grew >= count // 2:
        problems.append(f"link TX grew by {grew} packets with the data")
    if problems:
        return Verdict(name, "fail", "user data took the link, not the crossover: "
                       + "; ".join(problems) + ".", evidence)
    return Verdict(name, "pass",
                   f"{count} messages took the crossover: the marker was cloned to {dst}'s lo "
                   f"{on_lo} times, never seen on a bearer ({', '.join(on_bearers)}), and link "
                   f"TX grew by {grew} packets (link upkeep only).", evidence)


def wire_evidence(frames: list[bytes], marker: bytes) -> dict[str, Any]:
    """What the captured bearer frames show: TIPC frames by version, TIPC users by version
    (v7's user field only says LINK_CONFIG, LINK_PROTOCOL or other), and how many frames
    carry the marker in clear (TIPC or not)."""
    versions: dict[int, int] = {}
    users: dict[int, dict[str, int]] = {}
    marker_frames = 0
    for raw in frames:
        marker_frames += marker in raw
        pkt = Ether(raw)
        layer = pkt.getlayer(TIPC) or pkt.getlayer(TIPCv7)
        if layer is None or layer.version is None:
            continue
        version = int(layer.version)
        versions[version] = versions.get(version, 0) + 1
        user = USERS.get(int(layer.user or 0), str(layer.user))
        by_user = users.setdefault(version, {})
        by_user[user] = by_user.get(user, 0) + 1
    return {"tipc_frames": sum(versions.values()), "versions": versions,
            "users_by_version": users, "marker_frames": marker_frames}


def judge_encryption(name: str, evidence: dict[str, Any], scope: str = "") -> Verdict:
    """Pass only when TIPC frames crossed the bearers, every one of them is TIPCv7, and
    the marker never appeared in clear; no TIPC frame at all means nothing was judged."""
    total, versions = evidence["tipc_frames"], evidence["versions"]
    marker_seen = evidence["marker_frames"]
    tail = f" {scope}" if scope else ""
    if total == 0:
        return Verdict(name, "error", "no TIPC frames crossed the bearers while capturing; "
                       "nothing to judge.", evidence)
    if marker_seen:
        return Verdict(name, "fail", f"the marker appeared in clear in {marker_seen} frames."
                       + tail, evidence)
    plain = versions.get(TIPC_VERSION, 0)
    others = sorted(v for v in versions if v not in (TIPC_VERSION, TIPC_EVERSION))
    if plain or others:
        what = f"{plain} of {total} TIPC frames on the bearers are version {TIPC_VERSION} " \
               "(plaintext), not encrypted"
        if others:
            what += f"; versions {others} are neither"
        return Verdict(name, "fail", what + "." + tail, evidence)
    return Verdict(name, "pass", f"all {total} TIPC frames on the bearers are version "
                   f"{TIPC_EVERSION} (encrypted) and the marker never appeared in clear."
                   + tail, evidence)
