"""Labs in VMs, measured through the CLI a user types, each beside its yardstick in the
same run, the two sides of each pair interleaved (a shared machine's load moves between
rounds, so each ratio is taken within one round):

- cold `labkit up topologies/cluster.yaml` (no VM for its kernel) beside a bare
  `labkit vm run --kernel debian-6.12 -- true` (issue 18's goal: <= 1.5x);
- warm `labkit up --vm debian-6.12 topologies/pair.yaml` (the kernel's VM already up)
  beside the same lab's `labkit up --host` on this machine's kernel (goal: <= 3x);
- `labkit exec LAB n1 -- true` beside `labkit vm exec VM -- true` (goal: <= 1.2x);
- one repro scenario on two kernels (each in a fresh VM) beside two bare boots of those
  kernels: the VM part of the repro (its time minus the scenario's own steps: boot, build,
  collecting, down) over the two boots (goal: <= 2x);
- guest-side seconds per verb (up, status, check, verify, tipc status, capture, exec,
  down) from the trace labkit writes (LABKIT_TRACE=1: each daemon call's `guest_s`);
- guest-side import seconds per daemon verb: a fresh guest Python importing what the
  daemon imports to serve that verb, and whether scapy, matplotlib, rich or typer came;
- the phase trace of the last cold `up` (labkit writes it in the lab's state dir);
- with --span: `labkit tipc status`, and throughput across two kernels beside one kernel.

The VM side uses a cached kernel build no one else's VM runs (--kernel, default
debian-6.12.111, VM lk-6-12-111), so a "cold" up really boots whatever VMs other people
keep up on debian-6.12, and theirs are never touched.

Run as root: `nice .venv/bin/python benchmarks/vmlab.py --quick` (one round of each pair,
~10 min on a quiet 2-core TCG machine) or `--repeat N` (best of N per side). Under TCG on a
shared machine absolute figures move a lot: the conditions (load average before and after
each pair, cores, accelerator, kernels, commit) are saved with the results, and the table
at the end gives each goal's ratio of the best times in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
REPRO = "repro/sockmap-fionread.yaml"  # short steps; kernels debian-6.1 and debian-6.12
GOALS = {"cold_up_over_bare_boot": 1.5, "warm_vm_up_over_host_up": 3.0,
         "lab_exec_over_vm_exec": 1.2, "repro_vm_part_over_two_boots": 2.0}
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


def cli(*args: str, timeout: float = 1800, check: bool = True,
        env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    res = subprocess.run([*LABKIT, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT, env=None if env is None else {**os.environ, **env})
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


def conditions() -> dict[str, Any]:
    """What the figures depend on: load, cores, accelerator, kernels, commit."""
    _, accel = cli("vm", "accel", "--json", check=False)
    try:
        kind = json.loads(accel.stdout).get("kind")
    except ValueError:
        kind = None
    git = subprocess.run(["git", "status", "--porcelain", "--", "labkit"], cwd=ROOT,
                         capture_output=True, text=True)
    return {"load": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
            "accel": kind, "vm_kernel": KERNEL, "host_kernel": os.uname().release,
            # None: not a git checkout (an exported tree)
            "labkit_tree_clean": not git.stdout.strip() if git.returncode == 0 else None}


CALL = re.compile(r"call (\S+) done .*?guest_s=([0-9.]+)")


def guest_seconds(*args: str, timeout: float = 900) -> dict[str, Any]:
    """A verb's wall seconds and the guest-side seconds of each daemon call it made, from
    the trace labkit prints with LABKIT_TRACE=1."""
    try:
        took, res = cli(*args, check=False, env={"LABKIT_TRACE": "1"}, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"wall_s": timeout, "guest_s": 0.0, "calls": {}, "exit": "timeout"}
    calls: dict[str, float] = {}
    for fn, secs in CALL.findall(res.stderr):
        name = fn.rpartition(":")[2]
        calls[name] = round(calls.get(name, 0.0) + float(secs), 3)
    return {"wall_s": took, "guest_s": round(sum(calls.values()), 3), "calls": calls,
            "exit": res.returncode}


def verb_table(lab: str, topo: str, tmp: str) -> dict[str, Any]:
    """Guest-side seconds of each verb on a cold lab (the VM of --kernel is not running)."""
    pcap = os.path.join(tmp, "verbs.pcap")
    out = {"up (cold)": guest_seconds("up", "--vm", KERNEL, topo)}
    out["status"] = guest_seconds("status", lab, "--json")
    out["exec"] = guest_seconds("exec", lab, "n1", "--", "true")
    out["tipc status"] = guest_seconds("tipc", "status", lab, "--json")
    out["verify crossover"] = guest_seconds("verify", "crossover", lab, "--from", "n1",
                                            "--to", "n2")
    out["check"] = guest_seconds("check", lab)
    out["capture (1 frame)"] = guest_seconds("capture", lab, "n1", "eth1", "-w", pcap,
                                             "--count", "1", timeout=120)
    out["down"] = guest_seconds("down", lab)
    cli("vm", "stop", VM, check=False)
    return out


def repro_pair(scenario: str, tmp: str) -> dict[str, Any]:
    """The scenario on its kernels, each in a fresh VM, beside a bare boot of each."""
    before = load()
    _, res = cli("repro", "run", scenario, "--out", os.path.join(tmp, "bundles"), "--json",
                 check=False)
    try:
        verdict = json.loads(res.stdout)
    except ValueError:
        raise SystemExit(f"labkit repro run {scenario} printed no verdict: "
                         f"{res.stderr.strip()[-800:]}") from None
    runs = verdict["kernels"]
    vm_part = sum(r["seconds"] - sum(s["seconds"] for s in r["steps"][1:]) for r in runs)
    boots = {r["kernel"]: cli("vm", "run", "--kernel", r["kernel"], "--", "true")[0]
             for r in runs}
    return {"pair": "repro VM part / bare boots", "scenario": scenario,
            "kernels": {r["kernel"]: {"seconds": r["seconds"], "result": r["result"],
                                      "up_s": r["steps"][0]["seconds"]} for r in runs},
            "repro_vm_part_s": round(vm_part, 3), "bare_boots_s": round(sum(boots.values()), 3),
            "boots": boots, "ratio": round(vm_part / sum(boots.values()), 2),
            "load_before": before, "load_after": load()}


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


def best(rounds: list[dict[str, Any]], key: str, a: str, b: str) -> dict[str, Any]:
    """Best of each side over the rounds (the least disturbed by the machine's load)."""
    aa = [r[key][a] for r in rounds if key in r]
    bb = [r[key][b] for r in rounds if key in r]
    if not aa or not bb:
        return {}
    return {a: min(aa), b: min(bb), "ratio": round(min(aa) / min(bb), 2), "n": len(aa)}


def table(out: dict[str, Any]) -> str:
    rows = ["| goal | best a / best b (s) | ratio | goal | met |", "|---|---|---|---|---|"]
    for goal, limit in GOALS.items():
        got = out["best"].get(goal) or {}
        if not got:
            continue
        a, b = [v for k, v in got.items() if k.endswith("_s")][:2]
        rows.append(f"| {goal} | {a:.1f} / {b:.1f} | {got['ratio']:.2f}x | <= {limit}x | "
                    f"{'yes' if got['ratio'] <= limit else 'NO'} |")
    verbs = out.get("verbs") or {}
    if verbs:
        rows += ["", "| verb | wall (s) | guest-side (s) | daemon calls |", "|---|---|---|---|"]
        for verb, v in verbs.items():
            calls = ", ".join(f"{k} {s:.2f}" for k, s in v["calls"].items()) or "-"
            rows.append(f"| {verb} | {v['wall_s']:.1f} | {v['guest_s']:.2f} | {calls} |")
    return "\n".join(rows)


def main() -> int:
    global KERNEL, VM
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="one round of each pair, the verb table, no import probe")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of each pair (best of)")
    ap.add_argument("--execs", type=int, default=3, help="exec pairs per round")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--span", action="store_true", help="also the two-kernel lab")
    ap.add_argument("--kernel", default=KERNEL, help="a cached kernel no running VM uses")
    ap.add_argument("--repro", default=REPRO, help="the scenario of the repro pair")
    ap.add_argument("--no-repro", action="store_true", help="skip the repro pair")
    ap.add_argument("--no-verbs", action="store_true", help="skip the per-verb table")
    ap.add_argument("--imports", action="store_true", help="also the guest import probe")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", help="also save the JSON result here")
    args = ap.parse_args()
    if args.quick:
        args.repeat = 1
    from labkit.lab.placement import vm_name

    KERNEL, VM = args.kernel, vm_name(args.kernel)
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                                 cwd=ROOT, capture_output=True,
                                                 text=True).stdout.strip(),
                           "argv": sys.argv[1:], "conditions": conditions(), "rounds": []}
    out["kernel"], out["vm"] = KERNEL, VM

    def save() -> None:  # a run cut short still leaves what it measured
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        cold = renamed("cluster.yaml", "s1-bvcold", tmp)
        hostpair = renamed("pair.yaml", "s1-bvhost", tmp)
        vmpair = renamed("pair.yaml", "s1-bvvm", tmp)
        span = renamed("cluster-2k.yaml", "s1-bvspan", tmp)
        made: list[str] = []
        try:
            for _ in range(args.repeat):
                rnd: dict[str, Any] = {}

                def up_cold() -> float:
                    took, _ = cli("up", "--vm", KERNEL, cold)
                    made.append("s1-bvcold")
                    return took

                rnd["cold"] = pair("cold up cluster / bare vm run",
                                   ("up_cold_s", up_cold),
                                   ("vm_run_true_s", lambda: cli(
                                       "vm", "run", "--kernel", KERNEL, "--", "true")[0]))

                def up_host() -> float:
                    took, _ = cli("up", "--host", hostpair)
                    made.append("s1-bvhost")
                    return took

                def up_vm() -> float:
                    took, _ = cli("up", "--vm", KERNEL, vmpair)
                    made.append("s1-bvvm")
                    return took

                rnd["warm"] = pair("warm up pair in VM / up pair on host",
                                   ("up_warm_vm_s", up_vm), ("up_host_s", up_host))
                execs = [pair("lab exec / vm exec",
                              ("lab_exec_s", lambda: cli("exec", "s1-bvcold", "n1", "--",
                                                         "true")[0]),
                              ("vm_exec_s", lambda: cli("vm", "exec", VM, "--", "true")[0]))
                         for _ in range(args.execs)]
                rnd["exec"] = {"lab_exec_s": min(e["lab_exec_s"] for e in execs),
                               "vm_exec_s": min(e["vm_exec_s"] for e in execs),
                               "ratio_median": median([e["ratio"] for e in execs]),
                               "samples": execs,
                               "load": [execs[0]["load_before"], execs[-1]["load_after"]]}
                rnd["exec"]["ratio"] = round(rnd["exec"]["lab_exec_s"]
                                             / rnd["exec"]["vm_exec_s"], 2)
                if args.imports and not out.get("guest_imports"):
                    out["guest_imports"] = guest_verbs()
                out["cold_up_trace"] = last_trace("s1-bvcold")
                for lab in ("s1-bvvm", "s1-bvhost", "s1-bvcold"):
                    _, res = cli("down", lab, check=False)
                    if res.returncode != 0:  # say it: the next round's cold up would fail
                        print(f"labkit down {lab}: {res.stderr.strip()[-400:]}",
                              file=sys.stderr)
                    if lab in made:
                        made.remove(lab)
                cli("vm", "stop", VM, check=False)  # the next round's up is cold again
                if not args.no_repro:
                    rnd["repro"] = repro_pair(args.repro, tmp)
                out["rounds"].append(rnd)
                save()
            if not args.no_verbs:
                out["verbs"] = verb_table("s1-bvcold", cold, tmp)
                save()
            if args.span:
                out["up_span_s"], _ = cli("up", span)
                made.append("s1-bvspan")
                out["tipc_status_s"] = median([cli("tipc", "status", "s1-bvspan", "--json")[0]
                                               for _ in range(3)])
                out["throughput_64KiB"] = {proto: {
                    "across_kernels_MBps": throughput("s1-bvspan", "n1", "n3", proto,
                                                      args.seconds),
                    "in_kernel_MBps": throughput("s1-bvspan", "n1", "n2", proto, args.seconds),
                } for proto in ("tipc", "tcp")}
        finally:
            for lab in reversed(made):
                cli("down", lab, check=False)
            cli("down", "s1-bvcold", check=False)
            cli("vm", "stop", VM, check=False)
    rounds = out["rounds"]
    out["best"] = {
        "cold_up_over_bare_boot": best(rounds, "cold", "up_cold_s", "vm_run_true_s"),
        "warm_vm_up_over_host_up": best(rounds, "warm", "up_warm_vm_s", "up_host_s"),
        "lab_exec_over_vm_exec": best(rounds, "exec", "lab_exec_s", "vm_exec_s"),
        "repro_vm_part_over_two_boots": best(rounds, "repro", "repro_vm_part_s",
                                             "bare_boots_s"),
    }
    out["conditions"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out["table"] = table(out)
    save()
    if args.json:
        print(json.dumps(out, indent=1))
    print(out["table"], file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
