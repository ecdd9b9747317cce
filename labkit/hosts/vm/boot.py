"""Booting a labkit VM and waiting for its agent, shared by one-shot and persistent VMs.

The host listens on a unix socket before vng starts; qemu connects to it as the backend of
labkit's virtio-serial port, and the agent's HELLO on that connection is the one reliable
sign that the guest is up. If vng or qemu dies first, the console log says why, so errors
quote its tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.hosts.vm import kernels, kvm, wire
from labkit.hosts.vm.vng import (
    Boot,
    Tools,
    find_tools,
    plan_dirs,
    vng_argv,
    vng_env,
)

BOOT_TIMEOUT = {"kvm": 120.0, "tcg": 300.0}
# Guest CPUs under TCG unless asked (KVM: as many as the host). An emulated vCPU is a host
# thread; when the host does not run it, a guest spinlock it holds makes the other vCPU
# spin. Measured on a 2-core host (the kernel tier's TIPC and kproxy modules): alone,
# 1 vCPU took 139 CPU-s and 141 s, 2 vCPUs 135 CPU-s and 128 s; two such VMs side by
# side, 1 vCPU 142 CPU-s and 159 s, 2 vCPUs 227 CPU-s and 229 s. Labs often run VMs side
# by side (a lab across kernels, a scenario on two kernels, the test run).
TCG_CPUS = 1


def prepare(
    kernel: str,
    *,
    hostname: str,
    serial_socket: str,
    oneshot: bool,
    memory: str | None = None,
    cpus: int | None = None,
    cwd: str = "/",
    writable_cwd: bool = False,
    overlays: list[str] | None = None,
    rwdirs: list[str] | None = None,
    forwards: list[tuple[int, int]] | None = None,
    modules: list[str] | None = None,
    cached: list[str] | None = None,
    append: list[str] | None = None,
    guestd: str = "",
) -> tuple[Boot, Tools]:
    """Resolve tools, kernel and accelerator (probing KVM once) into a Boot.

    cached: more host trees to serve read-only from the cached share (a lab VM caches
    labkit's own package: its daemon and agents start many Python processes).
    """
    vng_overlays, fast_ro, fast_rw = plan_dirs(cwd if writable_cwd else None)
    fast_ro += [d for d in cached or [] if d not in fast_ro]
    tools = find_tools()
    k = kernels.resolve(kernel)
    accel = kvm.choose(k.image, tools.qemu)
    kvm.announce(accel)
    if cpus is None and accel.kind == "tcg":
        cpus = TCG_CPUS
    boot = Boot(
        kernel=k, accel=accel, hostname=hostname, serial_socket=serial_socket,
        oneshot=oneshot, memory=memory, cpus=cpus, cwd=cwd,
        overlays=[*vng_overlays, *(overlays or [])], rwdirs=list(rwdirs or []),
        forwards=list(forwards or []),
        # by default what every lab feature needs loaded by hand (no autoload alias)
        modules=list(_feature_modules() if modules is None else modules),
        fast_ro=fast_ro, fast_rw=fast_rw, append=list(append or []), guestd=guestd,
    )
    return boot, tools


def _feature_modules() -> list[str]:
    from labkit import features

    return features.modules()


def listen(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(1)
    return sock


def spawn(
    boot: Boot, tools: Tools, console: Path, *, new_session: bool = True
) -> subprocess.Popen[bytes]:
    """Start vng with its console (kernel log + agent messages) going to `console`."""
    _count_boot(boot)
    with open(console, "ab") as log:
        return subprocess.Popen(
            vng_argv(boot, tools),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=vng_env(tools), start_new_session=new_session, close_fds=True,
        )


def _count_boot(boot: Boot) -> None:
    """Append one line per boot to $LABKIT_BOOT_LOG: the test run prints how many it made."""
    log = os.environ.get("LABKIT_BOOT_LOG")
    if not log:
        return
    line = json.dumps({"at": round(time.time(), 1), "kernel": boot.kernel.name,
                       "hostname": boot.hostname, "oneshot": boot.oneshot})
    with contextlib.suppress(OSError), open(log, "a") as fh:
        fh.write(line + "\n")


def wait_for_agent(
    listener: socket.socket,
    proc: subprocess.Popen[bytes],
    console: Path,
    timeout: float,
) -> tuple[socket.socket, dict[str, Any]]:
    """qemu's connection, then the agent's HELLO on it; fail fast if vng exits first."""
    deadline = time.monotonic() + timeout
    listener.settimeout(0.25)
    conn: socket.socket | None = None
    while conn is None:
        _check_alive(proc, console, deadline, timeout, "before qemu started")
        with contextlib.suppress(TimeoutError):
            conn, _ = listener.accept()
    conn.settimeout(0.25)
    reader = wire.FrameReader()
    while True:
        _check_alive(proc, console, deadline, timeout, "before labkit's agent started")
        try:
            data = conn.recv(65536)
        except TimeoutError:
            continue
        if not data:
            _check_alive(proc, console, deadline, 0, "before labkit's agent started", force=True)
        for kind, _chan, payload in reader.feed(data):
            if kind == wire.HELLO:
                return conn, wire.load_json(payload) or {}


def boot_until_agent(
    start: Callable[[], subprocess.Popen[bytes]],
    stop: Callable[[subprocess.Popen[bytes]], None],
    listener: socket.socket,
    console: Path,
    timeout: float,
) -> tuple[subprocess.Popen[bytes], socket.socket, dict[str, Any]]:
    """start() the VM and wait for its agent; a kernel that crashed before the agent started
    is stopped and booted once more, saying so on stderr and in the console log.

    Why once more: under TCG on a loaded host a stock kernel has oopsed in an interrupt
    during boot (seen once in CI, on debian-6.12) before any labkit code ran in the guest.
    That is no verdict on the lab or the scenario; a second crash is, and is reported.
    """
    for attempt in (1, 2):
        offset = _size(console)
        proc = start()
        try:
            conn, hello = wait_for_agent(listener, proc, console, timeout)
            return proc, conn, hello
        except LabkitError:
            crash = crash_summary(_read_from(console, offset))
            if attempt == 2 or not crash:
                raise
            stop(proc)
            note = f"{_REBOOT_NOTE} ({crash[0]}); booting once more"
            print(note, file=sys.stderr, flush=True)
            with contextlib.suppress(OSError), open(console, "a") as log:
                log.write(note + "\n")
    raise AssertionError("unreachable")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(4 << 20).decode(errors="replace")
    except OSError:
        return ""


_REBOOT_NOTE = "labkit: the kernel crashed before labkit's agent started"
# The first line of a kernel crash report, and the lines of it worth quoting.
_CRASH_START = re.compile(r"(BUG: |Oops|general protection fault|kernel BUG at|"
                          r"Kernel panic - not syncing)")
_CRASH_KEEP = re.compile(r"(BUG: |Oops|general protection fault|kernel BUG at|RIP: |"
                         r"Kernel panic|Comm: )")
_TRACE_ENTRY = re.compile(r"^\s*(?:\[[\s\d.]+\]\s*)?([A-Za-z_][\w.]*\+0x[0-9a-f]+)")


def crash_summary(text: str, frames: int = 6) -> list[str]:
    """The lines of a kernel crash report a reader needs (what, where, the first call-trace
    frames, the panic), not the register dump that ends the console; [] if none."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if _CRASH_START.search(ln)), None)
    if start is None:
        return []
    out: list[str] = []
    trace = 0
    in_trace = False
    for ln in lines[start:start + 200]:
        if _CRASH_KEEP.search(ln):
            out.append(ln.strip())
        elif "Call Trace:" in ln:
            in_trace = True
        elif in_trace and trace < frames and (m := _TRACE_ENTRY.match(ln)):
            out.append("  " + m.group(1))
            trace += 1
    return out[:20]


def _check_alive(
    proc: subprocess.Popen[bytes], console: Path, deadline: float, timeout: float,
    when: str, force: bool = False,
) -> None:
    rc = proc.poll()
    if rc is not None or force:
        raise LabkitError(
            f"The VM exited {when} (vng exit status {rc}).{console_tail(console)}",
            hint=f"The full console log is in {console}.",
        )
    if time.monotonic() > deadline:
        raise LabkitError(
            f"The VM did not start within {timeout:.0f} s.{console_tail(console)}",
            hint=f"The full console log is in {console}; a loaded host boots slower "
            "under TCG.",
        )


def report_warnings(hello: dict[str, Any], where: str = "the VM") -> None:
    """Problems the agent met while setting up (a module that would not load, ...)."""
    for warning in hello.get("warnings") or []:
        print(f"labkit: in {where}: {warning}", file=sys.stderr, flush=True)


def console_tail(console: Path, lines: int = 12) -> str:
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return ""
    text = text[-(4 << 20):]
    # a crash that boot_until_agent booted past is not this boot's
    if (note := text.rfind(_REBOOT_NOTE)) >= 0:
        text = text[text.find("\n", note) + 1:]
    crash = crash_summary(text)
    if crash:
        return "\nThe kernel crashed:\n  " + "\n  ".join(crash)
    tail = [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]
    return ("\nLast console lines:\n  " + "\n  ".join(tail)) if tail else ""
