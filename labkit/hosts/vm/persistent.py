"""Persistent VMs: start one in the background, exec into it, list, stop.

State lives in /run/labkit/vm/NAME/ (gone after a host reboot, like the VM):
  config.json   how to boot it, incl. the caller's environment (0600)
  state.json    status, supervisor pid/pgid, guest info (0644, read by `list`)
  ctl.sock      where `exec` connects (0600: root only)
  console.log   kernel and agent messages, for post-mortems (0600)
The supervisor process (see supervisor.py) leads a process group holding vng and qemu;
`stop` kills that group and waits until it is empty, whatever state the VM is in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from labkit.base import files, procs
from labkit.base.files import write_private
from labkit.base.wait import Timeout, wait_until
from labkit.errors import LabkitError, UsageError
from labkit.hosts.rpc import MAX_MESSAGE
from labkit.hosts.vm import backplane as bp
from labkit.hosts.vm import boot, paths, wire
from labkit.hosts.vm.kernels import DEFAULT_KERNEL
from labkit.hosts.vm.session import (
    Completed,
    VmGone,
    make_request,
    run_pty_session,
    run_session,
    streams_are_same,
)
from labkit.hosts.vm.vng import Backplane, vng_argv, vng_env

DEFAULT_NAME = "default"
# Bound on waiting for a stopped VM's zombies to be reaped: past it they hold nothing but
# their pids (an init that never reaps), and `stop` goes on.
STOP_REAPED = 10.0
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
LIVE = ("booting", "running")


@dataclass
class VmInfo:
    name: str
    status: str  # booting | running | stopped | crashed | failed
    kernel: str = ""
    kernel_version: str = ""
    accel: str = ""
    memory: str = ""
    cpus: int | None = None
    forwards: list[str] = field(default_factory=list)
    pid: int | None = None
    started_at: float | None = None
    reason: str = ""
    state_dir: str = ""
    backplane_address: str = ""  # on the lab VMs' private network, if it has a NIC there

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"Invalid VM name {name!r}.",
            hint="Use 1-32 characters: lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit.",
        )
    return name


def parse_forward(spec: str) -> tuple[int, int]:
    """HOSTPORT:GUESTPORT, or a single PORT for the same number on both sides."""
    host, _, guest = spec.partition(":")
    try:
        h, g = int(host), int(guest or host)
    except ValueError:
        h = g = 0
    if not (0 < h < 65536 and 0 < g < 65536):
        raise UsageError(
            f"Invalid port forward {spec!r}.",
            hint="Write HOSTPORT:GUESTPORT, e.g. `--forward 8888:8888`.",
        )
    return h, g


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Deciding to start, reuse or stop a shared VM happens one process at a time."""
    check_name(name)
    root = paths.state_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def info(name: str) -> VmInfo | None:
    """The VM's current info, or None if there is no such VM."""
    state = _dir(name)
    return _info(state) if state.is_dir() else None


def _dir(name: str) -> Path:
    return paths.state_dir() / check_name(name)


# -- start -------------------------------------------------------------------------------


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
    deadline = time.monotonic() + timeout
    while True:
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
        if time.monotonic() > deadline:
            raise LabkitError(
                f"The VM {info.name} did not start within {timeout:.0f} s."
                f"{boot.console_tail(state / 'console.log')}",
                hint="Under TCG on a loaded host, pass a larger boot timeout.",
            )
        time.sleep(0.1)


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


# -- exec --------------------------------------------------------------------------------


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


def connect(name: str, path: str) -> Relay:
    """A byte stream to the unix socket `path` inside the running VM `name`."""
    sock = _control(name)
    try:
        sock.sendall(wire.pack_json(wire.OPEN, 1, {"connect": path}))
    except OSError as exc:
        sock.close()
        raise LabkitError(f"Cannot reach the VM {name} ({exc.strerror}).") from exc
    return Relay(sock, name)


