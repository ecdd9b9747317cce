"""TIPC as a lab feature: the `tipc:` topology block, its setup, status and verifications.

Only config (validation) is imported up front: the registry loads this module for every
topology and every CLI start, so the netlink client (pyroute2) and the scapy layers load
when a method needs them.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from labkit.errors import UsageError
from labkit.features import Feature
from labkit.features.tipc import config
from labkit.features.tipc.uapi import NET_ID_MAX, NET_ID_MIN

if TYPE_CHECKING:
    from labkit.lab.lab import Lab
    from labkit.topology.model import Check
    from labkit.verify.verdict import Verdict


def _probe_tipc() -> str:
    socket.socket(socket.AF_TIPC, socket.SOCK_RDM).close()
    return "AF_TIPC sockets work"


class TipcFeature(Feature):
    key = "tipc"
    title = "TIPC clusters (bearers, crossover, encryption)"
    needs = ("tipc",)
    probes = {"tipc": (_probe_tipc, ("CONFIG_TIPC",))}
    # The module declares no net-pf-30 alias, so socket(AF_TIPC) cannot autoload it.
    modules = ("tipc",)
    kconfig = ("CONFIG_TIPC_MEDIA_UDP", "CONFIG_TIPC_CRYPTO")  # UDP bearers, encryption
    check_kinds = {"tipc_crossover": ("from", "to"), "tipc_encryption": ()}
    verifications = ("crossover", "encryption")
    verification_help = {
        "crossover": "tipc: between namespaces of one kernel user data goes socket to socket: "
                     "marked messages must show on the receiver's lo, never on a bearer, and "
                     "the link counters must not grow with them.",
        "encryption": "tipc: every TIPC frame on the bearers is TIPCv7 and a marker sent "
                      "through the cluster never shows in clear (between kernels: unicast "
                      "user data crossing the bearer).",
    }
    traffic = {"tipc": "labkit.features.tipc.endpoint"}
    cli = ("labkit.features.tipc.cli", "labkit.features.tipc.cli_inject",
           "labkit.features.tipc.wireshark.cli")
    layers = ("labkit.features.tipc.layers",)  # TIPC v2 and v7 on its ethertype and port
    parse = staticmethod(config.parse)

    @property
    def frames(self) -> dict[str, str]:
        from labkit.features.tipc.layers import FRAME_KINDS

        return FRAME_KINDS

    craft_options = {"net_id": (NET_ID_MIN, NET_ID_MAX)}  # a frame from another cluster

    def craft(self, cfg: config.TipcConfig | None, kind: str, src_mac: str,
              **options: Any) -> bytes:
        """A discovery with one defect (or none), from a fresh identity; net_id defaults
        to the lab's, so that only the defect decides what the kernel does."""
        import secrets

        from labkit.features.tipc.layers import crafted

        net_id = options.get("net_id") or (cfg.net_id if cfg is not None else 4711)
        return bytes(crafted(kind, src_mac, int(net_id), f"craft{secrets.token_hex(4)}"))

    def counters(self, status: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """One row per node and link: its state, packets each way, retransmissions."""
        return {f"{node} {lk['name']}": {"state": "up" if lk["up"] else "DOWN",
                                         "tx": lk["tx_packets"], "rx": lk["rx_packets"],
                                         "retrans": lk["retransmissions"]}
                for node, st in status.get("nodes", {}).items() for lk in st.get("links", [])}

    def prepare(self, lab: Lab, cfg: config.TipcConfig) -> dict[str, Any]:
        from labkit.features.tipc import setup

        return setup.prepare(lab, cfg)

    def setup(self, lab: Lab, cfg: config.TipcConfig) -> dict[str, Any]:
        from labkit.features.tipc import setup

        return setup.setup(lab, cfg)

    def wait_ready(self, lab: Lab, cfg: config.TipcConfig) -> None:
        from labkit.features.tipc import setup

        setup.wait_links(lab, cfg)

    def status(self, lab: Lab, cfg: config.TipcConfig) -> dict[str, Any]:
        from labkit.features.tipc import status

        return status.status(lab, cfg)

    def run_check(self, lab: Lab, cfg: config.TipcConfig, check: Check) -> Verdict:
        # Through the lab: in a lab spanning kernels it runs where the nodes are.
        if check.kind == "tipc_crossover":
            v = lab.verify("crossover", "tipc", src=check.params["from"],
                           dst=check.params["to"])
        else:
            v = lab.verify("encryption", "tipc")
        v.name = check.name
        return v

    def verify(self, lab: Lab, cfg: config.TipcConfig, kind: str, **options: Any) -> Verdict:
        from labkit.features.tipc import verify

        if kind == "crossover":
            src, dst = options.get("src"), options.get("dst")
            if not src or not dst:
                raise UsageError("verify crossover needs the sending and receiving TIPC "
                                 "nodes.", hint="Give --from NODE --to NODE.")
            return verify.crossover(lab, cfg, src, dst, options.get("count") or 20)
        return verify.encryption(lab, cfg, options.get("seconds") or 3.0)


FEATURE = TipcFeature()
