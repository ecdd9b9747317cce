"""The `tipc:` blocks of a topology: cluster settings at lab level, bearers per node.

    tipc:                       # lab level
      net_id: 4711
      encryption: {mode: master, key_file: keys/tipc.key, rekeying: 60}   # or cluster, or
                                # per-node: each node its own TX key, its peers' as RX keys
      link_timeout: 30          # seconds `up` waits for every expected link
    nodes:
      a:
        tipc:
          identity: a           # default: the node name
          bearers:
            - eth1                               # eth media on interface eth1
            - {media: udp, name: wan, local: eth2, remote: c:eth1, priority: 10}

A node takes part in the cluster when it has a `tipc:` block. The expected links are
derived from the network: two eth bearers on the same link or LAN, and two udp bearers
that name each other (or share a LAN with the default multicast remote).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import Loc
from labkit.features.tipc import keys
from labkit.features.tipc.identity import KEY_BITS, NAME_CHARS_TEXT, either, is_name
from labkit.features.tipc.uapi import (
    MAX_BEARERS,
    NET_ID_MAX,
    NET_ID_MIN,
    NODE_ID_LEN,
    REKEYING_MAX,
    TIPC_MAX_IF_NAME,
    TIPC_MAX_LINK_PRI,
    UDP_PORT,
)
from labkit.topology.fields import (
    Problems,
    as_int,
    as_list,
    as_map,
    as_str,
    check_keys,
    suggest,
)
from labkit.topology.located import LMap
from labkit.topology.model import Topology

LAB_KEYS = ["net_id", "encryption", "link_timeout"]
NODE_KEYS = ["identity", "bearers"]
BEARER_KEYS = ["media", "dev", "name", "local", "remote", "port", "priority"]
ENC_KEYS = ["mode", "key_file", "key_bits", "rekeying"]
MODES = ["master", "cluster", "per-node"]
LINK_TIMEOUT_MAX = 600  # s: labkit's own bound on how long `up` waits for links


@dataclass
class Bearer:
    media: str  # eth | udp
    loc: Loc
    dev: str = ""  # eth: interface; udp: interface holding the local address
    name: str = ""  # udp bearer name
    local: str = ""  # udp local IP
    remote: str | None = None  # udp remote IP; None = multicast default
    remote_node: str | None = None
    port: int = UDP_PORT
    priority: int | None = None

    @property
    def full_name(self) -> str:
        return f"eth:{self.dev}" if self.media == "eth" else f"udp:{self.name}"


@dataclass
class TipcNode:
    name: str
    identity: str
    loc: Loc
    bearers: list[Bearer] = field(default_factory=list)


@dataclass
class Encryption:
    mode: str
    loc: Loc
    key_file: str | None = None
    key_bits: int = 128
    rekeying: int | None = None  # minutes; None leaves the kernel default


@dataclass
class TipcConfig:
    net_id: int = 4711
    nodes: dict[str, TipcNode] = field(default_factory=dict)
    encryption: Encryption | None = None
    link_timeout: int = 30
    expected_links: list[tuple[str, str, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "net_id": self.net_id,
            "encryption": None if self.encryption is None else {
                "mode": self.encryption.mode, "key_bits": self.encryption.key_bits,
                "rekeying": self.encryption.rekeying},
            "nodes": {n.name: {"identity": n.identity,
                               "bearers": [b.full_name for b in n.bearers]}
                      for n in self.nodes.values()},
            "expected_links": [list(x) for x in self.expected_links],
        }


def parse(block: LMap | None, nodes: dict[str, Any], topo: Topology, p: Problems) -> TipcConfig:
    cfg = TipcConfig()
    lab = as_map(block, topo.loc, "tipc", p) if block is not None else None
    if lab is not None:
        check_keys(lab, LAB_KEYS, "tipc", p)
        if "net_id" in lab:
            cfg.net_id = as_int(lab["net_id"], lab.val_loc("net_id"), "tipc net_id", p,
                                NET_ID_MIN, NET_ID_MAX) or cfg.net_id
        if "link_timeout" in lab:
            cfg.link_timeout = as_int(lab["link_timeout"], lab.val_loc("link_timeout"),
                                      "tipc link_timeout", p, 1, LINK_TIMEOUT_MAX) \
                or cfg.link_timeout
        if "encryption" in lab and lab["encryption"] not in (None, False):
            cfg.encryption = _parse_encryption(lab, topo, p)
    for node_name, raw in nodes.items():
        loc = getattr(raw, "loc", topo.nodes[node_name].loc)
        m = as_map(raw, loc, f"tipc of node '{node_name}'", p)
        if m is None:
            continue
        check_keys(m, NODE_KEYS, f"tipc of node '{node_name}'", p)
        identity = str(m.get("identity", node_name))
        if not is_name(identity):
            p.add(m.val_loc("identity") if "identity" in m else loc,
                  f"TIPC identity '{identity}' of node '{node_name}' is not valid.",
                  f"Use up to {NODE_ID_LEN} characters from {NAME_CHARS_TEXT}; set "
                  "`identity:` if the node name is longer.")
        tn = TipcNode(name=node_name, identity=identity, loc=loc)
        items = as_list(m.get("bearers"), m.val_loc("bearers"),
                        f"tipc bearers of node '{node_name}'", p)
        for i, item in enumerate(items or []):
            bearer = _parse_bearer(item, items.item_loc(i), node_name, topo, p)
            if bearer is not None:
                tn.bearers.append(bearer)
        names = [b.full_name for b in tn.bearers]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            p.add(loc, f"TIPC node '{node_name}' has bearer {dup} twice.",
                  "Each interface carries one eth bearer; give udp bearers distinct names.")
        if not tn.bearers and "bearers" not in m:
            p.add(loc, f"TIPC node '{node_name}' has no bearers.",
                  "Add `bearers: [eth1]` (or a udp bearer) so it can reach the cluster.")
        if items is not None and len(items) > MAX_BEARERS:
            p.add(items.item_loc(MAX_BEARERS),
                  f"TIPC node '{node_name}' has {len(items)} bearers; the kernel allows at "
                  f"most {MAX_BEARERS}.", "Remove some bearers.")
        cfg.nodes[node_name] = tn
    seen: dict[str, str] = {}
    for tn in cfg.nodes.values():
        if tn.identity in seen:
            p.add(tn.loc, f"TIPC identity '{tn.identity}' of node '{tn.name}' is also used "
                          f"by node '{seen[tn.identity]}'.", "Give each node its own identity.")
        seen[tn.identity] = tn.name
    if not p:
        cfg.expected_links = expected_links(cfg, topo)
    return cfg


def _parse_encryption(lab: LMap, topo: Topology, p: Problems) -> Encryption | None:
    raw = lab["encryption"]
    loc = lab.val_loc("encryption")
    if raw is True:
        return Encryption(mode="master", loc=loc)
    m = as_map(raw, loc, "tipc encryption", p)
    if m is None:
        return None
    check_keys(m, ENC_KEYS, "tipc encryption", p)
    enc = Encryption(mode=str(m.get("mode", "master")), loc=loc)
    if enc.mode not in MODES:
        p.add(m.val_loc("mode"), f"tipc encryption mode '{enc.mode}' is not supported.",
              f"Use one of: {', '.join(MODES)}. {suggest(enc.mode, MODES)}".strip())
    bits_ok = True
    if "key_bits" in m:
        bits = m["key_bits"]
        if isinstance(bits, bool) or bits not in KEY_BITS:
            bits_ok = False
            p.add(m.val_loc("key_bits"), f"tipc encryption key_bits must be "
                  f"{either(KEY_BITS)}, not {bits!r}.")
        else:
            enc.key_bits = bits
    if "key_file" in m:
        path = as_str(m["key_file"], m.val_loc("key_file"), "tipc encryption key_file", p)
        if path:
            base = os.path.dirname(os.path.abspath(topo.path))
            enc.key_file = os.path.normpath(os.path.join(base, path))
        if enc.key_file and bits_ok and enc.mode != "per-node":
            for text, fix in keys.problems(enc.key_file, enc.key_bits):
                p.add(m.val_loc("key_file"), text[0].upper() + text[1:], fix)
    if enc.key_file and enc.mode == "per-node":
        p.add(m.val_loc("key_file"), "key_file works with mode master or cluster; per-node "
                                     "keys are generated, one per node.",
              "Remove key_file, or use mode: master.")
    if "rekeying" in m:
        value = m["rekeying"]
        if value is False or value == "off":
            enc.rekeying = 0
        else:
            enc.rekeying = as_int(value, m.val_loc("rekeying"), "tipc rekeying (minutes)", p,
                                  0, REKEYING_MAX)
    return enc


def _parse_bearer(item: Any, loc: Loc, node: str, topo: Topology, p: Problems) -> Bearer | None:
    spec = topo.nodes[node]
    if isinstance(item, str):
        item_map: dict[str, Any] = {"media": "eth", "dev": item}
        m = None
    else:
        m = as_map(item, loc, f"a tipc bearer of node '{node}'", p)
        if m is None:
            return None
        check_keys(m, BEARER_KEYS, f"a tipc bearer of node '{node}'", p)
        item_map = dict(m)
    media = str(item_map.get("media", "eth"))
    vloc = (lambda key: m.val_loc(key)) if m is not None else (lambda key: loc)
    if media not in ("eth", "udp"):
        p.add(vloc("media"), f"tipc bearer media '{media}' of node '{node}' is unknown.",
              "Use eth (an interface) or udp (an IP address).")
        return None
    bearer = Bearer(media=media, loc=loc)
    if "priority" in item_map:
        bearer.priority = as_int(item_map["priority"], vloc("priority"), "bearer priority",
                                 p, 0, TIPC_MAX_LINK_PRI)
    if media == "eth":
        dev = str(item_map.get("dev", ""))
        if dev not in spec.interfaces:
            p.add(vloc("dev"), f"tipc bearer eth:{dev} of node '{node}' names an interface "
                               "the node does not have.",
                  suggest(dev, list(spec.interfaces)) or
                  f"Its interfaces: {', '.join(spec.interfaces) or '(none)'}.")
            return None
        bearer.dev = dev
        return bearer
    bearer.name = str(item_map.get("name", f"udp{len(spec.interfaces)}-{int(loc.line)}"))
    if len(bearer.name) >= TIPC_MAX_IF_NAME or \
            not bearer.name.replace("-", "").replace("_", "").isalnum():
        p.add(vloc("name"), f"udp bearer name '{bearer.name}' of node '{node}' is not valid.",
              f"Use up to {TIPC_MAX_IF_NAME - 1} letters, digits, '-' or '_'.")
        return None
    if "port" in item_map:
        bearer.port = as_int(item_map["port"], vloc("port"), "udp bearer port", p,
                             1, 65535) or UDP_PORT
    local = str(item_map.get("local", ""))
    if local in spec.interfaces:
        ep = spec.interfaces[local]
        bearer.dev = local
        addr = ep.ipv4 or ep.ipv6
        if addr is None:
            p.add(vloc("local"), f"interface {node}:{local} has no address for a udp bearer.")
            return None
        bearer.local = str(addr.ip)
    else:
        try:
            ip = ipaddress.ip_address(local)
        except ValueError:
            p.add(vloc("local"), f"udp bearer local '{local}' of node '{node}' is neither an "
                                 "interface of the node nor an IP address.",
                  f"Use one of: {', '.join(spec.interfaces) or '(no interfaces)'}.")
            return None
        owner = next((i for i, ep in spec.interfaces.items()
                      if ip in (getattr(ep.ipv4, "ip", None), getattr(ep.ipv6, "ip", None))),
                     None)
        if owner is None:
            p.add(vloc("local"), f"udp bearer local {ip} is not an address of node '{node}'.")
            return None
        bearer.dev, bearer.local = owner, str(ip)
    if "remote" in item_map:
        remote = str(item_map["remote"])
        if ":" in remote and remote.split(":", 1)[0] in topo.nodes:
            rnode, riface = remote.split(":", 1)
            rep = topo.nodes[rnode].interfaces.get(riface)
            if rep is None:
                p.add(vloc("remote"), f"udp bearer remote {remote}: node '{rnode}' has no "
                                      f"interface '{riface}'.")
                return None
            raddr = rep.ipv4 if ipaddress.ip_address(bearer.local).version == 4 else rep.ipv6
            if raddr is None:
                p.add(vloc("remote"), f"udp bearer remote {remote} has no address of the "
                                      "local address's family.")
                return None
            bearer.remote, bearer.remote_node = str(raddr.ip), rnode
        else:
            try:
                bearer.remote = str(ipaddress.ip_address(remote))
            except ValueError:
                p.add(vloc("remote"), f"udp bearer remote '{remote}' is neither NODE:IFACE "
                                      "nor an IP address.")
                return None
            bearer.remote_node = _owner(topo, bearer.remote)
    return bearer


def _owner(topo: Topology, ip: str) -> str | None:
    for node in topo.nodes.values():
        if ip in [str(a) for a in node.addresses()]:
            return node.name
    return None


def expected_links(cfg: TipcConfig, topo: Topology) -> list[tuple[str, str, str, str]]:
    """(node, bearer, peer node, peer bearer) pairs that must have a link, each once."""
    seg_of = {(ep.node, ep.iface): ep.segment for seg in topo.segments for ep in seg.endpoints}
    found: set[tuple[str, str, str, str]] = set()
    nodes = list(cfg.nodes.values())
    for a in nodes:
        for b in nodes:
            if a.name >= b.name:
                continue
            for ba in a.bearers:
                for bb in b.bearers:
                    if ba.media != bb.media:
                        continue
                    same_seg = seg_of.get((a.name, ba.dev)) == seg_of.get((b.name, bb.dev))
                    if ba.media == "eth" and same_seg:
                        found.add((a.name, ba.full_name, b.name, bb.full_name))
                    elif ba.media == "udp" and ba.port == bb.port:
                        unicast = ba.remote_node == b.name or bb.remote_node == a.name
                        multicast = ba.remote is None and bb.remote is None and same_seg
                        if unicast or multicast:
                            found.add((a.name, ba.full_name, b.name, bb.full_name))
    return sorted(found)
