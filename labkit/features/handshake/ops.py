"""Operations the CLI, tests and notebooks call next to the lab's kernel (@remote): where
a node's event log is, the daemon's pid, stalling and resuming it, and the DoS step.

The DoS step follows the review thread's worry: requests the daemon does not take stay
queued in the kernel, per namespace, up to a cap (uapi.pending_cap); past it the kernel
refuses new ones at once (EAGAIN), and queued ones fail when the consumer's own timeout
expires. With the host's daemon stalled, many NVMe connects at once show both; resuming
the daemon drains the queue and the lab recovers.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from labkit.base import procs
from labkit.base.wait import poll, wait_until
from labkit.errors import UsageError
from labkit.features.handshake import content, nvme, paths, setup
from labkit.features.handshake.config import HandshakeConfig
from labkit.features.handshake.events import read_events, read_status
from labkit.features.handshake.status import mem_total
from labkit.features.handshake.uapi import pending_cap
from labkit.hosts.rpc import remote

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

KERNEL_TIMEOUT = "/sys/module/nvme_tcp/parameters/tls_handshake_timeout"


def config(lab: Lab) -> HandshakeConfig:
    return lab.feature_config("handshake")  # type: ignore[no-any-return]


def _daemon_node(lab: Lab, node: str) -> str:
    cfg = config(lab)
    if node not in cfg.daemon_nodes:
        raise UsageError(f"node {node} of lab '{lab.name}' runs no handshake daemon.",
                         hint=f"Nodes with one: {', '.join(cfg.daemon_nodes) or 'none'}.")
    return node


@remote
def events_path(lab: Lab, node: str) -> str:
    return paths.events(lab.name, _daemon_node(lab, node))


@remote
def events_since(lab: Lab, node: str, seq: int = 0) -> list[dict[str, Any]]:
    return read_events(paths.events(lab.name, _daemon_node(lab, node)), seq)


def daemon_pid(lab: Lab, node: str) -> int:
    st = read_status(paths.status(lab.name, _daemon_node(lab, node))) or {}
    pid = int(st.get("pid", 0))
    if not pid or not procs.alive(pid):
        raise UsageError(f"the handshake daemon of node {node} is not running.",
                         hint=f"`labkit handshake status {lab.name}` says what happened.")
    return pid


def _signal(lab: Lab, node: str, sig: int, stalled: bool) -> dict[str, Any]:
    os.kill(daemon_pid(lab, node), sig)
    st = wait_until(lambda: (s := read_status(paths.status(lab.name, node))) and
                    s.get("stalled") == stalled and s, 30,
                    f"the daemon of {node} to {'stall' if stalled else 'resume'}")
    return {"node": node, "stalled": st["stalled"], "ready": st["ready"],
            "accepted": st["accepted"]}


@remote
def stall(lab: Lab, node: str) -> dict[str, Any]:
    """The daemon stops taking requests (READY still counted): they queue in the kernel."""
    return _signal(lab, node, signal.SIGUSR1, True)


@remote
def resume(lab: Lab, node: str) -> dict[str, Any]:
    return _signal(lab, node, signal.SIGUSR2, False)


def _kernel_log() -> list[str]:
    res = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30)
    return res.stdout.splitlines()


@remote
def dos(lab: Lab, connects: int = 8, hold: float = 3.0) -> dict[str, Any]:
    """Stall the NVMe host's daemon, start `connects` controller connects at once, watch
    for `hold` seconds, resume, and report what each connect saw and whether the lab's own
    controller and content check survived."""
    cfg = config(lab)
    n = cfg.nvme
    if n is None or not n.tls:
        raise UsageError(f"lab '{lab.name}' has no NVMe consumer with TLS.",
                         hint="The DoS step runs on topologies/nvme-tls.yaml.")
    if not 1 <= connects <= 64:
        raise UsageError("connects must be 1..64.")
    with open(KERNEL_TIMEOUT) as fh:
        kernel_timeout = float(fh.read().strip())
    if not 0 < hold < kernel_timeout:
        raise UsageError(f"hold must be shorter than the kernel's handshake timeout "
                         f"({kernel_timeout:g} s), not {hold:g}.")
    sub = nvme.subnqn(lab.name, n.target)
    before = set(nvme.controllers(sub))
    log_mark = len(_kernel_log())
    cap = pending_cap(mem_total())
    stalled = stall(lab, n.host)
    outcomes: list[dict[str, Any]] = [{} for _ in range(connects)]
    start = time.monotonic()

    def one(i: int) -> None:
        t0 = time.monotonic()
        try:
            inst = nvme.connect(setup.nvme_connect(lab, cfg, duplicate=True))
            outcomes[i] = {"result": "connected", "controller": f"nvme{inst}"}
        except nvme.ConnectFailed as exc:
            outcomes[i] = {"result": errno.errorcode.get(exc.errno, str(exc.errno))}
        outcomes[i].update(started=round(t0 - start, 3), seconds=round(time.monotonic() - t0, 3))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(connects)]
    for t in threads:
        t.start()

    def settled() -> bool:  # every connect is queued (READY reached the daemon) or refused
        st = read_status(paths.status(lab.name, n.host)) or {}
        queued = st.get("ready", 0) - stalled["ready"]
        return queued + sum(o.get("result") == "EAGAIN" for o in outcomes) >= connects

    poll(settled, hold, interval=0.1)
    during = read_status(paths.status(lab.name, n.host)) or {}
    refused_at_once = sum(1 for o in outcomes if o.get("result") == "EAGAIN")
    resumed = resume(lab, n.host)
    for t in threads:
        t.join(kernel_timeout * 3 + 30)
    new = sorted(set(nvme.controllers(sub)) - before)
    for inst in new:
        nvme.disconnect(inst)
    poll(lambda: not (set(nvme.controllers(sub)) - before), 30)
    lines = [ln for ln in _kernel_log()[log_mark:] if "TLS" in ln or "tls" in ln]
    check = content.nvme_content(lab, cfg)
    return {
        "connects": connects, "hold_s": hold, "kernel_timeout_s": kernel_timeout,
        "pending_cap": cap, "stalled": stalled,
        "while_stalled": {"ready_notifications": during.get("ready", 0) - stalled["ready"],
                          "accepted": during.get("accepted", 0) - stalled["accepted"],
                          "refused_at_once_EAGAIN": refused_at_once},
        "resumed": resumed, "outcomes": outcomes,
        "summary": _summary(outcomes), "extra_controllers_removed": [f"nvme{i}" for i in new],
        "kernel_log": lines[-20:], "recovered": check.outcome == "pass",
        "content_check": check.detail,
    }


def _summary(outcomes: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        key = o.get("result", "unfinished")
        out[key] = out.get(key, 0) + 1
    return out
