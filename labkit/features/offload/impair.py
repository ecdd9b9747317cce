"""netem on what an emulated NIC sends, where the kernel lets it sit.

- `wire`: after the NIC, on the peer's ingress. An ingress qdisc cannot delay, so the
  peer's interface redirects what it receives to an ifb device of its own, whose root
  qdisc is netem (loss, delay, reordering). TCP then retransmits segments the NIC had
  already encrypted: what sends real NICs off their fast path.
- `nic`: the NIC's own root qdisc, loss only. A delaying netem orphans skbs, and
  tls_device drops every offloaded skb that lost its socket; loss keeps them owned, and
  makes the NIC see the stream jump ahead.

netem counts a GSO skb (up to 64 KiB) as one packet, and TCP builds them even without
TSO: `per_segment` caps the NIC at one segment per skb (gso_max_segs 1), so a rate
counts TCP segments. Commands are iproute2's own (`tc`, `ip`), argv only.
"""

from __future__ import annotations

import subprocess

from labkit.base.rtnl import opened
from labkit.errors import LabkitError
from labkit.features.offload import nic as nicmod
from labkit.features.offload.config import Impairment, Nic
from labkit.hosts.local import netns_exec

GSO_DEFAULT = 65535  # the kernel's GSO_MAX_SEGS


def ifb_name(nic: Nic) -> str:
    """The ifb in the peer's namespace for this NIC's wire (15 bytes at most)."""
    assert nic.peer is not None
    return f"ifb-{nic.peer.iface}"[:15]


def _run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(netns_exec(ns, list(argv)), capture_output=True, text=True,
                         timeout=60)
    if check and res.returncode != 0:
        raise LabkitError(f"`{' '.join(argv)}` failed in {ns}: "
                          f"{(res.stderr or res.stdout).strip()}.",
                          hint="`labkit doctor` says whether this kernel has netem and ifb.")
    return res


def _wire_plumbing(peer_ns: str, nic: Nic) -> None:
    """The peer's ingress redirected to its ifb (made once; netem replaced later)."""
    assert nic.peer is not None
    ifb = ifb_name(nic)
    if _has_link(peer_ns, ifb):
        return
    _run(peer_ns, "ip", "link", "add", ifb, "type", "ifb")
    _run(peer_ns, "ip", "link", "set", ifb, "up")
    _run(peer_ns, "tc", "qdisc", "add", "dev", nic.peer.iface, "handle", "ffff:", "ingress")
    _run(peer_ns, "tc", "filter", "add", "dev", nic.peer.iface, "parent", "ffff:",
         "matchall", "action", "mirred", "egress", "redirect", "dev", ifb)


def _has_link(ns: str, name: str) -> bool:
    """By rtnetlink: a command per question costs a second under emulation."""
    with opened(ns) as ipr:
        return bool(ipr.link_lookup(ifname=name))


def apply(nic_ns: str, peer_ns: str, nic: Nic, imp: Impairment) -> None:
    """Make the NIC's impairment `imp` (replacing whatever it had)."""
    clear(nic_ns, peer_ns, nic)
    if imp.per_segment and imp.active:
        nicmod.gso_max_segs(nic_ns, nic.iface, 1)
    if not imp.active:
        return
    if imp.at == "nic":
        _run(nic_ns, "tc", "qdisc", "replace", "dev", nic.iface, "root", "netem",
             *imp.netem_args())
        return
    _wire_plumbing(peer_ns, nic)
    _run(peer_ns, "tc", "qdisc", "replace", "dev", ifb_name(nic), "root", "netem",
         *imp.netem_args())


def clear(nic_ns: str, peer_ns: str, nic: Nic) -> None:
    """No netem anywhere on this NIC's path, full-size GSO again (the ifb stays, idle)."""
    _run(nic_ns, "tc", "qdisc", "del", "dev", nic.iface, "root", check=False)
    if nic.peer is not None and _has_link(peer_ns, ifb_name(nic)):
        _run(peer_ns, "tc", "qdisc", "del", "dev", ifb_name(nic), "root", check=False)
    nicmod.gso_max_segs(nic_ns, nic.iface, GSO_DEFAULT)


def netem_stats(nic_ns: str, peer_ns: str, nic: Nic) -> list[dict[str, object]]:
    """The netem qdiscs on the NIC's path as `tc -s -j qdisc` reports them."""
    import json

    out: list[dict[str, object]] = []
    places = [(nic_ns, nic.iface, "nic")]
    if nic.peer is not None:
        places.append((peer_ns, ifb_name(nic), "wire"))
    for ns, dev, where in places:
        res = _run(ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            continue
        for q in json.loads(res.stdout):
            if q.get("kind") == "netem":
                out.append({"at": where, "dev": dev, "options": q.get("options", {}),
                            "sent_packets": q.get("packets", 0), "drops": q.get("drops", 0)})
    return out
