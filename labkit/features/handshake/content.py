"""The lab checks: read a block (NVMe) or a file (NFS) through the TLS connection and
compare it with what the other side holds, both ways.

Each direction writes fresh random bytes on one side and reads them on the other: the
target's backing file against the host's block device (O_DIRECT, so the bytes cross the
fabric rather than a cache), the server's export against the client's mount.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Any

from labkit.features.handshake import nfs, nvme, paths
from labkit.features.handshake.config import HandshakeConfig
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

BLOCK = 64 * 1024


def nvme_content(lab: Lab, cfg: HandshakeConfig, name: str = "") -> Verdict:
    n = cfg.nvme
    assert n is not None
    name = name or f"NVMe/TCP{'/TLS' if n.tls else ''} block content {n.target} <-> {n.host}"
    sub = nvme.subnqn(lab.name, n.target)
    device = nvme.block_device(sub)
    live = [c for c in nvme.controllers(sub) if nvme.ctrl_attr(c, "state") == "live"]
    evidence: dict[str, Any] = {"device": device, "live_controllers": [f"nvme{c}" for c in live]}
    if device is None or not live:
        return Verdict(name, "error", f"the host has no live controller for {sub}, so no "
                                      "block could be read.", evidence)
    backing = paths.nvme_backing(lab.name, n.target)
    out_block = secrets.token_bytes(BLOCK)
    nvme.file_io(backing, 0, out_block)
    seen_by_host = nvme.direct_io(device, 0, size=BLOCK)
    in_block = secrets.token_bytes(BLOCK)
    nvme.direct_io(device, BLOCK, data=in_block)
    seen_by_target = nvme.file_io(backing, BLOCK, size=BLOCK)
    evidence.update(target_to_host=seen_by_host == out_block,
                    host_to_target=seen_by_target == in_block, bytes_each_way=BLOCK)
    if seen_by_host == out_block and seen_by_target == in_block:
        return Verdict(name, "pass", f"{BLOCK // 1024} KiB written on the target read back "
                                     f"identical through {device} on {n.host}, and 64 KiB "
                                     f"written through {device} arrived in the target's store.",
                       evidence)
    return Verdict(name, "fail", "the bytes differ: " + ", ".join(
        k.replace("_", " ") for k in ("target_to_host", "host_to_target")
        if not evidence[k]) + " did not match.", evidence)


def nfs_content(lab: Lab, cfg: HandshakeConfig, name: str = "") -> Verdict:
    f = cfg.nfs
    assert f is not None
    name = name or f"NFS (xprtsec={f.xprtsec}) file content {f.server} <-> {f.client}"
    mnt, export = nfs.mount_point(lab.name), nfs.export_dir(lab.name)
    evidence: dict[str, Any] = {"mount": mnt, "export": export}
    if not os.path.ismount(mnt):
        return Verdict(name, "error", f"nothing is mounted on {mnt}, so no file could be read.",
                       evidence)
    tag = secrets.token_hex(6)
    down = secrets.token_bytes(BLOCK)
    nfs.write_file(os.path.join(export, f"from-server-{tag}"), down)
    seen_by_client = nfs.read_file(os.path.join(mnt, f"from-server-{tag}"))
    up = secrets.token_bytes(BLOCK)
    nfs.write_file(os.path.join(mnt, f"from-client-{tag}"), up)
    seen_by_server = nfs.read_file(os.path.join(export, f"from-client-{tag}"))
    for leftover in (f"from-server-{tag}", f"from-client-{tag}"):
        os.unlink(os.path.join(export, leftover))
    evidence.update(server_to_client=seen_by_client == down,
                    client_to_server=seen_by_server == up, bytes_each_way=BLOCK)
    if seen_by_client == down and seen_by_server == up:
        return Verdict(name, "pass", f"a 64 KiB file written in {f.server}'s export read back "
                                     f"identical on {f.client}'s mount, and one written "
                                     "through the mount arrived in the export.", evidence)
    return Verdict(name, "fail", "the files differ: " + ", ".join(
        k.replace("_", " ") for k in ("server_to_client", "client_to_server")
        if not evidence[k]) + " did not match.", evidence)


def content(lab: Lab, cfg: HandshakeConfig, name: str = "") -> Verdict:
    """Every consumer of the lab; one verdict (the first that did not pass, or a pass)."""
    verdicts = []
    if cfg.nvme is not None:
        verdicts.append(nvme_content(lab, cfg))
    if cfg.nfs is not None:
        verdicts.append(nfs_content(lab, cfg))
    if not verdicts:
        return Verdict(name or "tls content", "error", "the lab has no NVMe or NFS consumer.")
    worst = next((v for v in verdicts if v.outcome == "fail"),
                 next((v for v in verdicts if v.outcome == "error"), None))
    out = worst or Verdict(name or "tls content", "pass",
                           " ".join(v.detail for v in verdicts))
    out.evidence = {v.name: v.evidence for v in verdicts}
    if name:
        out.name = name
    return out
