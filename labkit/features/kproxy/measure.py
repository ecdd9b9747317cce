"""Measuring a kproxy pair, next to the lab's kernel: throughput each way, request/response
latency, data integrity, and what moving the bytes cost (CPU per GiB, copies, context
switches, crypto), with iperf3 through the same path as the yardstick no one here wrote.

The endpoints are labkit.features.kproxy.meteragent processes in the client and upstream
nodes; /proc is sampled (labkit.features.kproxy.usage) around each test, so every figure
belongs to one test. Called in-process for a local lab and through the guest daemon for
a lab in a VM (`measure_pair` is @remote).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labkit.base import helper
from labkit.base.helper import Helper
from labkit.errors import LabkitError, UsageError
from labkit.features.kproxy import certs, usage
from labkit.features.kproxy.config import Pair
from labkit.features.kproxy.lab import config_of, pair_of
from labkit.features.kproxy.setup import answers
from labkit.hosts.rpc import remote

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

MiB, GiB = 1 << 20, 1 << 30
SERVER_READY = 60.0


@dataclass
class Path:
    pair: Pair
    src: str  # client node
    dst: str  # upstream node (the server agent runs there)

    @property
    def framed(self) -> int:
        """Length prefix of measurement messages: the policy's, or 4 on TLS pairs (whose
        streams end with a zero-length message rather than a half-close)."""
        if self.pair.rule:
            return self.pair.rule.header
        return 4 if self.pair.tls else 0

    def spec(self, **fields: Any) -> dict[str, Any]:
        return {"framed": self.framed, "eom": self.pair.tls, **fields}


def path_of(lab: Lab, pair_name: str | None, src: str | None) -> Path:
    cfg = config_of(lab)
    pair = pair_of(cfg, pair_name)
    client = src or pair.client
    if client is None:
        raise UsageError(f"kproxy pair '{pair.name}' names no client node.",
                         hint="Give --from NODE, or `client:` in the pair.")
    lab.node(client)
    if pair.upstream.node is None:
        raise UsageError(f"kproxy pair '{pair.name}' has an upstream outside the lab's "
                         f"nodes ({pair.upstream}); labkit cannot run a server there.")
    if pair.mode != "direct" and pair.proxy is not None and answers(lab, pair) is None:
        raise LabkitError(f"the proxy of kproxy pair '{pair.name}' does not answer.",
                          hint=f"`labkit kproxy status {lab.name}` shows it; `labkit down` "
                               "and `up` restart it.")
    return Path(pair, client, pair.upstream.node)


def _agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "labkit.features.kproxy.meteragent", *args]


def start_server(lab: Lab, path: Path, timeout: float, connections: int = 0) -> Helper:
    """The measuring server in the upstream node, once it listens; with `connections`, it
    exits by itself once it has served that many (and printed what it sent)."""
    up = path.pair.upstream
    args = ["serve", "--address", up.address, "--port", str(up.port), "--timeout",
            str(timeout), "--connections", str(connections)]
    if path.pair.tls:
        mine = certs.node_paths(lab.name, path.dst)
        args += ["--tls", mine.cert, mine.key]
    return helper.start(lab.node(path.dst), _agent(*args),
                        what=f"the measuring server on {path.dst}", ready='"ready"',
                        timeout=SERVER_READY, text=True)


def stop(server: Helper, wait: float = 0.0) -> list[dict[str, Any]]:
    """End the server (after `wait` seconds for it to finish by itself: its last result
    is printed after its client has gone); the results it printed."""
    if wait:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=wait)  # its few lines fit in the pipe
    helper.kill(server.proc, grace=10)
    out, _ = server.proc.communicate()
    text = server.early + (out or "")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_client(lab: Lab, path: Path, tests: list[dict[str, Any]],
               timeout: float) -> list[dict[str, Any]]:
    entry = path.pair.entry
    assert entry is not None
    args = ["run", "--address", entry.address, "--port", str(entry.port),
            "--timeout", str(timeout), "--tests", json.dumps(tests)]
    if path.pair.tls:
        args += ["--tls-ca", certs.ca_path(lab.name)]
    try:
        done = lab.node(path.src).run(_agent(*args), timeout=timeout * 3 + 30)
    except subprocess.TimeoutExpired as exc:
        raise LabkitError(f"the measuring client on {path.src} did not finish within "
                          f"{exc.timeout:g} s (its own deadline is {timeout:g} s per test).",
                          hint=f"`labkit kproxy status {lab.name}` shows the proxy; its log "
                               "is in the lab's state directory.") from None
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabkitError(f"the measuring client on {path.src} failed: {why}.")
    return json.loads(lines[-1])["results"]  # type: ignore[no-any-return]


def proxy_pid(lab: Lab, pair: Pair) -> int | None:
    if pair.mode == "direct":
        return None
    live = answers(lab, pair)
    return int(live["pid"]) if live else None


def proxy_counters(lab: Lab, pair: Pair) -> dict[str, Any] | None:
    return answers(lab, pair) if pair.mode != "direct" else None


def _cost(delta: usage.Sample, moved: int) -> dict[str, Any]:
    """What moving `moved` bytes cost, from a /proc delta."""
    gib, mib = moved / GiB, moved / MiB
    proxy, softirq = usage.seconds(delta.proxy_ticks), usage.seconds(delta.softirq_ticks)
    kworker = usage.seconds(delta.kworker_ticks)
    per = (lambda x: round(x / gib, 3)) if gib else (lambda x: None)
    return {
        "proxy_cpu_s": proxy, "softirq_s": softirq, "kworker_s": kworker,
        "cpu_s_per_GiB": per(proxy + softirq),
        "cpu_s_per_GiB_with_kworkers": per(proxy + softirq + kworker),
        "rchar_per_byte": round(delta.rchar / moved, 3) if moved else None,
        "wchar_per_byte": round(delta.wchar / moved, 3) if moved else None,
        "ctxsw_per_MiB": round(delta.ctxsw / mib, 2) if mib else None,
        "machine_busy_s": usage.seconds(delta.busy_ticks),
    }


def _timed(lab: Lab, path: Path, pid: int | None, test: dict[str, Any],
           timeout: float) -> tuple[dict[str, Any], usage.Sample]:
    before = usage.sample(pid)
    result = run_client(lab, path, [test], timeout)[0]
    return result, usage.sample(pid) - before


def received_while_sending(got: dict[str, Any], sent: dict[str, Any]) -> tuple[int, float]:
    """(bytes that had arrived when the sender stopped, seconds from the first of them):
    iperf3's view of a run. What arrives after is what the path held in its queues."""
    end = float(sent["end"])
    count = 0
    for t, total in got["series"]:
        if t > end:
            break
        count = int(total)
    return count, max(0.0, end - float(got["first"]))


