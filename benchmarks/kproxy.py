#!/usr/bin/env python3
"""kproxy: the seed's argument measured. For each pair of a kproxy topology (one per mode:
sockmap, splice, boomerang, direct; policy pairs; TLS pairs): throughput each way,
request/response latency, CPU seconds per GiB, bytes the proxy copied through its memory,
context switches per MiB, crypto operations per byte, data integrity (sha256), and iperf3
through the same path in the same run as the yardstick no one here wrote (labkit's meter
should agree with it within 5%).

Runs alternate pairs in a rotating order, `--repeat` times, and report medians (min-max)
with the load average before and after: the machine may be shared, and throughput on a
loaded 2-core machine moves by a factor of two from run to run.

    sudo .venv/bin/python benchmarks/kproxy.py [--seconds 3] [--repeat 3] [--json]
    sudo .venv/bin/python benchmarks/kproxy.py --topology topologies/kproxy-tls.yaml
    sudo .venv/bin/python benchmarks/kproxy.py --pairs kd --repeat 0 --agreement-runs 10
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from labkit.errors import LabkitError  # noqa: E402
from labkit.lab.lab import Lab  # noqa: E402

MiB = 1 << 20


def conditions(lab: Lab) -> dict[str, Any]:
    iperf = subprocess.run(["iperf3", "--version"], capture_output=True, text=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "host_kernel": os.uname().release, "lab_runs_on": lab.placement.describe(),
            "cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "iperf3": (iperf.stdout.splitlines() or ["?"])[0],
            "load_before": os.getloadavg()}


def spread(values: list[float]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3),
            "max": round(max(vals), 3), "n": len(vals)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair: the medians over the repeats of every figure."""
    out: dict[str, Any] = {}
    for pair in dict.fromkeys(r["pair"] for r in rows):
        mine = [r for r in rows if r["pair"] == pair]
        first = mine[0]

        def col(path: str, rs: list[dict[str, Any]] = mine) -> dict[str, float] | None:
            vals = []
            for r in rs:
                v: Any = r
                for key in path.split("."):
                    v = v.get(key) if isinstance(v, dict) else None
                vals.append(v if isinstance(v, (int, float)) else None)
            return spread(vals)

        s: dict[str, Any] = {"mode": first["mode"], "tls": first["tls"],
                             "policy": first["policy"], "path": first["path"]}
        for key in ("up.MBps", "down.MBps", "iperf3_up.MBps", "iperf3_down.MBps",
                    "latency.p50_us", "latency.p99_us", "up.cpu_s_per_GiB",
                    "down.cpu_s_per_GiB", "up.cpu_s_per_GiB_with_kworkers",
                    "down.cpu_s_per_GiB_with_kworkers", "up.rchar_per_byte",
                    "up.wchar_per_byte", "up.ctxsw_per_MiB", "down.ctxsw_per_MiB",
                    "up.queued_at_end_bytes", "down.queued_at_end_bytes",
                    "up.proxy_cpu_s", "up.softirq_s", "up.kworker_s",
                    "iperf3_up.cpu_s_per_GiB_with_kworkers", "crypto.ops_per_byte"):
            s[key] = col(key)
        s["intact"] = all(r["integrity"].get("intact") for r in mine)
        s["integrity_bytes"] = first["integrity"].get("bytes")
        s["errors"] = sorted({str(r[k].get("error")) for r in mine
                              for k in ("up", "down", "iperf3_up", "iperf3_down")
                              if isinstance(r.get(k), dict) and r[k].get("error")})
        for way in ("up", "down"):
            # paired: each run's labkit figure over the iperf3 run right after it
            ratios = [r[way]["MBps"] / r[f"iperf3_{way}"]["MBps"] for r in mine
                      if r[way].get("MBps") and (r.get(f"iperf3_{way}") or {}).get("MBps")]
            s[f"meter_vs_iperf3_{way}"] = round(statistics.median(ratios), 3) \
                if ratios else None
            s[f"meter_vs_iperf3_{way}_runs"] = [round(x, 3) for x in ratios]
        if first.get("crypto"):
            s["crypto_where"] = first["crypto"].get("where")
        out[pair] = s
    return out


