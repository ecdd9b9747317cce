"""Declared checks: which address of the target is used, and how verdicts are summarised."""

from __future__ import annotations

import ipaddress

import pytest

from labkit.cli.check import summary
from labkit.verify.checks import Route, choose_address, run_checks
from labkit.verify.verdict import Verdict, exit_code

# r's first address is on its link to x; y shares only a LAN with r.
SHARED_LAN = """name: t
nodes: {r: {}, x: {}, y: {}}
links:
  - endpoints: [r:eth1, x:eth1]
lans:
  lan1:
    endpoints: [r:eth2, y:eth1]
checks:
  - {name: y reaches r, from: y, to: r, proto: tcp}
  - {name: y reaches r over IPv6, from: y, to: r, proto: udp, family: 6}
"""


def test_choice_prefers_the_senders_subnet_then_a_route() -> None:
    routes: dict[str, Route | None] = {"198.19.0.1": None, "198.18.1.1": Route("eth1")}
    choice = choose_address("r", routes, "y")
    assert choice.address == "198.18.1.1"
    assert "y's eth1 subnet" in choice.reason
    routed = {"198.19.0.1": Route("eth1", "198.18.1.9"), "198.18.1.1": Route("eth1")}
    assert choose_address("r", routed, "y").address == "198.18.1.1", "direct beats routed"
    only_routed = {"198.19.0.1": None, "198.18.3.3": Route("eth1", "198.18.1.1")}
    choice = choose_address("h", only_routed, "y")
    assert choice.address == "198.18.3.3" and "via 198.18.1.1 on eth1" in choice.reason
    none = choose_address("r", {"198.19.0.1": None, "198.18.1.1": None}, "y")
    assert none.address == "198.19.0.1" and "no route" in none.reason


@pytest.mark.needs_root
def test_check_uses_the_address_the_sender_can_reach(lab_up) -> None:
    """Before: `{from: y, to: r}` tried r's first address (on the r-x link) and failed with
    'Network is unreachable' although y and r share a LAN."""
    lab = lab_up(text=SHARED_LAN)
    lan1 = lab.topo.lans["lan1"]
    first = lab.topo.nodes["r"].addresses(4)[0]
    assert first not in lan1.ipv4, "the case needs r's first address off the shared LAN"
    verdicts = {v.name: v for v in run_checks(lab)}
    for name, net in (("y reaches r", lan1.ipv4), ("y reaches r over IPv6", lan1.ipv6)):
        v = verdicts[name]
        assert v.passed, v.detail
        assert ipaddress.ip_address(v.evidence["to"]) in net, v.evidence
        assert "y's eth1 subnet" in v.detail, "the verdict says which address and why"
        assert "y's eth1 subnet" in v.evidence["address_choice"]


@pytest.mark.needs_root
def test_check_through_a_router_says_which_route(lab_up) -> None:
    from tests.conftest import ROOT

    lab = lab_up(ROOT / "topologies" / "routed.yaml")
    v = next(v for v in run_checks(lab) if v.name == "across the router (IPv4 TCP)")
    assert v.passed, v.detail
    assert "via 198.18.1.1 on eth1" in v.detail


def test_summary_counts_checks_that_could_not_run_apart() -> None:
    """Before: one check that could not run (exit 2) was summarised as '0 passed, 1 failed'."""
    error = Verdict("e", "error", "nothing listens")
    assert summary([error]) == "0 passed, 0 failed, 1 could not run"
    assert exit_code([error]) == 2
    mixed = [Verdict("p", "pass", ""), Verdict("f", "fail", ""), error]
    assert summary(mixed) == "1 passed, 1 failed, 1 could not run"
    assert exit_code(mixed) == 1
    assert exit_code([Verdict("p", "pass", ""), error]) == 1
    assert exit_code([Verdict("p", "pass", "")]) == 0
