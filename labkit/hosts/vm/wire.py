"""The byte protocol between labkit on the host and the agent inside the VM.

vng's own script channel is unusable here (it loses the script's output and always exits
255), so labkit carries commands, their output and their exit status itself over one
virtio-serial port. One port is one byte stream, so every message is a frame tagged with
a channel number: several commands can share the port at once. This module is stdlib-only
because the guest agent imports it too, possibly without labkit installed.

Frame: magic (2 bytes) | type (1) | channel (4) | payload length (4) | payload.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

MAGIC = 0x4C4B  # "LK": a desynchronised stream fails loudly instead of misrouting bytes
HEADER = struct.Struct("!HBII")
MAX_PAYLOAD = 16 * 1024 * 1024
CHUNK = 64 * 1024

# guest -> host
HELLO = 1  # agent is up; payload JSON {"release": ..., "pid": ...}
STDOUT = 2
STDERR = 3
EXIT = 4  # payload JSON {"code": int} or {"error": str}
# host -> guest
# payload JSON request {"argv", "cwd", "env", "merge_stderr", "stdin"[, "pty": {rows, cols}]}
# or {"connect": PATH}: relay the channel to a unix socket in the guest (STDIN in, STDOUT out)
OPEN = 10
STDIN = 11
STDIN_EOF = 12
SIGNAL = 13  # payload JSON {"signal": int}
SHUTDOWN = 14  # channel 0: power the VM off
RESIZE = 15  # payload JSON {"rows", "cols"}: the host terminal changed size (pty sessions)

NAMES = {
    HELLO: "HELLO", STDOUT: "STDOUT", STDERR: "STDERR", EXIT: "EXIT", OPEN: "OPEN",
    STDIN: "STDIN", STDIN_EOF: "STDIN_EOF", SIGNAL: "SIGNAL", SHUTDOWN: "SHUTDOWN",
    RESIZE: "RESIZE",
}

Frame = tuple[int, int, bytes]


class ProtocolError(Exception):
    """The stream does not hold frames: a bug or a corrupted channel, never user error."""


def pack(kind: int, chan: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"frame payload too large ({len(payload)} bytes)")
    return HEADER.pack(MAGIC, kind, chan, len(payload)) + payload


def pack_json(kind: int, chan: int, obj: Any) -> bytes:
    return pack(kind, chan, json.dumps(obj).encode())


def pack_chunks(kind: int, chan: int, data: bytes) -> list[bytes]:
    """Output can be large; keep each frame small so channels interleave fairly."""
    return [pack(kind, chan, data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]


def load_json(payload: bytes) -> Any:
    return json.loads(payload.decode() or "null")


class FrameReader:
    """Incremental parser for non-blocking sockets: feed bytes, get whole frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= HEADER.size:
            magic, kind, chan, length = HEADER.unpack_from(self._buf)
            if magic != MAGIC:
                raise ProtocolError(f"bad frame magic {magic:#x}")
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"frame payload too large ({length} bytes)")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((kind, chan, bytes(self._buf[HEADER.size : end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


def read_frame(read: Callable[[int], bytes]) -> Frame | None:
    """Blocking read of one frame; None on a clean end of stream between frames."""
    header = _read_exact(read, HEADER.size, allow_eof=True)
    if header is None:
        return None
    magic, kind, chan, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {magic:#x}")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame payload too large ({length} bytes)")
    payload = _read_exact(read, length, allow_eof=False) if length else b""
    return kind, chan, payload or b""


def _read_exact(read: Callable[[int], bytes], n: int, *, allow_eof: bool) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = read(n - len(buf))
        if not chunk:
            if allow_eof and not buf:
                return None
            raise ProtocolError("stream ended inside a frame")
        buf += chunk
    return bytes(buf)
