"""A byte stream to a unix socket inside a running persistent VM (the guest daemon's), relayed
by its agent: the host end of the channel labkit's calls travel on, one line at a time."""

from __future__ import annotations

import contextlib
import socket

from labkit.errors import LabkitError
from labkit.hosts.rpc import MAX_MESSAGE
from labkit.hosts.vm import wire
from labkit.hosts.vm.execclient import _control
from labkit.hosts.vm.session import VmGone
from labkit.hosts.vm.vmstate import _dir


def connect(name: str, path: str, wait: float = 0.0) -> Relay:
    """A byte stream to the unix socket `path` inside the running VM `name`; wait: seconds
    the guest's agent first waits for the daemon it started at boot to serve."""
    sock = _control(name)
    try:
        sock.sendall(wire.pack_json(wire.OPEN, 1, {"connect": path, "wait": wait}))
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


