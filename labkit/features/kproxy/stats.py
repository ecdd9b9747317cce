"""A proxy's counters: what `labkit kproxy status` shows and the measurements read.

Updated by the proxy's threads under one lock; read as a JSON snapshot over the control
socket. Standard library only.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any


@dataclass
class Direction:
    """One direction of the pair (to the server = upstream, to the client = downstream)."""

    bytes: int = 0  # forwarded (passed the policy)
    messages: int = 0  # policy pairs: messages forwarded
    dropped_messages: int = 0  # policy: dropped by the rule
    dropped_bytes: int = 0
    incomplete_bytes: int = 0  # an unfinished message when the stream ended (dropped)


@dataclass
class Crypto:
    """TLS pairs: what the proxy (its process, or the kernel for it) decrypted and
    encrypted. Records are counted from the TCP byte counts of each leg."""

    decrypted_bytes: int = 0
    encrypted_bytes: int = 0
    records_decrypted: int = 0
    records_encrypted: int = 0
    where: str = ""  # "user space (OpenSSL)" | "kernel (kTLS)"


@dataclass
class Stats:
    accepted: int = 0
    active: int = 0
    closed: int = 0
    upstream_failures: int = 0
    half_closes: int = 0  # FINs forwarded (either way)
    resets: int = 0  # RSTs forwarded (either way)
    drain_timeouts: int = 0  # closes forwarded before in-flight data had drained
    stream_errors: int = 0  # policy: oversized message, connection reset
    tls_failures: int = 0  # handshakes that failed (the connection is reset)
    user_space_fallbacks: int = 0  # sockmap: connections the kernel would not join
    upstream: Direction = field(default_factory=Direction)
    downstream: Direction = field(default_factory=Direction)
    crypto: Crypto | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def moved(self, upstream: bool, **counts: int) -> None:
        with self.lock:
            d = self.upstream if upstream else self.downstream
            for key, value in counts.items():
                setattr(d, key, getattr(d, key) + value)

    def crypt(self, **counts: int) -> None:
        with self.lock:
            assert self.crypto is not None
            for key, value in counts.items():
                setattr(self.crypto, key, getattr(self.crypto, key) + value)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {}
            for f in fields(self):
                value = getattr(self, f.name)
                if f.name != "lock":
                    out[f.name] = asdict(value) if is_dataclass(value) else value
        return out
