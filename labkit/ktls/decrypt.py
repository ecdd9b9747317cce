"""Opening captured TLS 1.3 records with an NSS key log, so a verifier can show that a
marker travelled inside them.

Why not scapy's TLS session: it reads the capture through its own TCP reassembly, took
about a minute for ~120 records under emulation, and once decrypted 113 records of an
NVMe/TCP capture but not the one holding the marker. Here each direction of a
connection arrives already rebuilt (the caller's TCP streams), and the rules are
RFC 8446's: records after the hellos are sealed with the handshake traffic key, then
with the application traffic key from sequence number 0; KeyUpdate moves to the next
secret. A record that opens with neither key is counted, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labkit.ktls import keylog as nss
from labkit.ktls.ciphers import BY_CODE, Suite
from labkit.ktls.keyschedule import next_secret, nonce, traffic_key_iv
from labkit.ktls.records import HS_CLIENT_HELLO, hello_random, split

CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA = 20, 21, 22, 23
HS_SERVER_HELLO, HS_KEY_UPDATE = 2, 24
LABELS = {  # NSS key log labels -> (direction, phase)
    nss.CLIENT_HS: ("client", "handshake"),
    nss.SERVER_HS: ("server", "handshake"),
    nss.CLIENT_APP: ("client", "application"),
    nss.SERVER_APP: ("server", "application"),
}

KeyLog = dict[bytes, dict[tuple[str, str], bytes]]  # client random -> (dir, phase) -> secret


def parse_keylog(text: str) -> KeyLog:
    """The TLS 1.3 secrets of an NSS key log, by client random; other lines are ignored."""
    return {rnd: {LABELS[label]: secret for label, secret in by_label.items()
                  if label in LABELS}
            for rnd, by_label in nss.parse(text).items()
            if any(label in LABELS for label in by_label)}


split_records = split  # (header, body) of each whole record at the start of a stream


def client_random(records: list[tuple[bytes, bytes]]) -> bytes | None:
    """The random of the ClientHello that opens the client's records."""
    return hello_random(records, HS_CLIENT_HELLO)


def server_suite(records: list[tuple[bytes, bytes]]) -> Suite | None:
    """The suite the ServerHello chose (after type, length, version, random, session id)."""
    for header, body in records[:2]:
        if header[0] == CT_HANDSHAKE and body[:1] == bytes([HS_SERVER_HELLO]) \
                and len(body) >= 39:
            at = 39 + body[38]
            return BY_CODE.get(int.from_bytes(body[at:at + 2], "big"))
    return None


def _aead(suite: Suite, key: bytes):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.ciphers import aead

    if suite.code == 0x1303:
        return aead.ChaCha20Poly1305(key)
    if suite.code == 0x1304:
        return aead.AESCCM(key, tag_length=16)
    return aead.AESGCM(key)


def open_record(aead: Any, iv: bytes, seq: int, header: bytes,
                body: bytes) -> tuple[int, bytes]:
    """(inner content type, content) of one sealed TLS 1.3 record (RFC 8446 5.2): the nonce
    is the IV XOR the sequence number, the additional data the record header, the real type
    the last non-zero byte inside (0 if there is none). cryptography's InvalidTag if the
    record is not authentic under this key. The one opening of a TLS 1.3 record: the
    handshake verifier's and the offload NIC's checks both use it."""
    inner = aead.decrypt(nonce(iv, seq), body, header).rstrip(b"\0")
    return (inner[-1], inner[:-1]) if inner else (0, b"")


@dataclass
class Opened:
    """One direction of a connection, opened."""

    app_data: list[bytes] = field(default_factory=list)  # plaintext of application records
    handshake_records: int = 0  # sealed with the handshake key (EncryptedExtensions...)
    unopened: int = 0  # sealed records no key in the log opens
    missing_keys: bool = False


class _Key:
    def __init__(self, suite: Suite, secret: bytes) -> None:
        self.suite, self.secret, self.seq = suite, secret, 0
        key, self.iv = traffic_key_iv(secret, suite.key_len, suite.hash)
        self.aead = _aead(suite, key)

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes] | None:
        from cryptography.exceptions import InvalidTag

        try:
            opened = open_record(self.aead, self.iv, self.seq, header, body)
        except InvalidTag:
            return None
        self.seq += 1
        return opened

    def updated(self) -> _Key:
        return _Key(self.suite, next_secret(self.secret, self.suite.hash))


def open_direction(records: list[tuple[bytes, bytes]], suite: Suite,
                   secrets: dict[str, bytes]) -> Opened:
    """Open one direction's sealed records: handshake key first (if the log has it), then
    the application key; a record neither key opens is counted and skipped."""
    out = Opened()
    hs = _Key(suite, secrets["handshake"]) if "handshake" in secrets else None
    app = _Key(suite, secrets["application"]) if "application" in secrets else None
    out.missing_keys = app is None
    for header, body in records:
        if header[0] != CT_APPLICATION_DATA:
            continue  # hellos and the compatibility change_cipher_spec travel in clear
        if hs is not None and hs.open(header, body) is not None:
            out.handshake_records += 1
            continue
        opened = app.open(header, body) if app is not None else None
        if opened is None:
            out.unopened += 1
            continue
        hs = None  # the application key opened one: the handshake phase is over
        kind, content = opened
        if kind == CT_APPLICATION_DATA:
            out.app_data.append(content)
        elif kind == CT_HANDSHAKE and content[:1] == bytes([HS_KEY_UPDATE]):
            assert app is not None
            app = app.updated()
    return out


def open_connection(client_bytes: bytes, server_bytes: bytes,
                    keylog: KeyLog) -> tuple[Opened, Opened] | str:
    """Both directions of one TLS 1.3 connection (each from its first record), or why they
    cannot be opened."""
    c_records, s_records = split_records(client_bytes), split_records(server_bytes)
    rnd = client_random(c_records)
    if rnd is None:
        return "no ClientHello at the start of the client's bytes"
    suite = server_suite(s_records)
    if suite is None:
        return "no ServerHello with a TLS 1.3 AEAD suite at the start of the server's bytes"
    keys = keylog.get(rnd)
    if not keys:
        return f"the key log has no secrets for client random {rnd.hex()[:16]}..."
    return (open_direction(c_records, suite,
                           {ph: s for (d, ph), s in keys.items() if d == "client"}),
            open_direction(s_records, suite,
                           {ph: s for (d, ph), s in keys.items() if d == "server"}))
