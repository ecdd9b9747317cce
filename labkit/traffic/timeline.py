"""Throughput over time between two nodes: the receiver reports every interval while the
ordinary agent sends, so a plot can grow while traffic runs (the notebook traffic panel).

Same bounds as labkit.traffic.meter (duration, message count, start and end deadlines),
same protocols (tcp plus the features' endpoint modules), and it works for nodes in VMs:
both halves are `node.popen` processes whose stdout streams back line by line.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import secrets
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labkit.base import helper
from labkit.errors import LabkitError, UsageError
from labkit.traffic.meter import READY_TIMEOUT, Throughput, agent_args, endpoint_module

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

END_GRACE = 60.0  # s after the planned end before a run that has not finished is cut


@dataclass
class Sample:
    """What the receiver got in one interval ending t seconds after its first byte."""

    t: float
    bytes: int
    messages: int
    seconds: float  # the interval's length (the last one may be shorter)

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Timeline:
    throughput: Throughput
    samples: list[Sample] = field(default_factory=list)
    stopped: bool = False  # ended early by the caller's stop event


def _argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _lines(proc: subprocess.Popen[bytes], until: float,
           stop: threading.Event | None) -> Any:
    """Yield the process's stdout lines as they come, until EOF, the deadline or stop."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while time.monotonic() < until and not (stop is not None and stop.is_set()):
        ready, _, _ = select.select([fd], [], [], min(0.2, max(0.0, until - time.monotonic())))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace")
    if buf.strip():
        yield buf.decode(errors="replace")


def measure_over_time(lab: Lab, src: str, dst: str, *, proto: str = "tcp",
                      socket: str = "stream", size: int = 65536, duration: float = 5.0,
                      interval: float = 0.5, max_messages: int = 10_000_000,
                      family: int = 4, on_sample: Callable[[Sample], None] | None = None,
                      stop: threading.Event | None = None) -> Timeline:
    """Send from src to dst for `duration` s; on_sample gets each interval as it ends."""
    module = endpoint_module(lab, proto)
    if size < 2:
        raise UsageError("the message size must be at least 2 bytes.")
    if not 0 < duration <= 600:
        raise UsageError("the duration must be between 0 and 600 seconds.")
    if not 0.05 <= interval <= 10:
        raise UsageError("the sampling interval must be between 0.05 and 10 seconds.")
    if src == dst:
        raise UsageError(f"traffic from {src} to itself measures nothing of the lab.",
                         hint="Choose two different nodes.")
    if module:
        importlib.import_module(module).check(socket, size)
    port = 20000 + secrets.randbelow(20000)  # two panels never collide on one port
    common = agent_args(lab, dst, proto, socket, port, family, module)
    sender: subprocess.Popen[bytes] | None = None
    samples: list[Sample] = []
    final: dict[str, Any] | None = None
    server = helper.start(
        lab.node(dst), _argv("labkit.traffic.rate_server", *common, "--timeout",
                             str(duration + 30), "--interval", str(interval)),
        what=f"the traffic server on {dst}", ready='"ready"', timeout=READY_TIMEOUT)
    try:
        sender = lab.node(src).popen(
            _argv("labkit.traffic.agent", "send", *common, "--size", str(size),
                  "--duration", str(duration), "--max-messages", str(max_messages)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        until = time.monotonic() + duration + END_GRACE
        pending = [line for line in server.early.splitlines() if line.strip()]
        for line in itertools.chain(pending, _lines(server.proc, until, stop)):
            obj = json.loads(line)
            if "role" in obj:
                final = obj
                break
            prev = samples[-1].t if samples else 0.0
            sample = Sample(t=obj["t"], bytes=obj["bytes"], messages=obj["messages"],
                            seconds=(obj["t"] - prev) if obj.get("partial") else interval)
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)
        stopped = stop is not None and stop.is_set()
        sent: dict[str, Any] = {}
        if not stopped:
            out, err = sender.communicate(timeout=END_GRACE)
            if sender.returncode != 0:
                text = err.decode(errors="replace").strip().splitlines()
                why = text[-1].rstrip(".") if text else f"exit status {sender.returncode}"
                raise LabkitError(f"the traffic sender on {src} failed: {why}.",
                                  hint="Is the receiver reachable? The lab panel's status "
                                       "table shows the links.")
            sent = json.loads(out.decode().strip().splitlines()[-1])
        if final is None and not stopped:
            raise LabkitError(f"the traffic server on {dst} ended without a result.")
    finally:
        if sender is not None:
            helper.kill(sender)
        server.stop()
    got = final or {"bytes": sum(s.bytes for s in samples),
                    "messages": sum(s.messages for s in samples),
                    "seconds": sum(s.seconds for s in samples)}
    result = Throughput(proto=proto, socket=socket, size=size, sender=src, receiver=dst,
                        bytes=got["bytes"],
                        messages=got["messages"] if socket != "stream" else
                        sent.get("messages", got["messages"]),
                        seconds=got["seconds"] or sent.get("seconds", 0.0),
                        sent_bytes=sent.get("bytes", 0))
    return Timeline(result, samples, stopped)
