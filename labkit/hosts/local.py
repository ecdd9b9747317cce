"""The kernel this process runs on: everything happens in-process or as a child."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from labkit.hosts import rpc
from labkit.hosts.host import Progress

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def netns_exec(ns: str, cmd: Sequence[str]) -> list[str]:
    """The argv that runs cmd inside a namespace with its own /sys, like `ip netns exec`."""
    return ["ip", "netns", "exec", ns, *cmd]


class LocalHost:
    name = "local"
    local = True

    def start(self, progress: Progress | None = None) -> None:
        pass

    def stop(self) -> None:
        pass

    def call(self, lab: Lab | str | None, fn: str, *args: Any, timeout: float = 600,
             **kwargs: Any) -> Any:
        func = rpc.resolve(fn)
        if rpc.takes_lab(func):
            if isinstance(lab, str):
                from labkit.lab.lab import Lab

                lab = Lab.attach(lab)
            return func(lab, *args, **kwargs)
        return func(*args, **kwargs)

    def run(self, ns: str, cmd: Sequence[str], *, timeout: float | None = 60,
            input: str | None = None, capture: bool = True,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(netns_exec(ns, cmd), check=check, timeout=timeout, text=True,
                              capture_output=capture, input=input)

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(netns_exec(ns, cmd), **kwargs)

    def shell(self, ns: str, cmd: Sequence[str], env: dict[str, str]) -> int:
        argv = netns_exec(ns, cmd)
        os.environ.update(env)
        os.execvp(argv[0], argv)  # the terminal is ours already: become the shell
        return 0  # not reached
