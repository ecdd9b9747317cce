"""`labkit verify throughput NAME --pair P`: bytes through the pair at or above a threshold.

The verdict rests on the receiver's count of what arrived (first to last byte), from a
bounded run; the threshold comes from --threshold or the pair's `threshold:` (MB/s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.errors import LabkitError
from labkit.features.kproxy.config import KproxyConfig
from labkit.features.kproxy.lab import pair_of
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

DEFAULT_SECONDS = 3.0


def throughput(lab: Lab, cfg: KproxyConfig, pair_name: str | None, src: str | None,
               threshold: float | None, seconds: float | None) -> Verdict:
    from labkit.features.kproxy import measure

    pair = pair_of(cfg, pair_name)
    name = f"throughput through kproxy pair {pair.name} ({pair.mode})"
    limit = threshold if threshold is not None else pair.threshold
    if limit is None:
        return Verdict(name, "error", f"no threshold for pair {pair.name}: give --threshold "
                                      "MB/s or declare `threshold:` in the pair.")
    try:
        path = measure.path_of(lab, pair.name, src)
        server = measure.start_server(lab, path, timeout=(seconds or DEFAULT_SECONDS) + 90)
        try:
            got = measure.throughput(lab, path, "up", seconds or DEFAULT_SECONDS,
                                     measure.proxy_pid(lab, pair))
        finally:
            measure.stop(server)
    except LabkitError as exc:
        return Verdict(name, "error", exc.message, {"hint": exc.hint})
    if "error" in got:
        return Verdict(name, "fail", f"the transfer failed: {got['error']}", got)
    rate = got["MBps"]
    evidence = {**got, "threshold_MBps": limit, "path": f"{path.src} -> {pair.entry}"}
    if rate >= limit:
        return Verdict(name, "pass", f"{rate:.1f} MB/s over {got['seconds']} s, at or above "
                                     f"{limit:g} MB/s", evidence)
    return Verdict(name, "fail", f"{rate:.1f} MB/s over {got['seconds']} s, below "
                                 f"{limit:g} MB/s", evidence)
