"""The experiments of the kproxy notebook (labs/04-kproxy.ipynb), each one call returning
plain facts for its graded checks: the modes compared, the L7 policy's drops, and what a
half-close and a reset become on the far side of a pair. Kept here so that the notebook
shows the lesson, not socket plumbing, and so that the same code is importable in tests.

Runs where the lab's proxies run (the sockets are made inside the lab's namespaces), so
for labs on this machine's kernel; kproxy.yaml is one.
"""

from __future__ import annotations

import io
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.features.kproxy import measure, tcpstate
from labkit.features.kproxy.lab import config_of
from labkit.features.kproxy.setup import answers

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

MiB = 1 << 20
TIMEOUT = 30.0  # s: any single read or accept in these experiments


def compare(lab: Lab, pairs: list[str], seconds: float = 1.0, integrity_mib: int = 4,
            rounds: int = 300) -> list[dict[str, Any]]:
    """One measure_pair row per pair, in order: throughput each way, latency, what moving
    the bytes cost, and integrity (no iperf3: benchmarks/kproxy.py has it beside)."""
    return [lab.call("labkit.features.kproxy.measure:measure_pair", p, None, seconds,
                     integrity_mib * MiB, rounds, False) for p in pairs]


def policy_run(lab: Lab, pair_name: str, messages: int = 1000, every: int = 7) -> dict[str, Any]:
    """Length-prefixed messages through a policy pair, every `every`-th one starting with
    the drop prefix: what the client sent, what the server got, what the proxy counted."""
    path = measure.path_of(lab, pair_name, None)
    rule = path.pair.rule
    if rule is None:
        raise LabkitError(f"kproxy pair '{pair_name}' has no policy to enforce.",
                          hint="Use a pair with `policy:` (kl, sl or bl in kproxy.yaml).")
    before = _live(lab, pair_name)["upstream"]
    spec = {"test": "policy", "id": "policy", "framed": rule.header,
            "prefix": rule.prefix.hex(), "messages": messages, "every": every,
            "max_payload": 2000}
    server = measure.start_server(lab, path, timeout=60, connections=1)
    try:
        res = measure.run_client(lab, path, [spec], timeout=60)[0]
    finally:
        measure.stop(server, wait=30)
    after = _live(lab, pair_name)["upstream"]
    if "error" in res:
        # what the proxy moved says where the stream stopped: before the proxy, in it
        # (a message it still waits to complete), or after it
        moved = {k: after[k] - before[k] for k in ("messages", "dropped_messages", "bytes")}
        raise LabkitError(
            f"the policy run through {pair_name} failed: {res['error']}. The proxy "
            f"forwarded {moved['messages']} messages ({moved['bytes']} bytes) and dropped "
            f"{moved['dropped_messages']} of the {messages} sent "
            f"({(messages + every - 1) // every} should drop).",
            hint=f"`labkit kproxy status {lab.name}` shows the pair's proxy and counters.")
    return {"pair": pair_name, "mode": path.pair.mode, "sent": res["messages_sent"],
            "should_drop": res["expected_drops"], "arrived": res["server"]["messages"],
            "counted_drops": after["dropped_messages"] - before["dropped_messages"],
            "passed_intact": res["server"]["sha256"] == res["expected_sha256"]
            and res["server"]["bytes"] == res["expected_bytes"]}


