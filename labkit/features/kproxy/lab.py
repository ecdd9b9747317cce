"""Finding a running lab's kproxy configuration and one of its pairs, with clear errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.errors import UsageError
from labkit.features.kproxy.config import KproxyConfig, Pair

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def config_of(lab: Lab) -> KproxyConfig:
    cfg = lab.topo.features.get("kproxy")
    if cfg is None:
        raise UsageError(f"lab '{lab.name}' has no kproxy pairs (no `kproxy:` in "
                         f"{lab.topo.path}).", hint="Try topologies/kproxy.yaml.")
    return cfg  # type: ignore[no-any-return]


def pair_of(cfg: KproxyConfig, name: str | None) -> Pair:
    if name is None:
        if len(cfg.pairs) == 1:
            return next(iter(cfg.pairs.values()))
        raise UsageError("this lab has several kproxy pairs; say which.",
                         hint=f"Give --pair with one of: {', '.join(cfg.pairs)}.")
    pair = cfg.pairs.get(name)
    if pair is None:
        raise UsageError(f"there is no kproxy pair '{name}'.",
                         hint=f"Pairs: {', '.join(cfg.pairs)}.")
    return pair
