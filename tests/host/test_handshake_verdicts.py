"""The encryption verdict on real captures: TLS 1.3 (Python's ssl, key log kept) and
plaintext TCP between two namespaces of this host, captured with the same tap `verify
encryption` uses, then judged by the pure functions (record walk, marker search,
labkit.ktls.decrypt with the NSS key log). On the wire, user-space TLS and kTLS records are the
same bytes, so these captures stand for what the lab sees."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.base import netns
from labkit.base.wait import poll
from labkit.features.handshake import certs
from labkit.features.handshake.verdicts import (
    decrypt_marker,
    judge,
    starttls_probe,
    walk_records,
    wire_evidence,
)
from labkit.packets.tap import Tap
from tests.conftest import require_root

PORT = 4420
A, B = "198.18.5.1", "198.18.5.2"


def test_walk_records_accepts_records_and_a_cut_tail() -> None:
    stream = bytes([22, 3, 1, 0, 2, 1, 2]) + bytes([23, 3, 3, 0, 3, 9, 9, 9]) + bytes([23, 3])
    out = walk_records(stream)
    assert out["tls"] and out["records"] == 2
    assert out["types"] == {"handshake": 1, "application_data": 1}


@pytest.mark.parametrize("stream", [b"\x04\x00\x80\x00" + bytes(124),  # NVMe/TCP ICReq
                                    b"\x80\x00\x00\x28" + bytes(40),  # RPC record marker
                                    bytes([23, 3, 3, 0x48, 0x01])])  # length past 2^14+256
def test_walk_records_refuses_what_is_not_tls(stream: bytes) -> None:
    out = walk_records(stream)
    assert not out["tls"] and out["bad_at"] == 0


def rpc_record(*words: int, tail: bytes = b"") -> bytes:
    body = b"".join(w.to_bytes(4, "big") for w in words) + tail
    return (0x80000000 | len(body)).to_bytes(4, "big") + body


def test_rpc_with_tls_opening_is_allowed_before_the_records() -> None:
    """RFC 9289: the client's NULL call with an AUTH_TLS (7) credential and the server's
    "STARTTLS" reply travel in clear; TLS records follow. Other RPC is not skipped."""
    hello = bytes([22, 3, 1, 0, 2, 1, 2])
    probe = rpc_record(0x5FB340D8, 0, 2, 100003, 4, 0, 7, 0, 0, 0)  # as captured in the VM
    reply = rpc_record(0x5FB340D8, 1, 0, 0, 8, tail=b"STARTTLS" + bytes(4))
    plain = rpc_record(1, 0, 2, 100003, 4, 1, 1, 0, 0, 0)  # AUTH_UNIX: real NFS traffic
    assert starttls_probe(probe + hello) == len(probe) == 44
    assert starttls_probe(reply) == len(reply) == 36
    assert starttls_probe(plain + hello) == 0
    assert starttls_probe(hello) == 0


def evidence(streams: list[dict[str, object]], **kw: object) -> dict[str, object]:
    base: dict[str, object] = {"port": PORT, "frames": 10, "tcp_payload_bytes": 100,
                               "streams": streams, "marker_frames": 0,
                               "marker_delivered": True, "keylog": False}
    base.update(kw)
    return base


TLS_STREAM = {"flow": "a > b", "bytes": 50, "from_start": True, "tls": True, "records": 3}


def test_judge_outcomes_on_recorded_evidence() -> None:
    assert judge("t", evidence([TLS_STREAM])).outcome == "pass"
    assert judge("t", evidence([TLS_STREAM], marker_frames=2)).outcome == "fail"
    assert judge("t", evidence([{**TLS_STREAM, "tls": False, "bad_at": 0,
                                 "bad_bytes": "0400"}])).outcome == "fail"
    assert judge("t", evidence([TLS_STREAM], keylog=True, decrypted_records=4,
                               marker_records=0)).outcome == "fail"
    assert judge("t", evidence([TLS_STREAM], keylog=True, decrypted_records=4,
                               marker_records=1)).outcome == "pass"
    assert judge("t", evidence([{**TLS_STREAM, "from_start": False}])).outcome == "fail"
    assert judge("t", evidence([], tcp_payload_bytes=0)).outcome == "error"
    assert judge("t", evidence([TLS_STREAM], marker_delivered=False)).outcome == "error"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, str]]:
    require_root()
    from pyroute2.iproute import IPRoute

    tag = secrets.token_hex(3)
    a, b = f"lkt-hsv-{tag}-a", f"lkt-hsv-{tag}-b"
    netns.create(a)
    netns.create(b)
    try:
        fd_b = netns.open_fd(b)
        with netns.entered(a), IPRoute() as ipr:
            ipr.link("add", ifname="va", kind="veth", peer={"ifname": "vb", "net_ns_fd": fd_b})
            idx = ipr.link_lookup(ifname="va")[0]
            ipr.addr("add", index=idx, address=A, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        with netns.entered(b), IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="vb")[0]
            ipr.addr("add", index=idx, address=B, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        os.close(fd_b)
        yield a, b
    finally:
        netns.delete(a)
        netns.delete(b)


PROBE = rpc_record(0x5FB340D8, 0, 2, 100003, 4, 0, 7, 0, 0, 0)
STARTTLS = rpc_record(0x5FB340D8, 1, 0, 0, 8, tail=b"STARTTLS" + bytes(4))


def session(pair: tuple[str, str], tmp: Path, marker: bytes, tls: bool,
            starttls: bool = False, bulk: int = 0) -> tuple[list[bytes], str]:
    """One connection a -> b:PORT carrying the marker both ways, captured on a's veth;
    with starttls, opened in clear the way RPC-with-TLS (RFC 9289) opens; with bulk, the
    client first sends that many bytes (many records, split across segments)."""
    a, b = pair
    keylog = str(tmp / "keys.log")
    ls = netns.socket_in(b, socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with netns.entered(b):
        ls.bind((B, PORT))
    ls.listen(1)
    server_ctx = client_ctx = None
    if tls:
        ca = certs.make_ca("v")
        srv = certs.issue(ca, "b", [B], "v")
        (tmp / "c.pem").write_bytes(srv.cert_pem)
        (tmp / "k.pem").write_bytes(srv.key_pem)
        (tmp / "ca.pem").write_bytes(ca.cert_pem)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(str(tmp / "c.pem"), str(tmp / "k.pem"))
        server_ctx.keylog_filename = keylog
        client_ctx = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = ls.accept()
        if starttls:
            conn.recv(len(PROBE), socket.MSG_WAITALL)
            conn.sendall(STARTTLS)
        s = server_ctx.wrap_socket(conn, server_side=True) if server_ctx else conn
        with s:
            data = b""
            while not data.endswith(marker):
                more = s.recv(65536)
                if not more:
                    break
                data += more
            got.append(data[bulk:])
            s.sendall(b"reply " + marker)

    tap = Tap(a, "va")
    try:
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        c = netns.socket_in(a, socket.AF_INET, socket.SOCK_STREAM)
        with netns.entered(a):
            c.connect((B, PORT))
        if starttls:
            c.sendall(PROBE)
            c.recv(len(STARTTLS), socket.MSG_WAITALL)
        s = client_ctx.wrap_socket(c, server_hostname=B) if client_ctx else c
        with s:
            s.sendall(bytes(bulk) + b"hello " + marker)
            got.append(s.recv(4096))
        thread.join(5)
        # until the capture holds a FIN (TCP flags, byte 47 of an IPv4 frame): the
        # connection's last data is in
        poll(lambda: any(len(f) > 47 and f[47] & 0x01 for f in tap.frames), 2)
    finally:
        frames = tap.finish()
        ls.close()
    assert got == [b"hello " + marker, b"reply " + marker]  # the marker crossed both ways
    return frames, keylog


@pytest.mark.needs_root
def test_tls_session_passes_and_decrypts(pair: tuple[str, str], tmp_path: Path) -> None:
    marker = b"LKTLS" + secrets.token_hex(6).encode()
    frames, keylog = session(pair, tmp_path, marker, tls=True)
    ev = wire_evidence(frames, PORT, marker)
    ev.update(marker_delivered=True, keylog=True, **decrypt_marker(frames, PORT, keylog, marker))
    verdict = judge("tls", ev)
    assert verdict.outcome == "pass", verdict.detail
    assert ev["marker_records"] >= 2 and ev["marker_frames"] == 0


@pytest.mark.needs_root
def test_plaintext_session_fails(pair: tuple[str, str], tmp_path: Path) -> None:
    marker = b"LKTLS" + secrets.token_hex(6).encode()
    frames, _ = session(pair, tmp_path, marker, tls=False)
    ev = wire_evidence(frames, PORT, marker)
    ev.update(marker_delivered=True, keylog=False)
    verdict = judge("plain", ev)
    assert verdict.outcome == "fail"
    assert ev["marker_frames"] >= 2
    assert any(not s.get("tls") for s in ev["streams"] if s.get("from_start"))


@pytest.mark.needs_root
def test_rpc_with_tls_session_passes_and_decrypts(pair: tuple[str, str], tmp_path: Path) -> None:
    """NFS's opening travels in clear; the check allows it, the key log opens what follows."""
    marker = b"LKTLS" + secrets.token_hex(6).encode()
    frames, keylog = session(pair, tmp_path, marker, tls=True, starttls=True)
    ev = wire_evidence(frames, PORT, marker)
    assert [s.get("starttls_probe_bytes") for s in ev["streams"]] == [len(PROBE), len(STARTTLS)]
    ev.update(marker_delivered=True, keylog=True, **decrypt_marker(frames, PORT, keylog, marker))
    verdict = judge("rpc-with-tls", ev)
    assert verdict.outcome == "pass", verdict.detail
    assert ev["marker_records"] >= 2 and "AUTH_TLS opening" in verdict.detail


