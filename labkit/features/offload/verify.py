"""`labkit verify encryption|throughput NAME --feature offload`, next to the kernel.

encryption: a transfer whose bytes carry a marker every 4 KiB, with two taps opened
before it starts: on the NIC itself (what the stack handed the "hardware": TLS 1.2
records in plaintext when offloaded) and on the peer's end of the wire (what the NIC
sent). Pass when the marker never shows in clear on the wire, every protected record
the client sent decrypts and authenticates with the session's keys (from its key log,
kept 0600 only while judging), the decrypted records do hold the marker (the positive
control), and the receiver took every byte without a bad record.

throughput: one transfer of the topology's size; pass when it arrived intact at the
receiver at or above the threshold (MB/s, from --threshold or `traffic.threshold`).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from labkit.errors import LabkitError
from labkit.features.offload import records, tlskeys, transfer
from labkit.features.offload.client import VERSIONS
from labkit.features.offload.config import OffloadConfig
from labkit.packets import tcpstream
from labkit.packets.tap import Tap
from labkit.verify.verdict import Verdict

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

VERIFY_SIZE = 1 << 20  # bytes the encryption check sends: 64 records, many segments


def encryption(lab: Lab, cfg: OffloadConfig, nic: str | None = None,
               seconds: float | None = None) -> Verdict:
    p = transfer.plan(lab, cfg, nic, min(cfg.traffic.size, VERIFY_SIZE), timeout=seconds)
    n = cfg.nics[p.nic]
    assert n.peer is not None
    name = f"offload encryption: {p.nic} -> {n.peer.label} (TLS {p.version})"
    marker = b"LKOFF" + secrets.token_hex(8).encode()
    try:
        at_nic = Tap(p.sender_ns, n.iface)
    except OSError as exc:
        return Verdict(name, "error", f"cannot capture on {p.nic}: {exc.strerror or exc}.")
    try:
        on_wire = Tap(p.receiver_ns, n.peer.iface)
    except OSError as exc:
        at_nic.finish()
        return Verdict(name, "error", f"cannot capture on {n.peer.label}: "
                                      f"{exc.strerror or exc}.")
    try:
        out = transfer.run(lab, cfg, p, marker=marker, keep_keylog=True)
    except LabkitError as exc:
        return Verdict(name, "error", exc.message, {"hint": exc.hint})
    finally:
        nic_frames, wire_frames = at_nic.finish(), on_wire.finish()
    keylog = out.pop("keylog", "")
    evidence = wire_evidence(wire_frames, p.port, marker, keylog, p.version)
    keylog = ""  # judged: the only copy goes
    evidence.update({
        "marker": marker.decode(), "capture_drops": at_nic.dropped + on_wire.dropped,
        "marker_frames_at_nic": sum(marker in f for f in nic_frames),
        "frames_at_nic": len(nic_frames), "transfer": _summary(out)})
    return judge(name, evidence)


def wire_evidence(frames: list[bytes], port: int, marker: bytes, keylog: str,
                  version: str) -> dict[str, Any]:
    """What the wire held: the client's stream from its SYN, walked as TLS records and
    decrypted with the key log. Pure: host tests give it recorded frames."""
    to_server, to_client = last_connection(frames, port)
    data, gap = from_syn(to_server)
    server_data, _ = from_syn(to_client)
    walked = records.walk(data)
    ev: dict[str, Any] = {"frames_on_wire": len(frames),
                          "marker_frames_on_wire": sum(marker in f for f in frames),
                          "stream_bytes": len(data), "stream_gap": gap,
                          "from_start": to_server is not None and to_server.syn_seen,
                          "records": len(walked.records), "not_tls_at": walked.bad_at}
    if not keylog or not walked.records:
        ev["decrypted"] = None
        return ev
    v = VERSIONS[version]
    try:
        suite_cipher = _negotiated(keylog, server_data, v)
        rand = tlskeys.server_random(server_data) if v == tlskeys.TLS_1_2 else None
        keys = tlskeys.session_keys(keylog, v, suite_cipher, rand)
        hs = (tlskeys.session_keys(keylog, v, suite_cipher, None,
                                   label="CLIENT_HANDSHAKE_TRAFFIC_SECRET")
              if v == tlskeys.TLS_1_3 else None)
    except ValueError as exc:
        ev["decrypted"] = None
        ev["key_error"] = str(exc)
        return ev
    ev["decrypted"] = records.open_stream(walked.records, keys, marker, hs).as_dict()
    return ev


def last_connection(frames: list[bytes], port: int) -> tuple[tcpstream.Stream | None,
                                                             tcpstream.Stream | None]:
    """(to the port, back) of the last connection to the port in the frames."""
    found = tcpstream.streams(frames, port)
    to_port = [s for s in found.values() if s.dst[1] == port]
    if not to_port:
        return None, None
    return to_port[-1], found.get((to_port[-1].dst, to_port[-1].src))


def from_syn(stream: tcpstream.Stream | None) -> tuple[bytes, bool]:
    """A stream's bytes and whether a hole cut them; without its SYN nothing can be said
    from the start (record boundaries unknown): no bytes, a hole."""
    if stream is None or not stream.syn_seen:
        return b"", True
    return stream.data()


def _negotiated(keylog: str, server_data: bytes, version: int) -> tlskeys.Cipher:
    """The AES-GCM cipher the server chose, from its ServerHello's cipher suite."""
    codes = {0xC02B: "aes-gcm-128", 0xC02C: "aes-gcm-256", 0x1301: "aes-gcm-128",
             0x1302: "aes-gcm-256"}
    for rec in records.walk(server_data).records:
        if rec.type == 22 and rec.body[:1] == b"\x02":
            sid_len = rec.body[38]
            code = int.from_bytes(rec.body[39 + sid_len:41 + sid_len], "big")
            if code in codes:
                return tlskeys.CIPHERS[codes[code]]
            raise ValueError(f"the server chose cipher suite {code:#06x}, not AES-GCM")
    raise ValueError("no ServerHello on the wire")


