"""Exercises file -> validated ExerciseSet, or a TopologyError listing every located problem.

It reads YAML through labkit's located loader and typed readers (labkit.topology.located,
fields), so every problem names file:line:col and unknown keys get a did-you-mean, as in
topology files. Node names are checked against the lab's topology when it is known.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from labkit.base import files
from labkit.errors import LabkitError, Loc, TopologyError
from labkit.exercises.kinds import COUNTER_FIELDS, KPROXY_FIELDS, Kind, all_kinds, default_name
from labkit.exercises.model import CheckSpec, Exercise, ExerciseSet, Solution, Step
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
from labkit.topology.located import LMap, load_text, read_text

TOP_KEYS = ["topology", "description", "exercises"]
EXERCISE_KEYS = ["id", "title", "task", "check", "hints", "solution"]
SOLUTION_KEYS = ["explain", "steps"]
STEP_KEYS = ["node", "run", "file", "content"]
SYSCTL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
EXAMPLE = "labs/exercises/01-first-lab.yaml"


def load(path: str, nodes: list[str] | None = None) -> ExerciseSet:
    """Read and validate a file; nodes: the lab's node names (else from `topology:`)."""
    text = read_text(path, files.EXERCISE)  # bounded, regular files only: TopologyError
    return loads(text, path, nodes)


def loads(text: str, path: str = "<string>", nodes: list[str] | None = None) -> ExerciseSet:
    if not text.strip():
        raise TopologyError([LabkitError(
            "the exercises file is empty.", hint=f"It needs an `exercises:` list; see {EXAMPLE}.",
            loc=Loc(path, 1, 1))])
    return parse(load_text(text, path), path, nodes)


def parse(doc: Any, path: str, nodes: list[str] | None = None) -> ExerciseSet:
    p = Problems()
    root = getattr(doc, "loc", Loc(path, 1, 1))
    if not isinstance(doc, LMap):
        p.add(root, "an exercises file must be a mapping with an `exercises:` list.",
              f"See {EXAMPLE} for the shape.")
        raise TopologyError(p.items)
    check_keys(doc, TOP_KEYS, "the exercises file", p, required=("exercises",))
    out = ExerciseSet(path=path)
    if "topology" in doc:
        text = as_str(doc["topology"], doc.val_loc("topology"), "topology", p)
        if text is not None:
            out.topology = os.path.normpath(
                os.path.join(os.path.dirname(os.path.abspath(path)), text))
            if nodes is None:
                nodes = _topology_nodes(out.topology, doc.val_loc("topology"), p)
    items = as_list(doc.get("exercises"), doc.val_loc("exercises"), "exercises", p)
    if items is not None and not items and "exercises" in doc:
        p.add(doc.val_loc("exercises"), "the file has no exercises.", "Add at least one.")
    seen: dict[str, Loc] = {}
    for i, item in enumerate(items or []):
        ex = _exercise(item, items.item_loc(i), i + 1, nodes, p)
        if ex is None:
            continue
        if ex.id in seen:
            p.add(ex.loc, f"exercise id '{ex.id}' is used twice (first at line "
                          f"{seen[ex.id].line}).", "Give each exercise its own id.")
            continue
        seen[ex.id] = ex.loc
        out.items.append(ex)
    if p:
        raise TopologyError(p.items)
    return out


def _topology_nodes(path: str, loc: Loc, p: Problems) -> list[str] | None:
    from labkit.topology import loader

    try:
        return list(loader.load(path).nodes)
    except TopologyError as exc:
        p.add(loc, f"the topology this file names does not load: {exc.problems[0].render()}",
              "Fix the topology, or the `topology:` path (relative to this file).")
        return None


def _exercise(item: Any, loc: Loc, number: int, nodes: list[str] | None,
              p: Problems) -> Exercise | None:
    where = f"exercise {number}"
    m = as_map(item, loc, where, p)
    if m is None:
        return None
    ex_id = as_name(m["id"], m.val_loc("id"), f"{where} id", p, 40) if "id" in m else None
    if ex_id:
        where = f"exercise '{ex_id}'"
    check_keys(m, EXERCISE_KEYS, where, p, required=("id", "title", "task", "check"))
    title = as_str(m.get("title", ""), m.val_loc("title"), f"{where} title", p) or ""
    task = as_str(m.get("task", ""), m.val_loc("task"), f"{where} task", p) or ""
    checks = _checks(m, where, nodes, p) if "check" in m else []
    hints: list[str] = []
    if "hints" in m:
        hl = as_list(m["hints"], m.val_loc("hints"), f"{where} hints", p)
        for j, h in enumerate(hl or []):
            text = as_str(h, hl.item_loc(j), f"hint {j + 1} of {where}", p)
            if text:
                hints.append(text)
    solution = _solution(m, where, nodes, p) if "solution" in m else None
    if ex_id is None or "check" not in m:
        return None
    return Exercise(id=ex_id, title=title, task=task, checks=checks, loc=loc, hints=hints,
                    solution=solution)


