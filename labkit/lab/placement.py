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
from labkit.hosts.host import THIS_KERNEL
from labkit.topology.model import Topology

HOST = THIS_KERNEL  # the kernel name of this machine's kernel, in a placement and for --host
LOCAL_PART = "local"  # the name of the part on this machine's kernel (LocalHost's name)
# Order of preference among fetchable kernels when the topology names none.
PREFERENCE = ("debian-6.12", "debian-6.1")


@dataclass(frozen=True)
class VmPart:
    """One part of a lab: the kernel that holds some of its nodes, by the name of its
    machine (a VM, or LOCAL_PART for this machine's kernel) and its kernel's name.
    `nodes` empty: every node of the lab (the only part)."""

    vm: str
    kernel: str
    nodes: tuple[str, ...]

    @property
    def label(self) -> str:
        """The part for the user: "VM lk-6-12", or "this machine's kernel"."""
        return "this machine's kernel" if self.kernel == HOST else f"VM {self.vm}"

    @property
    def where(self) -> str:
        return self.label if self.kernel == HOST else f"{self.label} ({self.kernel})"


Part = VmPart
_THIS_KERNEL_PART = VmPart(LOCAL_PART, HOST, ())


@dataclass(frozen=True)
class Placement:
    """local: every node in this kernel. vm: the nodes spread over `vms` (one per kernel).
    Either way `parts` lists the kernels that hold the lab, which callers treat alike
    (each part's host: labkit.hosts.placed.host_for); the record keeps this shape."""

    kind: str = "local"  # "local" | "vm"
    vms: tuple[VmPart, ...] = ()
    reason: str = ""  # one line for the user: why it runs where it runs

    @property
    def local(self) -> bool:
        return self.kind == "local"

    @property
    def parts(self) -> tuple[VmPart, ...]:
        """Every kernel that holds nodes of the lab: its VMs, or this machine's kernel."""
        return self.vms or (_THIS_KERNEL_PART,)

    def part_of(self, node: str) -> VmPart | None:
        """The part holding node: the one that names it, else the only part."""
        parts = self.parts
        return next((p for p in parts if node in p.nodes),
                    parts[0] if len(parts) == 1 else None)

    def on_this_kernel(self, node: str) -> bool:
        """Is the node placed on this machine's own kernel?"""
        part = self.part_of(node)
        return part is not None and part.kernel == HOST

    def describe(self) -> str:
        return ", ".join(p.where for p in self.parts)

    def notice(self, lab: str) -> str:
        """The line that says where lab runs when `up` starts it in VMs; "" on this
        machine's kernel (the usual case says nothing)."""
        if not self.vms:
            return ""
        return f"lab '{lab}' runs {self.reason}: {self.describe()}"

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
                if isolated:
                    raise UsageError(f"lab '{topo.name}' would run on this machine's "
                                     "kernel, which is not a VM of its own.",
                                     hint="Name a VM kernel with on=.")
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
