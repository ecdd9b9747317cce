"""labkit.ktls.handshake against real peers (Python's ssl on a socketpair, `openssl
s_server` on loopback in a scratch namespace): the crypto_info it derives must be what
the peer really uses. This host has no kTLS, so the kernel's record layer is played here
from the crypto_info bytes alone (AEAD over the record, as net/tls does); the kernel tier
(tests/kernel) installs the same bytes for real."""

from __future__ import annotations

import errno
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import aead

from labkit.base import netns
from labkit.ktls import ciphers, keylog, records
from labkit.ktls.handshake import Handshake, HandshakeError, run
from labkit.ktls.keyschedule import nonce
from labkit.ktls.uapi import CT_APPLICATION_DATA, CT_HANDSHAKE, TLS_1_2_VERSION

V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


class UserKtls:
    """One direction of kTLS played in user space from a struct tls12_crypto_info_*."""

    def __init__(self, info: bytes) -> None:
        version, cipher_type = struct.unpack_from("=HH", info)
        self.suite = next(s for s in ciphers.SUITES if s.cipher_type == cipher_type)
        s = self.suite
        iv_len = 12 - s.salt_len
        self.version = version
        self.iv = info[4:4 + iv_len]
        key = info[4 + iv_len:4 + iv_len + s.key_len]
        self.salt = info[4 + iv_len + s.key_len:4 + iv_len + s.key_len + s.salt_len]
        self.seq = int.from_bytes(info[-8:], "big")
        self.aead = (aead.ChaCha20Poly1305(key) if s.code == 0x1303 else
                     aead.AESCCM(key) if s.code == 0x1304 else aead.AESGCM(key))

    def _nonce(self, explicit: bytes) -> bytes:
        if self.version == TLS_1_2_VERSION and self.salt:
            return self.salt + explicit
        return nonce(self.salt + self.iv, self.seq)

    def seal(self, data: bytes, kind: int = CT_APPLICATION_DATA) -> bytes:
        if self.version == TLS_1_2_VERSION:
            explicit = self.seq.to_bytes(8, "big") if self.salt else b""
            aad = self.seq.to_bytes(8, "big") + bytes([kind, 3, 3]) + len(data).to_bytes(2, "big")
            body = explicit + self.aead.encrypt(self._nonce(explicit), data, aad)
            out = bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body
        else:
            length = len(data) + 1 + 16
            head = bytes([CT_APPLICATION_DATA, 3, 3]) + length.to_bytes(2, "big")
            out = head + self.aead.encrypt(self._nonce(b""), data + bytes([kind]), head)
        self.seq += 1
        return out

    def open(self, record: bytes) -> tuple[int, bytes]:
        head, body = record[:5], record[5:]
        if self.version == TLS_1_2_VERSION:
            explicit = body[:8] if self.salt else b""
            body = body[len(explicit):]
            aad = self.seq.to_bytes(8, "big") + head[:3] + (len(body) - 16).to_bytes(2, "big")
            plain = self.aead.decrypt(self._nonce(explicit), body, aad)
            kind = head[0]
        else:
            inner = self.aead.decrypt(self._nonce(b""), body, head).rstrip(b"\0")
            kind, plain = inner[-1], inner[:-1]
        self.seq += 1
        return kind, plain


def self_signed(d: Path, cn: str) -> tuple[str, str]:
    """(certificate, key): ECDSA P-256 by the openssl command, made in milliseconds."""
    key, crt = d / f"{cn}.key", d / f"{cn}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "1", "-subj", f"/CN={cn}"],
                   check=True, capture_output=True, timeout=30)
    return str(crt), str(key)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return self_signed(tmp_path_factory.mktemp("ktls-cert"), "ktls.test")


def contexts(cert: tuple[str, str], version: ssl.TLSVersion, tls12: str = "",
             tickets: int = 0) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*cert)
    server.num_tickets = tickets
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert[0])
    for ctx in (server, client):
        ctx.minimum_version = ctx.maximum_version = version
        if tls12:
            ctx.set_ciphers(tls12)
    return server, client


