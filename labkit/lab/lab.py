"""The Python API: a Lab made from a topology, and its Nodes.

    with Lab.load("topologies/pair.yaml") as lab:
        lab.node("a").run(["ip", "-j", "addr"])

The CLI and the notebook widgets are thin layers over this class. `up` is atomic in
effect: if any step fails (or the process is interrupted), everything already made is
removed before the error propagates.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from labkit import features
from labkit.base import netns
from labkit.base.rtnl import opened
from labkit.errors import LabkitError, UsageError, require_root
from labkit.lab import names, state, teardown
from labkit.lab.build import Builder, Progress
from labkit.topology import loader
from labkit.topology.model import Topology


class Node:
    """One namespace of a running lab."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.ns = names.node_ns(lab.name, name)

    def __repr__(self) -> str:
        return f"<Node {self.name} of lab {self.lab.name}>"

    @property
    def spec(self) -> Any:
        return self.lab.topo.nodes[self.name]

    def command(self, cmd: Sequence[str]) -> list[str]:
        """The argv that runs cmd inside the node, with its own /sys, like `ip netns exec`."""
        return ["ip", "netns", "exec", self.ns, *cmd]

    def run(self, cmd: Sequence[str], *, check: bool = False, timeout: float | None = 60,
            capture: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command in the node and wait for it (bounded by timeout)."""
        return subprocess.run(self.command(cmd), check=check, timeout=timeout, text=True,
                              capture_output=capture, input=input)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """A background process in the node; `down` stops it (and anything else in there)."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(cmd), **kwargs)
        self.lab._track(proc.pid, self.name, cmd)
        return proc

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A socket that lives in the node's namespace, usable from this process."""
        return netns.socket_in(self.ns, family, type, proto)

    def entered(self) -> Any:
        """Context manager moving the current thread into the node (for raw kernel APIs)."""
        return netns.entered(self.ns)

    def addresses(self, family: int | None = None) -> list[str]:
        return [str(a) for a in self.spec.addresses(family)]

    def links(self) -> list[dict[str, Any]]:
        """Interfaces and addresses as the kernel reports them now."""
        from labkit.lab.inspect import node_links

        return node_links(self.ns)


class Lab:
    """A lab: its topology, and (once up) its namespaces in the kernel."""

    def __init__(self, topo: Topology, *, attached: bool = False) -> None:
        self.topo = topo
        self.name = topo.name
        self.nodes = {n: Node(self, n) for n in topo.nodes}
        self._attached = attached  # found running: a `with` block must not remove it

    @classmethod
    def load(cls, path: str) -> Lab:
        """Validate a topology file; nothing touches the kernel until up()."""
        return cls(loader.load(path))

    @classmethod
    def attach(cls, name: str) -> Lab:
        """A lab that is already up, found by name (its state file keeps the topology)."""
        st = state.load(name)
        if st is None or st.status != "up":
            raise UsageError(f"lab '{name}' is not up.",
                             hint="`labkit status` lists the labs that are.")
        if st.host.get("kind") != "local":
            raise UsageError(f"lab '{name}' runs in VM '{st.host.get('vm')}'.",
                             hint="Use the labkit CLI, which forwards to the VM, or the API "
                                  "inside the VM.")
        topo = (loader.loads(st.topology_text, st.topology) if st.topology_text
                else loader.load(st.topology))
        return cls(topo, attached=True)

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise UsageError(f"lab '{self.name}' has no node '{name}'.",
                             hint=f"Its nodes: {', '.join(self.nodes)}.") from None

    # -- lifecycle -------------------------------------------------------------------
    def is_up(self) -> bool:
        st = state.load(self.name)
        return st is not None and st.status == "up"

    def up(self, progress: Progress | None = None) -> Lab:
        require_root()
        with state.locked(self.name):
            existing = teardown.lab_namespaces(self.name)
            st = state.load(self.name)
            if existing or st is not None:
                what = "up" if st and st.status == "up" else "partly built (a failed or killed up)"
                raise UsageError(
                    f"a lab named '{self.name}' is already {what}.",
                    hint=f"Bring it down first with `labkit down {self.name}`, or rename "
                         f"this lab (name: in {self.topo.path}).")
            st = state.LabState(name=self.name, topology=os.path.abspath(self.topo.path),
                                topology_text=self.topo.source)
            builder = Builder(self.topo, st, progress or (lambda d, t, w: None))
            try:
                builder.run()
                for key, config in self.topo.features.items():
                    if progress:
                        progress(1, 1, key)
                    st.features[key] = features.get(key).setup(self, config) or {}
                st.status = "up"
                st.save()
            except BaseException as exc:
                teardown.remove(self.name)
                if isinstance(exc, LabkitError):
                    raise
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                raise LabkitError(f"bringing up lab '{self.name}' failed: {exc}.",
                                  hint="Everything it had made was removed.") from exc
        return self

    def down(self) -> teardown.Removed:
        require_root()
        return teardown.down(self.name)

    def __enter__(self) -> Lab:
        """Build the lab (refused if one of that name is up); an attached lab is only used."""
        if not self._attached:
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._attached:
            self.down()

    # -- processes -------------------------------------------------------------------
    def _track(self, pid: int, node: str, cmd: Sequence[str]) -> None:
        with state.locked(self.name):
            st = state.load(self.name)
            if st is None:
                return
            st.processes.append({"pid": pid, "node": node, "cmd": list(cmd),
                                 "started": time.time()})
            st.save()

    def status(self) -> dict[str, Any]:
        from labkit.lab.inspect import lab_status

        return lab_status(self)

    def iproute(self, node: str) -> Any:
        """An rtnetlink socket in a node (context manager), for direct pyroute2 use."""
        return opened(self.node(node).ns)

