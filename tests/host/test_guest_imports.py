"""The guest daemon imports only kernel-facing code: under TCG emulation every import costs
~35x the host's, and scapy, matplotlib, rich and typer only compute or present, which the
host does. Each request kind (every module with an @remote function, found in the source
so a new one is covered) is imported the way the daemon serves it, in a fresh Python."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import labkit

HEAVY = ("scapy", "matplotlib", "rich", "typer")
# pyroute2's rtnetlink (IPRoute): ~8 s of imports under TCG; the daemon builds and reads
# labs with labkit.base.rtnl instead, so none of its requests may need it.
SLOW = "pyroute2.iproute"
PACKAGE = Path(labkit.__file__).resolve().parent
# What the daemon runs before any request: its own module, then its preload thread.
DAEMON = "import labkit.hosts.guestd as g; g.preload(quiet=0); import labkit.lab.lab"
PROBE = ("import importlib, sys; {setup}; {extra}; "
         "print(' '.join(m for m in {heavy!r} if m in sys.modules))")


def remote_modules() -> list[str]:
    """Every labkit module that defines a function the daemon may be asked to run."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if re.search(r"^@remote\b", path.read_text(), re.M):
            rel = path.relative_to(PACKAGE.parent).with_suffix("")
            out.append(".".join(rel.parts))
    return out


def heavy_after(setup: str, extra: str = "pass",
                watch: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `watch` a fresh Python has imported after setup and extra."""
    res = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup, extra=extra,
                                                             heavy=watch)],
                         capture_output=True, text=True, timeout=120, check=True)
    return res.stdout.split()


def test_the_probe_sees_a_heavy_import() -> None:
    """Positive control: a module that does import scapy is reported."""
    assert "scapy" in heavy_after(DAEMON, "import labkit.features.tipc.layers")


def test_remote_modules_are_found() -> None:
    mods = remote_modules()
    assert "labkit.lab.guest" in mods and "labkit.lab.ops" in mods
    assert "labkit.hosts.guestd" in mods


def test_daemon_start_imports_nothing_heavy() -> None:
    assert heavy_after(DAEMON) == []


def test_the_daemon_never_needs_pyroute2s_rtnetlink() -> None:
    """Building a lab (every node's links, addresses and routes) and `status`'s reading
    of them use labkit.base.rtnl; the control shows the probe sees pyroute2's IPRoute."""
    probe = f"print(' '.join(m for m in {(SLOW,)!r} if m in sys.modules))"
    assert heavy_after(DAEMON, "import pyroute2.iproute; " + probe)[-1:] == [SLOW]
    mods = "; ".join(f"importlib.import_module({m!r})" for m in remote_modules())
    assert SLOW not in heavy_after(DAEMON, f"{mods}; {probe}")


@pytest.mark.parametrize("module", remote_modules())
def test_request_kind_imports_nothing_heavy(module: str) -> None:
    """Serving a request resolves its function's module (labkit.hosts.rpc.resolve)."""
    heavy = heavy_after(DAEMON, f"importlib.import_module({module!r})")
    assert heavy == [], f"the guest daemon serving {module} imports {heavy}"


# The guest's part of `up` before it touches the kernel (labkit.lab.guest.guest_up): the
# topology loaded, the Lab made, its features' modules loaded. Nothing here may import
# what only computes or presents, nor a feature the lab does not have.
UP = ("from labkit import features; from labkit.topology import loader; "
      "from labkit.lab.lab import Lab; from labkit.lab.placement import Placement; "
      "import labkit.lab.deploy; topo = loader.load({path!r}); "
      "Lab(topo, placement=Placement(), here=list(topo.nodes)); "
      "[features.get(key) for key in topo.features]")
NOT_ON_THE_UP_PATH = (*HEAVY, "cryptography", "ipywidgets", "difflib", SLOW)
OTHER_FEATURES = ("labkit.features.handshake", "labkit.features.kproxy",
                  "labkit.features.offload")
CLUSTER = str(PACKAGE.parent / "topologies" / "cluster.yaml")
KPROXY = str(PACKAGE.parent / "topologies" / "kproxy.yaml")


def test_up_of_the_cluster_lab_imports_only_its_own_feature() -> None:
    watch = (*NOT_ON_THE_UP_PATH, *OTHER_FEATURES, "labkit.features.tipc")
    got = heavy_after(DAEMON, UP.format(path=CLUSTER), watch)
    assert got == ["labkit.features.tipc"], f"the guest's up of cluster.yaml imports {got}"


def test_the_up_probe_sees_another_feature_and_a_heavy_import() -> None:
    """Positive controls: a lab with kproxy imports kproxy's modules, and a module that
    imports cryptography (the TLS features' certificates) is reported."""
    watch = (*NOT_ON_THE_UP_PATH, *OTHER_FEATURES)
    assert heavy_after(DAEMON, UP.format(path=KPROXY), watch) == ["labkit.features.kproxy"]
    extra = UP.format(path=CLUSTER) + "; import cryptography.x509"
    assert heavy_after(DAEMON, extra, watch) == ["cryptography"]


def test_the_cluster_up_path_does_not_load_openssl() -> None:
    """hashlib (OpenSSL's libcrypto) took ~0.2 s of a lab VM daemon's start under TCG,
    loaded for a VXLAN id and a netlink sequence number; the cluster's build, TIPC set-up
    and netlink client included, no longer loads it. Control: making a key does."""
    up = UP.format(path=CLUSTER) + "; import labkit.features.tipc.setup"
    assert heavy_after(DAEMON, up, ("_hashlib",)) == []
    made = up + "; from labkit.features.tipc import keys; keys.generate(128)"
    assert heavy_after(DAEMON, made, ("_hashlib",)) == ["_hashlib"]


def test_the_guest_reads_no_yaml_on_the_cluster_up_path() -> None:
    """PyYAML's import took ~0.5 s of a cold `up` in a TCG guest: the host sends the
    topology as read (labkit.topology.loader.wire), and the guest's up, its record and
    later verbs' Lab.from_state read that. Control: reading the YAML imports it."""
    from labkit.topology import loader

    wire = loader.wire(loader.load(CLUSTER))
    up = UP.replace("topo = loader.load({path!r})",
                    "topo = loader.loads_wire({wire!r}, '', {path!r})")
    assert heavy_after(DAEMON, up.format(path=CLUSTER, wire=wire), ("yaml",)) == []
    assert heavy_after(DAEMON, UP.format(path=CLUSTER), ("yaml",)) == ["yaml"]
