"""The `ktls_rekey` check kind: a kTLS KeyUpdate counter of /proc/net/tls_stat in a node
grew since the exercise started, explained in the learner's terms.

Whether the node's kernel can rekey at all is the kernel's own answer, not its version:
a kernel with TLS 1.3 KeyUpdate has the five rekey counters in tls_stat, one without has
none (labkit.ktls.stat.rekey, the same fact `labkit doctor` probes as "kTLS KeyUpdate").
Without them the check could not check (exit 2), says which kernel lacks what, and how to
rebuild the lab on one that has it; it never says "not yet" for what the learner cannot do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.exercises.checks import CannotCheck, node_cmd
from labkit.exercises.result import CheckResult, judged, unknown
from labkit.ktls import stat

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

KERNEL_WITH_REKEY = "debian-7.2"

# what a counter that did not grow means, and what moves it
MEANING = {
    "TlsTxRekeyOk": ("{node}'s kernel has installed no new transmit key",
                     "a KeyUpdate sent from {node} over kTLS, then the next key given to "
                     "TLS_TX (a peer sends its own when the KeyUpdate it got asks for one: "
                     "update_requested)"),
    "TlsRxRekeyOk": ("the receiver in {node} has not installed a new key",
                     "the next key given to TLS_RX once the peer's KeyUpdate is read (until "
                     "then the kernel holds the records: EKEYEXPIRED)"),
    "TlsRxRekeyReceived": ("{node}'s kernel has received no KeyUpdate record",
                           "a KeyUpdate sent to {node} over a kTLS socket"),
    "TlsTxRekeyError": ("{node}'s kernel refused no new transmit key",
                        "a TLS_TX rekey the kernel refused (another cipher or version)"),
    "TlsRxRekeyError": ("{node}'s kernel refused no new receive key",
                        "a TLS_RX rekey the kernel refused"),
}


NEEDS = f"kTLS KeyUpdate ({KERNEL_WITH_REKEY})"


class KernelLacksRekey(CannotCheck):
    """The node's kernel has no kTLS KeyUpdate: no learner's act can make the check pass."""


def read_rekey(lab: Lab, node: str) -> dict[str, int]:
    """The node's rekey counters; CannotCheck saying why there are none (no kTLS yet, or a
    kernel without KeyUpdate, with the way to one that has it)."""
    res = node_cmd(lab, node, ["cat", "/proc/net/tls_stat"], ok=False)
    if res.returncode != 0:
        raise CannotCheck(f"{node} has no /proc/net/tls_stat: its kernel has not loaded kTLS "
                          "(the tls module) yet; no kTLS socket was ever made there")
    counters = stat.rekey(stat.parse(res.stdout))
    if counters is None:
        release = node_cmd(lab, node, ["uname", "-r"], ok=False).stdout.strip() or "?"
        where = getattr(lab.topo, "path", "") or "TOPOLOGY"
        raise KernelLacksRekey(
            f"needs {NEEDS}: {node}'s kernel ({release}) has "
            f"no TLS 1.3 KeyUpdate in kTLS (its /proc/net/tls_stat has no "
            f"{', '.join(stat.REKEY_COUNTERS)}; it refuses a second TLS_TX with EBUSY), so "
            f"no connection can rekey there. Bring the lab up on a kernel that has it: "
            f"`labkit down {lab.name}` then `labkit up {where} --vm {KERNEL_WITH_REKEY}` "
            f"(`labkit doctor --all-kernels` lists the kernels with kTLS KeyUpdate)")
    return counters


def baseline(lab: Lab, p: dict[str, Any]) -> int:
    return read_rekey(lab, p["node"])[p["counter"]]


def check(lab: Lab, name: str, p: dict[str, Any], base: Any) -> CheckResult:
    node, counter = p["node"], p["counter"]
    try:
        counters = read_rekey(lab, node)
    except KernelLacksRekey as exc:
        return unknown(name, str(exc), needs=NEEDS)
    now = counters[counter]
    if base is None:
        return unknown(name, f"{counter} in {node} has no value from the exercise's start "
                             f"(now {now}); start the exercise first")
    grew = now - int(base)
    others = ", ".join(f"{k} {v}" for k, v in counters.items() if k != counter)
    saw = f"{counter} in {node} is {now}, {grew:+d} since the exercise started ({others})"
    what, how = (s.format(node=node) for s in MEANING[counter])
    if "at_most" in p and "grew_by" not in p:
        return judged(name, grew <= p["at_most"], saw,
                      f"{counter} in {node} growing by at most {p['at_most']} (it grew by "
                      f"{grew})", {"start": base, "now": now, "counters": counters})
    need = p.get("grew_by", 1)
    return judged(name, grew >= need, saw,
                  f"{need - grew} more {counter} in {node}: {what}; that takes {how}",
                  {"start": base, "now": now, "counters": counters})
