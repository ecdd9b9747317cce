"""`checks: [{type: kproxy_relay}]`: every pair of the lab relays bytes intact, through its
proxy, by the mechanism its mode names.

What a user would check by hand: the same bytes arrive each way (sha256 of all sent vs all
received), the proxy accepted the connections (the bytes did not go around it), a sockmap
pair joined them in the kernel (no user-space fallback), a TLS pair's proxy decrypted and
re-encrypted them where its mode says (kTLS in the kernel for splice, OpenSSL otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.errors import LabkitError
from labkit.features.kproxy.config import KproxyConfig, Pair
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

SIZE = 1 << 20  # bytes each way per pair: enough for many records and segments, quick
CONNECTIONS = 2  # measure.integrity opens one connection each way


def relay(lab: Lab, cfg: KproxyConfig, name: str = "every kproxy pair relays bytes intact",
          size: int = SIZE) -> Verdict:
    rows: dict[str, Any] = {}
    wrong: list[str] = []
    for pair in cfg.pairs.values():
        try:
            row, problems = _pair(lab, pair, size)
        except LabkitError as exc:
            row, problems = {"error": exc.message}, [f"{pair.name}: {exc.message}"]
        rows[pair.name] = row
        wrong += problems
    if wrong:
        return Verdict(name, "fail", "; ".join(wrong), rows)
    return Verdict(name, "pass", f"{len(rows)} pairs ({', '.join(rows)}) each relayed "
                                 f"{size:,} bytes each way intact, by their own mechanism",
                   rows)


def _pair(lab: Lab, pair: Pair, size: int) -> tuple[dict[str, Any], list[str]]:
    from labkit.features.kproxy import measure

    path = measure.path_of(lab, pair.name, None)
    before = measure.proxy_counters(lab, pair)
    got = measure.integrity(lab, path, size)
    after = measure.proxy_counters(lab, pair)
    row: dict[str, Any] = {"mode": pair.mode, "tls": pair.tls, "intact": got.get("intact"),
                           "sha256_up": got.get("sha256_up")}
    problems = []
    if not got.get("intact"):
        problems.append(f"{pair.name}: the bytes did not arrive intact "
                        f"({got.get('error') or 'their sha256 differ'})")
    if pair.mode == "direct":
        return row, problems
    if before is None or after is None:
        return row, [*problems, f"{pair.name}: its proxy does not answer"]
    accepted = after["accepted"] - before["accepted"]
    row["accepted"] = accepted
    if accepted < CONNECTIONS:
        problems.append(f"{pair.name}: the proxy accepted {accepted} of the {CONNECTIONS} "
                        "connections sent to it")
    if pair.mode == "sockmap":
        fallbacks = after["user_space_fallbacks"] - before["user_space_fallbacks"]
        row["user_space_fallbacks"] = fallbacks
        if fallbacks:
            problems.append(f"{pair.name}: {fallbacks} connections were relayed in user "
                            "space, not joined in the kernel's sockmap")
    if pair.tls:
        crypto = after.get("crypto") or {}
        done = crypto.get("decrypted_bytes", 0) - (before.get("crypto") or {}).get(
            "decrypted_bytes", 0)
        where = str(crypto.get("where", ""))
        want = "kernel" if pair.mode == "splice" else "user space"
        row.update(crypto_where=where, proxy_decrypted_bytes=done)
        if done < 2 * size:
            problems.append(f"{pair.name}: the proxy decrypted {done:,} bytes, not the "
                            f"{2 * size:,} it relayed")
        if not where.startswith(want):
            problems.append(f"{pair.name}: its crypto ran in {where or 'no known place'}, "
                            f"not in {want}")
    return row, problems
