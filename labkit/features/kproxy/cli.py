"""`labkit kproxy ...`: the proxy pairs of a lab, and traffic through one of them."""

from __future__ import annotations

from typing import Any

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import columns, console, emit_json

app = typer.Typer(help="kproxy pairs: sockets joined in the kernel (sockmap) next to the "
                       "user-space proxies they replace.", no_args_is_help=True)


def _mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


@app.command("status")
def status_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per pair: mode, where clients connect, the upstream, and the proxy's counters
    (connections, bytes each way, policy drops, closes forwarded, crypto), with the ids of
    the BPF programs and maps a sockmap pair holds in the kernel."""
    data = attach(name).feature_status("kproxy")
    if json:
        emit_json(data)
        return
    rows = []
    for pair, info in data["pairs"].items():
        live: dict[str, Any] = info.get("proxy_process") or {}
        up, down = live.get("upstream", {}), live.get("downstream", {})
        drops = (up.get("dropped_messages", 0) + down.get("dropped_messages", 0)
                 if info["policy"] else "-")
        state = "-" if info["mode"] == "direct" else (
            "listening" if live.get("listening") else "NOT RUNNING")
        rows.append((pair, info["mode"] + (" tls" if info["tls"] else ""), state,
                     info["entry"] or "-", info["upstream"],
                     f"{live.get('active', 0)}/{live.get('accepted', 0)}" if live else "-",
                     _mb(up.get("bytes", 0)) if live else "-",
                     _mb(down.get("bytes", 0)) if live else "-", str(drops),
                     f"{live.get('half_closes', 0)}/{live.get('resets', 0)}" if live else "-"))
    columns(("PAIR", "MODE", "PROXY", "CLIENTS CONNECT TO", "UPSTREAM", "ACTIVE/ALL",
             "TO SERVER", "TO CLIENT", "DROPS", "FIN/RST FWD"), rows)
    for pair, info in data["pairs"].items():
        live = info.get("proxy_process") or {}
        if live.get("bpf", {}).get("progs"):
            console.print(f"{pair}: BPF programs {live['bpf']['progs']}, maps "
                          f"{live['bpf']['maps']} (ids, as `bpftool prog show id N` lists them)",
                          soft_wrap=True, markup=False, highlight=False)
        if live.get("crypto"):
            c = live["crypto"]
            console.print(f"{pair}: TLS in {c['where']}: decrypted {_mb(c['decrypted_bytes'])} "
                          f"({c['records_decrypted']} records), encrypted "
                          f"{_mb(c['encrypted_bytes'])} ({c['records_encrypted']} records)",
                          soft_wrap=True, markup=False, highlight=False)


@app.command("traffic")
def traffic_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    pair: str = typer.Option(None, "--pair", help="Proxy pair (default: the lab's only one)."),
    src: str = typer.Option(None, "--from", help="Client node (default: the pair's client)."),
    seconds: float = typer.Option(3.0, "--seconds", min=0.2, max=120,
                                  help="Seconds each throughput run sends for."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Traffic through a pair, measured: throughput each way (what arrived while the
    sender sent), request/response latency, 16 MiB each way checked by sha256, and the
    cost: CPU seconds per GiB (proxy + softirq, and with kworkers), bytes copied through
    the proxy's memory per byte, context switches per MiB."""
    lab = attach(name)
    row = lab.call("labkit.features.kproxy.measure:measure_pair", pair, src, seconds,
                   16 << 20, 1000, False)
    if json:
        emit_json(row)
        return
    console.print(f"pair {row['pair']} ({row['mode']}{', TLS' if row['tls'] else ''}"
                  f"{', policy' if row['policy'] else ''}): {row['path']}", soft_wrap=True,
                  markup=False, highlight=False)
    rows = []
    for way in ("up", "down"):
        r = row[way]
        if "error" in r:
            rows.append((way, "error: " + r["error"], "", "", "", ""))
            continue
        rows.append((way, f"{r['MBps']:.1f}", f"{r['cpu_s_per_GiB']}",
                     f"{r['cpu_s_per_GiB_with_kworkers']}",
                     f"{r['rchar_per_byte']}/{r['wchar_per_byte']}", f"{r['ctxsw_per_MiB']}"))
    columns(("WAY", "MB/s", "CPU s/GiB", "+KWORKERS", "READ/WRITTEN PER BYTE", "CTXSW/MiB"),
            rows)
    lat, ok = row["latency"], row["integrity"]
    console.print(f"latency ({lat.get('size')} B request/response, {lat.get('rounds')} rounds):"
                  f" p50 {lat.get('p50_us')} us, p99 {lat.get('p99_us')} us; "
                  f"16 MiB each way {'intact' if ok.get('intact') else 'NOT INTACT'} (sha256)",
                  soft_wrap=True, markup=False, highlight=False)
    if row.get("crypto"):
        c = row["crypto"]
        console.print(f"crypto: {c.get('ops_per_byte')} operations per byte "
                      f"({c.get('where')})", soft_wrap=True, markup=False, highlight=False)
    if not ok.get("intact"):
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="kproxy")
