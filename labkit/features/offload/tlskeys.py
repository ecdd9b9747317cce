"""Keys of a finished TLS handshake, from its NSS key log, in the shapes kTLS and a record
decryptor need. TLS 1.2 (RFC 5246 section 6.3, AES-GCM per RFC 5288) and TLS 1.3 (RFC 8446
section 7.3).

Python's ssl module gives no other way to a session's secrets than its key log, so the
sender, the receivers and `verify encryption` all read one. Key bytes go nowhere but into
setsockopt and the AEAD; `repr` of a Keys hides them.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit.ktls import keylog as nss
from labkit.ktls import keyschedule
from labkit.ktls.ciphers import BY_SHORT, Suite, of_negotiated
from labkit.ktls.records import HS_SERVER_HELLO, hello_random, split
from labkit.ktls.sockopt import crypto_info
from labkit.ktls.uapi import (  # noqa: F401  (re-exported for the sender and receivers)
    SOL_TLS,
    TCP_ULP,
    TLS_GET_RECORD_TYPE,
    TLS_RX,
    TLS_SET_RECORD_TYPE,
    TLS_TX,
)
from labkit.ktls.uapi import TLS_1_2_VERSION as TLS_1_2
from labkit.ktls.uapi import TLS_1_3_VERSION as TLS_1_3

Cipher = Suite  # labkit.ktls's suites; `short` is the topology's name (aes-gcm-128)
# What the emulated NIC's engine implements, and so what this feature negotiates.
CIPHERS = {name: BY_SHORT[name] for name in ("aes-gcm-128", "aes-gcm-256")}


def cipher_of(openssl_name: str) -> Cipher:
    """The cipher a negotiated suite (as ssl.SSLSocket.cipher() names it) uses."""
    suite = of_negotiated(openssl_name)
    if suite not in CIPHERS.values():
        raise ValueError(f"suite {openssl_name} is not AES-GCM: kTLS offload takes AES-GCM "
                         "only")
    return suite


@dataclass(frozen=True)
class Keys:
    """One direction's record protection: key, 4-byte salt (TLS 1.2) or 12-byte IV (1.3)."""

    version: int
    cipher: Cipher
    key: bytes
    iv: bytes

    def __repr__(self) -> str:
        return f"Keys(TLS {self.version:#06x}, {self.cipher.short}, <secret>)"

    def crypto_info(self, rec_seq: int) -> bytes:
        """struct tls12_crypto_info_aes_gcm_{128,256}: the 8 explicit IV bytes are the
        record number in TLS 1.2 (RFC 5288's choice, as OpenSSL makes them), the IV's last
        8 in TLS 1.3."""
        explicit = rec_seq.to_bytes(8, "big") if self.version == TLS_1_2 else self.iv[4:]
        return crypto_info(self.version, self.cipher, self.key, self.iv[:4], explicit,
                           rec_seq)


def read_keylog(text: str) -> dict[str, dict[str, bytes]]:
    """{client_random hex: {label: secret}} from NSS key log lines (labkit.ktls.keylog)."""
    return {rnd.hex(): secrets_ for rnd, secrets_ in nss.parse(text).items()}


prf = keyschedule.prf  # TLS 1.2 PRF (RFC 5246 section 5)


def tls12_keys(master: bytes, client_random: bytes, server_random: bytes, cipher: Cipher,
               client: bool = True) -> Keys:
    """The client's (or server's) write key and salt from the key block (RFC 5246 6.3)."""
    block = keyschedule.tls12_key_block(master, client_random, server_random, cipher.key_len,
                                        4, cipher.hash)
    side = "client" if client else "server"
    return Keys(TLS_1_2, cipher, block[f"{side}_key"], block[f"{side}_iv"])


def tls13_keys(traffic_secret: bytes, cipher: Cipher) -> Keys:
    key, iv = keyschedule.traffic_key_iv(traffic_secret, cipher.key_len, cipher.hash)
    return Keys(TLS_1_3, cipher, key, iv)


def server_random(records: bytes) -> bytes:
    """ServerHello.random, from the plaintext records a server sent first."""
    found = hello_random(split(records), HS_SERVER_HELLO)
    if found is None:
        raise ValueError("no ServerHello in the server's first records")
    return found


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
    name = label or (nss.CLIENT_APP if client else nss.SERVER_APP)
    if name not in secrets_:
        raise ValueError(f"the key log has no {name} line")
    return tls13_keys(secrets_[name], cipher)
