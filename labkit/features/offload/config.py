"""The `offload:` block of a topology: emulated TLS-offload NICs, their faults, impairments
on what they send, and the TLS session labkit drives through them. Validated with located
errors before anything touches the kernel.

    offload:
      tls: {version: "1.2", cipher: aes-gcm-128}   # 1.3 is never offloaded (a note says so)
      nics:
        client:eth1:              # a link endpoint: its link becomes a tlsnic pair
          strategy: mlx5          # mlx5 | nfp | drop: what the NIC does out of sequence
          offload: true           # false: `ethtool -K tls-hw-tx-offload off`
          refuse_add: false       # true: tls_dev_add fails, kTLS stays in software
          corrupt_every: 0        # N: a corrupted tag on every Nth record (0: never)
          max_ctx: 0              # N: at most N offloaded flows (0: no limit)
          impair:                 # netem on what this NIC sends
            at: wire              # wire: the peer's ingress (ifb) | nic: this NIC's qdisc
            loss: 1%              # 0-100 %
            delay: 5ms            # wire only (netem orphans skbs: tls_device drops them)
            reorder: 25%          # wire only, needs a delay
            per_segment: true     # gso_max_segs 1 on the NIC: a rate counts TCP segments
      traffic:                    # what `labkit offload send` and `verify` do by default
        nic: client:eth1          # the sending NIC (default: the first one)
        receiver: s_server        # s_server (OpenSSL) | python (ssl) | ktls (kernel RX)
        port: 4433
        size: 4MiB                # per transfer, at most 1 GiB
        threshold: 1              # MB/s `labkit verify throughput` expects

Both ends of a NIC's link are tlsnic devices (a pair, like veth); only the NICs listed
get knobs and impairments. The sender connects to the peer's address on that link, so
the route goes through the NIC (tls_device offloads to the socket's route device only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import Loc
from labkit.topology.fields import (
    Problems,
    as_bool,
    as_int,
    as_map,
    as_str,
    check_keys,
    suggest,
)
from labkit.topology.located import LMap
from labkit.topology.model import Endpoint, Segment, Topology

KIND = "tlsnic"  # the link kind the module registers (TLSNIC_KIND in tlsnic.h)
LAB_KEYS = ["tls", "nics", "traffic"]
TLS_KEYS = ["version", "cipher"]
NIC_KEYS = ["strategy", "offload", "refuse_add", "corrupt_every", "max_ctx", "impair"]
IMPAIR_KEYS = ["at", "loss", "delay", "reorder", "per_segment"]
TRAFFIC_KEYS = ["nic", "receiver", "port", "size", "threshold"]
STRATEGIES = ["mlx5", "nfp", "drop"]  # tlsnic_strategy_names in tlsnic_knobs.c
PLACES = ["wire", "nic"]
RECEIVERS = ["s_server", "python", "ktls"]
VERSIONS = ["1.2", "1.3"]
CIPHERS = ["aes-gcm-128", "aes-gcm-256"]  # what the NIC's engine implements
U32_MAX = (1 << 32) - 1  # corrupt_every and max_ctx are u32 knobs (kstrtou32)
MAX_NICS = 16
MAX_SIZE = 1 << 30  # bytes per transfer: bounded traffic
MAX_DELAY_MS = 10_000
DEFAULT_PORT = 4433
DEFAULT_SIZE = 4 << 20
# What `up` and `validate` say when a lab asks for TLS 1.3 (read in net/tls/tls_device.c,
# tls_set_device_offload(): "if (crypto_info->version != TLS_1_2_VERSION) return
# -EOPNOTSUPP", before the driver is asked; in 6.1 and 6.12 alike).
TLS13_NOTE = ("TLS 1.3 is not offloaded by the kernels labkit runs (6.1, 6.12): "
              "tls_set_device_offload() takes TLS 1.2 only and kTLS silently falls back to "
              "software, so `ss -ti` shows txconf: sw and the NICs encrypt nothing. The lab "
              "runs that way on purpose; use version \"1.2\" to see the offload.")


@dataclass
class Impairment:
    """netem on what a NIC sends; `at` says where the kernel lets it sit."""

    at: str = "wire"
    loss: float = 0.0  # percent
    delay_ms: float = 0.0
    reorder: float = 0.0  # percent, with a delay
    per_segment: bool = True

    @property
    def active(self) -> bool:
        return bool(self.loss or self.delay_ms or self.reorder)

    def netem_args(self) -> list[str]:
        """tc-netem(8) arguments for this impairment ([] when there is nothing to do)."""
        out: list[str] = []
        if self.delay_ms:
            out += ["delay", f"{self.delay_ms:g}ms"]
        if self.reorder:
            out += ["reorder", f"{self.reorder:g}%", "50%"]
        if self.loss:
            out += ["loss", f"{self.loss:g}%"]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "loss": self.loss, "delay_ms": self.delay_ms,
                "reorder": self.reorder, "per_segment": self.per_segment}


@dataclass
class Nic:
    """One emulated NIC: a node's interface on a tlsnic link, with its knobs."""

    node: str
    iface: str
    loc: Loc
    peer: Endpoint | None = None  # the other end of its link
    link: str = ""  # the link's name (labkit.topology: "a:eth1--b:eth1")
    strategy: str = "mlx5"
    offload: bool = True
    refuse_add: bool = False
    corrupt_every: int = 0
    max_ctx: int = 0
    impair: Impairment = field(default_factory=Impairment)

    @property
    def label(self) -> str:
        return f"{self.node}:{self.iface}"

    def knobs(self) -> dict[str, str]:
        """The sysfs knobs under /sys/class/net/IFACE/tlsnic/, as the module reads them."""
        return {"strategy": self.strategy, "refuse_add": str(int(self.refuse_add)),
                "corrupt_every": str(self.corrupt_every), "max_ctx": str(self.max_ctx)}

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "iface": self.iface, "link": self.link,
                "peer": self.peer.label if self.peer else None, "strategy": self.strategy,
                "offload": self.offload, "refuse_add": self.refuse_add,
                "corrupt_every": self.corrupt_every, "max_ctx": self.max_ctx,
                "impair": self.impair.as_dict()}


