"""The interface every lab host implements: everything a caller needs from where a lab's
nodes run. Callers never ask which kind of host they hold; they ask the host."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

Progress = Callable[[int, int, str], None]
# The kernel name of the part of a lab that runs on this machine's own kernel (its host is
# labkit.hosts.local.LocalHost; labkit.hosts.placed hands it out).
THIS_KERNEL = "host"


class NamedLab(Protocol):
    """What this layer knows of a lab: its name (labkit.lab rebuilds the rest)."""

    name: str


class LabHost(Protocol):
    """One kernel that holds some (or all) nodes of a lab."""

    name: str  # "local", or the VM's name

    # -- lifecycle --------------------------------------------------------------------
    def start(self, progress: Progress | None = None) -> None:
        """Make the kernel ready for the lab (boot the VM, start its daemon)."""

    def stop(self) -> None:
        """Stop the kernel's machine (a VM) whoever uses it; nothing is left there."""

    def release(self, lab: str) -> bool | None:
        """The lab no longer uses this host: stop it if no other lab does. True if it was
        stopped, False if it stays up for other labs, None if it is no machine of its own
        to stop (this machine's kernel)."""

    def status(self) -> str | None:
        """"running" when it serves; None when it is not there at all; else why not
        ("crashed", "stopped", "failed", "booting")."""

    def peer_address(self) -> str:
        """The address other hosts of a lab reach this one at (the VXLAN underlay);
        "" when it has none."""

    # -- calls and commands ------------------------------------------------------------
    def call(self, lab: NamedLab | str | None, fn: str, *args: Any, timeout: float = 600,
             **kwargs: Any) -> Any:
        """Run the @remote function fn (a "module:name" path) next to this kernel."""

    def run(self, ns: str, cmd: Sequence[str], *, timeout: float | None = 60,
            input: str | None = None, capture: bool = True,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run cmd in a namespace of this kernel and wait for it."""

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start cmd in a namespace of this kernel; a Popen whose pipes work as usual."""

    def own_pid(self, proc: subprocess.Popen[Any]) -> int | None:
        """The pid on this machine of the command a popen() started, when proc is that
        command itself (a lab records it); None when proc only stands for it."""

    def interrupt(self, proc: subprocess.Popen[Any]) -> None:
        """Ask a command popen() started to stop as Ctrl-C would (it may save its work)."""

    def exec(self, ns: str, cmd: Sequence[str], env: dict[str, str] | None = None,
             tty: bool = False) -> int:
        """Run cmd on this terminal (stdin, stdout, stderr; a pseudo-terminal with tty)
        and return its exit status; may replace this process by the command."""

    # -- what only this process's own kernel allows --------------------------------------
    def command(self, ns: str, cmd: Sequence[str]) -> list[str]:
        """The argv that runs cmd in the namespace from this machine's shell."""

    def socket(self, ns: str, family: int, type: int, proto: int) -> socket.socket:
        """A socket in the namespace, usable from this process."""

    def entered(self, ns: str) -> AbstractContextManager[Any]:
        """Move the calling thread into the namespace for the block."""
