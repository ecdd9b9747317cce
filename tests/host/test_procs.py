"""Stopping processes leaves nothing behind, not even a zombie: a lab's `down` is checked
by whether /proc/PID still exists, and a zombie's entry does."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from labkit.base import procs
from labkit.base.wait import wait_until


def test_a_child_that_dies_just_after_a_reap_is_still_collected(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The window seen in CI (a handshake daemon 'outlived down'): the daemon outlasted
    SIGTERM's grace; after the SIGKILL, stop()'s wait reaped, then the child died, then the
    check counted its zombie as gone and returned, leaving it in /proc."""
    child = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    wait_until(lambda: "TERM" in _ignored(child.pid), 10, "the child to ignore SIGTERM")
    real_reap, real_kill = procs.reap, os.kill
    sent: list[int] = []

    def kill(pid: int, sig: int) -> None:
        sent.append(sig)
        real_kill(pid, sig)

    def reap(pids: list[int]) -> None:
        if sent[-1:] == [signal.SIGKILL] and sent.count(-1) == 0:
            sent.append(-1)  # once: this reap came just before the death
            wait_until(lambda: (st := procs.stat(child.pid)) is not None and st.zombie, 10,
                       "the killed child to be a zombie")
            return
        real_reap(pids)

    monkeypatch.setattr(procs, "reap", reap)
    monkeypatch.setattr(os, "kill", kill)
    try:
        procs.stop([child.pid], grace=0.5)
        monkeypatch.undo()
        assert sent == [signal.SIGTERM, signal.SIGKILL, -1]  # the window was taken
        assert procs.stat(child.pid) is None, "stop() left a zombie"
    finally:
        monkeypatch.undo()
        child.kill()
        child.wait()


def _ignored(pid: int) -> str:
    """'TERM' if the process ignores SIGTERM (SigIgn in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigIgn:"))
    return "TERM" if mask & (1 << (signal.SIGTERM - 1)) else ""


def test_stop_ends_children_and_strangers() -> None:
    """Positive control of the check above: what stop() signals is gone from /proc, its
    own children reaped, a process that ignores SIGTERM killed."""
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    plain = subprocess.Popen(["sleep", "60"])
    try:
        assert procs.alive(stubborn.pid) and procs.alive(plain.pid)
        signalled = procs.stop([stubborn.pid, plain.pid], grace=0.5)
        assert set(signalled) == {stubborn.pid, plain.pid}
        assert not os.path.exists(f"/proc/{plain.pid}")
        assert not os.path.exists(f"/proc/{stubborn.pid}")
    finally:
        for p in (stubborn, plain):
            p.kill()
            p.wait()
