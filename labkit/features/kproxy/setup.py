"""Switching kproxy on: certificates for TLS pairs, one proxy process per pair in its proxy
node, and waiting until every proxy answers on its control socket (its programs loaded
and verified, its port listening).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.features.kproxy import certs
from labkit.features.kproxy.config import KproxyConfig, Pair
from labkit.lab import state

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

# s for a proxy to answer: Python starts in well under a second here, but under TCG
# emulation on a loaded machine a VM's first imports were seen to take minutes.
READY_TIMEOUT = 300.0


def control_path(lab: str, pair: str) -> str:
    return state.secret_path(lab, f"kproxy-{pair}.sock")


def log_path(lab: str, pair: str) -> str:
    return state.secret_path(lab, f"kproxy-{pair}.log")


def spec(lab: Lab, pair: Pair) -> dict[str, Any]:
    """What the proxy process is told (no secret: key material by path)."""
    assert pair.bind is not None
    out: dict[str, Any] = {
        "lab": lab.name, "pair": pair.name, "mode": pair.mode, "listen": pair.bind.pair(),
        "upstream": pair.upstream.pair(), "control": control_path(lab.name, pair.name),
        "rule": None if pair.rule is None else {
            "framing": pair.rule.framing, "prefix": pair.rule.prefix.hex(),
            "max_message": pair.rule.max_message},
        "tls": None,
    }
    if pair.tls:
        assert pair.proxy is not None
        mine = certs.node_paths(lab.name, pair.proxy)
        out["tls"] = {"cert": mine.cert, "key": mine.key, "ca": certs.ca_path(lab.name),
                      "server_name": pair.upstream.address,
                      "keylog": state.secret_path(lab.name, f"kproxy-{pair.name}-keylog")}
    return out


def tls_nodes(lab: Lab, cfg: KproxyConfig) -> dict[str, list[str]]:
    """Nodes that terminate TLS (proxies and upstream servers of TLS pairs) and the
    addresses their certificates name."""
    out: dict[str, list[str]] = {}
    for pair in cfg.pairs.values():
        if not pair.tls:
            continue
        for node in (pair.proxy, pair.upstream.node):
            if node is not None:
                out[node] = lab.node(node).addresses()
        if pair.upstream.node is None:  # an address outside the lab's nodes
            out.setdefault("upstream", []).append(pair.upstream.address)
    return out


def setup(lab: Lab, cfg: KproxyConfig) -> dict[str, Any]:
    if any(p.tls for p in cfg.pairs.values()):
        certs.make(lab.name, tls_nodes(lab, cfg))
    started: dict[str, Any] = {}
    for pair in cfg.pairs.values():
        if pair.mode == "direct" or pair.proxy is None or not lab.here(pair.proxy):
            continue
        node = lab.node(pair.proxy)
        with open(log_path(lab.name, pair.name), "ab") as log:
            os.chmod(log.name, 0o600)
            # The node's host directly, not node.popen: that records the process in the
            # lab's state under the lab's lock, which `up` holds while features start.
            # `down` finds the proxy anyway: it stops every process in the namespaces.
            proc = node.host.popen(
                node.ns, [sys.executable, "-m", "labkit.features.kproxy.proxy",
                          json.dumps(spec(lab, pair))], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log)
        started[pair.name] = {"pid": proc.pid, "node": pair.proxy, "mode": pair.mode}
    return {"pairs": cfg.as_dict()["pairs"], "proxies": started}


def _log_tail(lab: str, pair: str, lines: int = 12) -> str:
    with contextlib.suppress(OSError), open(log_path(lab, pair), errors="replace") as fh:
        return "".join(fh.readlines()[-lines:]).strip()
    return ""


def answers(lab: Lab, pair: Pair) -> dict[str, Any] | None:
    from labkit.features.kproxy.proxy import query

    try:
        return query(control_path(lab.name, pair.name), timeout=2.0)
    except (OSError, ValueError):
        return None


def _pid(lab: Lab, pair: Pair) -> int | None:
    st = state.load(lab.name)
    started = (st.features.get("kproxy", {}) if st else {}).get("proxies", {})
    return started.get(pair.name, {}).get("pid")


def _alive(pid: int | None) -> bool:
    from labkit.base import procs

    return pid is None or procs.alive(pid)


def wait_ready(lab: Lab, cfg: KproxyConfig) -> None:
    """Until every local proxy answers; a proxy that exited is reported with its log."""
    for pair in cfg.pairs.values():
        if pair.mode == "direct" or pair.proxy is None or not lab.here(pair.proxy):
            continue
        pid = _pid(lab, pair)

        def ready(pair: Pair = pair, pid: int | None = pid) -> bool:
            if answers(lab, pair) is not None:
                return True
            if not _alive(pid):
                raise LabkitError(f"the proxy of kproxy pair '{pair.name}' exited at start:"
                                  f"\n{_log_tail(lab.name, pair.name) or '(no output)'}",
                                  loc=pair.loc, hint="A verifier log, if any, is above.")
            return False

        wait_until(ready, READY_TIMEOUT, f"the proxy of kproxy pair '{pair.name}' to answer",
                   interval=0.1, detail=lambda pair=pair: _log_tail(lab.name, pair.name),
                   hint="Its log is in " + log_path(lab.name, pair.name) + ".")
