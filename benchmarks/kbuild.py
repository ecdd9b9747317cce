"""`labkit kernel build`, measured through the CLI a user types:

- a cold build of `--source 7.2` (labkit's minimal configuration; no object tree yet, the
  source package already unpacked: its one-time unpack is timed apart), and the size of
  the kernel it makes;
- the same command again (nothing changed: no make at all);
- a one-patch build on top of it (a one-line patch to net/tipc/core.c: the object tree
  is reused, only what the patch changes is recompiled);
- booting each: `labkit vm run --kernel built:NAME -- uname -r`, the patched one showing
  its patched message in dmesg, and `labkit run topologies/cluster.yaml --vm built:NAME`
  (its checks pass only if TIPC and the rest are built in).

Run as root: `.venv/bin/python benchmarks/kbuild.py [--jobs 2] [--skip-cold]`. The
machine is shared and VMs run under TCG: the load average is recorded with the figures.
Results: benchmarks/results/kbuild-7.2-DATE.json.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LABKIT = [sys.executable, "-m", "labkit.cli.main"]
NAME = "bench-7.2"
PATCHED = "bench-7.2-patched"
MARK = "patched by labkit's kbuild benchmark"


def cpu_children() -> float:
    """CPU seconds (user + system) of every finished descendant: load-independent."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


CPU: dict[str, float] = {}  # the last command's CPU seconds


def cli(*args: str, timeout: float = 7200, check: bool = True) -> tuple[float, Any]:
    start, cpu = time.monotonic(), cpu_children()
    res = subprocess.run([*LABKIT, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    took = time.monotonic() - start
    CPU["last"] = round(cpu_children() - cpu, 1)
    print(f"  labkit {' '.join(args)}: exit {res.returncode} in {took:.1f} s "
          f"({CPU['last']} CPU s)", flush=True)
    if check and res.returncode != 0:
        raise SystemExit(f"labkit {' '.join(args)} failed ({res.returncode}):\n"
                         f"{res.stderr.strip()[-3000:]}")
    return took, res


def save(res: dict[str, Any]) -> Path:
    """Written after every phase, so a run cut short still leaves its figures."""
    dest = ROOT / "benchmarks" / "results" / f"kbuild-7.2-{res['date'][:10]}.json"
    dest.write_text(json.dumps(res, indent=2) + "\n")
    return dest


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def make_patch(tree: Path, out: Path) -> None:
    """A one-line change to TIPC's start-up message, as a -p1 unified diff."""
    rel = "net/tipc/core.c"
    old = (tree / rel).read_text().splitlines(keepends=True)
    new = [ln.replace('pr_info("Started in single node mode\\n")',
                      f'pr_info("Started in single node mode ({MARK})\\n")') for ln in old]
    if new == old:
        raise SystemExit(f"{rel}: the line to patch is not there")
    out.write_text("".join(difflib.unified_diff(old, new, f"a/{rel}", f"b/{rel}")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-cold", action="store_true",
                    help="keep the object tree (measure only the cached and patched builds)")
    args = ap.parse_args()
    from labkit.hosts.vm import paths, sourcetree

    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        "jobs": args.jobs, "gcc": subprocess.run(["gcc", "--version"], capture_output=True,
                                                 text=True).stdout.splitlines()[0],
        "accel": "tcg" if not os.path.exists("/dev/kvm") else "kvm", "load_before": load(),
    }
    kb = sourcetree.kbuild_dir()
    if not args.skip_cold:
        for slot in (kb / "slots").glob("linux-source-7.2*"):
            shutil.rmtree(slot)
        for entry in (NAME, PATCHED):
            shutil.rmtree(paths.kernels_dir() / f"built:{entry}", ignore_errors=True)
    print("cold build", flush=True)
    took, out = cli("kernel", "build", "--source", "7.2", "--name", NAME, "--jobs",
                    str(args.jobs), "--json")
    cold = json.loads(out.stdout)
    image = Path(cold["kernel"]["image"])
    res["cold"] = {"seconds": round(took, 1), "cpu_seconds": CPU["last"],
                   "phases": cold["phases"],
                   "compiled": cold["compiled"], "cached": cold["cached"],
                   "bzimage_bytes": image.stat().st_size, "release": cold["kernel"]["version"],
                   "load_after": load()}
    save(res)
    print("cached rebuild", flush=True)
    took, out = cli("kernel", "build", "--source", "7.2", "--name", NAME, "--json")
    res["cached"] = {"seconds": round(took, 2), "cached": json.loads(out.stdout)["cached"]}
    save(res)

    print("one-patch build", flush=True)
    src = next((kb / "src").glob("linux-source-7.2_*"))
    with tempfile.TemporaryDirectory() as tmp:
        patch = Path(tmp) / "tipc-message.patch"
        make_patch(src, patch)
        took, out = cli("kernel", "build", "--source", "7.2", "--patch", str(patch), "--name",
                        PATCHED, "--jobs", str(args.jobs), "--json")
    patched = json.loads(out.stdout)
    res["one_patch"] = {"seconds": round(took, 1), "cpu_seconds": CPU["last"],
                        "phases": patched["phases"],
                        "compiled": patched["compiled"], "load_after": load()}
    save(res)

    print("boots", flush=True)
    took, out = cli("vm", "run", "--kernel", f"built:{NAME}", "--", "uname", "-r")
    res["boot_uname"] = {"seconds": round(took, 1), "uname": out.stdout.strip(),
                         "warnings": [ln for ln in out.stderr.splitlines() if "modprobe" in ln]}
    took, out = cli("vm", "run", "--kernel", f"built:{PATCHED}", "--", "sh", "-c",
                    "dmesg | grep -i 'single node mode'")
    res["boot_patched"] = {"seconds": round(took, 1), "dmesg": out.stdout.strip(),
                           "patch_in_kernel": MARK in out.stdout}
    save(res)
    took, out = cli("run", "topologies/cluster.yaml", "--vm", f"built:{NAME}", check=False)
    res["cluster"] = {"seconds": round(took, 1), "exit": out.returncode,
                      "tail": out.stdout.strip().splitlines()[-8:]}
    res["load_after"] = load()
    dest = save(res)
    print(json.dumps(res, indent=2))
    print(f"saved {dest}")
    return 0 if res["cluster"]["exit"] == 0 and res["boot_patched"]["patch_in_kernel"] else 1


if __name__ == "__main__":
    sys.exit(main())
