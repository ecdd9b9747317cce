"""Two TLS 1.3 engines, one interface: a request in, a kTLS-ready session out.

- OpenSSL through Python's ssl for x509 and unauth: labkit.ktls.handshake over the
  daemon's deadline socket (memory BIOs fed one record at a time, so nothing after the
  handshake is read; the key log in a pipe that never touches a disk). The server sends
  no session tickets, so both directions start at record 0.
- tlslite-ng for external PSKs (Python 3.11's ssl cannot do them): the server's PSK is
  looked up in the kernel keyring by the identity the ClientHello offers, before the
  library sees it; the identity the server picked is read from the ServerHello.

Failures become HandshakeFailed with the errno DONE reports: ETIMEDOUT (deadline),
ECONNRESET (peer closed), EPROTO (not TLS, or a malformed message), EACCES
(authentication: bad certificate, unknown PSK identity, failed binder, an alert from the
peer), ENOKEY (the key a request names cannot be read). Nothing here logs a secret.
"""

from __future__ import annotations

import contextlib
import errno
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit.features.handshake import hello as hellos
from labkit.features.handshake.ktls import Session
from labkit.features.handshake.records import DeadlineSocket, HandshakeFailed, RecordSource
from labkit.ktls import handshake as tls_handshake
from labkit.ktls import keylog as nss
from labkit.ktls.ciphers import BY_CODE, BY_NAME, Suite
from labkit.ktls.uapi import CT_ALERT, CT_HANDSHAKE, TLS_1_3_VERSION

ALERT_HANDSHAKE_FAILURE = 40
ALERT_UNKNOWN_PSK_IDENTITY = 115


@dataclass
class Psk:
    """One external PSK as the keyring holds it (key bytes redacted in repr)."""

    serial: int
    identity: str
    key: bytes = field(repr=False)
    hash: str = "sha256"


def psk_hash(identity: str, default: str = "sha256") -> str:
    """The PSK's hash from an NVMe TLS identity "NVMe<v><R|G><hh> ..." (TP 8018: 01 =
    SHA-256, 02 = SHA-384); other identities use the default."""
    if identity.startswith("NVMe") and len(identity) >= 8 and identity[4].isdigit():
        return {"01": "sha256", "02": "sha384"}.get(identity[6:8], default)
    return default


@dataclass
class Request:
    """What one handshake needs, whichever way it was asked for (ACCEPT or `labkit tls`)."""

    server: bool
    auth: str  # unauth | psk | x509
    deadline: float  # time.monotonic() by which it must be done
    peername: str = ""  # client: the name the server's certificate must carry
    cert_file: str = ""  # PEM: our certificate (and chain)
    key_file: str = ""  # PEM: its private key
    ca_file: str = ""  # PEM: trust anchors for the peer's certificate ("" = no check)
    psks: list[Psk] = field(default_factory=list)  # client: offered, in order
    find_psk: Callable[[str], Psk | None] | None = None  # server: identity -> key
    psk_modes: tuple[str, ...] = ("psk_dhe_ke", "psk_ke")
    keylog: bool = False  # return NSS key log lines


@dataclass
class Result:
    session: Session
    version: str
    cipher: str
    peer: str  # who the peer proved to be: a PSK identity, a certificate subject, or ""
    remote_auth: list[int] = field(default_factory=list)  # key serials for DONE
    peer_cert_der: bytes = b""
    keylog: list[str] = field(default_factory=list, repr=False)
    records_in: int = 0
    records_out: int = 0


def alert(dsock: DeadlineSocket, description: int) -> None:
    """A plaintext fatal alert, best effort (before any key was agreed)."""
    with contextlib.suppress(HandshakeFailed, OSError):
        dsock.sendall(bytes([CT_ALERT, 3, 3, 0, 2, 2, description]))


# ---------------------------------------------------------------------------------------
# OpenSSL (x509, unauth)

