"""Throughput between two nodes: a server agent in the receiver, a sender agent in the
sender, both separate processes (so they do not share one interpreter lock), bounded in
time and count. Used by `labkit traffic`, the verifications and the benchmarks.

Protocols other than TCP belong to features (`Feature.traffic` names the endpoint module
the agents load); a lab must have the feature's block for its protocol to be measured.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from labkit import features
from labkit.base import helper
from labkit.errors import LabkitError, UsageError

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

READY_TIMEOUT = 60.0  # s for the server agent to start listening (Python under TCG is slow)


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


def agent_args(lab: Lab, dst: str, proto: str, socket: str, port: int, family: int,
               module: str) -> list[str]:
    """The arguments both agents (server and sender) share: protocol, socket kind, port,
    the feature's endpoint module, and for TCP the receiver's address."""
    common = ["--proto", proto, "--socket", socket, "--port", str(port)]
    if module:
        common += ["--endpoint", module]
    if proto == "tcp":
        addrs = lab.node(dst).addresses(family)
        if not addrs:
            raise UsageError(f"node {dst} has no IPv{family} address for TCP traffic.",
                             hint="Choose a receiver with an address on a link or LAN.")
        common += ["--address", addrs[0]]
    return common


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
    common = agent_args(lab, dst, proto, socket, port, family, module)
    if marker:
        common += ["--marker", marker]
    with helper.start(lab.node(dst), _agent("serve", *common, "--timeout", str(duration + 30)),
                      what=f"the traffic server on {dst}", ready='"ready"',
                      timeout=READY_TIMEOUT, text=True) as server:
        client = lab.node(src).run(
            [*_agent("send", *common, "--size", str(size), "--duration", str(duration),
                     "--max-messages", str(max_messages))],
            timeout=duration + 60)
        if client.returncode != 0:
            raise LabkitError(f"the traffic sender on {src} failed: "
                              f"{(client.stderr.strip().splitlines() or ['?'])[-1]}.",
                              hint="Is the receiver reachable? `labkit status` shows links.")
        sent = json.loads(client.stdout.strip().splitlines()[-1])
        out, err = server.finish(timeout=duration + 60)
        lines = (server.early + out).strip().splitlines()
        if not lines:
            raise LabkitError(f"the traffic server on {dst} ended without a result: "
                              f"{(err.strip().splitlines() or ['no error output'])[-1]}.")
        got = json.loads(lines[-1])
    return Throughput(proto=proto, socket=socket, size=size, sender=src, receiver=dst,
                      bytes=got["bytes"],
                      # stream receivers count recv() calls, not messages: use the sender's
                      messages=got["messages"] if socket != "stream" else sent["messages"],
                      seconds=got["seconds"] or sent["seconds"], sent_bytes=sent["bytes"])