def peer_thread(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, errors


CASES = [  # (version, TLS 1.2 suite or "", our side is the server, peer server's tickets)
    pytest.param(V13, "", False, 0, id="1.3-client"),
    pytest.param(V13, "", True, 0, id="1.3-server"),
    pytest.param(V13, "", True, 2, id="1.3-server-2-tickets"),
    pytest.param(V13, "", False, 2, id="1.3-client-peer-sends-tickets"),
    pytest.param(V12, "ECDHE-ECDSA-AES128-GCM-SHA256", False, 0, id="1.2-gcm128-client"),
    pytest.param(V12, "ECDHE-ECDSA-AES256-GCM-SHA384", True, 0, id="1.2-gcm256-server"),
    pytest.param(V12, "ECDHE-ECDSA-CHACHA20-POLY1305", False, 0, id="1.2-chacha-client"),
]


@pytest.mark.parametrize(("version", "tls12", "we_serve", "tickets"), CASES)
def test_derived_kernel_state_matches_the_peers_records(cert, version, tls12, we_serve,
                                                        tickets) -> None:
    """Both ways: the peer's records open with our RX state at rx_seq (after any tickets
    it sent), and records sealed with our TX state read as data in the peer's ssl."""
    server, client = contexts(cert, version, tls12, tickets)
    ours, theirs = (server, client) if we_serve else (client, server)
    a, b = socket.socketpair()
    got: list[bytes] = []

    def peer() -> None:
        tls = theirs.wrap_socket(b, server_side=not we_serve,
                                 server_hostname=None if not we_serve else "ktls.test")
        tls.sendall(b"from the peer")
        got.append(tls.recv(100))
        tls.close()

    t, errors = peer_thread(peer)
    try:
        hs = run(ours, records.RecordSocket(a, time.monotonic() + 30), server_side=we_serve,
                 server_hostname=None if we_serve else "ktls.test")
        assert hs.version == (TLS_1_2_VERSION if version == V12 else 0x0304)
        assert "<secrets>" in repr(hs) and hs.keylog[:40] not in repr(hs)
        tx_info, rx_info = hs.crypto_infos()
        if we_serve and version == V13:
            assert hs.tx_seq == tickets
        rx, tx = UserKtls(rx_info), UserKtls(tx_info)
        rsock = records.RecordSocket(a, time.monotonic() + 30)
        while True:  # tickets (TLS 1.3 handshake records) come first, then the data
            kind, plain = rx.open(rsock.read_record())
            if kind == CT_APPLICATION_DATA:
                break
            assert kind == CT_HANDSHAKE
        assert plain == b"from the peer"
        a.sendall(tx.seal(b"from kTLS's keys"))
        t.join(30)
        assert not errors, errors
        assert got == [b"from kTLS's keys"]
    finally:
        a.close()
        b.close()
        t.join(5)


def test_only_handshake_records_are_read(cert) -> None:
    """Data the peer sends right after its Finished stays in the socket for the kernel."""
    server, client = contexts(cert, V13)
    a, b = socket.socketpair()

    def peer() -> None:
        tls = server.wrap_socket(b, server_side=True)
        tls.sendall(b"x" * 1000)

    t, errors = peer_thread(peer)
    try:
        hs = run(client, records.RecordSocket(a, time.monotonic() + 30), server_side=False,
                 server_hostname="ktls.test")
        t.join(30)
        assert not errors
        left = a.recv(65536, socket.MSG_DONTWAIT)
        kind, plain = UserKtls(hs.crypto_infos()[1]).open(left)
        assert (kind, plain) == (CT_APPLICATION_DATA, b"x" * 1000)
    finally:
        a.close()
        b.close()


def test_failures_carry_an_errno(cert, tmp_path: Path) -> None:
    """A certificate that does not verify: EACCES, OpenSSL's alert reaches the peer.
    Bytes that are not TLS: EPROTO. A silent peer: ETIMEDOUT at the deadline. A peer that
    closes: ECONNRESET."""
    server, _ = contexts(self_signed(tmp_path, "other"), V13)
    _, client = contexts(cert, V13)
    a, b = socket.socketpair()
    seen: list[str] = []

    def peer() -> None:
        try:
            server.wrap_socket(b, server_side=True)
        except ssl.SSLError as exc:
            seen.append(str(exc.reason))

    t, _ = peer_thread(peer)
    with pytest.raises(HandshakeError) as info:
        run(client, records.RecordSocket(a, time.monotonic() + 30), server_side=False,
            server_hostname="ktls.test")
    t.join(30)
    assert info.value.errno == errno.EACCES, info.value
    assert seen and "ALERT" in seen[0], seen  # the alert went out
    a.close()
    b.close()

    for peer_bytes, code in ((b"GET / HTTP/1.1\r\n\r\n", errno.EPROTO), (None, errno.ECONNRESET),
                             (b"", errno.ETIMEDOUT)):
        _, client = contexts(cert, V13)
        a, b = socket.socketpair()
        if peer_bytes is None:
            b.close()
        elif peer_bytes:
            b.sendall(peer_bytes)
        with pytest.raises(OSError) as info:
            run(client, records.RecordSocket(a, time.monotonic() + 0.5), server_side=False,
                server_hostname="ktls.test")
        assert info.value.errno == code, (peer_bytes, info.value)
        a.close()
        b.close()


def test_key_log_parser_and_pipe() -> None:
    rnd = bytes(range(32))
    text = "\n".join(["# comment", "", "CLIENT_RANDOM zz 00", "BAD LINE",
                      keylog.line(keylog.CLIENT_APP, rnd, b"\x01" * 32),
                      keylog.line(keylog.SERVER_APP, rnd, b"\x02" * 32)])
    assert keylog.parse(text) == {rnd: {keylog.CLIENT_APP: b"\x01" * 32,
                                        keylog.SERVER_APP: b"\x02" * 32}}
    with keylog.KeylogPipe() as pipe:
        with open(pipe.path, "a") as fh:
            fh.write(text)
        assert pipe.text() == text
    assert pipe.rfd == pipe.wfd == -1


def test_record_reader_refuses_what_is_not_a_record() -> None:
    for head in (b"\x17\x03\x03\xff\xff", b"\x63\x03\x03\x00\x01", b"\x16\x02\x00\x00\x01"):
        with pytest.raises(records.RecordError) as info:
            records.check_header(head)
        assert info.value.errno == errno.EPROTO
    assert records.check_header(b"\x16\x03\x01\x00\x05") == (22, 5)  # the positive control


# -- against the openssl command: s_server in a scratch namespace -----------------------

@pytest.fixture
def s_server(scratch_ns: str, cert: tuple[str, str]) -> Iterator[Callable[..., subprocess.Popen]]:
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", scratch_ns, "openssl", "s_server",
                              "-accept", "127.0.0.1:4433", "-cert", cert[0], "-key", cert[1],
                              "-naccept", "1", "-quiet", *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def connect(ns: str, deadline: float) -> socket.socket:
    while True:
        s = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(("127.0.0.1", 4433))
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # s_server not listening yet; bounded by the deadline


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_server_reads_what_our_tx_state_seals(scratch_ns, s_server, version) -> None:
    """s_server (its default two tickets in TLS 1.3) prints what our TX state sealed, and
    its answer opens with our RX state after the tickets."""
    args = ["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"] if version == "-tls1_2" else []
    server = s_server(version, *args)
    deadline = time.monotonic() + 30
    sock = connect(scratch_ns, deadline)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        hs: Handshake = run(ctx, records.RecordSocket(sock, deadline), server_side=False)
        assert hs.version_name == ("TLSv1.2" if version == "-tls1_2" else "TLSv1.3")
        tx_info, rx_info = hs.crypto_infos()
        sock.sendall(UserKtls(tx_info).seal(b"marker-from-ktls-keys\n"))
        assert server.stdout is not None and server.stdin is not None
        assert server.stdout.readline() == b"marker-from-ktls-keys\n"
        server.stdin.write(b"answer\n")
        server.stdin.flush()
        rx, rsock = UserKtls(rx_info), records.RecordSocket(sock, deadline)
        kinds = []
        while True:
            kind, plain = rx.open(rsock.read_record())
            kinds.append(kind)
            if kind == CT_APPLICATION_DATA:
                break
        assert plain == b"answer\n"
        assert kinds.count(CT_HANDSHAKE) == (2 if version == "-tls1_3" else 0), kinds
    finally:
        sock.close()
