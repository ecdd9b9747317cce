"""Finding the TIPC configuration of a running lab, with a clear error if it has none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.errors import UsageError
from labkit.features.tipc.config import TipcConfig

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def config_of(lab: Lab) -> TipcConfig:
    cfg = lab.topo.features.get("tipc")
    if cfg is None:
        raise UsageError(f"lab '{lab.name}' has no TIPC cluster (no `tipc:` in "
                         f"{lab.topo.path}).", hint="Try topologies/cluster.yaml.")
    return cfg
