#!/usr/bin/env python3
"""Up/down time of a star lab (N nodes on one LAN bridge): `labkit up/down` against the
equivalent plain `ip` command loop, in the same run, reported as ratios.

The yardstick builds exactly what labkit builds: a namespace per node plus one for the
bridge, a veth per node from the bridge namespace into the node, addresses (IPv4 and
IPv6, no DAD), loopbacks up. Both sides are timed end to end as a user runs them
(labkit includes Python start-up). Runs alternate so drift hits both sides alike.

    sudo .venv/bin/python benchmarks/updown.py --sizes 16 64 256 --repeat 3 [--json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.gen_star import star  # noqa: E402

LABKIT = [sys.executable, "-m", "labkit.cli.main"]


def ip_script(n: int, lab: str) -> tuple[str, str]:
    """Shell scripts (up, down) doing with `ip` what `labkit up/down` does for the star."""
    v4 = ipaddress.ip_network("198.18.0.0/23" if n > 253 else "198.18.0.0/24")
    v6 = ipaddress.ip_network("fd00:1ab::/64")
    lans = f"lk-{lab}._lans"
    up = ["set -e", f"ip netns add {lans}", f"ip -n {lans} link set lo up",
          f"ip netns exec {lans} sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
          f"ip -n {lans} link add star type bridge", f"ip -n {lans} link set star up"]
    down = []
    nodes = ["hub"] + [f"n{i}" for i in range(1, n)]
    for i, node in enumerate(nodes, start=1):
        ns = f"lk-{lab}.{node}"
        up += [
            f"ip netns add {ns}",
            f"ip -n {ns} link set lo up",
            f"ip -n {lans} link add p{i} type veth peer name eth1 netns {ns}",
            f"ip -n {lans} link set p{i} master star up",
            f"ip -n {ns} link set eth1 up",
            f"ip -n {ns} addr add {v4.network_address + i}/{v4.prefixlen} dev eth1",
            f"ip -n {ns} addr add {v6.network_address + i}/64 dev eth1 nodad",
        ]
        down.append(f"ip netns del {ns}")
    down.append(f"ip netns del {lans}")
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def count_ns(prefix: str) -> int:
    return sum(1 for n in os.listdir("/run/netns") if n.startswith(prefix))


def measure(n: int, repeat: int, tmp: Path) -> dict[str, object]:
    lab_k, lab_i = f"bk{n}", f"bi{n}"
    topo = tmp / f"{lab_k}.yaml"
    topo.write_text(star(n, lab_k))
    up_sh, down_sh = tmp / f"{lab_i}-up.sh", tmp / f"{lab_i}-down.sh"
    up_text, down_text = ip_script(n, lab_i)
    up_sh.write_text(up_text)
    down_sh.write_text(down_text)
    times: dict[str, list[float]] = {k: [] for k in ("labkit_up", "labkit_down", "ip_up",
                                                        "ip_down")}
    for _ in range(repeat):
        times["ip_up"].append(timed(["bash", str(up_sh)]))
        assert count_ns(f"lk-{lab_i}.") == n + 1
        times["labkit_up"].append(timed([*LABKIT, "up", str(topo)]))
        assert count_ns(f"lk-{lab_k}.") == n + 1
        times["ip_down"].append(timed(["bash", str(down_sh)]))
        times["labkit_down"].append(timed([*LABKIT, "down", lab_k]))
        assert count_ns(f"lk-{lab_k}.") == 0 and count_ns(f"lk-{lab_i}.") == 0
        time.sleep(0.5)  # let the kernel finish freeing namespaces between rounds
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "nodes": n, "repeat": repeat,
        **{f"{k}_s": round(v, 4) for k, v in med.items()},
        "up_ratio": round(med["labkit_up"] / med["ip_up"], 3),
        "down_ratio": round(med["labkit_down"] / med["ip_down"], 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: it creates network namespaces", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for n in args.sizes:
                rows.append(measure(n, args.repeat, Path(tmp)))
                if not args.json:
                    r = rows[-1]
                    print(f"{n:4} nodes  up: labkit {r['labkit_up_s']:.3f}s  ip {r['ip_up_s']:.3f}s"
                          f"  ratio {r['up_ratio']:.2f}x   down: labkit {r['labkit_down_s']:.3f}s"
                          f"  ip {r['ip_down_s']:.3f}s  ratio {r['down_ratio']:.2f}x", flush=True)
        finally:
            for n in args.sizes:  # never leave a benchmark lab behind
                subprocess.run([*LABKIT, "down", f"bk{n}"], cwd=ROOT, capture_output=True)
                for ns in os.listdir("/run/netns"):
                    if ns.startswith(f"lk-bi{n}."):
                        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if args.json:
        print(json.dumps({"kernel": os.uname().release, "cpus": os.cpu_count(),
                          "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
