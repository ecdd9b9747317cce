"""Running an exercise's declared checks against a running lab.

Each kind runs commands in the nodes through the Lab API (`node.run`), which works the
same for a lab on this kernel and one in a VM, and judges their output here. A check
returns pass with what it saw, fail with what is still missing, or error when it could not
look (a node gone, a tool missing); it never raises for the state of the lab.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from labkit.errors import LabkitError
from labkit.exercises.model import CheckSpec
from labkit.exercises.result import CheckResult, judged, unknown
from labkit.hosts.rpc import remote

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


class CannotCheck(Exception):
    """A command a check needs could not run; the check's outcome is `error`."""


def node_cmd(lab: Lab, node: str, argv: Sequence[str], timeout: float = 30,
             ok: bool = True) -> subprocess.CompletedProcess:
    """argv in a node; CannotCheck if it could not run (or failed, with ok=True)."""
    try:
        res = lab.node(node).run(list(argv), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CannotCheck(f"`{' '.join(argv)}` in {node} did not finish in "
                          f"{timeout:.0f} s") from None
    except (LabkitError, OSError) as exc:
        raise CannotCheck(f"`{' '.join(argv)}` could not run in {node}: {exc}") from None
    if ok and res.returncode != 0:
        err = (res.stderr or res.stdout or "").strip().splitlines()
        raise CannotCheck(f"`{' '.join(argv)}` in {node} exited {res.returncode}"
                          + (f": {err[-1]}" if err else ""))
    return res


def _json(lab: Lab, node: str, argv: Sequence[str]) -> Any:
    out = node_cmd(lab, node, argv).stdout
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError:
        raise CannotCheck(f"`{' '.join(argv)}` in {node} printed no JSON") from None


# -- kinds --------------------------------------------------------------------------------
def check_link(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, iface, want = p["node"], p["iface"], p.get("state", "up")
    res = node_cmd(lab, node, ["ip", "-j", "link", "show", "dev", iface], ok=False)
    if res.returncode != 0:
        return judged(name, False, f"{node} has no interface {iface}",
                      f"interface {iface} in {node}")
    info = json.loads(res.stdout)[0]
    admin_up = "UP" in info.get("flags", [])
    oper = info.get("operstate", "UNKNOWN")
    is_up = admin_up and oper in ("UP", "UNKNOWN")
    flags = ",".join(info.get("flags", []))
    saw = f"{node}:{iface} is {'up' if is_up else 'down'} (flags {flags}, operstate {oper}, " \
          f"mtu {info.get('mtu')})"
    missing = []
    if is_up != (want == "up"):
        missing.append(f"{node}:{iface} {want}")
    if "mtu" in p and info.get("mtu") != p["mtu"]:
        missing.append(f"mtu {p['mtu']} on {node}:{iface} (it is {info.get('mtu')})")
    return judged(name, not missing, saw, "; ".join(missing), {"link": info})


def check_address(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, want, present = p["node"], p["address"], p.get("present", True)
    argv = ["ip", "-j", "addr", "show"] + (["dev", p["iface"]] if "iface" in p else [])
    found = []
    for link in _json(lab, node, argv):
        for a in link.get("addr_info", []):
            found.append((link["ifname"], f"{a['local']}/{a['prefixlen']}"))
    match = [(i, a) for i, a in found
             if (a == want if "/" in want else a.split("/")[0] == want)]
    where = f"{node}:{p['iface']}" if "iface" in p else node
    shown = ", ".join(f"{a} on {i}" for i, a in found if not a.startswith(("127.", "::1/")))
    saw = f"{where} has {shown or 'no address'}"
    if present:
        return judged(name, bool(match), saw, f"address {want} on {where}")
    return judged(name, not match, saw, f"{want} removed from {where}")


def _routes(lab: Lab, node: str, version: int) -> list[dict[str, Any]]:
    return _json(lab, node, ["ip", "-j", f"-{version}", "route", "show", "table", "main"])


def check_route(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, dst, present = p["node"], p["to"], p.get("present", True)
    if dst == "default":
        version = ipaddress.ip_address(p["via"]).version if "via" in p else 4
    else:
        version = ipaddress.ip_network(dst).version
    routes = _routes(lab, node, version)

    def norm(d: str) -> str:
        return d if d == "default" else str(ipaddress.ip_network(d, strict=False))

    same_dst = [r for r in routes if norm(r.get("dst", "")) == dst]
    match = [r for r in same_dst if ("via" not in p or r.get("gateway") == p["via"])
             and ("dev" not in p or r.get("dev") == p["dev"])]
    shown = "; ".join(_route_text(r) for r in same_dst) or \
        f"no route to {dst} (its IPv{version} routes: " + \
        (", ".join(_route_text(r) for r in routes) or "none") + ")"
    want = f"route {dst}" + (f" via {p['via']}" if "via" in p else "") + \
        (f" dev {p['dev']}" if "dev" in p else "") + f" in {node}"
    if present:
        return judged(name, bool(match), f"{node}: {shown}", want, {"routes": same_dst})
    return judged(name, not match, f"{node}: {shown}", f"{want} removed")


def _route_text(r: dict[str, Any]) -> str:
    return " ".join(x for x in (r.get("dst", "?"), r.get("gateway") and f"via {r['gateway']}",
                                r.get("dev") and f"dev {r['dev']}") if x)


def check_sysctl(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, key, want = p["node"], p["key"], str(p["value"])
    res = node_cmd(lab, node, ["cat", "/proc/sys/" + key.replace(".", "/")], ok=False)
    if res.returncode != 0:
        return unknown(name, f"{node} has no sysctl {key}")
    got = " ".join(res.stdout.split())
    return judged(name, got == " ".join(want.split()), f"{node}: {key} = {got}",
                  f"{key} = {want} in {node}")


def check_command(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, run = p["node"], p["run"]
    argv = run if isinstance(run, list) else ["sh", "-c", run]
    res = node_cmd(lab, node, argv, timeout=p.get("timeout", 30), ok=False)
    out = (res.stdout or "") + (res.stderr or "")
    shown = " ".join(out.split())
    saw = f"`{run if isinstance(run, str) else ' '.join(run)}` in {node} exited " \
          f"{res.returncode}" + (f", printed: {shown[:300]}" if shown else ", printed nothing")
    missing = []
    want_exit = p.get("exit", 0 if not ("matches" in p or "not_matches" in p) else None)
    if want_exit is not None and res.returncode != want_exit:
        missing.append(f"exit status {want_exit}")
    if "matches" in p and not re.search(p["matches"], out, re.M):
        missing.append(f"output matching /{p['matches']}/")
    if "not_matches" in p and re.search(p["not_matches"], out, re.M):
        missing.append(f"output without /{p['not_matches']}/")
    return judged(name, not missing, saw, ", ".join(missing),
                  {"exit": res.returncode, "output": out[-2000:]})


def check_file(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, path = p["node"], p["path"]
    res = node_cmd(lab, node, ["cat", "--", path], ok=False)
    if res.returncode != 0:
        return judged(name, False, f"{node} has no file {path}", f"the file {path} in {node}")
    text = res.stdout
    missing = []
    if "contains" in p and p["contains"] not in text:
        missing.append(f"{path} containing {p['contains']!r}")
    if "matches" in p and not re.search(p["matches"], text, re.M):
        missing.append(f"{path} matching /{p['matches']}/")
    saw = f"{path} in {node} ({len(text)} bytes): {' '.join(text.split())[:200]}"
    return judged(name, not missing, saw, ", ".join(missing))


def read_counter(lab: Lab, node: str, source: str) -> int:
    kind, _, rest = source.partition(":")
    if kind == "iface":
        iface, fld = rest.split(":")
        info = _json(lab, node, ["ip", "-j", "-s", "link", "show", "dev", iface])[0]
        way, what = fld.split("_")
        stats = info.get("stats64") or info.get("stats") or {}
        return int(stats[way][what])
    if kind == "ethtool":
        iface, name = rest.split(":")
        values = parse_counters(node_cmd(lab, node, ["ethtool", "-S", iface]).stdout.replace(
            ":", " "), True)
        if name not in values:
            raise CannotCheck(f"`ethtool -S {iface}` in {node} has no counter {name}")
        return values[name]
    if kind == "kproxy":
        return kproxy_counter(lab, node, *rest.split(":"))
    path = "/proc/net/tls_stat" if kind == "tls_stat" else "/proc/net/snmp /proc/net/netstat"
    text = node_cmd(lab, node, ["sh", "-c", f"cat {path}"]).stdout
    values = parse_counters(text, kind == "tls_stat")
    if rest not in values:
        raise CannotCheck(f"{node} has no counter {rest} in {path}")
    return values[rest]


def kproxy_counter(lab: Lab, node: str, pair: str, fld: str) -> int:
    """A kproxy pair's proxy counter (labkit kproxy status), or what its process read and
    wrote (/proc/PID/io rchar + wchar: bytes copied through its memory)."""
    info = lab.feature_status("kproxy")["pairs"].get(pair)
    live = (info or {}).get("proxy_process") or {}
    if not live.get("listening"):
        raise CannotCheck(f"kproxy pair {pair} has no running proxy process")
    up, down = live.get("upstream", {}), live.get("downstream", {})
    if fld == "copied":
        io = parse_counters(node_cmd(lab, node, ["cat", f"/proc/{live['pid']}/io"]).stdout
                            .replace(":", " "), True)
        return io["rchar"] + io["wchar"]
    return {"up_bytes": up.get("bytes", 0), "down_bytes": down.get("bytes", 0),
            "messages": up.get("messages", 0),
            "dropped": up.get("dropped_messages", 0) + down.get("dropped_messages", 0),
            "half_closes": live.get("half_closes", 0), "resets": live.get("resets", 0)}[fld]


def parse_counters(text: str, flat: bool) -> dict[str, int]:
    """tls_stat: `Name value` lines; snmp/netstat: header/value line pairs ("Tcp: A B" then
    "Tcp: 1 2") flattened to TcpA, TcpB."""
    out: dict[str, int] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if flat:
        return {w[0]: int(w[1]) for w in lines if len(w) == 2 and w[1].lstrip("-").isdigit()}
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        prefix = head[0].rstrip(":")
        for k, v in zip(head[1:], vals[1:], strict=False):
            if v.lstrip("-").isdigit():
                out[f"{prefix}{k}"] = int(v)
    return out


def baseline_counter(lab: Lab, p: dict[str, Any]) -> Any:
    return read_counter(lab, p["node"], p["source"])


def check_counter(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, source = p["node"], p["source"]
    need = p.get("grew_by", 0 if "at_most" in p else 1)
    now = read_counter(lab, node, source)
    if base is None:
        return unknown(name, f"{source} in {node} has no value from the exercise's start "
                             f"(now {now}); start the exercise first")
    grew = now - int(base)
    saw = f"{source} in {node} is {now}, {grew:+d} since the exercise started ({base})"
    if "at_most" in p and grew > p["at_most"]:
        return judged(name, False, saw, f"growth of at most {p['at_most']} (it grew by "
                                        f"{grew - p['at_most']} more than that)",
                      {"start": base, "now": now})
    return judged(name, grew >= need, saw, f"{need - grew} more (it must grow by {need})",
                  {"start": base, "now": now})


def check_ktls(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node = p["node"]
    argv = ["ss", "-tinH"]
    if "port" in p:
        argv += [f"( sport = :{p['port']} or dport = :{p['port']} )"]
    text = node_cmd(lab, node, argv).stdout
    socks = split_ss(text)
    tls = [s for s in socks if "tcp-ulp-tls" in s]
    where = f"{node}" + (f" on port {p['port']}" if "port" in p else "")
    confs = sorted({" ".join(re.findall(r"(?:rx|tx)conf: ?\S+", s)) for s in tls})
    saw = f"{len(socks)} TCP socket(s) in {where}, {len(tls)} with kTLS" + \
        (f" ({'; '.join(confs)})" if confs else "")
    return judged(name, bool(tls), saw, f"a TCP socket using kernel TLS in {where}")


def split_ss(text: str) -> list[str]:
    """`ss -tinH` output as one string per socket (its line and the info lines under it)."""
    out: list[str] = []
    for line in text.splitlines():
        if line[:1].isspace() and out:
            out[-1] += " " + line.strip()
        elif line.strip():
            out.append(line.strip())
    return out


def check_reach(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    params = {"proto": "tcp", "family": 4, "port": 7000, "expect": "pass", **p}
    if len(lab.hosts) == 1:
        data = lab.call("labkit.exercises.checks:reach_remote", name, params)
    else:
        data = reach_remote(lab, name, params)
    how = f"{params['from']} -> {params['to']} over {params['proto']}/IPv{params['family']}"
    if data["outcome"] == "error":
        return unknown(name, data["detail"], data.get("evidence"))
    want = ("getting through" if params["expect"] == "pass" else "being blocked") + f": {how}"
    return judged(name, data["outcome"] == "pass", data["detail"], want, data.get("evidence"))


@remote
def reach_remote(lab: Lab, name: str, params: dict[str, Any]) -> dict[str, Any]:
    from labkit.topology.model import Check
    from labkit.verify.checks import run_check

    return run_check(lab, Check(name=name, kind="reach", loc=None,  # type: ignore[arg-type]
                                params=params)).as_dict()


def check_verify(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    v = lab.verify(p["kind"], p.get("feature"), **(p.get("options") or {}))
    return _from_verdict(name, v.outcome, v.detail, v.evidence,
                         f"`labkit verify {p['kind']}` passing")


def check_feature(lab: Lab, name: str, kind: str, p: dict[str, Any]) -> CheckResult:
    from labkit import features
    from labkit.topology.model import Check

    owner = features.owner_of_check(kind)
    if owner not in lab.topo.features:
        return unknown(name, f"lab '{lab.name}' has no {owner} feature, which a {kind} "
                             "check needs")
    check = Check(name=name, kind=kind, loc=None, params=p)  # type: ignore[arg-type]
    v = features.get(owner).run_check(lab, lab.topo.features[owner], check)
    return _from_verdict(name, v.outcome, v.detail, v.evidence, f"the {kind} check passing")


def _from_verdict(name: str, outcome: str, detail: str, evidence: dict[str, Any],
                  want: str) -> CheckResult:
    if outcome == "error":
        return unknown(name, detail, evidence)
    return judged(name, outcome == "pass", detail, want, evidence)


Runner = Callable[["Lab", str, dict[str, Any], Any], CheckResult]


def _runners() -> dict[str, Runner]:
    from labkit.exercises import rekey, tipc

    return {"link": check_link, "address": check_address, "route": check_route,
            "sysctl": check_sysctl, "command": check_command, "file": check_file,
            "counter": check_counter, "ktls": check_ktls, "reach": check_reach,
            "verify": check_verify, "tipc_bearer": tipc.check_bearer,
            "tipc_link": tipc.check_link, "tipc_key": tipc.check_key,
            "ktls_rekey": rekey.check}


def baseline(lab: Lab, spec: CheckSpec) -> Any:
    """What a check compares against later, read when its exercise starts (None if it
    compares against nothing, or the value could not be read: the check then says so)."""
    from labkit.exercises import rekey, tipc

    takers = {"counter": baseline_counter, "tipc_key": tipc.baseline_key,
              "tipc_link": tipc.baseline_link, "ktls_rekey": rekey.baseline}
    taker = takers.get(spec.kind)
    if taker is None:
        return None
    try:
        return taker(lab, spec.params)
    except (CannotCheck, LabkitError, KeyError, IndexError, ValueError):
        return None


def run(lab: Lab, spec: CheckSpec, base: Any = None) -> CheckResult:
    """One check, never raising for the lab's state (outcome error instead)."""
    try:
        runner = _runners().get(spec.kind)
        if runner is None:
            return check_feature(lab, spec.name, spec.kind, spec.params)
        return runner(lab, spec.name, spec.params, base)
    except CannotCheck as exc:
        return unknown(spec.name, str(exc))
    except LabkitError as exc:
        return unknown(spec.name, exc.render())
    except (KeyError, IndexError, ValueError, json.JSONDecodeError) as exc:
        return unknown(spec.name, f"unexpected output ({type(exc).__name__}: {exc})")
