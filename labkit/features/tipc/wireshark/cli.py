"""`labkit wireshark ...`: lab captures that open properly in Wireshark and tshark.

Thin layer over labkit.features.tipc.wireshark: the TIPC v7 dissector plugin (install, path) and
the decrypted copy of a TIPC capture (decrypt).
"""

from __future__ import annotations

import typer

from labkit.cli.output import console, emit_json, err_console

app = typer.Typer(
    help=(
        "TIPC captures in Wireshark and tshark.\n\n"
        "Wireshark 4.0 shows every encrypted TIPC frame (version 7) as [Malformed Packet]. "
        "labkit ships a Lua dissector for TIPC v7: `labkit wireshark install` puts it in "
        "your personal plugin folder (Wireshark and tshark load it at start), or load it "
        "for one run with `tshark -X lua_script:$(labkit wireshark path) -r CAPTURE`. "
        "Plain (v2) frames still go to Wireshark's own TIPC dissector.\n\n"
        "Wireshark's Lua cannot decrypt (no AES-GCM), so `labkit wireshark decrypt IN OUT "
        "--key-file KEYS` writes a copy with the v7 frames replaced by the v2 messages "
        "inside, which Wireshark dissects in full."
    ),
    no_args_is_help=True,
)

JSON_OPT = typer.Option(False, "--json", help="Print one JSON document.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="wireshark")


INSTALL_HELP = (
    "Copy the TIPC v7 dissector where Wireshark loads plugins, and say where.\n\n"
    "Run it as the user who runs Wireshark (no root needed); restart a running Wireshark. "
    "When tshark is installed, the folder is the one `tshark -G folders` names and the "
    "install is checked with `tshark -G plugins`."
)
DECRYPT_HELP = (
    "Write a copy of a capture with each TIPC v7 frame replaced by the v2 message inside.\n\n"
    "Each frame is opened with AES-GCM as net/tipc/crypto.c seals it (cluster, master and "
    "per-node keys; kernels before and after 5.13); keys the nodes sent each other "
    "(rekeying, key distribution) are learned from the frames and used for what follows. "
    "Open the copy with Wireshark or tshark: their own TIPC dissector shows it all. The "
    "copy holds decrypted traffic and those keys, so it is created mode 0600.\n\n"
    "Exit status: 0 when every v7 frame was decrypted, 1 when some were not (the copy is "
    "still written; they stay encrypted in it), 2 on bad input."
)


@app.command("install", help=INSTALL_HELP)
def install_cmd(
    directory: str | None = typer.Option(
        None, "--dir", help="Install into this folder instead of Wireshark's personal "
                            "Lua plugin folder (~/.local/lib/wireshark/plugins).",
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Copy the plugin (see INSTALL_HELP)."""
    from labkit.features.tipc.wireshark.plugin import install

    done = install(directory)
    if json_out:
        emit_json(done.to_json())
        return
    console.print(f"Installed the TIPC v7 dissector: {done.path} ({done.how_found}).",
                  soft_wrap=True, markup=False)
    if done.loaded_by_tshark is True:
        console.print("tshark loads it (listed by `tshark -G plugins`).", markup=False)
    elif done.loaded_by_tshark is False:
        err_console.print(f"warning: `tshark -G plugins` does not list {done.path}; this "
                          "tshark may look elsewhere (see `tshark -G folders`).",
                          soft_wrap=True, markup=False)
    elif directory is None:
        console.print("tshark is not installed, so the install was not checked "
                      "(Debian: `apt-get install tshark`).", markup=False)


@app.command("path")
def path_cmd() -> None:
    """Print the plugin's path, e.g. for `tshark -X lua_script:PATH -r CAPTURE`."""
    from labkit.features.tipc.wireshark.plugin import plugin_path

    print(plugin_path())


@app.command("decrypt", help=DECRYPT_HELP)
def decrypt_cmd(
    source: str = typer.Argument(..., metavar="IN.pcap", help="A capture with TIPC v7 frames "
                                 "(Ethernet, Linux cooked or raw IP; classic pcap)."),
    output: str = typer.Argument(..., metavar="OUT.pcap", help="Where to write the "
                                 "decrypted copy (created mode 0600)."),
    key_file: str = typer.Option(
        ..., "--key-file", "-k",
        help="The keys, mode 0600: a line of hex (AES key + 4-byte salt, as `tipc node set "
             "key 0x...` takes it: a cluster or master key), or `IDENTITY HEX` lines "
             "(per-node keys). A lab keeps its generated key in "
             "/run/labkit/labs/LAB.tipc.key (per-node: LAB.tipc.keys) while it is up.",
    ),
    udp_port: list[int] = typer.Option(
        [], "--udp-port", help="A UDP port a udp bearer used besides 6118 (repeatable).",
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Decrypt a capture (see DECRYPT_HELP)."""
    from labkit.errors import UsageError
    from labkit.features.tipc.wireshark.decrypt import decrypt_pcap
    from labkit.features.tipc.wireshark.frames import TIPC_UDP_PORT
    from labkit.features.tipc.wireshark.tipc_crypto import load_keys

    bad = [p for p in udp_port if not 0 < p < 65536]
    if bad:
        raise UsageError(f"--udp-port {bad[0]} is not a UDP port.", hint="Ports are 1-65535.")
    ports = tuple(dict.fromkeys([TIPC_UDP_PORT, *udp_port]))
    report = decrypt_pcap(source, output, load_keys(key_file), ports)
    ok = not report.not_decrypted
    if json_out:
        emit_json(report.to_json())
        raise typer.Exit(0 if ok else 1)
    if report.v7_frames == 0:
        console.print(f"{source}: {report.frames} frames, none of them TIPC v7; {output} is "
                      "an unchanged copy. (A udp bearer on a port other than 6118? Name it "
                      "with --udp-port.)", soft_wrap=True, markup=False)
        return
    console.print(f"Decrypted {report.decrypted} of {report.v7_frames} TIPC v7 frames "
                  f"({report.frames} frames in all) into {output}.",
                  soft_wrap=True, markup=False)
    for label, n in sorted(report.by_key.items()):
        console.print(f"  {n:6} with {label}", soft_wrap=True, markup=False)
    if report.learned_keys:
        console.print(f"  ({report.learned_keys} key(s) learned from key-distribution "
                      "messages in the capture)", markup=False)
    if report.truncated_tail:
        err_console.print(f"warning: the last frame of {source} was cut short and is left "
                          "out.", markup=False)
    if not ok:
        shown = ", ".join(str(n) for n in report.not_decrypted[:20])
        more = " ..." if len(report.not_decrypted) > 20 else ""
        err_console.print(
            f"error: {len(report.not_decrypted)} v7 frame(s) did not open with the keys in "
            f"{key_file} (frames {shown}{more}); they stay encrypted in {output}. A wrong or "
            "missing key, or one the nodes exchanged before the capture started.",
            soft_wrap=True, markup=False)
        raise typer.Exit(1)
