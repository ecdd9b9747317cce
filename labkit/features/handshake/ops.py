"""Operations the CLI, tests and notebooks call next to the lab's kernel (@remote): where
a node's event log is, the daemon's pid, stalling and resuming it, and the DoS step.

The DoS step follows the review thread's worry: requests the daemon does not take stay
queued in the kernel, per namespace, up to a cap (uapi.pending_cap); past it the kernel
refuses new ones at once (EAGAIN, and nvmet drops the connection), and queued ones fail
when the consumer's own timeout expires. The NVMe host cannot show it (connects through
/dev/nvme-fabrics are serialised: one handshake at a time), the target can: every TCP
connection to its TLS port is a server handshake request in its namespace. Resuming the
daemon drains the queue and the lab recovers.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

from labkit.base import netns, procs
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


@remote
def reconnect_nvme(lab: Lab) -> dict[str, Any]:
    """Drop the NVMe host's controller and connect it again from its node: a fresh set of
    handshakes (one per queue) to watch in a trace."""
    cfg = config(lab)
    if cfg.nvme is None:
        raise UsageError(f"lab '{lab.name}' has no NVMe consumer.",
                         hint="Try topologies/nvme-tls.yaml.")
    nvme.disconnect_all(nvme.subnqn(lab.name, cfg.nvme.target))
    return setup.connect_nvme(lab, cfg)


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
            "accepted": st["accepted"], "failed": st.get("failed", {})}


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


def _closed(sock: socket.socket) -> bool:
    """Did the server close (or reset) this connection? (sockets are non-blocking)"""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except (BlockingIOError, TimeoutError):
        return False
    except OSError:
        return True


def _open_connections(ns: str, address: str, port: int, count: int) -> list[socket.socket]:
    """TCP connections that never send a byte: each makes the target ask for a handshake."""
    out = []
    for _ in range(count):
        sock = netns.socket_in(ns, socket.AF_INET6 if ":" in address else socket.AF_INET,
                               socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect((address, port))
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        out.append(sock)
    return out


@remote
def dos(lab: Lab, connects: int = 12, hold: float = 5.0) -> dict[str, Any]:
    """The limits step, on an NVMe lab with TLS: stall the target's daemon; open `connects`
    TCP connections to the target port (each one makes nvmet ask for a server handshake);
    try a real controller connect from the host while they wait; after at most `hold`
    seconds resume the daemon, drop the connections, and check that the lab recovers (a
    new controller connects, the content check passes)."""
    cfg = config(lab)
    n = cfg.nvme
    if n is None or not n.tls or n.path is None:
        raise UsageError(f"lab '{lab.name}' has no NVMe consumer with TLS.",
                         hint="The DoS step runs on topologies/nvme-tls.yaml.")
    if not 1 <= connects <= 256:
        raise UsageError("connects must be 1..256.")
    with open(KERNEL_TIMEOUT) as fh:
        kernel_timeout = float(fh.read().strip())
    if not 0 < hold < kernel_timeout:
        raise UsageError(f"hold must be shorter than the kernel's handshake timeout "
                         f"({kernel_timeout:g} s), not {hold:g}.")
    sub = nvme.subnqn(lab.name, n.target)
    before = set(nvme.controllers(sub))
    log_mark = len(_kernel_log())
    cap = pending_cap(mem_total())
    target_status = paths.status(lab.name, n.target)
    stalled = stall(lab, n.target)
    start = time.monotonic()
    socks = _open_connections(lab.node(n.host).ns, n.path.server_addr, n.port, connects)

    def queued() -> int:
        return int((read_status(target_status) or {}).get("ready", 0)) - stalled["ready"]

    poll(lambda: queued() + sum(_closed(s) for s in socks) >= len(socks), hold, interval=0.1)
    closed_at_once = sum(_closed(s) for s in socks)
    waiting = queued()
    t0 = time.monotonic()
    try:
        inst = nvme.connect(setup.nvme_connect(lab, cfg, duplicate=True))
        during = {"result": "connected", "controller": f"nvme{inst}"}
    except nvme.ConnectFailed as exc:
        during = {"result": errno.errorcode.get(exc.errno, str(exc.errno))}
    during["seconds"] = round(time.monotonic() - t0, 3)
    during_status = read_status(target_status) or {}
    resumed = resume(lab, n.target)
    for sock in socks:
        sock.close()
    wait_until(lambda: (read_status(target_status) or {}).get("in_flight", 1) == 0,
               kernel_timeout * 3 + 30, "the target's daemon to finish what it had taken")
    after_status = read_status(target_status) or {}
    t0 = time.monotonic()
    try:
        inst = nvme.connect(setup.nvme_connect(lab, cfg, duplicate=True))
        after = {"result": "connected", "controller": f"nvme{inst}"}
    except nvme.ConnectFailed as exc:
        after = {"result": errno.errorcode.get(exc.errno, str(exc.errno))}
    after["seconds"] = round(time.monotonic() - t0, 3)
    new = sorted(set(nvme.controllers(sub)) - before)
    for inst in new:
        nvme.disconnect(inst)
    poll(lambda: not (set(nvme.controllers(sub)) - before), 30)
    lines = [ln for ln in _kernel_log()[log_mark:] if "TLS" in ln or "tls" in ln]
    check = content.nvme_content(lab, cfg)
    return {
        "connects": len(socks), "hold_s": hold, "kernel_timeout_s": kernel_timeout,
        "pending_cap": cap, "target": n.target, "stalled": stalled,
        "while_stalled": {
            "queued": waiting, "refused_at_once": closed_at_once,
            "accepted": during_status.get("accepted", 0) - stalled["accepted"],
            "seconds": round(time.monotonic() - start, 3)},
        "host_connect_while_stalled": during, "resumed": resumed,
        "daemon_failures_after": {k: v - stalled.get("failed", {}).get(k, 0)
                                  for k, v in after_status.get("failed", {}).items()},
        "host_connect_after_resume": after,
        "refused_in_kernel_log": sum("err=-11" in ln or "-11" in ln for ln in lines),
        "kernel_log": lines[-20:], "extra_controllers_removed": [f"nvme{i}" for i in new],
        "recovered": after["result"] == "connected" and check.outcome == "pass",
        "content_check": check.detail,
    }
