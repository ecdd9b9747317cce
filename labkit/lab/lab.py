"""The Python API: a Lab made from a topology, and its Nodes, wherever the lab runs.

    with Lab.load("topologies/pair.yaml") as lab:        # up (here or in a VM), then down
        lab.node("a").run(["ip", "-j", "addr"])

A lab runs on this machine's kernel or in VMs with named kernels (see
labkit.lab.placement): `up()` decides, `up(on="host")` or `up(on="debian-6.12")` forces.
Every node is reached through its host (labkit.hosts), so run/popen/call, status, checks
and verifications work the same for both; what cannot cross into a VM (a socket handed to
this process, entering the namespace) says so. The CLI and the notebook widgets are thin
layers over this class.

`up` is atomic in effect: if any step fails, or the process is interrupted, everything
already made (namespaces, VMs, keys) is removed before the error propagates.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from labkit import features
from labkit.base import netns, trace
from labkit.base.names import check_lab
from labkit.errors import Interrupted, LabkitError, UsageError, require_root
from labkit.hosts import placed
from labkit.hosts.host import LabHost, Progress
from labkit.lab import names, removal, state
from labkit.lab.placement import Part, Placement
from labkit.lab.teardown import Removed
from labkit.topology import loader
from labkit.topology.model import Topology
from labkit.verify.verdict import Verdict


class Node:
    """One node (network namespace) of a lab."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.ns = names.node_ns(lab.name, name)

    def __repr__(self) -> str:
        return f"<Node {self.name} of lab {self.lab.name}>"

    @property
    def spec(self) -> Any:
        return self.lab.topo.nodes[self.name]

    @property
    def host(self) -> LabHost:
        return self.lab.host_of(self.name)

    def run(self, cmd: Sequence[str], *, check: bool = False, timeout: float | None = 60,
            capture: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command in the node and wait for it (bounded by timeout)."""
        return self.host.run(self.ns, cmd, timeout=timeout, input=input, capture=capture,
                             check=check)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """A background process in the node; `down` stops it (and anything else in there).

        For a node in a VM, the Popen is a local relay whose pipes, exit status and kill()
        are the remote command's.
        """
        proc = self.host.popen(self.ns, cmd, **kwargs)
        pid = self.host.own_pid(proc)
        if pid is not None:
            self.lab._track(pid, self.name, cmd)
        return proc

    def call(self, fn: str | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a @remote function next to the node's kernel: fn(lab, node_name, *args)."""
        from labkit.hosts.rpc import path_of

        path = fn if isinstance(fn, str) else path_of(fn)
        return self.host.call(self.lab, path, self.name, *args, **kwargs)

    def command(self, cmd: Sequence[str]) -> list[str]:
        """The argv that runs cmd inside a local node (like `ip netns exec`)."""
        return self.host.command(self.ns, cmd)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A socket that lives in the node's namespace, usable from this process."""
        return self.host.socket(self.ns, family, type, proto)

    def entered(self) -> Any:
        """Context manager moving the current thread into the node (for raw kernel APIs)."""
        return self.host.entered(self.ns)

    def shell(self, cmd: Sequence[str] | None = None) -> int:
        """An interactive shell (or cmd) in the node, on this terminal."""
        sh = os.environ.get("SHELL", "/bin/bash")
        argv = list(cmd) if cmd else ([sh, "--norc", "-i"] if sh.endswith("bash") else [sh, "-i"])
        return self.host.exec(self.ns, argv, {"PS1": f"[{self.lab.name}:{self.name}] \\w# "},
                              tty=True)

    def addresses(self, family: int | None = None) -> list[str]:
        return [str(a) for a in self.spec.addresses(family)]

    def links(self) -> list[dict[str, Any]]:
        """Interfaces and addresses as the kernel reports them now."""
        return self.call("labkit.lab.ops:node_links")  # type: ignore[no-any-return]


class Lab:
    """A lab: its topology, where it runs, and (once up) its nodes in the kernel."""

    def __init__(self, topo: Topology, *, placement: Placement | None = None,
                 here: Sequence[str] | None = None, attached: bool = False) -> None:
        self.topo = topo
        self.name = topo.name
        self.placement = placement or Placement()
        self.here_nodes: set[str] | None = set(here) if here is not None else None
        self.nodes = {n: Node(self, n) for n in topo.nodes}
        self._attached = attached  # found running: a `with` block must not remove it
        self._hosts: dict[str, LabHost] = {}
        # What each feature's prepare() made for every kernel of the lab (keys...): filled
        # by `up` on the machine that runs it, handed to setup() wherever that runs.
        self.prepared: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Lab {self.name} on {self.placement.describe()}>"

    @classmethod
    def load(cls, path: str) -> Lab:
        """Validate a topology file; nothing touches the kernel until up()."""
        return cls(loader.load(path))

    @classmethod
    def attach(cls, name: str) -> Lab:
        """A lab that is up, found by name, wherever it runs."""
        check_lab(name)
        spaces = _local_namespaces(name)
        cond = state.condition(name, spaces)
        if cond.word != "up" or cond.state is None:
            hint = {"down": "`labkit status` lists the labs that are up.",
                    "building": "Wait for its `up` to finish."}.get(cond.word, "")
            raise UsageError(cond.sentence, hint=hint)
        return cls.from_state(cond.state, attached=True)

    @classmethod
    def from_state(cls, st: state.LabState, attached: bool = True) -> Lab:
        if st.topology_wire:  # a VM's record: no YAML to read (labkit.lab.guest)
            topo = loader.loads_wire(st.topology_wire, st.topology_text, st.topology)
        elif st.topology_text:
            topo = loader.loads(st.topology_text, st.topology)
        else:
            topo = loader.load(st.topology)
        return cls(topo, placement=st.placement, here=st.here, attached=attached)

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise UsageError(f"lab '{self.name}' has no node '{name}'.",
                             hint=f"Its nodes: {', '.join(self.nodes)}.") from None

    def feature_config(self, key: str) -> Any:
        config = self.topo.features.get(key)
        if config is None:
            raise UsageError(f"lab '{self.name}' has no {key} (no `{key}:` in "
                             f"{self.topo.path}).",
                             hint="`labkit doctor` lists the features labkit knows.")
        return config

    # -- where nodes are -------------------------------------------------------------
    def here(self, node: str) -> bool:
        """True if the node lives in the kernel this process drives (feature setup uses it
        to touch only its own nodes in a lab spread over kernels)."""
        if self.here_nodes is not None:
            return node in self.here_nodes
        return self.placement.on_this_kernel(node)

    def host_of(self, node: str) -> LabHost:
        if self.here_nodes is not None and node in self.here_nodes:
            return placed.this_kernel()  # this process runs next to the node's kernel
        part = self.placement.part_of(node)
        if part is None:
            raise UsageError(f"node {node} of lab '{self.name}' is not placed anywhere.")
        return self.host_for(part)

    @property
    def hosts(self) -> list[LabHost]:
        return [self.host_for(p) for p in self.placement.parts]

    def autoloaded_modules(self) -> list[str]:
        """The modules building this lab makes the kernel autoload: veth for its links and
        LAN ports, bridge for its LANs. A lab VM loads them at boot with its features' own,
        in the one modprobe its agent runs: under TCG each autoload is a modprobe process
        of its own, and the cluster lab's two took ~1 s of its build."""
        return [*(["veth"] if self.topo.links or self.topo.lans else []),
                *(["bridge"] if self.topo.lans else [])]

    def host_for(self, part: Part) -> LabHost:
        """The host of one part of the lab's placement (made once, then reused)."""
        host = self._hosts.get(part.vm)
        if host is None:
            host = placed.host_for(part.vm, part.kernel,
                                   features.modules(sorted(self.topo.features)),
                                   preload=self.autoloaded_modules(),
                                   append=getattr(self, "_kernel_options", ()))
            self._hosts[part.vm] = host
        return host

    def call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        """A lab-wide @remote operation, run next to the lab's kernel."""
        hosts = self.hosts
        if len(hosts) > 1:
            raise UsageError(f"lab '{self.name}' spans {len(hosts)} kernels; "
                             f"{fn.split(':')[-1]} runs per node there.",
                             hint="Use node.call() on the nodes you need.")
        return hosts[0].call(self, fn, *args, **kwargs)

    # -- lifecycle -------------------------------------------------------------------
    def up(self, on: str | None = None, progress: Progress | None = None,
           say: Callable[[str], None] | None = None, isolated: bool = False,
           kernel_options: Sequence[str] = ()) -> Lab:
        """Build the lab: here if this kernel has its features, else in a VM.

        on: None (decide), "host", or a kernel name such as "debian-6.12". progress gets
        (done, total, what); say gets one-line announcements (placement, downloads).
        isolated: in VMs of the lab's own, booted fresh (with kernel_options on their
        command line) and stopped at down, rather than the kernel's shared VM.
        """
        if kernel_options and not isolated:
            raise UsageError("kernel options need a VM of the lab's own.",
                             hint="Pass isolated=True as well.")
        self._kernel_options = list(kernel_options)
        from labkit.lab.placement import decide

        require_root()
        if self._attached:
            raise UsageError(f"lab '{self.name}' is already up.",
                             hint=f"Bring it down first with `labkit down {self.name}`.")
        announce = say or (lambda text: None)
        self.placement = decide(self.topo, on, fetch=_fetcher(announce, progress),
                                isolated=isolated)
        if notice := self.placement.notice(self.name):
            announce(notice)
        with state.locked(self.name):
            self._refuse_existing()
            st = state.LabState(name=self.name, topology=os.path.abspath(self.topo.path),
                                topology_text=self.topo.source, placement=self.placement)
            st.mark_builder()
            st.save()  # intent first: a SIGKILL from here on leaves a record
            try:
                self.prepared = {key: features.get(key).prepare(self, cfg)
                                 for key, cfg in self.topo.features.items()}
                self._build_parts(progress)
                st = state.load(self.name) or st  # features may have added to the record
                st.status, st.builder = "up", {}
                st.save()
                trace.mark("lab up")
                trace.save(state.secret_path(self.name, "trace"))  # not *.json: lab records
            except BaseException as exc:
                raise self._rolled_back(exc) from exc
        self._attached = True
        return self

    def _refuse_existing(self) -> None:
        cond = state.condition(self.name, _local_namespaces(self.name))
        if cond.word == "down":
            return
        what = {"up": f"a lab named '{self.name}' is already up"
                      + (f" ({cond.state.placement.describe()})" if cond.state else "") + ".",
                "building": cond.sentence, "interrupted": cond.sentence,
                "broken": cond.sentence, "leftover": cond.sentence}[cond.word]
        raise UsageError(what, hint=f"Bring it down first with `labkit down {self.name}`, or "
                                    f"rename this lab (name: in {self.topo.path}).")

    def _build_parts(self, progress: Progress | None) -> None:
        """Each part built next to its kernel by the same calls, whatever its host (see
        labkit.lab.deploy): start the hosts, build every part, then wait for features."""
        from labkit.lab import deploy  # the build machinery loads only when a lab is built

        parts = self.placement.parts
        several = len(parts) > 1
        hosts = [self.host_for(part) for part in parts]
        _each(hosts, lambda host: host.start(progress))
        peers: dict[str, str] = {}
        if several:
            for part, host in zip(parts, hosts, strict=True):
                peers[part.vm] = host.peer_address()
                if not peers[part.vm]:
                    raise LabkitError(f"VM {part.vm} has no backplane address, so lab "
                                      f"'{self.name}' cannot span it.",
                                      hint=f"Stop it (`labkit vm stop {part.vm}`) and try "
                                           "again: labkit starts it with one.")
        # A VM reads the topology as the host read it, not its YAML (labkit.lab.guest)
        wire = (loader.wire(self.topo)
                if any(host is not placed.this_kernel() for host in hosts) else None)
        for part, host in zip(parts, hosts, strict=True):
            if progress:
                progress(2, 3, f"building the lab in {part.label}")
            with deploy.reporting(progress):  # the steps of a build in this process
                host.call(None, "labkit.lab.guest:guest_up", self.topo.source,
                          os.path.abspath(self.topo.path),
                          list(part.nodes) if several else None, self.placement.to_json(),
                          part.vm if several else None, peers, self.prepared,
                          topo_wire=wire)
        for part, host in zip(parts, hosts, strict=True):
            if progress:
                progress(3, 3, f"waiting for features in {part.label}")
            host.call(self, "labkit.lab.guest:guest_wait")

    def _rolled_back(self, exc: BaseException) -> BaseException:
        """Remove everything the failed `up` made; the error to raise, saying so."""
        notes = []
        try:
            removed = self._remove()
            where = f" and its VM {', '.join(removed.vms)}" if removed.vms else ""
        except Exception as cleanup:  # say it, but never hide the original error
            where = ""
            notes.append(f" Cleaning up also failed ({cleanup}); run `labkit down "
                         f"{self.name}`.")
        gone = f"Everything it had made{where} was removed." if not notes else ""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            code = 130 if isinstance(exc, KeyboardInterrupt) else int(exc.code or 1)
            return Interrupted(f"`up` of lab '{self.name}' was interrupted.",
                               hint=gone + "".join(notes), code=code)
        if isinstance(exc, LabkitError):
            exc.hint = " ".join(x for x in (exc.hint, gone, *notes) if x)
            return exc
        return LabkitError(f"bringing up lab '{self.name}' failed: {exc}.",
                           hint=gone + "".join(notes))

    def down(self) -> Removed:
        """Remove the lab wherever it runs: namespaces, processes, VMs, keys, record."""
        require_root()
        with state.locked(self.name):
            removed = self._remove()
        self._attached = False
        return removed

    def _remove(self) -> Removed:
        return removal.remove(self.name, self)

    def __enter__(self) -> Lab:
        """Build the lab (refused if one of that name is up); an attached lab is only used."""
        self._owned = not self._attached
        if self._owned:
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "_owned", False):
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

    # -- views -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Nodes, interfaces, LANs, processes and features as the kernel(s) show them."""
        parts = [h.call(self, "labkit.lab.ops:status") for h in self.hosts]
        out = parts[0]
        for more in parts[1:]:
            out["nodes"].update({n: v for n, v in more["nodes"].items() if v["present"]})
            out["lans"].update(more["lans"])
        cond = state.condition(self.name, _local_namespaces(self.name))
        out["status"] = cond.word
        out["condition"] = cond.sentence
        out["placement"] = self.placement.to_json()
        out["where"] = self.placement.describe()
        return out

    def feature_status(self, key: str) -> dict[str, Any]:
        self.feature_config(key)
        parts = [h.call(self, "labkit.lab.ops:feature_status", key) for h in self.hosts]
        out = parts[0]
        for more in parts[1:]:
            out.setdefault("nodes", {}).update(more.get("nodes", {}))
        return out

    def verify(self, kind: str, feature: str | None = None, **options: Any) -> Verdict:
        """One verification (`labkit verify KIND`): pass, fail, or could not run."""
        key = self._verifying_feature(kind, feature)
        hosts = self.hosts
        if len(hosts) > 1:
            named = {self.host_of(n).name for n in (options.get("src"), options.get("dst"))
                     if n in self.nodes}
            if len(named) != 1:  # the feature coordinates its nodes' kernels from here
                return features.get(key).verify(self, self.feature_config(key), kind,
                                                **options)
            hosts = [h for h in hosts if h.name in named]  # all it names are in one kernel
        data = hosts[0].call(self, "labkit.lab.ops:feature_verify", key, kind, options)
        return Verdict(**data)

    def checks(self) -> list[Verdict]:
        """The checks the topology declares, netlab style."""
        if len(self.hosts) > 1:  # checks reach across kernels from here
            from labkit.verify.checks import run_checks

            return run_checks(self)
        return [Verdict(**d) for d in self.call("labkit.lab.ops:run_checks")]

    def _verifying_feature(self, kind: str, feature: str | None) -> str:
        able = [k for k in features.with_verification(kind) if k in self.topo.features]
        if feature is not None:
            meant = features.named(feature)
            if not meant:
                raise UsageError(f"there is no feature '{feature}'.",
                                 hint=f"Features: {', '.join(features.keys())}.")
            if feature not in features.keys():  # an alias: the lab's one feature by that name
                mine = [k for k in meant if k in self.topo.features]
                if len(mine) != 1:
                    raise UsageError(
                        f"'{feature}' names {', '.join(meant)}; lab '{self.name}' has "
                        f"{'both' if mine else 'none of them'}.",
                        hint="Give the feature's own name with --feature.")
                feature = mine[0]
            self.feature_config(feature)
            if feature not in able:
                raise UsageError(f"feature {feature} has no `{kind}` verification.",
                                 hint=f"Features of lab '{self.name}' that have one: "
                                      f"{', '.join(able) or 'none'}.")
            return feature
        if len(able) == 1:
            return able[0]
        if not able:
            raise UsageError(f"lab '{self.name}' has no feature with a `{kind}` "
                             "verification.", hint=f"Its features: "
                             f"{', '.join(self.topo.features) or 'none'}.")
        raise UsageError(f"several features of lab '{self.name}' can verify {kind}: "
                         f"{', '.join(able)}.", hint="Choose one with --feature.")


