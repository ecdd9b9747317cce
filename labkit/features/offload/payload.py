"""What a transfer sends: reproducible pseudo-random bytes, optionally with a marker.

The sender and the judge agree on the bytes from a seed alone, so neither holds a 64 MiB
copy: the hash of any prefix is recomputed when a receiver stopped early (a stalled flow,
a record it rejected), to tell "an intact prefix" from "corrupted data". A marker written
every MARK_EVERY bytes lets `verify encryption` look for plaintext on the wire.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

CHUNK = 1 << 16
MARK_EVERY = 4096  # a marker in every TLS record, whatever its size


class Payload:
    def __init__(self, size: int, seed: int, marker: bytes = b"") -> None:
        if marker and len(marker) >= MARK_EVERY:
            raise ValueError("the marker must be shorter than MARK_EVERY")
        self.size = size
        self.seed = seed
        self.marker = marker

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """The bytes in CHUNK pieces (the last one shorter), up to limit bytes."""
        rng = random.Random(self.seed)
        left = self.size if limit is None else min(limit, self.size)
        while left > 0:
            block = bytearray(rng.randbytes(CHUNK))
            if self.marker:
                for off in range(0, CHUNK, MARK_EVERY):
                    block[off:off + len(self.marker)] = self.marker
            take = min(left, CHUNK)
            yield bytes(block[:take])
            left -= take

    def sha256(self, length: int | None = None) -> str:
        """The hash of the first `length` bytes (all of them by default)."""
        h = hashlib.sha256()
        for chunk in self.chunks(length):
            h.update(chunk)
        return h.hexdigest()
