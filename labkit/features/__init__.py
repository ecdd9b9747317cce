"""Kernel features a lab can switch on, one subpackage each, all with the same small surface.

A feature owns a top-level topology key and the same key inside nodes (e.g. `tipc:`), says
which kernel capabilities it needs (names from labkit.hosts.doctor), and provides steps run
after the network is built and before it is torn down. Adding a feature = its folder plus
one line in FEATURES.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from labkit.lab.lab import Lab
    from labkit.topology.fields import Problems
    from labkit.topology.located import LMap
    from labkit.topology.model import Check, Topology
    from labkit.verify.verdict import Verdict

# key in the topology -> module providing FEATURE
FEATURES: dict[str, str] = {
    "tipc": "labkit.features.tipc.feature",
}


class Feature(Protocol):
    key: str
    needs: tuple[str, ...]  # doctor capability names
    check_kinds: tuple[str, ...]  # `checks:` types the feature adds (netlab style)

    def parse(self, block: LMap | None, nodes: dict[str, LMap], topo: Topology,
              p: Problems) -> Any:
        """Validate the lab-level block and per-node blocks; return the feature's config."""

    def setup(self, lab: Lab, config: Any) -> None:
        """Switch the feature on in a built lab; raise LabkitError on failure."""

    def status(self, lab: Lab, config: Any) -> dict[str, Any]:
        """What `labkit status` shows for the feature."""

    def run_check(self, lab: Lab, config: Any, check: Check) -> Verdict:
        """Run one of the feature's declared checks."""


def get(key: str) -> Feature:
    return importlib.import_module(FEATURES[key]).FEATURE


def keys() -> list[str]:
    return list(FEATURES)
