"""What kTLS does differently on the kernels labkit runs, shown on the running kernel.

Linux 6.14 added TLS 1.3 KeyUpdate to kTLS: TLS_TX/TLS_RX given again installs the next
key, a received KeyUpdate makes reads fail with EKEYEXPIRED until the next RX key is in,
and /proc/net/tls_stat gains five rekey counters. 7.x added TLS_TX_MAX_PAYLOAD_LEN (RFC
8449). debian-7.2 has both, debian-6.12 and debian-6.1 neither. Each test asserts the
behaviour the kernel's release calls for, on both sides of the change, so the tier on each
kernel shows its side; and that labkit (labkit.ktls, the doctor's probes) says the same.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

import pytest

from labkit.base import netns
from labkit.capabilities import Probe, release_tuple
from labkit.ktls import ciphers, keyschedule, sockopt, stat, uapi

pytestmark = [pytest.mark.kernel, pytest.mark.needs("ktls")]

RELEASE = os.uname().release
HAS_REKEY = (release_tuple(RELEASE) or (0, 0)) >= (6, 14)
# RFC 8449's option, on the kernels of the tier (its first release is not pinned down here)
HAS_MAX_PAYLOAD = {(6, 1): False, (6, 12): False, (7, 2): True}.get(release_tuple(RELEASE)
                                                                     or (0, 0))
SUITE = ciphers.BY_SHORT["aes-gcm-128"]
# Fixed test secrets (32 bytes, SHA-256 sized), not secrets of any real session.
CLIENT_SECRET, SERVER_SECRET = bytes(range(32)), bytes(range(32, 64))


@pytest.fixture
def ns(scratch_ns: str) -> str:
    return scratch_ns


def tcp_pair(ns: str, port: int) -> tuple[socket.socket, socket.socket]:
    with netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        client = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", port))
        server, _ = listener.accept()
    for s in (client, server):
        s.settimeout(10)
    return client, server


def info(secret: bytes) -> bytes:
    return sockopt.tls13_crypto_info(SUITE, secret, 0)


def test_tls_stat_has_the_rekey_counters_exactly_where_the_kernel_rekeys(
        ns: str, doctor_probes: dict[str, Probe]) -> None:
    client, server = tcp_pair(ns, 7301)
    with client, server:
        sockopt.install(client, tx=info(CLIENT_SECRET))  # loads tls: tls_stat exists
    counters = stat.read(ns)
    assert counters is not None and "TlsCurrTxSw" in counters  # positive control
    assert counters["TlsCurrTxSw"] == 0  # the socket is closed
    assert stat.has_rekey(counters) is HAS_REKEY, (RELEASE, sorted(counters))
    assert (stat.rekey(counters) is None) is not HAS_REKEY
    assert doctor_probes["ktls_rekey"].ok is HAS_REKEY  # and the doctor says the same


def test_a_key_update_moves_both_directions_to_the_next_key(ns: str) -> None:
    """The client sends data, a KeyUpdate under the old key, then data under the next key;
    the server reads the data, the KeyUpdate, then EKEYEXPIRED until it installs the next
    RX key, then the rest. Before 6.14 the kernel refuses the second TLS_TX (EBUSY)."""
    client, server = tcp_pair(ns, 7302)
    with client, server:
        sockopt.install(client, tx=info(CLIENT_SECRET), rx=info(SERVER_SECRET))
        sockopt.install(server, tx=info(SERVER_SECRET), rx=info(CLIENT_SECRET))
        client.sendall(b"before")
        assert sockopt.recv_record(server) == (uapi.CT_APPLICATION_DATA, b"before")
        next_secret = keyschedule.next_secret(CLIENT_SECRET, SUITE.hash)
        if not HAS_REKEY:
            with pytest.raises(sockopt.KtlsError) as refused:
                sockopt.rekey(client, tx=info(next_secret))
            assert refused.value.errno == errno.EBUSY
            assert stat.rekey(stat.read(ns) or {}) is None
            client.sendall(b"still the old key")  # the socket is unharmed
            assert sockopt.recv_record(server)[1] == b"still the old key"
            return
        before = stat.read(ns) or {}
        sockopt.send_record(client, sockopt.key_update_message(False), uapi.CT_HANDSHAKE)
        sockopt.rekey(client, tx=info(next_secret))
        client.sendall(b"after")
        assert sockopt.recv_record(server) == (uapi.CT_HANDSHAKE,
                                               sockopt.key_update_message(False))
        # "after" is queued, yet the kernel hides it: poll says not readable, a read fails
        assert select.select([server], [], [], 0)[0] == []
        assert sockopt.pending_key_update(server)
        server.setblocking(False)
        with pytest.raises(sockopt.KeyUpdatePending) as pending:
            sockopt.recv_record(server)
        assert pending.value.errno == errno.EKEYEXPIRED
        server.settimeout(10)
        sockopt.rekey(server, rx=info(next_secret))
        assert not sockopt.pending_key_update(server)
        assert select.select([server], [], [], 0)[0] == [server]  # control: now readable
        assert sockopt.recv_record(server) == (uapi.CT_APPLICATION_DATA, b"after")
        with pytest.raises(sockopt.KtlsError) as wrong:  # a rekey may not change the cipher
            sockopt.rekey(client, tx=sockopt.tls13_crypto_info(
                ciphers.BY_SHORT["aes-gcm-256"], bytes(48), 0))
        assert wrong.value.errno == errno.EINVAL
        after = stat.read(ns) or {}
    grew = {k: after[k] - before[k] for k in stat.REKEY_COUNTERS}
    assert grew == {"TlsTxRekeyOk": 1, "TlsRxRekeyOk": 1, "TlsRxRekeyReceived": 1,
                    "TlsTxRekeyError": 1, "TlsRxRekeyError": 0}, grew


def test_the_record_size_limit_shapes_the_records_on_the_wire(
        ns: str, doctor_probes: dict[str, Probe]) -> None:
    """TLS_TX_MAX_PAYLOAD_LEN 1000: 5000 bytes leave as records of at most 1000 bytes of
    plaintext (+ content type + 16-byte tag), read raw by a peer without kTLS."""
    client, server = tcp_pair(ns, 7303)
    with client, server:
        sockopt.install(client, tx=info(CLIENT_SECRET))
        try:
            got = sockopt.max_payload(client, 1000)
        except sockopt.KtlsError as exc:
            assert exc.errno == errno.ENOPROTOOPT  # kernels without RFC 8449 support
            assert HAS_MAX_PAYLOAD is not True, RELEASE
            assert not doctor_probes["ktls_max_payload"].ok
            client.sendall(b"x" * 5000)  # the default: one record
            assert record_lengths(server, 5000) == [5000 + 17]
            return
        assert got == 1000
        assert HAS_MAX_PAYLOAD is not False, RELEASE
        assert doctor_probes["ktls_max_payload"].ok
        client.sendall(b"x" * 5000)
        assert record_lengths(server, 5000) == [1000 + 17] * 5


def record_lengths(sock: socket.socket, plaintext: int) -> list[int]:
    """Lengths of the raw TLS records on a plain socket until `plaintext` bytes came."""
    lengths: list[int] = []
    while sum(n - 17 for n in lengths) < plaintext:
        header = recv_exact(sock, uapi.RECORD_HEADER)
        ctype, _version, length = struct.unpack("!BHH", header)
        assert ctype == uapi.CT_APPLICATION_DATA  # TLS 1.3: every record's outer type
        recv_exact(sock, length)
        lengths.append(length)
    return lengths


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the peer closed early"
        data += chunk
    return data
