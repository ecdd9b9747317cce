"""Switch the handshake feature on in a built lab, next to the kernel: the lab CA and
node certificates, the NVMe PSK, a daemon in every node that needs one (waiting until each
listens), then the consumers: NVMe target and host, NFS server and client mount. Teardown
undoes what outlives the namespaces (configfs, keyring, mounts, nfsd) in reverse order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import secrets
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from labkit.base import procs
from labkit.base.files import write_private
from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.features.handshake import certs, nfs, nvme, paths
from labkit.features.handshake.config import HandshakeConfig
from labkit.features.handshake.events import read_status
from labkit.features.handshake.handshaker import NodeConfig

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

DAEMON_START = 300.0  # s: imports and a warm-up handshake, under emulation on a busy host
CONSUMER_TIMEOUT = 120.0  # s: a connect or mount, several handshakes under emulation


def node_config(lab: Lab, cfg: HandshakeConfig, node: str) -> NodeConfig:
    has_cert = os.path.exists(paths.cert(lab.name, node))
    return NodeConfig(
        lab=lab.name, node=node, pool=cfg.pool, timeout=float(cfg.timeout),
        cert=paths.cert(lab.name, node) if has_cert else "",
        key=paths.key(lab.name, node) if has_cert else "",
        ca=paths.ca(lab.name) if has_cert else "",
        keylog=paths.keylog(lab.name, node) if cfg.keylog else "",
        psk_modes=list(cfg.psk_modes), events=paths.events(lab.name, node),
        status=paths.status(lab.name, node))


def mine(lab: Lab, node: str) -> bool:
    """Is the node in the kernel this code runs next to? (here_nodes is None when the whole
    lab is in this kernel; Lab.here() says False then inside a VM's guest_up.)"""
    return lab.here_nodes is None or node in lab.here_nodes


def prepare(lab: Lab, cfg: HandshakeConfig) -> dict[str, Any]:
    """Made once where `up` runs, shared by every kernel of the lab: the lab CA, a
    certificate per daemon node, and the NVMe PSK."""
    out: dict[str, Any] = {}
    if cfg.daemon_nodes:
        ca = certs.make_ca(lab.name)
        out["ca"] = ca.cert_pem.decode()
        out["certs"] = {}
        for node in cfg.daemon_nodes:
            issued = certs.issue(ca, node, lab.node(node).addresses(), lab.name)
            out["certs"][node] = {"cert": issued.cert_pem.decode(),
                                  "key": issued.key_pem.decode()}
    if cfg.nvme is not None and cfg.nvme.tls:
        out["psk"] = secrets.token_hex(nvme.PSK_LEN)
    return out


def write_certs(lab: Lab, made: dict[str, Any], nodes: list[str]) -> None:
    if "ca" not in made:
        return
    write_private(paths.ca(lab.name), made["ca"])
    for node in nodes:
        issued = made["certs"].get(node)
        if issued:
            write_private(paths.cert(lab.name, node), issued["cert"])
            write_private(paths.key(lab.name, node), issued["key"])


def start_daemon(lab: Lab, cfg: HandshakeConfig, node: str) -> int:
    ncfg = node_config(lab, cfg, node)
    write_private(paths.daemon_config(lab.name, node),
                  json.dumps(dataclasses.asdict(ncfg), indent=1))
    if ncfg.keylog:
        write_private(ncfg.keylog, b"")
    write_private(paths.log(lab.name, node), b"")
    log = os.open(paths.log(lab.name, node), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        n = lab.node(node)
        proc = n.host.popen(n.ns, [
            sys.executable, "-m", "labkit.features.handshake.daemon",
            "--config", paths.daemon_config(lab.name, node)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        os.close(log)
    return proc.pid


def daemon_state(lab: str, node: str) -> dict[str, Any] | None:
    return read_status(paths.status(lab, node))


def wait_daemons(lab: Lab, nodes: list[str], pids: dict[str, int],
                 timeout: float = DAEMON_START) -> None:
    def serving() -> bool:
        for node in nodes:
            st = daemon_state(lab.name, node)
            if st and st.get("state") == "failed":
                raise LabkitError(f"the handshake daemon of node {node} failed: "
                                  f"{st.get('error', 'see its log')}.", hint=_log_hint(lab, node))
            if not procs.alive(pids[node]) and not (st and st.get("state") == "serving"):
                raise LabkitError(f"the handshake daemon of node {node} exited at start: "
                                  f"{_log_tail(lab.name, node)}", hint=_log_hint(lab, node))
        return all((daemon_state(lab.name, n) or {}).get("state") == "serving" for n in nodes)

    wait_until(serving, timeout, "the handshake daemons to listen", interval=0.2,
               detail=lambda: ", ".join(
                   f"{n}: {(daemon_state(lab.name, n) or {}).get('state', 'starting')}"
                   for n in nodes))


def _log_tail(lab: str, node: str) -> str:
    try:
        with open(paths.log(lab, node)) as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    except OSError:
        lines = []
    return " / ".join(lines[-3:]) or "no output"


def _log_hint(lab: Lab, node: str) -> str:
    return (f"Its output is in {paths.log(lab.name, node)} next to the lab's kernel "
            f"(`labkit exec {lab.name} {node} -- cat {paths.log(lab.name, node)}`).")


# -- consumers --------------------------------------------------------------------------


def nvme_target(lab: Lab, cfg: HandshakeConfig) -> nvme.Target:
    n = cfg.nvme
    assert n is not None and n.path is not None
    return nvme.Target(lab.name, n.target, lab.node(n.target).ns, n.path.server_addr, n.port,
                       n.tls, paths.nvme_backing(lab.name, n.target),
                       nvme.hostnqn(lab.name, n.host))


def nvme_connect(lab: Lab, cfg: HandshakeConfig, duplicate: bool = False) -> nvme.Connect:
    n = cfg.nvme
    assert n is not None and n.path is not None
    return nvme.Connect(lab.node(n.host).ns, n.path.server_addr, n.port,
                        nvme.subnqn(lab.name, n.target), nvme.hostnqn(lab.name, n.host),
                        n.tls, n.io_queues, duplicate)


def psk_identity(lab: Lab, cfg: HandshakeConfig) -> str:
    n = cfg.nvme
    assert n is not None
    return nvme.psk_identity(nvme.hostnqn(lab.name, n.host), nvme.subnqn(lab.name, n.target))


def connect_nvme(lab: Lab, cfg: HandshakeConfig) -> dict[str, Any]:
    """Connect the host (from its node) and wait until the controller is live.

    A connect whose TLS handshakes outran the kernel's limit (nvme_tcp's
    tls_handshake_timeout, 10 s per queue: reached on a loaded host under emulation, once
    in CI) is made once more; `connects` in the result says how many it took.
    """
    connects = 1
    try:
        instance = nvme.connect(nvme_connect(lab, cfg))
    except nvme.ConnectFailed as exc:
        if exc.errno != errno.ETIMEDOUT:
            raise
        connects = 2
        instance = nvme.connect(nvme_connect(lab, cfg))
    device = nvme.wait_live(instance, nvme.subnqn(lab.name, cfg.nvme.target),  # type: ignore
                            CONSUMER_TIMEOUT)
    return {"controller": f"nvme{instance}", "device": device, "connects": connects}


def setup_nvme(lab: Lab, cfg: HandshakeConfig, psk: str) -> dict[str, Any]:
    n = cfg.nvme
    assert n is not None
    if not (mine(lab, n.target) and mine(lab, n.host)):
        if mine(lab, n.target) or mine(lab, n.host):
            raise LabkitError(f"the NVMe target ({n.target}) and host ({n.host}) of lab "
                              f"'{lab.name}' are in different kernels.",
                              hint="They share the kernel's .nvme keyring: give them the same "
                                   "kernel.")
        return {}
    out: dict[str, Any] = {"subsystem": nvme.subnqn(lab.name, n.target)}
    if n.tls:
        out["psk_serial"] = nvme.add_psk(psk_identity(lab, cfg), bytes.fromhex(psk))
        out["psk_identity"] = psk_identity(lab, cfg)
    out["port_id"] = nvme.start_target(nvme_target(lab, cfg), n.size_mb)
    out.update(connect_nvme(lab, cfg))
    return out


def setup_nfs(lab: Lab, cfg: HandshakeConfig) -> dict[str, Any]:
    f = cfg.nfs
    assert f is not None and f.path is not None
    if not (mine(lab, f.server) and mine(lab, f.client)):
        if mine(lab, f.server) or mine(lab, f.client):
            raise LabkitError(f"the NFS server ({f.server}) and client ({f.client}) of lab "
                              f"'{lab.name}' are in different kernels.",
                              hint="Give them the same kernel (the lab mounts from it).")
        return {}
    nfs.check_tools()
    nvme.modprobe(*nfs.SERVER_MODULES)
    os.makedirs(paths.work(lab.name), mode=0o700, exist_ok=True)
    nfs.prepare_export(lab.name, f.size_mb)
    script = nfs.server_script(lab.name, f.path.server_addr, f.path.client_addr)
    log = os.open(paths.log(lab.name, f"nfsd-{f.server}"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        server = lab.node(f.server)
        proc = server.host.popen(server.ns, ["sh", "-c", script],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        os.close(log)
    nfs.wait_server(lab.node(f.server).ns, CONSUMER_TIMEOUT)
    target = nfs.mount(lab.name, lab.node(f.client).ns, f.path.server_addr,
                       f.path.client_addr, f.xprtsec)
    return {"mountd_pid": proc.pid, "export": nfs.export_dir(lab.name), "mount": target}


def setup(lab: Lab, cfg: HandshakeConfig) -> dict[str, Any]:
    made = lab.prepared.get("handshake") or prepare(lab, cfg)
    daemons = [n for n in cfg.daemon_nodes if mine(lab, n)]
    out: dict[str, Any] = cfg.as_dict()
    write_certs(lab, made, daemons)
    pids = {node: start_daemon(lab, cfg, node) for node in daemons}
    out["daemon_pids"] = pids
    wait_daemons(lab, daemons, pids)
    if cfg.nvme is not None:
        out["nvme"] = {**out.get("nvme", {}), **setup_nvme(lab, cfg, made.get("psk", ""))}
    if cfg.nfs is not None:
        out["nfs"] = {**out.get("nfs", {}), **setup_nfs(lab, cfg)}
    return out


def teardown(lab: Lab, cfg: HandshakeConfig) -> None:
    """NFS client mount, nfsd, NVMe controllers, target, PSK, then the NFS dirs."""
    problems: list[str] = []

    def step(what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # every step runs: the namespaces must go clean
            problems.append(f"{what}: {exc}")

    if cfg.nfs is not None:
        step("unmounting NFS", nfs.unmount, lab.name)
        step("stopping nfsd", nfs.stop_server, lab.node(cfg.nfs.server).ns)
    if cfg.nvme is not None:
        sub = nvme.subnqn(lab.name, cfg.nvme.target)
        with contextlib.suppress(FileNotFoundError):
            step("disconnecting NVMe", nvme.disconnect_all, sub)
        step("removing the NVMe target", nvme.stop_target, lab.name, cfg.nvme.target)
        step("removing the PSK", nvme.remove_psk, psk_identity(lab, cfg))
    if os.path.isdir(paths.work(lab.name)):
        step("removing NFS directories", nfs.remove_dirs, lab.name)
    if problems:
        raise LabkitError("; ".join(problems))
