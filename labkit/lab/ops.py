"""Lab-wide operations that run next to the lab's kernel, callable from the host.

Each is a thin @remote wrapper returning JSON values, so Lab (labkit.lab.lab) can call it
in-process for a local lab and through the guest daemon for a lab in a VM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit import features
from labkit.hosts.rpc import remote

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


@remote
def status(lab: Lab) -> dict[str, Any]:
    from labkit.lab.inspect import lab_status

    return lab_status(lab)


@remote
def node_links(lab: Lab, node: str) -> list[dict[str, Any]]:
    from labkit.lab.inspect import node_links as links

    return links(lab.node(node).ns)


@remote
def feature_status(lab: Lab, key: str) -> dict[str, Any]:
    return features.get(key).status(lab, lab.feature_config(key))


@remote
def feature_verify(lab: Lab, key: str, kind: str, options: dict[str, Any]) -> dict[str, Any]:
    return features.get(key).verify(lab, lab.feature_config(key), kind, **options).as_dict()


@remote
def run_checks(lab: Lab) -> list[dict[str, Any]]:
    from labkit.verify.checks import run_checks as run

    return [v.as_dict() for v in run(lab)]


@remote
def exchange(lab: Lab, src: str, dst: str, address: str, port: int, proto: str,
             timeout: float) -> dict[str, Any]:
    """The reach check between two nodes of one kernel, both ends in one process next to
    it (labkit.traffic.exchange.exchange_nodes asks the nodes' host to run it)."""
    from dataclasses import asdict

    from labkit.traffic.exchange import exchange as run

    return asdict(run(lab.node(src).ns, lab.node(dst).ns, address, port, proto, timeout))
