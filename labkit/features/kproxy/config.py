"""The `kproxy:` block of a topology: proxy pairs, validated with located errors.

    kproxy:
      pairs:
        - name: km                  # letters, digits, - and _ (at most 16)
          mode: sockmap             # sockmap | splice | boomerang | direct
          proxy: proxy              # the node the proxy process runs in (not for direct)
          listen: 9000              # PORT (any address) or ADDRESS:PORT of the proxy node
          upstream: server:9100     # NODE:PORT or ADDRESS:PORT: where each client is sent
          client: client            # where measurements start by default (optional)
          policy:                   # optional L7 rule (not on TLS pairs)
            framing: u32            # u16 | u32: big-endian length prefix of each message
            drop_prefix: DROP       # messages whose payload starts with it are dropped
            max_message: 65536      # longest payload; a longer one resets the connection
          tls: true                 # TLS on both legs: splice = kTLS, boomerang = OpenSSL
          threshold: 50             # MB/s `labkit verify throughput --pair km` expects

In sockmap mode the policy runs in the kernel (BPF stream parser + verdict); in splice and
boomerang modes the proxy applies the same rule in user space; direct has no proxy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import Loc
from labkit.features.kproxy.programs import HEADER_SIZES, MAX_PREFIX, Rule
from labkit.topology.fields import (
    Problems,
    as_bool,
    as_int,
    as_list,
    as_map,
    as_name,
    as_str,
    check_keys,
    suggest,
)
from labkit.topology.located import LMap
from labkit.topology.model import Topology

MODES = ["sockmap", "splice", "boomerang", "direct"]
PROXY_MODES = ("sockmap", "splice", "boomerang")
LAB_KEYS = ["pairs"]
PAIR_KEYS = ["name", "mode", "proxy", "listen", "upstream", "client", "policy", "tls",
             "threshold"]
POLICY_KEYS = ["framing", "drop_prefix", "max_message"]
PAIR_NAME_MAX = 16  # it names the proxy's control socket and log file
# The kernel's stream parser aborts a message longer than the socket's receive buffer
# (strparser: len > sk_rcvbuf -> EMSGSIZE); tcp_rmem's default buffer is 128 KiB, so
# labkit keeps messages well under it, in every mode alike.
MAX_MESSAGE = 65536
MAX_PAIRS = 64
SOCKMAP_TLS = ("the kernel refuses kTLS sockets in a sockmap (EINVAL either way round: "
               "\"tls: reject the combination of TLS and sockmap\", in both Debian kernels)")


@dataclass
class Address:
    """An address and port, with the node it belongs to when the lab has it."""

    address: str
    port: int
    node: str | None = None

    def pair(self) -> list[Any]:
        return [self.address, self.port]

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass
class Pair:
    name: str
    mode: str
    loc: Loc
    upstream: Address
    proxy: str | None = None  # node
    bind: Address | None = None  # what the proxy binds ("0.0.0.0" = any address)
    entry: Address | None = None  # where clients connect: the proxy, or the upstream
    client: str | None = None
    rule: Rule | None = None
    tls: bool = False
    threshold: float | None = None  # MB/s

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "proxy": self.proxy,
            "listen": str(self.bind) if self.bind else None,
            "entry": str(self.entry) if self.entry else None,
            "upstream": str(self.upstream), "client": self.client, "tls": self.tls,
            "threshold": self.threshold,
            "policy": None if self.rule is None else {
                "framing": self.rule.framing, "max_message": self.rule.max_message,
                "drop_prefix": self.rule.prefix.decode(errors="replace")},
        }


@dataclass
class KproxyConfig:
    pairs: dict[str, Pair] = field(default_factory=dict)

    @property
    def nodes(self) -> dict[str, list[str]]:
        """Nodes that take part, and the pairs they serve (placement reads the keys)."""
        out: dict[str, list[str]] = {}
        for pair in self.pairs.values():
            for node in (pair.proxy, pair.client, pair.upstream.node):
                if node:
                    out.setdefault(node, []).append(pair.name)
        return out

    def needs(self) -> tuple[str, ...]:
        """Kernel capabilities these pairs use: sockmap pairs need sockmap, TLS pairs in
        splice mode need kTLS; boomerang and direct need neither."""
        out = []
        if any(p.mode == "sockmap" for p in self.pairs.values()):
            out.append("bpf_sockmap")
        if any(p.tls and p.mode == "splice" for p in self.pairs.values()):
            out.append("ktls")
        return tuple(out)

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": {n: p.as_dict() for n, p in self.pairs.items()}}


def parse(block: LMap | None, nodes: dict[str, Any], topo: Topology,
          p: Problems) -> KproxyConfig:
    cfg = KproxyConfig()
    for node, raw in nodes.items():
        p.add(getattr(raw, "loc", topo.nodes[node].loc),
              f"`kproxy:` inside node '{node}' is not supported: pairs are declared once, "
              "at the top level.",
              "Move it to a top-level `kproxy: {pairs: [...]}` and name the node with "
              "`proxy:`.")
    lab = as_map(block, topo.loc, "kproxy", p) if block is not None else None
    if lab is None:
        return cfg
    check_keys(lab, LAB_KEYS, "kproxy", p, required=("pairs",))
    items = as_list(lab.get("pairs"), lab.val_loc("pairs"), "kproxy pairs", p)
    if items is None:
        return cfg
    if "pairs" in lab and not items:
        p.add(lab.val_loc("pairs"), "kproxy has no pairs.",
              "Add one: `- {name: p1, mode: splice, proxy: proxy, listen: 9000, "
              "upstream: server:9100}`.")
    if len(items) > MAX_PAIRS:
        p.add(items.item_loc(MAX_PAIRS), f"kproxy has {len(items)} pairs; labkit runs at "
              f"most {MAX_PAIRS}.", "Split the lab.")
    bound: dict[tuple[str, str, int], str] = {}
    for i, item in enumerate(items):
        pair = _parse_pair(item, items.item_loc(i), i, topo, p)
        if pair is None:
            continue
        if pair.name in cfg.pairs:
            p.add(pair.loc, f"kproxy pair name '{pair.name}' is used twice.",
                  "Give each pair its own name.")
            continue
        if pair.proxy and pair.bind:
            key = (pair.proxy, pair.bind.address, pair.bind.port)
            clash = bound.get(key) or next(
                (n for (node, addr, port), n in bound.items()
                 if node == pair.proxy and port == pair.bind.port
                 and "0.0.0.0" in (addr, pair.bind.address)), None)
            if clash:
                p.add(pair.loc, f"kproxy pairs '{clash}' and '{pair.name}' both listen on "
                                f"port {pair.bind.port} of node '{pair.proxy}'.",
                      "Give each pair on a node its own port.")
            bound[key] = pair.name
        cfg.pairs[pair.name] = pair
    return cfg


def _parse_pair(item: Any, loc: Loc, index: int, topo: Topology, p: Problems) -> Pair | None:
    where = f"kproxy pair {index + 1}"
    m = as_map(item, loc, where, p)
    if m is None:
        return None
    check_keys(m, PAIR_KEYS, where, p, required=("name", "mode", "upstream"))
    name = as_name(m["name"], m.val_loc("name"), f"{where} name", p, PAIR_NAME_MAX) \
        if "name" in m else None
    if name is None:
        return None
    where = f"kproxy pair '{name}'"
    mode = str(m.get("mode", ""))
    if "mode" in m and mode not in MODES:
        p.add(m.val_loc("mode"), f"{where} has mode '{mode}', which labkit does not know.",
              f"Use one of: {', '.join(MODES)}. {suggest(mode, MODES)}".strip())
        return None
    if "mode" not in m:
        return None
    pair = Pair(name=name, mode=mode, loc=loc, upstream=Address("", 0))
    if mode == "direct":
        for key in ("proxy", "listen", "policy"):
            if key in m:
                p.add(m.key_loc(key), f"{where} is direct (no proxy), so it has no {key}.",
                      "Remove the key, or pick a proxy mode: sockmap, splice or boomerang.")
    else:
        for key in ("proxy", "listen"):
            if key not in m:
                p.add(m.loc, f"{where} ({mode}) needs `{key}:`.",
                      "Name the proxy node (`proxy: NODE`) and its port (`listen: 9000`).")
    if "proxy" in m and mode != "direct":
        pair.proxy = _node(m["proxy"], m.val_loc("proxy"), f"{where} proxy", topo, p)
    if "client" in m:
        pair.client = _node(m["client"], m.val_loc("client"), f"{where} client", topo, p)
    if "tls" in m:
        pair.tls = bool(as_bool(m["tls"], m.val_loc("tls"), f"{where} tls", p))
    if pair.tls and mode == "sockmap":
        p.add(m.val_loc("tls"), f"{where} cannot be a TLS pair in sockmap mode: "
                                f"{SOCKMAP_TLS}.",
              "Use mode splice (kTLS on both legs joined with splice()) for the in-kernel "
              "SSL proxy, or boomerang (OpenSSL in the proxy process).")
    if "policy" in m and mode != "direct":
        if pair.tls:
            p.add(m.key_loc("policy"), f"{where}: a policy on a TLS pair is not supported.",
                  "Remove `policy:` or `tls:`.")
        else:
            pair.rule = _parse_policy(m["policy"], m.val_loc("policy"), where, p)
    if "threshold" in m:
        value = m["threshold"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            p.add(m.val_loc("threshold"), f"{where} threshold must be a positive number of "
                                          f"MB/s, not {value!r}.", "E.g. `threshold: 50`.")
        else:
            pair.threshold = float(value)
    if p.items and not _addressed(topo):
        return pair  # addresses were not assigned (earlier errors): nothing to resolve
    if "upstream" in m:
        near = pair.proxy if mode != "direct" else pair.client
        up = _endpoint(m["upstream"], m.val_loc("upstream"), f"{where} upstream", topo, p,
                       near=near)
        if up is not None:
            pair.upstream = up
    if mode == "direct":
        pair.entry = pair.upstream
    elif "listen" in m and pair.proxy:
        pair.bind, pair.entry = _listen(m["listen"], m.val_loc("listen"), where, pair,
                                        topo, p)
    return pair


def _addressed(topo: Topology) -> bool:
    return any(node.addresses() for node in topo.nodes.values())


def _node(value: Any, loc: Loc, where: str, topo: Topology, p: Problems) -> str | None:
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    if text not in topo.nodes:
        p.add(loc, f"{where} '{text}' is not a node of the lab.",
              suggest(text, list(topo.nodes)) or f"Its nodes: {', '.join(topo.nodes)}.")
        return None
    return text


def _port(text: str, loc: Loc, where: str, p: Problems) -> int | None:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        p.add(loc, f"{where} port '{text}' is not a port number.", "Use 1 to 65535.")
        return None
    return int(text)


def _split(text: str) -> tuple[str, str]:
    """'HOST:PORT', '[v6]:PORT' or 'PORT' -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.lstrip(":")
    if text.count(":") > 1:  # a bare IPv6 address cannot carry a port
        return text, ""
    host, sep, port = text.rpartition(":")
    return (host, port) if sep else ("", text)


