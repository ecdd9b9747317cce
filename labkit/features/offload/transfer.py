"""One bounded TLS transfer through an emulated NIC, judged by its receiver, next to the
kernel: what `labkit offload send`, the verifications and the tests run.

The receiver starts first, in the NIC's peer node: OpenSSL's `s_server` (its output is
hashed here as it streams), or labkit's sink with Python's ssl or kTLS RX. The sender, in
the NIC's node, does the handshake, installs kTLS TX and writes reproducible bytes
(payload.py), then a close_notify. Around it: the NIC's counters, /proc/net/tls_stat on
both sides, `ss -ti`'s view of the socket, TCP retransmissions, the sending thread's CPU
time. Every wait has a deadline; a flow that stalls ends at it, and that is a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from labkit.errors import UsageError
from labkit.features.offload import certs, client
from labkit.features.offload import nic as nicmod
from labkit.features.offload.config import OffloadConfig
from labkit.features.offload.payload import Payload
from labkit.features.offload.tlskeys import CIPHERS
from labkit.hosts.local import netns_exec

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

SLOWEST = 128 << 10  # bytes/s a default deadline allows for (TCG, 5 % loss)
START = 60.0  # s for the receiver to start and the handshake, under emulation
SEND = 1 << 18  # bytes per send call


def default_timeout(size: int) -> float:
    return START + size / SLOWEST


@dataclass
class Plan:
    """Who sends to whom, and how."""

    nic: str
    sender_ns: str
    receiver_ns: str
    address: str
    port: int
    receiver: str
    version: str
    cipher: str
    size: int
    timeout: float


def plan(lab: Lab, cfg: OffloadConfig, nic: str | None = None, size: int | None = None,
         receiver: str | None = None, timeout: float | None = None,
         port: int | None = None, version: str | None = None) -> Plan:
    label = nic or cfg.traffic.nic
    if label not in cfg.nics:
        raise UsageError(f"lab '{lab.name}' has no offload NIC '{label}'.",
                         hint=f"Its NICs: {', '.join(cfg.nics) or 'none'}.")
    n = cfg.nics[label]
    assert n.peer is not None
    addr = n.peer.ipv4 or n.peer.ipv6
    if addr is None:
        raise UsageError(f"{n.peer.label} has no address to send to.")
    size = size or cfg.traffic.size
    return Plan(label, lab.node(n.node).ns, lab.node(n.peer.node).ns, str(addr.ip),
                port or cfg.traffic.port, receiver or cfg.traffic.receiver,
                version or cfg.version,
                cfg.cipher, size, timeout or default_timeout(size))


# -- receivers ----------------------------------------------------------------------------

class Receiver:
    """A receiving process in the peer node, and what it reports once it ends."""

    def __init__(self, lab: str, p: Plan) -> None:
        cert, key = certs.paths(lab)
        self.kind = p.receiver
        self.stderr = ""
        self.hash = hashlib.sha256()
        self.count = 0
        self.report: dict[str, Any] = {}
        if p.receiver == "s_server":
            c = CIPHERS[p.cipher]
            suite = (["-tls1_2", "-cipher", c.tls12] if p.version == "1.2"
                     else ["-tls1_3", "-ciphersuites", c.name])
            argv = ["openssl", "s_server", "-accept", str(p.port), "-cert", cert, "-key", key,
                    "-naccept", "1", "-quiet", *suite]
        else:
            argv = [sys.executable, "-m", "labkit.features.offload.sink", "--mode",
                    p.receiver, "--port", str(p.port), "--version", p.version, "--cert",
                    cert, "--key", key, "--timeout", str(p.timeout)]
        # stdin stays open: s_server ends a connection when its stdin reaches EOF
        self.proc = subprocess.Popen(netns_exec(p.receiver_ns, argv), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._threads = [threading.Thread(target=self._out, args=(self.proc.stdout,),
                                          daemon=True),
                         threading.Thread(target=self._err, args=(self.proc.stderr,),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _out(self, pipe: IO[bytes]) -> None:
        if self.kind == "s_server":  # its stdout is the decrypted stream
            while chunk := pipe.read1(1 << 18):  # type: ignore[attr-defined]
                self.hash.update(chunk)
                self.count += len(chunk)
            return
        for line in pipe:  # the sink's JSON lines: "listening", then the result
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if "bytes" in data:
                    self.report = data

    def _err(self, pipe: IO[bytes]) -> None:
        self.stderr = pipe.read(1 << 16).decode(errors="replace")

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait (bounded) for it to end; kill it at the deadline. Its verdict on the
        stream: bytes, their hash, and the error a bad record caused, if any."""
        ended = True
        try:
            self.proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            ended = False
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(10)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        if self.kind == "s_server":
            err = _openssl_error(self.stderr)
            return {"bytes": self.count, "sha256": self.hash.hexdigest(), "error": err,
                    "ended": "exit" if ended else "killed at the deadline",
                    "stderr": self.stderr[-2000:]}
        out = dict(self.report) or {"bytes": 0, "sha256": "", "error": "the sink reported "
                                    "nothing", "ended": ""}
        if not ended:
            out["ended"] = "killed at the deadline"
        out["stderr"] = self.stderr[-2000:]
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _openssl_error(stderr: str) -> str:
    """The reasons in the OpenSSL error lines s_server printed, in order ("cipher operation
    failed; decryption failed or bad record mac"), or "" when it printed none."""
    reasons: list[str] = []
    for line in stderr.splitlines():
        parts = line.split(":")
        if "error" in parts:
            i = parts.index("error")
            why = parts[i + 4].strip() if len(parts) > i + 4 else line.strip()[:200]
            if why not in reasons:
                reasons.append(why)
    return "; ".join(reasons)