def throughput(lab: Lab, path: Path, direction: str, seconds: float,
               pid: int | None) -> dict[str, Any]:
    test = path.spec(test=direction, id=f"{direction}-timed", seconds=seconds)
    server: Helper | None = None
    if direction == "down":  # the server is the sender: its stdout says when it stopped
        server = start_server(lab, path, timeout=seconds + 90, connections=1)
    try:
        res, delta = _timed(lab, path, pid, test, seconds + 60)
    finally:
        served = stop(server, wait=30) if server is not None else []
    if "error" in res:
        return {"error": res["error"]}
    if direction == "up":
        got, sent = res["server"], res["sent"]
    else:
        got = res["received"]
        sent = next((r for r in served if r.get("id") == test["id"]), {})
        if "end" not in sent:
            return {"error": "the measuring server did not report its send"}
    moved = int(got["bytes"])
    during, window = received_while_sending(got, sent)
    return {"MBps": round(during / window / 1e6, 1) if window else 0.0,
            "MBps_to_last_byte": round(moved / got["seconds"] / 1e6, 1)
            if got["seconds"] else 0.0,
            "bytes": moved, "seconds": round(window, 3),
            "queued_at_end_bytes": moved - during, **_cost(delta, moved)}


def integrity(lab: Lab, path: Path, size: int) -> dict[str, Any]:
    """Exactly `size` bytes each way, sha256 of everything sent vs everything received."""
    out: dict[str, Any] = {"bytes": size}
    server = start_server(lab, path, timeout=600, connections=2)
    try:
        up, down = run_client(lab, path, [
            path.spec(test="up", id="up-hash", bytes=size, hash=True),
            path.spec(test="down", id="down-hash", bytes=size, hash=True)], timeout=600)
    finally:
        served = stop(server, wait=30)
    if "error" in up or "error" in down:
        return {**out, "intact": False, "error": up.get("error") or down.get("error")}
    sent_down = next((r for r in served if r.get("id") == "down-hash"), {})
    out["up"] = (up["sent"]["sha256"] == up["server"]["sha256"]
                 and up["sent"]["bytes"] == up["server"]["bytes"])
    out["down"] = (sent_down.get("sha256") == down["received"]["sha256"]
                   and sent_down.get("bytes") == down["received"]["bytes"])
    out["intact"] = out["up"] and out["down"]
    out["sha256_up"] = up["server"]["sha256"]
    return out


