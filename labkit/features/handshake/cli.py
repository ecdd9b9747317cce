"""`labkit handshake ...`: the TLS handshake upcall of a lab: its daemons, what the kernel
asked of them as it happens, and the DoS step (stall a daemon while a consumer piles up
requests)."""

from __future__ import annotations

import json as jsonlib
import os
import select
import subprocess
import time
from typing import Any

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import columns, console, emit_json, info

app = typer.Typer(help="The kernel's TLS handshake upcall: daemons, live trace, limits.",
                  no_args_is_help=True)
OPS = "labkit.features.handshake.ops"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


@app.command("status")
def status_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per daemon node: daemon up, requests READY/accepted/done, failures by errno, in
    flight, stalled, latency p50/p99, open fds; the kernel's view of the namespace (kTLS
    sockets and /proc/net/tls_stat, the cap on queued requests); the consumers."""
    data = attach(name).feature_status("handshake")
    if json:
        emit_json(data)
        return
    rows = []
    for node, entry in data["nodes"].items():
        d, k = entry["daemon"], entry["kernel"]
        failed = ", ".join(f"{e} {n}" for e, n in d["failed"].items()) or "-"
        state = ("stalled" if d["stalled"] else "up") if d["up"] else d["state"].upper()
        rows.append((node, state, str(d["ready"]), str(d["accepted"]), str(d["done"]), failed,
                     f"{d['in_flight']}/{d['pool']}", _ms(d["latency_ms"]["p50"]),
                     _ms(d["latency_ms"]["p99"]), str(len(k["ktls_sockets"])),
                     str(k["tls_stat"].get("TlsCurrTxSw", "-")), str(d["fds"])))
    columns(("NODE", "DAEMON", "READY", "ACCEPTED", "DONE", "FAILED", "IN FLIGHT", "P50",
             "P99", "KTLS SOCKETS", "TLS TX SW", "FDS"), rows)
    console.print(f"kernel: at most {data['pending_cap']} requests wait per namespace for a "
                  f"daemon ({data['pending_cap_rule']}); daemons run {data['pool']} at once.",
                  soft_wrap=True, markup=False)
    if "nvme" in data:
        n = data["nvme"]
        ctrls = ", ".join(f"{c} {s}" for c, s in n["controllers"].items()) or "none"
        console.print(f"nvme: {n['host']} -> {n['target']} {n['address']}:{n['port']} "
                      f"tls={'on' if n['tls'] else 'off'}: controllers {ctrls}, device "
                      f"{n['device'] or '-'}", soft_wrap=True, markup=False)
    if "nfs" in data:
        f = data["nfs"]
        console.print(f"nfs: {f['client']} mounts {f['server']}:/ (xprtsec={f['xprtsec']}) "
                      f"on {f['mount']}: {'mounted' if f['mounted'] else 'NOT MOUNTED'}",
                      soft_wrap=True, markup=False)


def render(event: dict[str, Any]) -> str:
    """One trace line: time, node, what happened."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0))) + \
        f".{int(event.get('time', 0) * 1000) % 1000:03d}"
    kind = event.get("event", "?")
    head = f"{stamp} {event.get('node', '?'):8} {kind.upper():10}"
    if kind == "ready":
        return head + f" {event['count']} request(s) waiting" + \
            (" (daemon stalled: left in the kernel's queue)" if event.get("stalled") else "")
    if kind == "accept":
        extra = []
        if event.get("peer_identities"):
            extra.append("psk serials " + ",".join(f"{s:#x}" for s in event["peer_identities"]
                                                   if s))
        if event.get("peername"):
            extra.append(f"peername {event['peername']}")
        if event.get("certificate"):
            extra.append(f"cert {event['certificate']:#x}")
        return head + (f" fd {event['fd']} {event['role']} {event['auth']} {event['peer']}"
                       f" timeout {event['timeout_ms']} ms " + " ".join(extra)).rstrip()
    if kind == "done":
        if event.get("status"):
            return head + f" fd {event['fd']} {event['errno']} after {event['ms']:.0f} ms: " \
                          f"{event.get('reason', '')}"
        auth = ",".join(f"{s:#x}" for s in event.get("remote_auth") or []) or "none"
        return head + (f" fd {event['fd']} OK in {event['ms']:.0f} ms {event['cipher']} "
                       f"peer {event.get('peer_identity') or '-'} remote-auth {auth} "
                       f"(kTLS from seq tx {event['tx_seq']} rx {event['rx_seq']})")
    rest = {k: v for k, v in event.items() if k not in ("seq", "time", "node", "event")}
    return head + " " + " ".join(f"{k}={v}" for k, v in rest.items())


