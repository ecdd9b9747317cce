"""Run labs and tests on another kernel, inside a VM booted with virtme-ng.

The host's kernel may lack what a lab needs (TIPC, kTLS, handshake netlink); a VM running
a distribution kernel has it. Public API (imports are lazy so the guest agent, which
lives in this package, starts without pulling in labkit's CLI stack):

- run(cmd, kernel="debian-6.12", ...) -> int | Completed: one-shot boot, run, power off.
- start(name, kernel=...), exec_(name, cmd) -> int | Completed, stop(name), list_vms():
  a persistent VM in the background.
- kernels.fetch / kernels.list_cached / kernels.resolve: the guest kernel cache.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Completed", "VmInfo", "exec_", "list_vms", "run", "start", "stop"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from labkit.hosts.vm.oneshot import run

        return run
    if name == "Completed":
        from labkit.hosts.vm.session import Completed

        return Completed
    if name in ("start", "exec_", "stop", "list_vms", "VmInfo"):
        from labkit.hosts.vm import persistent

        return getattr(persistent, name)
    raise AttributeError(name)
