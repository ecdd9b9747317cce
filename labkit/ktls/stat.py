"""/proc/net/tls_stat of a network namespace: the kernel's kTLS counters (TlsTxSw,
TlsTxDevice, TlsDecryptError...), read by status, verifications and the counters panel."""

from __future__ import annotations

from labkit.base import netns


def parse(text: str) -> dict[str, int]:
    """Lines `TlsCurrTxSw   0` as a mapping."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read(ns: str | None = None) -> dict[str, int] | None:
    """The namespace's kTLS counters (this thread's namespace if None); None where the
    kernel has no tls module loaded. /proc/net follows the reading thread's namespace only
    through thread-self."""
    def here() -> dict[str, int] | None:
        try:
            with open("/proc/thread-self/net/tls_stat") as fh:
                return parse(fh.read())
        except FileNotFoundError:
            return None

    if ns is None:
        return here()
    with netns.entered(ns):
        return here()
