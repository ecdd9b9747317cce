"""TLS 1.3 handshakes in user space, then the record layer in the kernel (kTLS), for a
TLS pair's splice mode: labkit.ktls.handshake does the work (memory BIOs fed one record at
a time, the key log in a pipe, keys to setsockopt(SOL_TLS, TLS_TX/TLS_RX)); this module
holds kproxy's rules: TLS 1.3 only, both directions in the kernel, one error type.

Secrets never leave labkit.ktls except into setsockopt; nothing here logs them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl

from labkit.ktls.handshake import HandshakeError, install_ktls, run
from labkit.ktls.records import RecordSocket
from labkit.ktls.sockopt import KtlsError
from labkit.ktls.uapi import TLS_1_3_VERSION


class TlsError(Exception):
    """The handshake failed or produced something kTLS cannot take."""


def handshake_to_ktls(sock: socket.socket, ctx: ssl.SSLContext, keylog: str | None = None,
                      *, server_side: bool, server_hostname: str | None = None) -> str:
    """Run the TLS 1.3 handshake on a connected TCP socket, then hand the record layer to
    the kernel (TX and RX). The key log goes to a pipe, never to disk; a `keylog` file the
    caller made is removed here. Returns the cipher suite's name."""
    try:
        hs = run(ctx, RecordSocket(sock), server_side=server_side,
                 server_hostname=server_hostname)
        if hs.version != TLS_1_3_VERSION:
            raise TlsError(f"negotiated {hs.version_name}; labkit's kTLS path takes TLS 1.3")
        install_ktls(sock, hs)
    except KtlsError as exc:
        raise TlsError(f"the kernel refused kTLS: {exc.strerror or exc}") from None
    except HandshakeError as exc:
        raise TlsError(exc.strerror or str(exc)) from None
    except OSError as exc:  # the record reader: the peer closed, reset or sent no TLS
        raise TlsError(exc.strerror or str(exc)) from None
    finally:
        if keylog:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(keylog)
    return hs.cipher
