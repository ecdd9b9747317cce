"""TIPC as a lab feature: the `tipc:` topology block, its setup and its status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.features.tipc import config, setup, status

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


class TipcFeature:
    key = "tipc"
    needs = ("tipc",)
    parse = staticmethod(config.parse)

    def setup(self, lab: Lab, cfg: config.TipcConfig) -> dict[str, Any]:
        return setup.setup(lab, cfg)

    def status(self, lab: Lab, cfg: config.TipcConfig) -> dict[str, Any]:
        return status.status(lab, cfg)


FEATURE = TipcFeature()