def _endpoint(value: Any, loc: Loc, where: str, topo: Topology, p: Problems,
              near: str | None) -> Address | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    host, port_text = _split(text)
    if not host or not port_text:
        p.add(loc, f"{where} '{text}' needs a node or address and a port.",
              "Write NODE:PORT (e.g. server:9100) or ADDRESS:PORT.")
        return None
    port = _port(port_text, loc, where, p)
    if port is None:
        return None
    if host in topo.nodes:
        address = address_towards(topo, host, near)
        if address is None:
            p.add(loc, f"{where}: node '{host}' has no address to connect to.",
                  "Give it an interface on a link or LAN.")
            return None
        return Address(address, port, host)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        p.add(loc, f"{where} '{host}' is neither a node of the lab nor an IP address.",
              suggest(host, list(topo.nodes)) or f"Its nodes: {', '.join(topo.nodes)}.")
        return None
    return Address(str(ip), port, owner(topo, str(ip)))


def _listen(value: Any, loc: Loc, where: str, pair: Pair, topo: Topology,
            p: Problems) -> tuple[Address | None, Address | None]:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else \
        as_str(value, loc, f"{where} listen", p)
    if text is None or pair.proxy is None:
        return None, None
    host, port_text = _split(text)
    port = _port(port_text, loc, f"{where} listen", p)
    if port is None:
        return None, None
    if not host:
        entry = address_towards(topo, pair.proxy, pair.client)
        if entry is None:
            p.add(loc, f"{where}: proxy node '{pair.proxy}' has no address clients can "
                       "reach.", "Give it an interface on a link or LAN.")
            return None, None
        any_addr = "::" if ":" in entry else "0.0.0.0"
        return Address(any_addr, port, pair.proxy), Address(entry, port, pair.proxy)
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        p.add(loc, f"{where} listen address '{host}' is not an IP address.",
              "Write PORT, or ADDRESS:PORT with an address of the proxy node.")
        return None, None
    if owner(topo, ip) != pair.proxy:
        p.add(loc, f"{where} listen address {ip} is not an address of node "
                   f"'{pair.proxy}'.",
              "Use one of: " + ", ".join(str(a) for a in topo.nodes[pair.proxy].addresses())
              + ", or just the port.")
        return None, None
    return Address(ip, port, pair.proxy), Address(ip, port, pair.proxy)


