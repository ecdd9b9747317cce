"""A bisection across Debian's 6.12 point releases, measured through the CLI a user types:
boots made against the budget (2 + ceil(log2(N-1)) for N builds, within the issue's
goal of log2(N)+2 rounded up) and wall time, with the machine's conditions.

Run as root: `.venv/bin/python benchmarks/repro_bisect.py [--scenario repro/X.yaml]
[--from debian-6.12.43] [--to debian-6.12.118] [--out benchmarks/results]`. The kernels it
needs are fetched on demand (each ~106 MB; a cold fetch is part of the time, and reported
as such: the result says how many builds were already cached). Under TCG emulation, and
on a shared machine, absolute times move a lot: the load average is saved with them.
"""

from __future__ import annotations

import sys

# Run as a script, this file's directory comes first on sys.path, where this file would
# stand in for the standard library's `bisect` (random and tempfile import it).
_HERE = __import__("os").path.dirname(__import__("os").path.abspath(__file__))
sys.path[:] = [p for p in sys.path if __import__("os").path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LABKIT = [sys.executable, "-m", "labkit.cli.main"]


def conditions() -> dict[str, Any]:
    from labkit.hosts.vm import kernels

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    return {"host_kernel": platform.release(), "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(), "labkit_commit": commit,
            "accelerator": _accel(kernels),
            "cached_kernels": sorted(k.name for k in kernels.list_cached()),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _accel(kernels: Any) -> str:
    """What labkit boots VMs with here (its cached KVM probe), e.g. `tcg: failed to set MSR`."""
    import shutil

    from labkit.hosts.vm import kvm

    k = kernels.cached("debian-6.12")
    qemu = shutil.which("qemu-system-x86_64") or ""
    if k is None or not qemu:
        return "unknown"
    a = kvm.choose(k.image, qemu)
    return f"{a.kind}: {a.reason}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="repro/sockmap-fionread.yaml")
    ap.add_argument("--from", dest="first", default="debian-6.12.43")
    ap.add_argument("--to", dest="last", default="debian-6.12.118")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    cond = conditions()
    argv = ["repro", "bisect", args.scenario, "--from", args.first, "--to", args.last,
            "--json", "-o", "/tmp/labkit-bench-bisect"]
    start = time.monotonic()
    done = subprocess.run([*LABKIT, *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=7200)
    wall = time.monotonic() - start
    if not done.stdout.strip():
        raise SystemExit(f"labkit {' '.join(argv)} printed nothing ({done.returncode}): "
                         f"{done.stderr.strip()[-800:]}")
    res = json.loads(done.stdout)
    cond["loadavg_after"] = os.getloadavg()
    summary = {"command": "labkit " + " ".join(argv), "exit_code": done.returncode,
               "wall_seconds": round(wall, 1), "bisect_seconds": res["seconds"],
               "builds": len(res["builds"]), "boots": res["boots"],
               "boot_budget": res["boot_budget"], "answer": res["answer"],
               "pair": [res["last_before"], res["first_after"]],
               "probes": res["probes"], "conditions": cond,
               "progress_lines": done.stderr.count("\n")}
    name = Path(args.scenario).stem
    out = Path(args.out) / f"bisect-{name}-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{name}: {summary['answer']}\n{summary['boots']} boots (budget "
          f"{summary['boot_budget']}) for {summary['builds']} builds, "
          f"{summary['wall_seconds']:.0f} s wall; saved {out}")


if __name__ == "__main__":
    main()
