"""TIPC verifications in a running lab: did user data take the crossover, is the wire
encrypted?

Both capture with AF_PACKET sockets opened inside the nodes *before* any traffic is sent,
send messages that carry a unique marker, and hand what the wire and the link counters
showed to the pure judges in verdicts.py. Every wait is on a condition with a deadline
(the receiver's binding in the sender's name table, the clones on lo), and everything is
bounded: a fixed number of messages and seconds.

In a lab whose nodes share one kernel, TIPC user data never reaches a bearer (crossover),
so the encryption check can only judge link traffic and broadcast-mode multicast; it says
so. With nodes in two kernels the same check also sees unicast user data.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
from typing import TYPE_CHECKING, Any

from labkit.base.wait import poll
from labkit.features.tipc.client import TipcNetlink
from labkit.features.tipc.config import TipcConfig
from labkit.features.tipc.uapi import MAX_MESSAGE, TIPC_MCAST_BROADCAST
from labkit.features.tipc.verdicts import (
    SAME_KERNEL_SCOPE,
    judge_crossover,
    judge_encryption,
    wire_evidence,
)
from labkit.packets.tap import Tap
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

UNICAST_SERVICE = 18889  # service type the marked unicast messages go to
BROADCAST_SERVICE = 18890  # service type of the broadcast-mode multicast
BINDING_TIMEOUT = 20.0  # s until a receiver's binding must be in the sender's name table
CLONE_WINDOW = 3.0  # s the crossover check waits for every message's clone on lo
MIN_FRAMES_PER_BEARER = 10  # the encryption capture ends early once every bearer had these
MAX_TAP_FRAMES = 100_000  # a tap stops recording here, even under a flood


def _tapped(stack: contextlib.ExitStack, lab: Lab, node: str, iface: str) -> Tap:
    """A running tap that the stack finishes, whatever happens in between."""
    t = Tap(lab.node(node).ns, iface, max_frames=MAX_TAP_FRAMES, label=f"{node}:{iface}")
    stack.callback(t.finish)
    return t


def _bearer_ifaces(cfg: TipcConfig, node: str) -> list[str]:
    return sorted({b.dev for b in cfg.nodes[node].bearers})


def link_tx(lab: Lab, node: str) -> int:
    with TipcNetlink(lab.node(node).ns) as nl:
        return sum(link["tx_packets"] for link in nl.links() if not link["broadcast"])


def bound_nodes(lab: Lab, node: str, service: int, instance: int | None = None) -> set[int]:
    """Addresses of the nodes whose binding of the service is in node's name table."""
    with TipcNetlink(lab.node(node).ns) as nl:
        return {p["node"] for p in nl.name_table() if p["type"] == service and (
            instance is None or p["lower"] <= instance <= p["upper"])}


