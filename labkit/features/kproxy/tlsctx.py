"""TLS contexts of a TLS pair: the proxy terminates TLS on both legs (the server the client
sees, a client of the upstream), the measuring endpoints are a client and a server.

TLS 1.3 only (the kTLS path derives its keys the TLS 1.3 way), no session tickets (a
ticket after the handshake would be a non-data record on a kTLS socket), certificates
from the lab's CA (labkit.features.kproxy.certs). Standard library only.
"""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str, keylog: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.num_tickets = 0
    if keylog:
        ctx.keylog_filename = keylog
    return ctx


def client_context(ca: str, keylog: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(ca)
    if keylog:
        ctx.keylog_filename = keylog
    return ctx
