"""The host side of one command run in a VM: send it, relay its output, get its status.

Used both by one-shot runs (talking to the guest agent directly) and by `exec` on a
persistent VM (talking to that VM's supervisor, which multiplexes). The exit status comes
from the agent's EXIT frame, i.e. from waitpid() inside the guest, never from vng.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from labkit.errors import LabkitError
from labkit.hosts.vm import wire


@dataclass(frozen=True)
class Completed:
    """A finished command; stdout/stderr are empty unless it ran with capture=True."""

    code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def to_json(self) -> dict[str, Any]:
        return {"exit_code": self.code, "stdout": self.out, "stderr": self.err}


class VmGone(LabkitError):
    """The channel closed before the command's EXIT: the VM crashed or was stopped."""


def make_request(
    cmd: list[str],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    merge_stderr: bool = False,
    stdin: bool = False,
    vm_name: str = "",
) -> dict[str, Any]:
    """The guest sees the host's cwd and environment, so the venv and PATH work as-is."""
    if not cmd:
        raise LabkitError("No command given.", hint="Put it after `--`, e.g. `-- uname -r`.")
    full_env = dict(os.environ if env is None else env)
    full_env["LABKIT_IN_VM"] = vm_name or "1"
    return {
        "argv": [str(a) for a in cmd],
        "cwd": cwd or os.getcwd(),
        "env": full_env,
        "merge_stderr": merge_stderr,
        "stdin": stdin,
    }


def streams_are_same() -> bool:
    """True when stdout and stderr are one file (a terminal, `2>&1`): then the guest merges
    them into one pipe so their relative order survives the trip."""
    try:
        a, b = os.fstat(1), os.fstat(2)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def run_session(
    sock: socket.socket,
    request: dict[str, Any],
    *,
    chan: int = 1,
    capture: bool = False,
    stdin_data: bytes | None = None,
    forward_stdin: bool = False,
    timeout: float | None = None,
) -> Completed:
    send_lock = threading.Lock()
    sock.settimeout(None)

    def send(frame: bytes) -> None:
        with send_lock:
            sock.sendall(frame)

    request = dict(request, stdin=stdin_data is not None or forward_stdin)
    send(wire.pack_json(wire.OPEN, chan, request))
    if stdin_data is not None:
        for frame in wire.pack_chunks(wire.STDIN, chan, stdin_data):
            send(frame)
        send(wire.pack(wire.STDIN_EOF, chan))
    elif forward_stdin:
        threading.Thread(target=_forward_stdin, args=(send, chan), daemon=True).start()

    out, err = bytearray(), bytearray()
    sinks: dict[int, bytearray | BinaryIO] = (
        {wire.STDOUT: out, wire.STDERR: err}
        if capture
        else {wire.STDOUT: sys.stdout.buffer, wire.STDERR: sys.stderr.buffer}
    )
    reader = wire.FrameReader()
    deadline = None if timeout is None else time.monotonic() + timeout
    interrupts = 0
    while True:
        try:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    send(wire.pack_json(wire.SIGNAL, chan, {"signal": signal.SIGKILL}))
                    raise LabkitError(
                        f"The command did not finish within {timeout:.0f} s and was killed.",
                        hint="Raise the timeout or check the command.",
                    )
                sock.settimeout(left)
            data = sock.recv(65536)
        except KeyboardInterrupt:
            # Ctrl-C goes to the command (as at a terminal), then harder signals.
            interrupts += 1
            if interrupts > 3:
                raise
            sig = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)[interrupts - 1]
            with contextlib.suppress(OSError):
                send(wire.pack_json(wire.SIGNAL, chan, {"signal": int(sig)}))
            continue
        except TimeoutError:
            continue
        except OSError as exc:
            raise VmGone(f"The connection to the VM broke ({exc}).") from exc
        if not data:
            raise VmGone(
                "The VM went away before the command finished (it crashed, was stopped, "
                "or powered off)."
            )
        for kind, fchan, payload in reader.feed(data):
            if fchan != chan:
                continue
            if kind in (wire.STDOUT, wire.STDERR):
                sink = sinks[kind]
                if isinstance(sink, bytearray):
                    sink += payload
                else:
                    sink.write(payload)
                    sink.flush()
            elif kind == wire.EXIT:
                reply = wire.load_json(payload) or {}
                if "error" in reply:
                    raise LabkitError(f"The VM could not run the command: {reply['error']}.")
                return Completed(int(reply["code"]), bytes(out), bytes(err))


def _forward_stdin(send: Any, chan: int) -> None:
    """Host stdin (a pipe or file, never a terminal) becomes the command's stdin."""
    try:
        while True:
            data = os.read(0, wire.CHUNK)
            if not data:
                break
            send(wire.pack(wire.STDIN, chan, data))
        send(wire.pack(wire.STDIN_EOF, chan))
    except OSError:
        pass


def run_pty_session(sock: socket.socket, request: dict[str, Any], *, chan: int = 1) -> int:
    """An interactive command on a pseudo-terminal in the guest, driven from this terminal.

    The local terminal goes raw (keys, Ctrl-C and Ctrl-Z travel as bytes to the guest's
    pty, as with ssh); its size follows SIGWINCH. Restored whatever happens.
    """
    import shutil
    import termios
    import tty

    send_lock = threading.Lock()

    def send(frame: bytes) -> None:
        with send_lock:
            sock.sendall(frame)

    def size() -> dict[str, int]:
        cols, rows = shutil.get_terminal_size((80, 24))
        return {"rows": rows, "cols": cols}

    request = dict(request, pty=size(), stdin=True, merge_stderr=True)
    send(wire.pack_json(wire.OPEN, chan, request))
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    old_winch = signal.signal(signal.SIGWINCH,
                              lambda *_: send(wire.pack_json(wire.RESIZE, chan, size())))
    stop = threading.Event()

    def pump_keys() -> None:
        import select

        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                send(wire.pack(wire.STDIN_EOF, chan))
                return
            send(wire.pack(wire.STDIN, chan, data))

    try:
        if saved is not None:
            tty.setraw(fd)
        threading.Thread(target=pump_keys, daemon=True).start()
        reader = wire.FrameReader()
        out = sys.stdout.buffer
        while True:
            data = sock.recv(65536)
            if not data:
                raise VmGone("The VM went away while the shell was open.")
            for kind, fchan, payload in reader.feed(data):
                if fchan != chan:
                    continue
                if kind in (wire.STDOUT, wire.STDERR):
                    out.write(payload)
                    out.flush()
                elif kind == wire.EXIT:
                    reply = wire.load_json(payload) or {}
                    if "error" in reply:
                        raise LabkitError(f"The VM could not start the shell: {reply['error']}.")
                    return int(reply["code"])
    finally:
        stop.set()
        signal.signal(signal.SIGWINCH, old_winch)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