def latency(lab: Lab, path: Path, rounds: int, size: int = 64) -> dict[str, Any]:
    res = run_client(lab, path, [path.spec(test="rr", id="rr", rounds=rounds, size=size)],
                     timeout=120)[0]
    if "error" in res:
        return {"error": res["error"]}
    rtts = sorted(res["rtt_us"])
    return {"rounds": len(rtts), "size": size, "p50_us": round(statistics.median(rtts), 1),
            "p99_us": round(rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))], 1)}


def iperf3(lab: Lab, path: Path, seconds: float, reverse: bool,
           pid: int | None) -> dict[str, Any]:
    """iperf3 through the same path (not on framed or TLS pairs: it speaks neither)."""
    if path.framed or path.pair.tls:
        return {"skipped": "iperf3 sends unframed plaintext, which this pair's policy or "
                           "TLS would refuse"}
    up, entry = path.pair.upstream, path.pair.entry
    assert entry is not None
    with helper.start(lab.node(path.dst),
                      ["iperf3", "-s", "-1", "-B", up.address, "-p", str(up.port)],
                      what=f"iperf3 on {path.dst} port {up.port}", timeout=20,
                      probe=lambda: _listening(lab, path.dst, up.port),
                      stdout=subprocess.DEVNULL, text=True):
        before = usage.sample(pid)
        done = lab.node(path.src).run(
            ["iperf3", "-c", entry.address, "-p", str(entry.port), "-t", str(seconds),
             "-J", *(["-R"] if reverse else [])], timeout=seconds + 60)
        delta = usage.sample(pid) - before
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return {"error": f"iperf3 printed no JSON: {done.stderr.strip()[-200:]}"}
    if "error" in data:
        return {"error": f"iperf3: {data['error']}"}
    end = data["end"]
    rate = end["sum_received"]["bits_per_second"] / 8
    moved = int(end["sum_received"]["bytes"])
    return {"MBps": round(rate / 1e6, 1), "bytes": moved,
            "seconds": round(end["sum_received"]["seconds"], 3), **_cost(delta, moved)}


def _listening(lab: Lab, node: str, port: int) -> bool:
    out = lab.node(node).run(["ss", "-Hltn", f"sport = :{port}"], timeout=10).stdout
    return bool(out.strip())


