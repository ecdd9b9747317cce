"""The steps of a scenario file: each kind's keys, checked against the topology (nodes,
interfaces, placeholders) and against the steps above it (names a later step refers to).
Every problem is added to the shared Problems, located; nothing raises here.
"""

from __future__ import annotations

import os
import re
from typing import Any

from labkit.errors import Loc
from labkit.repro import placeholders
from labkit.repro.model import (
    ALWAYS,
    WHENS,
    CaptureStep,
    Command,
    ExecStep,
    InjectStep,
    Outcome,
    Step,
    SysctlStep,
    TrafficStep,
    UpStep,
    VerifyStep,
    WaitForStep,
)
from labkit.repro.pcapfile import read_pcap_file
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
from labkit.topology.located import LList, LMap
from labkit.topology.model import Topology

STEP_KEYS: dict[str, list[str]] = {
    "up": ["timeout"],
    "exec": ["name", "node", "cmd", "timeout", "background", "expect", "when"],
    "sysctl": ["name", "node", "set", "timeout"],
    "inject": ["name", "node", "iface", "frame", "pcap", "count", "interval", "options",
               "timeout"],
    "traffic": ["name", "from", "to", "proto", "socket", "size", "duration", "timeout"],
    "capture": ["name", "node", "iface", "count", "duration"],
    "wait_for": ["name", "node", "cmd", "dmesg", "until", "interval", "timeout", "when"],
    "verify": ["name", "kind", "feature", "options", "expect", "timeout", "when"],
    "expect": ["name", "when", "output", "dmesg", "counter", "pcap", "timeout"],
}
OUTCOME_KEYS = ["status", "stdout", "stderr", "stdout_absent", "hangs"]
DEFAULT_TIMEOUT = {"up": 900.0, "exec": 60.0, "sysctl": 30.0, "inject": 60.0,
                   "traffic": 60.0, "capture": 0.0, "wait_for": 60.0, "verify": 300.0,
                   "expect": 60.0}
MAX_TIMEOUT = 3600
MAX_INJECT = 10_000
MAX_CAPTURE = 1_000_000
SYSCTL_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9_\-/]+)+$")
STEP_NAME_MAX = 40



class StepContext:
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


def parse_steps(doc: LMap, topo: Topology | None, path: str, p: Problems) -> list[Step]:
    items = as_list(doc["steps"], doc.val_loc("steps"), "steps", p)
    if items is None:
        return []
    ctx = StepContext(topo, path, p)
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


def _step(kind: str, block: LMap, index: int, loc: Loc, ctx: StepContext,
          where: str) -> Step | None:
    p = ctx.p
    check_keys(block, STEP_KEYS[kind], where, p)
    name = ""
    if "name" in block:
        name = as_name(block["name"], block.val_loc("name"), f"{where} name", p,
                       STEP_NAME_MAX) or ""
    timeout = ctx.seconds(block, "timeout", where, DEFAULT_TIMEOUT[kind])
    when = ALWAYS
    if "when" in block:
        when = choice(block["when"], block.val_loc("when"), f"{where} when", list(WHENS),
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
    from labkit.repro.expect_loader import expect_step

    return expect_step(base, block, ctx, where)


def _outcome(block: LMap, key: str, where: str, ctx: StepContext) -> Outcome:
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


def _inject(base: dict[str, Any], block: LMap, ctx: StepContext, where: str) -> InjectStep:
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
    if "options" in block:
        step.options = _craft_options(block, step.frame, where, p)
    if step.count * step.interval > step.timeout:
        p.add(block.loc, f"{where} sends {step.count} frames {step.interval:g} s apart, "
              f"longer than its timeout ({step.timeout:g} s).",
              "Lower count or interval, or raise timeout.")
    return step


def _frame_kind(block: LMap, where: str, p: Problems) -> str:
    """FEATURE:KIND, a frame a feature crafts (the registry says which can)."""
    from labkit import features

    text = as_str(block["frame"], block.val_loc("frame"), f"{where} frame", p) or ""
    family, _, kind = text.partition(":")
    families = features.with_frames()
    if family not in families:
        p.add(block.val_loc("frame"), f"{where} frame '{text}' is not a crafted frame labkit "
              "knows.", f"Crafted frames are FEATURE:KIND with FEATURE one of "
              f"{', '.join(families)}; replay anything else from a pcap.")
        return ""
    kinds = list(features.get(family).frames)
    if kind not in kinds:
        p.add(block.val_loc("frame"), f"{where}: there is no crafted {family} frame '{kind}'.",
              (suggest(kind, kinds) + " ").lstrip()
              + f"Kinds: {', '.join(f'{family}:{k}' for k in kinds)}.")
        return ""
    return text


def _craft_options(block: LMap, frame: str, where: str, p: Problems) -> dict[str, int]:
    """`options:` for a crafted frame: only what its feature's craft() takes, in range."""
    from labkit import features

    opts = block["options"]
    if not isinstance(opts, LMap):
        p.add(block.val_loc("options"), f"{where} options must be a mapping.",
              "E.g. `options: {net_id: 4712}`.")
        return {}
    if not frame:  # no valid frame (said above), or a pcap: nothing takes options
        if "pcap" in block and "frame" not in block:
            p.add(block.val_loc("options"), f"{where}: options apply to crafted frames, "
                  "not to a replayed pcap.", "Remove `options:`.")
        return {}
    family = frame.partition(":")[0]
    allowed = features.get(family).craft_options
    out: dict[str, int] = {}
    for key in opts:
        if key not in allowed:
            p.add(opts.key_loc(key), f"{where}: {family} frames take no option '{key}'.",
                  (suggest(key, list(allowed)) + " ").lstrip()
                  + f"Options: {', '.join(allowed) or 'none'}.")
            continue
        lo, hi = allowed[key]
        value = as_int(opts[key], opts.val_loc(key), f"{where} options.{key}", p, lo, hi)
        if value is not None:
            out[key] = value
    return out


def _pcap(block: LMap, ctx: StepContext, where: str) -> str:
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


def _wait_for(base: dict[str, Any], block: LMap, ctx: StepContext, where: str) -> WaitForStep:
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


def _verify(base: dict[str, Any], block: LMap, ctx: StepContext, where: str) -> VerifyStep:
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
        step.outcome = choice(block["expect"], block.val_loc("expect"), f"{where} expect",
                               ["pass", "fail"], p) or "pass"
    return step

def choice(value: Any, loc: Loc, where: str, choices: list[str], p: Problems) -> str | None:
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    if text not in choices:
        hint = suggest(text.replace("-", " ").replace("_", " "), choices) or suggest(
            text, choices)
        p.add(loc, f"{where} '{text}' is not one of: {', '.join(choices)}.", hint)
        return None
    return text

