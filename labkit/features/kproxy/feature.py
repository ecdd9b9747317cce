"""kproxy as a lab feature: the `kproxy:` block, its proxies, status and verifications.

Only config (validation) is imported up front: the registry loads this module for every
topology and every CLI start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.features import Feature
from labkit.features.kproxy import config

if TYPE_CHECKING:
    from labkit.lab.lab import Lab
    from labkit.topology.model import Check
    from labkit.verify.verdict import Verdict


class KproxyFeature(Feature):
    key = "kproxy"
    title = "kproxy pairs: sockets joined in the kernel (sockmap) vs user-space proxies"
    needs = ("bpf_sockmap",)
    # TLS pairs may terminate TLS in the kernel (splice mode); socket(TCP_ULP "tls") would
    # autoload it, but only if modprobe works in the guest: load it at boot.
    modules = ("tls",)
    # sk_skb stream parser/verdict programs (and what they depend on); tbf shaping
    kconfig = ("CONFIG_BPF_STREAM_PARSER", "CONFIG_CGROUPS", "CONFIG_CGROUP_BPF",
               "CONFIG_NET_SCH_TBF")
    verifications = ("throughput",)
    check_kinds = {"kproxy_relay": ()}  # every pair relays intact, by its own mechanism
    cli = ("labkit.features.kproxy.cli",)
    parse = staticmethod(config.parse)

    def counters(self, status: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """One row per proxied pair (direct has no proxy to count): connections, bytes
        each way, policy drops, closes forwarded."""
        rows: dict[str, dict[str, Any]] = {}
        for name, info in status.get("pairs", {}).items():
            live = info.get("proxy_process")
            if info["mode"] == "direct" or live is None:
                continue
            up, down = live.get("upstream", {}), live.get("downstream", {})
            rows[f"{name} {info['mode']}"] = {
                "state": "listening" if live.get("listening") else "NOT RUNNING",
                "accepted": live.get("accepted", 0), "active": live.get("active", 0),
                "to server B": up.get("bytes", 0), "to client B": down.get("bytes", 0),
                "dropped msgs": up.get("dropped_messages", 0) + down.get("dropped_messages", 0),
                "FIN fwd": live.get("half_closes", 0), "RST fwd": live.get("resets", 0)}
        return rows

    def needs_for(self, cfg: config.KproxyConfig) -> tuple[str, ...]:
        """The capabilities this lab's pairs use (bpf_sockmap, ktls): what placement
        would ideally ask for, rather than `needs`, which must hold for any kproxy lab."""
        return cfg.needs()

    def setup(self, lab: Lab, cfg: config.KproxyConfig) -> dict[str, Any]:
        from labkit.features.kproxy import setup

        return setup.setup(lab, cfg)

    def wait_ready(self, lab: Lab, cfg: config.KproxyConfig) -> None:
        from labkit.features.kproxy import setup

        setup.wait_ready(lab, cfg)

    def status(self, lab: Lab, cfg: config.KproxyConfig) -> dict[str, Any]:
        from labkit.features.kproxy import status

        return status.status(lab, cfg)

    def run_check(self, lab: Lab, cfg: config.KproxyConfig, check: Check) -> Verdict:
        from labkit.features.kproxy import relaycheck

        return relaycheck.relay(lab, cfg, check.name)

    def verify(self, lab: Lab, cfg: config.KproxyConfig, kind: str,
               **options: Any) -> Verdict:
        from labkit.features.kproxy import verify

        return verify.throughput(lab, cfg, options.get("pair"), options.get("src"),
                                 options.get("threshold"), options.get("seconds"))


FEATURE = KproxyFeature()
