"""What `labkit kproxy status` shows: per pair its mode, where clients connect, and the
proxy's own counters (connections, bytes, drops, closes forwarded, crypto), with the ids of
the BPF programs and maps a sockmap pair holds in the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.features.kproxy.config import KproxyConfig
from labkit.features.kproxy.setup import answers

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def status(lab: Lab, cfg: KproxyConfig) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for name, pair in cfg.pairs.items():
        info = pair.as_dict()
        if pair.mode == "direct":
            info["proxy_process"] = None
        elif pair.proxy is not None and lab.here(pair.proxy):
            live = answers(lab, pair)
            info["proxy_process"] = live if live is not None else {"listening": False}
        else:
            continue  # another kernel of the lab answers for it
        pairs[name] = info
    return {"pairs": pairs}
