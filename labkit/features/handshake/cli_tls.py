"""`labkit tls serve|connect`: a TLS 1.3 server or client in a lab node whose socket gets
its handshake from the handshake daemon's own code and then carries data through kTLS,
so OpenSSL (s_client, s_server) can be the peer on the other side."""

from __future__ import annotations

import sys

import typer

from labkit.cli.lab_arg import attach

app = typer.Typer(help="TLS 1.3 through the daemon's handshake code, then kTLS: a peer for "
                       "OpenSSL in a lab node.", no_args_is_help=True)
PEER = [sys.executable, "-m", "labkit.features.handshake.peer"]


def _common(auth: str, psk_file: str | None, no_verify: bool, timeout: float) -> list[str]:
    out = ["--auth", auth, "--timeout", str(timeout)]
    if psk_file:
        out += ["--psk-file", psk_file]
    if no_verify:
        out.append("--no-verify")
    return out


@app.command("serve")
def serve_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="Node to serve in."),
    port: int = typer.Option(4433, "--port", min=1, max=65535),
    address: str = typer.Option("0.0.0.0", "--address", help="Address to listen on."),
    auth: str = typer.Option("x509", "--auth", help="x509 (the node's lab certificate) or "
                             "psk (with --psk-file)."),
    psk_file: str = typer.Option(None, "--psk-file", help="identity:hexkey, mode 0600, "
                                 "next to the lab's kernel."),
    echo: bool = typer.Option(False, "--echo", help="Send back what arrives."),
    count: int = typer.Option(1, "--count", min=1, max=1000, help="Connections to serve."),
    no_verify: bool = typer.Option(False, "--no-verify",
                                   help="Do not ask for the client's certificate."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, max=86400,
                                  help="Seconds to wait for a client, and per connection."),
) -> None:
    """Accept TLS clients on PORT in NODE; each connection's handshake runs through the
    daemon's engines, then kTLS carries the data (stdin/stdout, or --echo). One JSON line
    per connection on stderr says the cipher and that the tls ULP is on the socket."""
    lab = attach(name)
    argv = [*PEER, "serve", "--lab", lab.name, "--node", node, "--port", str(port),
            "--address", address, "--count", str(count),
            *_common(auth, psk_file, no_verify, timeout)] + (["--echo"] if echo else [])
    raise typer.Exit(lab.node(node).run(argv, capture=False, timeout=None).returncode)


@app.command("connect")
def connect_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="Node to connect from."),
    to: str = typer.Option(..., "--to", help="Server address, or a node of the lab."),
    port: int = typer.Option(4433, "--port", min=1, max=65535),
    auth: str = typer.Option("unauth", "--auth", help="unauth (check the server only), "
                             "x509 (present the node's certificate) or psk."),
    psk_file: str = typer.Option(None, "--psk-file", help="identity:hexkey, mode 0600."),
    peername: str = typer.Option(None, "--peername",
                                 help="Name the server's certificate must carry."),
    send: str = typer.Option(None, "--send", help="Send this text, then print replies."),
    expect: int = typer.Option(0, "--expect", min=0, help="Stop after this many bytes."),
    no_verify: bool = typer.Option(False, "--no-verify",
                                   help="Do not check the server's certificate."),
    timeout: float = typer.Option(30.0, "--timeout", min=1, max=86400),
) -> None:
    """Connect to a TLS server from NODE; the handshake runs through the daemon's engines,
    then kTLS carries stdin to the server and the server's data to stdout."""
    lab = attach(name)
    address = to
    if to in lab.topo.nodes:
        from labkit.features.handshake.config import meeting

        path = meeting(lab.topo, to, node)
        address = path.server_addr if path else (lab.node(to).addresses() or [to])[0]
    argv = [*PEER, "connect", "--lab", lab.name, "--node", node, "--to", address, "--port",
            str(port), "--expect", str(expect), *_common(auth, psk_file, no_verify, timeout)]
    if peername:
        argv += ["--peername", peername]
    if send is not None:
        argv += ["--send", send]
    raise typer.Exit(lab.node(node).run(argv, capture=False, timeout=None).returncode)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tls")