def _checks(m: LMap, where: str, nodes: list[str] | None, p: Problems) -> list[CheckSpec]:
    value, loc = m["check"], m.val_loc("check")
    if isinstance(value, LMap):
        blocks = [(value, value.loc)]
    else:
        items = as_list(value, loc, f"{where} check", p)
        blocks = [(c, items.item_loc(j)) for j, c in enumerate(items or [])]
        if items is not None and not items:
            p.add(loc, f"{where} has an empty check list.", "Declare at least one check.")
    out = []
    kinds = all_kinds()
    for j, (block, bloc) in enumerate(blocks):
        spec = _check(block, bloc, f"check {j + 1} of {where}", kinds, nodes, p)
        if spec is not None:
            out.append(spec)
    return out


def _check(block: Any, loc: Loc, where: str, kinds: dict[str, Kind],
           nodes: list[str] | None, p: Problems) -> CheckSpec | None:
    c = as_map(block, loc, where, p)
    if c is None:
        return None
    if "type" not in c:
        p.add(c.loc, f"{where} has no `type:`.", f"Kinds: {', '.join(kinds)}.")
        return None
    kind_name = str(c["type"])
    kind = kinds.get(kind_name)
    if kind is None:
        p.add(c.val_loc("type"), f"{where} has unknown type '{kind_name}'.",
              f"{suggest(kind_name, list(kinds))} Kinds: {', '.join(kinds)}.".strip())
        return None
    check_keys(c, ["type", "name", *kind.params], f"{where} ({kind_name})", p,
               required=kind.required)
    params: dict[str, Any] = {}
    for key, typ in kind.params.items():
        if key in c:
            value = _value(c[key], c.val_loc(key), typ, f"{where} {key}", nodes, p)
            if value is not None:
                params[key] = value
    name = as_str(c.get("name", ""), c.val_loc("name"), f"{where} name", p) or ""
    if any(k in kind.required and k not in params for k in kind.required):
        return None  # reported above
    return CheckSpec(kind=kind_name, name=name or default_name(kind_name, params),
                     params=params, loc=c.loc)


def _node(value: Any, loc: Loc, where: str, nodes: list[str] | None, p: Problems) -> str | None:
    text = as_str(value, loc, where, p)
    if text is not None and nodes is not None and text not in nodes:
        p.add(loc, f"{where} names '{text}', which is not a node of the lab.",
              f"{suggest(text, nodes)} Nodes: {', '.join(nodes)}.".strip())
        return None
    return text


def _value(value: Any, loc: Loc, typ: str, where: str, nodes: list[str] | None,
           p: Problems) -> Any:
    """One parameter, checked and normalised by its declared type."""
    if typ == "node":
        return _node(value, loc, where, nodes, p)
    if typ == "nodes":
        if value == "all":
            return "all"
        items = as_list(value, loc, where, p)
        got = [_node(v, items.item_loc(i), where, nodes, p) for i, v in enumerate(items or [])]
        return [g for g in got if g] if items is not None else None
    if typ == "node_or_ip":
        text = as_str(value, loc, where, p)
        if text is None or (nodes is not None and text in nodes):
            return text
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            p.add(loc, f"{where} '{text}' is neither a node nor an IP address.",
                  suggest(text, nodes or []))
            return None
    if typ.startswith("choice:"):
        choices = typ.split(":", 1)[1].split("|")
        text = as_str(value, loc, where, p)
        if text is not None and text not in choices:
            p.add(loc, f"{where} must be one of {', '.join(choices)}, not '{text}'.",
                  suggest(text, choices))
            return None
        return int(text) if text and text.isdigit() else text
    if typ == "int":
        return as_int(value, loc, where, p, 0, 2**63 - 1)
    if typ == "port":
        return as_int(value, loc, where, p, 1, 65535)
    if typ == "bool":
        return as_bool(value, loc, where, p)
    if typ == "map":
        m = as_map(value, loc, where, p)
        return dict(m) if m is not None else None
    if typ == "argv":
        if isinstance(value, list):
            argv = [as_str(v, loc, where, p) for v in value]
            if not argv:
                p.add(loc, f"{where} is an empty command.", "Write e.g. [ip, -br, link].")
            return None if None in argv or not argv else argv
        return as_str(value, loc, where, p)  # a line for sh -c
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    return _text_value(text, loc, typ, where, p)


