"""TIPC verifications: did user data take the crossover, and is the wire encrypted?

Both capture with AF_PACKET sockets opened inside the nodes *before* any traffic is sent,
send messages that carry a unique marker, and decide from what the wire and the link
counters show. Everything is bounded: a fixed number of messages and seconds.

In a lab whose nodes share one kernel, TIPC user data never reaches a bearer (crossover),
so the encryption check can only judge link traffic (LINK_PROTOCOL, LINK_CONFIG); it says
so. With nodes in two kernels the same check also sees user data, which must then be
TIPCv7 too: the design takes any bearer interfaces, wherever the nodes run.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labkit.features.tipc.config import TipcConfig
from labkit.features.tipc.netlink import TipcNetlink
from labkit.packets.capture import PACKET_OUTGOING, open_socket
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

AF_TIPC = socket.AF_TIPC
SOL_TIPC = socket.SOL_TIPC
TIPC_MCAST_BROADCAST = 133  # not in CPython's socket module
SERVICE_TYPE = 18889
ETH_P_TIPC = 0x88CA
UDP_PORT = 6118


@dataclass
class Tap:
    """A capture running in a thread: node, interface, frames seen."""

    node: str
    iface: str
    sock: socket.socket
    frames: list[tuple[bytes, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Tap:
        def loop() -> None:
            while not self.stop.is_set():
                ready, _, _ = select.select([self.sock], [], [], 0.05)
                if ready:
                    data, addr = self.sock.recvfrom(65535)
                    self.frames.append((data, addr[2] == PACKET_OUTGOING))
                    if len(self.frames) > 100_000:  # bounded even under a flood
                        break

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def finish(self) -> list[tuple[bytes, bool]]:
        self.stop.set()
        if self.thread:
            self.thread.join(2)
        self.sock.close()
        return self.frames


def tap(lab: Lab, node: str, iface: str) -> Tap:
    return Tap(node, iface, open_socket(lab.node(node).ns, iface)).start()


def _tapped(stack: contextlib.ExitStack, lab: Lab, node: str, iface: str) -> Tap:
    """A running tap that the stack finishes, whatever happens in between."""
    t = tap(lab, node, iface)
    stack.callback(t.finish)
    return t


def tipc_payload(frame: bytes) -> bytes | None:
    """The TIPC message inside an Ethernet frame (ethertype 0x88CA or UDP port 6118)."""
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETH_P_TIPC:
        return frame[14:]
    if ethertype == 0x0800 and len(frame) >= 34 and frame[23] == 17:
        ihl = (frame[14] & 0x0F) * 4
        udp = frame[14 + ihl:]
    elif ethertype == 0x86DD and len(frame) >= 62 and frame[20] == 17:
        udp = frame[54:]
    else:
        return None
    if len(udp) >= 8 and UDP_PORT in (int.from_bytes(udp[0:2], "big"),
                                      int.from_bytes(udp[2:4], "big")):
        return udp[8:]
    return None


def link_tx(lab: Lab, node: str) -> int:
    with TipcNetlink(lab.node(node).ns) as nl:
        return sum(link["tx_packets"] for link in nl.links() if not link["broadcast"])


def send_marked(lab: Lab, src: str, dst: str, marker: bytes, count: int = 20,
                size: int = 1000, timeout: float = 20.0) -> int:
    """Send `count` RDM messages carrying the marker from src to a service in dst;
    return how many dst received (bounded by timeout)."""
    instance = secrets.randbelow(1 << 30)
    rx = lab.node(dst).socket(AF_TIPC, socket.SOCK_RDM)
    tx = lab.node(src).socket(AF_TIPC, socket.SOCK_RDM)
    try:
        rx.bind((socket.TIPC_ADDR_NAMESEQ, SERVICE_TYPE, instance, instance))
        rx.settimeout(timeout)
        addr = (socket.TIPC_ADDR_NAME, SERVICE_TYPE, instance, 0)
        payload = (marker * (size // len(marker) + 1))[:size]
        deadline = time.monotonic() + timeout
        sent = 0
        while sent < count:
            try:
                tx.sendto(payload, addr)
                sent += 1
            except OSError:  # the binding has not reached src's name table yet
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        got = 0
        while got < sent:
            try:
                if marker in rx.recv(70000):
                    got += 1
            except TimeoutError:
                break
        return got
    finally:
        rx.close()
        tx.close()


def send_broadcast_marked(lab: Lab, cfg: TipcConfig, src: str, marker: bytes,
                          count: int = 10, timeout: float = 10.0) -> int:
    """Broadcast-mode multicast from src to every linked TIPC node; returns how many
    messages the receivers got. Unlike unicast, this user data does cross the bearers
    even between namespaces of one kernel (seen on debian-6.12), so it is what an
    encryption check can look for on the wire."""
    peers = {b for a, _, b, _ in cfg.expected_links if a == src} | \
        {a for a, _, b, _ in cfg.expected_links if b == src}
    rxs = []
    try:
        for peer in sorted(peers):
            rx = lab.node(peer).socket(AF_TIPC, socket.SOCK_RDM)
            rx.bind((socket.TIPC_ADDR_NAMESEQ, SERVICE_TYPE + 1, 0, 0))
            rx.setblocking(False)
            rxs.append(rx)
        tx = lab.node(src).socket(AF_TIPC, socket.SOCK_RDM)
        tx.setsockopt(SOL_TIPC, TIPC_MCAST_BROADCAST, None, 0)
        deadline = time.monotonic() + timeout
        got = 0
        with tx:
            time.sleep(0.5)  # let the bindings reach src's name table
            for _ in range(count):
                try:
                    tx.sendto(marker * 8, (socket.TIPC_ADDR_NAMESEQ, SERVICE_TYPE + 1, 0, 0))
                except OSError:
                    time.sleep(0.1)
            while got < count * len(rxs) and time.monotonic() < deadline:
                ready, _, _ = select.select(rxs, [], [], 0.2)
                for rx in ready:
                    with contextlib.suppress(BlockingIOError):
                        got += marker in rx.recv(70000)
        return got
    finally:
        for rx in rxs:
            rx.close()


def _bearer_ifaces(cfg: TipcConfig, node: str) -> list[str]:
    return sorted({b.dev for b in cfg.nodes[node].bearers})


def crossover(lab: Lab, cfg: TipcConfig, src: str, dst: str, count: int = 20) -> Verdict:
    name = f"tipc crossover {src} -> {dst}"
    for n in (src, dst):
        if n not in cfg.nodes:
            return Verdict(name, "error", f"node {n} is not a TIPC node of lab {lab.name}.")
    marker = b"LKX" + secrets.token_hex(8).encode()
    with contextlib.ExitStack() as stack:
        taps = [_tapped(stack, lab, src, i) for i in _bearer_ifaces(cfg, src)]
        taps += [_tapped(stack, lab, dst, i) for i in _bearer_ifaces(cfg, dst)]
        lo = _tapped(stack, lab, dst, "lo")
        time.sleep(0.1)
        tx_before = link_tx(lab, src)
        delivered = send_marked(lab, src, dst, marker, count)
        time.sleep(0.3)
        tx_after = link_tx(lab, src)
    on_lo = sum(marker in f for f, _ in lo.frames)
    on_bearers = {f"{t.node}:{t.iface}": sum(marker in f for f, _ in t.frames) for t in taps}
    evidence: dict[str, Any] = {
        "messages_sent": count, "messages_delivered": delivered,
        "marker_frames_on_receiver_lo": on_lo, "marker_frames_on_bearers": on_bearers,
        "link_tx_packets_delta": tx_after - tx_before,
    }
    return judge_crossover(name, dst, evidence)


def judge_crossover(name: str, dst: str, evidence: dict[str, Any]) -> Verdict:
    """The verdict from what was seen; pure, so its failure modes can be tested anywhere."""
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


def encryption(lab: Lab, cfg: TipcConfig, seconds: float = 3.0) -> Verdict:
    name = "tipc encryption on the bearers"
    marker = b"LKE" + secrets.token_hex(8).encode()
    delivered = broadcast = 0
    with contextlib.ExitStack() as stack:
        taps = [_tapped(stack, lab, n, i) for n in cfg.nodes for i in _bearer_ifaces(cfg, n)]
        if cfg.expected_links:
            a, _, b, _ = cfg.expected_links[0]
            delivered = send_marked(lab, a, b, marker, count=10)
            broadcast = send_broadcast_marked(lab, cfg, a, marker)
        time.sleep(max(0.0, seconds))
    versions: dict[int, int] = {}
    users: dict[int, int] = {}
    marker_seen = 0
    for t in taps:
        for frame, _ in t.frames:
            marker_seen += marker in frame
            msg = tipc_payload(frame)
            if not msg:
                continue
            version = msg[0] >> 5
            versions[version] = versions.get(version, 0) + 1
            users[(msg[0] >> 1) & 0x0F] = users.get((msg[0] >> 1) & 0x0F, 0) + 1
    total = sum(versions.values())
    evidence = {"tipc_frames": total, "versions": versions, "users_v2": users,
                "marker_frames": marker_seen, "marker_messages_delivered": delivered,
                "broadcast_marker_messages_delivered": broadcast,
                "interfaces": [f"{t.node}:{t.iface}" for t in taps],
                "keys_configured": cfg.encryption is not None}
    scope = ("In one kernel, unicast TIPC user data takes the crossover and never reaches a "
             "bearer; only link traffic (LINK_PROTOCOL/LINK_CONFIG, name distribution) and "
             f"broadcast-mode multicast data ({broadcast} marked messages delivered) crossed "
             "the bearers. Unicast user data on the wire needs nodes in two kernels.")
    if total == 0:
        return Verdict(name, "error", f"no TIPC frames on the bearers in {seconds:g} s; "
                       "nothing to judge.", evidence)
    if marker_seen:
        return Verdict(name, "fail", f"the marker appeared in clear in {marker_seen} frames.",
                       evidence)
    plain = versions.get(2, 0)
    if plain or set(versions) != {7}:
        return Verdict(name, "fail", f"{plain} of {total} TIPC frames on the bearers are "
                       "version 2 (plaintext), not TIPCv7. " + scope, evidence)
    return Verdict(name, "pass", f"all {total} TIPC frames on the bearers are TIPCv7 "
                   f"(encrypted) and the marker never appeared in clear. " + scope, evidence)
