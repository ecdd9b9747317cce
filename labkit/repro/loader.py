"""Scenario file -> validated Scenario, or a ScenarioError listing every located problem.

Scenarios are read like topologies (labkit.topology.located keeps every key's position):
every mistake is reported at once with FILE:LINE:COLUMN and a fix, unknown keys get a
did-you-mean, and an inline topology's own mistakes point into the scenario file. Nothing
here touches a kernel.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any

import yaml

from labkit.errors import LabkitError, Loc, TopologyError
from labkit.repro import model, placeholders
from labkit.repro.model import (
    ALWAYS,
    EXPECTABLE,
    HOST,
    REPRODUCED,
    WHENS,
    CaptureStep,
    Command,
    Compare,
    CounterCheck,
    DmesgCheck,
    ExecStep,
    ExpectStep,
    InjectStep,
    KernelPlan,
    Outcome,
    OutputCheck,
    PcapCheck,
    Scenario,
    Source,
    Step,
    SysctlStep,
    TrafficStep,
    UpStep,
    VerifyStep,
    WaitForStep,
)
from labkit.topology import loader as topo_loader
from labkit.topology.fields import (
    Problems,
    as_bool,
    as_int,
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
STEP_KEYS: dict[str, list[str]] = {
    "up": ["timeout"],
    "exec": ["name", "node", "cmd", "timeout", "background", "expect", "when"],
    "sysctl": ["name", "node", "set", "timeout"],
    "inject": ["name", "node", "iface", "frame", "pcap", "count", "interval", "net_id",
               "timeout"],
    "traffic": ["name", "from", "to", "proto", "socket", "size", "duration", "timeout"],
    "capture": ["name", "node", "iface", "count", "duration"],
    "wait_for": ["name", "node", "cmd", "dmesg", "until", "interval", "timeout", "when"],
    "verify": ["name", "kind", "feature", "options", "expect", "timeout", "when"],
    "expect": ["name", "when", "output", "dmesg", "counter", "pcap", "timeout"],
}
OUTCOME_KEYS = ["status", "stdout", "stderr", "stdout_absent", "hangs"]
OUTPUT_KEYS = ["step", "stream", "match", "absent", "status"]
DMESG_KEYS = ["match", "absent"]
COUNTER_KEYS = ["node", "source", "name", "iface", "path", "equals", "at_least", "at_most"]
PCAP_KEYS = ["capture", "filter", "equals", "at_least", "at_most"]
COUNTER_SOURCES = ["nstat", "tls_stat", "link", "file"]
CHECK_KINDS = ["output", "dmesg", "counter", "pcap"]
DEFAULT_TIMEOUT = {"up": 900.0, "exec": 60.0, "sysctl": 30.0, "inject": 60.0,
                   "traffic": 60.0, "capture": 0.0, "wait_for": 60.0, "verify": 300.0,
                   "expect": 60.0}
MAX_TIMEOUT = 3600
MAX_INJECT = 10_000
MAX_CAPTURE = 1_000_000
OPTION_RE = re.compile(r"^[A-Za-z0-9_.,:=+/@-]+$")
SYSCTL_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9_\-/]+)+$")
STEP_NAME_MAX = 40
PCAP_MAGICS = {0xA1B2C3D4: ("<", 1e-6), 0xA1B23C4D: ("<", 1e-9),
               0xD4C3B2A1: (">", 1e-6), 0x4D3CB2A1: (">", 1e-9)}
LINKTYPE_ETHERNET = 1


class ScenarioError(TopologyError):
    """One or more located problems in a scenario file, all reported at once (exit 2)."""


def load(path: str) -> Scenario:
    path = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ScenarioError([LabkitError(
            "no such scenario file.", hint="Give a path to a scenario, e.g. "
            "repro/sockmap-fionread.yaml.", loc=Loc(path))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([LabkitError(f"cannot read the scenario file: {exc}.",
                                         loc=Loc(path))]) from None
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
                    kernels=kernels, steps=steps, description=description or "")


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
        block = _with_name(value, f"r-{name}"[:24])
        tpath = path
        text = yaml.safe_dump(_plain(block), sort_keys=False, default_flow_style=False)
    else:
        rel = as_str(value, loc, "topology", p)
        if rel is None:
            return None, path, ""
        tpath = os.path.normpath(os.path.join(os.path.dirname(path), rel))
        try:
            with open(tpath, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            p.add(loc, f"cannot read the topology {rel}: "
                       f"{exc.strerror or exc} ({tpath}).",
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
            expect = _choice(body["expect"], body.val_loc("expect"), f"kernel {raw} expect",
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
    from labkit.hosts.vm import kernels

    text = as_str(raw, loc, "kernel", p)
    if text is None:
        return None
    known = kernels.known_names()
    if text == HOST or text in known:
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


def _choice(value: Any, loc: Loc, where: str, choices: list[str], p: Problems) -> str | None:
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    if text not in choices:
        hint = suggest(text.replace("-", " ").replace("_", " "), choices) or suggest(
            text, choices)
        p.add(loc, f"{where} '{text}' is not one of: {', '.join(choices)}.", hint)
        return None
    return text


# -- steps ----------------------------------------------------------------------------------


class _Ctx:
    """What a step parser needs: the topology (None if invalid), names seen so far."""

    def __init__(self, topo: Topology | None, path: str, p: Problems) -> None:
        self.topo, self.path, self.p = topo, path, p
        self.names: dict[str, Step] = {}

    def node(self, block: LMap, key: str, where: str) -> str:
        if key not in block:
            self.p.add(block.loc, f"{where} needs `{key}:` (a node of the topology).",
                       f"Add `{key}: NODE`.")
            return ""
        text = as_str(block[key], block.val_loc(key), f"{where} {key}", self.p) or ""
        if text and self.topo is not None and text not in self.topo.nodes:
            nodes = list(self.topo.nodes)
            self.p.add(block.val_loc(key), f"{where} names node '{text}', which the topology "
                       "does not have.", suggest(text, nodes) or f"Its nodes: "
                       f"{', '.join(nodes)}.")
            return ""
        return text

    def iface(self, block: LMap, node: str, where: str) -> str:
        if "iface" not in block:
            self.p.add(block.loc, f"{where} needs `iface:` (an interface of node {node}).",
                       "Add e.g. `iface: eth1`.")
            return ""
        text = as_str(block["iface"], block.val_loc("iface"), f"{where} iface", self.p) or ""
        if text and node and self.topo is not None:
            have = [*self.topo.nodes[node].interfaces, "lo"]
            if text not in have:
                self.p.add(block.val_loc("iface"), f"{where}: node {node} has no interface "
                           f"'{text}'.", suggest(text, have) or f"It has: {', '.join(have)}.")
                return ""
        return text

    def command(self, block: LMap, key: str, where: str) -> Command:
        if key not in block:
            self.p.add(block.loc, f"{where} needs `{key}:` (a shell line, or a list of "
                       "words).", "E.g. `cmd: \"{python} {dir}/scripts/probe.py\"`.")
            return Command()
        value, loc = block[key], block.val_loc(key)
        if isinstance(value, LList):
            words = [as_str(v, value.item_loc(i), f"{where} {key} word", self.p)
                     for i, v in enumerate(value)]
            if not words:
                self.p.add(loc, f"{where} {key} is empty.", "Give the command to run.")
            cmd = Command(argv=tuple(w or "" for w in words))
        else:
            text = as_str(value, loc, f"{where} {key}", self.p)
            if text is not None and not text.strip():
                self.p.add(loc, f"{where} {key} is empty.", "Give the command to run.")
            cmd = Command(shell=text or "")
        if self.topo is not None:
            for word in cmd.words():
                for problem in placeholders.problems(word, self.topo):
                    self.p.add(loc, f"{where} {key}: {problem}.",
                               "Placeholders: {python}, {dir}, {ns:NODE}, "
                               "{ipv4:NODE[:IFACE]}, {ipv6:NODE[:IFACE]}.")
        return cmd

    def regex(self, block: LMap, key: str, where: str) -> str | None:
        if key not in block:
            return None
        text = as_str(block[key], block.val_loc(key), f"{where} {key}", self.p)
        if text is None:
            return None
        try:
            re.compile(text, re.M)
        except re.error as exc:
            self.p.add(block.val_loc(key), f"{where} {key} is not a valid regular expression: "
                       f"{exc}.", "Python `re` syntax; quote it in single quotes in YAML so "
                       "backslashes stay as written.")
            return None
        return text

    def seconds(self, block: LMap, key: str, where: str, default: float, lo: float = 1,
                hi: float = MAX_TIMEOUT) -> float:
        if key not in block:
            return default
        value = block[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                lo <= value <= hi):
            self.p.add(block.val_loc(key), f"{where} {key} must be a number of seconds from "
                       f"{lo:g} to {hi:g}, not {value!r}.")
            return default
        return float(value)

    def earlier(self, block: LMap, key: str, where: str, kinds: tuple[type, ...],
                what: str) -> str:
        text = as_str(block.get(key), block.val_loc(key), f"{where} {key}", self.p) \
            if key in block else None
        if key not in block:
            self.p.add(block.loc, f"{where} needs `{key}:` (the name of an earlier {what}).",
                       f"Add `{key}: NAME` naming a step above that has `name: NAME`.")
            return ""
        if text is None:
            return ""
        step = self.names.get(text)
        if step is None or not isinstance(step, kinds):
            fit = [n for n, s in self.names.items() if isinstance(s, kinds)]
            self.p.add(block.val_loc(key), f"{where} {key} '{text}' is not the name of an "
                       f"earlier {what}.", suggest(text, fit) or (
                           f"Earlier ones: {', '.join(fit)}." if fit else
                           f"Name one above it with `name: {text}`."))
            return ""
        return text


def _steps(doc: LMap, topo: Topology | None, path: str, p: Problems) -> list[Step]:
    items = as_list(doc["steps"], doc.val_loc("steps"), "steps", p)
    if items is None:
        return []
    ctx = _Ctx(topo, path, p)
    out: list[Step] = []
    for i, item in enumerate(items):
        loc = items.item_loc(i)
        where = f"step {i + 1}"
        if isinstance(item, str):
            kind, body = item, None
        elif isinstance(item, LMap) and len(item) == 1:
            kind = next(iter(item))
            body, loc = item[kind], item.key_loc(kind)
        else:
            keys = list(item) if isinstance(item, LMap) else []
            hint = ("Write each step as one key, its kind, with its settings indented under "
                    "it, e.g. `- exec: {node: a, cmd: ...}`.")
            if keys and any(k in STEP_KEYS for k in keys):
                kinds = [k for k in keys if k in STEP_KEYS]
                hint = (f"It has {', '.join(repr(k) for k in keys)}: indent the other keys "
                        f"under `{kinds[0]}:`. " + hint)
            p.add(loc, f"{where} must be a step kind with its settings "
                       f"({', '.join(STEP_KEYS)}).", hint)
            continue
        if kind not in STEP_KEYS:
            p.add(loc, f"{where} has unknown kind '{kind}'.",
                  (suggest(str(kind), list(STEP_KEYS)) + " ").lstrip()
                  + f"Kinds: {', '.join(STEP_KEYS)}.")
            continue
        block = as_map(body, loc, f"{where} ({kind})", p)
        if block is None:
            continue
        step = _step(kind, block, i + 1, loc, ctx, f"{where} ({kind})")
        if step is None:
            continue
        if step.name:
            if step.name in ctx.names:
                first = ctx.names[step.name]
                p.add(block.val_loc("name"), f"{where}: the step name '{step.name}' is "
                      f"already used by {first.label()} (line {first.loc.line}).",
                      "Give each named step its own name.")
            else:
                ctx.names[step.name] = step
        out.append(step)
    ups = [s for s in out if isinstance(s, UpStep)]
    if not ups:
        p.add(doc.val_loc("steps") if items else doc.loc, "the scenario has no `up` step.",
              "Start the steps with `- up`: it brings the lab up on each kernel.")
    elif out[0] is not ups[0] or len(ups) > 1:
        bad = ups[1] if len(ups) > 1 else ups[0]
        p.add(bad.loc, "`up` must be the first step, and only one.",
              "Every other step acts on the running lab: put `- up` first, once.")
    return out


def _step(kind: str, block: LMap, index: int, loc: Loc, ctx: _Ctx, where: str) -> Step | None:
    p = ctx.p
    check_keys(block, STEP_KEYS[kind], where, p)
    name = ""
    if "name" in block:
        name = as_name(block["name"], block.val_loc("name"), f"{where} name", p,
                       STEP_NAME_MAX) or ""
    timeout = ctx.seconds(block, "timeout", where, DEFAULT_TIMEOUT[kind])
    when = ALWAYS
    if "when" in block:
        when = _choice(block["when"], block.val_loc("when"), f"{where} when", list(WHENS),
                       p) or ALWAYS
    base: dict[str, Any] = {"index": index, "kind": kind, "loc": loc, "name": name,
                            "timeout": timeout, "when": when}
    if kind == "up":
        return UpStep(**base)
    if kind == "exec":
        background = False
        if "background" in block:
            background = bool(as_bool(block["background"], block.val_loc("background"),
                                      f"{where} background", p))
        expect = _outcome(block, "expect", where, ctx)
        if background and ("expect" in block or "when" in block):
            p.add(block.key_loc("expect" if "expect" in block else "when"),
                  f"{where} runs in the background, so it has no outcome to expect.",
                  "Judge its output later with an `expect: {output: {step: NAME, ...}}` "
                  "step, or drop `background: true`.")
        if background and not name:
            p.add(loc, f"{where} runs in the background but has no name.",
                  "Give it `name:` so that later steps can read its output.")
        return ExecStep(**base, node=ctx.node(block, "node", where),
                        command=ctx.command(block, "cmd", where), background=background,
                        expect=expect)
    if kind == "sysctl":
        return SysctlStep(**base, node=ctx.node(block, "node", where),
                          values=_sysctls(block, where, p))
    if kind == "inject":
        return _inject(base, block, ctx, where)
    if kind == "traffic":
        src, dst = ctx.node(block, "from", where), ctx.node(block, "to", where)
        step = TrafficStep(**base, src=src, dst=dst)
        if "proto" in block:
            step.proto = as_str(block["proto"], block.val_loc("proto"), f"{where} proto",
                                p) or "tcp"
        if "socket" in block:
            step.socket = as_str(block["socket"], block.val_loc("socket"), f"{where} socket",
                                 p) or "stream"
        if "size" in block:
            step.size = as_int(block["size"], block.val_loc("size"), f"{where} size", p, 2,
                               1 << 20) or step.size
        step.duration = ctx.seconds(block, "duration", where, 2.0, 0.1, 600)
        if "timeout" not in block:
            step.timeout = step.duration + DEFAULT_TIMEOUT["traffic"]
        return step
    if kind == "capture":
        node = ctx.node(block, "node", where)
        step = CaptureStep(**base, node=node, iface=ctx.iface(block, node, where))
        if not name:
            p.add(loc, f"{where} has no name.", "Give it `name:` so that a later "
                  "`expect: {pcap: {capture: NAME}}` can judge it; the pcap is saved as "
                  "NAME.pcap in the bundle.")
        if "count" in block:
            step.count = as_int(block["count"], block.val_loc("count"), f"{where} count", p,
                                1, MAX_CAPTURE) or step.count
        step.duration = ctx.seconds(block, "duration", where, step.duration, 0.1, MAX_TIMEOUT)
        step.timeout = step.duration
        return step
    if kind == "wait_for":
        return _wait_for(base, block, ctx, where)
    if kind == "verify":
        return _verify(base, block, ctx, where)
    return _expect(base, block, ctx, where)


def _outcome(block: LMap, key: str, where: str, ctx: _Ctx) -> Outcome:
    p = ctx.p
    if key not in block:
        return Outcome()
    body = as_map(block[key], block.val_loc(key), f"{where} {key}", p)
    if body is None:
        return Outcome()
    check_keys(body, OUTCOME_KEYS, f"{where} {key}", p)
    status: int | None = 0
    if "status" in body:
        value = body["status"]
        if value == "any":
            status = None
        else:
            status = as_int(value, body.val_loc("status"), f"{where} {key} status", p, 0, 255)
    hangs = False
    if "hangs" in body:
        hangs = bool(as_bool(body["hangs"], body.val_loc("hangs"), f"{where} {key} hangs", p))
    return Outcome(status=None if hangs else status,
                   stdout=ctx.regex(body, "stdout", f"{where} {key}"),
                   stderr=ctx.regex(body, "stderr", f"{where} {key}"),
                   stdout_absent=ctx.regex(body, "stdout_absent", f"{where} {key}"),
                   hangs=hangs)


def _sysctls(block: LMap, where: str, p: Problems) -> dict[str, str]:
    if "set" not in block:
        p.add(block.loc, f"{where} needs `set:` (sysctl: value lines).",
              "E.g. `set: {net.ipv4.tcp_rmem: \"4096 131072 6291456\"}`.")
        return {}
    values = as_map(block["set"], block.val_loc("set"), f"{where} set", p)
    out: dict[str, str] = {}
    for key, value in (values or {}).items():
        if not SYSCTL_RE.match(key) or ".." in key:
            p.add(values.key_loc(key), f"'{key}' in {where} is not a sysctl name.",
                  "Write it dotted, as `sysctl -a` shows it, e.g. net.core.somaxconn.")
            continue
        text = as_str(value, values.val_loc(key), f"sysctl {key}", p)
        if text is not None:
            out[key] = text
    return out


def _inject(base: dict[str, Any], block: LMap, ctx: _Ctx, where: str) -> InjectStep:
    p = ctx.p
    node = ctx.node(block, "node", where)
    step = InjectStep(**base, node=node, iface=ctx.iface(block, node, where))
    if ("frame" in block) == ("pcap" in block):
        p.add(block.loc, f"{where} needs exactly one of `frame:` (a crafted frame) and "
                         "`pcap:` (a capture to replay).",
              "E.g. `frame: tipc:ghost_discovery`, or `pcap: report.pcap`.")
    if "frame" in block:
        step.frame = _frame_kind(block, where, p)
    if "pcap" in block:
        step.pcap = _pcap(block, ctx, where)
    if "count" in block:
        step.count = as_int(block["count"], block.val_loc("count"), f"{where} count", p, 1,
                            MAX_INJECT) or 1
    step.interval = ctx.seconds(block, "interval", where, 0.0, 0.0, 10.0)
    if "net_id" in block:
        step.net_id = as_int(block["net_id"], block.val_loc("net_id"), f"{where} net_id", p,
                             1, 9999)
    if step.count * step.interval > step.timeout:
        p.add(block.loc, f"{where} sends {step.count} frames {step.interval:g} s apart, "
              f"longer than its timeout ({step.timeout:g} s).",
              "Lower count or interval, or raise timeout.")
    return step


def _frame_kind(block: LMap, where: str, p: Problems) -> str:
    text = as_str(block["frame"], block.val_loc("frame"), f"{where} frame", p) or ""
    family, _, kind = text.partition(":")
    if family != "tipc":
        p.add(block.val_loc("frame"), f"{where} frame '{text}' is not a crafted frame labkit "
              "knows.", "Crafted frames are tipc:KIND; replay anything else from a pcap.")
        return ""
    from labkit.features.tipc.layers import FRAME_KINDS

    if kind not in FRAME_KINDS:
        p.add(block.val_loc("frame"), f"{where}: there is no crafted TIPC frame '{kind}'.",
              (suggest(kind, list(FRAME_KINDS)) + " ").lstrip()
              + f"Kinds: {', '.join('tipc:' + k for k in FRAME_KINDS)}.")
        return ""
    return text


def _pcap(block: LMap, ctx: _Ctx, where: str) -> str:
    p, loc = ctx.p, block.val_loc("pcap")
    rel = as_str(block["pcap"], loc, f"{where} pcap", p)
    if rel is None:
        return ""
    full = os.path.normpath(os.path.join(os.path.dirname(ctx.path), rel))
    try:
        frames = read_pcap_file(full)
    except OSError as exc:
        p.add(loc, f"cannot read the pcap {rel}: {exc.strerror or exc} ({full}).",
              "Give a path relative to the scenario file.")
        return ""
    except ValueError as exc:
        p.add(loc, f"{rel} cannot be replayed: {exc}.",
              "Save it as classic pcap with Ethernet frames (tshark -F pcap -w FILE).")
        return ""
    if not frames:
        p.add(loc, f"{rel} holds no frames.", "Replay a capture that has some.")
    elif len(frames) > MAX_INJECT:
        p.add(loc, f"{rel} holds {len(frames)} frames; a step replays at most {MAX_INJECT}.",
              "Cut it down (editcap -r FILE OUT 1-1000).")
    return full


def read_pcap_file(path: str) -> list[bytes]:
    """The frames of a classic pcap (either byte order, micro- or nanoseconds) of Ethernet;
    ValueError says why a file is not one."""
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 24:
        raise ValueError("it is too short to be a pcap file")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in PCAP_MAGICS:
        what = "a pcapng file" if data[:4] == b"\n\r\r\n" else "not a pcap file"
        raise ValueError(f"it is {what}")
    order = PCAP_MAGICS[magic][0]
    linktype = struct.unpack(order + "I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"its link type is {linktype}, not Ethernet (1)")
    out, pos = [], 24
    while pos + 16 <= len(data):
        incl = struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
        pos += 16
        if pos + incl > len(data):
            raise ValueError(f"frame {len(out) + 1} is cut short")
        out.append(data[pos:pos + incl])
        pos += incl
    return out


def _wait_for(base: dict[str, Any], block: LMap, ctx: _Ctx, where: str) -> WaitForStep:
    p = ctx.p
    step = WaitForStep(**base)
    if "dmesg" in block:
        if "cmd" in block or "until" in block:
            p.add(block.key_loc("dmesg"), f"{where} waits either for `dmesg:` or for `cmd:` "
                  "with `until:`, not both.", "Split it into two wait_for steps.")
        pattern = ctx.regex(block, "dmesg", where)
        step.node = ctx.node(block, "node", where) if "node" in block else ""
        step.command = Command(argv=("dmesg",))
        step.until = Outcome(status=0, stdout=pattern)
    else:
        step.node = ctx.node(block, "node", where)
        step.command = ctx.command(block, "cmd", where)
        step.until = _outcome(block, "until", where, ctx)
        if "until" not in block:
            p.add(block.loc, f"{where} needs `until:` (what the command must show) or "
                  "`dmesg:` (a pattern the kernel log must show).",
                  "E.g. `until: {stdout: ': up$'}`.")
        elif step.until.hangs:
            p.add(block.val_loc("until"), f"{where}: `hangs` belongs to exec steps.",
                  "wait_for repeats its command until it shows the outcome.")
    step.interval = ctx.seconds(block, "interval", where, 0.5, 0.05, 60)
    return step


def _verify(base: dict[str, Any], block: LMap, ctx: _Ctx, where: str) -> VerifyStep:
    p = ctx.p
    step = VerifyStep(**base)
    if "kind" not in block:
        p.add(block.loc, f"{where} needs `kind:` (a verification such as crossover or "
              "encryption, or `checks` for the topology's declared checks).",
              "E.g. `kind: crossover, feature: tipc, options: {src: a, dst: b}`.")
    else:
        step.kind_name = as_str(block["kind"], block.val_loc("kind"), f"{where} kind", p) or ""
    if "feature" in block:
        from labkit import features

        step.feature = as_str(block["feature"], block.val_loc("feature"), f"{where} feature",
                              p)
        if step.feature and step.feature not in features.keys():
            p.add(block.val_loc("feature"), f"{where}: there is no feature '{step.feature}'.",
                  suggest(step.feature, features.keys()) or
                  f"Features: {', '.join(features.keys())}.")
    if "options" in block:
        opts = as_map(block["options"], block.val_loc("options"), f"{where} options", p)
        step.options = {str(k): v for k, v in (opts or {}).items()
                        if not isinstance(v, (dict, list))}
    if "expect" in block:
        step.outcome = _choice(block["expect"], block.val_loc("expect"), f"{where} expect",
                               ["pass", "fail"], p) or "pass"
    return step


def _compare(body: LMap, where: str, p: Problems) -> Compare:
    values = {k: as_int(body[k], body.val_loc(k), f"{where} {k}", p, 0, 1 << 62)
              for k in ("equals", "at_least", "at_most") if k in body}
    if not values:
        p.add(body.loc, f"{where} needs a comparison: equals:, at_least: or at_most:.",
              "E.g. `at_least: 1`.")
    return Compare(**values)


def _expect(base: dict[str, Any], block: LMap, ctx: _Ctx, where: str) -> ExpectStep:
    p = ctx.p
    kinds = [k for k in CHECK_KINDS if k in block]
    step = ExpectStep(**base)
    if len(kinds) != 1:
        p.add(block.loc, f"{where} needs exactly one of {', '.join(CHECK_KINDS)}"
              + (f" (it has {', '.join(kinds)})." if kinds else "."),
              "Write one expectation per step; each gets its own line in the verdict.")
        return step
    kind = kinds[0]
    body = as_map(block[kind], block.val_loc(kind), f"{where} {kind}", p)
    if body is None:
        return step
    inner = f"{where} {kind}"
    if kind == "output":
        check_keys(body, OUTPUT_KEYS, inner, p)
        ref = ctx.earlier(body, "step", inner, (ExecStep, WaitForStep, TrafficStep,
                                                 VerifyStep), "exec, wait_for, traffic or "
                                                              "verify step")
        stream = _choice(body["stream"], body.val_loc("stream"), f"{inner} stream",
                         ["stdout", "stderr"], p) if "stream" in body else "stdout"
        status = (as_int(body["status"], body.val_loc("status"), f"{inner} status", p, 0, 255)
                  if "status" in body else None)
        check = OutputCheck(step=ref, stream=stream or "stdout",
                            match=ctx.regex(body, "match", inner),
                            absent=ctx.regex(body, "absent", inner), status=status)
        if not any(k in body for k in ("match", "absent", "status")):
            p.add(body.loc, f"{inner} needs match:, absent: or status:.",
                  "E.g. `match: 'fionread_y=100'`.")
        step.check = check
    elif kind == "dmesg":
        check_keys(body, DMESG_KEYS, inner, p)
        if ("match" in body) == ("absent" in body):
            p.add(body.loc, f"{inner} needs exactly one of match: and absent:.",
                  "E.g. `match: 'WARNING: CPU'`, or `absent: 'BUG:|WARNING:'` (an absence "
                  "check: give it a positive control beside it).")
        step.check = DmesgCheck(match=ctx.regex(body, "match", inner),
                                absent=ctx.regex(body, "absent", inner))
    elif kind == "counter":
        check_keys(body, COUNTER_KEYS, inner, p, required=("node", "source", "name"))
        node = ctx.node(body, "node", inner) if "node" in body else ""
        source = (_choice(body["source"], body.val_loc("source"), f"{inner} source",
                          COUNTER_SOURCES, p) if "source" in body else None) or ""
        iface = ""
        if source == "link":
            iface = ctx.iface(body, node, inner)
        path = ""
        if source == "file":
            path = as_str(body.get("path"), body.val_loc("path"), f"{inner} path", p) or "" \
                if "path" in body else ""
            if not path.startswith("/proc/") and not path.startswith("/sys/"):
                p.add(body.val_loc("path") if "path" in body else body.loc,
                      f"{inner} with source file needs `path:` under /proc or /sys.",
                      "E.g. `path: /proc/net/tls_stat` (lines of NAME VALUE).")
        name = as_str(body["name"], body.val_loc("name"), f"{inner} name", p) or "" \
            if "name" in body else ""
        step.check = CounterCheck(node=node, source=source, counter=name,
                                  compare=_compare(body, inner, p), iface=iface, path=path)
    else:
        check_keys(body, PCAP_KEYS, inner, p, required=("capture",))
        ref = ctx.earlier(body, "capture", inner, (CaptureStep,), "capture step") \
            if "capture" in body else ""
        filt = as_str(body["filter"], body.val_loc("filter"), f"{inner} filter", p) or "" \
            if "filter" in body else ""
        wrong = display_filter_problem(filt) if filt else ""
        if wrong:
            p.add(body.val_loc("filter"), f"{inner} filter is not a Wireshark display filter "
                  f"tshark accepts: {wrong}.", "Try it with `tshark -r FILE -Y '...'`; sets "
                  "are written {1, 2}.")
        step.check = PcapCheck(capture=ref, compare=_compare(body, inner, p), filter=filt)
    return step


_FILTERS: dict[str, str] = {}


def display_filter_problem(text: str) -> str:
    """What tshark says is wrong with a display filter ("" if it compiles, or if tshark
    is not installed: the run then says so)."""
    import shutil
    import subprocess
    import tempfile

    if text in _FILTERS:
        return _FILTERS[text]
    tshark = shutil.which("tshark")
    if tshark is None:
        return ""
    with tempfile.NamedTemporaryFile(suffix=".pcap") as empty:
        empty.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        empty.flush()
        done = subprocess.run([tshark, "-n", "-r", empty.name, "-Y", text],
                              capture_output=True, text=True, timeout=60)
    lines = [ln.strip() for ln in done.stderr.splitlines()
             if ln.strip() and "dangerous" not in ln]
    _FILTERS[text] = "" if done.returncode == 0 else (
        lines[0].removeprefix("tshark: ").rstrip(".") if lines else f"exit {done.returncode}")
    return _FILTERS[text]


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