def _context(req: Request) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if req.server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if req.server:
        ctx.num_tickets = 0  # no NewSessionTicket: the first kTLS TX record is number 0
    try:
        if req.cert_file:
            ctx.load_cert_chain(req.cert_file, req.key_file or None)
        if req.ca_file:
            ctx.load_verify_locations(cafile=req.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise HandshakeFailed(errno.ENOKEY, f"cannot load the certificate, key or CA "
                                            f"({type(exc).__name__})") from None
    if req.server:
        ctx.verify_mode = ssl.CERT_OPTIONAL if req.ca_file else ssl.CERT_NONE
    else:
        ctx.check_hostname = bool(req.ca_file and req.peername)
        ctx.verify_mode = ssl.CERT_REQUIRED if req.ca_file else ssl.CERT_NONE
    return ctx


def openssl_handshake(dsock: DeadlineSocket, req: Request) -> Result:
    """labkit.ktls.handshake over the daemon's deadline socket; its errors as DONE's."""
    if req.server and not req.cert_file:
        raise HandshakeFailed(errno.ENOKEY, "no server certificate is configured")
    try:
        hs = tls_handshake.run(_context(req), dsock, server_side=req.server,
                               server_hostname=None if req.server else (req.peername or None))
        if hs.version != TLS_1_3_VERSION or hs.cipher not in BY_NAME:
            raise HandshakeFailed(errno.EPROTONOSUPPORT, f"negotiated {hs.version_name} "
                                                         f"{hs.cipher}, which kTLS is not set "
                                                         "up for here")
        tx, rx = hs.traffic_secrets()
    except tls_handshake.HandshakeError as exc:
        raise HandshakeFailed(exc.errno or errno.EIO, exc.strerror or str(exc)) from None
    suite = BY_NAME[hs.cipher]
    peer = _subject(hs.peer_cert) if hs.peer_cert_der and req.ca_file else ""
    session = Session(suite, tx, rx, hs.tx_seq, hs.rx_seq)
    lines = [ln for ln in hs.keylog.splitlines() if ln and not ln.startswith("#")]
    return Result(session, hs.version_name, suite.name, peer, [], hs.peer_cert_der,
                  lines if req.keylog else [], hs.records_in, hs.flights_out)


def _subject(cert: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ",".join(parts)


# ---------------------------------------------------------------------------------------
# tlslite-ng (external PSK)

_TLSLITE: dict[str, Any] = {}
_TLSLITE_LOCK = threading.Lock()


def load_tlslite() -> dict[str, Any]:
    """Import tlslite-ng once (seconds under emulation: the daemon calls this at start)."""
    with _TLSLITE_LOCK:
        if not _TLSLITE:
            from tlslite import errors as tle
            from tlslite.api import HandshakeSettings, TLSConnection

            _TLSLITE.update(settings=HandshakeSettings, connection=TLSConnection, errors=tle)
    return _TLSLITE


class _Wire(RecordSource):
    """RecordSource that remembers the first handshake record each way (the hellos), and
    lets the library 'close' it without closing the kernel's socket."""

    def __init__(self, dsock: DeadlineSocket, replay: bytes = b"") -> None:
        super().__init__(dsock, replay)
        self.first_in = replay
        self.first_out = b""
        self.records_in = 1 if replay else 0
        self.records_out = 0

    def recv(self, size: int) -> bytes:
        fresh = not self._buf
        data = super().recv(size)
        if fresh:
            self.records_in += 1
            if not self.first_in and data[:1] == bytes([CT_HANDSHAKE]):
                self.first_in = data + self._buf
        return data

    def sendall(self, data: bytes) -> None:
        if not self.first_out and data[:1] == bytes([CT_HANDSHAKE]):
            self.first_out = bytes(data)
        self.records_out += 1
        super().sendall(data)

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def close(self) -> None:
        pass  # the fd is the daemon's to close, after DONE

    def shutdown(self, how: int) -> None:
        pass


def read_client_hello(dsock: DeadlineSocket) -> tuple[bytes, hellos.Hello]:
    """The ClientHello's records (to replay to the library) and its parsed fields."""
    raw = b""
    while True:
        raw += dsock.read_record()
        if raw[0] != CT_HANDSHAKE:
            raise HandshakeFailed(errno.EPROTO, f"the first record is of type {raw[0]}, not "
                                                "a handshake")
        payload = hellos.handshake_payload(raw)
        need = hellos.message_length(payload)
        if need is not None and len(payload) >= need:
            try:
                return raw, hellos.parse_hello(payload[:need])
            except ValueError as exc:
                raise HandshakeFailed(errno.EPROTO, f"malformed ClientHello: {exc}") from None
        if len(raw) > 1 << 17:
            raise HandshakeFailed(errno.EPROTO, "the ClientHello does not end")


def _tlslite_settings(req: Request, psks: list[Psk]) -> Any:
    lib = load_tlslite()
    settings = lib["settings"]()
    settings.minVersion = settings.maxVersion = (3, 4)
    suites = {"sha256": ["aes128gcm"], "sha384": ["aes256gcm"]}
    settings.cipherNames = suites.get(psks[0].hash, ["aes128gcm"])
    settings.pskConfigs = [(p.identity.encode(), bytearray(p.key), p.hash) for p in psks]
    settings.psk_modes = list(req.psk_modes)
    settings.keyShares = ["x25519"]  # one key share: each costs a pure-Python scalar mult
    settings.eccCurves = ["x25519", "secp256r1"]
    settings.ticket_count = 0
    settings.use_heartbeat_extension = False
    return settings


def _tlslite_errno(exc: BaseException) -> tuple[int, str]:
    tle = load_tlslite()["errors"]
    if isinstance(exc, tle.TLSAbruptCloseError):
        return errno.ECONNRESET, "the peer closed the connection during the handshake"
    if isinstance(exc, tle.TLSAlert):
        text = str(exc)  # alert name and tlslite's reason: never key material
        side = "sent" if isinstance(exc, tle.TLSLocalAlert) else "received"
        if isinstance(exc, tle.TLSLocalAlert) and "binder" not in text.lower() and \
                exc.description in _MALFORMED_ALERTS:
            return errno.EPROTO, f"alert {text} {side}: the peer's messages were malformed"
        return errno.EACCES, f"alert {text} {side}"
    if isinstance(exc, (tle.TLSDecodeError, tle.TLSUnexpectedMessage,
                        tle.TLSIllegalParameterException)):
        return errno.EPROTO, type(exc).__name__
    if isinstance(exc, (tle.TLSUnknownPSKIdentity, tle.TLSHandshakeFailure,
                        tle.TLSBadRecordMAC, tle.TLSDecryptionFailed,
                        tle.TLSAuthenticationError, tle.TLSInsufficientSecurity)):
        return errno.EACCES, type(exc).__name__
    return errno.EIO, type(exc).__name__


# alerts that say "your bytes make no sense": unexpected_message, record_overflow,
# decode_error, illegal_parameter (unless about a PSK binder), protocol_version
_MALFORMED_ALERTS = (10, 22, 47, 50, 70)


def psk_handshake(dsock: DeadlineSocket, req: Request) -> Result:
    lib = load_tlslite()
    if req.server:
        replay, client_hello = read_client_hello(dsock)
        if client_hello.kind != hellos.HS_CLIENT_HELLO:
            raise HandshakeFailed(errno.EPROTO, "the first message is not a ClientHello")
        offered = [i.decode(errors="replace") for i in client_hello.psk_identities]
        found = [p for p in (req.find_psk(i) if req.find_psk else None for i in offered) if p]
        if not found:
            alert(dsock, ALERT_UNKNOWN_PSK_IDENTITY)
            raise HandshakeFailed(errno.EACCES, f"none of the {len(offered)} PSK identities "
                                                "the client offered is in the keyring"
                                                if offered else "the client offered no PSK")
        psks = [found[0]]  # the library takes the first offered identity it knows
        wire = _Wire(dsock, replay)
    else:
        if not req.psks:
            raise HandshakeFailed(errno.ENOKEY, "the request names no PSK")
        psks = [p for p in req.psks if p.hash == req.psks[0].hash]
        wire = _Wire(dsock)
    settings = _tlslite_settings(req, psks)
    conn = lib["connection"](wire)
    conn.closeSocket = False
    captured: list[tuple[bytes, bytes]] = []
    layer = conn._recordLayer  # noqa: SLF001 (tlslite-ng 0.8: no public hook for these)
    original = layer.calcTLS1_3PendingState

    def capture(suite: int, client_secret: Any, server_secret: Any, impl: Any) -> Any:
        captured.append((bytes(client_secret), bytes(server_secret)))
        return original(suite, client_secret, server_secret, impl)

    layer.calcTLS1_3PendingState = capture
    try:
        if req.server:
            conn.handshakeServer(settings=settings)
        else:
            conn.handshakeClientCert(settings=settings)
    except HandshakeFailed:
        raise
    except Exception as exc:  # tlslite raises its own hierarchy and a few plain ones
        code, why = _tlslite_errno(exc)
        raise HandshakeFailed(code, f"TLS handshake failed: {why}") from None
    suite = BY_CODE.get(int(conn.session.cipherSuite))
    if suite is None or tuple(conn.version) != (3, 4):
        raise HandshakeFailed(errno.EPROTONOSUPPORT, "the negotiated suite is not TLS 1.3 "
                                                     "AES-GCM/ChaCha20")
    chosen = psks[0]
    if not req.server:
        try:
            index = hellos.first_hello(wire.first_in).psk_selected or 0
        except ValueError:
            index = 0
        chosen = psks[index] if index < len(psks) else psks[0]
    tx_state, rx_state = layer._writeState, layer._readState  # noqa: SLF001
    cl_app, sr_app = bytes(conn.session.cl_app_secret), bytes(conn.session.sr_app_secret)
    tx, rx = (sr_app, cl_app) if req.server else (cl_app, sr_app)
    session = Session(suite, tx, rx, int(tx_state.seqnum), int(rx_state.seqnum))
    lines: list[str] = []
    if req.keylog:
        rnd = hellos.first_hello(wire.first_in if req.server else wire.first_out).random
        if captured:
            lines += [nss.line(nss.CLIENT_HS, rnd, captured[0][0]),
                      nss.line(nss.SERVER_HS, rnd, captured[0][1])]
        lines += [nss.line(nss.CLIENT_APP, rnd, cl_app), nss.line(nss.SERVER_APP, rnd, sr_app)]
    if not wire.drained:
        raise HandshakeFailed(errno.EPROTO, "the peer sent data inside its last handshake "
                                            "record")
    return Result(session, "TLSv1.3", suite.name, chosen.identity, [chosen.serial], b"",
                  lines, wire.records_in, wire.records_out)


def run(dsock: DeadlineSocket, req: Request) -> Result:
    """One handshake with the engine its auth mode needs."""
    if req.auth == "psk":
        return psk_handshake(dsock, req)
    if req.auth in ("x509", "unauth"):
        return openssl_handshake(dsock, req)
    raise HandshakeFailed(errno.EOPNOTSUPP, f"auth mode {req.auth!r} is not supported")


__all__ = ["Psk", "Request", "Result", "Suite", "run", "psk_hash", "load_tlslite"]


def warm_up(cert_file: str = "", key_file: str = "", ca_file: str = "") -> float:
    """One throwaway handshake per engine over a socketpair, so the first real request
    does not pay for the libraries' lazy imports and first-use setup (seconds under
    emulation, against a kernel timeout of 10 s). Returns the seconds it took."""
    import secrets
    import socket
    import time

    start = time.monotonic()
    psk = Psk(0, "labkit warm-up", secrets.token_bytes(32))
    pairs: list[tuple[Request, Request]] = [
        (Request(False, "psk", 0, psks=[psk]),
         Request(True, "psk", 0, find_psk=lambda identity: psk))]
    if cert_file and key_file:
        pairs.append((Request(False, "unauth", 0),
                      Request(True, "x509", 0, cert_file=cert_file, key_file=key_file,
                              ca_file=ca_file)))
    for client, server in pairs:
        a, b = socket.socketpair()
        client.deadline = server.deadline = time.monotonic() + 120
        errors: list[BaseException] = []
        worker = threading.Thread(target=_warm_one, args=(b, server, errors))
        worker.start()
        _warm_one(a, client, errors)
        worker.join()
        a.close()
        b.close()
        if errors:
            raise RuntimeError(f"warm-up {client.auth} handshake failed: {errors[0]}")
    return time.monotonic() - start


def _warm_one(sock: Any, req: Request, errors: list[BaseException]) -> None:
    dsock = DeadlineSocket(sock.fileno(), req.deadline)
    try:
        run(dsock, req)
    except BaseException as exc:  # reported by warm_up: a warm-up must not kill startup
        errors.append(exc)
    finally:
        dsock.release()
