"""Throughput between two nodes: a server agent in the receiver, a sender agent in the
sender, both separate processes (so they do not share one interpreter lock), bounded in
time and count. Used by `labkit traffic`, the verifications and the benchmarks.

Protocols other than TCP belong to features (`Feature.traffic` names the endpoint module
the agents load); a lab must have the feature's block for its protocol to be measured.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any

from labkit import features
from labkit.errors import LabkitError, UsageError

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

READY_TIMEOUT = 60.0  # s for the server agent to start listening (Python under TCG is slow)
MAX_READY_LINE = 4096  # bytes: the ready line is ~16; anything longer is not our agent


@dataclass
class Throughput:
    proto: str
    socket: str
    size: int
    sender: str
    receiver: str
    bytes: int
    messages: int
    seconds: float
    sent_bytes: int

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bytes_per_s": round(self.bytes_per_s),
                "messages_per_s": round(self.messages_per_s, 1)}


def protocols() -> list[str]:
    """What `--proto` accepts: tcp, then every feature's traffic protocol."""
    return ["tcp", *features.traffic_protocols()]


def endpoint_module(lab: Lab, proto: str) -> str:
    """The endpoint module for proto ("" for the agent's built-in TCP); a UsageError if no
    feature offers it or the lab lacks that feature's block."""
    if proto == "tcp":
        return ""
    offered = features.traffic_protocols()
    if proto not in offered:
        raise UsageError(f"unknown traffic protocol '{proto}'.",
                         hint=f"Use one of: {', '.join(protocols())}.")
    owner = next(k for k in features.keys() if proto in features.get(k).traffic)
    lab.feature_config(owner)  # "lab 'x' has no <owner> (no `<owner>:` in FILE)", exit 2
    return offered[proto]


def _agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "labkit.traffic.agent", *args]


def read_ready(pipe: IO[str], timeout: float) -> tuple[str, str]:
    """The server's first line, within timeout; (line, what was read after it).

    Reads the pipe's fd directly (select + os.read), so a server that hangs before its
    ready line, or writes garbage without a newline, cannot block the caller.
    """
    fd = pipe.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf and len(buf) < MAX_READY_LINE:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, MAX_READY_LINE)
        if not chunk:  # the server exited
            break
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line.decode(errors="replace"), rest.decode(errors="replace")


def measure(lab: Lab, src: str, dst: str, *, proto: str = "tcp", socket: str = "stream",
            size: int = 65536, duration: float = 5.0, max_messages: int = 10_000_000,
            port: int = 5201, marker: str = "", family: int = 4) -> Throughput:
    module = endpoint_module(lab, proto)
    if size < 2:
        raise UsageError("--size must be at least 2 bytes.")
    if not 0 < duration <= 600:
        raise UsageError("--duration must be between 0 and 600 seconds.")
    if module:
        importlib.import_module(module).check(socket, size)
    common = ["--proto", proto, "--socket", socket, "--port", str(port)]
    if module:
        common += ["--endpoint", module]
    if proto == "tcp":
        addrs = lab.node(dst).addresses(family)
        if not addrs:
            raise UsageError(f"node {dst} has no IPv{family} address for TCP traffic.")
        common += ["--address", addrs[0]]
    if marker:
        common += ["--marker", marker]
    server = lab.node(dst).popen(
        _agent("serve", *common, "--timeout", str(duration + 30)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ready, early = read_ready(server.stdout, READY_TIMEOUT)
        if '"ready"' not in ready:
            if server.poll() is None:
                server.kill()
            err = server.communicate(timeout=10)[1] or ""
            why = err.strip().splitlines()[-1] if err.strip() else \
                f"no ready line within {READY_TIMEOUT:g} s"
            raise LabkitError(f"the traffic server on {dst} did not start: {why}.")
        client = lab.node(src).run(
            [*_agent("send", *common, "--size", str(size), "--duration", str(duration),
                     "--max-messages", str(max_messages))],
            timeout=duration + 60)
        if client.returncode != 0:
            raise LabkitError(f"the traffic sender on {src} failed: "
                              f"{(client.stderr.strip().splitlines() or ['?'])[-1]}.",
                              hint="Is the receiver reachable? `labkit status` shows links.")
        sent = json.loads(client.stdout.strip().splitlines()[-1])
        out, err = server.communicate(timeout=duration + 60)
        lines = (early + out).strip().splitlines()
        if not lines:
            raise LabkitError(f"the traffic server on {dst} ended without a result: "
                              f"{(err.strip().splitlines() or ['no error output'])[-1]}.")
        got = json.loads(lines[-1])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return Throughput(proto=proto, socket=socket, size=size, sender=src, receiver=dst,
                      bytes=got["bytes"],
                      # stream receivers count recv() calls, not messages: use the sender's
                      messages=got["messages"] if socket != "stream" else sent["messages"],
                      seconds=got["seconds"] or sent["seconds"], sent_bytes=sent["bytes"])
