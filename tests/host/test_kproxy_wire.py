"""Reading captured legs: TCP streams reassembled from frames in any order (retransmitted
ones too), then read as TLS records; plaintext is told apart, so a verdict that a leg
carried only TLS can fail."""

from __future__ import annotations

import os
import socket
import struct

from labkit.features.kproxy.wire import read_tls
from labkit.packets.tcpstream import streams


def frame(seq: int, payload: bytes, syn: bool = False, sport: int = 40000) -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", 0x0800)
    tcp = struct.pack("!HHIIBBHHH", sport, 443, seq, 0, 5 << 4, 0x02 if syn else 0x18,
                      65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0,
                     socket.inet_aton("198.19.0.1"), socket.inet_aton("198.19.0.2"))
    return eth + ip + tcp + payload


def record(kind: int, body: bytes) -> bytes:
    return struct.pack("!BHH", kind, 0x0303, len(body)) + body


def test_out_of_order_and_repeated_segments_reassemble() -> None:
    data = os.urandom(5000)
    frames = [frame(1000, b"", syn=True), frame(1001 + 3000, data[3000:]),
              frame(1001, data[:1500]), frame(1001 + 1500, data[1500:3000]),
              frame(1001, data[:1500])]  # a retransmission
    assert streams(frames)[(("198.19.0.1", 40000), ("198.19.0.2", 443))].data() == (data, False)


def test_a_short_retransmission_does_not_replace_the_long_original() -> None:
    """A loaded TCG guest retransmits the first MSS of a 64 KiB super-frame already on the
    wire: keeping the later, shorter copy left a hole (CI: 'the capture ends inside a
    record' on a kproxy leg)."""
    data = os.urandom(20000)
    frames = [frame(1000, b"", syn=True), frame(1001, data[:12000]),
              frame(1001 + 12000, data[12000:]), frame(1001, data[:1448])]
    assert streams(frames)[(("198.19.0.1", 40000), ("198.19.0.2", 443))].data() == (data, False)
    holed = [frame(1000, b"", syn=True), frame(1001, data[:1448]),
             frame(1001 + 12000, data[12000:])]  # control: a real hole is reported
    got = streams(holed)[(("198.19.0.1", 40000), ("198.19.0.2", 443))].data()
    assert got == (data[:1448], True)


def test_a_stream_of_records_is_only_tls() -> None:
    stream = record(22, os.urandom(300)) + record(20, b"\x01") + \
        b"".join(record(23, os.urandom(16400)) for _ in range(3)) + record(21, b"\x01\x00")
    got = read_tls(stream)
    assert got.only_tls
    assert got.records == {"handshake": 1, "change_cipher_spec": 1, "application_data": 3,
                           "alert": 1}


def test_plaintext_and_a_cut_record_are_not() -> None:
    plain = read_tls(b'\x00\x00\x00\x1a{"test": "up", "id": "x"}')
    assert not plain.only_tls and "not a TLS record header" in plain.problem
    cut = read_tls(record(23, os.urandom(100))[:50])
    assert not cut.only_tls and cut.problem == "the capture ends inside a record"
    assert not read_tls(b"").only_tls  # an empty leg proves nothing
