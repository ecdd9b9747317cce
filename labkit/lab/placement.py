"""Where a lab runs: on this machine's kernel, or in VMs with named kernels.

The topology may say which kernel it wants (`kernel:` at the top, or per node); the caller
may force one (`--host`, `--vm KERNEL`); otherwise the lab runs here if this kernel has
every feature it needs, else in a VM with the first kernel (in labkit's order of
preference) that has them. A kernel's abilities come from a real probe where one was
recorded (`labkit doctor --kernel K`), else from its Debian config file; this kernel's
own are probed live. The result is recorded in the lab's state, typed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from labkit.errors import MissingFeatureError, UsageError
from labkit.topology.model import Topology

HOST = "host"
# Order of preference among fetchable kernels when the topology names none.
PREFERENCE = ("debian-6.12", "debian-6.1")


@dataclass(frozen=True)
class VmPart:
    """One VM of a lab: its name, its kernel, and the nodes it holds."""

    vm: str
    kernel: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """local: every node in this kernel. vm: the nodes spread over `vms` (one per kernel)."""

    kind: str = "local"  # "local" | "vm"
    vms: tuple[VmPart, ...] = ()
    reason: str = ""  # one line for the user: why it runs where it runs

    @property
    def local(self) -> bool:
        return self.kind == "local"

    def vm_of(self, node: str) -> VmPart | None:
        return next((v for v in self.vms if node in v.nodes), None)

    def describe(self) -> str:
        if self.local:
            return "this machine's kernel"
        return ", ".join(f"VM {v.vm} ({v.kernel})" for v in self.vms)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Placement:
        if not data or data.get("kind", "local") == "local":
            return cls()
        if "vms" not in data:  # a record from labkit 0.1: {"kind": "vm", "vm", "kernel"}
            return cls("vm", (VmPart(str(data["vm"]), str(data.get("kernel", "")), ()),))
        return cls("vm", tuple(VmPart(v["vm"], v["kernel"], tuple(v["nodes"]))
                               for v in data["vms"]), str(data.get("reason", "")))


def vm_name(kernel: str, lab: str | None = None) -> str:
    """The VM that holds every lab node on this kernel: `lk-6-12` for debian-6.12 (labs
    share it, so a second lab on a kernel that is already up starts without a boot); with
    `lab`, that lab's own VM (`lk-6-12-NAME`)."""
    import hashlib

    if "/" in kernel:  # a user's bzImage or build tree
        base = "lk-k" + hashlib.sha1(kernel.encode()).hexdigest()[:10]
    else:
        tag = kernel.lower().removeprefix("debian-")
        base = "lk-" + "".join(c if c.isalnum() else "-" for c in tag)
    if lab is not None:
        base += "-" + lab.lower().replace("_", "-")
    return base[:32]


def needed(topo: Topology) -> list[str]:
    return sorted(topo.features)


def lacking(probes: dict[str, Any], wanted: list[str]) -> dict[str, list[str]]:
    from labkit.capabilities import missing_for

    return missing_for(probes, wanted)


def _explain(missing: dict[str, list[str]]) -> str:
    return "; ".join(f"{f} needs {', '.join(caps)}" for f, caps in missing.items())


def host_probes() -> dict[str, Any]:
    from labkit.capabilities import probe_all

    return probe_all()


def kernel_probes(kernel: str) -> tuple[dict[str, Any], str] | None:
    """A cached kernel's abilities (and where that knowledge comes from); None if the
    kernel is not cached (it may still be fetchable)."""
    from labkit.capabilities import kernel_capabilities
    from labkit.hosts import kernels

    if kernels.fetchable(kernel) and kernels.cached(kernel) is None:
        return None  # fetchable, not fetched yet
    k = kernels.resolve(kernel)  # an unknown name or a bad path is the user's error
    base = {"cache": os.path.dirname(os.path.dirname(k.image)),
            "tree": k.run_arg}.get(k.source, os.path.dirname(k.image))
    return kernel_capabilities(base, k.version)


