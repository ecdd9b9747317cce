"""The notebook's Up button to a ready TIPC lab, cold (no VM for the kernel yet) and warm
(another lab keeps that kernel's VM up), through the widgets as a trainee clicks them,
beside `labkit up` through the CLI in the same run (the yardstick: the widgets add only a
thread and progress callbacks).

Run as root: `.venv/bin/python benchmarks/panel_up.py [--json]`. TCG: absolute times move
with the load average, which is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOPOLOGY = ROOT / "topologies" / "cluster.yaml"


def vm_running(name: str = "lk-6-12") -> bool:
    from labkit.hosts.vm import persistent

    info = persistent.info(name)
    return info is not None and info.status == "running"


def panel_up(name: str) -> float:
    from labkit.widgets import LabPanel, LabSession

    panel = LabPanel(LabSession(TOPOLOGY, name=name))
    panel.up().wait(900)
    if panel.last_up_seconds is None:
        raise SystemExit(f"lab {name} did not come up: {panel.status.value}")
    return float(panel.last_up_seconds)


def cli_up(name: str) -> float:
    """`labkit up` of the same topology under another lab name (a renamed copy)."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load(TOPOLOGY.read_text())
        data["name"] = name
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "labkit.cli.main", "up", str(path)],
                       check=True, capture_output=True, cwd=ROOT, timeout=900)
        return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from labkit.lab.lab import down

    if vm_running():
        raise SystemExit("a debian-6.12 VM is already up (another lab holds it): the cold "
                         "case cannot be measured now")
    out: dict[str, object] = {"load_before": os.getloadavg()}
    names = [f"pb{os.getpid()}{s}" for s in "abc"]
    try:
        out["panel_up_cold_s"] = round(panel_up(names[0]), 1)
        out["panel_up_warm_s"] = round(panel_up(names[1]), 1)
        out["cli_up_warm_s"] = round(cli_up(names[2]), 1)
    finally:
        for name in names:
            down(name)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1) if args.json else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