def fmt(cell: dict[str, float] | None, digits: int = 0) -> str:
    if not cell:
        return "-"
    med = f"{cell['median']:.{digits}f}"
    if cell["n"] > 1 and cell["min"] != cell["max"]:
        return f"{med} ({cell['min']:.{digits}f}-{cell['max']:.{digits}f})"
    return med


def table(summary: dict[str, Any]) -> str:
    header = ("pair", "mode", "up MB/s", "iperf3 up", "down MB/s", "iperf3 down",
              "meter/iperf3", "rr p50/p99 us", "CPU s/GiB", "+kworkers", "copied/B",
              "ctxsw/MiB", "queued MiB", "crypto/B", "intact")
    rows = [header]
    for pair, s in summary.items():
        mode = s["mode"] + (" tls" if s["tls"] else "") + (" policy" if s["policy"] else "")
        ratio = "/".join(f"{s[f'meter_vs_iperf3_{w}']:.2f}" if s[f"meter_vs_iperf3_{w}"]
                         else "-" for w in ("up", "down"))
        copied = "-"
        if s["up.rchar_per_byte"] and s["up.wchar_per_byte"]:
            copied = f"{s['up.rchar_per_byte']['median'] + s['up.wchar_per_byte']['median']:.2f}"
        queued = "-"
        if s["up.queued_at_end_bytes"]:
            queued = f"{s['up.queued_at_end_bytes']['median'] / MiB:.0f}/" \
                     f"{(s['down.queued_at_end_bytes'] or {'median': 0})['median'] / MiB:.0f}"
        rows.append((pair, mode, fmt(s["up.MBps"]), fmt(s["iperf3_up.MBps"]),
                     fmt(s["down.MBps"]), fmt(s["iperf3_down.MBps"]), ratio,
                     f"{fmt(s['latency.p50_us'])}/{fmt(s['latency.p99_us'])}",
                     fmt(s["up.cpu_s_per_GiB"], 2), fmt(s["up.cpu_s_per_GiB_with_kworkers"], 2),
                     copied, fmt(s["up.ctxsw_per_MiB"], 2), queued,
                     fmt(s["crypto.ops_per_byte"], 1),
                     f"{'yes' if s['intact'] else 'NO'} ({s['integrity_bytes'] // MiB} MiB)"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def agreement_table(results: list[dict[str, Any]], runs: int, seconds: float) -> str:
    """The meter-vs-iperf3 check: medians of interleaved short runs, and their ratio."""
    rows = [("pair", "mode", "path", "way", "meter MB/s", "iperf3 MB/s", "meter/iperf3",
             "within 5%")]
    for res in results:
        if "skipped" in res:
            rows.append((res["pair"], "-", "-", "-", "-", "-", "-",
                         f"not run: {res['skipped']}"))
            continue
        for way in ("up", "down"):
            r = res[way]
            ratio = r.get("ratio_of_medians")
            shaped = f"held to {res['shaped_MBps']:g} MB/s" if res.get("shaped_MBps") \
                else "as is"
            rows.append((res["pair"], res["mode"], shaped, way, fmt(spread(r["meter_MBps"])),
                         fmt(spread(r["iperf3_MBps"])), f"{ratio:.3f}" if ratio else "-",
                         ("yes" if abs(ratio - 1) <= 0.05 else "NO") if ratio else
                         "; ".join(r["errors"])[:80] or "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    body = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True))
                     .rstrip() for r in rows)
    return (f"labkit's meter against iperf3 on the same path: {runs} runs of {seconds:g} s "
            "of each tool per direction, alternating (which goes first alternates too); "
            "median (min-max), and the ratio of the medians. 'held to': the client's link "
            "shaped by tc tbf on both its ends, so that the path, not the CPU, sets the "
            "rate and the two tools measure the same thing.\n" + body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default=str(ROOT / "topologies" / "kproxy.yaml"))
    ap.add_argument("--pairs", nargs="*", help="pairs to measure (default: all)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--integrity-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2000, help="request/response rounds")
    ap.add_argument("--agreement-runs", type=int, default=8,
                    help="meter-vs-iperf3 check: short runs of each tool, alternating, per "
                         "pair and direction (0: no check)")
    ap.add_argument("--agreement-seconds", type=float, default=2.0)
    ap.add_argument("--agreement-shaped", type=float, default=100.0, metavar="MBps",
                    help="repeat the check with the client's link held to this rate (tc "
                         "tbf), so the path and not the CPU sets it (0: do not)")
    ap.add_argument("--json", action="store_true", help="print the raw rows and summary")
    ap.add_argument("--save", help="write the JSON document here too")
    args = ap.parse_args()
    name = f"kpb{os.getpid() % 100000}"
    text = re.sub(r"^name:.*$", f"name: {name}", Path(args.topology).read_text(), count=1,
                  flags=re.M)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        lab = Lab.load(str(path))
        t0 = time.monotonic()
        lab.up()
        up_seconds = time.monotonic() - t0
        try:
            cond = conditions(lab)
            cond["up_seconds"] = round(up_seconds, 1)
            pairs = args.pairs or list(lab.topo.features["kproxy"].pairs)
            rows: list[dict[str, Any]] = []
            failed: list[dict[str, Any]] = []
            for i in range(args.repeat):
                order = pairs[i % len(pairs):] + pairs[:i % len(pairs)]
                for pair in order:
                    print(f"run {i + 1}/{args.repeat}: {pair}", file=sys.stderr, flush=True)
                    try:
                        rows.append(lab.call("labkit.features.kproxy.measure:measure_pair",
                                             pair, None, args.seconds, args.integrity_mib * MiB,
                                             args.rounds, True))
                    except LabkitError as exc:  # one failed run is a result, not the end
                        print(f"  {pair}: {exc.message}", file=sys.stderr, flush=True)
                        failed.append({"pair": pair, "run": i + 1, "error": exc.message})
            agreement = []
            for pair in pairs if args.agreement_runs > 0 else []:
                print(f"meter vs iperf3: {pair}, {args.agreement_runs} runs of "
                      f"{args.agreement_seconds:g} s each way", file=sys.stderr, flush=True)
                for shape in [None, *([args.agreement_shaped] if args.agreement_shaped else [])]:
                    try:
                        agreement.append(lab.call(
                            "labkit.features.kproxy.measure:agreement", pair, None,
                            args.agreement_runs, args.agreement_seconds, shape))
                    except LabkitError as exc:
                        failed.append({"pair": pair, "run": f"agreement (shaped {shape})",
                                       "error": exc.message})
            cond["load_after"] = os.getloadavg()
            cond["seconds_per_run"] = args.seconds
            cond["repeat"] = args.repeat
        finally:
            lab.down()
    summary = summarize(rows)
    doc = {"conditions": cond, "summary": summary, "rows": rows, "agreement": agreement,
           "failed_runs": failed}
    if args.save:
        Path(args.save).write_text(json.dumps(doc, indent=1) + "\n")
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(f"kproxy comparison: {cond['date']}, lab on {cond['lab_runs_on']} "
          f"(host kernel {cond['host_kernel']}), {cond['cpus']} CPUs ({cond['cpu']}), "
          f"Python {cond['python']}, {cond['iperf3']}; load average before "
          f"{'/'.join(f'{x:.1f}' for x in cond['load_before'])}, after "
          f"{'/'.join(f'{x:.1f}' for x in cond['load_after'])}; {args.seconds:g} s per "
          f"throughput run, {args.repeat} runs per pair (median (min-max)).")
    print(table(summary) if rows else "(no comparison runs: --repeat 0)")
    print("up = client to server. MB/s: what the receiver got while the sender sent "
          "(iperf3's view); meter/iperf3: median over the runs of labkit's MB/s over "
          "iperf3's in the run right after it; queued: MiB still in the path when the sender "
          "stopped (up/down). "
          "CPU s/GiB: proxy process + softirq (all CPUs) per GiB received, up direction; "
          "+kworkers adds kernel worker threads (where sockmap sends). copied/B: bytes the "
          "proxy passed through read()/write() per byte moved. crypto/B: encryptions and "
          "decryptions per byte end to end.")
    if agreement:
        print()
        print(agreement_table(agreement, args.agreement_runs, args.agreement_seconds))
    for f in failed:
        print(f"run {f['run']} of {f['pair']} failed: {f['error']}")
    bad = [p for p, s in summary.items() if not s["intact"] or s["errors"]]
    bad += [f["pair"] for f in failed if f["pair"] not in bad]
    if bad:
        print(f"problems: {', '.join(bad)}: "
              + "; ".join(f"{p}: {summary.get(p, {}).get('errors')}" for p in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
