"""TIPC as a lab feature: the `tipc:` topology block, its setup and its status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.features.tipc import config, setup, status

if TYPE_CHECKING:
    from labkit.lab.lab import Lab
    from labkit.topology.model import Check
    from labkit.verify.verdict import Verdict


class TipcFeature:
    key = "tipc"
    needs = ("tipc",)
    check_kinds = ("tipc_crossover", "tipc_encryption")
    parse = staticmethod(config.parse)

    def setup(self, lab: Lab, cfg: config.TipcConfig) -> dict[str, Any]:
        return setup.setup(lab, cfg)

    def status(self, lab: Lab, cfg: config.TipcConfig) -> dict[str, Any]:
        return status.status(lab, cfg)


    def run_check(self, lab: Lab, cfg: config.TipcConfig, check: Check) -> Verdict:
        from labkit.features.tipc import verify

        if check.kind == "tipc_crossover":
            v = verify.crossover(lab, cfg, check.params["from"], check.params["to"])
        else:
            v = verify.encryption(lab, cfg)
        v.name = check.name
        return v


FEATURE = TipcFeature()
