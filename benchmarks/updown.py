#!/usr/bin/env python3
"""Up/down time of a star lab (N nodes on one LAN): `labkit up/down` against the equivalent
plain `ip` command script, in the same run, reported as ratios, with the load average.

The yardstick builds exactly what labkit builds, from the same resolved topology: a
namespace per node plus one for the LAN's bridges, a veth per member from its bridge into
the node (aliased), addresses (IPv4, and IPv6 without DAD), loopbacks up. A LAN of more
than 1023 members is a root bridge with trunks to leaf bridges, as labkit.lab.lan plans it,
and a LAN of more than lan.NAPI_MEMBERS members gets the same offloads (`ethtool -K`) and
member sysctls. Both sides are timed end to end as a user runs them (labkit includes
Python start-up). Runs alternate so drift hits both sides alike. The machine may be shared:
the load average before each run is reported beside the figures.

    sudo .venv/bin/python benchmarks/updown.py --sizes 16 64 256 --repeat 3 [--json]
    sudo .venv/bin/python benchmarks/updown.py --sizes 1000 --repeat 1
    sudo .venv/bin/python benchmarks/updown.py --sizes 2000 --repeat 1 --check
"""

from __future__ import annotations

import argparse
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
from labkit.lab import lan as lanplan  # noqa: E402
from labkit.topology import loader  # noqa: E402
from scripts.gen_star import star  # noqa: E402

LABKIT = [sys.executable, "-m", "labkit.cli.main"]


def ip_script(topo_text: str, lab: str, plain: bool = False) -> tuple[str, str]:
    """Shell scripts (up, down) doing with `ip` what `labkit up/down` does for the star;
    `plain`: without the large-LAN offloads and sysctls (the yardstick before them)."""
    topo = loader.loads(topo_text)
    lans = f"lk-{lab}._lans"
    up = ["set -e", f"ip netns add {lans}", f"ip -n {lans} link set lo up",
          f"ip netns exec {lans} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
          "net.ipv6.conf.default.disable_ipv6=1"]
    down = []
    for name in topo.nodes:
        ns = f"lk-{lab}.{name}"
        up += [f"ip netns add {ns}", f"ip -n {ns} link set lo up"]
        down.append(f"ip netns del {ns}")
    port = 0
    for number, seg in enumerate(topo.lans.values(), start=1):
        large = len(seg.endpoints) > lanplan.NAPI_MEMBERS and not plain
        extra = " mcast_snooping 0" if large else ""
        bridges = lanplan.plan(seg, number)
        for br in bridges:
            up += [f"ip -n {lans} link add {br.name} type bridge stp_state 0 forward_delay 0"
                   f"{extra}", f"ip -n {lans} link set {br.name} up alias '{br.alias}'"]
            if br.trunk:
                a, b = br.trunk
                up += [f"ip -n {lans} link add {a} type veth peer name {b}",
                       f"ip -n {lans} link set {b} master {br.name} up",
                       f"ip -n {lans} link set {a} master {seg.name} up"]
        if large:
            for node in dict.fromkeys(ep.node for ep in seg.endpoints):
                up.append(f"ip netns exec lk-{lab}.{node} sysctl -qw "
                          + " ".join(f"{k.replace('/', '.')}={v}"
                                     for k, v in lanplan.QUIET_MEMBER_SYSCTLS.items()))
        for br in bridges:
            for ep in br.members:
                port += 1
                ns = f"lk-{lab}.{ep.node}"
                up += [f"ip -n {lans} link add p{port} type veth peer name {ep.iface} netns {ns}",
                       f"ip -n {lans} link set p{port} master {br.name} up alias {ep.label}"]
                if large:
                    up += [f"ip netns exec {lans} ethtool -K p{port} tso off",
                           f"ip netns exec {ns} ethtool -K {ep.iface} gro on"]
        for ep in seg.endpoints:
            ns = f"lk-{lab}.{ep.node}"
            up.append(f"ip -n {ns} link set {ep.iface} up")
            if ep.ipv4:
                up.append(f"ip -n {ns} addr add {ep.ipv4} dev {ep.iface}")
            if ep.ipv6:
                up.append(f"ip -n {ns} addr add {ep.ipv6} dev {ep.iface} nodad")
    down.append(f"ip netns del {lans}")
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({done.returncode}): "
                         f"{done.stderr[-2000:]}")
    return took


