"""Persistent VMs' life: boot one in the background under its supervisor (returning once its
agent answers), and stop it (its whole process group, then its state and, if it was the
last, the backplane). The supervisor (supervisor.py) leads a process group holding vng and
qemu; `stop` kills that group and waits until it is empty, whatever state the VM is in."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labkit.base import files, procs
from labkit.base.files import write_private
from labkit.base.wait import Timeout, wait_until
from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import backplane as bp
from labkit.hosts.vm import boot, paths
from labkit.hosts.vm.kernels import DEFAULT_KERNEL
from labkit.hosts.vm.vmstate import (
    DEFAULT_NAME,
    LIVE,
    STOP_REAPED,
    VmInfo,
    _dir,
    _info,
    _require,
    _tail,
    parse_forward,
    state_json,
)
from labkit.hosts.vm.vng import Backplane, vng_argv, vng_env


def start(
    name: str = DEFAULT_NAME,
    kernel: str = DEFAULT_KERNEL,
    *,
    memory: str | None = None,
    cpus: int | None = None,
    forwards: Sequence[str | tuple[int, int]] = (),
    overlays: Sequence[str] = (),
    rwdirs: Sequence[str] = (),
    modules: Sequence[str] | None = None,
    boot_timeout: float | None = None,
    backplane: bool = False,
    cached: Sequence[str] = (),
    append: Sequence[str] = (),
    guestd: str = "",
) -> VmInfo:
    """Boot a VM that stays up in the background; returns once its agent answers.

    backplane=True gives it a NIC on the lab VMs' private network (labs spanning kernels).
    guestd: a python whose labkit's daemon the agent starts at boot (a lab's VM).
    """
    state = _dir(name)
    if state.exists():
        info = _info(state)
        if info.status in LIVE:
            raise UsageError(
                f"The VM {name} is already {info.status}.",
                hint=f"Use it with `labkit vm exec {name} -- CMD`, or stop it first with "
                f"`labkit vm stop {name}`.",
            )
        _cleanup(state)
    fwd = [f if isinstance(f, tuple) else parse_forward(f) for f in forwards]
    for host_port, _ in fwd:
        _check_port_free(host_port)
    state.parent.mkdir(parents=True, exist_ok=True)
    try:
        state.mkdir(mode=0o755)
    except FileExistsError:
        raise UsageError(
            f"The VM {name} is being started by another labkit process.",
            hint="Wait for it, then see `labkit vm list`.",
        ) from None
    sup: subprocess.Popen[bytes] | None = None
    try:
        spec, tools = boot.prepare(
            kernel, hostname=name, serial_socket=str(state / "serial.sock"), oneshot=False,
            memory=memory, cpus=cpus, cwd="/", overlays=list(overlays),
            rwdirs=list(rwdirs), forwards=fwd, modules=None if modules is None else list(modules),
            cached=list(cached), append=list(append), guestd=guestd,
        )
        limit = boot_timeout or boot.BOOT_TIMEOUT[spec.accel.kind]
        summary: dict[str, Any] = {
            "name": name, "status": "booting", "kernel": spec.kernel.name,
            "kernel_version": spec.kernel.version, "accel": spec.accel.kind,
            "memory": memory or "1G", "cpus": cpus, "forwards": [f"{h}:{g}" for h, g in fwd],
            "kernel_options": list(append),
        }
        config: dict[str, Any] = {"env": vng_env(tools), "boot_timeout": limit}
        with bp.locked() if backplane else contextlib.nullcontext():
            if backplane:
                bp.ensure()
                index = _free_backplane_index()
                spec.backplane = Backplane(bp.tap_name(name), bp.mac(name),
                                           f"{bp.address(index)}/{bp.NETWORK.prefixlen}", bp.MTU)
                summary["backplane"] = {"index": index, "address": bp.address(index),
                                        "tap": spec.backplane.tap}
                config["backplane_vm"] = name
            config["argv"] = vng_argv(spec, tools)
            write_private(state / "config.json", json.dumps(config, indent=2))
            (state / "state.json").write_text(json.dumps(summary, indent=2, sort_keys=True)
                                              + "\n")
        sup = _spawn_supervisor(state)
        info = _wait_ready(state, sup, limit + 15)
    except BaseException:
        if sup is not None:
            procs.stop_group(sup.pid, sup)
        _cleanup(state)
        raise
    with contextlib.suppress(OSError, ValueError, AttributeError, files.FileRefused):
        boot.report_warnings(json.loads(files.read_bounded(state / "state.json", files.STATE))
                             .get("guest", {}),
                             f"the VM {name}")
    return info


def _free_backplane_index() -> int:
    """The lowest backplane host number no other VM holds (caller holds bp.locked())."""
    taken = set()
    for d in paths.state_dir().iterdir() if paths.state_dir().is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, files.FileRefused):
            taken.add(int(json.loads(files.read_bounded(d / "state.json", files.STATE))
                          ["backplane"]["index"]))
    return next(i for i in range(1, 65535) if i not in taken)


def _spawn_supervisor(state: Path) -> subprocess.Popen[bytes]:
    with open(state / "supervisor.log", "ab") as log:
        os.chmod(state / "supervisor.log", 0o600)
        return subprocess.Popen(
            [sys.executable, "-m", "labkit.hosts.vm.supervisor", str(state)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd="/",
        )


def _wait_ready(state: Path, sup: subprocess.Popen[bytes], timeout: float) -> VmInfo:
    def ready() -> VmInfo | None:
        info = _info(state)
        if info.status == "running":
            return info
        if info.status not in LIVE or sup.poll() is not None:
            reason = info.reason or _tail(state / "supervisor.log")
            raise LabkitError(
                f"The VM {info.name} failed to start: {reason}",
                hint="Check the kernel with `labkit vm kernels list`; the console log "
                "is quoted above.",
            )
        return None

    try:
        return wait_until(ready, timeout, f"the VM {state.name} to start", interval=0.1)
    except Timeout:
        raise LabkitError(
            f"The VM {state.name} did not start within {timeout:.0f} s."
            f"{boot.console_tail(state / 'console.log')}",
            hint="Under TCG on a loaded host, pass a larger boot timeout.",
        ) from None


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(
                f"Host port {port} is already in use ({exc.strerror}), so it cannot be "
                "forwarded to the VM.",
                hint="Pick another host port: `--forward OTHERPORT:GUESTPORT`.",
            ) from exc


def stop(name: str = DEFAULT_NAME) -> VmInfo:
    """Kill the VM's whole process group, wait until it is empty, remove its state.

    Works on running, booting, crashed and half-cleaned VMs alike; returns what the VM's
    state was before.
    """
    state = _dir(name)
    info = _require(state, name)
    _cleanup(state)
    return info


def _cleanup(state: Path) -> None:
    data = state_json(state)
    pgid = data.get("pgid")
    if isinstance(pgid, int) and pgid > 1:
        started = data.get("starttime")
        leader_reused = os.path.exists(f"/proc/{pgid}") and not procs.alive(pgid, started)
        if not leader_reused:  # never signal a group whose id now belongs to someone else
            procs.stop_group(pgid)
            # "stopped" only once qemu is gone, not a zombie (the supervisor reaps it)
            with contextlib.suppress(Timeout):
                wait_until(lambda: not procs.group_remains(pgid), STOP_REAPED,
                           f"the VM {state.name}'s processes to be reaped")
    shutil.rmtree(state, ignore_errors=True)
    if data.get("backplane"):
        with bp.locked():
            bp.remove_if_unused()