def decide(topo: Topology, on: str | None = None,
           fetch: Callable[[str], None] | None = None, isolated: bool = False) -> Placement:
    """The placement for a lab, or MissingFeatureError naming what is missing where.

    on: None (the topology and the kernels decide), "host", or a kernel name. fetch is
    called with a kernel name that must be downloaded first (it shows progress).
    isolated: VMs of the lab's own instead of the kernel's shared VM (a fresh kernel for
    reproducing a bug: clean dmesg, no other lab, kernel options of its own).
    """
    wanted = needed(topo)
    per_node = {n.name: n.kernel for n in topo.nodes.values() if n.kernel}
    if on is not None:
        choices = [on]
    elif topo.kernels:
        choices = list(topo.kernels)
    else:
        choices = [HOST, *PREFERENCE]
    if per_node and on == HOST:
        raise UsageError(f"lab '{topo.name}' puts nodes on their own kernels "
                         f"({', '.join(f'{n}: {k}' for n, k in per_node.items())}), so it "
                         "cannot run on this machine's kernel alone.",
                         hint="Drop --host, or remove the nodes' `kernel:` keys.")
    tried: list[str] = []
    for choice in choices:
        if choice == HOST:
            probes = host_probes()
            missing = lacking(probes, wanted)
            if not missing and not per_node:
                return Placement("local", (), "this kernel has every feature the lab uses")
            tried.append(f"this machine's kernel ({os.uname().release}): {_explain(missing)}"
                         if missing else "this machine's kernel: nodes ask for other kernels")
            continue
        known = kernel_probes(choice)
        if known is None and fetch is not None:
            fetch(choice)
            known = kernel_probes(choice)
        if known is None:
            tried.append(f"{choice}: not cached (`labkit vm kernels fetch {choice}`)")
            continue
        probes, source = known
        missing = lacking(probes, wanted)
        if not probes and choice == on:  # a user's kernel without a config: try it
            return _vm_placement(topo, choice, per_node, wanted, fetch,
                                 "asked for; its features are unknown (no config file)",
                                 isolated)
        if missing:
            tried.append(f"{choice} ({source}): {_explain(missing)}")
            continue
        return _vm_placement(topo, choice, per_node, wanted, fetch, source, isolated)
    hint = ("Fetch a kernel that has them: `labkit vm kernels fetch debian-6.12`, or see "
            "`labkit doctor --all-kernels`.")
    if on is not None or topo.kernels:
        hint = "Pick another kernel (`--vm KERNEL`), or see `labkit doctor --all-kernels`."
    raise MissingFeatureError(
        f"no kernel can run lab '{topo.name}' ({', '.join(wanted) or 'no features'}): "
        + "; ".join(tried) + ".", hint=hint)


def _vm_placement(topo: Topology, main: str, per_node: dict[str, str], wanted: list[str],
                  fetch: Callable[[str], None] | None, source: str,
                  isolated: bool = False) -> Placement:
    groups: dict[str, list[str]] = {}
    for node in topo.nodes:
        groups.setdefault(per_node.get(node, main), []).append(node)
    for kernel in groups:
        if kernel == main:
            continue
        if kernel == HOST:
            raise UsageError(f"node kernel `host` cannot be mixed with VM kernels in lab "
                             f"'{topo.name}'.", hint="Give that node a VM kernel instead.")
        known = kernel_probes(kernel)
        if known is None and fetch is not None:
            fetch(kernel)
            known = kernel_probes(kernel)
        if known is None:
            raise MissingFeatureError(f"kernel {kernel} is not cached.",
                                      hint=f"`labkit vm kernels fetch {kernel}`.")
        node_features = [k for k in wanted if any(
            n in getattr(topo.features[k], "nodes", {n: 1 for n in groups[kernel]})
            for n in groups[kernel])]
        missing = lacking(known[0], node_features)
        if missing:
            raise MissingFeatureError(
                f"nodes {', '.join(groups[kernel])} of lab '{topo.name}' ask for kernel "
                f"{kernel}, which cannot run them: {_explain(missing)}.",
                hint="Give those nodes another kernel.")
    vms = tuple(VmPart(vm_name(k, topo.name if isolated else None), k, tuple(nodes))
                for k, nodes in groups.items())
    reason = f"in a VM with {main} ({source})"
    return Placement("vm", vms, reason)