@dataclass
class Traffic:
    nic: str = ""  # label of the sending NIC
    receiver: str = "s_server"
    port: int = DEFAULT_PORT
    size: int = DEFAULT_SIZE
    threshold: float | None = None  # MB/s


@dataclass
class OffloadConfig:
    loc: Loc
    version: str = "1.2"
    cipher: str = "aes-gcm-128"
    nics: dict[str, Nic] = field(default_factory=dict)  # label -> NIC
    traffic: Traffic = field(default_factory=Traffic)
    notes: list[str] = field(default_factory=list)  # said at validate and up, not errors

    @property
    def link_kinds(self) -> dict[str, str]:
        """Links the lab builder makes as tlsnic pairs instead of veth (labkit.lab.build)."""
        return {nic.link: KIND for nic in self.nics.values()}

    @property
    def nodes(self) -> dict[str, list[str]]:
        """Nodes with a NIC or at the other end of one (placement reads the keys)."""
        out: dict[str, list[str]] = {}
        for nic in self.nics.values():
            out.setdefault(nic.node, []).append(nic.iface)
            if nic.peer is not None:
                out.setdefault(nic.peer.node, [])
        return out

    def nic(self, label: str | None = None) -> Nic:
        """A NIC by NODE:IFACE, or the traffic's default one."""
        return self.nics[label or self.traffic.nic]

    def as_dict(self) -> dict[str, Any]:
        t = self.traffic
        return {"tls": {"version": self.version, "cipher": self.cipher},
                "nics": {k: v.as_dict() for k, v in self.nics.items()},
                "traffic": {"nic": t.nic, "receiver": t.receiver, "port": t.port,
                            "size": t.size, "threshold": t.threshold},
                "notes": list(self.notes)}