def _each(hosts: list[LabHost], fn: Callable[[LabHost], None]) -> None:
    """fn on every host at once (VM boots overlap); the first error is raised after all
    have finished, so a rollback never races a boot still in progress."""
    if len(hosts) == 1:
        fn(hosts[0])
        return
    import threading

    errors: list[BaseException] = []

    def one(host: LabHost) -> None:
        try:
            fn(host)
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _local_namespaces(name: str) -> list[str]:
    return netns.list_names(names.lab_prefix(name))


def _fetcher(say: Callable[[str], None],
             progress: Progress | None) -> Callable[[str], None]:
    def fetch(kernel: str) -> None:
        from labkit.hosts import kernels

        if not kernels.fetchable(kernel):
            return
        say(f"kernel {kernel} is not cached yet: fetching it once (70-110 MB)")

        def moved(done: int, total: int) -> None:
            if progress is not None:
                progress(done // 1_000_000, total // 1_000_000, f"downloading {kernel} (MB)")

        kernels.fetch(kernel, progress=lambda text: say(f"{kernel}: {text}"), on_bytes=moved)

    return fetch


def down(name: str) -> Removed:
    """`labkit down NAME`: the lab's own Lab.down, or a sweep by name if no record is left."""
    require_root()
    check_lab(name)
    st = state.load(name)
    if st is not None and st.topology_text:
        try:
            lab = Lab.from_state(st)
        except LabkitError:
            lab = None
    else:
        lab = None
    with state.locked(name):
        if lab is None:
            lab = _record_less(name, st)
        return removal.remove(name, lab)


def _record_less(name: str, st: state.LabState | None) -> Lab:
    """A stand-in Lab for removing by name when the topology text is gone."""
    topo = Topology(name=name, path="", loc=None)  # type: ignore[arg-type]
    return Lab(topo, placement=st.placement if st else Placement())
