"""Switch TIPC on in a built lab: identities, keys, bearers, then wait for every link.

Order is the kernel's: net id and identity first (NET_SET is refused once a bearer gave
the node an address), keys next (so the very first discovery is already encrypted),
bearers last. `up` then waits until every expected link is up, or fails naming them.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.features.tipc import keys
from labkit.features.tipc.client import TipcNetlink
from labkit.features.tipc.config import Bearer, TipcConfig, TipcNode
from labkit.features.tipc.identity import Secret

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def bearer_ident(b: Bearer) -> str:
    """The part of a bearer name that appears in TIPC link names."""
    return b.dev if b.media == "eth" else b.name


def link_name(a: TipcNode, ba: Bearer, b: TipcNode, bb: Bearer) -> str:
    return f"{a.identity}:{bearer_ident(ba)}-{b.identity}:{bearer_ident(bb)}"


def configure_node(lab: Lab, cfg: TipcConfig, tn: TipcNode, key: bytes | None,
                   node_keys: dict[str, bytes] | None = None) -> None:
    ns = lab.node(tn.name).ns
    try:
        with TipcNetlink(ns) as nl:
            nl.set_net(cfg.net_id, tn.identity)
            if key is not None and cfg.encryption is not None:
                nl.set_key(key, master=cfg.encryption.mode == "master",
                           rekeying=cfg.encryption.rekeying)
            if node_keys:
                # Own identity: our TX key. A peer's identity: our RX key for that peer
                # (the kernel creates the peer node ahead of discovery if need be).
                nl.set_key(node_keys[tn.identity], node_id=tn.identity,
                           rekeying=cfg.encryption.rekeying if cfg.encryption else None)
                for peer in cfg.nodes.values():
                    if peer.identity != tn.identity:
                        nl.set_key(node_keys[peer.identity], node_id=peer.identity)
            for b in tn.bearers:
                if b.media == "eth":
                    nl.enable_bearer_eth(b.dev, b.priority)
                else:
                    remote = (b.remote, b.port) if b.remote else None
                    nl.enable_bearer_udp(b.name, (b.local, b.port), remote, b.priority)
    except LabkitError as exc:
        exc.loc = exc.loc or tn.loc
        exc.message = f"TIPC on node {tn.name}: {exc.message}"
        raise


def prepare(lab: Lab, cfg: TipcConfig) -> dict[str, Any]:
    """The lab's keys, made (or read from key_file) once on the machine running `up`, so
    that nodes in different kernels share them and a capture can be decrypted there."""
    enc = cfg.encryption
    if enc is None:
        return {}
    if enc.mode == "per-node":
        made = keys.per_node(lab.name, [tn.identity for tn in cfg.nodes.values()],
                             enc.key_bits)
        return {"node_keys": {ident: key.hex() for ident, key in made.items()}}
    return {"key": keys.for_lab(lab.name, enc.key_file, enc.key_bits).hex()}


def setup(lab: Lab, cfg: TipcConfig) -> dict[str, Any]:
    """Identities, keys and bearers of this kernel's TIPC nodes."""
    made = lab.prepared.get("tipc") or prepare(lab, cfg)
    key = Secret(bytes.fromhex(made["key"])) if "key" in made else None
    node_keys = ({ident: Secret(bytes.fromhex(k)) for ident, k in made["node_keys"].items()}
                 if "node_keys" in made else None)
    for tn in cfg.nodes.values():
        if lab.here(tn.name):
            configure_node(lab, cfg, tn, key, node_keys)
    return cfg.as_dict()


def _clients(lab: Lab, cfg: TipcConfig, stack: contextlib.ExitStack) -> dict[str, TipcNetlink]:
    """An open TIPC netlink client per node of this kernel, closed with `stack`."""
    return {tn.name: stack.enter_context(TipcNetlink(lab.node(tn.name).ns))
            for tn in cfg.nodes.values() if lab.here(tn.name)}


def missing_links(lab: Lab, cfg: TipcConfig,
                  clients: dict[str, TipcNetlink] | None = None) -> list[str]:
    """Expected links that are not up yet, as TIPC names them, seen from this kernel's end
    of each (in a lab spanning kernels, each kernel judges the links of its own nodes).
    clients: open ones to ask (wait_links keeps them for the whole wait)."""
    with contextlib.ExitStack() as stack:
        asked = clients if clients is not None else _clients(lab, cfg, stack)
        up = {name: {link["name"] for link in nl.links()
                     if link["up"] and not link["broadcast"]}
              for name, nl in asked.items()}
    missing = []
    for a_name, ba_name, b_name, bb_name in cfg.expected_links:
        a, b = cfg.nodes[a_name], cfg.nodes[b_name]
        ba = next(x for x in a.bearers if x.full_name == ba_name)
        bb = next(x for x in b.bearers if x.full_name == bb_name)
        if a_name in up:
            if link_name(a, ba, b, bb) not in up[a_name]:
                missing.append(link_name(a, ba, b, bb))
        elif b_name in up and link_name(b, bb, a, ba) not in up[b_name]:
            missing.append(link_name(b, bb, a, ba))
    return missing


def wait_links(lab: Lab, cfg: TipcConfig) -> None:
    """Until every expected link is up; names the missing ones after tipc.link_timeout.

    Each node's netlink client stays open for the whole wait: a check of the cluster's
    links then cost 0.12 s of a TCG guest instead of 0.15 s, and a cheaper check is asked
    sooner (labkit.base.wait)."""
    with contextlib.ExitStack() as stack:
        clients = _clients(lab, cfg, stack)
        wait_until(
            lambda: not missing_links(lab, cfg, clients), cfg.link_timeout,
            f"all {len(cfg.expected_links)} TIPC links to come up", interval=0.2,
            detail=lambda: "still down: " + ", ".join(missing_links(lab, cfg, clients)),
            hint="Check that both ends share a link or LAN (eth), that udp bearers can "
                 "route to each other, and that all nodes use the same net_id and key; "
                 "raise tipc.link_timeout on slow (emulated) machines.")
