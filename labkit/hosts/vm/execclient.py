"""Commands in a running persistent VM: through its supervisor's control socket to the agent,
with their exit status, output, stdin and (exec_pty) a terminal. Several may run at once."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Literal, overload

from labkit.errors import LabkitError
from labkit.hosts.vm.session import (
    Completed,
    make_request,
    run_pty_session,
    run_session,
    streams_are_same,
)
from labkit.hosts.vm.vmstate import _dir, _require


@overload
def exec_(
    name: str, cmd: Sequence[str], *, capture: Literal[False] = ..., cwd: str | None = ...,
    env: dict[str, str] | None = ..., stdin: bytes | None = ..., forward_stdin: bool = ...,
    merge_stderr: bool | None = ..., timeout: float | None = ...,
) -> int: ...


@overload
def exec_(
    name: str, cmd: Sequence[str], *, capture: Literal[True], cwd: str | None = ...,
    env: dict[str, str] | None = ..., stdin: bytes | None = ..., forward_stdin: bool = ...,
    merge_stderr: bool | None = ..., timeout: float | None = ...,
) -> Completed: ...


def exec_(
    name: str,
    cmd: Sequence[str],
    *,
    capture: bool = False,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    forward_stdin: bool = False,
    merge_stderr: bool | None = None,
    timeout: float | None = None,
) -> int | Completed:
    """Run `cmd` as root in the running VM `name`: its exit status, or with capture=True a
    Completed with status, stdout and stderr. Several exec_ calls may run at once."""
    if merge_stderr is None:
        merge_stderr = not capture and streams_are_same()
    request = make_request(list(cmd), cwd=cwd, env=env, merge_stderr=merge_stderr, vm_name=name)
    sock = _control(name)
    try:
        result = run_session(
            sock, request, capture=capture, stdin_data=stdin,
            forward_stdin=forward_stdin and stdin is None, timeout=timeout,
        )
    finally:
        sock.close()
    return result if capture else result.code


def exec_pty(name: str, cmd: Sequence[str], *, cwd: str | None = None,
             env: dict[str, str] | None = None) -> int:
    """Run an interactive command on a pseudo-terminal in the VM, from this terminal."""
    request = make_request(list(cmd), cwd=cwd or "/", env=env, vm_name=name)
    sock = _control(name)
    try:
        return run_pty_session(sock, request)
    finally:
        sock.close()


def _control(name: str) -> socket.socket:
    """A connection to a running VM's supervisor, or a clear error saying what the VM is."""
    state = _dir(name)
    info = _require(state, name)
    if info.status != "running":
        what = {
            "crashed": "has crashed", "failed": "failed to start", "stopped": "was stopped",
            "booting": "is still booting",
        }.get(info.status, f"is {info.status}")
        reason = info.reason.strip().splitlines()[0].rstrip(".") if info.reason.strip() else ""
        raise VmDown(
            f"The VM {name} {what}" + (f": {reason}." if reason else "."),
            hint=f"Clean it up with `labkit vm stop {name}`, then `labkit vm start {name}`."
            if info.status != "booting" else "Wait for `labkit vm start` to finish.",
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(state / "ctl.sock"))
    except OSError as exc:
        sock.close()
        raise VmDown(
            f"Cannot reach the VM {name} ({exc.strerror}).",
            hint=f"It may just have crashed: see `labkit vm list`, then `labkit vm stop {name}`.",
        ) from exc
    return sock


class VmDown(LabkitError):
    """The VM is not running (crashed, stopped, failed, still booting)."""


