"""`labkit offload ...`: the emulated NICs of a lab, read and driven from the host.

    labkit offload stats NAME [--json]            knobs, offload flag, counters, netem, kTLS
    labkit offload send NAME [--size 4MiB]        one TLS 1.2 transfer, judged by its receiver
    labkit offload set NAME NIC strategy=nfp      knobs (and offload=on|off) while it runs
    labkit offload impair NAME NIC --loss 1%      netem on what the NIC sends (replaced)
"""

from __future__ import annotations

from typing import Any

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import columns, console, emit_json
from labkit.errors import UsageError
from labkit.features.offload.nic import FAST, SLOW

app = typer.Typer(help="Emulated TLS TX offload NICs: counters, transfers, knobs, loss.",
                  no_args_is_help=True)
OPS = "labkit.features.offload.ops"
NIC_HELP = "The NIC as NODE:IFACE (default: the topology's traffic NIC)."


def _nonzero(counters: dict[str, int], names: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {counters[k]}" for k in names if counters.get(k)) or "none"


def show_stats(data: dict[str, Any]) -> None:
    console.print(f"TLS {data['tls']['version']} {data['tls']['cipher']}; tlsnic module "
                  f"{'loaded' if data['module_loaded'] else 'not loaded'}")
    for note in data["notes"]:
        console.print(f"[yellow]note[/]: {note}")
    for label, nic in data["nics"].items():
        k, c = nic["knobs"], nic["counters"]
        console.print(f"[bold]{label}[/] -> {nic['peer']}: tls-hw-tx-offload "
                      f"{'on' if nic['tls_hw_tx_offload'] else 'off'}, strategy "
                      f"{k.get('strategy')}, refuse_add {k.get('refuse_add')}, corrupt_every "
                      f"{k.get('corrupt_every')}, max_ctx {k.get('max_ctx')}, offloaded flows "
                      f"{k.get('nr_ctx')}, gso_max_segs {nic['gso_max_segs']}")
        for q in nic["impair"]["netem"]:
            console.print(f"  netem at {q['at']} ({q['dev']}): {q['options']}, sent "
                          f"{q['sent_packets']}, dropped {q['drops']}")
        console.print(f"  fast path: {_nonzero(c, FAST)}")
        console.print(f"  slow path: {_nonzero(c, SLOW)}")
        faults = ("tx_tls_ctx", "tx_tls_del", "tx_tls_ctx_refused", "tx_tls_ctx_full",
                  "tx_tls_corrupted_tags", "tx_tls_bad_stream", "tx_nomem")
        console.print(f"  contexts and faults: {_nonzero(c, faults)}")
        ns = c.get("tx_tls_encrypt_ns", 0) + c.get("tx_tls_dump_ns", 0)
        console.print(f"  NIC crypto time {ns / 1e9:.3f} s, copy (DMA stand-in) "
                      f"{c.get('tx_tls_copy_ns', 0) / 1e9:.3f} s")
    rows = []
    for node, info in data["nodes"].items():
        for key, value in info["tls_stat"].items():
            if value:
                rows.append((node, key, str(value)))
    if rows:
        columns(("node", "kTLS counter", "value"), rows)


@app.command("stats")
def stats_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Each NIC's knobs, offload flag and counters (fast path: tx_tls_encrypted_*; slow
    path: out-of-order, resync, fallback, drops; faults), the netem on its path, and each
    node's /proc/net/tls_stat (zero counters left out)."""
    data = attach(name).call(f"{OPS}:stats")
    if json:
        emit_json(data)
        return
    show_stats(data)


