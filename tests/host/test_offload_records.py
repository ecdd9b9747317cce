"""What `verify encryption --feature offload` and the sender rest on, checked against
OpenSSL (Python's ssl) without a VM:

- the key schedule from a key log (TLS 1.2 PRF key block, TLS 1.3 traffic secrets) opens
  records that OpenSSL sealed in a real handshake, and kTLS's crypto_info has the uapi
  layout;
- a record whose tag or body changed does not open, and is counted;
- TCP streams are rebuilt from frames (IPv4, IPv6, retransmitted and reordered
  segments, GSO-sized ones), and a gap is reported, not papered over;
- the verdict passes only with every record opened and the marker found inside, and
  fails on the marker in clear, on a record that does not authenticate, on a receiver
  that rejected a record;
- payloads are reproducible, and the hash of any prefix is what the receiver would get.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import pytest

from labkit.features.offload import records, tlskeys, verify
from labkit.features.offload.payload import CHUNK, MARK_EVERY, Payload
from labkit.features.offload.tlskeys import TLS_1_2, TLS_1_3
from labkit.packets import tcpstream


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("cert")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "1", "-subj", "/CN=t"], check=True, capture_output=True)
    return str(crt), str(key)


def openssl_session(cert: tuple[str, str], version: int, cipher: str, data: bytes,
                    tmp: Path) -> tuple[bytes, bytes, str, str]:
    """(client->server bytes, server->client bytes, client key log, negotiated suite) of
    a real handshake and `data` sent by the client, between two OpenSSL endpoints over
    memory BIOs. (TLS 1.3 suites are the server's choice: Python cannot restrict them.)"""
    c = tlskeys.CIPHERS[cipher]
    log = tmp / "keys.log"
    log.touch(mode=0o600)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    v = ssl.TLSVersion.TLSv1_2 if version == TLS_1_2 else ssl.TLSVersion.TLSv1_3
    cctx.minimum_version = cctx.maximum_version = v
    if version == TLS_1_2:
        cctx.set_ciphers(c.tls12)
    cctx.keylog_filename = str(log)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    sctx.minimum_version = sctx.maximum_version = v
    sctx.num_tickets = 0
    bios = [ssl.MemoryBIO() for _ in range(4)]
    cli = cctx.wrap_bio(bios[0], bios[1])
    srv = sctx.wrap_bio(bios[2], bios[3], server_side=True)
    up, down = b"", b""
    for _ in range(10):
        for end in (cli, srv):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        chunk = bios[1].read()
        up += chunk
        bios[2].write(chunk)
        chunk = bios[3].read()
        down += chunk
        bios[0].write(chunk)
    cli.write(data)
    up += bios[1].read()
    return up, down, log.read_text(), cli.cipher()[0]


@pytest.mark.parametrize("version, cipher", [(TLS_1_2, "aes-gcm-128"), (TLS_1_2, "aes-gcm-256"),
                                             (TLS_1_3, "aes-gcm-256")])
def test_keys_from_the_key_log_open_what_openssl_sealed(cert: tuple[str, str], tmp_path: Path,
                                                        version: int, cipher: str) -> None:
    marker = b"LKOFF-marker"
    data = Payload(100_000, 7, marker)
    plain = b"".join(data.chunks())
    up, down, keylog, suite = openssl_session(cert, version, cipher, plain, tmp_path)
    c = tlskeys.cipher_of(suite)
    assert c.short == cipher
    rand = tlskeys.server_random(down) if version == TLS_1_2 else None
    keys = tlskeys.session_keys(keylog, version, c, rand)
    hs = (tlskeys.session_keys(keylog, version, c, None, label="CLIENT_HANDSHAKE_TRAFFIC_SECRET")
          if version == TLS_1_3 else None)
    walked = records.walk(up)
    assert walked.bad_at is None and walked.tail == 0
    opened = records.open_stream(walked.records, keys, marker, hs)
    assert opened.failed == [] and opened.opened == opened.protected
    assert opened.app_bytes == len(plain)
    assert opened.marker_records == opened.app_records >= len(plain) // 16384
    # the server's write keys are different ones: nothing opens with them
    if version == TLS_1_2:
        wrong = tlskeys.session_keys(keylog, version, c, rand, client=False)
        assert records.open_stream(walked.records, wrong).opened == 0


def test_a_changed_record_does_not_open(cert: tuple[str, str], tmp_path: Path) -> None:
    up, down, keylog, _ = openssl_session(cert, TLS_1_2, "aes-gcm-128", os.urandom(50_000),
                                       tmp_path)
    keys = tlskeys.session_keys(keylog, TLS_1_2, tlskeys.CIPHERS["aes-gcm-128"],
                                tlskeys.server_random(down))
    walked = records.walk(up)
    good = records.open_stream(walked.records, keys)
    last = walked.records[-1]
    bad_tag = bytearray(up)
    bad_tag[last.offset + 5 + len(last.body) - 1] ^= 1  # the tag's last bit (a NIC fault)
    bad = records.open_stream(records.walk(bytes(bad_tag)).records, keys)
    assert bad.opened == good.opened - 1 and bad.failed == [len(walked.records) - 1]


def test_crypto_info_has_the_uapi_layout() -> None:
    k128 = tlskeys.Keys(TLS_1_2, tlskeys.CIPHERS["aes-gcm-128"], b"k" * 16, b"salt")
    info = k128.crypto_info(1)
    assert len(info) == 40  # sizeof(struct tls12_crypto_info_aes_gcm_128)
    assert struct.unpack_from("=HH", info) == (0x0303, 51)
    assert info[4:12] == (1).to_bytes(8, "big") and info[12:28] == b"k" * 16
    assert info[28:32] == b"salt" and info[32:40] == (1).to_bytes(8, "big")
    k256 = tlskeys.Keys(TLS_1_3, tlskeys.CIPHERS["aes-gcm-256"], b"k" * 32, bytes(range(12)))
    info = k256.crypto_info(0)
    assert len(info) == 56 and struct.unpack_from("=HH", info) == (0x0304, 52)
    assert info[4:12] == bytes(range(4, 12)) and info[44:48] == bytes(range(4))
    assert "k" not in repr(k256) and "secret" in repr(k256)


def test_the_prf_matches_a_known_vector() -> None:
    """TLS 1.2 PRF with SHA-256, the IETF TLS WG test vector (Joseph Birr-Pixton)."""
    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    out = tlskeys.prf(secret, b"test label", seed, 100, "sha256")
    assert out.hex() == (
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9"
        "a46b4e14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082"
        "d122ee42c5a72e5a5110fff70187347b66")


# -- streams from frames --------------------------------------------------------------

def frame(src: str, dst: str, sport: int, dport: int, seq: int, payload: bytes = b"",
          syn: bool = False) -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    tcp = TCP(sport=sport, dport=dport, seq=seq, flags="S" if syn else "PA")
    return bytes(Ether() / ip / tcp / payload)


@pytest.mark.parametrize("src, dst", [("198.19.0.1", "198.19.0.2"),
                                      ("fd00:1ab::1", "fd00:1ab::2")])
def test_a_stream_is_rebuilt_from_out_of_order_and_repeated_segments(src: str,
                                                                    dst: str) -> None:
    data = os.urandom(200_000)
    isn = 0xFFFFFF00  # wraps around 2^32 inside the stream
    cuts = [0, 1000, 1448, 40_000, 100_000, 150_000, 200_000]  # GSO-sized pieces too
    segs = [(a, data[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    rng = random.Random(3)
    shuffled = segs[:] + segs[2:4]  # retransmissions
    rng.shuffle(shuffled)
    frames = [frame(src, dst, 40000, 4433, isn, syn=True)]
    frames += [frame(src, dst, 40000, 4433, (isn + 1 + off) & 0xFFFFFFFF, p)
               for off, p in shuffled]
    frames += [frame(dst, src, 4433, 40000, 5, b"reply")]
    to_server, to_client = verify.last_connection(frames, 4433)
    got, gap = verify.from_syn(to_server)
    assert got == data and not gap
    assert verify.from_syn(to_client) == (b"", True)  # its SYN-ACK was not in the frames
    # a segment that never came is a gap: the stream stops before it
    holed = [f for f in frames if (seg := tcpstream.parse(f)) and seg.seq
             != (isn + 1 + 40_000) & 0xFFFFFFFF]
    got, gap = verify.from_syn(verify.last_connection(holed, 4433)[0])
    assert gap and got == data[:40_000]


# -- the verdict ------------------------------------------------------------------------

def evidence(**over: object) -> dict:
    ev = {"from_start": True, "stream_gap": False, "records": 70, "not_tls_at": None,
          "marker_frames_on_wire": 0, "marker_frames_at_nic": 40, "capture_drops": 0,
          "decrypted": {"protected_records": 66, "decrypted_records": 66,
                        "failed_records": 0, "marker_records": 64, "application_records": 64},
          "transfer": {"txconf": "1.2 aes-gcm-128 tx=hw", "intact": True, "bad_record": False,
                       "nic": {"tx_tls_encrypted_bytes": 1 << 20,
                               "tx_tls_corrupted_tags": 0}}}
    ev.update(over)
    return ev


def test_the_verdict_passes_only_on_complete_evidence() -> None:
    v = verify.judge("x", evidence())
    assert v.outcome == "pass" and "the NIC encrypted it" in v.detail
    sw = evidence(transfer={**evidence()["transfer"], "txconf": "1.2 aes-gcm-128 tx=sw"},
                  marker_frames_at_nic=0)
    assert "in software" in verify.judge("x", sw).detail
    assert verify.judge("x", evidence(marker_frames_on_wire=3)).outcome == "fail"
    failed = {**evidence()["decrypted"], "failed_records": 2}
    v = verify.judge("x", evidence(decrypted=failed))
    assert v.outcome == "fail" and "did not authenticate" in v.detail
    nothing = {**evidence()["decrypted"], "marker_records": 0}
    assert verify.judge("x", evidence(decrypted=nothing)).outcome == "fail"
    rejected = {**evidence()["transfer"], "intact": False, "bad_record": True,
                "receiver_error": "decryption failed or bad record mac"}
    v = verify.judge("x", evidence(transfer=rejected))
    assert v.outcome == "fail" and "bad record mac" in v.detail
    assert verify.judge("x", evidence(stream_gap=True, capture_drops=4)).outcome == "error"
    assert verify.judge("x", evidence(from_start=False)).outcome == "error"


def test_wire_evidence_from_a_real_session(cert: tuple[str, str], tmp_path: Path) -> None:
    """The whole judgement on frames carrying a real OpenSSL session: it passes, and the
    same frames with the plaintext written over one record fail on the marker."""
    marker = b"LKOFF-0123456789"
    plain = b"".join(Payload(64 * 1024, 1, marker).chunks())
    up, down, keylog, _ = openssl_session(cert, TLS_1_2, "aes-gcm-128", plain, tmp_path)
    a, b = "198.19.0.1", "198.19.0.2"
    frames = [frame(a, b, 5000, 4433, 99, syn=True), frame(b, a, 4433, 5000, 499, syn=True)]
    frames += [frame(a, b, 5000, 4433, 100 + i, up[i:i + 1448]) for i in range(0, len(up),
                                                                               1448)]
    frames += [frame(b, a, 4433, 5000, 500 + i, down[i:i + 1448])
               for i in range(0, len(down), 1448)]
    ev = verify.wire_evidence(frames, 4433, marker, keylog, "1.2")
    assert ev["decrypted"]["failed_records"] == 0 and ev["decrypted"]["marker_records"] == 4
    assert ev["marker_frames_on_wire"] == 0
    leaked = frames + [frame(a, b, 5000, 4433, 100 + len(up), marker)]
    assert verify.wire_evidence(leaked, 4433, marker, keylog, "1.2")["marker_frames_on_wire"]


# -- payloads --------------------------------------------------------------------------

def test_payloads_are_reproducible_and_prefixes_hash_right() -> None:
    p = Payload(3 * CHUNK + 123, 42, b"MARK")
    data = b"".join(p.chunks())
    assert len(data) == p.size and data == b"".join(Payload(p.size, 42, b"MARK").chunks())
    assert data != b"".join(Payload(p.size, 43, b"MARK").chunks())
    assert data.count(b"MARK") >= p.size // MARK_EVERY
    for n in (0, 1, CHUNK, CHUNK + 5, p.size):
        assert p.sha256(n) == hashlib.sha256(data[:n]).hexdigest()


@pytest.mark.needs_root
def test_ethtool_ioctls_agree_with_ethtool(tmp_path: Path) -> None:
    """The counters and feature flags read by ioctl are what `ethtool` prints, on a veth
    in a scratch namespace (the host kernel has no tlsnic)."""
    from labkit.base import netns
    from labkit.features.offload import ethtool

    ns = f"lk-offl-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "name", "v0", "type", "veth", "peer",
                        "name", "v1"], check=True)
        with netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) as s:
            mine = ethtool.stats(s, "v0")
            theirs = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-S", "v0"],
                                    capture_output=True, text=True, check=True).stdout
            assert mine and all(f"{k}: {v}" in theirs for k, v in mine.items())
            assert ethtool.feature(s, "v0", "tx-checksum-ip-generic")
            ethtool.set_feature(s, "v0", False, "tx-checksum-ip-generic")
            shown = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", "v0"],
                                   capture_output=True, text=True, check=True).stdout
            assert "tx-checksum-ip-generic: off" in shown
            assert not ethtool.feature(s, "v0", "tx-checksum-ip-generic")
            assert not ethtool.feature(s, "v0")  # veth has no TLS offload
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
