"""Reading the two plaintext hellos of a TLS 1.3 handshake: what the daemon must know
before (or besides) its TLS library.

A PSK server must find the client's identities in the kernel keyring before the library
answers; a key log line names the ClientHello's random; which of several offered PSKs the
server picked is in the ServerHello. Records and handshake messages per RFC 8446 4.1.2,
4.1.3 and 4.2.11. Pure functions over bytes; ValueError for anything malformed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from labkit.ktls.uapi import CT_HANDSHAKE, RECORD_HEADER

HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
EXT_SERVER_NAME = 0
EXT_SUPPORTED_VERSIONS = 43
EXT_PRE_SHARED_KEY = 41
EXT_PSK_KEY_EXCHANGE_MODES = 45


@dataclass
class Hello:
    """The fields of a ClientHello or ServerHello that the daemon uses."""

    kind: int  # HS_CLIENT_HELLO or HS_SERVER_HELLO
    random: bytes
    cipher_suites: list[int] = field(default_factory=list)  # offered, or the one chosen
    psk_identities: list[bytes] = field(default_factory=list)  # client: offered, in order
    psk_selected: int | None = None  # server: index into the client's identities
    server_name: str = ""
    versions: list[int] = field(default_factory=list)


def handshake_payload(records: bytes) -> bytes:
    """The handshake bytes carried by the leading plaintext handshake records (up to the
    first record of another type, e.g. a ChangeCipherSpec sent right after)."""
    out, pos = b"", 0
    while pos + RECORD_HEADER <= len(records):
        kind, _, length = struct.unpack_from("!BHH", records, pos)
        if kind != CT_HANDSHAKE:
            break
        out += records[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
    return out


def message_length(payload: bytes) -> int | None:
    """Length of the first handshake message (header included), None until its header."""
    if len(payload) < 4:
        return None
    return 4 + int.from_bytes(payload[1:4], "big")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("a hello message ends too early")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def num(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vec(self, len_bytes: int) -> bytes:
        return self.take(self.num(len_bytes))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse_hello(message: bytes) -> Hello:
    """A ClientHello or ServerHello handshake message (with its 4-byte header)."""
    r = _Reader(message)
    kind = r.num(1)
    if kind not in (HS_CLIENT_HELLO, HS_SERVER_HELLO):
        raise ValueError(f"handshake message type {kind} is not a hello")
    body = _Reader(r.take(r.num(3)))
    body.take(2)  # legacy_version
    hello = Hello(kind=kind, random=body.take(32))
    body.vec(1)  # legacy_session_id
    if kind == HS_CLIENT_HELLO:
        suites = body.vec(2)
        hello.cipher_suites = [int.from_bytes(suites[i:i + 2], "big")
                               for i in range(0, len(suites) - 1, 2)]
        body.vec(1)  # legacy_compression_methods
    else:
        hello.cipher_suites = [body.num(2)]
        body.take(1)  # legacy_compression_method
    if not body.left:
        return hello
    exts = _Reader(body.vec(2))
    while exts.left:
        ext_type = exts.num(2)
        ext = _Reader(exts.vec(2))
        if ext_type == EXT_PRE_SHARED_KEY:
            if kind == HS_SERVER_HELLO:
                hello.psk_selected = ext.num(2)
            else:
                ids = _Reader(ext.vec(2))
                while ids.left:
                    hello.psk_identities.append(ids.vec(2))
                    ids.take(4)  # obfuscated_ticket_age
        elif ext_type == EXT_SERVER_NAME and kind == HS_CLIENT_HELLO and ext.left:
            names = _Reader(ext.vec(2))
            while names.left:
                name_type, name = names.num(1), names.vec(2)
                if name_type == 0:
                    hello.server_name = name.decode(errors="replace")
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            if kind == HS_SERVER_HELLO:
                hello.versions = [ext.num(2)]
            else:
                raw = ext.vec(1)
                hello.versions = [int.from_bytes(raw[i:i + 2], "big")
                                  for i in range(0, len(raw) - 1, 2)]
    return hello


def first_hello(records: bytes) -> Hello:
    """The hello that the leading handshake records carry."""
    payload = handshake_payload(records)
    need = message_length(payload)
    if need is None or len(payload) < need:
        raise ValueError("the records do not hold a whole hello message")
    return parse_hello(payload[:need])