def _text_value(text: str, loc: Loc, typ: str, where: str, p: Problems) -> Any:
    try:
        if typ == "address":
            return str(ipaddress.ip_interface(text)) if "/" in text else \
                str(ipaddress.ip_address(text))
        if typ == "ip":
            return str(ipaddress.ip_address(text))
        if typ == "route_dst":
            return "default" if text == "default" else str(ipaddress.ip_network(text))
    except ValueError as exc:
        p.add(loc, f"{where} '{text}' is not valid: {exc}.",
              "Write an address (198.18.1.9, 198.18.1.9/24), a network (192.0.2.0/24) "
              "or `default` where a route destination is meant.")
        return None
    if typ == "regex":
        try:
            re.compile(text)
        except re.error as exc:
            p.add(loc, f"{where} is not a valid regular expression: {exc}.",
                  "It is a Python `re` pattern, searched in the output.")
            return None
    if typ == "sysctl" and not SYSCTL_NAME.match(text):
        p.add(loc, f"{where} '{text}' is not a sysctl name.", "Write e.g. net.ipv4.ip_forward.")
        return None
    if typ == "abspath" and not text.startswith("/"):
        p.add(loc, f"{where} '{text}' is not an absolute path.", "Write e.g. /tmp/answer.txt.")
        return None
    if typ == "counter":
        return _counter(text, loc, where, p)
    return text


def _counter(text: str, loc: Loc, where: str, p: Problems) -> str | None:
    parts = text.split(":")
    ok = (parts[0] == "iface" and len(parts) == 3 and parts[2] in COUNTER_FIELDS) or \
        (parts[0] in ("tls_stat", "snmp") and len(parts) == 2 and parts[1]) or \
        (parts[0] == "ethtool" and len(parts) == 3 and all(parts[1:])) or \
        (parts[0] == "kproxy" and len(parts) == 3 and parts[2] in KPROXY_FIELDS)
    if not ok:
        hint = ""
        if parts[0] == "iface" and len(parts) == 3:
            hint = suggest(parts[2], list(COUNTER_FIELDS))
        if parts[0] == "kproxy" and len(parts) == 3:
            hint = suggest(parts[2], list(KPROXY_FIELDS))
        p.add(loc, f"{where} '{text}' is not a counter source.",
              f"{hint} Write iface:IFACE:FIELD (FIELD one of {', '.join(COUNTER_FIELDS)}), "
              "tls_stat:NAME (e.g. tls_stat:TlsTxSw), snmp:NAME (e.g. snmp:TcpOutSegs), "
              "ethtool:IFACE:NAME (`ethtool -S`) or kproxy:PAIR:FIELD (FIELD one of "
              f"{', '.join(KPROXY_FIELDS)})."
              .strip())
        return None
    return text


def _solution(m: LMap, where: str, nodes: list[str] | None, p: Problems) -> Solution | None:
    s = as_map(m["solution"], m.val_loc("solution"), f"{where} solution", p)
    if s is None:
        return None
    check_keys(s, SOLUTION_KEYS, f"{where} solution", p, required=("steps",))
    out = Solution(explain=as_str(s.get("explain", ""), s.val_loc("explain"),
                                  f"{where} solution explain", p) or "")
    steps = as_list(s.get("steps"), s.val_loc("steps"), f"{where} solution steps", p)
    for j, item in enumerate(steps or []):
        sw = f"step {j + 1} of {where} solution"
        st = as_map(item, steps.item_loc(j), sw, p)
        if st is None:
            continue
        check_keys(st, STEP_KEYS, sw, p, required=("node",))
        node = _node(st["node"], st.val_loc("node"), f"{sw} node", nodes, p) \
            if "node" in st else None
        if ("run" in st) == ("file" in st):
            p.add(st.loc, f"{sw} needs either `run:` (a command) or `file:` with `content:`.",
                  "Write e.g. `{node: r, run: [sysctl, -w, net.ipv4.ip_forward=0]}`.")
            continue
        step = Step(node=node or "", loc=st.loc)
        if "run" in st:
            cmd = _value(st["run"], st.val_loc("run"), "argv", f"{sw} run", nodes, p)
            if isinstance(cmd, list):
                step.run = cmd
            else:
                step.shell = cmd
        else:
            step.file = _value(st["file"], st.val_loc("file"), "abspath", f"{sw} file",
                               nodes, p)
            if "content" not in st:
                p.add(st.loc, f"{sw} writes {step.file} but has no `content:`.",
                      "Add `content: |` with the file's text.")
            step.content = as_str(st.get("content", ""), st.val_loc("content"),
                                  f"{sw} content", p)
        if node:
            out.steps.append(step)
    return out
