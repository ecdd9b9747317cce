"""One accepted request, end to end: the parameters ACCEPT gave, the keys they name, the
TLS handshake, kTLS on the socket, DONE with the status and the peer's key serial, and
the fd closed. Used by the daemon (requests from in-kernel consumers) and by `labkit tls`
(sockets of its own), so both go through the same code.
"""

from __future__ import annotations

import base64
import errno
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit.features.handshake import engines, keyring, ktls
from labkit.features.handshake.messages import Accepted
from labkit.features.handshake.records import DeadlineSocket, HandshakeFailed
from labkit.features.handshake.uapi import AUTH_MODES, MSG_TYPE_SERVERHELLO
from labkit.ktls.sockopt import KtlsError


@dataclass
class NodeConfig:
    """What the daemon of one node knows besides what ACCEPT tells it (from the lab)."""

    lab: str
    node: str
    pool: int = 4  # handshakes in flight at once
    timeout: float = 10.0  # s, when a request carries no timeout
    cert: str = ""  # PEM files written 0600 by setup
    key: str = ""
    ca: str = ""
    keylog: str = ""  # NSS key log file, "" = none
    keyrings: list[int] = field(default_factory=list)  # where PSKs live (.nvme)
    psk_modes: list[str] = field(default_factory=lambda: ["psk_dhe_ke", "psk_ke"])
    events: str = ""
    status: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeConfig:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Outcome:
    status: int  # 0 or a positive errno: what DONE said
    reason: str
    result: engines.Result | None
    seconds: float


def psk_from_serial(serial: int) -> engines.Psk:
    try:
        info = keyring.describe(serial)
        key = keyring.read(serial)
    except OSError as exc:
        raise HandshakeFailed(errno.ENOKEY, f"cannot read PSK key {serial:#x} "
                                            f"({os.strerror(exc.errno or 0)})") from None
    return engines.Psk(serial, info.description, key, engines.psk_hash(info.description))


def psk_finder(cfg: NodeConfig, accepted_keyring: int = 0
               ) -> Callable[[str], engines.Psk | None]:
    rings = ([accepted_keyring] if accepted_keyring else []) + list(cfg.keyrings)

    def find(identity: str) -> engines.Psk | None:
        serial = keyring.find_psk(identity, rings)
        return psk_from_serial(serial) if serial is not None else None

    return find


def _memfd(name: str, data: bytes) -> tuple[int, str]:
    """A file that lives in memory only, for keys the TLS library wants as a path."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd, f"/proc/self/fd/{fd}"


def _as_pem(data: bytes, label: str) -> bytes:
    if data.lstrip().startswith(b"-----BEGIN"):
        return data
    if label == "CERTIFICATE":
        return ssl.DER_cert_to_PEM_cert(data).encode()
    body = base64.encodebytes(data).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN " + label.encode() + b"-----\n" + b"\n".join(lines) + \
        b"\n-----END " + label.encode() + b"-----\n"


def request_for(acc: Accepted, cfg: NodeConfig, keylog: bool,
                opened: list[int]) -> engines.Request:
    """The engine request for an ACCEPTed handshake; fds of key files go to `opened`."""
    server = acc.message_type == MSG_TYPE_SERVERHELLO
    auth = AUTH_MODES.get(acc.auth_mode, "")
    timeout = acc.timeout_ms / 1000 if acc.timeout_ms else cfg.timeout
    req = engines.Request(server=server, auth=auth, deadline=time.monotonic() + timeout,
                          peername=acc.peername, cert_file=cfg.cert, key_file=cfg.key,
                          ca_file=cfg.ca, psk_modes=tuple(cfg.psk_modes), keylog=keylog)
    if auth == "x509" and (acc.certificate or acc.privkey):
        for serial, label, attr in ((acc.certificate, "CERTIFICATE", "cert_file"),
                                    (acc.privkey, "PRIVATE KEY", "key_file")):
            if not serial:
                continue
            try:
                data = keyring.read(serial)
            except OSError as exc:
                raise HandshakeFailed(errno.ENOKEY, f"cannot read key {serial:#x} that the "
                                                    f"request names ({exc.strerror})") from None
            fd, path = _memfd(label.lower().replace(" ", "-"), _as_pem(data, label))
            opened.append(fd)
            setattr(req, attr, path)
    if auth == "psk":
        if server:
            req.find_psk = psk_finder(cfg, acc.keyring)
        else:
            req.psks = [psk_from_serial(s) for s in acc.peer_identities if s]
    return req


def handshake_on(fd: int, req: engines.Request) -> engines.Result:
    """The handshake and kTLS on a socket fd; HandshakeFailed with the errno to report."""
    dsock = DeadlineSocket(fd, req.deadline)
    try:
        result = engines.run(dsock, req)
    finally:
        dsock.release()
    try:
        ktls.install(fd, result.session)
    except KtlsError as exc:
        raise HandshakeFailed(exc.errno or errno.EIO, f"kTLS: {exc.strerror}") from None
    return result


def serve(acc: Accepted, cfg: NodeConfig, done: Callable[[int, int, list[int]], None]
          ) -> Outcome:
    """Run one ACCEPTed request and report DONE (through `done(fd, status, serials)`);
    the fd is closed whatever happens."""
    start = time.monotonic()
    opened: list[int] = []
    result: engines.Result | None = None
    try:
        try:
            req = request_for(acc, cfg, bool(cfg.keylog), opened)
            result = handshake_on(acc.sockfd, req)
            status, reason = 0, ""
        except HandshakeFailed as exc:
            status, reason = exc.errno, exc.reason
        except Exception as exc:  # a daemon bug must still end in DONE, never a hang
            status, reason = errno.EIO, f"internal error: {type(exc).__name__}"
        try:
            done(acc.sockfd, status, result.remote_auth if result and not status else [])
        except OSError as exc:
            reason = (reason + "; " if reason else "") + \
                f"DONE refused: {os.strerror(exc.errno or 0)}"
            if not status:
                status = exc.errno or errno.EIO
    finally:
        for fd in opened:
            os.close(fd)
        os.close(acc.sockfd)
    return Outcome(status, reason, result if not status else None,
                   time.monotonic() - start)
