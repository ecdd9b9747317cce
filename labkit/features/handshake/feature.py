"""The TLS handshake upcall as a lab feature: the `handshake:` topology block, its daemons
and consumers, status, checks and `verify encryption`.

Only config is imported up front: the registry loads this module for every topology and
CLI start; the rest loads when a method needs it (the guest daemon preloads it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.features import Feature
from labkit.features.handshake import config

if TYPE_CHECKING:
    from labkit.lab.lab import Lab
    from labkit.topology.model import Check
    from labkit.verify.verdict import Verdict


def _probe_handshake() -> str:
    from labkit.features.handshake.genl import HandshakeNetlink, NoFamily

    try:
        with HandshakeNetlink() as nl:
            return f"handshake genl family (id {nl.family}, groups {', '.join(nl.groups)})"
    except NoFamily:
        raise OSError("no 'handshake' generic netlink family (CONFIG_NET_HANDSHAKE)") from None


class HandshakeFeature(Feature):
    key = "handshake"
    title = "TLS handshake upcall: daemons, kTLS, NVMe/TCP and NFS over TLS"
    needs = ("handshake", "ktls")
    probes = {"handshake": (_probe_handshake, ("CONFIG_NET_HANDSHAKE",))}
    modules = ("tls",)
    # keys for PSKs; NVMe/TCP and NFS over TLS, both ends
    kconfig = ("CONFIG_KEYS", "CONFIG_NVME_TCP", "CONFIG_NVME_TCP_TLS", "CONFIG_NVME_TARGET",
               "CONFIG_NVME_TARGET_TCP", "CONFIG_NVME_TARGET_TCP_TLS", "CONFIG_NFS_FS",
               "CONFIG_NFS_V4", "CONFIG_NFSD", "CONFIG_NFSD_V4")
    check_kinds = {"tls_content": ()}
    aliases = ("tls",)
    verifications = ("encryption",)
    verification_help = {
        "encryption": "Capture on the consumer's link while it reconnects and writes a marker "
                      "(NVMe block, NFS file): pass when every TCP stream on its port is TLS "
                      "records from the first byte, the marker is never in clear, and (with "
                      "the lab's key log) a decrypted record holds it. --pair nvme|nfs picks "
                      "one consumer."}
    cli = ("labkit.features.handshake.cli", "labkit.features.handshake.cli_tls")
    parse = staticmethod(config.parse)

    def prepare(self, lab: Lab, cfg: config.HandshakeConfig) -> dict[str, Any]:
        from labkit.features.handshake import setup

        return setup.prepare(lab, cfg)

    def setup(self, lab: Lab, cfg: config.HandshakeConfig) -> dict[str, Any]:
        from labkit.features.handshake import setup

        return setup.setup(lab, cfg)

    def wait_ready(self, lab: Lab, cfg: config.HandshakeConfig) -> None:
        """setup already waited for daemons, live controllers and mounts."""

    def teardown(self, lab: Lab, cfg: config.HandshakeConfig) -> None:
        from labkit.features.handshake import setup

        setup.teardown(lab, cfg)

    def status(self, lab: Lab, cfg: config.HandshakeConfig) -> dict[str, Any]:
        from labkit.features.handshake import status

        return status.status(lab, cfg)

    def run_check(self, lab: Lab, cfg: config.HandshakeConfig, check: Check) -> Verdict:
        from labkit.features.handshake import content

        return content.content(lab, cfg, check.name)

    def verify(self, lab: Lab, cfg: config.HandshakeConfig, kind: str,
               **options: Any) -> Verdict:
        from labkit.features.handshake import verify

        return verify.encryption(lab, cfg, options.get("pair"), options.get("seconds") or 5.0)


FEATURE = HandshakeFeature()