@pytest.mark.needs_root
def test_marker_after_many_records_is_found_and_a_wrong_key_opens_nothing(
        pair: tuple[str, str], tmp_path: Path) -> None:
    """The marker behind 512 KiB (32+ records, each split over segments) still opens; the
    same capture with the key log's secrets altered opens no record and fails (the
    control: the check depends on the keys)."""
    marker = b"LKTLS" + secrets.token_hex(6).encode()
    frames, keylog = session(pair, tmp_path, marker, tls=True, bulk=512 * 1024)
    ev = wire_evidence(frames, PORT, marker)
    opened = decrypt_marker(frames, PORT, keylog, marker)
    assert opened["decrypted_records"] >= 33 and opened["marker_records"] == 2, opened
    assert opened["unopened_records"] == 0 and not opened["decrypt_problems"]
    bad = tmp_path / "bad.log"
    bad.write_text("".join(
        " ".join(w[:2] + [("00" if w[2][:2] != "00" else "11") + w[2][2:]]) + "\n"
        for w in (line.split() for line in Path(keylog).read_text().splitlines())
        if len(w) == 3))
    wrong = decrypt_marker(frames, PORT, str(bad), marker)
    assert wrong["decrypted_records"] == 0 and wrong["unopened_records"] >= 33, wrong
    ev.update(marker_delivered=True, keylog=True, **wrong)
    verdict = judge("tls, wrong keys", ev)
    assert verdict.outcome == "fail" and "opened with no key" in verdict.detail
