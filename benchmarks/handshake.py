#!/usr/bin/env python3
"""Handshake upcall benchmarks, on a kernel with the handshake family (the debian-6.12 VM):

1. Handshake latency through the upcall: N NVMe/TCP connects in the nvme-tls lab, each
   queue's TLS 1.3 PSK handshake timed by the host's daemon from READY (the kernel's
   notification) to DONE sent (after kTLS is on); p50/p99.
2. The same TLS library (tlslite-ng) doing the same handshake (same PSK, suite, key
   exchange) in plain user space, between the same two nodes over the same link, timed
   from the client's first byte to its handshake's end; same run, interleaved.
3. Throughput with and without TLS: NVMe (dd with O_DIRECT through the host's block
   device) and NFS (a file written with fsync and read back uncached), each in the TLS
   lab and in its plaintext control.

    labkit vm run --kernel debian-6.12 --memory 2G -- .venv/bin/python benchmarks/handshake.py \
        [--handshakes 30] [--mib 32] [--json]

Every lab is removed at the end. Under TCG emulation the absolute figures are slow and
noisy; the conditions are printed with them and the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.base import netns  # noqa: E402
from labkit.base.wait import wait_until  # noqa: E402
from labkit.features.handshake import engines, nfs, nvme, paths, setup  # noqa: E402
from labkit.features.handshake.events import read_events  # noqa: E402
from labkit.features.handshake.records import DeadlineSocket  # noqa: E402
from labkit.lab.lab import Lab  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50), 1),
            "p99_ms": round(pct(values, 99), 1), "mean_ms": round(statistics.mean(values), 1)}


def conditions() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    tcg = "QEMU" in cpu or os.path.exists("/sys/devices/virtual/misc/kvm") is False
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu,
            "emulated_guess": tcg, "python": platform.python_version(),
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def lab_from(source: str, name: str, tmp: str, **edits: str) -> Lab:
    text = (ROOT / "topologies" / source).read_text()
    text = re.sub(r"^name:.*$", f"name: {name}", text, count=1, flags=re.M)
    for old, new in edits.items():
        text = text.replace(old, new)
    path = Path(tmp) / f"{name}.yaml"
    path.write_text(text)
    return Lab.load(str(path)).up()


# -- 1 and 2: latency ------------------------------------------------------------------


def upcall_latencies(lab: Lab, count: int) -> tuple[list[float], list[float]]:
    """READY -> DONE per handshake on the host's daemon, for `count` connects (each an
    admin and an I/O queue handshake); and ACCEPT -> DONE."""
    c = lab.feature_config("handshake")
    sub = nvme.subnqn(lab.name, c.nvme.target)
    nvme.disconnect_all(sub)
    last = max((e["seq"] for e in read_events(paths.events(lab.name, "h"))), default=0)
    for _ in range(count):
        inst = nvme.connect(setup.nvme_connect(lab, c))
        nvme.wait_live(inst, sub, 60)
        nvme.disconnect(inst)
        wait_until(lambda: not nvme.controllers(sub), 30, "the controller to go")
    events = read_events(paths.events(lab.name, "h"), last)
    ready_to_done, accept_to_done = [], []
    pending_ready: list[float] = []
    accept_at: dict[int, float] = {}
    for e in events:
        if e["event"] == "ready":
            pending_ready += [e["time"]] * e["count"]
        elif e["event"] == "accept":
            accept_at[e["fd"]] = e["time"]
            e["ready_at"] = pending_ready.pop(0) if pending_ready else e["time"]
            accept_at[-e["fd"] - 1] = e["ready_at"]
        elif e["event"] == "done" and e["status"] == 0 and e["fd"] in accept_at:
            accept_to_done.append((e["time"] - accept_at.pop(e["fd"])) * 1000)
            ready_to_done.append((e["time"] - accept_at.pop(-e["fd"] - 1)) * 1000)
    setup.connect_nvme(lab, c)
    return ready_to_done, accept_to_done


def userspace_latencies(lab: Lab, count: int) -> list[float]:
    """The same tlslite-ng PSK handshake (suite, modes, one x25519 share) between h and t
    over the lab's link, no upcall and no kTLS, timed on the client."""
    psk = engines.Psk(0, "NVMe0R01 bench.host bench.sub", os.urandom(32))
    ls = netns.socket_in(lab.node("t").ns, socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with netns.entered(lab.node("t").ns):
        ls.bind(("198.18.4.1", 5555))
    ls.listen(4)
    modes = tuple(lab.feature_config("handshake").psk_modes)

    def server() -> None:
        for _ in range(count):
            conn, _ = ls.accept()
            d = DeadlineSocket(conn.fileno(), time.monotonic() + 60)
            try:
                engines.run(d, engines.Request(True, "psk", d.deadline, psk_modes=modes,
                                               find_psk=lambda i: psk))
            finally:
                d.release()
                conn.close()

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    out = []
    for _ in range(count):
        c = netns.socket_in(lab.node("h").ns, socket.AF_INET, socket.SOCK_STREAM)
        with netns.entered(lab.node("h").ns):
            c.connect(("198.18.4.1", 5555))
        d = DeadlineSocket(c.fileno(), time.monotonic() + 60)
        t0 = time.monotonic()
        engines.run(d, engines.Request(False, "psk", d.deadline, psks=[psk], psk_modes=modes))
        out.append((time.monotonic() - t0) * 1000)
        d.release()
        c.close()
    thread.join(30)
    ls.close()
    return out


# -- 3: throughput --------------------------------------------------------------------


def dd_rate(argv: list[str]) -> float:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    match = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", res.stderr)
    if not match:
        raise RuntimeError(f"dd said: {res.stderr.strip()}")
    return int(match.group(1)) / float(match.group(2)) / 1e6


def nvme_throughput(lab: Lab, mib: int) -> dict[str, float]:
    c = lab.feature_config("handshake")
    dev = nvme.block_device(nvme.subnqn(lab.name, c.nvme.target))
    write = dd_rate(["dd", "if=/dev/zero", f"of={dev}", "bs=1M", f"count={mib}",
                     "oflag=direct"])
    read = dd_rate(["dd", f"if={dev}", "of=/dev/null", "bs=1M", f"count={mib}", "iflag=direct"])
    return {"write_MBps": round(write, 2), "read_MBps": round(read, 2)}


def nfs_throughput(lab: Lab, mib: int) -> dict[str, float]:
    path = os.path.join(nfs.mount_point(lab.name), "bench")
    write = dd_rate(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}",
                     "conv=fsync"])
    read = dd_rate(["dd", f"if={path}", "of=/dev/null", "bs=1M", "iflag=direct"])
    os.unlink(path)
    return {"write_MBps": round(write, 2), "read_MBps": round(read, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--handshakes", type=int, default=30, help="NVMe connects (x2 handshakes)")
    ap.add_argument("--mib", type=int, default=32, help="MiB per throughput run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {"conditions": conditions()}
    size = f"size_mb: {max(16, args.mib + 8)}"
    with tempfile.TemporaryDirectory() as tmp:
        labs: list[Lab] = []
        try:
            tls = lab_from("nvme-tls.yaml", "bnvme", tmp, **{"size_mb: 16": size})
            labs.append(tls)
            engines.load_tlslite()
            up_r, up_a, us = [], [], []
            for _ in range(2):  # interleaved halves, so drift hits both alike
                r, a = upcall_latencies(tls, args.handshakes // 2)
                up_r += r
                up_a += a
                us += userspace_latencies(tls, args.handshakes)
            out["latency"] = {"upcall_ready_to_done": summary(up_r),
                              "upcall_accept_to_done": summary(up_a),
                              "userspace_same_library": summary(us),
                              "note": "upcall: host daemon, READY received -> DONE sent "
                                      "(kTLS installed); user space: tlslite-ng client, "
                                      "first byte -> handshake done; same PSK handshake"}
            out["nvme"] = {"tls": nvme_throughput(tls, args.mib)}
            tls.down()
            labs.remove(tls)
            plain = lab_from("nvme-tls-off.yaml", "bnvmeoff", tmp, **{"size_mb: 16": size})
            labs.append(plain)
            out["nvme"]["plain"] = nvme_throughput(plain, args.mib)
            plain.down()
            labs.remove(plain)
            for source, key in (("nfs-tls.yaml", "tls"), ("nfs-tls-off.yaml", "plain")):
                lab = lab_from(source, f"bnfs{key}", tmp, **{"size_mb: 16": size})
                labs.append(lab)
                out.setdefault("nfs", {})[key] = nfs_throughput(lab, args.mib)
                lab.down()
                labs.remove(lab)
        finally:
            for lab in labs:
                lab.down()
    for kind in ("nvme", "nfs"):
        t, p = out[kind]["tls"], out[kind]["plain"]
        out[kind]["tls_over_plain"] = {k: round(t[k] / p[k], 3) for k in t if p[k]}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        lat = out["latency"]
        print(f"conditions: {out['conditions']}")
        for k in ("upcall_ready_to_done", "upcall_accept_to_done", "userspace_same_library"):
            s = lat[k]
            print(f"{k:24} n={s['n']:3} p50 {s['p50_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms")
        for kind in ("nvme", "nfs"):
            print(f"{kind}: {out[kind]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