@app.command("send")
def send_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    nic: str = typer.Option(None, "--nic", help=NIC_HELP),
    size: str = typer.Option(None, "--size", help="Bytes to send, e.g. 4MiB (default: the "
                             "topology's traffic.size)."),
    receiver: str = typer.Option(None, "--receiver", help="s_server, python or ktls "
                                 "(default: the topology's)."),
    timeout: float = typer.Option(None, "--timeout", min=1, max=3600,
                                  help="Seconds the whole transfer may take."),
    tls: str = typer.Option(None, "--tls", help="1.2 or 1.3 for this session (default: the "
                            "topology's; 1.3 is never offloaded)."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """One TLS session through the NIC: handshake in user space, kTLS TX in the kernel,
    reproducible bytes, close_notify; the receiver decrypts every record itself. Exit 0
    when every byte arrived intact, 1 otherwise."""
    out = attach(name).call(f"{OPS}:send", nic, size, receiver, timeout, tls,
                            timeout=(timeout or 3600) + 120)
    if json:
        emit_json(out)
    else:
        got = out["received"]
        d = out.get("nic_delta", {})
        state = "[green]intact[/]" if out["intact"] else "[red]NOT intact[/]"
        console.print(f"{out['nic']}: {got.get('bytes', 0)} of {out['size']} bytes {state} at "
                      f"{out['receiver']} ({out.get('MBps', 0)} MB/s); {out.get('txconf')}; "
                      f"TCP retransmits {out.get('retransmits', '?')}")
        for key in ("session_error", "send_error"):
            if out.get(key):
                console.print(f"  {key.replace('_', ' ')}: {out[key]}")
        if got.get("error"):
            console.print(f"  the receiver rejected a record: {got['error']}")
        for note in out.get("notes", []):
            console.print(f"  [yellow]note[/]: {note}")
        console.print(f"  NIC fast path: {_nonzero(d, FAST)}")
        console.print(f"  NIC slow path: {_nonzero(d, SLOW)}")
    raise typer.Exit(0 if out["intact"] else 1)


@app.command("set")
def set_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    nic: str = typer.Argument(..., help="The NIC as NODE:IFACE."),
    values: list[str] = typer.Argument(..., help="KNOB=VALUE: strategy=mlx5|nfp|drop, "
                                       "refuse_add=0|1, corrupt_every=N, max_ctx=N, "
                                       "offload=on|off."),
) -> None:
    """Change a NIC's knobs while flows run (the module reads them per segment)."""
    pairs = {}
    for item in values:
        knob, sep, value = item.partition("=")
        if not sep or not knob or not value:
            raise UsageError(f"'{item}' is not KNOB=VALUE.", hint="e.g. strategy=nfp")
        pairs[knob] = value
    out = attach(name).call(f"{OPS}:set_knobs", nic, pairs)
    k = out["knobs"]
    console.print(f"{nic}: " + ", ".join(f"{key} {k[key]}" for key in k)
                  + f", tls-hw-tx-offload {'on' if out['tls_hw_tx_offload'] else 'off'}")


@app.command("impair")
def impair_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    nic: str = typer.Argument(..., help="The NIC as NODE:IFACE."),
    loss: str = typer.Option(None, "--loss", help="e.g. 1%"),
    delay: str = typer.Option(None, "--delay", help="e.g. 5ms (wire only)"),
    reorder: str = typer.Option(None, "--reorder", help="e.g. 25% (wire only, with a delay)"),
    at: str = typer.Option(None, "--at", help="wire (the peer's ingress) or nic (its qdisc)"),
    whole_skbs: bool = typer.Option(False, "--whole-skbs",
                                    help="Leave GSO on: a rate then counts skbs of up to 64 "
                                         "KiB, not segments."),
) -> None:
    """Replace the netem on what a NIC sends (no option: none). Delay and reordering sit
    on the wire; loss may also sit on the NIC's own qdisc (`--at nic`)."""
    out = attach(name).call(f"{OPS}:set_impairment", nic, loss, delay, reorder, at,
                            not whole_skbs)
    i = out["impair"]
    console.print(f"{nic}: at {i['at']}, loss {i['loss']:g}%, delay {i['delay_ms']:g} ms, "
                  f"reorder {i['reorder']:g}%; gso_max_segs {out['gso_max_segs']}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="offload")
