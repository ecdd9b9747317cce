"""Reading a client's TLS stream off the wire: its records, and each one decrypted with
the session's keys (from the key log), as an independent check of what the NIC produced.

TLS 1.2 (RFC 5246, AES-GCM per RFC 5288): after the client's ChangeCipherSpec every
record is protected; the nonce is the 4-byte salt and the record's 8-byte explicit
nonce, the additional data its sequence number, type, version and plaintext length.
TLS 1.3 (RFC 8446 section 5.2): every protected record is type 23 outside; the nonce is
the IV XOR the sequence number, the additional data the record header, and the real
type is the last non-zero byte inside. The client's first protected record (Finished)
uses the handshake keys, the rest the application keys. Pure functions: host tests feed
them records made with `cryptography` and captures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labkit.features.offload.tlskeys import TLS_1_2, Keys
from labkit.ktls import records
from labkit.ktls.decrypt import open_record
from labkit.ktls.records import Record, Walk

TAG = 16


def walk(data: bytes) -> Walk:
    """A client's stream as records (labkit.ktls's reader, with TLS 1.2's length ceiling:
    the NIC emulates TLS 1.2 offload)."""
    return records.walk(data, records.MAX_TLS12_CIPHERTEXT)


def _aead(keys: Keys) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(keys.key)


def open_tls12(aead: Any, keys: Keys, rec: Record, seq: int) -> bytes:
    """One TLS 1.2 AES-GCM record's plaintext; cryptography's InvalidTag if it is not
    authentic."""
    explicit, sealed = rec.body[:8], rec.body[8:]
    aad = (seq.to_bytes(8, "big") + bytes([rec.type]) + rec.version.to_bytes(2, "big")
           + (len(sealed) - TAG).to_bytes(2, "big"))
    return aead.decrypt(keys.iv[:4] + explicit, sealed, aad)  # type: ignore[no-any-return]


def open_tls13(aead: Any, keys: Keys, rec: Record, seq: int) -> tuple[int, bytes]:
    """(inner content type, plaintext) of one TLS 1.3 record (labkit.ktls's opening)."""
    header = bytes([rec.type]) + rec.version.to_bytes(2, "big") + len(rec.body).to_bytes(2,
                                                                                         "big")
    return open_record(aead, keys.iv, seq, header, rec.body)


@dataclass
class Opened:
    """What decrypting a client's stream found."""

    protected: int = 0  # records that should have decrypted
    opened: int = 0  # ... and did
    failed: list[int] = field(default_factory=list)  # record numbers that did not
    app_records: int = 0
    app_bytes: int = 0
    marker_records: int = 0  # application records whose plaintext holds the marker
    alerts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"protected_records": self.protected, "decrypted_records": self.opened,
                "failed_records": len(self.failed), "first_failures": self.failed[:10],
                "application_records": self.app_records,
                "application_bytes": self.app_bytes, "marker_records": self.marker_records,
                "alerts": self.alerts}


def open_stream(records: list[Record], keys: Keys, marker: bytes = b"",
                handshake_keys: Keys | None = None) -> Opened:
    """Decrypt every protected record of a client's stream, in order."""
    from cryptography.exceptions import InvalidTag

    out = Opened()
    aead = _aead(keys)
    hs_aead = _aead(handshake_keys) if handshake_keys is not None else None
    protected = False
    seq = 0
    first13 = True
    for n, rec in enumerate(records):
        if keys.version == TLS_1_2:
            if rec.type == 20:
                protected = True
                continue
            if not protected:
                continue
            out.protected += 1
            try:
                kind, plain = rec.type, open_tls12(aead, keys, rec, seq)
            except InvalidTag:
                out.failed.append(n)
                seq += 1
                continue
            seq += 1
        else:
            if rec.type != 23:
                continue  # ClientHello, compatibility ChangeCipherSpec
            out.protected += 1
            hs = first13 and handshake_keys is not None
            first13 = False
            try:
                if hs:
                    kind, plain = open_tls13(hs_aead, handshake_keys, rec, 0)  # type: ignore[arg-type]
                else:
                    kind, plain = open_tls13(aead, keys, rec, seq)
            except InvalidTag:
                out.failed.append(n)
                continue
            finally:
                seq += 0 if hs else 1
        out.opened += 1
        if kind == 23:
            out.app_records += 1
            out.app_bytes += len(plain)
            out.marker_records += bool(marker) and marker in plain
        elif kind == 21:
            out.alerts += 1
    return out
