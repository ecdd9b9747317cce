"""The `kproxy_relay` check the kproxy topologies declare: it passes on a working lab and
says which pair fails when a pair's proxy is gone (so `labkit run` on them proves
something, and the check can fail)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from labkit.base import procs
from labkit.features.kproxy import measure
from labkit.features.kproxy.lab import config_of

TOPOLOGY = """\
name: X
nodes:
  client: {}
  proxy: {}
  server: {}
links:
  - endpoints: [client:eth1, proxy:eth1]
  - endpoints: [proxy:eth2, server:eth1]
kproxy:
  pairs:
    - {name: km, mode: sockmap, proxy: proxy, listen: 9001, upstream: "server:9101",
       client: client}
    - {name: kb, mode: boomerang, proxy: proxy, listen: 9003, upstream: "server:9103",
       client: client}
checks:
  - {name: pairs relay, type: kproxy_relay}
"""


@pytest.mark.needs_root
def test_relay_check_passes_then_names_the_pair_whose_proxy_is_gone(
        lab_up: Callable[..., object]) -> None:
    lab = lab_up(text=TOPOLOGY)
    [verdict] = lab.checks()  # type: ignore[attr-defined]
    assert verdict.outcome == "pass", verdict.detail
    rows = verdict.evidence
    assert rows["km"]["intact"] and rows["kb"]["intact"]
    assert rows["km"]["accepted"] == 2 and rows["km"]["user_space_fallbacks"] == 0
    assert rows["kb"]["accepted"] == 2

    pair = config_of(lab).pairs["kb"]
    pid = measure.proxy_pid(lab, pair)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    procs.reap([pid])
    [verdict] = lab.checks()  # type: ignore[attr-defined]
    assert verdict.outcome == "fail", verdict.detail
    assert verdict.detail.startswith("kb: ") and "km:" not in verdict.detail, verdict.detail
