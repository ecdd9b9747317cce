"""Operations the host (CLI, widgets, notebooks) runs next to the lab's kernel: thin
@remote wrappers taking and returning JSON values only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.errors import UsageError
from labkit.features.offload import impair, transfer
from labkit.features.offload import nic as nicmod
from labkit.features.offload.config import (
    TLS13_NOTE,
    VERSIONS,
    OffloadConfig,
    impairment_problems,
    parse_ms,
    parse_percent,
    parse_size,
)
from labkit.hosts.rpc import remote

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def _cfg(lab: Lab) -> OffloadConfig:
    return lab.feature_config("offload")  # type: ignore[no-any-return]


def _nic(lab: Lab, label: str | None) -> tuple[OffloadConfig, Any]:
    cfg = _cfg(lab)
    key = label or cfg.traffic.nic
    if key not in cfg.nics:
        raise UsageError(f"lab '{lab.name}' has no offload NIC '{key}'.",
                         hint=f"Its NICs: {', '.join(cfg.nics)}.")
    return cfg, cfg.nics[key]


@remote
def stats(lab: Lab) -> dict[str, Any]:
    from labkit.features.offload.status import status

    return status(lab, _cfg(lab))


@remote
def send(lab: Lab, nic: str | None = None, size: str | int | None = None,
         receiver: str | None = None, timeout: float | None = None,
         version: str | None = None) -> dict[str, Any]:
    """One transfer (`labkit offload send`); the key log is never part of the answer.
    version overrides the topology's TLS version for this session ("1.3": the kernel
    keeps kTLS in software, and the answer's notes say why)."""
    cfg = _cfg(lab)
    nbytes = None
    if size is not None:
        nbytes = parse_size(size)
        if nbytes is None or not 1 <= nbytes <= 1 << 30:
            raise UsageError(f"size {size!r} is not a size from 1 byte to 1 GiB.",
                             hint="Write it as e.g. 4MiB or 512KiB.")
    if receiver is not None and receiver not in ("s_server", "python", "ktls"):
        raise UsageError(f"receiver '{receiver}' is not one labkit runs.",
                         hint="Use s_server, python or ktls.")
    if version is not None and version not in VERSIONS:
        raise UsageError(f"TLS version '{version}' is not one labkit drives.",
                         hint='Use "1.2" (offloaded) or "1.3" (kTLS stays in software).')
    p = transfer.plan(lab, cfg, nic, nbytes, receiver, timeout, version=version)
    out = transfer.run(lab, cfg, p)
    out.pop("keylog", None)
    out["notes"] = [TLS13_NOTE] if p.version == "1.3" else []
    return out


@remote
def set_knobs(lab: Lab, nic: str | None, values: dict[str, str]) -> dict[str, Any]:
    """Knobs (strategy, refuse_add, corrupt_every, max_ctx) and `offload` (on/off) of a
    NIC while the lab runs; the knobs as the NIC reports them afterwards."""
    _, n = _nic(lab, nic)
    ns = lab.node(n.node).ns
    for knob, value in values.items():
        if knob == "offload":
            if value not in ("on", "off", "1", "0", "true", "false"):
                raise UsageError(f"offload={value}: say on or off.")
            nicmod.set_offload(ns, n.iface, value in ("on", "1", "true"))
        else:
            nicmod.write_knob(ns, n.iface, knob, value)
    return {"knobs": nicmod.read_knobs(ns, n.iface),
            "tls_hw_tx_offload": nicmod.offload_on(ns, n.iface)}


@remote
def set_impairment(lab: Lab, nic: str | None, loss: str | float | None = None,
                   delay: str | float | None = None, reorder: str | float | None = None,
                   at: str | None = None, per_segment: bool | None = None) -> dict[str, Any]:
    """Replace a NIC's impairment while the lab runs (unset values: none); the netem
    qdiscs afterwards. Checked by the same rules as the topology's."""
    from labkit.features.offload.config import Impairment

    _, n = _nic(lab, nic)
    imp = Impairment(at=at or n.impair.at,
                     per_segment=n.impair.per_segment if per_segment is None else per_segment)
    for name, raw, reader, hi in (("loss", loss, parse_percent, 100.0),
                                  ("reorder", reorder, parse_percent, 100.0),
                                  ("delay", delay, parse_ms, 10_000.0)):
        if raw is None:
            continue
        value = reader(raw)
        if value is None or not 0 <= value <= hi:
            raise UsageError(f"{name} {raw!r} is not a value from 0 to {hi:g}.",
                             hint="e.g. --loss 1% --delay 5ms --reorder 25%")
        setattr(imp, "delay_ms" if name == "delay" else name, value)
    if imp.at not in ("wire", "nic"):
        raise UsageError(f"at={imp.at}: use wire or nic.")
    problems = impairment_problems(imp, f"the impairment of {n.label}")
    if problems:
        _, message, hint = problems[0]
        raise UsageError(message, hint=hint)
    assert n.peer is not None
    ns, peer_ns = lab.node(n.node).ns, lab.node(n.peer.node).ns
    impair.apply(ns, peer_ns, n, imp)
    return {"impair": imp.as_dict(), "netem": impair.netem_stats(ns, peer_ns, n),
            "gso_max_segs": nicmod.gso_max_segs(ns, n.iface)}