# -- readers ------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|K|M|G)?\s*$", re.I)
_UNITS = {"b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30}


def parse_size(text: Any) -> int | None:
    """Bytes from 4MiB, 512 KiB, 1G or a plain number; None when it is none of those."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


def parse_percent(text: Any) -> float | None:
    """A rate from 1%, 0.5 % or a plain number (meaning percent); None otherwise."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$", str(text))
    return float(m.group(1)) if m else None


def parse_ms(text: Any) -> float | None:
    """Milliseconds from 5ms, 1.5 ms, 1s or a plain number (meaning ms); None otherwise."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|us)?\s*$", str(text))
    if not m:
        return None
    return float(m.group(1)) * {"ms": 1.0, "s": 1000.0, "us": 0.001}[m.group(2) or "ms"]


def _choice(m: LMap, key: str, choices: list[str], where: str, p: Problems) -> str | None:
    value = as_str(m[key], m.val_loc(key), f"{where} {key}", p)
    if value is not None and value not in choices:
        p.add(m.val_loc(key), f"{where} has {key} '{value}', which labkit does not know.",
              f"Use one of: {', '.join(choices)}. {suggest(value, choices)}".strip())
        return None
    return value


# -- the block ----------------------------------------------------------------------------

def parse(block: LMap | None, nodes: dict[str, Any], topo: Topology,
          p: Problems) -> OffloadConfig:
    cfg = OffloadConfig(loc=topo.loc)
    addressed = not p  # the loader assigns addresses only to a lab without problems
    for node, raw in nodes.items():
        p.add(getattr(raw, "loc", topo.nodes[node].loc),
              f"`offload:` inside node '{node}' is not supported: NICs are declared once, "
              "at the top level.",
              f"Move it to a top-level `offload: {{nics: {{{node}:IFACE: {{...}}}}}}`.")
    lab = as_map(block, topo.loc, "offload", p) if block is not None else None
    if lab is None:
        return cfg
    cfg.loc = lab.loc
    check_keys(lab, LAB_KEYS, "offload", p, required=("nics",))
    if "tls" in lab:
        _parse_tls(lab, cfg, p)
    nics = as_map(lab.get("nics"), lab.val_loc("nics"), "offload nics", p)
    if nics is not None and "nics" in lab:
        if not nics:
            p.add(lab.val_loc("nics"), "offload has no NICs.",
                  "Name a link endpoint: `nics: {client:eth1: {strategy: mlx5}}`.")
        if len(nics) > MAX_NICS:
            p.add(lab.val_loc("nics"), f"offload has {len(nics)} NICs; labkit runs at most "
                  f"{MAX_NICS}.", "Split the lab.")
        for label, item in nics.items():
            nic = _parse_nic(str(label), item, nics.key_loc(label), nics.val_loc(label),
                             topo, p)
            if nic is not None:
                cfg.nics[nic.label] = nic
        _check_links(cfg, topo, addressed, p)
    _parse_traffic(lab, cfg, p)
    if cfg.version == "1.3":
        cfg.notes.append(TLS13_NOTE)
    return cfg


def _parse_tls(lab: LMap, cfg: OffloadConfig, p: Problems) -> None:
    tls = as_map(lab["tls"], lab.val_loc("tls"), "offload tls", p)
    if tls is None:
        return
    check_keys(tls, TLS_KEYS, "offload tls", p)
    if "version" in tls:
        raw = tls["version"]
        text = f"{raw:.1f}" if isinstance(raw, float) else raw  # YAML reads 1.2 as a float
        if isinstance(text, str) and text in VERSIONS:
            cfg.version = text
        else:
            p.add(tls.val_loc("version"), f"offload tls version {raw!r} is not one labkit "
                  "drives.", 'Use "1.2" (offloaded) or "1.3" (kTLS stays in software).')
    if "cipher" in tls:
        cfg.cipher = _choice(tls, "cipher", CIPHERS, "offload tls", p) or cfg.cipher


def _endpoint(label: str, loc: Loc, topo: Topology, p: Problems
              ) -> tuple[Endpoint, Segment] | None:
    """The endpoint NODE:IFACE names and its point-to-point link, or a located problem."""
    node, sep, iface = label.partition(":")
    if not sep or not node or not iface:
        p.add(loc, f"offload NIC '{label}' is not NODE:INTERFACE.",
              "Name a link endpoint, e.g. client:eth1.")
        return None
    if node not in topo.nodes:
        p.add(loc, f"offload NIC '{label}' names node '{node}', which the lab does not have.",
              f"Its nodes: {', '.join(topo.nodes)}. {suggest(node, list(topo.nodes))}".strip())
        return None
    for link in topo.links:
        for ep in link.endpoints:
            if ep.node == node and ep.iface == iface:
                return ep, link
    for lan in topo.lans.values():
        if any(ep.node == node and ep.iface == iface for ep in lan.endpoints):
            p.add(loc, f"offload NIC '{label}' is on LAN '{lan.name}': an emulated NIC is one "
                       "end of a point-to-point pair, and LAN members are veth ports of a "
                       "bridge.", f"Declare the NIC's link under links:, with the endpoints "
                       f"{label} and PEER:IFACE.")
            return None
    ifaces = list(topo.nodes[node].interfaces)
    p.add(loc, f"offload NIC '{label}': node '{node}' has no interface '{iface}' on a link.",
          (f"Its interfaces: {', '.join(ifaces)}. {suggest(iface, ifaces)}".strip() if ifaces
           else f"Add a link under links:, with the endpoints {label} and PEER:IFACE."))
    return None


def _parse_nic(label: str, item: Any, key_loc: Loc, loc: Loc, topo: Topology,
               p: Problems) -> Nic | None:
    where = f"offload NIC '{label}'"
    m = as_map(item, loc, where, p)
    found = _endpoint(label, key_loc, topo, p)
    if m is None or found is None:
        return None
    ep, link = found
    check_keys(m, NIC_KEYS, where, p)
    peer = next(e for e in link.endpoints if e is not ep)
    nic = Nic(node=ep.node, iface=ep.iface, loc=key_loc, peer=peer, link=link.name)
    if "strategy" in m:
        nic.strategy = _choice(m, "strategy", STRATEGIES, where, p) or nic.strategy
    for key in ("offload", "refuse_add"):
        if key in m:
            value = as_bool(m[key], m.val_loc(key), f"{where} {key}", p)
            if value is not None:
                setattr(nic, key, value)
    for key in ("corrupt_every", "max_ctx"):
        if key in m:
            value = as_int(m[key], m.val_loc(key), f"{where} {key}", p, 0, U32_MAX)
            if value is not None:
                setattr(nic, key, value)
    if "impair" in m:
        nic.impair = _parse_impair(m, where, p) or nic.impair
    return nic


def _parse_impair(m: LMap, where: str, p: Problems) -> Impairment | None:
    where = f"{where} impair"
    block = as_map(m["impair"], m.val_loc("impair"), where, p)
    if block is None:
        return None
    check_keys(block, IMPAIR_KEYS, where, p)
    out = Impairment()
    if "at" in block:
        out.at = _choice(block, "at", PLACES, where, p) or out.at
    for key, reader, hi, example in (("loss", parse_percent, 100.0, "1%"),
                                     ("reorder", parse_percent, 100.0, "25%"),
                                     ("delay", parse_ms, MAX_DELAY_MS, "5ms")):
        if key not in block:
            continue
        value = reader(block[key])
        if value is None or not 0 <= value <= hi:
            unit = "%" if key != "delay" else " ms"
            p.add(block.val_loc(key), f"{where} {key} {block[key]!r} is not a value from 0 "
                  f"to {hi:g}{unit}.", f"Write it as e.g. {example}.")
            continue
        setattr(out, "delay_ms" if key == "delay" else key, value)
    if "per_segment" in block:
        value = as_bool(block["per_segment"], block.val_loc("per_segment"),
                        f"{where} per_segment", p)
        out.per_segment = out.per_segment if value is None else value
    for key, message, hint in impairment_problems(out, where):
        p.add(block.key_loc(key) if key in block else block.loc, message, hint)
    return out


def impairment_problems(imp: Impairment, where: str) -> list[tuple[str, str, str]]:
    """(key, message, hint) for each rule netem or tls_device imposes on an impairment;
    the same rules for a topology and for a change made while the lab runs."""
    out = []
    if imp.reorder and not imp.delay_ms:
        out.append(("reorder", f"{where} reorders without a delay: netem reorders by "
                    "sending some packets at once while the rest wait out the delay.",
                    "Add a delay, e.g. `delay: 5ms`."))
    if imp.at == "nic" and (imp.delay_ms or imp.reorder):
        out.append(("delay" if imp.delay_ms else "reorder",
                    f"{where} puts a delay or reordering on the NIC's own qdisc, where the "
                    "kernel cannot have one: netem then orphans the skbs, and tls_device "
                    "drops every offloaded skb that lost its socket (\"unencrypted skb with "
                    "no associated socket\"), as before a real NIC.",
                    "Use `at: wire` (the peer's ingress, after the NIC) for delay and "
                    "reordering; `at: nic` takes loss only."))
    return out


def _check_links(cfg: OffloadConfig, topo: Topology, addressed: bool, p: Problems) -> None:
    """A tlsnic pair lives in one kernel, and the traffic needs an address to aim at."""
    for nic in cfg.nics.values():
        if nic.peer is None:
            continue
        here, there = topo.nodes[nic.node].kernel, topo.nodes[nic.peer.node].kernel
        if here != there:
            p.add(nic.loc, f"offload NIC '{nic.label}' links nodes on different kernels "
                  f"({here or 'the lab default'} and {there or 'the lab default'}): such a "
                  "link is carried by VXLAN between VMs, and an emulated NIC is a pair of "
                  "devices in one kernel.", "Put both nodes on the same kernel.")
        elif addressed and nic.peer.ipv4 is None and nic.peer.ipv6 is None:
            p.add(nic.loc, f"offload NIC '{nic.label}': its peer {nic.peer.label} has no "
                  "address, so no TLS session can be aimed through the NIC.",
                  "Give the link an IPv4 or IPv6 subnet (or leave addressing on).")


def _parse_traffic(lab: LMap, cfg: OffloadConfig, p: Problems) -> None:
    t = cfg.traffic
    t.nic = next(iter(cfg.nics), "")
    if "traffic" not in lab:
        return
    where = "offload traffic"
    m = as_map(lab["traffic"], lab.val_loc("traffic"), where, p)
    if m is None:
        return
    check_keys(m, TRAFFIC_KEYS, where, p)
    if "nic" in m:
        label = as_str(m["nic"], m.val_loc("nic"), f"{where} nic", p)
        if label is not None and label not in cfg.nics:
            p.add(m.val_loc("nic"), f"{where} sends through '{label}', which is not one of "
                  "the lab's offload NICs.",
                  f"Its NICs: {', '.join(cfg.nics) or 'none'}. "
                  f"{suggest(label, list(cfg.nics))}".strip())
        elif label is not None:
            t.nic = label
    if "receiver" in m:
        t.receiver = _choice(m, "receiver", RECEIVERS, where, p) or t.receiver
    if "port" in m:
        t.port = as_int(m["port"], m.val_loc("port"), f"{where} port", p, 1, 65535) or t.port
    if "size" in m:
        size = parse_size(m["size"])
        if size is None or not 1 <= size <= MAX_SIZE:
            p.add(m.val_loc("size"), f"{where} size {m['size']!r} is not a size from 1 byte "
                  "to 1 GiB.", "Write it as e.g. 4MiB or 512KiB.")
        else:
            t.size = size
    if "threshold" in m:
        raw = m["threshold"]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw <= 0:
            p.add(m.val_loc("threshold"), f"{where} threshold {raw!r} is not a positive "
                  "number of MB/s.", "Write it as e.g. `threshold: 2`.")
        else:
            t.threshold = float(raw)
