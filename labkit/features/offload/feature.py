"""TLS TX offload to an emulated NIC as a lab feature: the `offload:` block, its NICs
(tlsnic pairs built in place of veth), setup, status and verifications.

Only config (validation) is imported up front: the registry loads this module for every
topology and every CLI start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.errors import UsageError
from labkit.features import Feature
from labkit.features.offload import config

if TYPE_CHECKING:
    from labkit.lab.lab import Lab
    from labkit.verify.verdict import Verdict


def _probe_tlsnic() -> str:
    from labkit.features.offload import module

    return module.probe()


class OffloadFeature(Feature):
    key = "offload"
    title = "TLS TX offload to an emulated NIC (tlsnic): fast path, resync, faults"
    needs = ("ktls", "tlsnic")
    # The module is built for the cached VM kernels by scripts/build_kmod.sh; a kernel's
    # config can only say it offloads TLS at all.
    probes = {"tlsnic": (_probe_tlsnic, ("CONFIG_TLS", "CONFIG_TLS_DEVICE"))}
    # tls autoloads with TCP_ULP "tls", tlsnic with its link kind; both need modprobe in
    # the guest, which labkit's VMs have. Loading tlsnic at boot would keep it loaded
    # for every lab on the kernel: it is loaded by the first NIC instead.
    modules = ("tls",)
    aliases = ("tls",)
    verifications = ("encryption", "throughput")
    verification_help = {
        "encryption": "offload: a transfer carrying a marker, captured at the NIC and on "
                      "the wire: the marker never in clear on the wire, every record "
                      "decrypts with the key log, the receiver saw no bad record "
                      "(--pair NODE:IFACE picks the NIC).",
        "throughput": "offload: one transfer of `traffic.size` through the NIC, intact at "
                      "the receiver, at or above the threshold in MB/s (--pair NODE:IFACE, "
                      "--seconds: its time limit).",
    }
    cli = ("labkit.features.offload.cli",)
    parse = staticmethod(config.parse)

    def setup(self, lab: Lab, cfg: config.OffloadConfig) -> dict[str, Any]:
        from labkit.features.offload import setup

        return setup.setup(lab, cfg)

    def teardown(self, lab: Lab, cfg: config.OffloadConfig) -> None:
        from labkit.features.offload import setup

        setup.teardown(lab, cfg)

    def status(self, lab: Lab, cfg: config.OffloadConfig) -> dict[str, Any]:
        from labkit.features.offload import status

        return status.status(lab, cfg)

    def counters(self, status: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """One row per NIC: its strategy and loss, the fast path (records the NIC
        encrypted in sequence), the slow paths (segments out of sequence, bytes replayed
        to resync, software fallback, drops) and faults."""
        rows: dict[str, dict[str, Any]] = {}
        for label, nic in status.get("nics", {}).items():
            c = nic.get("counters", {})
            loss = next((q["options"]["loss-random"].get("loss", 0) for q in
                         nic.get("impair", {}).get("netem", [])
                         if isinstance(q["options"].get("loss-random"), dict)), 0)
            rows[label] = {
                "strategy": nic.get("knobs", {}).get("strategy", "?"),
                "offload": "on" if nic.get("tls_hw_tx_offload") else "off",
                "loss": f"{float(loss) * 100:g}%" if isinstance(loss, (int, float)) else loss,
                "fast pkts": c.get("tx_tls_encrypted_packets", 0),
                "ooo": c.get("tx_tls_ooo", 0),
                "resync B": c.get("tx_tls_resync_bytes", 0),
                "fallback": c.get("tls_tx_fallback", 0),
                "dropped": c.get("tx_tls_drop_no_sync_data", 0),
                "bad tags": c.get("tx_tls_corrupted_tags", 0),
                "flows": c.get("tx_tls_ctx", 0)}
        return rows

    def verify(self, lab: Lab, cfg: config.OffloadConfig, kind: str,
               **options: Any) -> Verdict:
        from labkit.features.offload import verify

        nic = options.get("pair")
        if nic is not None and nic not in cfg.nics:
            raise UsageError(f"lab '{lab.name}' has no offload NIC '{nic}'.",
                             hint=f"Its NICs: {', '.join(cfg.nics)} (--pair NODE:IFACE).")
        if kind == "encryption":
            return verify.encryption(lab, cfg, nic, options.get("seconds"))
        return verify.throughput(lab, cfg, nic, options.get("threshold"),
                                 options.get("seconds"))


FEATURE = OffloadFeature()
