"""labkit.ktls, the one copy of kTLS's numbers and layouts: struct sizes the kernel checks,
the TLS 1.2 key block split, tls_stat parsing, and what this kernel says when it has no
tls module (the kernel tier installs kTLS for real)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from labkit.ktls import ciphers, keyschedule, sockopt, stat, uapi

# sizeof(struct tls12_crypto_info_*) in include/uapi/linux/tls.h
KERNEL_SIZES = {uapi.TLS_CIPHER_AES_GCM_128: 40, uapi.TLS_CIPHER_AES_GCM_256: 56,
                uapi.TLS_CIPHER_AES_CCM_128: 40, uapi.TLS_CIPHER_CHACHA20_POLY1305: 56}


@pytest.mark.parametrize("suite", ciphers.SUITES, ids=lambda s: s.short)
def test_crypto_info_has_the_kernels_size_and_field_order(suite: ciphers.Suite) -> None:
    info = sockopt.tls13_crypto_info(suite, bytes(range(48))[:32 if suite.hash == "sha256"
                                                             else 48], rec_seq=7)
    assert len(info) == suite.info_size == KERNEL_SIZES[suite.cipher_type]
    assert struct.unpack_from("=HH", info) == (uapi.TLS_1_3_VERSION, suite.cipher_type)
    assert info[-8:] == (7).to_bytes(8, "big")


def test_tls13_iv_is_split_into_salt_and_iv() -> None:
    suite = ciphers.BY_SHORT["aes-gcm-128"]
    secret = bytes(32)
    key, iv12 = keyschedule.traffic_key_iv(secret, 16, "sha256")
    info = sockopt.tls13_crypto_info(suite, secret, 0)
    assert info[4:12] == iv12[4:] and info[12:28] == key and info[28:32] == iv12[:4]


def test_wrong_lengths_and_sequence_numbers_are_refused() -> None:
    suite = ciphers.BY_SHORT["aes-gcm-256"]
    with pytest.raises(ValueError, match="wrong length"):
        sockopt.crypto_info(uapi.TLS_1_2_VERSION, suite, bytes(16), bytes(4), bytes(8), 0)
    with pytest.raises(ValueError, match="64 bits"):
        sockopt.crypto_info(uapi.TLS_1_2_VERSION, suite, bytes(32), bytes(4), bytes(8), 1 << 64)
    ok = sockopt.crypto_info(uapi.TLS_1_2_VERSION, suite, bytes(32), bytes(4), bytes(8), 0)
    assert len(ok) == 56  # the control: right lengths pass


def test_tls12_key_block_order() -> None:
    """RFC 5246 6.3: client key, server key, client IV, server IV, one PRF stream."""
    block = keyschedule.prf(b"m" * 48, b"key expansion", b"s" * 32 + b"c" * 32, 40, "sha256")
    keys = keyschedule.tls12_key_block(b"m" * 48, b"c" * 32, b"s" * 32, 16, 4, "sha256")
    assert keys["client_key"] + keys["server_key"] + keys["client_iv"] + \
        keys["server_iv"] == block


def test_negotiated_names_map_to_suites() -> None:
    assert ciphers.of_negotiated("ECDHE-ECDSA-AES256-GCM-SHA384").short == "aes-gcm-256"
    assert ciphers.of_negotiated("TLS_AES_128_GCM_SHA256").cipher_type == 51
    with pytest.raises(ValueError, match="no kTLS cipher"):
        ciphers.of_negotiated("AES128-SHA")


def test_tls_stat_parsing() -> None:
    text = "TlsCurrTxSw                     \t1\nTlsTxDevice  \t3\nnonsense line here\n"
    assert stat.parse(text) == {"TlsCurrTxSw": 1, "TlsTxDevice": 3}


def test_install_says_why_the_kernel_refused() -> None:
    """The refusal names the step and the reason. Which reason is the running kernel's
    config's to say: without CONFIG_TLS, no tls module (ENOENT); with it, an unconnected
    socket is refused at the first step (ENOTCONN)."""
    from labkit.capabilities import from_config, running_config

    found = running_config()
    assert found is not None, "no config file for the running kernel (/proc/config.gz...)"
    has_tls = from_config(found[0], os.uname().release)["ktls"].ok
    with socket.socket() as s:
        with pytest.raises(sockopt.KtlsError) as err:
            sockopt.install(s, tx=None)
    expected = "not connected" if has_tls else "the kernel has no tls module"
    assert err.value.strerror.startswith("TCP_ULP tls: "), err.value.strerror
    assert expected in err.value.strerror, (has_tls, err.value.strerror)
