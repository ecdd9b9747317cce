"""Throughput between two nodes: a server agent in the receiver, a sender agent in the
sender, both separate processes (so they do not share one interpreter lock), bounded in
time and count. Used by `labkit traffic`, the verifications and the benchmarks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from labkit.errors import LabkitError, UsageError

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

MAX_TIPC_MESSAGE = 66000


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


def _agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "labkit.traffic.agent", *args]


def measure(lab: Lab, src: str, dst: str, *, proto: str = "tipc", socket: str = "stream",
            size: int = 65536, duration: float = 5.0, max_messages: int = 10_000_000,
            port: int = 5201, marker: str = "", family: int = 4) -> Throughput:
    if proto == "tipc" and socket != "stream" and size > MAX_TIPC_MESSAGE:
        raise UsageError(f"TIPC {socket} messages are at most {MAX_TIPC_MESSAGE} bytes.",
                         hint="Use --size 65536 or less, or --socket stream.")
    if size < 2:
        raise UsageError("--size must be at least 2 bytes.")
    if not 0 < duration <= 600:
        raise UsageError("--duration must be between 0 and 600 seconds.")
    common = ["--proto", proto, "--socket", socket, "--port", str(port)]
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
        ready = server.stdout.readline() if server.stdout else ""
        if '"ready"' not in ready:
            err = server.stderr.read() if server.stderr else ""
            raise LabkitError(f"the traffic server on {dst} did not start: "
                              f"{err.strip().splitlines()[-1] if err.strip() else 'no output'}.")
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
        lines = out.strip().splitlines()
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
