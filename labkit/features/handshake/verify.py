"""`labkit verify encryption --feature tls`: capture on the consumer's link while it
reconnects and carries a marker, then judge the wire (verdicts.py).

The capture (an AF_PACKET socket in the client-side node, opened before anything is
sent) must see each connection from its first byte, handshake included, so the consumer
reconnects inside it: the NVMe host drops and re-creates its controller, the NFS client
remounts. The marker then goes through the consumer (a block written with O_DIRECT, a
file written and synced) and is read on the other side, so it certainly crossed the
wire. Everything is bounded: one reconnect, one marker, a capture of at most `seconds`
after the marker arrived and MAX_FRAMES frames.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from typing import TYPE_CHECKING, Any

from labkit.errors import UsageError
from labkit.features.handshake import nfs, nvme, paths, setup
from labkit.features.handshake.config import NFS_PORT, HandshakeConfig
from labkit.features.handshake.verdicts import decrypt_marker, judge, wire_evidence
from labkit.packets.tap import Tap
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

MAX_FRAMES = 20_000
MARKER_OFFSET = 1 << 20  # where the NVMe marker block goes (past the content check's blocks)


def _merged_keylog(lab: Lab, nodes: tuple[str, ...], out: str) -> bool:
    lines: list[str] = []
    for node in nodes:
        with contextlib.suppress(FileNotFoundError), open(paths.keylog(lab.name, node)) as fh:
            lines += [ln for ln in fh.read().splitlines() if ln and ln not in lines]
    if not lines:
        return False
    from labkit.base.files import write_private

    write_private(out, "\n".join(lines) + "\n")
    return True


def nvme_traffic(lab: Lab, cfg: HandshakeConfig, marker: bytes) -> dict[str, Any]:
    n = cfg.nvme
    assert n is not None
    sub = nvme.subnqn(lab.name, n.target)
    nvme.disconnect_all(sub)
    info = setup.connect_nvme(lab, cfg)
    block = (marker * (4096 // len(marker) + 1))[:4096]
    nvme.direct_io(info["device"], MARKER_OFFSET, data=block)
    arrived = nvme.file_io(paths.nvme_backing(lab.name, n.target), MARKER_OFFSET, size=4096)
    return {"marker_delivered": arrived == block, "reconnected": info["controller"]}


def nfs_traffic(lab: Lab, cfg: HandshakeConfig, marker: bytes) -> dict[str, Any]:
    f = cfg.nfs
    assert f is not None and f.path is not None
    nfs.unmount(lab.name)
    nfs.mount(lab.name, lab.node(f.client).ns, f.path.server_addr, f.path.client_addr,
              f.xprtsec)
    name = f"marker-{secrets.token_hex(4)}"
    nfs.write_file(os.path.join(nfs.mount_point(lab.name), name), marker * 64)
    arrived = nfs.read_file(os.path.join(nfs.export_dir(lab.name), name))
    os.unlink(os.path.join(nfs.export_dir(lab.name), name))
    return {"marker_delivered": arrived == marker * 64, "remounted": True}


def encryption_of(lab: Lab, cfg: HandshakeConfig, consumer: str,
                  seconds: float = 5.0) -> Verdict:
    if consumer == "nvme":
        c: Any = cfg.nvme
        client, port, traffic = c.host, c.port, nvme_traffic
        what = f"NVMe/TCP {'with' if c.tls else 'without'} TLS"
    else:
        c = cfg.nfs
        client, port, traffic = c.client, NFS_PORT, nfs_traffic
        what = f"NFS with xprtsec={c.xprtsec}"
    name = f"tls encryption: {what}, {c.path.client_iface} of {client}"
    marker = b"LKTLS" + secrets.token_hex(8).encode()
    tap = Tap(lab.node(client).ns, c.path.client_iface, max_frames=MAX_FRAMES)
    try:
        result = traffic(lab, cfg, marker)
        tap.wait_quiet(0.5, seconds)  # the marker's ACKs are in
    finally:
        frames = tap.finish()
    evidence = wire_evidence(frames, port, marker)
    evidence.update(result)
    evidence["capture_dropped"] = tap.dropped
    evidence["interface"] = f"{client}:{c.path.client_iface}"
    evidence["keylog"] = False
    if cfg.keylog and c.tls:
        with tempfile.TemporaryDirectory(prefix="labkit-keylog-") as tmp:
            os.chmod(tmp, 0o700)
            keys = os.path.join(tmp, "keys.log")
            if _merged_keylog(lab, c.nodes, keys):
                evidence["keylog"] = True
                evidence.update(decrypt_marker(frames, port, keys, marker))
    return judge(name, evidence)


def encryption(lab: Lab, cfg: HandshakeConfig, which: str | None = None,
               seconds: float = 5.0) -> Verdict:
    consumers = list(cfg.consumers)
    if which:
        if which not in consumers:
            raise UsageError(f"lab '{lab.name}' has no {which} consumer.",
                             hint=f"Its consumers: {', '.join(consumers) or 'none'}.")
        consumers = [which]
    if not consumers:
        return Verdict("tls encryption", "error", f"lab '{lab.name}' has no NVMe or NFS "
                                                  "consumer whose traffic could be judged.")
    verdicts = [encryption_of(lab, cfg, k, seconds) for k in consumers]
    if len(verdicts) == 1:
        return verdicts[0]
    worst = next((v for v in verdicts if v.outcome == "fail"),
                 next((v for v in verdicts if v.outcome == "error"), verdicts[0]))
    return Verdict("tls encryption", worst.outcome, " ".join(v.detail for v in verdicts),
                   {v.name: v.evidence for v in verdicts})
