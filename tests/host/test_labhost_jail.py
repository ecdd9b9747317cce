"""A third LabHost, for tests only, proves that where a lab runs is one abstraction: the
lab API's tests of test_lifecycle.py run unchanged on it (only the `lab_up` fixture
differs: it places each lab on this host).

JailHost runs a lab's nodes on this machine's kernel but in a *jail*: a mount namespace
of their own, with private /run/netns and /run/labkit, where labkit's guest daemon (the
one a VM runs) builds the lab and answers calls over a unix socket, and commands enter
with nsenter. Nothing of the lab is visible to this process's own /run/netns, so every
call, command and removal must go through the host, as for a VM or a remote machine; only
a socket or a thread may cross into a node's namespace, which the jail's kernel (this
one) allows, through the jail's view of its files (/proc/PID/root). Nothing above
labkit.hosts knows this class: it is installed with labkit.hosts.placed.use().
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from labkit.base import netns
from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.hosts import placed, rpc, users
from labkit.hosts.host import NamedLab, Progress
from labkit.hosts.local import netns_exec
from labkit.lab import names
from labkit.lab.lab import Lab
from tests.conftest import ROOT, labs_brought_up
from tests.host.test_lifecycle import (  # noqa: F401  (collected here, on JailHost)
    test_attach_uses_what_was_built_not_the_edited_file,
    test_background_processes_are_stopped_at_down,
    test_check_fails_when_router_does_not_forward,
    test_negative_check_cannot_pass_when_it_could_not_run,
    test_only_lab_interfaces_and_lab_routes,
    test_routed_lab_crosses_router_both_families,
    test_shipped_topology_up_checks_down,
    test_two_labs_at_once,
    test_with_attached_lab_leaves_it_running,
)

JAILS = Path("/run/lkjail")  # outside what the jail hides: /run/netns and /run/labkit
# The jail's own /run/netns and /run/labkit, then labkit's daemon in it, in the foreground.
JAIL_SCRIPT = ('mkdir -p /run/netns /run/labkit && mount -t tmpfs lkjail /run/netns && '
               'mount -t tmpfs lkjail /run/labkit && exec "$0" -m labkit.hosts.guestd '
               '--socket "$1"')


class JailHost:
    """The LabHost protocol over a jail of this kernel (see the module's docstring)."""

    def __init__(self, name: str, kernel: str, modules: Sequence[str] = (), *,
                 append: Sequence[str] = (), preload: Sequence[str] = ()) -> None:
        self.name = name  # the part's name (the VM it would be): one jail per part
        self.dir = JAILS / name

    def _pid(self) -> int | None:
        try:
            pid = int((self.dir / "pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def _enter(self, ns: str, cmd: Sequence[str]) -> list[str]:
        pid = self._pid()
        if pid is None:
            raise LabkitError(f"jail {self.name} is not running.")
        return ["nsenter", "-t", str(pid), "-m", "--", *netns_exec(ns, cmd)]

    # -- lifecycle --------------------------------------------------------------------
    def start(self, progress: Progress | None = None) -> None:
        if self._pid() is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        sock = self.dir / "guestd.sock"
        with open(self.dir / "guestd.log", "ab") as log:
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", JAIL_SCRIPT,
                 sys.executable, str(sock)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True, cwd=ROOT)
        (self.dir / "pid").write_text(str(proc.pid))
        wait_until(lambda: self._answers(proc), 120, f"labkit's daemon in jail {self.name}")

    def _answers(self, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise LabkitError(f"jail {self.name} exited: "
                              f"{(self.dir / 'guestd.log').read_text()[-500:]}")
        try:
            return self.call(None, "labkit.hosts.guestd:ping", timeout=5) == "pong"
        except OSError:
            return False

    def stop(self) -> None:
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: self._pid() is None or _zombie(pid), 30,
                       f"jail {self.name} to end")
        shutil.rmtree(self.dir, ignore_errors=True)

    def release(self, lab: str) -> bool:
        if self._pid() is None or users.of(self.name, lab):
            return False
        self.stop()
        return True

    def status(self) -> str | None:
        return "running" if self._pid() is not None else None

    def peer_address(self) -> str:
        return ""  # one jail per lab part; no underlay between jails

    # -- calls and commands ------------------------------------------------------------
    def call(self, lab: NamedLab | str | None, fn: str, *args: Any, timeout: float = 600,
             **kwargs: Any) -> Any:
        name = lab if isinstance(lab, str) or lab is None else lab.name
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.dir / "guestd.sock"))
            conn.sendall(rpc.request(fn, name, list(args), kwargs))
            with conn.makefile("rb") as reader:
                reply = rpc.read_message(reader, "reply")
        return rpc.parse_reply(reply, f"in jail {self.name}")

    def run(self, ns: str, cmd: Sequence[str], *, timeout: float | None = 60,
            input: str | None = None, capture: bool = True,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self._enter(ns, cmd), timeout=timeout, text=True,
                              capture_output=capture, input=input)
        done.args = list(cmd)
        if check:
            done.check_returncode()
        return done

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self._enter(ns, cmd), **kwargs)
        pid = self._pid()
        if pid is not None:  # in the node when this returns, as LocalHost.popen's are
            with contextlib.suppress(OSError):
                netns.wait_inside(proc, os.stat(f"/proc/{pid}/root/run/netns/{ns}").st_ino)
        return proc

    def own_pid(self, proc: subprocess.Popen[Any]) -> int | None:
        return None  # the jail's own record knows its processes (found by namespace)

    def interrupt(self, proc: subprocess.Popen[Any]) -> None:
        proc.send_signal(signal.SIGINT)

    def exec(self, ns: str, cmd: Sequence[str], env: dict[str, str] | None = None,
             tty: bool = False) -> int:
        return subprocess.run(self._enter(ns, cmd), env={**os.environ, **(env or {})}
                              ).returncode

    def command(self, ns: str, cmd: Sequence[str]) -> list[str]:
        return self._enter(ns, cmd)

    def socket(self, ns: str, family: int, type: int, proto: int) -> socket.socket:
        with self.entered(ns):
            return socket.socket(family, type, proto)

    @contextmanager
    def entered(self, ns: str) -> Iterator[None]:
        """The node's namespace as the jail names it, seen through the jail's root."""
        pid = self._pid()
        if pid is None:
            raise LabkitError(f"jail {self.name} is not running.")
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd = os.open(f"/proc/{pid}/root/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                netns.enter_fd(fd)
            finally:
                os.close(fd)
            try:
                yield
            finally:
                netns.enter_fd(orig)
        finally:
            os.close(orig)


def _zombie(pid: int) -> bool:
    """A killed child of this process that nobody has reaped yet counts as ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


@pytest.fixture(autouse=True)
def on_jails() -> Iterator[None]:
    """Every lab part placed while a test runs is held by a JailHost."""
    previous = placed.use(JailHost)
    try:
        yield
    finally:
        placed.use(previous)


@pytest.fixture
def lab_up(topo_file: Callable[..., tuple[str, str]]) -> Iterator[Callable[..., Lab]]:
    """conftest's lab_up, with each lab placed in a part of its own (held by a jail)."""
    labs: list[Lab] = []
    yield from labs_brought_up(topo_file, labs, on="debian-6.12", isolated=True)
    assert not [d for d in JAILS.glob("*") if any(lab.name in d.name for lab in labs)]


def test_the_jail_is_a_host_of_its_own(lab_up: Callable[..., Lab]) -> None:
    """The positive control for the borrowed tests: the lab runs in the jail, not here."""
    lab = lab_up(ROOT / "topologies" / "pair.yaml")
    host = lab.node("a").host
    assert isinstance(host, JailHost) and host.status() == "running"
    assert not os.path.exists(f"/run/netns/{names.node_ns(lab.name, 'a')}")  # not here
    assert lab.node("a").run(["ip", "-br", "link", "show", "eth1"]).returncode == 0
    with lab.node("a").socket() as sock:  # node a's address exists only in node a
        sock.bind(("198.19.0.1", 0))
    with pytest.raises(OSError), socket.socket() as here:  # the control: not in this one
        here.bind(("198.19.0.1", 0))
    removed = lab.down()
    assert removed.vms == [host.name] and host.status() is None
    assert set(removed.namespaces) == {names.node_ns(lab.name, n) for n in ("a", "b")}
