"""The AEAD suites kTLS takes, with the names OpenSSL, Python's ssl and IANA give them."""

from __future__ import annotations

from dataclasses import dataclass

from labkit.ktls.uapi import (
    TLS_CIPHER_AES_CCM_128,
    TLS_CIPHER_AES_GCM_128,
    TLS_CIPHER_AES_GCM_256,
    TLS_CIPHER_CHACHA20_POLY1305,
)


@dataclass(frozen=True)
class Suite:
    """One AEAD as kTLS knows it, and the TLS 1.3 and 1.2 suites that use it."""

    name: str  # IANA name of the TLS 1.3 suite, as OpenSSL and Python print it
    code: int  # IANA number of the TLS 1.3 suite
    cipher_type: int  # TLS_CIPHER_* of include/uapi/linux/tls.h
    key_len: int
    salt_len: int  # bytes of the 12-byte IV kept as salt (0 for ChaCha20)
    hash: str  # HKDF / PRF hash
    tls12: str = ""  # OpenSSL name of the TLS 1.2 suite (ECDSA certificates), if any
    short: str = ""  # labkit's name in topologies (`cipher: aes-gcm-128`)

    @property
    def info_size(self) -> int:
        """sizeof(struct tls12_crypto_info_*): header 4 + iv + key + salt + rec_seq 8."""
        return 4 + (12 - self.salt_len) + self.key_len + self.salt_len + 8


SUITES = (
    Suite("TLS_AES_128_GCM_SHA256", 0x1301, TLS_CIPHER_AES_GCM_128, 16, 4, "sha256",
          "ECDHE-ECDSA-AES128-GCM-SHA256", "aes-gcm-128"),
    Suite("TLS_AES_256_GCM_SHA384", 0x1302, TLS_CIPHER_AES_GCM_256, 32, 4, "sha384",
          "ECDHE-ECDSA-AES256-GCM-SHA384", "aes-gcm-256"),
    Suite("TLS_CHACHA20_POLY1305_SHA256", 0x1303, TLS_CIPHER_CHACHA20_POLY1305, 32, 0,
          "sha256", "ECDHE-ECDSA-CHACHA20-POLY1305", "chacha20-poly1305"),
    Suite("TLS_AES_128_CCM_SHA256", 0x1304, TLS_CIPHER_AES_CCM_128, 16, 4, "sha256",
          "ECDHE-ECDSA-AES128-CCM", "aes-ccm-128"),
)
BY_NAME = {s.name: s for s in SUITES}
BY_CODE = {s.code: s for s in SUITES}
BY_SHORT = {s.short: s for s in SUITES}


def of_negotiated(name: str) -> Suite:
    """The suite a negotiated cipher (ssl.SSLSocket.cipher()[0], TLS 1.2 or 1.3) uses."""
    for s in SUITES:
        if name in (s.name, s.tls12):
            return s
    raise ValueError(f"suite {name} has no kTLS cipher")