class Relay:
    """The host end of a relayed channel: bytes in as STDIN frames, out as STDOUT frames."""

    def __init__(self, sock: socket.socket, vm: str) -> None:
        self.sock, self.vm = sock, vm
        self.reader = wire.FrameReader()
        self.buf = bytearray()
        self.closed = False

    def send(self, data: bytes) -> None:
        for frame in wire.pack_chunks(wire.STDIN, 1, data):
            self.sock.sendall(frame)

    def readline(self, timeout: float | None = None) -> bytes:
        """One line (with its newline); b"" if the far end closed first."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            if self.closed:
                out, self.buf = bytes(self.buf), bytearray()
                return out
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise LabkitError(f"The VM {self.vm} did not answer within {timeout:g} s.",
                                  hint=f"See `labkit vm list`; its console log is in "
                                  f"{_dir(self.vm) / 'console.log'}.") from None
            if not data:
                raise VmGone(f"The VM {self.vm} went away (it crashed or was stopped).")
            for kind, _chan, payload in self.reader.feed(data):
                if kind == wire.STDOUT:
                    self.buf += payload
                elif kind == wire.EXIT:
                    reply = wire.load_json(payload) or {}
                    if "error" in reply:
                        raise LabkitError(f"The VM {self.vm} refused the connection: "
                                          f"{reply['error']}.")
                    self.closed = True
            if len(self.buf) > MAX_MESSAGE and b"\n" not in self.buf:  # bounded memory
                raise LabkitError(f"The VM {self.vm} sent a line longer than "
                                  f"{MAX_MESSAGE // 2**20} MiB.",
                                  hint="`labkit vm stop` resets it.")
        end = self.buf.index(b"\n") + 1
        line, self.buf = bytes(self.buf[:end]), self.buf[end:]
        return line

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


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


# -- stop, list --------------------------------------------------------------------------


def stop(name: str = DEFAULT_NAME) -> VmInfo:
    """Kill the VM's whole process group, wait until it is empty, remove its state.

    Works on running, booting, crashed and half-cleaned VMs alike; returns what the VM's
    state was before.
    """
    state = _dir(name)
    info = _require(state, name)
    _cleanup(state)
    return info


def list_vms() -> list[VmInfo]:
    root = paths.state_dir()
    if not root.is_dir():
        return []
    return [_info(d) for d in sorted(root.iterdir()) if d.is_dir() and _NAME.fullmatch(d.name)]


def _require(state: Path, name: str) -> VmInfo:
    if not state.is_dir():
        raise UsageError(
            f"There is no VM named {name}.",
            hint="See `labkit vm list`; start one with `labkit vm start NAME`.",
        )
    return _info(state)


def _info(state: Path) -> VmInfo:
    """state.json, corrected by reality: a live status with a dead supervisor is a crash."""
    try:
        data = json.loads(files.read_bounded(state / "state.json", files.STATE))
    except (OSError, ValueError, RecursionError, files.FileRefused):
        data = {}
    data = data if isinstance(data, dict) else {}
    info = VmInfo(
        name=state.name, status=str(data.get("status", "crashed")),
        kernel=str(data.get("kernel", "")), kernel_version=str(data.get("kernel_version", "")),
        accel=str(data.get("accel", "")), memory=str(data.get("memory", "")),
        cpus=data.get("cpus"), forwards=list(data.get("forwards", [])), pid=data.get("pid"),
        started_at=data.get("started_at"), reason=str(data.get("reason", "")),
        state_dir=str(state),
        backplane_address=str((data.get("backplane") or {}).get("address", "")),
    )
    started = data.get("starttime")
    if info.status in LIVE and data.get("pid") and not procs.alive(data["pid"], started):
        info.status, info.reason = "crashed", "its supervisor process is gone"
    if not data:
        info.reason = "no state recorded (interrupted start?)"
    return info


def _cleanup(state: Path) -> None:
    try:
        data = json.loads(files.read_bounded(state / "state.json", files.STATE))
    except (OSError, ValueError, RecursionError, files.FileRefused):
        data = {}
    data = data if isinstance(data, dict) else {}
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


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no details recorded"
