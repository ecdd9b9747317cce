"""Key derivations that feed kTLS: the TLS 1.3 key schedule (RFC 8446 section 7) and the
TLS 1.2 PRF and key block (RFC 5246 sections 5 and 6.3).

The TLS engines hand over each direction's application traffic secret; the kernel's
record layer wants the AEAD key, the 12-byte IV split into salt and explicit part, and
the next record sequence number. The whole schedule is here (not only Expand-Label) so
host tests can walk RFC 8448's traces end to end, and so a key log can be turned into
record keys by the same code that programs the kernel. Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

HASH_LEN = {"sha256": 32, "sha384": 48}


def hkdf_extract(salt: bytes, ikm: bytes, hash_name: str = "sha256") -> bytes:
    """HKDF-Extract (RFC 5869): an empty salt means HashLen zero bytes."""
    return hmac.new(salt or bytes(HASH_LEN[hash_name]), ikm, hash_name).digest()


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int,
                      hash_name: str = "sha256") -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1): info = uint16 length, opaque "tls13 " + label
    (1-byte length), opaque context (1-byte length)."""
    full = b"tls13 " + label.encode()
    if len(full) > 255 or len(context) > 255 or length > 255 * HASH_LEN[hash_name]:
        raise ValueError("HKDF-Expand-Label argument out of range")
    info = struct.pack("!HB", length, len(full)) + full + bytes([len(context)]) + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def transcript_hash(messages: bytes, hash_name: str = "sha256") -> bytes:
    return hashlib.new(hash_name, messages).digest()


def derive_secret(secret: bytes, label: str, transcript: bytes | None,
                  hash_name: str = "sha256") -> bytes:
    """Derive-Secret(secret, label, messages), with the transcript hash given directly
    (None = the hash of no messages)."""
    context = transcript if transcript is not None else transcript_hash(b"", hash_name)
    return hkdf_expand_label(secret, label, context, HASH_LEN[hash_name], hash_name)


def early_secret(psk: bytes | None = None, hash_name: str = "sha256") -> bytes:
    """HKDF-Extract(0, PSK): PSK is HashLen zeros when the handshake uses none."""
    return hkdf_extract(b"", psk or bytes(HASH_LEN[hash_name]), hash_name)


def handshake_secret(early: bytes, ecdhe: bytes | None, hash_name: str = "sha256") -> bytes:
    """HKDF-Extract(Derive-Secret(early, "derived", ""), (EC)DHE); zeros for psk_ke."""
    salt = derive_secret(early, "derived", None, hash_name)
    return hkdf_extract(salt, ecdhe or bytes(HASH_LEN[hash_name]), hash_name)


def master_secret(handshake: bytes, hash_name: str = "sha256") -> bytes:
    salt = derive_secret(handshake, "derived", None, hash_name)
    return hkdf_extract(salt, bytes(HASH_LEN[hash_name]), hash_name)


def binder_key(early: bytes, external: bool = True, hash_name: str = "sha256") -> bytes:
    """The key PSK binders are computed with: "ext binder" (external PSK) or "res binder"."""
    return derive_secret(early, "ext binder" if external else "res binder", None, hash_name)


def traffic_key_iv(secret: bytes, key_len: int, hash_name: str = "sha256"
                   ) -> tuple[bytes, bytes]:
    """(write key, 12-byte write IV) of one direction's traffic secret (RFC 8446 7.3)."""
    return (hkdf_expand_label(secret, "key", b"", key_len, hash_name),
            hkdf_expand_label(secret, "iv", b"", 12, hash_name))


def next_secret(secret: bytes, hash_name: str = "sha256") -> bytes:
    """application_traffic_secret_N+1 (KeyUpdate, RFC 8446 7.2)."""
    return hkdf_expand_label(secret, "traffic upd", b"", HASH_LEN[hash_name], hash_name)


def nonce(iv: bytes, seq: int) -> bytes:
    """The per-record nonce: the IV XORed with the 64-bit sequence number (RFC 8446 5.3)."""
    padded = seq.to_bytes(len(iv), "big")
    return bytes(a ^ b for a, b in zip(iv, padded, strict=True))


def prf(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label + seed)."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = hmac.new(secret, a, hash_name).digest()
        out += hmac.new(secret, a + seed, hash_name).digest()
    return out[:length]


def tls12_key_block(master: bytes, client_random: bytes, server_random: bytes,
                    key_len: int, iv_len: int, hash_name: str) -> dict[str, bytes]:
    """The write keys and implicit IVs (salts) of both sides (RFC 5246 section 6.3; AEAD
    suites have no MAC keys)."""
    block = prf(master, b"key expansion", server_random + client_random,
                2 * key_len + 2 * iv_len, hash_name)
    k, i = key_len, iv_len
    return {"client_key": block[:k], "server_key": block[k:2 * k],
            "client_iv": block[2 * k:2 * k + i], "server_iv": block[2 * k + i:2 * k + 2 * i]}
