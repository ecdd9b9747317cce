"""Keeping key material out of bundles: a bundle is meant to be attached to a bug report.

Two nets: the lab's own secrets (what its features' prepare() made, and the 0600 files
next to its state) are looked for verbatim, as hex and as 0x-hex, in every file; and
whatever looks like a key whoever printed it (PEM private keys, NSS key-log lines,
`key`/`psk`/`secret` assignments of long hex) is cut. Text gets `[redacted]`; binary
files (pcaps) get the same number of bytes, so their framing stays valid.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from typing import Any

MARK = b"[redacted]"
MIN_SECRET = 8  # shorter values (a 0/1 flag, a cipher number) are not secrets
PATTERNS = [
    re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
               re.S),
    # NSS key log: LABEL <client random hex> <secret hex>
    re.compile(rb"\b((?:CLIENT|SERVER)_[A-Z_]*SECRET[A-Z_0-9]*|CLIENT_RANDOM|EXPORTER_SECRET)"
               rb"[ \t]+[0-9a-fA-F]+[ \t]+[0-9a-fA-F]+"),
    re.compile(rb"(?i)\b(?:key|psk|secret)\b[\"']?\s*[:=]?\s*[\"']?(?:0x)?[0-9a-f]{32,}"),
]
BINARY_SUFFIXES = (".pcap", ".pcapng", ".gz")
# the lab's records beside its secrets: its state, its lock, the phase trace of its `up`
# (every word of a trace taken for a secret cut the bundle's JSON to pieces)
NOT_SECRETS = (".json", ".lock", ".trace")


def lab_secrets(prepared: dict[str, Any], state_dir: str, lab: str) -> list[bytes]:
    """The lab's secrets as byte strings to look for (read before the lab goes down)."""
    found: set[bytes] = set()
    for value in _strings(prepared):
        _add(found, value)
    for path in glob.glob(os.path.join(state_dir, f"{lab}.*")):
        if path.endswith(NOT_SECRETS):
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read(1 << 20)
        except OSError:
            continue
        for chunk in re.split(rb"\s+", data):
            _add(found, chunk.decode(errors="replace"))
        if b"PRIVATE KEY" not in data and len(data.strip()) >= MIN_SECRET:
            found.add(data.strip())
    return sorted(found, key=len, reverse=True)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, (bytes, bytearray)):
        yield bytes(value).hex()
    elif isinstance(value, str):
        yield value


def _add(found: set[bytes], text: str) -> None:
    text = text.strip()
    if len(text) < MIN_SECRET:
        return
    found.add(text.encode())
    bare = text[2:] if text.lower().startswith("0x") else text
    if re.fullmatch(r"[0-9a-fA-F]+", bare) and len(bare) % 2 == 0:
        found.update({bare.lower().encode(), bare.upper().encode(),
                      b"0x" + bare.lower().encode(), bytes.fromhex(bare)})


def scrub_bytes(data: bytes, secrets: list[bytes], binary: bool) -> tuple[bytes, int]:
    """data without the secrets (and, for text, without key-shaped lines); and how many
    were cut."""
    cut = 0
    for secret in secrets:
        if len(secret) < MIN_SECRET // 2 or secret not in data:
            continue
        cut += data.count(secret)
        data = data.replace(secret, b"*" * len(secret) if binary else MARK)
    if not binary:
        for pattern in PATTERNS:
            data, n = pattern.subn(MARK, data)
            cut += n
    return data, cut


def scrub_tree(root: str, secrets: list[bytes]) -> int:
    """Scrub every file under root in place; the number of cuts made."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                data = fh.read()
            clean, cut = scrub_bytes(data, secrets, name.endswith(BINARY_SUFFIXES))
            if cut:
                with open(path, "wb") as fh:
                    fh.write(clean)
                total += cut
    return total