def _summary(out: dict[str, Any]) -> dict[str, Any]:
    keep = ("txconf", "suite", "sent", "intact", "prefix_intact", "bad_record", "completed",
            "retransmits", "session_error", "send_error")
    s = {k: out[k] for k in keep if k in out}
    s["receiver_error"] = out.get("received", {}).get("error", "")
    d = out.get("nic_delta", {})
    s["nic"] = {k: d.get(k, 0) for k in ("tx_tls_encrypted_bytes", "tx_tls_ooo",
                                         "tx_tls_corrupted_tags", "tls_tx_fallback")}
    return s


def judge(name: str, ev: dict[str, Any]) -> Verdict:
    """pass, fail or error from the evidence (see the module docstring)."""
    t = ev["transfer"]
    if t.get("session_error"):
        return Verdict(name, "error", f"no TLS session: {t['session_error']}", ev)
    if not ev["from_start"] or ev["stream_gap"] or not ev["records"]:
        why = ("the capture dropped frames" if ev.get("capture_drops") else
               "the connection's start was not captured" if not ev["from_start"] else
               "no TLS record was seen")
        return Verdict(name, "error", f"the client's stream could not be read from the wire "
                                      f"({why}), so it could not be judged.", ev)
    problems = []
    if ev["marker_frames_on_wire"]:
        problems.append(f"the marker crossed the wire in clear in "
                        f"{ev['marker_frames_on_wire']} frames")
    if ev["not_tls_at"] is not None:
        problems.append(f"the stream stops being TLS records at byte {ev['not_tls_at']}")
    dec = ev.get("decrypted")
    if dec is None:
        problems.append("the records could not be decrypted: "
                        + ev.get("key_error", "no key log"))
    else:
        if dec["failed_records"]:
            problems.append(f"{dec['failed_records']} of {dec['protected_records']} protected "
                            f"records did not authenticate with the session's keys (the "
                            f"NIC's tags or ciphertext are wrong; corrupted on purpose: "
                            f"{t['nic']['tx_tls_corrupted_tags']})")
        if not dec["marker_records"]:
            problems.append(f"none of the {dec['application_records']} decrypted "
                            "application records held the marker (nothing to judge)")
    if t.get("bad_record") or not t.get("intact"):
        problems.append(f"the receiver did not take the stream intact "
                        f"({t.get('receiver_error') or t.get('send_error') or 'incomplete'})")
    if problems:
        return Verdict(name, "fail", "; ".join(problems) + ".", ev)
    hw = t.get("txconf", "").endswith("tx=hw")
    where = (f"the NIC encrypted it (what the stack handed the NIC held the marker in clear "
             f"in {ev['marker_frames_at_nic']} frames; {t['nic']['tx_tls_encrypted_bytes']} "
             "bytes through its engine)" if hw and ev["marker_frames_at_nic"] else
             f"kTLS encrypted it in software before the NIC ({t.get('txconf')})")
    return Verdict(name, "pass",
                   f"the marker never crossed the wire in clear; all {dec['protected_records']}"
                   f" protected records decrypted with the key log ({dec['marker_records']} "
                   f"held the marker), and the receiver took every byte: {where}.", ev)


def throughput(lab: Lab, cfg: OffloadConfig, nic: str | None, threshold: float | None,
               seconds: float | None) -> Verdict:
    p = transfer.plan(lab, cfg, nic, timeout=seconds)
    name = f"offload throughput: {p.size >> 10} KiB through {p.nic} to {p.receiver}"
    limit = threshold if threshold is not None else cfg.traffic.threshold
    if limit is None:
        return Verdict(name, "error", "no threshold: give --threshold MB/s or declare "
                                      "`offload: {traffic: {threshold: ...}}`.")
    try:
        out = transfer.run(lab, cfg, p)
    except LabkitError as exc:
        return Verdict(name, "error", exc.message, {"hint": exc.hint})
    out.pop("keylog", None)
    ev = {**out, "threshold_MBps": limit}
    if not out["intact"]:
        err = (out.get("session_error") or out["received"].get("error")
               or out.get("send_error") or "incomplete")
        return Verdict(name, "fail", f"the transfer did not arrive intact ({err}; "
                                     f"{out['received'].get('bytes', 0)} of {p.size} bytes).",
                       ev)
    rate = out["MBps"]
    where = f"txconf {out.get('txconf')}, {out['seconds']} s"
    if rate >= limit:
        return Verdict(name, "pass", f"{rate:.2f} MB/s, intact ({where}), at or above "
                                     f"{limit:g} MB/s.", ev)
    return Verdict(name, "fail", f"{rate:.2f} MB/s, intact ({where}), below {limit:g} MB/s.",
                   ev)