@app.command("trace")
def trace_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="A node that runs a handshake daemon."),
    from_start: bool = typer.Option(False, "--from-start",
                                    help="Show the events so far first, then follow."),
    seconds: float = typer.Option(None, "--seconds", min=0.1, max=86400,
                                  help="Stop after this long (default: until Ctrl-C)."),
    count: int = typer.Option(None, "--count", min=1, help="Stop after this many events."),
    json: bool = typer.Option(False, "--json", help="One JSON object a line."),
) -> None:
    """Follow a daemon as the kernel calls on it: READY (a request is waiting), ACCEPT
    (the socket and parameters it got), DONE (status, cipher, the peer's key serial)."""
    lab = attach(name)
    path = lab.node(node).call(f"{OPS}:events_path")
    proc = lab.node(node).popen(["tail", "-n", "+1" if from_start else "0", "-F", path],
                                stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    lines = LineReader(proc.stdout.fileno())
    shown = 0
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while not (count and shown >= count):
            line = lines.next(None if deadline is None else deadline - time.monotonic())
            if line is None:
                break
            try:
                event = jsonlib.loads(line)
            except ValueError:
                continue
            print(jsonlib.dumps(event, sort_keys=True) if json else render(event), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        proc.kill()
        proc.wait(10)


class LineReader:
    """Lines from a pipe as they arrive. It reads the raw fd itself: a buffered file object
    would keep lines it read ahead where select() cannot see them, and the trace would
    stall on them until the next event."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def next(self, timeout: float | None) -> str | None:
        """The next line; None at the end of the stream or when `timeout` s ran out."""
        end = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                return None
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")


@app.command("stall")
def stall_cmd(name: str = typer.Argument(..., help="Lab name."),
              node: str = typer.Argument(..., help="Node whose daemon stops taking requests.")
              ) -> None:
    """The daemon stops ACCEPTing: the kernel keeps new requests queued (up to its cap)."""
    out = attach(name).node(node).call(f"{OPS}:stall")
    console.print(f"{node}: stalled (READY so far {out['ready']}, accepted {out['accepted']})")


@app.command("resume")
def resume_cmd(name: str = typer.Argument(..., help="Lab name."),
               node: str = typer.Argument(..., help="Node whose daemon takes requests again.")
               ) -> None:
    """The daemon takes the queued requests again."""
    out = attach(name).node(node).call(f"{OPS}:resume")
    console.print(f"{node}: resumed (READY so far {out['ready']}, accepted {out['accepted']})")


@app.command("dos")
def dos_cmd(
    name: str = typer.Argument(..., help="Lab name (an NVMe lab with TLS)."),
    connects: int = typer.Option(12, "--connects", min=1, max=256,
                                 help="TCP connections opened to the target at once."),
    hold: float = typer.Option(5.0, "--hold", min=0.1, max=60,
                               help="Seconds the target's daemon stays stalled at most."),
    json: bool = typer.Option(False, "--json", help="The whole report as JSON."),
) -> None:
    """The limits step: stall the target's daemon, open many TCP connections to the NVMe
    port (each one a handshake request of nvmet's), watch the kernel queue them up to its
    per-namespace cap and refuse the rest at once, see what a real host connect gets
    meanwhile, resume, and check that the lab recovers."""
    info(f"stalling the target's daemon and opening {connects} connections; this takes up "
         "to a minute under emulation")
    data = attach(name).call(f"{OPS}:dos", connects, hold)
    if json:
        emit_json(data)
        return
    w = data["while_stalled"]
    console.print(f"kernel cap: {data['pending_cap']} queued requests per namespace. With "
                  f"{data['target']}'s daemon stalled, {data['connects']} connections: "
                  f"{w['queued']} queued (READY reached the stalled daemon), "
                  f"{w['refused_at_once']} closed at once by the target (the kernel refused "
                  f"the request, EAGAIN), {w['accepted']} taken.", soft_wrap=True,
                  markup=False)
    d, a = data["host_connect_while_stalled"], data["host_connect_after_resume"]
    console.print(f"a host connect meanwhile: {d['result']} after {d['seconds']:g} s; after "
                  f"resume: {a['result']} after {a['seconds']:g} s. Daemon failures while "
                  f"draining: {data['daemon_failures_after'] or 'none'}.", soft_wrap=True,
                  markup=False)
    for line in data["kernel_log"][-8:]:
        console.print(f"  kernel: {line}", soft_wrap=True, markup=False)
    console.print(("recovered: " if data["recovered"] else "NOT recovered: ")
                  + data["content_check"], soft_wrap=True, markup=False)
    raise typer.Exit(0 if data["recovered"] else 1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="handshake")
