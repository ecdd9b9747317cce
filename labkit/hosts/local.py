"""The kernel this process runs on: everything happens in-process or as a child."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from labkit.base import netns
from labkit.base.busybox import static_busybox
from labkit.errors import UsageError
from labkit.hosts import rpc
from labkit.hosts.host import NamedLab, Progress

# What `ip netns exec` does (enter the namespace, a mount namespace of the command's own
# whose mounts do not flow back, /sys remounted so that it shows this namespace), done by a
# statically linked busybox: loading the dynamically linked `ip` costs ~160 ms of emulated
# CPU per command in a TCG guest, busybox's steps ~25 ms
# (benchmarks/results/vmlab-tcg-2026-12-07-s3.md). The command goes by its absolute path:
# busybox's shell would run its own applet of the same name (its `ip`, its `grep`).
_REMOUNT_SYS = 'umount -l /sys 2>/dev/null; mount -t sysfs sysfs /sys || exit 126; exec "$@"'


def netns_exec(ns: str, cmd: Sequence[str]) -> list[str]:
    """The argv that runs cmd inside a namespace with its own /sys, like `ip netns exec`
    (which it is, where there is no static busybox or cmd is not on PATH)."""
    import shutil  # here: it imports bz2 and lzma, ~0.15 s of a lab VM daemon's start

    busybox = static_busybox()
    prog = None
    if cmd:
        prog = cmd[0] if "/" in cmd[0] else shutil.which(cmd[0])
    if busybox is None or prog is None:
        return ["ip", "netns", "exec", ns, *cmd]
    return [busybox, "nsenter", f"--net={netns.NETNS_RUN_DIR}/{ns}", "--",
            busybox, "unshare", "-m", "--propagation", "slave", "--",
            busybox, "sh", "-c", _REMOUNT_SYS, "sh", prog, *cmd[1:]]


class LocalHost:
    name = "local"

    def start(self, progress: Progress | None = None) -> None:
        pass

    def stop(self) -> None:
        pass

    def release(self, lab: str) -> bool | None:
        return None  # this machine's kernel is no machine to stop

    def status(self) -> str | None:
        return "running"

    def peer_address(self) -> str:
        return ""

    def call(self, lab: NamedLab | str | None, fn: str, *args: Any, timeout: float = 600,
             **kwargs: Any) -> Any:
        return rpc.call_here(fn, lab, list(args), kwargs)

    def run(self, ns: str, cmd: Sequence[str], *, timeout: float | None = 60,
            input: str | None = None, capture: bool = True,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(netns_exec(ns, cmd), check=check, timeout=timeout, text=True,
                              capture_output=capture, input=input)

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """The process, already inside the node when this returns: `ip netns exec` opens
        the namespace and enters it after its start (seconds later on a loaded TCG guest),
        and a `down` in that window neither found it nor kept it out (it then ran on in
        the unmounted namespace, seen in CI)."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(netns_exec(ns, cmd), **kwargs)
        netns.wait_inside(proc, netns.inode(ns))
        return proc

    def own_pid(self, proc: subprocess.Popen[Any]) -> int | None:
        return proc.pid

    def interrupt(self, proc: subprocess.Popen[Any]) -> None:
        proc.send_signal(signal.SIGINT)

    def exec(self, ns: str, cmd: Sequence[str], env: dict[str, str] | None = None,
             tty: bool = False) -> int:
        argv = netns_exec(ns, cmd)
        os.environ.update(env or {})
        try:
            os.execvp(argv[0], argv)  # the terminal is ours already: become the command
        except OSError as exc:
            raise UsageError(f"cannot run {argv[0]}: {exc.strerror}.") from None
        return 0  # not reached

    def command(self, ns: str, cmd: Sequence[str]) -> list[str]:
        return netns_exec(ns, cmd)

    def socket(self, ns: str, family: int, type: int, proto: int) -> socket.socket:
        return netns.socket_in(ns, family, type, proto)

    def entered(self, ns: str) -> AbstractContextManager[Any]:
        return netns.entered(ns)