def send_marked(lab: Lab, src: str, dst: str, marker: bytes, count: int = 20,
                size: int = 1000, timeout: float = 20.0) -> int:
    """Send `count` RDM messages carrying the marker from src to a service bound in dst;
    return how many dst received. Sending starts once the binding is in src's name table
    (never blindly); 0 if it never got there."""
    if not 0 < size <= MAX_MESSAGE:
        raise ValueError(f"size {size} is not 1..{MAX_MESSAGE}")
    instance = secrets.randbelow(1 << 30)
    rx = lab.node(dst).socket(socket.AF_TIPC, socket.SOCK_RDM)
    tx = lab.node(src).socket(socket.AF_TIPC, socket.SOCK_RDM)
    try:
        rx.bind((socket.TIPC_ADDR_NAMESEQ, UNICAST_SERVICE, instance, instance))
        if not poll(lambda: bound_nodes(lab, src, UNICAST_SERVICE, instance),
                    BINDING_TIMEOUT, interval=0.1):
            return 0
        rx.settimeout(timeout)
        addr = (socket.TIPC_ADDR_NAME, UNICAST_SERVICE, instance, 0)
        payload = (marker * (size // len(marker) + 1))[:size]
        sent = 0
        for _ in range(count):
            with contextlib.suppress(OSError):  # counted: fewer arrive, the verdict says so
                tx.sendto(payload, addr)
                sent += 1
        got = 0
        while got < sent:
            try:
                got += marker in rx.recv(MAX_MESSAGE)
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
    service = (socket.TIPC_ADDR_NAMESEQ, BROADCAST_SERVICE, 0, 0)
    rxs = []
    try:
        for peer in sorted(peers):
            rx = lab.node(peer).socket(socket.AF_TIPC, socket.SOCK_RDM)
            rx.bind(service)
            rx.setblocking(False)
            rxs.append(rx)
        if not poll(lambda: len(bound_nodes(lab, src, BROADCAST_SERVICE)) >= len(rxs),
                    BINDING_TIMEOUT, interval=0.1):
            return 0
        got = 0
        with lab.node(src).socket(socket.AF_TIPC, socket.SOCK_RDM) as tx:
            tx.setsockopt(socket.SOL_TIPC, TIPC_MCAST_BROADCAST, None, 0)
            for _ in range(count):
                with contextlib.suppress(OSError):  # counted by the receivers
                    tx.sendto(marker * 8, service)

            def all_arrived() -> bool:
                nonlocal got
                ready, _, _ = select.select(rxs, [], [], 0)
                for rx in ready:
                    with contextlib.suppress(BlockingIOError):
                        got += marker in rx.recv(MAX_MESSAGE)
                return got >= count * len(rxs)

            poll(all_arrived, timeout, interval=0.05)
        return got
    finally:
        for rx in rxs:
            rx.close()


def crossover(lab: Lab, cfg: TipcConfig, src: str, dst: str, count: int = 20) -> Verdict:
    name = f"tipc crossover {src} -> {dst}"
    for n in (src, dst):
        if n not in cfg.nodes:
            return Verdict(name, "error", f"node {n} is not a TIPC node of lab {lab.name}.")
    if lab.host_of(src).name != lab.host_of(dst).name:
        return Verdict(name, "fail", f"{src} and {dst} run in different kernels "
                       f"({lab.host_of(src).name}, {lab.host_of(dst).name}): the crossover "
                       "joins sockets of namespaces of one kernel, so no crossover is "
                       "possible here; their user data crosses the bearers (see `labkit "
                       "verify encryption`).",
                       {"src_kernel": lab.host_of(src).name,
                        "dst_kernel": lab.host_of(dst).name})
    marker = b"LKX" + secrets.token_hex(8).encode()
    with contextlib.ExitStack() as stack:
        taps = [_tapped(stack, lab, src, i) for i in _bearer_ifaces(cfg, src)]
        taps += [_tapped(stack, lab, dst, i) for i in _bearer_ifaces(cfg, dst)]
        lo = _tapped(stack, lab, dst, "lo")
        tx_before = link_tx(lab, src)
        delivered = send_marked(lab, src, dst, marker, count)
        poll(lambda: lo.count(marker) >= delivered, CLONE_WINDOW)
        tx_after = link_tx(lab, src)
    evidence: dict[str, Any] = {
        "messages_sent": count, "messages_delivered": delivered,
        "marker_frames_on_receiver_lo": lo.count(marker),
        "marker_frames_on_bearers": {t.label: t.count(marker) for t in taps},
        "link_tx_packets_delta": tx_after - tx_before,
    }
    return judge_crossover(name, dst, evidence)


def across_kernels(lab: Lab, cfg: TipcConfig) -> list[tuple[str, str]]:
    """Expected links whose ends run in different kernels, as (node, peer)."""
    return [(a, b) for a, _, b, _ in cfg.expected_links
            if lab.host_of(a).name != lab.host_of(b).name]


def encryption(lab: Lab, cfg: TipcConfig, seconds: float = 3.0) -> Verdict:
    """Capture on every bearer for at most `seconds` (less once every bearer carried
    MIN_FRAMES_PER_BEARER frames) while marked unicast and broadcast messages are sent.

    In a lab spanning kernels, unicast user data crosses the link between them: that is
    what is judged there (encryption_across)."""
    if across_kernels(lab, cfg):
        return encryption_across(lab, cfg, seconds)
    name = "tipc encryption on the bearers"
    marker = b"LKE" + secrets.token_hex(8).encode()
    delivered = broadcast = 0
    with contextlib.ExitStack() as stack:
        taps = [_tapped(stack, lab, n, i) for n in cfg.nodes for i in _bearer_ifaces(cfg, n)]
        if cfg.expected_links:
            a, _, b, _ = cfg.expected_links[0]
            delivered = send_marked(lab, a, b, marker, count=10)
            broadcast = send_broadcast_marked(lab, cfg, a, marker)
        poll(lambda: all(len(t.frames) >= MIN_FRAMES_PER_BEARER for t in taps),
             max(0.0, seconds))
    evidence = wire_evidence([f for t in taps for f in t.frames], marker)
    evidence.update({"marker_messages_delivered": delivered,
                     "broadcast_marker_messages_delivered": broadcast,
                     "interfaces": [t.label for t in taps],
                     "keys_configured": cfg.encryption is not None})
    return judge_encryption(name, evidence, SAME_KERNEL_SCOPE.format(broadcast=broadcast))


def encryption_across(lab: Lab, cfg: TipcConfig, seconds: float = 3.0,
                      count: int = 20) -> Verdict:
    """Unicast user data with a marker over a link between two kernels, captured on both
    ends' bearers. Everything runs as processes in the nodes (wherever they run): the
    capture, a TIPC receiver and a TIPC sender, all standard library, all bounded."""
    import json
    import sys

    from labkit.base.helper import Helper, HelperFailed, start
    from labkit.features.tipc.verdicts import CROSS_KERNEL_SCOPE
    from labkit.packets.capture import read_pcap

    a, b = across_kernels(lab, cfg)[0]
    name = f"tipc encryption of user data between kernels ({a} -> {b})"
    marker = b"LKE" + secrets.token_hex(8).encode()
    instance = 20000 + secrets.randbelow(10000)
    helpers: list[tuple[str, Helper]] = []
    with contextlib.ExitStack() as stack:
        try:
            for node in (a, b):
                for iface in _bearer_ifaces(cfg, node):
                    where = f"{node}:{iface}"
                    helpers.append((where, stack.enter_context(start(
                        lab.node(node),
                        [sys.executable, "-m", "labkit.packets.capture", iface, "--count",
                         str(MAX_TAP_FRAMES), "--duration", str(seconds + 120)],
                        what=f"the capture on {where}", on="stderr", timeout=START_TIMEOUT))))
            agent = [sys.executable, "-m", "labkit.traffic.agent"]
            common = ["--proto", "tipc", "--endpoint", "labkit.features.tipc.endpoint",
                      "--socket", "rdm", "--port", str(instance), "--marker", marker.hex()]
            server = stack.enter_context(start(
                lab.node(b), [*agent, "serve", *common, "--timeout",
                              str(START_TIMEOUT + seconds + 30)],
                what=f"the TIPC receiver on {b}", timeout=START_TIMEOUT))
        except HelperFailed as exc:
            return Verdict(name, "error", exc.message)
        sent = lab.node(a).run([*agent, "send", *common, "--size", "1000",
                                "--max-messages", str(count), "--duration", str(seconds)],
                               timeout=START_TIMEOUT + seconds + 60)
        got: dict[str, Any] = {}
        with contextlib.suppress(ValueError, IndexError):
            out, _ = server.finish(timeout=START_TIMEOUT + seconds + 60)
            got = json.loads((server.early + out.decode()).strip().splitlines()[-1])
        frames: list[bytes] = []
        for _where, capture in helpers:
            capture.proc.terminate()  # ends the capture; every frame is already flushed
            raw, _ = capture.finish(timeout=60)
            frames += [f for _, f in read_pcap(raw)]
    evidence = wire_evidence(frames, marker)
    evidence.update({
        "marker_messages_sent": count if sent.returncode == 0 else 0,
        "marker_messages_delivered": got.get("messages", 0),
        "receiver_saw_marker": bool(got.get("marker_seen")),
        "interfaces": [w for w, _ in helpers], "link": f"{a} -> {b}",
        "keys_configured": cfg.encryption is not None,
    })
    if not got.get("messages"):
        return Verdict(name, "error", f"no marked message reached {b}, so the path could "
                       "not be judged.", evidence)
    return judge_encryption(name, evidence, CROSS_KERNEL_SCOPE.format(a=a, b=b))


START_TIMEOUT = 120.0  # s for a process to start in a node (an emulated VM is slow)
