"""/proc/net/tls_stat of a network namespace: the kernel's kTLS counters (TlsTxSw,
TlsTxDevice, TlsDecryptError...), read by status, verifications and the counters panel.

Which counters exist depends on the kernel: TLS 1.3 KeyUpdate (rekey) support added
TlsTxRekeyOk, TlsRxRekeyOk, TlsTxRekeyError, TlsRxRekeyError and TlsRxRekeyReceived
(absent on 6.12, present on 7.2), so code that reads them asks `rekey()` rather than
assuming a zero.
"""

from __future__ import annotations

from labkit.base import netns

# Counters of kTLS KeyUpdate, in the kernel's order (net/tls/tls_proc.c).
REKEY_COUNTERS = ("TlsRxRekeyOk", "TlsRxRekeyError", "TlsTxRekeyOk", "TlsTxRekeyError",
                  "TlsRxRekeyReceived")


def parse(text: str) -> dict[str, int]:
    """Lines `TlsCurrTxSw   0` as a mapping."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def has_rekey(stats: dict[str, int]) -> bool:
    """Whether these counters come from a kernel that does kTLS KeyUpdate (all five
    rekey counters present; a kernel has either all or none)."""
    return all(name in stats for name in REKEY_COUNTERS)


def rekey(stats: dict[str, int]) -> dict[str, int] | None:
    """The rekey counters, or None where the kernel has no kTLS KeyUpdate (so a caller
    tells "never rekeyed" from "cannot rekey")."""
    return {name: stats[name] for name in REKEY_COUNTERS} if has_rekey(stats) else None


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
