"""Run the checks a topology declares (its `checks:` list) against a running lab."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit import features
from labkit.topology.model import Check
from labkit.traffic.exchange import exchange
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def run_check(lab: Lab, check: Check) -> Verdict:
    p = check.params
    src = lab.node(p["from"])
    if p["to"] in lab.nodes:
        candidates = lab.node(p["to"]).addresses(p["family"])
        if not candidates:
            return Verdict(check.name, "error",
                           f"node {p['to']} has no IPv{p['family']} address to reach.")
        address, dst_ns = candidates[0], lab.node(p["to"]).ns
    else:
        address = p["to"]
        owner = next((n for n in lab.nodes.values() if address in n.addresses()), None)
        if owner is None:
            return Verdict(check.name, "error",
                           f"no node of the lab owns {address}, so nothing can answer there.")
        dst_ns = owner.ns
    result = exchange(src.ns, dst_ns, address, p["port"], p["proto"])
    if not result.ran:
        return Verdict(check.name, "error", result.detail)
    expected = p["expect"] == "pass"
    outcome = "pass" if result.ok == expected else "fail"
    detail = result.detail if expected else (
        f"unreachable as expected ({result.detail})" if not result.ok
        else f"reachable but expected not to be ({result.detail})")
    return Verdict(check.name, outcome, detail,
                   {"from": p["from"], "to": address, "proto": p["proto"],
                    "rtt_ms": result.rtt_ms})


def run_checks(lab: Lab) -> list[Verdict]:
    out = []
    for check in lab.topo.checks:
        if check.kind == "reach":
            out.append(run_check(lab, check))
            continue
        key = features.owner_of_check(check.kind)
        out.append(features.get(key).run_check(lab, lab.topo.features[key], check))
    return out
