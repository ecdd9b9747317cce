"""The TLS 1.3 key schedule labkit programs kTLS with, against RFC 8448's traces, and the
crypto_info structs against include/uapi/linux/tls.h's layouts.

Vectors: RFC 8448 section 3 (Simple 1-RTT Handshake, x25519 + TLS_AES_128_GCM_SHA256)
and section 4 (Resumed 0-RTT Handshake: the PSK branch of the schedule).
"""

from __future__ import annotations

import struct

import pytest

from labkit.features.handshake import ktls
from labkit.ktls import ciphers, sockopt
from labkit.ktls import keyschedule as ks

H = bytes.fromhex
# RFC 8448 section 3
ECDHE = H("8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d")
HELLO_HASH = H("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8")
FINISHED_HASH = H("9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13")
EARLY = H("33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a")
HANDSHAKE = H("1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac")
C_HS = H("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21")
S_HS = H("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
MASTER = H("18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919")
C_AP = H("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
S_AP = H("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
S_HS_KEY, S_HS_IV = H("3fce516009c21727d0f2e4e86ee403bc"), H("5d313eb2671276ee13000b30")
C_HS_KEY, C_HS_IV = H("dbfaa693d1762c5b666af5d950258d01"), H("5bd3c71b836e0b76bb73265f")
S_AP_KEY, S_AP_IV = H("9f02283b6c9c07efc26bb9f2ac92e356"), H("cf782b88dd83549aadf1e984")
C_AP_KEY, C_AP_IV = H("17422dda596ed5d9acd890e3c63f5051"), H("5b78923dee08579033e523d9")
# RFC 8448 section 4: the PSK (from the section 3 resumption secret) and its early secret
RES_MASTER = H("7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c")
PSK = H("4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3")
PSK_EARLY = H("9b2188e9b2fc6d64d71dc329900e20bb41915000f678aa839cbb797cb7d8332c")
RES_BINDER_KEY = H("69fe131a3bbad5d63c64eebcc30e395b9d8107726a13d074e389dbc8a4e47256")


def test_simple_handshake_schedule_end_to_end() -> None:
    early = ks.early_secret()
    assert early == EARLY
    hs = ks.handshake_secret(early, ECDHE)
    assert hs == HANDSHAKE
    assert ks.derive_secret(hs, "c hs traffic", HELLO_HASH) == C_HS
    assert ks.derive_secret(hs, "s hs traffic", HELLO_HASH) == S_HS
    master = ks.master_secret(hs)
    assert master == MASTER
    assert ks.derive_secret(master, "c ap traffic", FINISHED_HASH) == C_AP
    assert ks.derive_secret(master, "s ap traffic", FINISHED_HASH) == S_AP


@pytest.mark.parametrize(("secret", "key", "iv"), [(S_HS, S_HS_KEY, S_HS_IV),
                                                   (C_HS, C_HS_KEY, C_HS_IV),
                                                   (S_AP, S_AP_KEY, S_AP_IV),
                                                   (C_AP, C_AP_KEY, C_AP_IV)])
def test_traffic_keys(secret: bytes, key: bytes, iv: bytes) -> None:
    assert ks.traffic_key_iv(secret, 16) == (key, iv)


def test_psk_branch_of_the_schedule() -> None:
    assert ks.hkdf_expand_label(RES_MASTER, "resumption", b"\0\0", 32) == PSK
    early = ks.early_secret(PSK)
    assert early == PSK_EARLY
    assert ks.binder_key(early, external=False) == RES_BINDER_KEY
    assert ks.binder_key(early, external=True) != RES_BINDER_KEY  # "ext binder" differs


def test_nonce_is_iv_xor_sequence() -> None:
    assert ks.nonce(S_AP_IV, 0) == S_AP_IV
    assert ks.nonce(S_AP_IV, 1) == S_AP_IV[:-1] + bytes([S_AP_IV[-1] ^ 1])


def test_expand_label_refuses_impossible_lengths() -> None:
    with pytest.raises(ValueError):
        ks.hkdf_expand_label(S_AP, "key", b"", 255 * 32 + 1)


# -- struct tls12_crypto_info_* (include/uapi/linux/tls.h) --------------------------------


def test_crypto_info_aes_gcm_128_layout() -> None:
    suite = ciphers.BY_NAME["TLS_AES_128_GCM_SHA256"]
    info = sockopt.tls13_crypto_info(suite, S_AP, rec_seq=2)
    # version, cipher_type, iv[8], key[16], salt[4], rec_seq[8]
    version, cipher, iv, key, salt, seq = struct.unpack("=HH8s16s4s8s", info)
    assert (version, cipher) == (0x0304, 51)
    assert key == S_AP_KEY
    assert salt + iv == S_AP_IV  # the 12-byte IV: salt first, then the explicit part
    assert seq == (2).to_bytes(8, "big")
    assert len(info) == suite.info_size == 40


@pytest.mark.parametrize(("name", "cipher", "size"), [
    ("TLS_AES_256_GCM_SHA384", 52, 56), ("TLS_CHACHA20_POLY1305_SHA256", 54, 56),
    ("TLS_AES_128_CCM_SHA256", 53, 40)])
def test_crypto_info_sizes_and_cipher_numbers(name: str, cipher: int, size: int) -> None:
    suite = ciphers.BY_NAME[name]
    info = sockopt.tls13_crypto_info(suite, bytes(ks.HASH_LEN[suite.hash]), 0)
    assert struct.unpack_from("=HH", info) == (0x0304, cipher)
    assert len(info) == size == suite.info_size


def test_chacha_takes_the_whole_iv() -> None:
    suite = ciphers.BY_NAME["TLS_CHACHA20_POLY1305_SHA256"]
    info = sockopt.tls13_crypto_info(suite, C_AP, 0)
    key, iv12 = ks.traffic_key_iv(C_AP, 32, "sha256")
    assert info[4:16] == iv12 and info[16:48] == key and info[48:] == bytes(8)


def test_session_repr_hides_secrets() -> None:
    s = ktls.Session(ciphers.BY_NAME["TLS_AES_128_GCM_SHA256"], C_AP, S_AP, 0, 0)
    assert C_AP.hex() not in repr(s) and "tx_seq=0" in repr(s)