@remote
def measure_pair(lab: Lab, pair: str | None = None, src: str | None = None,
                 seconds: float = 3.0, integrity_bytes: int = 64 * MiB, rounds: int = 2000,
                 with_iperf3: bool = True) -> dict[str, Any]:
    """One row of the comparison for a pair: every figure measured in this call."""
    path = path_of(lab, pair, src)
    pid = proxy_pid(lab, path.pair)
    counters_before = proxy_counters(lab, path.pair)
    row: dict[str, Any] = {"pair": path.pair.name, "mode": path.pair.mode,
                           "tls": path.pair.tls, "policy": path.pair.rule is not None,
                           "path": f"{path.src} -> {path.pair.entry}"
                                   + (f" -> {path.pair.upstream}"
                                      if path.pair.mode != "direct" else "")}
    # Each iperf3 run right after labkit's run in the same direction: on a shared machine
    # the rate drifts within seconds, and the two meters should see the same conditions.
    server = start_server(lab, path, timeout=seconds * 4 + 120)
    try:
        row["up"] = throughput(lab, path, "up", seconds, pid)
        counters_after = proxy_counters(lab, path.pair)
        row["latency"] = latency(lab, path, rounds)
    finally:
        stop(server)
    if with_iperf3:
        row["iperf3_up"] = iperf3(lab, path, seconds, reverse=False, pid=pid)
    before_down = proxy_counters(lab, path.pair)
    row["down"] = throughput(lab, path, "down", seconds, pid)
    if path.pair.tls:
        row["crypto"] = _crypto(counters_before, counters_after, before_down,
                                proxy_counters(lab, path.pair), row)
    if with_iperf3:
        row["iperf3_down"] = iperf3(lab, path, seconds, reverse=True, pid=pid)
    row["integrity"] = integrity(lab, path, integrity_bytes)
    return row


def _crypto(before_up: dict[str, Any] | None, after_up: dict[str, Any] | None,
            before_down: dict[str, Any] | None, after_down: dict[str, Any] | None,
            row: dict[str, Any]) -> dict[str, Any]:
    """Crypto operations per byte moved over the two throughput runs (the proxy's
    counters around each): the client encrypts and the server decrypts every byte (2); a
    TLS proxy decrypts and re-encrypts it once more."""
    moved = sum(int(row[d].get("bytes", 0)) for d in ("up", "down"))
    spans = [(before_up, after_up), (before_down, after_down)]
    if not all(b and a and b.get("crypto") for b, a in spans):
        return {"where": "endpoints only (no proxy)", "ops_per_byte": 2.0}
    total = {k: sum(a["crypto"][k] - b["crypto"][k] for b, a in spans)  # type: ignore[index]
             for k in ("decrypted_bytes", "encrypted_bytes", "records_decrypted",
                       "records_encrypted")}
    dec, enc = total["decrypted_bytes"], total["encrypted_bytes"]
    return {"where": after_down["crypto"]["where"],  # type: ignore[index]
            "proxy_decrypted_bytes": dec, "proxy_encrypted_bytes": enc,
            "records_decrypted": total["records_decrypted"],
            "records_encrypted": total["records_encrypted"],
            "ops_per_byte": round(2 + (dec + enc) / moved, 2) if moved else None}


@remote
def agreement(lab: Lab, pair: str | None = None, src: str | None = None, runs: int = 8,
              seconds: float = 2.0, shaped_MBps: float | None = None) -> dict[str, Any]:
    """labkit's meter against iperf3 on one path: `runs` short runs of each, alternating,
    each way. On a shared 2-core machine the rate of a veth path jumps between two levels
    (which CPU ends up doing TCP's receive work) from one second to the next, so one run
    of each tells little; the medians of many interleaved runs agree or do not. Which
    tool goes first alternates too, so neither always follows the other.

    With `shaped_MBps`, the client's link is held to that rate both ways (tc tbf on both
    of its ends), so the path, not the CPU, sets the rate: both tools then measure the
    same thing, and what is left between them is how each counts."""
    path = path_of(lab, pair, src)
    if path.framed or path.pair.tls:
        return {"pair": path.pair.name, "skipped": "iperf3 sends unframed plaintext, "
                "which this pair's policy or TLS would refuse"}
    out: dict[str, Any] = {"pair": path.pair.name, "mode": path.pair.mode, "runs": runs,
                           "seconds": seconds, "shaped_MBps": shaped_MBps}
    with shaped(lab, path, shaped_MBps) as where:
        out["shaped_on"] = where
        for way in ("up", "down"):
            out[way] = _alternate(lab, path, way, runs, seconds)
    return out