def closes(lab: Lab, pair_name: str, size: int = MiB) -> dict[str, Any]:
    """Through one pair: the client sends `size` bytes and half-closes, the server answers
    and half-closes; then on a second connection the client sends and resets. What each
    far side received and how its stream ended ('eof' or 'reset'), and what the proxy
    counted as forwarded."""
    pair = config_of(lab).pairs[pair_name]
    proxied = pair.mode != "direct"
    before = _live(lab, pair_name) if proxied else {}
    out: dict[str, Any] = {"pair": pair_name, "mode": pair.mode}
    up, down = os.urandom(size), os.urandom(size // 2)
    with _Legs(lab, pair_name) as legs:
        reader = _Reader(legs.server)
        legs.client.sendall(up)
        legs.client.shutdown(socket.SHUT_WR)
        got, how = reader.outcome()
        out["client_half_close"] = {"arrived": len(got), "intact": got == up, "ended": how}
        reader = _Reader(legs.client)
        legs.server.sendall(down)
        legs.server.shutdown(socket.SHUT_WR)
        got, how = reader.outcome()
        out["server_half_close"] = {"arrived": len(got), "intact": got == down, "ended": how}
    with _Legs(lab, pair_name) as legs:
        reader = _Reader(legs.server)
        legs.client.sendall(up)
        wait_until(lambda: tcpstate.outq(legs.client) == 0, TIMEOUT,
                   "the proxy to acknowledge the client's data")
        tcpstate.reset(legs.client)
        got, how = reader.outcome()
        out["client_reset"] = {"arrived": len(got), "intact": got == up, "ended": how}
    if proxied:
        wait_until(lambda: _live(lab, pair_name)["active"] == before["active"], TIMEOUT,
                   f"{pair_name}'s proxy to close both connections")
        after = _live(lab, pair_name)
        out["forwarded"] = {"half_closes": after["half_closes"] - before["half_closes"],
                            "resets": after["resets"] - before["resets"]}
    return out


def plot(rows: list[dict[str, Any]]) -> bytes:
    """PNG, three panels side by side per pair: throughput each way, the CPU it cost per
    GiB (proxy process, softirq, kernel workers), and the bytes that passed through the
    proxy's memory per byte moved (the copies)."""
    from matplotlib.figure import Figure

    labels = [f"{r['pair']}\n{r['mode']}" for r in rows]
    xs = range(len(rows))
    fig = Figure(figsize=(10, 3.2), dpi=100)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    width = 0.38
    ax1.bar([x - width / 2 for x in xs], [r["up"].get("MBps", 0) for r in rows], width,
            label="client → server")
    ax1.bar([x + width / 2 for x in xs], [r["down"].get("MBps", 0) for r in rows], width,
            label="server → client")
    ax1.set_title("throughput (MB/s)", fontsize=9)
    ax1.legend(fontsize=7)
    bottom = [0.0] * len(rows)
    for key, name in (("proxy_cpu_s", "proxy process"), ("softirq_s", "softirq"),
                      ("kworker_s", "kernel workers")):
        vals = [_per_gib(r["up"], key) for r in rows]
        ax2.bar(xs, vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax2.set_title("CPU seconds per GiB (client → server)", fontsize=9)
    ax2.legend(fontsize=7)
    ax3.bar(xs, [(r["up"].get("rchar_per_byte") or 0) + (r["up"].get("wchar_per_byte") or 0)
                 for r in rows], color="tab:red")
    ax3.set_ylim(0, 2.5)  # recv + send of every byte is 2; splice and sockmap stay at 0
    ax3.set_title("bytes through the proxy's memory per byte", fontsize=9)
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _per_gib(way: dict[str, Any], key: str) -> float:
    moved = way.get("bytes") or 0
    return float(way.get(key, 0)) / (moved / (1 << 30)) if moved else 0.0


def _live(lab: Lab, pair_name: str) -> dict[str, Any]:
    live = answers(lab, config_of(lab).pairs[pair_name])
    if live is None:
        raise LabkitError(f"the proxy of kproxy pair '{pair_name}' does not answer.",
                          hint=f"`labkit kproxy status {lab.name}` shows it.")
    return live


class _Legs:
    """A client socket connected through a pair, and the server socket that accepted the
    proxy's (or, direct, the client's) connection."""

    def __init__(self, lab: Lab, pair_name: str) -> None:
        pair = config_of(lab).pairs[pair_name]
        assert pair.entry is not None
        self.made: list[socket.socket] = []
        try:
            listener = self._keep(lab.node(pair.upstream.node or "").socket())
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((pair.upstream.address, pair.upstream.port))
            listener.listen(1)
            self.client = self._keep(lab.node(pair.client or "").socket())
            self.client.connect((pair.entry.address, pair.entry.port))
            self.server, _ = listener.accept()
            self._keep(self.server)
        except BaseException:
            self.close()
            raise

    def _keep(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(TIMEOUT)
        self.made.append(sock)
        return sock

    def close(self) -> None:
        for s in self.made:
            s.close()

    def __enter__(self) -> _Legs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Reader(threading.Thread):
    """Everything a socket receives until its stream ends, read in the background so that
    a sender never waits on full buffers; how it ended: 'eof' or 'reset'."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.result: tuple[bytes, str] = (b"", "did not end")
        self.start()

    def run(self) -> None:
        buf = bytearray()
        try:
            while chunk := self.sock.recv(MiB):
                buf += chunk
            self.result = (bytes(buf), "eof")
        except ConnectionResetError:
            self.result = (bytes(buf), "reset")
        except OSError as exc:
            self.result = (bytes(buf), f"error: {exc}")

    def outcome(self) -> tuple[bytes, str]:
        self.join(TIMEOUT)
        return self.result
