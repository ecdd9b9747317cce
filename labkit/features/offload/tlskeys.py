"""Keys of a finished TLS handshake, from its NSS key log, in the shapes kTLS and a record
decryptor need. TLS 1.2 (RFC 5246 section 6.3, AES-GCM per RFC 5288) and TLS 1.3 (RFC 8446
section 7.3).

Python's ssl module gives no other way to a session's secrets than its key log, so the
sender, the receivers and `verify encryption` all read one. Key bytes go nowhere but into
setsockopt and the AEAD; `repr` of a Keys hides them.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

TLS_1_2, TLS_1_3 = 0x0303, 0x0304
SOL_TLS, TLS_TX, TLS_RX, TCP_ULP = 282, 1, 2, 31
TLS_SET_RECORD_TYPE, TLS_GET_RECORD_TYPE = 1, 2


@dataclass(frozen=True)
class Cipher:
    name: str  # labkit's name (topology `cipher:`)
    ktls_type: int  # TLS_CIPHER_* of include/uapi/linux/tls.h
    key_len: int
    hash: str  # the PRF / HKDF hash
    tls12: str  # OpenSSL name of the TLS 1.2 suite (ECDSA certificates)
    tls13: str  # IANA name of the TLS 1.3 suite


CIPHERS = {
    "aes-gcm-128": Cipher("aes-gcm-128", 51, 16, "sha256",
                          "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256"),
    "aes-gcm-256": Cipher("aes-gcm-256", 52, 32, "sha384",
                          "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_AES_256_GCM_SHA384"),
}


def cipher_of(openssl_name: str) -> Cipher:
    """The cipher a negotiated suite (as ssl.SSLSocket.cipher() names it) uses."""
    for c in CIPHERS.values():
        if openssl_name in (c.tls12, c.tls13):
            return c
    raise ValueError(f"suite {openssl_name} is not AES-GCM: kTLS offload takes AES-GCM only")


@dataclass(frozen=True)
class Keys:
    """One direction's record protection: key, 4-byte salt (TLS 1.2) or 12-byte IV (1.3)."""

    version: int
    cipher: Cipher
    key: bytes
    iv: bytes

    def __repr__(self) -> str:
        return f"Keys(TLS {self.version:#06x}, {self.cipher.name}, <secret>)"

    def crypto_info(self, rec_seq: int) -> bytes:
        """struct tls12_crypto_info_aes_gcm_{128,256}: version, cipher_type, iv (the 8
        explicit bytes; for 1.3 the IV's last 8), key, salt (4), rec_seq (big endian)."""
        if self.version == TLS_1_2:
            salt, explicit = self.iv[:4], rec_seq.to_bytes(8, "big")
        else:
            salt, explicit = self.iv[:4], self.iv[4:]
        return (struct.pack("=HH", self.version, self.cipher.ktls_type) + explicit + self.key
                + salt + rec_seq.to_bytes(8, "big"))


def read_keylog(text: str) -> dict[str, dict[str, bytes]]:
    """{client_random hex: {label: secret}} from NSS key log lines."""
    out: dict[str, dict[str, bytes]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            label, crandom, secret = parts
            out.setdefault(crandom.lower(), {})[label] = bytes.fromhex(secret)
    return out


def prf(secret: bytes, label: bytes, seed: bytes, length: int, digest: str) -> bytes:
    """TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label + seed)."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return out[:length]


def tls12_keys(master: bytes, client_random: bytes, server_random: bytes, cipher: Cipher,
               client: bool = True) -> Keys:
    """The client's (or server's) write key and salt from the key block (RFC 5246 6.3)."""
    n = cipher.key_len
    block = prf(master, b"key expansion", server_random + client_random, 2 * n + 8,
                cipher.hash)
    if client:
        return Keys(TLS_1_2, cipher, block[:n], block[2 * n:2 * n + 4])
    return Keys(TLS_1_2, cipher, block[n:2 * n], block[2 * n + 4:2 * n + 8])


def hkdf_expand_label(secret: bytes, label: str, length: int, digest: str) -> bytes:
    """HKDF-Expand-Label(secret, label, "", length) of RFC 8446 section 7.1."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + b"\0"
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), digest).digest()
        out += block
        counter += 1
    return out[:length]


def tls13_keys(traffic_secret: bytes, cipher: Cipher) -> Keys:
    key = hkdf_expand_label(traffic_secret, "key", cipher.key_len, cipher.hash)
    iv = hkdf_expand_label(traffic_secret, "iv", 12, cipher.hash)
    return Keys(TLS_1_3, cipher, key, iv)


def server_random(records: bytes) -> bytes:
    """ServerHello.random, from the plaintext records a server sent first."""
    off = 0
    while off + 5 <= len(records):
        rtype, length = records[off], int.from_bytes(records[off + 3:off + 5], "big")
        body = records[off + 5:off + 5 + length]
        if rtype == 22 and body[:1] == b"\x02":
            return body[6:38]  # msg type, 3-byte length, version, then the random
        off += 5 + length
    raise ValueError("no ServerHello in the server's first records")


def session_keys(keylog: str, version: int, cipher: Cipher, server_rand: bytes | None,
                 client: bool = True, label: str = "") -> Keys:
    """The application-data keys of the one session in a key log, for one direction.

    TLS 1.2 needs ServerHello.random (the key block's seed); TLS 1.3's log has the traffic
    secrets themselves (label overrides which one, e.g. the handshake secret)."""
    sessions = read_keylog(keylog)
    if len(sessions) != 1:
        raise ValueError(f"the key log holds {len(sessions)} sessions, not one")
    crandom, secrets_ = next(iter(sessions.items()))
    if version == TLS_1_2:
        if server_rand is None or "CLIENT_RANDOM" not in secrets_:
            raise ValueError("a TLS 1.2 key log line (CLIENT_RANDOM) and ServerHello.random "
                             "are needed")
        return tls12_keys(secrets_["CLIENT_RANDOM"], bytes.fromhex(crandom), server_rand,
                          cipher, client)
    name = label or ("CLIENT_TRAFFIC_SECRET_0" if client else "SERVER_TRAFFIC_SECRET_0")
    if name not in secrets_:
        raise ValueError(f"the key log has no {name} line")
    return tls13_keys(secrets_[name], cipher)
