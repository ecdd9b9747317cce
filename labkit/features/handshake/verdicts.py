"""Judging captured traffic: is everything on the consumer's port TLS, is the marker never
in clear, and do the records decrypt to it with the key log? Pure functions over frames
and evidence, so host tests can feed them recorded captures.

Streams are rebuilt per direction by labkit.packets.tcpstream; a stream whose SYN is in the
capture is judged from its first byte (record boundaries are known), others only for the
marker. RPC-with-TLS (NFS, RFC 9289) opens in clear with an AUTH_TLS probe and its
"STARTTLS" reply; that opening, and only it, is allowed before the records. A record is
a 5-byte header (content type 20-23, version 3.x, length up to 2^14+256) and its body;
anything else is not TLS.
"""

from __future__ import annotations

from typing import Any

from labkit.ktls.records import walk
from labkit.packets.tcpstream import streams as tcp_streams
from labkit.verify.verdict import Verdict


def walk_records(data: bytes) -> dict[str, Any]:
    """A stream's TLS records (labkit.ktls's reader): how many, of which types, and where
    (if anywhere) the bytes stop being TLS. A record cut off by the capture's end is not
    an error."""
    walked = walk(data)
    bad = walked.bad_at
    return {"records": len(walked.records), "types": walked.types(), "tls": bad is None,
            "bad_at": bad, "bad_bytes": "" if bad is None else data[bad:bad + 16].hex()}


AUTH_TLS = 7  # RFC 9289: the credential flavor of RPC-with-TLS's probe


def starttls_probe(data: bytes) -> int:
    """Bytes of an RPC-with-TLS (RFC 9289) opening at the start of a stream, else 0: the
    client's NULL call with an AUTH_TLS credential, or the server's accepted reply whose
    verifier says "STARTTLS". They travel in clear by design; TLS starts after them."""
    if len(data) < 4:
        return 0
    mark = int.from_bytes(data[:4], "big")
    length = mark & 0x7FFFFFFF
    if not mark & 0x80000000 or len(data) < 4 + length or length < 24:
        return 0
    body = data[4:4 + length]
    words = [int.from_bytes(body[i:i + 4], "big") for i in range(0, min(len(body), 32), 4)]
    is_call = words[1] == 0 and words[2] == 2 and words[5] == 0 and words[6] == AUTH_TLS
    is_reply = words[1] == 1 and words[2] == 0 and body[20:28] == b"STARTTLS"
    return 4 + length if is_call or is_reply else 0


def wire_evidence(frames: list[bytes], port: int, marker: bytes) -> dict[str, Any]:
    streams = []
    payload_bytes = 0
    for st in tcp_streams(frames, port).values():
        data, gap = st.data()
        payload_bytes += st.payload_bytes
        entry: dict[str, Any] = {"flow": st.flow, "bytes": len(data), "from_start": st.syn_seen,
                                 "gap": gap}
        if st.syn_seen and data:
            skip = starttls_probe(data)
            if skip:
                entry["starttls_probe_bytes"] = skip  # RFC 9289's clear opening
            entry.update(walk_records(data[skip:]))
            if entry["bad_at"] is not None:
                entry["bad_at"] += skip
        streams.append(entry)
    return {"port": port, "frames": len(frames), "tcp_payload_bytes": payload_bytes,
            "streams": streams, "marker_frames": sum(marker in f for f in frames)}


def decrypt_marker(frames: list[bytes], port: int, keylog: str, marker: bytes) -> dict[str, Any]:
    """Open every connection that began in the capture with the NSS key log
    (labkit.ktls.decrypt, after RFC 9289's clear opening): how many application-data
    records opened, how many hold the marker, and how many sealed records no key opened."""
    from labkit.ktls.decrypt import open_connection, parse_keylog

    with open(keylog) as fh:
        keys = parse_keylog(fh.read())
    streams = {key: st for key, st in tcp_streams(frames, port).items() if st.syn_seen}
    decrypted = holding = unopened = 0
    problems: list[str] = []
    for (src, dst), st in streams.items():
        back = streams.get((dst, src))
        if back is None or dst[1] != port:
            continue  # judged from the client's side, once per connection
        client, server = st.data()[0], back.data()[0]
        client, server = client[starttls_probe(client):], server[starttls_probe(server):]
        opened = open_connection(client, server, keys)
        if isinstance(opened, str):
            problems.append(f"{st.flow}: {opened}")
            continue
        for side in opened:
            decrypted += len(side.app_data)
            holding += sum(marker in data for data in side.app_data)
            unopened += side.unopened
    return {"decrypted_records": decrypted, "marker_records": holding,
            "unopened_records": unopened, "decrypt_problems": problems}


def judge(name: str, evidence: dict[str, Any]) -> Verdict:
    """pass: TLS from the first byte of every stream that began in the capture, no marker
    in clear, and (with a key log) the marker inside a decrypted record."""
    judged = [s for s in evidence["streams"] if s.get("from_start") and s["bytes"]]
    if not evidence.get("marker_delivered"):
        return Verdict(name, "error", "the marker never arrived at the other side, so the "
                                      "traffic could not be judged.", evidence)
    if not evidence["tcp_payload_bytes"]:
        return Verdict(name, "error", f"nothing crossed TCP port {evidence['port']} while "
                                      "capturing.", evidence)
    problems = []
    if evidence["marker_frames"]:
        problems.append(f"the marker appeared in clear in {evidence['marker_frames']} frames")
    not_tls = [s for s in judged if not s.get("tls")]
    for s in not_tls:
        problems.append(f"{s['flow']} is not TLS records (at byte {s['bad_at']}: "
                        f"{s['bad_bytes'][:16]}...)")
    if not judged:
        problems.append("no connection began inside the capture, so no stream could be "
                        "judged from its first byte")
    keylog = evidence.get("keylog")
    if keylog and not problems and not evidence.get("marker_records") \
            and evidence.get("capture_dropped"):
        return Verdict(name, "error", f"the capture dropped {evidence['capture_dropped']} "
                       "frames, so the records holding the marker may be missing; nothing "
                       "was seen in clear. Run the check again.", evidence)
    if keylog and not problems and not evidence.get("marker_records"):
        why = "; ".join(evidence.get("decrypt_problems") or [])
        problems.append(f"with the key log, {evidence.get('decrypted_records', 0)} records "
                        "decrypted but none held the marker ("
                        f"{evidence.get('unopened_records', 0)} sealed records opened with "
                        f"no key{'; ' + why if why else ''})")
    if problems:
        return Verdict(name, "fail", "; ".join(problems) + ".", evidence)
    records = sum(s.get("records", 0) for s in judged)
    opened = sum(1 for s in judged if s.get("starttls_probe_bytes"))
    start = ("their first byte" if not opened else
             f"their first byte after RPC-with-TLS's clear AUTH_TLS opening ({opened} streams)")
    tail = (f" With the key log, {evidence['decrypted_records']} application-data records "
            f"decrypted and {evidence['marker_records']} held the marker."
            if keylog else " No key log was kept (`keylog: true` in the topology lets this "
                           "check decrypt the records too).")
    return Verdict(name, "pass", f"{len(judged)} TCP streams on port {evidence['port']} were "
                                 f"TLS from {start} ({records} records), and the "
                                 "marker written through the consumer never appeared in "
                                 "clear." + tail, evidence)
