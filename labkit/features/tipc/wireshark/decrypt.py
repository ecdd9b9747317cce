"""A decrypted copy of a TIPC capture: v7 frames replaced by the v2 messages inside.

The copy opens in Wireshark and tshark with their built-in TIPC dissector: user data,
link protocol, name distribution, and the keys nodes sent each other (so the copy is a
secret too and is written mode 0600). Frames that no key opens stay as they were (still
v7), and the report names them.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import UsageError
from labkit.features.tipc.identity import node_hash
from labkit.features.tipc.wireshark import frames, pcapfile
from labkit.features.tipc.wireshark.tipc_crypto import Decrypter, KeySet, parse_ehdr

MAX_PASSES = 4  # keys learned late can open frames seen earlier; each pass must learn one


@dataclass
class Report:
    """What a decryption did; never holds key material (labels only)."""

    source: str
    output: str
    frames: int = 0
    v7_frames: int = 0
    decrypted: int = 0
    not_decrypted: list[int] = field(default_factory=list)  # 1-based frame numbers
    learned_keys: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    by_mode: Counter[str] = field(default_factory=Counter)
    truncated_tail: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "output": self.output, "frames": self.frames,
            "v7_frames": self.v7_frames, "decrypted": self.decrypted,
            "not_decrypted": self.not_decrypted, "learned_keys": self.learned_keys,
            "by_key": dict(self.by_key), "by_mode": dict(self.by_mode),
            "truncated_tail": self.truncated_tail,
        }


def decrypt_pcap(source: str, output: str, keyset: KeySet,
                 udp_ports: tuple[int, ...] = (frames.TIPC_UDP_PORT,)) -> Report:
    """Write output: source with every v7 frame the keys open replaced by its v2 message."""
    if os.path.abspath(source) == os.path.abspath(output):
        raise UsageError(f"the output {output} is the capture itself.",
                         hint="Write the decrypted copy to another file.")
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise UsageError(f"the directory {out_dir} for {output} does not exist.",
                         hint="Create it, or write the copy elsewhere.")
    pcap = pcapfile.read(source)
    if pcap.linktype not in frames.LINKTYPES:
        known = ", ".join(f"{v} ({k})" for k, v in frames.LINKTYPES.items())
        raise UsageError(f"{source} has link type {pcap.linktype}, which this does not read.",
                         hint=f"Link types handled: {known}. Capture on the bearer "
                              "interface with tcpdump or `labkit capture`.")
    report = Report(source=source, output=output, frames=len(pcap.records),
                    truncated_tail=pcap.truncated_tail)

    spots: dict[int, frames.Spot] = {}
    peers = {node_hash(i) for i in keyset.identities}
    for i, rec in enumerate(pcap.records):
        spot = frames.locate(pcap.linktype, rec.data, udp_ports)
        if spot is None:
            continue
        eh = parse_ehdr(rec.data[spot.start:spot.end])
        if eh is None:
            if rec.data[spot.start] >> 5 == 7:  # v7 but too short to hold anything
                report.v7_frames += 1
                report.not_decrypted.append(i + 1)
            continue
        spots[i] = spot
        peers.add(eh.sender)
    report.v7_frames += len(spots)

    dec = Decrypter(keyset.keys, peers)
    pending = sorted(spots)
    for _ in range(MAX_PASSES):
        learned_before, left = dec.learned, []
        for i in pending:
            rec, spot = pcap.records[i], spots[i]
            opened = dec.open(rec.data[spot.start:spot.end])
            if opened is None:
                left.append(i)
                continue
            rec.data = frames.replace(rec.data, spot, opened.message)
            rec.orig_len = len(rec.data)
            report.decrypted += 1
            report.by_key[opened.key.label] += 1
            report.by_mode[opened.mode] += 1
        pending = left
        if not pending or dec.learned == learned_before:
            break
    report.not_decrypted = sorted(report.not_decrypted + [i + 1 for i in pending])
    report.learned_keys = dec.learned
    pcapfile.write(output, pcap)
    return report