def _alternate(lab: Lab, path: Path, way: str, runs: int, seconds: float) -> dict[str, Any]:
    meter: list[float] = []
    yard: list[float] = []
    errors: list[str] = []
    for i in range(runs):
        for tool in (("meter", "iperf3") if i % 2 == 0 else ("iperf3", "meter")):
            if tool == "meter":
                res = _meter_once(lab, path, way, seconds)
            else:
                res = iperf3(lab, path, seconds, reverse=way == "down", pid=None)
            if "error" in res:
                errors.append(f"{tool} {way}: {res['error']}")
            else:
                (meter if tool == "meter" else yard).append(float(res["MBps"]))
    out: dict[str, Any] = {"meter_MBps": meter, "iperf3_MBps": yard, "errors": errors}
    if meter and yard:
        out["ratio_of_medians"] = round(statistics.median(meter) / statistics.median(yard), 3)
    return out


@contextlib.contextmanager
def shaped(lab: Lab, path: Path, MBps: float | None) -> Iterator[list[str]]:
    """The client's first link held to MBps each way (tbf on the client's interface toward
    the pair's entry, and on the entry node's interface back); removed afterwards."""
    if not MBps:
        yield []
        return
    entry = path.pair.entry
    assert entry is not None
    entry_node = path.pair.proxy if path.pair.mode != "direct" and path.pair.proxy \
        else path.dst
    mine = _route(lab, path.src, entry.address)
    theirs = _route(lab, entry_node, mine.get("prefsrc", ""))
    ends = [(path.src, mine["dev"]), (entry_node, theirs["dev"])]
    rate = f"{int(MBps * 8)}mbit"
    done: list[tuple[str, str]] = []
    try:
        for node, dev in ends:
            res = lab.node(node).run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                                      "rate", rate, "burst", "256k", "latency", "50ms"],
                                     timeout=30)
            if res.returncode != 0:
                raise LabkitError(f"could not shape {node}:{dev} to {MBps:g} MB/s: "
                                  f"{res.stderr.strip() or 'tc failed'}.",
                                  hint="The kernel needs sch_tbf (CONFIG_NET_SCH_TBF).")
            done.append((node, dev))
        yield [f"{node}:{dev}" for node, dev in ends]
    finally:
        for node, dev in done:
            lab.node(node).run(["tc", "qdisc", "del", "dev", dev, "root"], timeout=30)


def _route(lab: Lab, node: str, dest: str) -> dict[str, Any]:
    done = lab.node(node).run(["ip", "-j", "route", "get", dest], timeout=30)
    routes = json.loads(done.stdout or "[]")
    if done.returncode != 0 or not routes:
        raise LabkitError(f"no route from {node} to {dest} to shape "
                          f"({done.stderr.strip() or 'ip printed nothing'}).")
    return routes[0]  # type: ignore[no-any-return]


def _meter_once(lab: Lab, path: Path, way: str, seconds: float) -> dict[str, Any]:
    """One timed meter run with a server of its own (the port is iperf3's in between)."""
    if way == "down":  # throughput() starts the sending server itself
        return throughput(lab, path, way, seconds, None)
    server = start_server(lab, path, timeout=seconds + 90, connections=1)
    try:
        return throughput(lab, path, way, seconds, None)
    finally:
        stop(server, wait=30)
