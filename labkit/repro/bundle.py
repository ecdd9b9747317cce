"""The bundle a run leaves: a directory and the same as .tar.gz, readable without labkit.

    <scenario>-<UTC time>/
      README.txt             what ran, the table, where to look
      verdict.json           per kernel: expected, result, first failing expectation, steps
      scenario.yaml          the scenario as written; topology.yaml the lab it built
      labkit.json            labkit, Python and host versions, the command line
      <kernel>/kernel.json   uname -r, /proc/cmdline, package, options
      <kernel>/config-*      the kernel's build configuration (when labkit has it)
      <kernel>/dmesg.txt     the kernel log at the end of the run
      <kernel>/steps.json    each step: where it is written, outcome, timing, status
      <kernel>/steps/NN-*    each step's stdout and stderr
      <kernel>/pcaps/*.pcap  every capture

Key material never goes in unless asked (labkit.repro.redact).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import tarfile
import time
from typing import Any

from labkit.repro.model import Scenario
from labkit.repro.results import KernelRun, StepResult

# verdict.json's "format": 2 added it, each kernel's bundle directory and what `repro
# rerun` needs to get the same kernel again (kernel.json's "rerun"). Bundles without it
# come from an older labkit.
FORMAT = 2


def new_dir(parent: str, scenario: Scenario) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(parent, f"{scenario.name}-{stamp}")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(parent, f"{scenario.name}-{stamp}-{n}")
    os.makedirs(path, mode=0o755)
    return path


def labkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("labkit")
    except PackageNotFoundError:
        return "(not installed)"


def write_header(path: str, scenario: Scenario, argv: list[str]) -> None:
    """What is known before any kernel runs."""
    _text(os.path.join(path, "scenario.yaml"), scenario.text)
    _text(os.path.join(path, "topology.yaml"), scenario.topology_text)
    _json(os.path.join(path, "labkit.json"), {
        "labkit": labkit_version(), "python": sys.version.split()[0],
        "host_kernel": os.uname().release, "host": platform.platform(),
        "command": argv, "scenario_file": scenario.path,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    write_inputs(path, scenario)


INPUT_MAX = 4 << 20  # bytes of a scenario's own files a bundle carries


def write_inputs(path: str, scenario: Scenario) -> None:
    """The files the scenario's steps read (`{dir}/scripts/x.py` and its siblings, a
    replayed pcap), at the same place relative to scenario.yaml, so that `repro rerun`
    runs the bundle on a machine without the scenario's checkout."""
    from labkit.repro.model import InjectStep

    base = os.path.realpath(scenario.directory)
    wanted: set[str] = set()
    for rel in re.findall(r"\{dir\}/([\w./-]+)", scenario.text):
        full = os.path.realpath(os.path.join(base, rel))
        if os.path.isfile(full):
            folder = os.path.dirname(full)
            wanted.update(os.path.join(folder, f) for f in os.listdir(folder))
    wanted.update(s.pcap for s in scenario.steps if isinstance(s, InjectStep) and s.pcap)
    budget = INPUT_MAX
    for full in sorted(wanted):
        full = os.path.realpath(full)
        if (not full.startswith(base + os.sep) or not os.path.isfile(full)
                or "__pycache__" in full):
            continue
        size = os.path.getsize(full)
        if size > budget:
            continue
        budget -= size
        dest = os.path.join(path, os.path.relpath(full, base))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(full, dest)


def write_steps(directory: str, steps: list[StepResult]) -> None:
    """steps.json and each step's output (background steps wrote theirs already)."""
    os.makedirs(os.path.join(directory, "steps"), exist_ok=True)
    for s in steps:
        stem = f"steps/{s.index:02d}-{s.kind}" + (f"-{s.name}" if s.name else "")
        for suffix, text in ((".out", s.stdout), (".err", s.stderr)):
            rel = stem + suffix
            if text and rel not in s.files:
                _text(os.path.join(directory, rel), text)
                s.files.append(rel)
    _json(os.path.join(directory, "steps.json"), [s.to_json() for s in steps])


def write_kernel(directory: str, info: dict[str, Any], config: str | None) -> None:
    _json(os.path.join(directory, "kernel.json"), info)
    if config and os.path.isfile(config):
        shutil.copyfile(config, os.path.join(directory, os.path.basename(config)))


def kernel_config(kernel: str, version: str) -> str | None:
    """Where the kernel's build configuration is on this machine, if anywhere."""
    if kernel == "host":
        path = f"/boot/config-{os.uname().release}"
        return path if os.path.isfile(path) else None
    from labkit.errors import LabkitError
    from labkit.hosts import kernels

    try:
        k = kernels.resolve(kernel)
    except LabkitError:
        return None
    if k.source == "tree":
        path = os.path.join(k.run_arg, ".config")
        return path if os.path.isfile(path) else None
    path = os.path.join(os.path.dirname(k.image), f"config-{version or k.version}")
    return path if os.path.isfile(path) else None


def write_verdict(path: str, scenario: Scenario, runs: list[KernelRun], code: int,
                  keys_included: bool, extra: dict[str, Any] | None = None) -> None:
    from labkit.repro.table import rows

    _json(os.path.join(path, "verdict.json"), {
        "format": FORMAT, "scenario": scenario.name, "title": scenario.title,
        "source": scenario.source.describe(), "exit_code": code,
        "as_expected": code == 0, "keys_included": keys_included,
        "kernels": [r.to_json() for r in runs], **(extra or {})})
    header, body = rows(runs)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    table = "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                      for r in [header, *body])
    _text(os.path.join(path, "README.txt"), (
        f"labkit repro bundle: {scenario.name}\n{scenario.title}\n"
        f"Source: {scenario.source.describe()}\n\n{table}\n\nexit code {code} "
        "(0: as the scenario says on every kernel, 1: not, 2: could not run)\n\n"
        "verdict.json has every step's outcome; each kernel's directory has its dmesg, "
        "kernel config, per-step output (steps/) and captures (pcaps/).\n"))


def archive(path: str) -> str:
    """path.tar.gz beside the directory, holding it under its own name."""
    out = path.rstrip("/") + ".tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(path, arcname=os.path.basename(path.rstrip("/")))
    return out


def _text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _json(path: str, data: Any) -> None:
    _text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
