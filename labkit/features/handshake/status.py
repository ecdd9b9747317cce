"""What `labkit handshake status` shows, read next to the kernel: per daemon node the
daemon's own counters (up, ready/accepted/done, failures by errno, in flight, stalled,
latency, open fds), and the kernel's view where it has one: the namespace's kTLS
counters (/proc/net/tls_stat), its TCP sockets with the tls ULP, and the per-namespace
cap on queued requests. Consumers: NVMe controllers and their state, the NFS mount.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING, Any

from labkit.base import procs
from labkit.features.handshake import nfs, nvme, paths
from labkit.features.handshake.config import HandshakeConfig
from labkit.features.handshake.events import read_status
from labkit.features.handshake.setup import mine
from labkit.features.handshake.uapi import pending_cap
from labkit.ktls import stat as ktls_stat

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def tls_stat(ns: str) -> dict[str, int]:
    """The namespace's /proc/net/tls_stat ({} before the tls module is loaded)."""
    return ktls_stat.read(ns) or {}


def ktls_sockets(ns: str) -> list[dict[str, str]]:
    """Established TCP sockets with the tls ULP in a namespace, as `ss -tni` shows them."""
    res = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tniH", "state", "established"],
                         capture_output=True, text=True, timeout=30)
    out, cur = [], ""
    lines = res.stdout.splitlines()
    for line in [*lines, "END"]:
        if line and not line[0].isspace() and cur:
            if "tcp-ulp-tls" in cur:
                fields = cur.split()
                tls = cur[cur.index("tcp-ulp-tls"):].split()
                out.append({"local": fields[2], "peer": fields[3],
                            "tls": " ".join(tls[1:9])})
            cur = line
        else:
            cur = (cur + " " + line.strip()).strip()
    return out


def mem_total() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def daemon(lab: str, node: str) -> dict[str, Any]:
    st = read_status(paths.status(lab, node)) or {}
    pid = int(st.get("pid", 0))
    alive = bool(pid) and procs.alive(pid)
    lat = [float(x) for x in st.get("latency_ms", [])]
    return {
        "up": alive and st.get("state") == "serving", "pid": pid if alive else None,
        "state": st.get("state", "absent") if alive or not st else "exited",
        "stalled": bool(st.get("stalled")), "pool": st.get("pool"),
        "ready": st.get("ready", 0), "accepted": st.get("accepted", 0),
        "done": st.get("done", 0), "failed": st.get("failed", {}),
        "in_flight": st.get("in_flight", 0), "fds": st.get("fds"),
        "warmup_ms": st.get("warmup_ms"), "keylog": bool(st.get("keylog")),
        "latency_ms": {"count": len(lat), "p50": percentile(lat, 50),
                       "p99": percentile(lat, 99)},
    }


def status(lab: Lab, cfg: HandshakeConfig) -> dict[str, Any]:
    cap = pending_cap(mem_total())
    nodes: dict[str, Any] = {}
    for node in cfg.daemon_nodes:
        if not mine(lab, node):
            continue
        ns = lab.node(node).ns
        nodes[node] = {"daemon": daemon(lab.name, node),
                       "kernel": {"tls_stat": tls_stat(ns), "ktls_sockets": ktls_sockets(ns),
                                  "pending_cap": cap}}
    out: dict[str, Any] = {"nodes": nodes, "pool": cfg.pool, "timeout": cfg.timeout,
                           "keylog": cfg.keylog, "pending_cap": cap,
                           "pending_cap_rule": "per network namespace: MemTotal / 400 MiB, "
                                               "3..50 (net/handshake/netlink.c)"}
    if cfg.nvme is not None and mine(lab, cfg.nvme.host):
        sub = nvme.subnqn(lab.name, cfg.nvme.target)
        out["nvme"] = {**cfg.nvme.as_dict(), "subsystem": sub,
                       "controllers": {f"nvme{c}": nvme.ctrl_attr(c, "state")
                                       for c in nvme.controllers(sub)},
                       "device": nvme.block_device(sub)}
    if cfg.nfs is not None and mine(lab, cfg.nfs.client):
        out["nfs"] = {**cfg.nfs.as_dict(), "mount": nfs.mount_point(lab.name),
                      "mounted": os.path.ismount(nfs.mount_point(lab.name))}
    return out