def count_ns(prefix: str) -> int:
    return sum(1 for n in os.listdir("/run/netns") if n.startswith(prefix))


def load() -> float:
    return round(os.getloadavg()[0], 2)


def measure(n: int, repeat: int, tmp: Path, check: bool,
            plain: bool = False) -> dict[str, object]:
    lab_k, lab_i = f"bk{n}", f"bi{n}"
    text = star(n, lab_k)
    topo = tmp / f"{lab_k}.yaml"
    topo.write_text(text)
    up_sh, down_sh = tmp / f"{lab_i}-up.sh", tmp / f"{lab_i}-down.sh"
    up_text, down_text = ip_script(text, lab_i, plain)
    up_sh.write_text(up_text)
    down_sh.write_text(down_text)
    times: dict[str, list[float]] = {k: [] for k in ("labkit_up", "labkit_down", "ip_up",
                                                        "ip_down")}
    loads: list[float] = []
    verdicts: list[dict[str, object]] = []
    for _ in range(repeat):
        loads.append(load())
        times["ip_up"].append(timed(["bash", str(up_sh)]))
        assert count_ns(f"lk-{lab_i}.") == n + 1
        times["ip_down"].append(timed(["bash", str(down_sh)]))
        loads.append(load())
        times["labkit_up"].append(timed([*LABKIT, "up", str(topo)]))
        assert count_ns(f"lk-{lab_k}.") == n + 1
        if check:
            out = subprocess.run([*LABKIT, "check", lab_k, "--json"], cwd=ROOT,
                                 capture_output=True, text=True)
            verdicts = json.loads(out.stdout)["verdicts"]
        times["labkit_down"].append(timed([*LABKIT, "down", lab_k]))
        assert count_ns(f"lk-{lab_k}.") == 0 and count_ns(f"lk-{lab_i}.") == 0
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "nodes": n, "repeat": repeat, "load_1min": loads, "plain_ip": plain,
        "bridges": len(lanplan.plan(loader.loads(text).lans["star"], 1)),
        **{f"{k}_s": round(v, 3) for k, v in med.items()},
        "up_ratio": round(med["labkit_up"] / med["ip_up"], 3),
        "down_ratio": round(med["labkit_down"] / med["ip_down"], 3),
        "updown_ratio": round((med["labkit_up"] + med["labkit_down"])
                              / (med["ip_up"] + med["ip_down"]), 3),
        **({"checks": [(v["name"], v["outcome"], v["detail"]) for v in verdicts]}
           if check else {}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", action="store_true",
                    help="run the lab's checks after each labkit up (not timed)")
    ap.add_argument("--plain-ip", action="store_true",
                    help="ip yardstick without the large-LAN offloads and sysctls")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: it creates network namespaces", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for n in args.sizes:
                rows.append(measure(n, args.repeat, Path(tmp), args.check, args.plain_ip))
                if not args.json:
                    r = rows[-1]
                    print(f"{n:5} nodes ({r['bridges']} bridges, load {r['load_1min']})  "
                          f"up: labkit {r['labkit_up_s']:.2f}s ip {r['ip_up_s']:.2f}s "
                          f"ratio {r['up_ratio']:.2f}x  down: labkit {r['labkit_down_s']:.2f}s "
                          f"ip {r['ip_down_s']:.2f}s ratio {r['down_ratio']:.2f}x  "
                          f"up+down {r['updown_ratio']:.2f}x"
                          + (f"  checks {[c[1] for c in r['checks']]}" if args.check else ""),
                          flush=True)
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
