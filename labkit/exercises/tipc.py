"""TIPC exercise checks: bearers, links and keys, read with iproute2's `tipc` and tcpdump
inside the nodes and judged here.

The kernel never gives a TIPC key back, so "a key is installed on a node" is judged by what
the node sends: with a key, every TIPC frame it transmits is version 7 (encrypted), and the
v7 header names the key slot it was sent under (TX key, w0 bits 23:22), which changes when
a new key takes over. Each node's outgoing frames are captured on its own bearer devices
(`tcpdump -Q out`), so a node that has no key is named, whatever its peers do.
"""

from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from labkit.exercises.checks import CannotCheck, node_cmd
from labkit.exercises.result import CheckResult, judged, unknown

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

UDP_PORT = 6118  # TIPC's UDP bearer port (iproute2's default)
CAPTURE_SECONDS = 8  # tcpdump starts slowly in a loaded TCG VM
MAX_FRAMES = 40


def _cfg(lab: Lab) -> Any:
    cfg = lab.topo.features.get("tipc")
    if cfg is None:
        raise CannotCheck(f"lab '{lab.name}' has no TIPC (no `tipc:` in its topology)")
    return cfg


def check_bearer(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, bearer, want = p["node"], p["bearer"], p.get("state", "enabled")
    out = node_cmd(lab, node, ["tipc", "bearer", "list"]).stdout
    bearers = [b.strip() for b in out.splitlines() if b.strip()]
    enabled = bearer in bearers
    saw = f"{node}'s bearers: {', '.join(bearers) or 'none'}"
    return judged(name, enabled == (want == "enabled"), saw,
                  f"bearer {bearer} {want} in {node}", {"bearers": bearers})


def parse_links(text: str) -> dict[str, bool]:
    """`tipc link list`: `NAME: up|down` lines, the broadcast link left out."""
    out = {}
    for line in text.splitlines():
        name, _, state = line.strip().rpartition(": ")
        if name and name != "broadcast-link":
            out[name] = state.strip() == "up"
    return out


def parse_link_stats(text: str) -> dict[str, int]:
    """`tipc link stat show` -> link name: link protocol messages exchanged (RX + TX
    states). These only grow while a link stays up; a reset starts them again from 0."""
    out: dict[str, int] = {}
    link = None
    for line in text.splitlines():
        m = re.match(r"Link <(.+)>", line)
        if m:
            link = m.group(1)
            continue
        for count in re.findall(r"[RT]X states:(\d+)", line):
            if link and link != "broadcast-link":
                out[link] = out.get(link, 0) + int(count)
    return out


def _to_peer(lab: Lab, peer: str, names: Any) -> list[str]:
    ident = _cfg(lab).nodes[peer].identity
    return [n for n in names if re.search(rf"-{re.escape(ident)}:", n)]


def baseline_link(lab: Lab, p: dict[str, Any]) -> dict[str, int] | None:
    if not p.get("stayed_up"):
        return None
    stats = parse_link_stats(node_cmd(lab, p["node"], ["tipc", "link", "stat", "show"]).stdout)
    return {n: stats[n] for n in _to_peer(lab, p["peer"], stats)}


def check_link(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, peer, want = p["node"], p["peer"], p.get("state", "up")
    if peer not in _cfg(lab).nodes:
        return unknown(name, f"{peer} is not a TIPC node of lab '{lab.name}'")
    links = parse_links(node_cmd(lab, node, ["tipc", "link", "list"]).stdout)
    is_up = any(links[n] for n in _to_peer(lab, peer, links))
    shown = ", ".join(f"{n} {'up' if u else 'down'}" for n, u in links.items()) or "no links"
    saw = f"{node}'s TIPC links: {shown}"
    what = f"a TIPC link {node} - {peer} that is up" if want == "up" else \
        f"no TIPC link {node} - {peer} up"
    if not p.get("stayed_up") or not is_up:
        return judged(name, is_up == (want == "up"), saw, what, {"links": links})
    if not base:
        return unknown(name, f"{saw}; no record of the link's counters from the exercise's "
                             "start, so whether it stayed up is unknown: start it first")
    stats = parse_link_stats(node_cmd(lab, node, ["tipc", "link", "stat", "show"]).stdout)
    reset = [n for n, before in base.items() if stats.get(n, 0) < before]
    saw += "; link protocol messages since the start: " + ", ".join(
        f"{n} {before} -> {stats.get(n, 0)}" for n, before in base.items())
    return judged(name, not reset, saw,
                  f"the link {', '.join(reset)} staying up (it was reset since the "
                  "exercise started: its counters began again; messages in flight were "
                  "lost or failed over)", {"links": links, "start": base, "now": stats})


def bearer_devices(lab: Lab, node: str) -> list[str]:
    return sorted({b.dev for b in _cfg(lab).nodes[node].bearers})


def capture_cmd(devs: list[str], seconds: int) -> list[str]:
    """tcpdump on each device, outgoing only: hex of every TIPC frame (Ethernet bearer) and
    UDP bearer datagram, bounded in frames and seconds."""
    filt = f"ether proto 0x88ca or udp port {UDP_PORT}"
    one = [f"timeout -s INT {seconds} tcpdump --immediate-mode -i {shlex.quote(d)} -Q out "
           f"-e -nn -x -l -c {MAX_FRAMES} {shlex.quote(filt)} 2>/dev/null" for d in devs]
    return ["sh", "-c", " ; ".join(one) + " ; true"]


def parse_frames(text: str) -> list[dict[str, int]]:
    """tcpdump -e -x output -> TIPC header facts of each frame: version, user, TX key.

    -x prints what follows the link header: the TIPC header itself for ethertype 0x88ca,
    the IP header for a UDP bearer (TIPC then starts after the IP and UDP headers)."""
    frames: list[dict[str, int]] = []
    head, data = "", bytearray()

    def flush() -> None:
        if not data:
            return
        raw = bytes(data)
        if "0x88ca" not in head.lower():  # IPv4/IPv6 + UDP
            start = (raw[0] & 0x0F) * 4 + 8 if raw[0] >> 4 == 4 else 40 + 8
            raw = raw[start:]
        if len(raw) >= 2:
            frames.append({"version": raw[0] >> 5, "user": (raw[0] >> 1) & 0x0F,
                           "tx_key": raw[1] >> 6, "master": (raw[1] >> 2) & 1})

    for line in text.splitlines():
        if line.startswith("\t0x") or line.startswith("        0x"):
            words = line.split(":", 1)[1].split()
            data += bytes.fromhex("".join(w for w in words if re.fullmatch(r"[0-9a-f]{2,4}", w)))
        elif line.strip():
            flush()
            head, data = line, bytearray()
    flush()
    return frames


def sent_frames(lab: Lab, nodes: list[str], seconds: int) -> dict[str, list[dict[str, int]]]:
    """Every node's outgoing TIPC frames over `seconds`, captured in all nodes at once."""
    def one(node: str) -> list[dict[str, int]]:
        res = node_cmd(lab, node, capture_cmd(bearer_devices(lab, node), seconds),
                       timeout=seconds * len(bearer_devices(lab, node)) + 30)
        return parse_frames(res.stdout)

    with ThreadPoolExecutor(max_workers=len(nodes) or 1) as pool:
        return dict(zip(nodes, pool.map(one, nodes), strict=True))


def _nodes(lab: Lab, p: dict[str, Any]) -> list[str]:
    cfg = _cfg(lab)
    nodes = p.get("nodes", "all")
    return list(cfg.nodes) if nodes == "all" else list(nodes)


def key_label(frame: dict[str, int]) -> str:
    """Which key a v7 frame went out under: its TX key slot (w0 bits 23:22), and whether
    the master key bit (M) was set."""
    return ("master " if frame.get("master") else "") + f"key slot {frame['tx_key']}"


def keys_in_use(frames: list[dict[str, int]]) -> list[str]:
    return sorted({key_label(f) for f in frames if f["version"] == 7})


def baseline_key(lab: Lab, p: dict[str, Any]) -> dict[str, list[str]]:
    """The keys each node sends v7 frames under now (empty: plaintext). A node whose
    capture caught nothing (tcpdump starts slowly in a loaded VM) is captured again; one
    that stays silent makes the baseline unreadable, never "no key": a later check would
    otherwise count any key as new."""
    out: dict[str, list[str]] = {}
    silent = _nodes(lab, p)
    for _ in range(3):
        got = sent_frames(lab, silent, p.get("seconds", CAPTURE_SECONDS))
        out.update({n: keys_in_use(fr) for n, fr in got.items() if fr})
        silent = [n for n in silent if not got[n]]
        if not silent:
            return out
    raise CannotCheck(f"no TIPC frame from {', '.join(silent)} while reading the keys in use")


def check_key(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    nodes = _nodes(lab, p)
    seconds = p.get("seconds", CAPTURE_SECONDS)
    got = sent_frames(lab, nodes, seconds)
    changed = p.get("changed", False)
    if changed and base is None:
        return unknown(name, "no record of the keys in use when the exercise started; "
                             "start the exercise first")
    keyed, plain, silent, same, unread = [], [], [], [], []
    for node in nodes:
        frames = got[node]
        versions = {f["version"] for f in frames}
        used = keys_in_use(frames)
        if not frames:
            silent.append(node)
        elif versions != {7}:
            plain.append(node)
        elif changed and node not in (base or {}):
            unread.append(node)  # nothing known from the start: cannot tell
        elif changed and set(used) <= set((base or {}).get(node, [])):
            same.append(f"{node} ({', '.join(used)})")
        else:
            keyed.append(node)
    evidence: dict[str, Any] = {
        n: {"frames": len(got[n]), "versions": sorted({f["version"] for f in got[n]}),
            "keys": keys_in_use(got[n])} for n in nodes}
    if base is not None:
        evidence["_start"] = base
    new = "a new key" if changed else "a key"
    parts = [f"{new} in use on {', '.join(keyed)}" if keyed else f"{new} in use on no node"]
    if plain:
        parts.append(f"plaintext (TIPC v2) frames from {', '.join(plain)}")
    if same:
        parts.append(f"still the key from the start on {', '.join(same)}")
    if silent:
        parts.append(f"no TIPC frame from {', '.join(silent)} in {seconds} s")
    if unread:
        parts.append(f"no record of the key {', '.join(unread)} used at the start")
    missing = [n for n in nodes if n not in keyed]
    if (silent or unread) and not plain and not same:
        return unknown(name, "; ".join(parts), evidence)
    return judged(name, not missing, "; ".join(parts),
                  f"{new} on {', '.join(missing)}", evidence)
