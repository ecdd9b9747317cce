"""One emulated NIC as the kernel shows it, next to that kernel: its knobs (sysfs), its
offload feature flag and counters (ethtool ioctls), its GSO segment cap (rtnetlink), and
the node's kTLS counters.

A net device's sysfs is only visible from a mount of sysfs made inside its namespace, so
knobs are read and written through `ip netns exec` (which mounts one), with argv only,
never a shell. Everything polled often (counters) is an ioctl instead.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any

from labkit.base import netns
from labkit.base.rtnl import opened
from labkit.errors import LabkitError
from labkit.features.offload import ethtool
from labkit.features.offload.config import KIND, STRATEGIES, Nic
from labkit.hosts.local import netns_exec
from labkit.ktls import stat as ktls_stat

KNOBS = ("strategy", "refuse_add", "corrupt_every", "max_ctx", "nr_ctx")
WRITABLE = KNOBS[:-1]
# Counters a reader compares: the fast path, the slow paths, faults (see kmod/README.md).
FAST = ("tx_tls_encrypted_packets", "tx_tls_encrypted_bytes")
SLOW = ("tx_tls_ooo", "tx_tls_dump_packets", "tx_tls_dump_bytes", "tx_tls_resync_bytes",
        "tls_tx_fallback", "tls_tx_no_fallback", "tx_tls_resync_req", "tx_tls_resync",
        "tx_tls_drop_no_sync_data", "tx_tls_skip_no_sync_data")


def knob_path(iface: str, knob: str) -> str:
    return f"/sys/class/net/{iface}/{KIND}/{knob}"


def read_knobs(ns: str, iface: str) -> dict[str, str]:
    paths = [knob_path(iface, k) for k in KNOBS]
    res = subprocess.run(netns_exec(ns, ["grep", "-H", ".", *paths]), capture_output=True,
                         text=True, timeout=60)
    out = {}
    for line in res.stdout.splitlines():
        path, _, value = line.rpartition(":")
        out[path.rsplit("/", 1)[-1]] = value.strip()
    if not out:
        raise LabkitError(f"{iface} in {ns} has no tlsnic knobs ({res.stderr.strip()}).",
                          hint="Is it a tlsnic device? `labkit offload stats` lists the NICs.")
    return out


def write_knob(ns: str, iface: str, knob: str, value: str) -> None:
    if knob not in WRITABLE:
        raise LabkitError(f"'{knob}' is not a knob of the emulated NIC.",
                          hint=f"Knobs: {', '.join(WRITABLE)}.")
    res = subprocess.run(netns_exec(ns, ["tee", knob_path(iface, knob)]), input=value + "\n",
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        why = res.stderr.strip().rsplit(":", 1)[-1].strip() or f"exit {res.returncode}"
        hint = (f"strategy is one of {', '.join(STRATEGIES)}." if knob == "strategy" else
                "refuse_add is 0 or 1; corrupt_every and max_ctx are whole numbers "
                "(0 turns them off).")
        raise LabkitError(f"the NIC {iface} refused {knob}={value}: {why}.", hint=hint)


def control_socket(ns: str) -> socket.socket:
    return netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)


def counters(ns: str, iface: str) -> dict[str, int]:
    with control_socket(ns) as sock:
        return ethtool.stats(sock, iface)


def offload_on(ns: str, iface: str) -> bool:
    with control_socket(ns) as sock:
        return ethtool.feature(sock, iface)


def set_offload(ns: str, iface: str, on: bool) -> None:
    with control_socket(ns) as sock:
        ethtool.set_feature(sock, iface, on)


def gso_max_segs(ns: str, iface: str, value: int | None = None) -> int:
    """The device's GSO segment cap; set it first when value is given."""
    with opened(ns) as ipr:
        index = ipr.link_lookup(ifname=iface)[0]
        if value is not None:
            ipr.link("set", index=index, gso_max_segs=value)
        return int(ipr.get_links(index)[0].get_attr("IFLA_GSO_MAX_SEGS") or 0)


def apply(ns: str, nic: Nic) -> None:
    """The NIC's declared knobs and offload flag, as `up` sets them."""
    for knob, value in nic.knobs().items():
        write_knob(ns, nic.iface, knob, value)
    if not nic.offload:
        set_offload(ns, nic.iface, False)


def tls_stat(ns: str) -> dict[str, int]:
    """The namespace's /proc/net/tls_stat ({} before the tls module is loaded)."""
    return ktls_stat.read(ns) or {}


def snapshot(ns: str, nic: Nic) -> dict[str, Any]:
    """Everything `labkit offload stats` shows for one NIC."""
    return {"node": nic.node, "iface": nic.iface,
            "peer": nic.peer.label if nic.peer else None,
            "knobs": read_knobs(ns, nic.iface), "tls_hw_tx_offload": offload_on(ns, nic.iface),
            "gso_max_segs": gso_max_segs(ns, nic.iface), "counters": counters(ns, nic.iface)}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}
