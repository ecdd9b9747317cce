"""Labs in VMs, measured through the CLI a user types, each beside its yardstick in the
same run, the two sides of each pair interleaved (a shared machine's load moves between
rounds, so each ratio is taken within one round):

- cold `labkit up topologies/cluster.yaml` (no VM for its kernel) beside a bare
  `labkit vm run --kernel debian-6.12 -- true` (issue 18's goal: <= 1.5x);
- warm `labkit up --vm debian-6.12 topologies/pair.yaml` (the kernel's VM already up)
  beside the same lab's `labkit up --host` on this machine's kernel (goal: <= 3x);
- `labkit exec LAB n1 -- true` beside `labkit vm exec VM -- true` (goal: <= 1.2x);
- guest-side seconds per daemon verb: a fresh guest Python importing what the daemon
  imports to serve that verb (the emulation tax the daemon pays once per VM), and whether
  scapy, matplotlib, rich or typer came with it;
- the phase trace of the last cold `up` (labkit writes it in the lab's state dir);
- with --span: `labkit tipc status`, and throughput across two kernels beside one kernel.

The VM side uses a cached kernel build no one else's VM runs (--kernel, default
debian-6.12.111, VM lk-6-12-111), so a "cold" up really boots whatever VMs other people
keep up on debian-6.12, and theirs are never touched.

Run as root: `.venv/bin/python benchmarks/vmlab.py [--repeat N] [--json] [--out FILE]`.
Under TCG emulation on a shared machine absolute figures move a lot: the load average
before and after each pair is saved with it.
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
KERNEL = "debian-6.12.111"
VM = "lk-6-12-111"
HEAVY = ("scapy", "matplotlib", "rich", "typer")
# What the daemon imports to serve each verb (its start, then the verb's own module).
VERBS = {
    "daemon start": "import labkit.hosts.guestd",
    "lab build (guest_up)": "import labkit.hosts.guestd, labkit.lab.deploy",
    "status": "import labkit.hosts.guestd, labkit.lab.ops, labkit.lab.lab",
    "verify (checks)": "import labkit.hosts.guestd, labkit.lab.ops, labkit.verify.checks",
    "features (all)": "import labkit.hosts.guestd, labkit.lab.deploy; "
                      "from labkit import features; import importlib; "
                      "[importlib.import_module(type(f).__module__) "
                      "for f in features.all_features()]",
}


def cli(*args: str, timeout: float = 1800, check: bool = True
        ) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    res = subprocess.run([*LABKIT, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    took = round(time.monotonic() - start, 3)
    if check and res.returncode != 0:
        raise SystemExit(f"labkit {' '.join(args)} failed ({res.returncode}): "
                         f"{res.stderr.strip()[-800:]}")
    return took, res


def renamed(source: str, name: str, tmp: str) -> str:
    text = (ROOT / "topologies" / source).read_text()
    lines = [f"name: {name}" if ln.startswith("name:") else ln for ln in text.splitlines()]
    path = os.path.join(tmp, f"{name}.yaml")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def pair(name: str, a: tuple[str, Any], b: tuple[str, Any]) -> dict[str, Any]:
    """Time the yardstick b, then a, back to back; the ratio a/b is within this round."""
    before = load()
    tb = b[1]()
    ta = a[1]()
    return {"pair": name, a[0]: ta, b[0]: tb, "ratio": round(ta / tb, 2),
            "load_before": before, "load_after": load()}


def guest_verbs() -> dict[str, Any]:
    """Seconds a fresh guest Python takes to import what each verb needs, and the heavy
    modules that came with it."""
    py = str(ROOT / ".venv" / "bin" / "python")
    out: dict[str, Any] = {}
    for verb, code in VERBS.items():
        probe = (f"import time, sys; t = time.monotonic(); {code}; "
                 f"d = time.monotonic() - t; "
                 f"print(round(d, 2), [m for m in {HEAVY!r} if m in sys.modules])")
        _, res = cli("vm", "exec", VM, "--", py, "-c", probe)
        secs, _, heavy = res.stdout.strip().splitlines()[-1].partition(" ")
        out[verb] = {"guest_s": float(secs), "heavy_imported": heavy}
    return out


def last_trace(lab: str) -> Any:
    path = Path(os.environ.get("LABKIT_STATE_DIR", "/run/labkit/labs")) / f"{lab}.trace"
    return json.loads(path.read_text()) if path.exists() else None


def throughput(lab: str, src: str, dst: str, proto: str, seconds: float) -> float:
    args = ["traffic", lab, "--proto", proto, "--from", src, "--to", dst, "--duration",
            str(seconds), "--size", "65536", "--json"]
    if proto == "tipc":
        args += ["--socket", "stream"]
    _, res = cli(*args)
    return round(json.loads(res.stdout)["bytes_per_s"] / 1e6, 1)


def main() -> int:
    global KERNEL, VM
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2, help="rounds of each pair")
    ap.add_argument("--execs", type=int, default=3, help="exec pairs per round")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--span", action="store_true", help="also the two-kernel lab")
    ap.add_argument("--kernel", default=KERNEL, help="a cached kernel no running VM uses")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", help="also save the JSON result here")
    args = ap.parse_args()
    out: dict[str, Any] = {"load_before": os.getloadavg(), "started": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
        text=True).stdout.strip(), "rounds": []}
    from labkit.lab.placement import vm_name

    KERNEL, VM = args.kernel, vm_name(args.kernel)
    out["kernel"], out["vm"] = KERNEL, VM
    with tempfile.TemporaryDirectory() as tmp:
        cold = renamed("cluster.yaml", "bvcold", tmp)
        hostpair = renamed("pair.yaml", "bvhost", tmp)
        vmpair = renamed("pair.yaml", "bvvm", tmp)
        span = renamed("cluster-2k.yaml", "bvspan", tmp)
        made: list[str] = []
        try:
            for _ in range(args.repeat):
                rnd: dict[str, Any] = {}

                def up_cold() -> float:
                    took, _ = cli("up", "--vm", KERNEL, cold)
                    made.append("bvcold")
                    return took

                rnd["cold"] = pair("cold up cluster / bare vm run",
                                   ("up_cold_s", up_cold),
                                   ("vm_run_true_s", lambda: cli(
                                       "vm", "run", "--kernel", KERNEL, "--", "true")[0]))

                def up_host() -> float:
                    took, _ = cli("up", "--host", hostpair)
                    made.append("bvhost")
                    return took

                def up_vm() -> float:
                    took, _ = cli("up", "--vm", KERNEL, vmpair)
                    made.append("bvvm")
                    return took

                rnd["warm"] = pair("warm up pair in VM / up pair on host",
                                   ("up_warm_vm_s", up_vm), ("up_host_s", up_host))
                execs = [pair("lab exec / vm exec",
                              ("lab_exec_s", lambda: cli("exec", "bvcold", "n1", "--",
                                                         "true")[0]),
                              ("vm_exec_s", lambda: cli("vm", "exec", VM, "--", "true")[0]))
                         for _ in range(args.execs)]
                rnd["exec"] = {"lab_exec_s": median([e["lab_exec_s"] for e in execs]),
                               "vm_exec_s": median([e["vm_exec_s"] for e in execs]),
                               "ratio": median([e["ratio"] for e in execs]),
                               "load": [execs[0]["load_before"], execs[-1]["load_after"]]}
                if not out.get("guest_verbs"):
                    out["guest_verbs"] = guest_verbs()
                out["cold_up_trace"] = last_trace("bvcold")
                for lab in ("bvvm", "bvhost", "bvcold"):
                    _, res = cli("down", lab, check=False)
                    if res.returncode != 0:  # say it: the next round's cold up would fail
                        print(f"labkit down {lab}: {res.stderr.strip()[-400:]}",
                              file=sys.stderr)
                    if lab in made:
                        made.remove(lab)
                cli("vm", "stop", VM, check=False)  # the next round's up is cold again
                out["rounds"].append(rnd)
                if args.out:  # a run cut short still leaves its finished rounds
                    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
            if args.span:
                out["up_span_s"], _ = cli("up", span)
                made.append("bvspan")
                out["tipc_status_s"] = median([cli("tipc", "status", "bvspan", "--json")[0]
                                               for _ in range(3)])
                out["throughput_64KiB"] = {proto: {
                    "across_kernels_MBps": throughput("bvspan", "n1", "n3", proto,
                                                      args.seconds),
                    "in_kernel_MBps": throughput("bvspan", "n1", "n2", proto, args.seconds),
                } for proto in ("tipc", "tcp")}
        finally:
            for lab in reversed(made):
                cli("down", lab, check=False)
            cli("vm", "stop", VM, check=False)
    rounds = out["rounds"]
    out["summary"] = {
        "cold_up_over_bare_boot": median([r["cold"]["ratio"] for r in rounds]),
        "warm_vm_up_over_host_up": median([r["warm"]["ratio"] for r in rounds]),
        "lab_exec_over_vm_exec": median([r["exec"]["ratio"] for r in rounds]),
    }
    out["load_after"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    else:
        for key, value in out.items():
            print(f"{key:26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
