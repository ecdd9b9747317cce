"""A kernel in a persistent VM: the VM, its guest daemon, and the calls that reach them.

Commands (Node.run/popen, `labkit exec`) go straight to the VM's agent, which starts them
in the node's namespace: no Python starts in the guest for them. Kernel-facing Python
(building the lab, netlink status, verifications) runs in the guest daemon, which
imported labkit once at boot, through a relayed channel: one JSON line each way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, NoReturn

from labkit.base import trace
from labkit.errors import LabkitError, UsageError
from labkit.hosts import rpc, users
from labkit.hosts.host import NamedLab, Progress
from labkit.hosts.local import netns_exec

GUESTD_SOCKET = "/run/labkit/guestd.sock"
# labkit's own package, served to lab VMs from the cached share: every agent and the
# daemon import it, and under TCG an uncached import costs seconds.
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MEMORY = "2G"
# Seconds a ping may take: the daemon answers at once, but the first one waits in the
# guest until a booting daemon listens (VmHost._await_daemon).
PING_TIMEOUT = 30.0


def _same_kernel(recorded: str, wanted: str) -> bool:
    """A VM records the cache entry it booted (debian-6.12.118); a lab asks by any name
    that resolves to it (debian-6.12, 6.12.118): the same kernel is the same entry."""
    if recorded == wanted:
        return True
    from labkit.hosts.vm import kernels

    try:
        return kernels.resolve(wanted).name == recorded
    except LabkitError:
        return False


class VmHost:
    def __init__(self, vm: str, kernel: str, modules: Sequence[str] = (),
                 memory: str | None = None, append: Sequence[str] = (),
                 preload: Sequence[str] = ()) -> None:
        self.name, self.vm, self.kernel = vm, vm, kernel
        self.modules = list(modules)
        # loaded at boot too (one modprobe for all), never by hand in a VM already up:
        # the kernel autoloads them when the lab needs them
        self.preload = [m for m in preload if m not in self.modules]
        self.append = list(append)  # kernel command-line options (a lab's own VM only)
        self.memory = memory or DEFAULT_MEMORY
        self._relay: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<VmHost {self.vm} ({self.kernel})>"

    # -- lifecycle --------------------------------------------------------------------
    def start(self, progress: Progress | None = None) -> None:
        """Make sure the kernel's VM runs with labkit's daemon in it: reuse it when it is
        up already (labs on one kernel share its VM), boot it otherwise."""
        from labkit.hosts.vm import persistent

        say = progress or (lambda d, t, w: None)
        with persistent.locked(self.vm):
            info = persistent.info(self.vm)
            if info is not None and info.status == "running":
                if not _same_kernel(info.kernel, self.kernel):
                    raise LabkitError(
                        f"VM {self.vm} runs kernel {info.kernel}, not {self.kernel}.",
                        hint=f"Stop it (`labkit vm stop {self.vm}`) or pick its kernel.")
                if self._answers():
                    theirs = self._install()
                    # one install: the same venv's bin/ (python or python3 alike)
                    if os.path.dirname(theirs) == os.path.dirname(sys.executable):
                        self._load_modules()
                        say(2, 3, f"VM {self.vm} ({self.kernel}) is already up")
                        return
                    # another checkout's VM: its daemon runs that checkout's code, and the
                    # processes it starts would too (seen: a deleted CI clone's python)
                    others = self._users(exclude="")
                    if others:
                        raise LabkitError(
                            f"VM {self.vm} runs labkit from another install ({theirs}), "
                            f"not this one ({sys.executable}), for the labs "
                            f"{', '.join(others)}.",
                            hint=f"Bring those labs down with the install that made them "
                                 f"(or `labkit vm stop {self.vm}`), then try again.")
                    say(0, 3, f"VM {self.vm} runs another labkit install ({theirs}) and no "
                              "lab: restarting it")
                    self.stop()
                    info = None
            elif info is not None:  # crashed, failed, stopped: clear it away first
                persistent.stop(self.vm)
            if info is None or info.status != "running":
                say(0, 3, f"booting VM {self.vm} ({self.kernel})")
                trace.mark("VM boot requested", vm=self.vm)
                # the agent starts the daemon as soon as the guest's userspace runs, so
                # its imports overlap the rest of the boot
                booted = persistent.start(self.vm, kernel=self.kernel, memory=self.memory,
                                          modules=[*self.modules, *self.preload],
                                          backplane=True,
                                          cached=[PACKAGE], append=self.append,
                                          guestd=sys.executable)
                _trace_boot(booted)
                say(1, 3, f"waiting for labkit's daemon in VM {self.vm} (it imports "
                          "labkit under emulation)")
                if self._await_daemon(booted):
                    trace.mark("daemon ready", vm=self.vm)
                    say(2, 3, f"VM {self.vm} ready")
                    return
            say(1, 3, f"starting labkit in VM {self.vm}")
            self._start_daemon()
            trace.mark("daemon ready", vm=self.vm)
            say(2, 3, f"VM {self.vm} ready")

    def _await_daemon(self, booted: Any, timeout: float = 300) -> bool:
        """True once the daemon the agent started at boot answers; False if the agent did
        not start one (an agent from before this change), so the caller starts it."""
        from labkit.base.wait import wait_until
        from labkit.hosts.vm import persistent

        if not (_guest(booted).get("guest") or {}).get("guestd"):
            return False
        # The first try waits in the guest until the daemon serves (one channel, and the
        # call goes as soon as it can); any later one (an agent from before that) polls.
        with self._lock:
            self._relay = persistent.connect(self.vm, GUESTD_SOCKET, wait=PING_TIMEOUT / 2)
        wait_until(self._answers, timeout, f"labkit's daemon in VM {self.vm} to answer",
                   interval=0.3, hint=f"Its log is /run/labkit/guestd.log in the VM "
                                      f"(`labkit vm exec {self.vm} -- cat "
                                      "/run/labkit/guestd.log`).")
        return True

    def _answers(self) -> bool:
        try:
            return self.call(None, "labkit.hosts.guestd:ping", timeout=PING_TIMEOUT) == "pong"
        except LabkitError:
            self.close()
            return False

    def _install(self) -> str:
        """The python the VM's daemon runs (its labkit install), or why it cannot say."""
        try:
            return str(self.call(None, "labkit.hosts.guestd:install", timeout=30))
        except LabkitError:
            return "an older labkit"

    def _users(self, exclude: str) -> list[str]:
        """Labs (other than `exclude`) that use this boot of the VM."""
        from labkit.hosts.vm import persistent

        info = persistent.info(self.vm)
        return users.of(self.vm, exclude, info.started_at if info is not None else None)

    def _load_modules(self) -> None:
        """A VM booted for another lab loaded that lab's modules at boot: load this lab's
        too (modprobe of a loaded module does nothing)."""
        from labkit.hosts.vm import persistent

        if not self.modules:
            return
        res = persistent.exec_(self.vm, ["modprobe", "-a", *self.modules], capture=True,
                               timeout=120, cwd="/")
        if res.code != 0:
            detail = (res.err or res.out).strip().splitlines()
            raise LabkitError(f"VM {self.vm} could not load the kernel modules "
                              f"{', '.join(self.modules)} this lab needs: "
                              f"{detail[-1] if detail else f'exit status {res.code}'}.",
                              hint=f"Stop the VM (`labkit vm stop {self.vm}`) once no lab "
                                   "uses it, and bring the lab up again.")

    def _start_daemon(self) -> None:
        from labkit.hosts.vm import paths, persistent

        res = persistent.exec_(self.vm, [sys.executable, "-m", "labkit.hosts.guestd",
                                         "--detach", "--socket", GUESTD_SOCKET],
                               capture=True, timeout=300, cwd="/")
        if res.code != 0 or b"ready" not in res.stdout:
            detail = (res.err or res.out).strip().splitlines()[-3:]
            raise LabkitError(f"labkit's daemon did not start in VM {self.vm}: "
                              f"{' / '.join(detail) or f'exit status {res.code}'}.",
                              hint=f"The VM's console log is in "
                                   f"{paths.state_dir() / self.vm}/console.log.")

    def release(self, lab: str) -> bool:
        """The lab no longer uses this VM: stop it if no other lab does; True if stopped."""
        from labkit.hosts.vm import persistent

        with persistent.locked(self.vm):
            if persistent.info(self.vm) is None or self._users(exclude=lab):
                return False
            self.stop()
            return True

    def stop(self) -> None:
        from labkit.errors import UsageError
        from labkit.hosts.vm import persistent

        self.close()
        try:
            persistent.stop(self.vm)
        except UsageError:  # already gone
            pass

    def status(self) -> str | None:
        from labkit.hosts.vm import persistent

        info = persistent.info(self.vm)
        return info.status if info is not None else None

    def peer_address(self) -> str:
        from labkit.hosts.vm import persistent

        info = persistent.info(self.vm)
        return info.backplane_address if info is not None else ""

    def close(self) -> None:
        with self._lock:
            if self._relay is not None:
                self._relay.close()
                self._relay = None

    # -- calls ------------------------------------------------------------------------
    def call(self, lab: NamedLab | str | None, fn: str, *args: Any, timeout: float = 600,
             **kwargs: Any) -> Any:
        from labkit.hosts.vm import persistent

        lab_name = lab if isinstance(lab, str) or lab is None else lab.name
        line = rpc.request(fn, lab_name, list(args), kwargs)
        started = time.monotonic()
        with self._lock:
            if self._relay is None:
                self._relay = persistent.connect(self.vm, GUESTD_SOCKET)
            try:
                self._relay.send(line)
                reply = self._relay.readline(timeout)
            except BaseException:
                self._relay.close()  # a half-read reply must never be read by the next call
                self._relay = None
                raise
        if not reply:
            self.close()
            raise LabkitError(f"labkit's daemon in VM {self.vm} closed the connection "
                              f"during {fn.split(':')[-1]}.",
                              hint="See `labkit vm list`; `labkit down` cleans up.")
        value, took = rpc.parse_timed_reply(reply, f"in VM {self.vm}")  # malformed: raises
        trace.mark(f"call {fn.split(':')[-1]} done", vm=self.vm,
                   host_s=round(time.monotonic() - started, 3), guest_s=took)
        return value

    def run(self, ns: str, cmd: Sequence[str], *, timeout: float | None = 60,
            input: str | None = None, capture: bool = True,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        from labkit.hosts.vm import persistent

        argv = netns_exec(ns, cmd)
        stdin = input.encode() if input is not None else None
        if capture:
            res = persistent.exec_(self.vm, argv, capture=True, stdin=stdin, timeout=timeout,
                                   cwd="/")
            done = subprocess.CompletedProcess(list(cmd), res.code, res.out, res.err)
        else:
            code = persistent.exec_(self.vm, argv, stdin=stdin, timeout=timeout, cwd="/")
            done = subprocess.CompletedProcess(list(cmd), code, None, None)
        if check:
            done.check_returncode()
        return done

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """A local relay process stands for the command in the VM: its pipes carry the
        command's, its exit status is the command's, killing it kills the command."""
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)  # never read the caller's own stdin
        argv = [sys.executable, "-m", "labkit.hosts.vm.relay", self.vm, "--",
                *netns_exec(ns, cmd)]
        return subprocess.Popen(argv, **kwargs)

    def own_pid(self, proc: subprocess.Popen[Any]) -> int | None:
        return None  # proc is the local relay; the command runs in the VM

    def interrupt(self, proc: subprocess.Popen[Any]) -> None:
        proc.send_signal(signal.SIGTERM)  # the relay passes SIGINT on to the command

    def exec(self, ns: str, cmd: Sequence[str], env: dict[str, str] | None = None,
             tty: bool = False) -> int:
        from labkit.hosts.vm import persistent

        if tty:
            return persistent.exec_pty(self.vm, netns_exec(ns, cmd), env=env or {})
        return persistent.exec_(self.vm, netns_exec(ns, cmd), cwd="/", env=env or None,
                                forward_stdin=not sys.stdin.isatty())

    def command(self, ns: str, cmd: Sequence[str]) -> list[str]:
        self._cannot_cross(ns, "a command line for this machine")

    def socket(self, ns: str, family: int, type: int, proto: int) -> socket.socket:
        self._cannot_cross(ns, "a socket")

    def entered(self, ns: str) -> AbstractContextManager[Any]:
        self._cannot_cross(ns, "entering its namespace")

    def _cannot_cross(self, ns: str, what: str) -> NoReturn:
        raise UsageError(
            f"namespace {ns} runs in VM {self.vm}: {what} cannot cross into it from "
            "this process.",
            hint="Use node.run(), node.popen() or node.call() (a @remote function run "
                 "next to the VM's kernel), or the labkit verbs, which do.")


