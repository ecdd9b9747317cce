#!/usr/bin/env python3
"""TLS TX offload: the seed's claim measured ("plain-TCP throughput with crypto offload at
1.4x the CPU of plain TCP, where software TLS costs at least 4x").

Through the emulated NIC of topologies/offload.yaml (in a debian-6.12 VM: no kTLS here),
four senders into the same plain TCP sink: plain TCP, software kTLS (the NIC's offload
off), kTLS offloaded to the NIC, TLS records sealed in user space (OpenSSL through
`cryptography`). For each: throughput and the sender's CPU seconds per GiB, both also as
a ratio to plain TCP in the same round; and the NIC's own time (its encryption, and the
copy standing in for DMA), which a real NIC spends on its own silicon: the sender's CPU
without it is what the host would spend if the NIC were real.

Modes run in a rotating order, `--repeat` rounds; medians (min-max) are reported, with
the load average before and after: the machine is shared, and under TCG emulation every
figure is distorted (crypto instructions are emulated too), so the ratios, not the
absolute numbers, are the result.

    sudo .venv/bin/python benchmarks/offload.py [--mib 32] [--repeat 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from labkit.lab.lab import Lab  # noqa: E402

MODES = ("tcp", "ktls-sw", "offload", "userspace")
FN = "labkit.features.offload.bench:sender_cost"


def conditions(lab: Lab) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "host_kernel": os.uname().release, "lab_runs_on": lab.placement.describe(),
            "cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "load_before": os.getloadavg()}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: medians of the figures, and of their ratios to plain TCP in the same
    round."""
    gib = 1 << 30
    tcp = {r["round"]: r for r in rows if r["mode"] == "tcp"}
    out: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        per_gib = [r["sender_cpu_s"] * gib / r["size"] for r in mine]
        without = [r["sender_cpu_s_without_nic"] * gib / r["size"] for r in mine]
        nic = [r["nic_encrypt_s"] * gib / r["size"] for r in mine]
        copy = [r["nic_copy_s"] * gib / r["size"] for r in mine]
        base = [tcp[r["round"]] for r in mine]
        out[mode] = {
            "txconf": mine[0]["txconf"],
            "MBps": spread([r["MBps"] for r in mine]),
            "throughput_vs_tcp": spread([r["MBps"] / b["MBps"] for r, b in
                                         zip(mine, base, strict=True)]),
            "sender_cpu_s_per_GiB": spread(per_gib),
            "cpu_vs_tcp": spread([r["sender_cpu_s"] / b["sender_cpu_s"] for r, b in
                                  zip(mine, base, strict=True)]),
            "nic_encrypt_s_per_GiB": spread(nic),
            "nic_copy_s_per_GiB": spread(copy),
            "cpu_without_nic_s_per_GiB": spread(without),
            "cpu_without_nic_vs_tcp": spread([r["sender_cpu_s_without_nic"]
                                              / b["sender_cpu_s"] for r, b in
                                              zip(mine, base, strict=True)]),
        }
    return out


def table(summary: dict[str, Any]) -> str:
    head = ("| mode | txconf | MB/s | vs TCP | sender CPU s/GiB | vs TCP | NIC encrypt s/GiB "
            "| NIC copy s/GiB | CPU w/o NIC s/GiB | vs TCP |\n|" + "---|" * 10)
    lines = [head]
    for mode, s in summary.items():
        def m(key: str, s: dict[str, Any] = s) -> str:
            v = s[key]
            return f"{v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f})"
        lines.append(f"| {mode} | {s['txconf']} | {m('MBps')} | {m('throughput_vs_tcp')} | "
                     f"{m('sender_cpu_s_per_GiB')} | {m('cpu_vs_tcp')} | "
                     f"{m('nic_encrypt_s_per_GiB')} | {m('nic_copy_s_per_GiB')} | "
                     f"{m('cpu_without_nic_s_per_GiB')} | {m('cpu_without_nic_vs_tcp')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=32, help="MiB per transfer (default 32)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--out", help="write the JSON results here")
    args = ap.parse_args()
    if "tcp" not in args.modes:
        ap.error("--modes must include tcp: every ratio is to plain TCP in the same round")
    name = f"bo{os.getpid()}"
    text = re.sub(r"^name:.*$", f"name: {name}",
                  (ROOT / "topologies" / "offload.yaml").read_text(), count=1, flags=re.M)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        lab = Lab.load(str(path)).up()
        try:
            cond = conditions(lab)
            rows = []
            for rnd in range(args.repeat):
                order = args.modes[rnd % len(args.modes):] + args.modes[:rnd % len(args.modes)]
                for i, mode in enumerate(order):
                    r = lab.call(FN, mode, args.mib << 20, 5001 + i + 10 * rnd,
                                 timeout=3600)
                    # TLS modes put 29 bytes of record framing on every 16 KiB
                    if r["received"] < r["size"]:
                        raise SystemExit(f"{mode}: {r['received']} bytes arrived, fewer "
                                         f"than the {r['size']} sent")
                    r["round"] = rnd
                    rows.append(r)
                    print(f"round {rnd} {mode:9} {r['txconf']:>28} {r['MBps']:8.2f} MB/s "
                          f"sender CPU {r['sender_cpu_s']:.2f} s, NIC "
                          f"{r['nic_encrypt_s']:.2f} s + copy {r['nic_copy_s']:.2f} s",
                          flush=True)
            cond["load_after"] = os.getloadavg()
        finally:
            lab.down()
    cond.update({"mib_per_transfer": args.mib, "rounds": args.repeat,
                 "receiver": "plain TCP sink (the same for every mode)",
                 "cipher": "TLS 1.2 AES-GCM-128, 16 KiB records"})
    summary = summarize(rows)
    print(f"\n{args.mib} MiB per transfer, {args.repeat} rounds; {cond['lab_runs_on']}; "
          f"load {cond['load_before']} -> {cond['load_after']}")
    print(table(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"conditions": cond, "summary": summary,
                                              "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
