#!/usr/bin/env python3
"""TIPC benchmarks, run on a kernel with TIPC (in the VM here, natively elsewhere):

1. Throughput of TIPC between two namespaces of one kernel (the crossover path) against
   TCP between the same two namespaces, for 64 KiB and 1 KiB messages, stream and RDM
   sockets, printed as TIPC/TCP ratios. The seed claims 4x at 64 KiB; emulation (TCG)
   distorts such ratios, so the conditions are printed with the figures.
2. Cluster formation: `up` of an N-node LAN with TIPC (until every link is up) against
   `up` of the same network without TIPC, for N = 4 and 16.
3. Netlink queries: labkit's TIPCv2 client (open, NET_GET, LINK_GET dump, close) against
   iproute2's `tipc link list` in the same namespace, per query.

    labkit vm run -- .venv/bin/python benchmarks/tipc.py [--duration 3] [--repeat 3] [--json]

Runs alternate TIPC and TCP so drift hits both alike; every lab is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.lab.lab import Lab  # noqa: E402
from labkit.traffic.meter import measure  # noqa: E402


def lan_topology(name: str, n: int, tipc: bool) -> str:
    nodes = [f"n{i}" for i in range(1, n + 1)]
    lines = [f"name: {name}", "nodes:"]
    lines += [f"  {x}: {{tipc: {{bearers: [eth1]}}}}" if tipc else f"  {x}: {{}}" for x in nodes]
    lines += ["lans:", "  lan:", f"    endpoints: [{', '.join(f'{x}:eth1' for x in nodes)}]"]
    if tipc:
        lines += ["tipc:", "  net_id: 4711", "  link_timeout: 300"]
    return "\n".join(lines) + "\n"


def conditions() -> dict[str, object]:
    virt, model = "unknown", "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
        virt = "hypervisor" if " hypervisor" in info else "bare metal"
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                      if line.startswith("model name")), model)
    except OSError:
        pass
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu": virt,
            "cpu_model": model,  # "QEMU TCG CPU" means emulated: ratios are distorted
            "python": platform.python_version(),
            "note": "Python senders and receivers, one process each"}


def throughput(tmp: Path, duration: float, repeat: int) -> list[dict[str, object]]:
    path = tmp / "tput.yaml"
    path.write_text(lan_topology(f"tput{os.getpid() % 10000}", 2, tipc=True))
    rows = []
    with Lab.load(str(path)) as lab:
        for size in (65536, 1024):
            for sock in ("stream", "rdm"):
                tipc_runs, tcp_runs = [], []
                for _ in range(repeat):
                    tipc_runs.append(measure(lab, "n1", "n2", proto="tipc", socket=sock,
                                             size=size, duration=duration).bytes_per_s)
                    tcp_runs.append(measure(lab, "n1", "n2", proto="tcp", size=size,
                                            duration=duration).bytes_per_s)
                t, c = statistics.median(tipc_runs), statistics.median(tcp_runs)
                rows.append({"size": size, "tipc_socket": sock, "tipc_MBps": round(t / 1e6, 1),
                             "tcp_MBps": round(c / 1e6, 1), "ratio": round(t / c, 2) if c else None,
                             "runs": repeat, "duration_s": duration})
                print(f"size {size:6}  tipc {sock:6} {t / 1e6:8.1f} MB/s  tcp {c / 1e6:8.1f} MB/s"
                      f"  ratio {t / c if c else 0:.2f}x", file=sys.stderr, flush=True)
    return rows


def netlink_queries(tmp: Path, count: int) -> dict[str, object]:
    """Per-query time of labkit's netlink client beside iproute2's tipc tool (a process
    per query, as `labkit tipc status` would otherwise need)."""
    from labkit.features.tipc.client import TipcNetlink

    path = tmp / "nlq.yaml"
    path.write_text(lan_topology(f"nlq{os.getpid() % 10000}", 2, tipc=True))
    with Lab.load(str(path)) as lab:
        ns = lab.node("n1").ns
        start = time.perf_counter()
        for _ in range(count):
            with TipcNetlink(ns) as nl:
                nl.net()
                links = nl.links()
        ours = (time.perf_counter() - start) / count
        start = time.perf_counter()
        for _ in range(count):
            out = subprocess.run(["ip", "netns", "exec", ns, "tipc", "link", "list"],
                                 capture_output=True, text=True, check=True).stdout
        theirs = (time.perf_counter() - start) / count
    listed = {line.rsplit(": ", 1)[0] for line in out.splitlines() if ": " in line}
    assert {lk["name"] for lk in links} == listed, (links, out)  # both saw the same links
    row = {"queries": count, "labkit_ms": round(ours * 1e3, 2),
           "iproute2_tipc_ms": round(theirs * 1e3, 2), "ratio": round(ours / theirs, 2)}
    print(f"netlink: labkit {ours * 1e3:.2f} ms/query, iproute2 tipc {theirs * 1e3:.2f} "
          f"ms/query", file=sys.stderr, flush=True)
    return row


def formation(tmp: Path, sizes: list[int], repeat: int) -> list[dict[str, object]]:
    rows = []
    for n in sizes:
        with_tipc, without = [], []
        for r in range(repeat):
            for tipc, bucket in ((False, without), (True, with_tipc)):
                path = tmp / f"form{n}{int(tipc)}{r}.yaml"
                path.write_text(lan_topology(f"form{n}t{int(tipc)}r{r}", n, tipc))
                lab = Lab.load(str(path))
                start = time.perf_counter()
                lab.up()
                bucket.append(time.perf_counter() - start)
                lab.down()
        w, wo = statistics.median(with_tipc), statistics.median(without)
        links = n * (n - 1) // 2
        rows.append({"nodes": n, "links": links, "up_with_tipc_s": round(w, 3),
                     "up_without_tipc_s": round(wo, 3), "tipc_formation_s": round(w - wo, 3),
                     "ratio": round(w / wo, 2), "runs": repeat})
        print(f"{n:3} nodes ({links} links): up with TIPC {w:.2f}s, without {wo:.2f}s, "
              f"formation {w - wo:.2f}s", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--queries", type=int, default=50, help="netlink queries to time")
    args = ap.parse_args()
    os.system("modprobe tipc 2>/dev/null")
    out: dict[str, object] = {"conditions": conditions()}
    print(f"conditions: {out['conditions']}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_throughput:
            out["throughput"] = throughput(Path(tmp), args.duration, args.repeat)
        out["netlink"] = netlink_queries(Path(tmp), args.queries)
        out["formation"] = formation(Path(tmp), args.sizes, args.repeat)
    print(json.dumps(out, indent=2) if args.json else json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
