"""Switching the offload feature on in a built lab, next to the kernel, and off again.

By the time setup runs, the lab builder has made each NIC's link as a tlsnic pair (the
config's `link_kinds`; the link kind autoloads the module). Setup sets each NIC's knobs
and offload flag, places its impairment, and makes the receivers' certificate. Teardown
deletes this lab's tlsnic devices, then unloads the module only if no tlsnic device is
left anywhere in this kernel (module.py), and removes the certificate.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from labkit.base.rtnl import opened
from labkit.errors import LabkitError
from labkit.features.offload import certs, impair, module
from labkit.features.offload import nic as nicmod
from labkit.features.offload.config import OffloadConfig

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def _mine(lab: Lab, node: str) -> bool:
    """Is the node in the kernel this code runs next to? (here_nodes is None when the
    whole lab is in this kernel.)"""
    return lab.here_nodes is None or node in lab.here_nodes


def setup(lab: Lab, cfg: OffloadConfig) -> dict[str, Any]:
    if not module.loaded():
        module.ensure_loaded()  # the build made no pair here (nodes in another kernel)
    made = []
    for label, nic in cfg.nics.items():
        if not _mine(lab, nic.node):
            continue
        assert nic.peer is not None
        ns, peer_ns = lab.node(nic.node).ns, lab.node(nic.peer.node).ns
        try:
            nicmod.apply(ns, nic)
            impair.apply(ns, peer_ns, nic, nic.impair)
        except LabkitError as exc:
            exc.loc = exc.loc or nic.loc
            raise
        made.append(label)
    certs.make(lab.name)
    return {"nics": made, "notes": list(cfg.notes)}


def teardown(lab: Lab, cfg: OffloadConfig) -> None:
    for nic in cfg.nics.values():
        if not _mine(lab, nic.node):
            continue
        # Either end takes the pair along; a namespace already gone took it already.
        with contextlib.suppress(Exception), opened(lab.node(nic.node).ns) as ipr:
            for index in ipr.link_lookup(ifname=nic.iface):
                ipr.link("del", index=index)
    certs.remove(lab.name)
    module.unload_if_unused()
