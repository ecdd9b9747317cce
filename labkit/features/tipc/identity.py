"""TIPC node identities and key sizes: reading, printing and hashing them, once.

A node identity is 16 bytes, written as up to 16 name characters or up to 32 hex digits
(iproute2's str2nodeid); the kernel prints it back as text when every byte is a name
character, else as hex with trailing zeros dropped (tipc_nodeid2string), and derives
the node's 32-bit address from it (hash128to32). The topology validation, the netlink
client, the scapy layers and the crafted frames all use these functions.

A key is an AES-128/192/256 key followed by a 4-byte salt; key material only ever lives
in a Secret, whose repr never shows the bytes.

Standard library only, like uapi.
"""

from __future__ import annotations

import struct

from labkit.errors import UsageError
from labkit.features.tipc.uapi import NODE_ID_LEN

# Characters iproute2 and the kernel accept in a printable node identity.
NAME_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:@")
NAME_CHARS_TEXT = "[0-9A-Za-z-_.:@]"
_HEX = frozenset("0123456789abcdefABCDEF")

SALT_LEN = 4  # AES-GCM salt appended to the key (crypto.h TIPC_AES_GCM_SALT_SIZE)
KEY_BITS = (128, 192, 256)


def key_length(bits: int) -> int:
    """Bytes of a key of this AES size, salt included (20, 28 or 36)."""
    return bits // 8 + SALT_LEN


KEY_LENGTHS = tuple(key_length(b) for b in KEY_BITS)


def either(values: tuple[int, ...]) -> str:
    """(20, 28, 36) -> "20, 28 or 36", for messages."""
    *head, last = (str(v) for v in values)
    return f"{', '.join(head)} or {last}" if head else last


class Secret(bytes):
    """Key material: usable as bytes, but never shown by repr/str (logs, tracebacks, JSON)."""

    def __repr__(self) -> str:
        return f"<secret: {len(self)} bytes>"

    __str__ = __repr__


def is_name(text: str) -> bool:
    """True for an identity written as a name (not hex): up to 16 name characters."""
    return 0 < len(text) <= NODE_ID_LEN and set(text) <= NAME_CHARS


def node_id_bytes(node_id: bytes | str) -> bytes:
    """The 16-byte node identity, read the way iproute2's str2nodeid reads it.

    A string of up to 16 name characters is used as is, zero-padded ("nodeA"); otherwise
    a string of up to 32 hex digits is the identity in hex. Bytes of up to 16 are
    zero-padded. An all-zero identity means "none" to the kernel.
    """
    if isinstance(node_id, str):
        text = node_id
        if not text:
            raise UsageError("a TIPC node identity cannot be empty.")
        if is_name(text):
            raw = text.encode("ascii")
        elif len(text) <= 2 * NODE_ID_LEN and set(text) <= _HEX:
            raw = bytes.fromhex(text + ("0" if len(text) % 2 else ""))
        else:
            raise UsageError(
                f"invalid TIPC node identity {text!r}.",
                hint=f"Use up to {NODE_ID_LEN} characters from {NAME_CHARS_TEXT} or up to "
                     f"{2 * NODE_ID_LEN} hex digits.",
            )
    else:
        raw = bytes(node_id)
        if len(raw) > NODE_ID_LEN:
            raise UsageError(f"a TIPC node identity has at most {NODE_ID_LEN} bytes, "
                             f"not {len(raw)}.")
    raw = raw.ljust(NODE_ID_LEN, b"\0")
    if not any(raw):
        raise UsageError("a TIPC node identity cannot be all zeros.")
    return raw


def node_id_str(raw: bytes) -> str:
    """The identity as the kernel and iproute2 print it: text if printable, else hex."""
    raw = bytes(raw[:NODE_ID_LEN]).ljust(NODE_ID_LEN, b"\0")
    text = raw.rstrip(b"\0")
    if b"\0" not in text and all(chr(c) in NAME_CHARS for c in text):
        return text.decode("ascii")
    return raw.hex().rstrip("0")


def node_hash(node_id: bytes | str) -> int:
    """The 32-bit node address the kernel derives from an identity (hash128to32)."""
    w = struct.unpack("!4I", node_id_bytes(node_id))
    return (w[0] ^ w[1] ^ w[2] ^ w[3]) or (w[0] | w[1] | w[2] | w[3])
