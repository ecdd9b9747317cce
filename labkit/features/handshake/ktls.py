"""kTLS on a socket whose TLS 1.3 handshake the daemon finished: the Session an engine
hands over (suite, each direction's traffic secret and next record sequence number),
installed through labkit.ktls (TCP_ULP "tls", then TLS_TX and TLS_RX). After this, plain
send/recv on the socket carry application data; other record types travel in cmsgs
(labkit.ktls.sockopt.send_record / recv_record). Key bytes go nowhere but setsockopt.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from labkit.ktls.ciphers import Suite
from labkit.ktls.sockopt import install as install_infos
from labkit.ktls.sockopt import tls13_crypto_info


@dataclass(frozen=True)
class Session:
    """What a finished TLS 1.3 handshake leaves for the kernel (secrets redacted in repr)."""

    suite: Suite
    tx_secret: bytes
    rx_secret: bytes
    tx_seq: int = 0  # records already sent under tx_secret
    rx_seq: int = 0  # records already received under rx_secret

    def __repr__(self) -> str:
        return f"Session({self.suite.name}, tx_seq={self.tx_seq}, rx_seq={self.rx_seq})"


def install(sock: socket.socket | int, session: Session) -> None:
    """TCP_ULP "tls", then TX and RX state; labkit.ktls.sockopt.KtlsError names the step
    that failed."""
    install_infos(sock, tls13_crypto_info(session.suite, session.tx_secret, session.tx_seq),
                  tls13_crypto_info(session.suite, session.rx_secret, session.rx_seq))
