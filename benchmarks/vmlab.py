"""Labs in VMs, measured through the CLI a user types, each beside its yardstick in the
same run:

- `labkit up topologies/cluster.yaml` to the prompt, cold (no VM for its kernel) and warm
  (another lab keeps that kernel's VM up);
- `labkit exec LAB NODE -- true` beside `labkit vm exec VM -- true` (the agent alone);
- `labkit tipc status LAB` (netlink in the VM's daemon);
- throughput over the link between two kernels (cluster-2k: n1 on 6.12 -> n3 on 6.1)
  beside the in-kernel path (n1 -> n2), TIPC and TCP.

Run as root: `.venv/bin/python benchmarks/vmlab.py [--repeat N] [--json]`. Under TCG
emulation, and on a shared machine, absolute figures move a lot: the load average is
printed with them.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LABKIT = [sys.executable, "-m", "labkit.cli.main"]


def cli(*args: str, timeout: float = 1200) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    res = subprocess.run([*LABKIT, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"labkit {' '.join(args)} failed ({res.returncode}): "
                         f"{res.stderr.strip()[-500:]}")
    return took, res


def renamed(source: str, name: str, tmp: str) -> str:
    text = (ROOT / "topologies" / source).read_text()
    lines = [f"name: {name}" if ln.startswith("name:") else ln for ln in text.splitlines()]
    path = os.path.join(tmp, f"{name}.yaml")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def throughput(lab: str, src: str, dst: str, proto: str, seconds: float) -> float:
    args = ["traffic", lab, "--proto", proto, "--from", src, "--to", dst, "--duration",
            str(seconds), "--size", "65536", "--json"]
    if proto == "tipc":
        args += ["--socket", "stream"]
    _, res = cli(*args)
    return round(json.loads(res.stdout)["bytes_per_s"] / 1e6, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        cold = renamed("cluster.yaml", "bvcold", tmp)
        warm = renamed("cluster.yaml", "bvwarm", tmp)
        span = renamed("cluster-2k.yaml", "bvspan", tmp)
        made: list[str] = []
        try:
            out["up_cold_s"], _ = cli("up", cold)
            made.append("bvcold")
            out["up_warm_s"], _ = cli("up", warm)  # bvcold keeps the kernel's VM up
            made.append("bvwarm")
            vm = "lk-6-12"
            agent = [cli("vm", "exec", vm, "--", "true")[0] for _ in range(args.repeat)]
            lab_exec = [cli("exec", "bvwarm", "n1", "--", "true")[0]
                        for _ in range(args.repeat)]
            status = [cli("tipc", "status", "bvwarm", "--json")[0] for _ in range(args.repeat)]
            out.update({
                "vm_exec_s": median(agent), "lab_exec_s": median(lab_exec),
                "lab_exec_over_vm_exec": round(median(lab_exec) / median(agent), 2),
                "tipc_status_s": median(status),
            })
            out["up_span_s"], _ = cli("up", span)
            made.append("bvspan")
            rates = {}
            for proto in ("tipc", "tcp"):
                rates[proto] = {
                    "across_kernels_MBps": throughput("bvspan", "n1", "n3", proto,
                                                      args.seconds),
                    "in_kernel_MBps": throughput("bvspan", "n1", "n2", proto, args.seconds),
                }
            out["throughput_64KiB"] = rates
        finally:
            for lab in reversed(made):
                subprocess.run([*LABKIT, "down", lab], cwd=ROOT, capture_output=True)
    out["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for key, value in out.items():
            print(f"{key:26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
