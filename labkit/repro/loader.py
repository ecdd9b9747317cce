"""Scenario file -> validated Scenario, or a ScenarioError listing every located problem.

Scenarios are read like topologies (labkit.topology.located keeps every key's position):
every mistake is reported at once with FILE:LINE:COLUMN and a fix, unknown keys get a
did-you-mean, and an inline topology's own mistakes point into the scenario file. Nothing
here touches a kernel.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from labkit.base import files, names
from labkit.errors import LabkitError, Loc, TopologyError
from labkit.repro import model
from labkit.repro.model import (
    ALWAYS,
    EXPECTABLE,
    HOST,
    REPRODUCED,
    KernelPlan,
    Scenario,
    Source,
    Step,
)
from labkit.repro.pcapfile import read_pcap_file
from labkit.repro.steps_loader import STEP_KEYS, choice
from labkit.repro.steps_loader import parse_steps as _steps
from labkit.topology import loader as topo_loader
from labkit.topology.fields import (
    Problems,
    as_list,
    as_map,
    as_name,
    as_str,
    check_keys,
    suggest,
)
from labkit.topology.located import LList, LMap, load_text
from labkit.topology.model import Topology

TOP_KEYS = ["scenario", "title", "description", "source", "topology", "kernels",
            "kernel_options", "steps"]
REQUIRED = ("scenario", "title", "source", "topology", "kernels", "steps")
SOURCE_KEYS = ["commit", "subject", "url", "report"]
KERNEL_KEYS = ["expect", "options"]
OPTION_RE = re.compile(r"^[A-Za-z0-9_.,:=+/@-]+$")


class ScenarioError(TopologyError):
    """One or more located problems in a scenario file, all reported at once (exit 2)."""


def load(path: str) -> Scenario:
    path = os.path.abspath(path)
    try:
        text = files.read_bounded(path, files.SCENARIO)  # bounded, regular files only
    except files.FileRefused as exc:
        raise ScenarioError([exc]) from None
    return loads(text, path)


def loads(text: str, path: str) -> Scenario:
    if not text.strip():
        raise ScenarioError([LabkitError(
            "the scenario file is empty.", hint="A scenario needs scenario:, title:, "
            "source:, topology:, kernels: and steps:; `labkit repro new LAB` writes one.",
            loc=Loc(path, 1, 1))])
    try:
        doc = load_text(text, path)
    except TopologyError as exc:
        raise ScenarioError(exc.problems) from None
    return parse(doc, path, text)


def parse(doc: Any, path: str, text: str) -> Scenario:
    p = Problems()
    if not isinstance(doc, LMap):
        p.add(getattr(doc, "loc", Loc(path, 1, 1)), "a scenario file must be a mapping "
              "(scenario:, title:, source:, topology:, kernels:, steps:).",
              "See repro/sockmap-fionread.yaml for the shape.")
        raise ScenarioError(p.items)
    check_keys(doc, TOP_KEYS, "the scenario", p, required=REQUIRED)
    name = (as_name(doc["scenario"], doc.val_loc("scenario"), "the scenario name", p, 40)
            if "scenario" in doc else None)
    title = as_str(doc["title"], doc.val_loc("title"), "title", p) if "title" in doc else ""
    description = (as_str(doc["description"], doc.val_loc("description"), "description", p)
                   if "description" in doc else "")
    source = _source(doc, p) if "source" in doc else Source()
    topo, topo_path, topo_text = (_topology(doc, path, name or "scenario", p)
                                  if "topology" in doc else (None, path, ""))
    kernels = _kernels(doc, path, p) if "kernels" in doc else []
    steps = _steps(doc, topo, path, p) if "steps" in doc else []
    _check_claims(doc, kernels, steps, p)
    if p:
        raise ScenarioError(p.items)
    assert topo is not None and name is not None
    return Scenario(name=name, title=title or "", path=path, text=text, source=source,
                    topology=topo, topology_path=topo_path, topology_text=topo_text,
                    kernels=kernels, steps=steps, description=description or "",
                    kernel_options=_common_options(doc))


# -- header ---------------------------------------------------------------------------------


def _source(doc: LMap, p: Problems) -> Source:
    block = as_map(doc["source"], doc.val_loc("source"), "source", p)
    if block is None:
        return Source()
    check_keys(block, SOURCE_KEYS, "source", p)
    values = {k: as_str(block[k], block.val_loc(k), f"source {k}", p) or ""
              for k in SOURCE_KEYS if k in block}
    if not any(values.get(k) for k in ("commit", "url", "report")):
        p.add(doc.val_loc("source"), "the source names neither an upstream commit, a URL "
              "nor a report.", "Say where the behaviour comes from: `commit: 929e30f93125` "
              "(with `subject:`), `url:` of the report, or `report:` quoting it.")
    commit = values.get("commit", "")
    if commit and not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        p.add(block.val_loc("commit"), f"source commit '{commit}' is not a commit hash.",
              "Give 7 to 40 hex digits, e.g. 929e30f93125.")
    return Source(**values)


def _topology(doc: LMap, path: str, name: str,
              p: Problems) -> tuple[Topology | None, str, str]:
    value, loc = doc["topology"], doc.val_loc("topology")
    if isinstance(value, LMap):
        block = _with_name(value, f"r-{name}"[:names.LAB_NAME_MAX])
        tpath = path
        text = yaml.safe_dump(_plain(block), sort_keys=False, default_flow_style=False)
    else:
        rel = as_str(value, loc, "topology", p)
        if rel is None:
            return None, path, ""
        tpath = os.path.normpath(os.path.join(os.path.dirname(path), rel))
        try:
            text = files.read_bounded(tpath, files.TOPOLOGY)
        except files.FileRefused as exc:
            p.add(loc, f"cannot read the topology {rel}: {exc.message} ({tpath}).",
                  "Give a path relative to the scenario file, or write the topology inline "
                  "(a mapping with nodes: and links:).")
            return None, path, ""
        try:
            block = load_text(text, tpath)
        except TopologyError as exc:
            p.items.extend(exc.problems)
            return None, tpath, text
    try:
        topo = topo_loader.parse(block, tpath)
    except TopologyError as exc:
        p.items.extend(exc.problems)
        return None, tpath, text
    topo.source = text
    return topo, tpath, text


def _with_name(block: LMap, name: str) -> LMap:
    """An inline topology with a lab name (the runner gives each run its own anyway)."""
    if "name" in block:
        return block
    out = LMap(name=name)
    out.update(block)
    out.loc = block.loc
    out.key_locs = {"name": block.loc, **block.key_locs}
    out.val_locs = {"name": block.loc, **block.val_locs}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _common_options(doc: LMap) -> tuple[str, ...]:
    """kernel_options once validated (the kernels' plans carry them too)."""
    return _options(doc["kernel_options"], doc.val_loc("kernel_options"), "kernel_options",
                    Problems()) if "kernel_options" in doc else ()


def _kernels(doc: LMap, path: str, p: Problems) -> list[KernelPlan]:
    common: tuple[str, ...] = ()
    if "kernel_options" in doc:
        common = _options(doc["kernel_options"], doc.val_loc("kernel_options"),
                          "kernel_options", p)
    value, loc = doc["kernels"], doc.val_loc("kernels")
    entries: list[tuple[str, Any, Loc, Loc]] = []
    if isinstance(value, LList):
        entries = [(v, None, value.item_loc(i), value.item_loc(i))
                   for i, v in enumerate(value)]
    elif isinstance(value, LMap):
        entries = [(k, v, value.key_loc(k), value.val_loc(k)) for k, v in value.items()]
    else:
        p.add(loc, "kernels must be a mapping (kernel: {expect: ..., options: [...]}) or a "
                   "list of kernel names.", "E.g. `kernels: {debian-6.1: {expect: "
                   "reproduced}, debian-6.12: {expect: not reproduced}}`.")
        return []
    if not entries:
        p.add(loc, "the scenario names no kernel to run on.",
              "Add one, e.g. `debian-6.12: {expect: reproduced}`.")
    out = []
    for raw, block, kloc, vloc in entries:
        name = kernel_name(raw, kloc, path, p)
        if name is None:
            continue
        body = as_map(block, vloc, f"kernel {raw}", p)
        if body is None:
            continue
        check_keys(body, KERNEL_KEYS, f"kernel {raw}", p)
        expect = None
        if "expect" in body:
            expect = choice(body["expect"], body.val_loc("expect"), f"kernel {raw} expect",
                             list(EXPECTABLE), p)
        options = common + (_options(body["options"], body.val_loc("options"),
                                     f"kernel {raw} options", p) if "options" in body else ())
        if name == HOST and options:
            p.add(body.val_loc("options") if "options" in body else doc.val_loc(
                "kernel_options"), "kernel options cannot be given to `host`, this "
                "machine's running kernel.", "Drop them for host, or use a VM kernel "
                "(debian-6.12, debian-6.1, or a path to a bzImage or build tree).")
        if any(k.name == name for k in out):
            p.add(kloc, f"kernel {raw} is listed twice.", "List each kernel once.")
            continue
        out.append(KernelPlan(name=name, expect=expect, options=options, loc=kloc))
    return out


def kernel_name(raw: Any, loc: Loc, path: str, p: Problems) -> str | None:
    """A kernel as the runner takes it: `host`, a known name, or an absolute path."""
    from labkit.hosts import kernels

    text = as_str(raw, loc, "kernel", p)
    if text is None:
        return None
    known = kernels.known_names()
    if text == HOST or text in known or _acceptable(text):
        return text
    if "/" in text or text.startswith("."):
        full = os.path.normpath(os.path.join(os.path.dirname(path), text))
        if not os.path.exists(full):
            p.add(loc, f"kernel {text} does not exist ({full}).", "Give a bzImage or a kernel "
                       "build tree, relative to the scenario file.")
            return None
        return full
    p.add(loc, f"unknown kernel '{text}'.",
          f"Use host, one of {', '.join(known)}, or a path to a bzImage or kernel build "
          f"tree. {suggest(text, [HOST, *known])}".strip())
    return None


def _acceptable(text: str) -> bool:
    """A name the kernel catalogue takes, checked offline: built:NAME, a cache entry, or a
    Debian name of a series labkit knows (whether that build exists is known at fetch)."""
    from labkit.hosts import kernels

    if "/" in text or text.startswith(".") or not kernels.accepts(text):
        return False
    spec = kernels.parse(text)
    return not kernels.is_debian(text) or spec.series in kernels.SERIES


def _options(value: Any, loc: Loc, where: str, p: Problems) -> tuple[str, ...]:
    items = as_list(value, loc, where, p)
    out = []
    for i, item in enumerate(items or []):
        text = as_str(item, items.item_loc(i), f"{where} item", p)
        if text is None:
            continue
        if not OPTION_RE.match(text):
            p.add(items.item_loc(i), f"kernel option '{text}' in {where} has spaces or "
                  "quotes.", "Give one option per item, e.g. init_on_alloc=0.")
            continue
        out.append(text)
    return tuple(out)



def _check_claims(doc: LMap, kernels: list[KernelPlan], steps: list[Step],
                  p: Problems) -> None:
    """A scenario that says where it reproduces must say what reproducing looks like."""
    claims = [k for k in kernels if k.expect]
    conditional = [s for s in steps if s.is_check and s.when != ALWAYS]
    shows = [s for s in steps if s.is_check and s.when == REPRODUCED]
    if (claims or conditional) and not shows:
        p.add(doc.val_loc("steps") if "steps" in doc else doc.loc,
              "the scenario says where it reproduces, but no check says what reproducing "
              "looks like.", "Mark the checks that show the bug with `when: reproduced` "
              "(and those that show it fixed with `when: not reproduced`).")
    for step in steps:
        if step.when != ALWAYS and not step.is_check:
            p.add(step.loc, f"{step.label()} has `when:` but checks nothing.",
                  "`when:` belongs on exec (with expect), wait_for, verify and expect steps.")


def step_kinds() -> list[str]:
    return list(STEP_KEYS)


__all__ = ["ScenarioError", "load", "loads", "model", "read_pcap_file", "step_kinds"]
