"""Finding the TIPC configuration of a running lab, with a clear error if it has none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.features.tipc.config import TipcConfig

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def config_of(lab: Lab) -> TipcConfig:
    return lab.feature_config("tipc")  # type: ignore[no-any-return]
