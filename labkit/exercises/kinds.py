"""The check kinds an exercises file may declare, and the parameters each takes.

One table serves the loader (which keys, of which type, which are required) and `--help`
(what each kind checks). Feature check kinds (tipc_crossover, ...) come from the feature
registry, so a new feature's checks are usable in exercises without an edit here.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit import features
from labkit.ktls.stat import REKEY_COUNTERS


@dataclass(frozen=True)
class Kind:
    params: dict[str, str]  # key -> type (see loader._value)
    required: tuple[str, ...]
    what: str  # one line for --help and docs


KPROXY_FIELDS = ("up_bytes", "down_bytes", "messages", "dropped", "half_closes", "resets",
                 "copied")  # kproxy:PAIR:FIELD (copied: the proxy process's rchar + wchar)
COUNTER_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped",
                  "tx_dropped", "rx_errors", "tx_errors")

KINDS: dict[str, Kind] = {
    "reach": Kind({"from": "node", "to": "node_or_ip", "proto": "choice:tcp|udp",
                   "family": "choice:4|6", "port": "port", "expect": "choice:pass|fail"},
                  ("from", "to"), "a TCP/UDP exchange from a node to a node or address "
                                  "(expect: fail = must NOT get through)"),
    "verify": Kind({"kind": "str", "feature": "str", "options": "map"}, ("kind",),
                   "a `labkit verify KIND` verification (e.g. encryption) passes"),
    "link": Kind({"node": "node", "iface": "str", "state": "choice:up|down", "mtu": "int"},
                 ("node", "iface"), "an interface is up (or down), optionally with an MTU"),
    "address": Kind({"node": "node", "address": "address", "iface": "str",
                     "present": "bool"}, ("node", "address"),
                    "an address is on a node (present: false = must be gone)"),
    "route": Kind({"node": "node", "to": "route_dst", "via": "ip", "dev": "str",
                   "present": "bool"}, ("node", "to"),
                  "a route is in a node's main table (to: CIDR or default; via, dev)"),
    "sysctl": Kind({"node": "node", "key": "sysctl", "value": "str"},
                   ("node", "key", "value"), "a sysctl (key) has a value in a node"),
    "command": Kind({"node": "node", "run": "argv", "exit": "int", "matches": "regex",
                     "not_matches": "regex", "timeout": "int"}, ("node", "run"),
                    "a command in a node exits as expected and its output matches"),
    "file": Kind({"node": "node", "path": "abspath", "contains": "str", "matches": "regex"},
                 ("node", "path"), "a file seen from a node exists and holds some text"),
    "counter": Kind({"node": "node", "source": "counter", "grew_by": "int", "at_most": "int"},
                    ("node", "source"),
                    "a counter grew since the exercise started (source iface:IF:FIELD, "
                    "tls_stat:NAME, snmp:NAME, ethtool:IF:NAME or kproxy:PAIR:FIELD; "
                    "at_most: N = grew by no more than N)"),
    "tipc_bearer": Kind({"node": "node", "bearer": "str",
                         "state": "choice:enabled|disabled"}, ("node", "bearer"),
                        "a TIPC bearer (e.g. eth:eth1, udp:wan) is enabled in a node"),
    "tipc_link": Kind({"node": "node", "peer": "node", "state": "choice:up|down",
                       "stayed_up": "bool"}, ("node", "peer"),
                      "a node has a TIPC link to a peer that is up (stayed_up: true = "
                      "never reset since the exercise started)"),
    "tipc_key": Kind({"nodes": "nodes", "changed": "bool", "seconds": "int"}, (),
                     "every node sends only TIPC v7 frames (a key is installed); with "
                     "changed: true, under another key than when the exercise started"),
    "ktls": Kind({"node": "node", "port": "port"}, ("node",),
                 "a TCP socket in a node uses kernel TLS (`ss -ti` shows tcp-ulp-tls)"),
    "ktls_rekey": Kind({"node": "node", "counter": "choice:" + "|".join(REKEY_COUNTERS),
                        "grew_by": "int", "at_most": "int"}, ("node", "counter"),
                       "a kTLS KeyUpdate counter of /proc/net/tls_stat (TlsTxRekeyOk, "
                       "TlsRxRekeyOk, ...) grew in a node since the exercise started; on a "
                       "kernel without KeyUpdate it could not check, and says why"),
}

# kinds that read a value when the exercise starts
BASELINED = ("counter", "tipc_key", "tipc_link", "ktls_rekey")


def all_kinds() -> dict[str, Kind]:
    """Exercise kinds plus every feature's declared check kinds (from, to: nodes)."""
    out = dict(KINDS)
    for kind, required in features.check_kinds().items():
        out[kind] = Kind({"from": "node", "to": "node"}, tuple(required),
                         f"the {features.owner_of_check(kind)} feature's `{kind}` check")
    return out


def default_name(kind: str, p: dict[str, object]) -> str:
    """A check's name when the file gives none: what it checks, in a few words."""
    g = p.get
    names = {
        "reach": lambda: f"{g('from')} -> {g('to')} {g('proto', 'tcp')}/IPv{g('family', 4)}"
                         + (" blocked" if g("expect") == "fail" else ""),
        "verify": lambda: f"labkit verify {g('kind')}",
        "link": lambda: f"{g('node')}:{g('iface')} {g('state', 'up')}"
                        + (f", mtu {g('mtu')}" if "mtu" in p else ""),
        "address": lambda: f"{g('address')} on {g('node')}"
                           + (f":{g('iface')}" if "iface" in p else "")
                           + ("" if g("present", True) else " removed"),
        "route": lambda: f"route {g('to')}" + (f" via {g('via')}" if "via" in p else "")
                         + (f" dev {g('dev')}" if "dev" in p else "") + f" in {g('node')}"
                         + ("" if g("present", True) else " removed"),
        "sysctl": lambda: f"{g('key')} = {g('value')} in {g('node')}",
        "command": lambda: f"`{g('run') if isinstance(g('run'), str) else ' '.join(g('run'))}`"
                           f" in {g('node')}",  # type: ignore[arg-type]
        "file": lambda: f"{g('path')} in {g('node')}",
        "counter": lambda: f"{g('source')} in {g('node')} grew by "
                           + (f"at most {g('at_most')}" if "at_most" in p and "grew_by" not in p
                              else str(g("grew_by", 1))),
        "tipc_bearer": lambda: f"TIPC bearer {g('bearer')} {g('state', 'enabled')} in "
                               f"{g('node')}",
        "tipc_link": lambda: f"TIPC link {g('node')} - {g('peer')} {g('state', 'up')}"
                             + (", never reset" if g("stayed_up") else ""),
        "tipc_key": lambda: ("a new TIPC key" if g("changed") else "a TIPC key") + " on "
                            + ("every node" if g("nodes", "all") == "all"
                               else ", ".join(g("nodes"))),  # type: ignore[arg-type]
        "ktls": lambda: f"a kTLS socket in {g('node')}"
                        + (f" on port {g('port')}" if "port" in p else ""),
        "ktls_rekey": lambda: f"{g('counter')} in {g('node')} grew by "
                              + (f"at most {g('at_most')}" if "at_most" in p
                                 and "grew_by" not in p else str(g("grew_by", 1))),
    }
    if kind in names:
        return names[kind]()
    pair = f" {g('from')} -> {g('to')}" if "from" in p and "to" in p else ""
    return kind.replace("_", " ") + pair
