"""Processes: reading /proc/PID/stat, telling a live process from a reused PID, and
stopping processes (SIGTERM, a grace period, then SIGKILL) without leaving zombies.

Lab teardown, the VM supervisor and `vm stop` all stop processes the same way, through
here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat labkit uses (proc(5) numbering in comments)."""

    pid: int
    state: str  # (3) R, S, D, Z, ...
    ppid: int  # (4)
    pgid: int  # (5)
    utime: int  # (14) clock ticks
    stime: int  # (15)
    starttime: int  # (22) clock ticks since boot: with pid, identifies a process

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def stat(pid: int) -> Stat | None:
    """The process's stat line, parsed; None if it does not exist (any more)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain ") ".
    fields = text[text.rindex(")") + 2:].split()
    return Stat(pid=pid, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]),
                utime=int(fields[11]), stime=int(fields[12]), starttime=int(fields[19]))


def starttime(pid: int) -> int | None:
    st = stat(pid)
    return st.starttime if st else None


def alive(pid: int, started: int | None = None) -> bool:
    """True while pid runs (zombies count as gone); with `started`, only if it is still the
    same process and not a new one that reused the PID."""
    st = stat(pid)
    return st is not None and not st.zombie and (started is None or st.starttime == started)


def all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group.

    killpg(pgid, 0) would count zombies too, and orphaned zombies may never be reaped when
    PID 1 is not a real init (as in some CI sandboxes).
    """
    out = []
    for pid in all_pids():
        st = stat(pid)
        if st is not None and not st.zombie and st.pgid == pgid:
            out.append(pid)
    return out


def reap(pids: list[int]) -> None:
    """Collect the ones that are our own children, so they leave no zombie."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def stop(pids: list[int], grace: float = 2.0) -> list[int]:
    """SIGTERM each, SIGKILL what is still alive after `grace` seconds; returns the pids
    that were signalled."""
    signalled = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
    _settle(lambda: [p for p in signalled if alive(p)], grace, signalled)
    for pid in signalled:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _settle(lambda: [p for p in signalled if alive(p)], grace, signalled)
    return signalled


def stop_group(pgid: int, leader: subprocess.Popen[bytes] | None = None,
               grace: float = 5.0, exclude: int | None = None) -> None:
    """SIGTERM a whole process group, then SIGKILL what is left.

    `leader` is the group leader when we are its parent: it is reaped here. `exclude`
    is a member that must survive (the caller itself, when it leads the group).
    """
    def members() -> list[int]:
        return [p for p in group_members(pgid) if p != exclude]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = members()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        _settle(members, grace, pids, leader)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=grace)


def _settle(remaining: object, grace: float, pids: list[int],
            leader: subprocess.Popen[bytes] | None = None) -> None:
    """Wait (bounded) until remaining() is empty, reaping our children meanwhile."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(pids)
        if leader is not None:
            leader.poll()
        if not remaining():  # type: ignore[operator]
            break
        time.sleep(0.02)
    # one that died between the last reap and the check is a zombie (counted as gone) until
    # collected: its /proc entry would outlive `down` (seen in CI)
    reap(pids)


PR_SET_PDEATHSIG = 1  # prctl(2), linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn that makes the child get `sig` when the process starting it dies, even
    by SIGKILL (prctl PR_SET_PDEATHSIG): a server labkit starts never outlives it.

    The parent's pid is taken now, so a parent that died between fork and prctl is seen
    (the child's parent is then another process) and the child signals itself.
    """
    import ctypes

    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


def become_subreaper() -> None:
    """Orphaned descendants become this process's children (not PID 1's): a supervisor
    then reaps the qemu its wrapper left, so "stopped" means the process is gone, not a
    zombie waiting for an init that reaps late (or never, in some sandboxes)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_children() -> None:
    """Collect every child that has exited (zombies), without waiting for live ones."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_remains(pgid: int) -> list[int]:
    """Processes of a group that still exist, zombies included, except a zombie leader
    (reaped by whoever its parent is): what must be gone before saying the group is."""
    out = []
    for pid in all_pids():
        st = stat(pid)
        if st is not None and st.pgid == pgid and not (pid == pgid and st.zombie):
            out.append(pid)
    return out
