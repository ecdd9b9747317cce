"""Kernel features a lab can switch on: one subpackage each, all with the same small surface.

This registry is the single place that names them. A feature owns a top-level topology key
and the same key inside nodes (e.g. `tipc:`); it says which kernel capabilities it needs
(probes it may bring itself), which kernel modules a VM must load for it, which declared
checks and `labkit verify` kinds it answers, and which traffic protocols it adds. The
doctor, placement (`up` on the host or in a VM), the VM's module list, the CLI's choices
and the topology loader all read it from here.

Adding a feature = its folder (with a module defining FEATURE) plus one line in FEATURES.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.lab.lab import Lab
    from labkit.topology.fields import Problems
    from labkit.topology.located import LMap
    from labkit.topology.model import Check, Topology
    from labkit.verify.verdict import Verdict

# topology key -> module defining FEATURE
FEATURES: dict[str, str] = {
    "tipc": "labkit.features.tipc.feature",
    "handshake": "labkit.features.handshake.feature",
    "kproxy": "labkit.features.kproxy.feature",
    "offload": "labkit.features.offload.feature",
}


class Feature:
    """What every feature provides; subclasses override what they use.

    setup/wait_ready/teardown/status run next to the kernel that holds the nodes (in the
    VM for a VM lab) and touch only the nodes placed there (`lab.here(node)`), so a lab
    spread over several kernels is set up host by host, then awaited host by host.
    """

    key: str = ""
    title: str = ""  # one line for `labkit doctor`
    needs: tuple[str, ...] = ()  # capability names, probed by the doctor
    # capabilities only this feature knows: name -> (probe, kernel config symbols needed)
    probes: dict[str, tuple[Callable[[], str], tuple[str, ...]]] = {}
    modules: tuple[str, ...] = ()  # kernel modules a VM loads at boot for this feature
    # config symbols it needs beyond its probes' (what `labkit kernel build` switches on)
    kconfig: tuple[str, ...] = ()
    check_kinds: dict[str, tuple[str, ...]] = {}  # `checks:` type -> required keys
    verifications: tuple[str, ...] = ()  # `labkit verify KIND --feature KEY`
    verification_help: dict[str, str] = {}  # KIND -> what this feature's check does
    traffic: dict[str, str] = {}  # `labkit traffic --proto P` -> endpoint module
    cli: tuple[str, ...] = ()  # modules with register(app): the feature's own verbs
    layers: tuple[str, ...] = ()  # modules whose import binds scapy layers for its frames
    # other names `--feature` accepts: what a user calls it (e.g. "tls" for the TLS features);
    # a lab resolves one to the single feature it has under that name
    aliases: tuple[str, ...] = ()

    def parse(self, block: LMap | None, nodes: dict[str, LMap], topo: Topology,
              p: Problems) -> Any:
        """Validate the lab-level block and per-node blocks; return the feature's config."""
        raise NotImplementedError

    def prepare(self, lab: Lab, config: Any) -> dict[str, Any]:
        """Before any node is built, on the machine that runs `up`: make what every kernel
        of the lab must share (keys, certificates), kept 0600 in the lab's state there.
        The result reaches setup() as lab.prepared[key], wherever setup runs."""
        return {}

    def setup(self, lab: Lab, config: Any) -> dict[str, Any]:
        """Switch the feature on for this host's nodes; returns what the state records."""
        return {}

    def wait_ready(self, lab: Lab, config: Any) -> None:
        """Return once this host's part works (e.g. links up); LabkitError on timeout."""

    def teardown(self, lab: Lab, config: Any) -> None:
        """Undo what outlives the namespaces (keyrings, modules, files); before they go."""

    def status(self, lab: Lab, config: Any) -> dict[str, Any]:
        """What `labkit status` shows for the feature, for this host's nodes."""
        return {}

    def run_check(self, lab: Lab, config: Any, check: Check) -> Verdict:
        """Run one of the feature's declared checks."""
        raise NotImplementedError

    def verify(self, lab: Lab, config: Any, kind: str, **options: Any) -> Verdict:
        """One `labkit verify KIND` for this feature; options come from the command line."""
        raise NotImplementedError

    @property
    def frames(self) -> dict[str, str]:
        """Crafted frames it can make (kind -> what the kernel should do with it), for
        `inject` steps and verbs; scenario files name them FEATURE:KIND."""
        return {}

    # options a scenario's `inject` step may pass to craft(): name -> (min, max), integers
    craft_options: dict[str, tuple[int, int]] = {}

    def craft(self, config: Any, kind: str, src_mac: str, **options: Any) -> bytes:
        """One crafted frame of `kind` sent from src_mac, for a lab with this config."""
        raise NotImplementedError

    def counters(self, status: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        """The status as counter rows for live panels: {row: {column: value}}, the same
        rows and columns reading after reading so that changes can be shown; None to show
        the status as it is."""
        return None


@cache
def get(key: str) -> Feature:
    return importlib.import_module(FEATURES[key]).FEATURE  # type: ignore[no-any-return]


def keys() -> list[str]:
    return list(FEATURES)


def named(name: str) -> list[str]:
    """The features a user may mean by `name`: itself, or those that answer to it as alias."""
    if name in FEATURES:
        return [name]
    return [k for k in FEATURES if name in get(k).aliases]


def all_features() -> list[Feature]:
    return [get(k) for k in FEATURES]


def owner_of_check(kind: str, among: list[str] | None = None) -> str | None:
    """The feature that declares a check type, or None (core check types such as reach).
    among: only these features are asked (and imported); all of them when None."""
    return next((k for k in (FEATURES if among is None else among)
                 if kind in get(k).check_kinds), None)


def check_kinds(among: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    """`checks:` type -> required keys, of these features (imported) or of all of them."""
    return {kind: req for k in (FEATURES if among is None else among)
            for kind, req in get(k).check_kinds.items()}


def verification_kinds() -> list[str]:
    return sorted({kind for f in all_features() for kind in f.verifications})


def with_verification(kind: str) -> list[str]:
    return [k for k in FEATURES if kind in get(k).verifications]


def traffic_protocols() -> dict[str, str]:
    return {proto: mod for f in all_features() for proto, mod in f.traffic.items()}


def cli_modules() -> list[str]:
    """Every feature's verb modules, in registry order (`labkit tipc`, `labkit kproxy`...)."""
    return [mod for f in all_features() for mod in f.cli]


def notes(configs: dict[str, Any]) -> list[str]:
    """What the lab's feature configs want said at validate and up without being errors
    (a config's `notes`, e.g. offload: TLS 1.3 stays in software)."""
    return [f"{key}: {note}" for key, cfg in configs.items()
            for note in getattr(cfg, "notes", None) or []]


def with_frames() -> list[str]:
    """Features that craft frames (`inject` steps name them FEATURE:KIND)."""
    return [k for k in FEATURES if get(k).frames]


def bind_layers() -> None:
    """Import every feature's scapy layers, so that dissecting a frame knows them all."""
    for f in all_features():
        for mod in f.layers:
            importlib.import_module(mod)


def modules(keys_: list[str] | None = None) -> list[str]:
    """Kernel modules a VM loads at boot: for these features, or for all of them."""
    out: list[str] = []
    for key in keys_ if keys_ is not None else keys():
        out += [m for m in get(key).modules if m not in out]
    return out


