"""NSS key logs: the one parser of their lines, and a key log that lives in a pipe.

Python's ssl gives no other way to a session's secrets than `SSLContext.keylog_filename`
(format: https://firefox-source-docs.mozilla.org/security/nss/legacy/key_log_format).
Pointing it at a pipe this process holds means the secrets never touch a disk; a caller
that must keep them (a lab's `keylog: true`) writes them 0600 itself. Nothing here logs
a secret.
"""

from __future__ import annotations

import contextlib
import os

CLIENT_RANDOM = "CLIENT_RANDOM"  # TLS 1.2: the master secret
CLIENT_HS = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HS = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_APP = "CLIENT_TRAFFIC_SECRET_0"
SERVER_APP = "SERVER_TRAFFIC_SECRET_0"

KeyLog = dict[bytes, dict[str, bytes]]  # client random -> label -> secret


def parse(text: str) -> KeyLog:
    """The secrets of an NSS key log by client random, then label. Comments, blank lines
    and lines that are not `LABEL <hex random> <hex secret>` are skipped."""
    out: KeyLog = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) != 3 or line.startswith("#"):
            continue
        try:
            rnd, secret = bytes.fromhex(words[1]), bytes.fromhex(words[2])
        except ValueError:
            continue
        out.setdefault(rnd, {})[words[0]] = secret
    return out


def line(label: str, client_random: bytes, secret: bytes) -> str:
    """One key log line, for engines that hold the secrets themselves (tlslite-ng)."""
    return f"{label} {client_random.hex()} {secret.hex()}"


class KeylogPipe:
    """A key log in a pipe: set `ctx.keylog_filename = pipe.path` before the handshake,
    `ctx.keylog_filename = None` after it (OpenSSL's end closes), then `text()`. OpenSSL
    writes a line per secret as it learns it; a handshake's few lines fit the pipe."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.rfd, False)

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.wfd}"

    def text(self) -> str:
        """Everything written so far."""
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.rfd, 65536):
                data += chunk
        return data.decode(errors="replace")

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                os.close(fd)
        self.rfd = self.wfd = -1

    def __enter__(self) -> KeylogPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