def _guest(info: Any) -> dict[str, Any]:
    """The VM's state.json: the supervisor's times and the agent's HELLO ("guest")."""
    import json

    from labkit.base import files

    try:
        data = json.loads(files.read_bounded(os.path.join(info.state_dir, "state.json"),
                                             files.STATE))
    except (OSError, ValueError, TypeError, AttributeError, files.FileRefused):
        return {}
    return data if isinstance(data, dict) else {}


def _trace_boot(info: Any) -> None:
    """The boot's phases, from the supervisor's and the agent's own clocks: qemu started,
    the kernel began (the guest's uptime counted back from HELLO), userspace (the agent)
    started, HELLO reached the host."""
    state = _guest(info)
    hello, ready = state.get("guest") or {}, state.get("ready_at")
    if state.get("started_at"):
        trace.mark("qemu started", at=float(state["started_at"]))
    if ready and hello.get("uptime") is not None:
        trace.mark("kernel started", at=float(ready) - float(hello["uptime"]))
        if hello.get("agent_uptime") is not None:
            trace.mark("userspace (agent) started",
                       at=float(ready) - float(hello["uptime"]) + float(hello["agent_uptime"]))
        for what, uptime in hello.get("steps") or []:  # the agent's setup (agent.STEPS)
            if uptime is not None:
                trace.mark(f"agent: {what}", at=float(ready) - float(hello["uptime"]) + uptime)
    if ready:
        trace.mark("agent HELLO", at=float(ready))