# -- the transfer -------------------------------------------------------------------------

def txconf(ns: str, port: int) -> str:
    """What `ss -ti` says of the kTLS socket to the port: "1.2 aes-gcm-128 tx=hw"."""
    res = subprocess.run(netns_exec(ns, ["ss", "-tinH", "dport", "=", f":{port}"]),
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"tcp-ulp-tls version: (\S+) cipher: (\S+) rxconf: (\S+) txconf: (\S+)",
                  res.stdout)
    return f"{m.group(1)} {m.group(2)} tx={m.group(4)}" if m else "no kTLS socket"


def run(lab: Lab, cfg: OffloadConfig, p: Plan, marker: bytes = b"", keep_keylog: bool = False,
        during: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Send p.size bytes through the NIC; the receiver's account of them, with counters.

    during(bytes_sent) runs after each send call (tests raise an impairment midway)."""
    n = cfg.nics[p.nic]
    payload = Payload(p.size, secrets.randbits(64), marker)
    deadline = time.monotonic() + p.timeout
    before = {"nic": nicmod.counters(p.sender_ns, n.iface),
              "tx_tls": nicmod.tls_stat(p.sender_ns), "rx_tls": nicmod.tls_stat(p.receiver_ns)}
    recv = Receiver(lab.name, p)
    out: dict[str, Any] = {"nic": p.nic, "receiver": p.receiver, "size": p.size,
                           "tls": p.version, "cipher": p.cipher, "timeout_s": p.timeout}
    session = None
    sent = 0
    try:
        session = client.connect(p.sender_ns, p.address, p.port,
                                 client.VERSIONS[p.version], p.cipher,
                                 min(START, p.timeout), keep_keylog)
        out["txconf"] = txconf(p.sender_ns, p.port)
        out["suite"] = session.suite
        cpu0, t0 = time.thread_time(), time.monotonic()
        completed = True
        try:
            for chunk in payload.chunks():
                for off in range(0, len(chunk), SEND):
                    session.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    session.sock.sendall(chunk[off:off + SEND])
                    sent += len(chunk[off:off + SEND])
                    if during is not None:
                        during(sent)
            client.close_notify(session.sock)
            session.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the deadline (a stalled flow), or the peer reset
            completed = False
            out["send_error"] = (f"timed out after {p.timeout:g} s" if isinstance(
                exc, TimeoutError) else str(exc.strerror or exc))
        out["sent"] = sent
        out["send_seconds"] = round(time.monotonic() - t0, 3)
        out["sender_cpu_s"] = round(time.thread_time() - cpu0, 3)
        if session.keylog:
            out["keylog"] = session.keylog  # the caller keeps it 0600 or drops it
        got = recv.finish(deadline - time.monotonic() if completed else 5.0)
        # after the receiver is done: a tail loss probe or an RTO of the last segments
        # (a slow receiver under emulation) is a retransmission the NIC sees too
        out["retransmits"] = client.total_retrans(session.sock)
        out["seconds"] = round(time.monotonic() - t0, 3)
        out["completed"] = completed and got.get("ended") != "killed at the deadline"
    except client.SessionError as exc:
        out["session_error"] = str(exc)
        out["completed"] = False
        got = recv.finish(5.0)
    finally:
        recv.kill()
        if session is not None:
            if not out.get("completed"):
                # abort (RST): a stalled flow must not linger as an orphan that keeps
                # retransmitting through the NIC after the transfer is over
                session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            session.sock.close()
    out["received"] = got
    after = {"nic": nicmod.counters(p.sender_ns, n.iface),
             "tx_tls": nicmod.tls_stat(p.sender_ns), "rx_tls": nicmod.tls_stat(p.receiver_ns)}
    out["nic_delta"] = nicmod.delta(before["nic"], after["nic"])
    out["tls_stat_delta"] = nicmod.delta(before["tx_tls"], after["tx_tls"])
    out["receiver_tls_stat_delta"] = nicmod.delta(before["rx_tls"], after["rx_tls"])
    judge(out, payload)
    return out


def judge(out: dict[str, Any], payload: Payload) -> None:
    """intact: every byte arrived and hashes like what was sent; prefix_intact: what
    arrived is the start of it (a flow that stalled, a receiver that stopped at a bad
    record); bad_record: the receiver rejected one."""
    got = out["received"]
    n = int(got.get("bytes", 0))
    out["intact"] = (bool(out.get("completed")) and n == payload.size
                     and got.get("sha256") == payload.sha256())
    out["prefix_intact"] = n <= payload.size and got.get("sha256") == payload.sha256(n)
    out["bad_record"] = bool(got.get("error"))
    seconds = out.get("seconds") or 0
    out["MBps"] = round(n / seconds / 1e6, 3) if seconds else 0.0
