"""The `handshake:` blocks of a topology: the daemons, and the in-kernel consumers on top.

    handshake:                  # lab level
      pool: 4                   # handshakes in flight per daemon (more wait in the kernel)
      timeout: 10               # s a handshake may take when the kernel's request names none
      keylog: true              # NSS key log per node (0600): lets `verify encryption` decrypt
      psk_modes: [psk_dhe_ke]   # TLS 1.3 PSK key exchange modes the daemons accept/offer
      nvme: {target: t, host: h, tls: true, port: 4420, io_queues: 1, size_mb: 16}
      nfs: {server: s, client: c, xprtsec: tls, size_mb: 16}     # tls | mtls | none
    nodes:
      x:
        handshake: {}           # a daemon (and a certificate) on a node without a consumer

Every node a consumer with TLS uses gets a daemon (the upcall is per network namespace);
a node-level block adds one elsewhere (e.g. for `labkit tls serve`). Each lab gets its own
CA and a certificate per daemon node; NVMe gets a PSK in the kernel keyring. A consumer
with TLS off (`tls: false`, `xprtsec: none`) is the plaintext control.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import Loc
from labkit.topology.fields import Problems, as_bool, as_int, as_list, as_map, check_keys, suggest
from labkit.topology.located import LMap
from labkit.topology.model import Topology

LAB_KEYS = ["pool", "timeout", "keylog", "psk_modes", "nvme", "nfs"]
NODE_KEYS = ["daemon"]
NVME_KEYS = ["target", "host", "tls", "port", "io_queues", "size_mb", "address"]
NFS_KEYS = ["server", "client", "xprtsec", "size_mb", "address"]
XPRTSEC = ["tls", "mtls", "none"]
PSK_MODES = ["psk_dhe_ke", "psk_ke"]
POOL_MAX = 64  # labkit's own bound: handshakes one daemon runs at once
TIMEOUT_MAX = 600  # s
IO_QUEUES_MAX = 8
SIZE_MB_MAX = 1024  # the backing store lives in RAM (tmpfs)
NVME_PORT = 4420
NFS_PORT = 2049


@dataclass
class Path:
    """Where two consumer nodes meet: the addresses and interfaces on a shared segment."""

    server_addr: str
    client_addr: str
    server_iface: str
    client_iface: str


@dataclass
class Nvme:
    target: str
    host: str
    loc: Loc
    tls: bool = True
    port: int = NVME_PORT
    io_queues: int = 1
    size_mb: int = 16
    path: Path | None = None

    @property
    def nodes(self) -> tuple[str, str]:
        return self.target, self.host

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "host": self.host, "tls": self.tls, "port": self.port,
                "io_queues": self.io_queues, "size_mb": self.size_mb,
                "address": self.path.server_addr if self.path else None}


@dataclass
class Nfs:
    server: str
    client: str
    loc: Loc
    xprtsec: str = "tls"
    size_mb: int = 16
    path: Path | None = None

    @property
    def tls(self) -> bool:
        return self.xprtsec != "none"

    @property
    def nodes(self) -> tuple[str, str]:
        return self.server, self.client

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "client": self.client, "xprtsec": self.xprtsec,
                "size_mb": self.size_mb,
                "address": self.path.server_addr if self.path else None}


@dataclass
class HandshakeConfig:
    loc: Loc
    pool: int = 4
    timeout: int = 10
    keylog: bool = False
    psk_modes: list[str] = field(default_factory=lambda: list(PSK_MODES))
    nvme: Nvme | None = None
    nfs: Nfs | None = None
    extra: dict[str, Loc] = field(default_factory=dict)  # nodes with a block of their own
    no_daemon: set[str] = field(default_factory=set)

    @property
    def consumers(self) -> dict[str, Nvme | Nfs]:
        return {k: v for k, v in (("nvme", self.nvme), ("nfs", self.nfs)) if v is not None}

    @property
    def daemon_nodes(self) -> list[str]:
        """Nodes that run a daemon: those of consumers with TLS, and those that ask."""
        out: list[str] = []
        for consumer in self.consumers.values():
            if consumer.tls:
                out += [n for n in consumer.nodes if n not in out]
        out += [n for n in self.extra if n not in out]
        return [n for n in out if n not in self.no_daemon]

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "timeout": self.timeout, "keylog": self.keylog,
                "psk_modes": self.psk_modes, "daemons": self.daemon_nodes,
                **{k: v.as_dict() for k, v in self.consumers.items()}}


def parse(block: LMap | None, nodes: dict[str, Any], topo: Topology,
          p: Problems) -> HandshakeConfig:
    loc = getattr(block, "loc", None) or topo.loc
    cfg = HandshakeConfig(loc=loc)
    lab = as_map(block, loc, "handshake", p) if block is not None else None
    if lab is not None:
        check_keys(lab, LAB_KEYS, "handshake", p)
        if "pool" in lab:
            cfg.pool = as_int(lab["pool"], lab.val_loc("pool"), "handshake pool", p, 1,
                              POOL_MAX) or cfg.pool
        if "timeout" in lab:
            cfg.timeout = as_int(lab["timeout"], lab.val_loc("timeout"),
                                 "handshake timeout (seconds)", p, 1, TIMEOUT_MAX) or cfg.timeout
        if "keylog" in lab:
            cfg.keylog = bool(as_bool(lab["keylog"], lab.val_loc("keylog"),
                                      "handshake keylog", p))
        if "psk_modes" in lab:
            cfg.psk_modes = _psk_modes(lab, p) or cfg.psk_modes
        if "nvme" in lab:
            cfg.nvme = _nvme(lab, topo, p)
        if "nfs" in lab:
            cfg.nfs = _nfs(lab, topo, p)
    for name, raw in nodes.items():
        nloc = getattr(raw, "loc", topo.nodes[name].loc)
        m = as_map(raw, nloc, f"handshake of node '{name}'", p)
        if m is None:
            continue
        check_keys(m, NODE_KEYS, f"handshake of node '{name}'", p)
        daemon = True
        if "daemon" in m:
            daemon = bool(as_bool(m["daemon"], m.val_loc("daemon"),
                                  f"handshake daemon of node '{name}'", p))
        if daemon:
            cfg.extra[name] = nloc
        else:
            cfg.no_daemon.add(name)
    for consumer in cfg.consumers.values():
        for node in consumer.nodes:
            if node in cfg.no_daemon and consumer.tls:
                p.add(consumer.loc, f"node '{node}' has `daemon: false`, but its consumer "
                                    "needs TLS, which needs a daemon in its namespace.",
                      "Remove `daemon: false`, or switch TLS off for the consumer.")
    return cfg


def _psk_modes(lab: LMap, p: Problems) -> list[str] | None:
    items = as_list(lab["psk_modes"], lab.val_loc("psk_modes"), "handshake psk_modes", p)
    if items is None:
        return None
    out = []
    for i, item in enumerate(items):
        if item not in PSK_MODES:
            p.add(items.item_loc(i), f"PSK mode {item!r} is not one TLS 1.3 has.",
                  f"Use {' or '.join(PSK_MODES)}. {suggest(str(item), PSK_MODES)}".strip())
        else:
            out.append(str(item))
    if not out and not p:
        p.add(lab.val_loc("psk_modes"), "handshake psk_modes is empty.",
              f"List at least one of {', '.join(PSK_MODES)}.")
    return out


def _node_ref(m: LMap, key: str, where: str, topo: Topology, p: Problems) -> str | None:
    if key not in m:
        p.add(m.loc, f"{where} needs `{key}:` (a node).",
              f"Add `{key}: NODE`; nodes: {', '.join(topo.nodes)}.")
        return None
    name = str(m[key])
    if name not in topo.nodes:
        p.add(m.val_loc(key), f"{where} {key} '{name}' is not a node of the lab.",
              suggest(name, list(topo.nodes)) or f"Nodes: {', '.join(topo.nodes)}.")
        return None
    return name


def meeting(topo: Topology, server: str, client: str, address: str | None = None
            ) -> Path | None:
    """The first segment both nodes are on, with their addresses there (IPv4 first);
    with `address`, the segment where the server has that address."""
    for seg in topo.segments:
        s = next((e for e in seg.endpoints if e.node == server), None)
        c = next((e for e in seg.endpoints if e.node == client), None)
        if s is None or c is None:
            continue
        for fam in ("ipv4", "ipv6"):
            sa, ca = getattr(s, fam), getattr(c, fam)
            if sa is None or ca is None:
                continue
            if address is not None and str(sa.ip) != address:
                continue
            return Path(str(sa.ip), str(ca.ip), s.iface, c.iface)
    return None


def _path(m: LMap, where: str, server: str, client: str, topo: Topology,
          p: Problems) -> Path | None:
    address = None
    if "address" in m:
        try:
            address = str(ipaddress.ip_address(str(m["address"])))
        except ValueError:
            p.add(m.val_loc("address"), f"{where} address {m['address']!r} is not an IP "
                                        "address.", "Give an address of the server node.")
            return None
    path = meeting(topo, server, client, address)
    if path is None:
        what = f"an address {address} shared" if address else "a link or LAN"
        p.add(m.loc, f"{where}: nodes '{server}' and '{client}' have no {what} with an "
                     "address on both ends.",
              "Connect them with a link (`links: [{endpoints: [a:eth1, b:eth1]}]`) or put "
              "them on one LAN; consumers connect directly, without routing.")
    return path


def _nvme(lab: LMap, topo: Topology, p: Problems) -> Nvme | None:
    m = as_map(lab["nvme"], lab.val_loc("nvme"), "handshake nvme", p)
    if m is None:
        return None
    check_keys(m, NVME_KEYS, "handshake nvme", p)
    target = _node_ref(m, "target", "handshake nvme", topo, p)
    host = _node_ref(m, "host", "handshake nvme", topo, p)
    if target is None or host is None:
        return None
    if target == host:
        p.add(m.val_loc("host"), "handshake nvme: target and host are the same node.",
              "Put the host on another node: the point is the fabric between them.")
        return None
    cfg = Nvme(target, host, m.loc)
    if "tls" in m:
        cfg.tls = bool(as_bool(m["tls"], m.val_loc("tls"), "handshake nvme tls", p))
    for key, lo, hi in (("port", 1, 65535), ("io_queues", 1, IO_QUEUES_MAX),
                        ("size_mb", 1, SIZE_MB_MAX)):
        if key in m:
            value = as_int(m[key], m.val_loc(key), f"handshake nvme {key}", p, lo, hi)
            if value is not None:
                setattr(cfg, key, value)
    cfg.path = _path(m, "handshake nvme", target, host, topo, p)
    return cfg


def _nfs(lab: LMap, topo: Topology, p: Problems) -> Nfs | None:
    m = as_map(lab["nfs"], lab.val_loc("nfs"), "handshake nfs", p)
    if m is None:
        return None
    check_keys(m, NFS_KEYS, "handshake nfs", p)
    server = _node_ref(m, "server", "handshake nfs", topo, p)
    client = _node_ref(m, "client", "handshake nfs", topo, p)
    if server is None or client is None:
        return None
    if server == client:
        p.add(m.val_loc("client"), "handshake nfs: server and client are the same node.",
              "Mount from another node: the point is the transport between them.")
        return None
    cfg = Nfs(server, client, m.loc)
    if "xprtsec" in m:
        value = str(m["xprtsec"])
        if value not in XPRTSEC:
            p.add(m.val_loc("xprtsec"), f"handshake nfs xprtsec {value!r} is not one the NFS "
                                        "client knows.",
                  f"Use {', '.join(XPRTSEC)}. {suggest(value, XPRTSEC)}".strip())
        else:
            cfg.xprtsec = value
    if "size_mb" in m:
        cfg.size_mb = as_int(m["size_mb"], m.val_loc("size_mb"), "handshake nfs size_mb", p,
                             1, SIZE_MB_MAX) or cfg.size_mb
    cfg.path = _path(m, "handshake nfs", server, client, topo, p)
    return cfg
