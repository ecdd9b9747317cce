"""The interface every lab host implements."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

Progress = Callable[[int, int, str], None]


class LabHost(Protocol):
    """One kernel that holds some (or all) nodes of a lab."""

    name: str  # "local", or the VM's name
    local: bool  # True when its kernel is this process's own (sockets can be handed over)

    def start(self, progress: Progress | None = None) -> None:
        """Make the kernel ready for the lab (boot the VM, start its daemon)."""

    def stop(self) -> None:
        """Release the kernel (stop the VM); nothing of the lab is left there."""

    def call(self, lab: Lab | str | None, fn: str, *args: Any, timeout: float = 600,
             **kwargs: Any) -> Any:
        """Run the @remote function fn (a "module:name" path) next to this kernel."""

    def run(self, ns: str, cmd: Sequence[str], *, timeout: float | None = 60,
            input: str | None = None, capture: bool = True,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run cmd in a namespace of this kernel and wait for it."""

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start cmd in a namespace of this kernel; a Popen whose pipes work as usual."""

    def shell(self, ns: str, cmd: Sequence[str], env: dict[str, str]) -> int:
        """An interactive command on this terminal, in a namespace of this kernel."""