def address_towards(topo: Topology, node: str, peer: str | None) -> str | None:
    """The node's address a peer reaches most directly: on a segment they share, else the
    node's first IPv4 address, else its first address."""
    if peer is not None and peer != node:
        for seg in topo.segments:
            mine = [ep for ep in seg.endpoints if ep.node == node]
            if mine and any(ep.node == peer for ep in seg.endpoints):
                ifa = mine[0].ipv4 or mine[0].ipv6
                if ifa is not None:
                    return str(ifa.ip)
    addrs = topo.nodes[node].addresses(4) or topo.nodes[node].addresses()
    return str(addrs[0]) if addrs else None


def owner(topo: Topology, ip: str) -> str | None:
    for node in topo.nodes.values():
        if ip in (str(a) for a in node.addresses()):
            return node.name
    return None


def _parse_policy(raw: Any, loc: Loc, where: str, p: Problems) -> Rule | None:
    m = as_map(raw, loc, f"{where} policy", p)
    if m is None:
        return None
    check_keys(m, POLICY_KEYS, f"{where} policy", p, required=("drop_prefix",))
    framing = str(m.get("framing", "u32"))
    if framing not in HEADER_SIZES:
        p.add(m.val_loc("framing"), f"{where} policy framing '{framing}' is not known.",
              "Use u16 or u32 (a big-endian length prefix of that size).")
        return None
    limit = min(MAX_MESSAGE, (1 << (8 * HEADER_SIZES[framing])) - 1)
    max_message = limit
    if "max_message" in m:
        max_message = as_int(m["max_message"], m.val_loc("max_message"),
                             f"{where} policy max_message", p, 1, limit) or limit
    if "drop_prefix" not in m:
        return None
    text = as_str(m["drop_prefix"], m.val_loc("drop_prefix"), f"{where} policy drop_prefix",
                  p)
    if text is None:
        return None
    prefix = text.encode()
    if not 1 <= len(prefix) <= MAX_PREFIX:
        p.add(m.val_loc("drop_prefix"), f"{where} policy drop_prefix is {len(prefix)} bytes; "
                                        f"the verdict compares 1 to {MAX_PREFIX}.",
              "Use a shorter prefix such as DROP.")
        return None
    return Rule(framing, prefix, max_message)
