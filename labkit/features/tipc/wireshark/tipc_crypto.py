"""Opening TIPC v7 messages: AES-GCM with the nonce and AAD that net/tipc/crypto.c uses.

Wireshark 4.0's Lua has no AES-GCM, so decryption lives here and `labkit wireshark
decrypt` writes a copy of a capture that Wireshark's own TIPC dissector reads.

What the kernel does (tipc_aead_encrypt / tipc_aead_decrypt, tipc_ehdr_build):
- the key as set with `tipc node set key` is AES key + 4-byte salt; the salt is kept as a
  host-order u32 (memcpy);
- nonce = 4 bytes of (salt XOR x) in host order, then the 8-byte big-endian seqno of the
  encryption header, where x is the header's address word (cluster key; for LINK_CONFIG the
  first 4 bytes of the node identity), the destination node's address (per-node key, D bit
  set) or nothing (per-node key, D bit clear);
- AAD = the encryption header (16 bytes, 28 for LINK_CONFIG); then ciphertext and the tag.

Since the 2021 sparse clean-up (5.13) the address word is converted to host order before
the XOR, so on x86 the XOR takes it little-endian (seen on 6.12: every fixture frame opens
that way); earlier kernels and big-endian hosts XOR it as it sits on the wire. Both are
tried; the GCM tag says which one is right, and which key.

Keys met on the way are used too: with a master key the kernel sends session keys
(rekeying) and cluster keys to its peers in MSG_CRYPTO messages encrypted under the keys
already known, so opening those yields the keys for what follows.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from labkit.base import files
from labkit.errors import UsageError
from labkit.features.tipc.identity import KEY_LENGTHS, SALT_LEN, Secret, node_hash, node_id_bytes
from labkit.features.tipc.layers import (
    EHDR_CFG_SIZE,
    EHDR_SIZE,
    INT_H_SIZE,
    LINK_CONFIG,
    MSG_BUNDLER,
    TAG_LEN,
)
from labkit.features.tipc.uapi import AEAD_ALG, TIPC_AEAD_ALG_NAME, TIPC_EVERSION

MSG_CRYPTO = 14  # msg.h
KEY_DISTR_MSG = 0  # msg.h: MSG_CRYPTO message type carrying a key


class TipcKey:
    """One TIPC key (AES key + 4-byte salt) and where it came from; repr never shows it."""

    __slots__ = ("_aead", "label", "material")

    def __init__(self, material: bytes, label: str) -> None:
        if len(material) not in KEY_LENGTHS:
            raise ValueError(f"a TIPC key is 20, 28 or 36 bytes, not {len(material)}")
        self.material = Secret(material)
        self.label = label
        self._aead = AESGCM(self.material[:-SALT_LEN])

    @property
    def salt(self) -> bytes:
        return self.material[-SALT_LEN:]

    @property
    def bits(self) -> int:
        return (len(self.material) - SALT_LEN) * 8

    def open(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None when the tag does not match (wrong key or nonce)."""
        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            return None

    def __repr__(self) -> str:
        return f"<TipcKey {self.label}: AES-{self.bits}>"

    __str__ = __repr__


# -- key files --------------------------------------------------------------------------


@dataclass
class KeySet:
    """Keys from a key file, and the node identities the file names (per-node keys)."""

    keys: list[TipcKey] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)


def parse_keys(text: str, source: str) -> KeySet:
    """Lines of `HEX` (cluster or master key, as labkit writes it) or `IDENTITY HEX`
    (per-node keys, as labkit writes them); `0x` prefixes, blank lines and # comments ok."""
    out = KeySet()
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise UsageError(f"{source}:{lineno}: expected `HEX` or `IDENTITY HEX`, found "
                             f"{len(words)} words.",
                             hint="One key a line: the hex that `tipc node set key 0x...` "
                                  "takes, optionally after the node identity it belongs to.")
        ident, hexkey = (None, words[0]) if len(words) == 1 else (words[0], words[1])
        try:
            raw = bytes.fromhex(hexkey.removeprefix("0x").removeprefix("0X"))
        except ValueError:
            raise UsageError(f"{source}:{lineno}: the key is not a hex string.",
                             hint="Write the AES key and 4-byte salt as hex, e.g. what "
                                  "`openssl rand -hex 20` prints.") from None
        if len(raw) not in KEY_LENGTHS:
            raise UsageError(f"{source}:{lineno}: the key has {len(raw)} bytes; a TIPC key "
                             "has 20, 28 or 36 (AES-128/192/256 key + 4-byte salt).")
        if ident:
            try:
                node_id_bytes(ident)
            except UsageError as exc:
                raise UsageError(f"{source}:{lineno}: {exc.message}", hint=exc.hint) from None
            out.identities.append(ident)
        label = f"{source}:{lineno}" + (f" (node {ident})" if ident else "")
        out.keys.append(TipcKey(raw, label))
    if not out.keys:
        raise UsageError(f"{source} holds no key.",
                         hint="Put the key's hex on a line (cluster or master key), or "
                              "`IDENTITY HEX` lines for per-node keys.")
    return out


def load_keys(path: str) -> KeySet:
    """Read a key file; like every labkit secret it must not be readable by others."""
    try:
        st = os.stat(path)
        text = files.read_bounded(path, files.KEY)
    except FileNotFoundError:
        raise UsageError(f"the key file {path} does not exist.",
                         hint="A lab with TIPC encryption keeps its generated key under "
                              "/run/labkit/labs/LAB.tipc.key (per-node: LAB.tipc.keys) "
                              "while it is up.") from None
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise UsageError(f"the key file {path} is not text.",
                         hint="It holds hex lines: `HEX` or `IDENTITY HEX`.") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"the key file {path} is readable by others "
                         f"(mode {stat.S_IMODE(st.st_mode):o}).",
                         hint=f"Keys are secrets: `chmod 600 {path}`.")
    return parse_keys(text, path)


# -- the encryption header --------------------------------------------------------------


@dataclass(frozen=True)
class Ehdr:
    """The fields of struct tipc_ehdr that decryption needs."""

    user: int
    destined: bool
    tx_key: int
    seqno: bytes  # 8 bytes, big-endian, as on the wire
    addr_word: bytes  # w3 as on the wire (LINK_CONFIG: first 4 bytes of the node id)
    node_id: bytes | None  # LINK_CONFIG only
    size: int

    @property
    def sender(self) -> int:
        """The sender's node address (from its identity for LINK_CONFIG)."""
        if self.node_id is not None:
            return node_hash(self.node_id)
        return struct.unpack("!I", self.addr_word)[0]


def parse_ehdr(msg: bytes) -> Ehdr | None:
    """The header of a v7 message, or None if msg is not one (or too short to open)."""
    if len(msg) < EHDR_SIZE or msg[0] >> 5 != TIPC_EVERSION:
        return None
    user = (msg[0] >> 1) & 0xF
    size = EHDR_CFG_SIZE if user == LINK_CONFIG else EHDR_SIZE
    if len(msg) <= size + TAG_LEN:
        return None
    return Ehdr(
        user=user,
        destined=bool(msg[0] & 1),
        tx_key=msg[1] >> 6,
        seqno=msg[4:12],
        addr_word=msg[12:16],
        node_id=msg[12:28] if user == LINK_CONFIG else None,
        size=size,
    )


def _xor4(salt: bytes, value: int, order: str) -> bytes:
    x = value.to_bytes(4, order)  # type: ignore[arg-type]
    return bytes(a ^ b for a, b in zip(salt, x, strict=True))


def nonces(eh: Ehdr, salt: bytes, peers: Iterable[int]) -> Iterator[tuple[str, bytes]]:
    """Every nonce the kernel could have used for this header, named by key mode."""
    addr = struct.unpack("!I", eh.addr_word)[0]
    yield "cluster", _xor4(salt, addr, "little") + eh.seqno
    yield "cluster (wire-order salt XOR)", _xor4(salt, addr, "big") + eh.seqno
    if not eh.destined:
        yield "per-node", salt + eh.seqno
        return
    for peer in peers:
        yield f"per-node to {peer:08x}", _xor4(salt, peer, "little") + eh.seqno
        yield f"per-node to {peer:08x} (wire order)", _xor4(salt, peer, "big") + eh.seqno


@dataclass(frozen=True)
class Opened:
    """A v7 message opened: the v2 message inside, with the key and nonce form that fit."""

    message: bytes
    key: TipcKey
    mode: str


class Decrypter:
    """Tries the known keys and nonce forms on each v7 message; learns keys on the way.

    What fitted one sender and key slot is tried first for its next message, so a capture
    costs about one AES-GCM operation per frame once every sender has been seen.
    """

    def __init__(self, keys: Iterable[TipcKey], peers: Iterable[int] = ()) -> None:
        self.keys: list[TipcKey] = list(keys)
        self.peers: set[int] = set(peers)
        self.learned = 0
        self._fit: dict[tuple[int, int, bool], tuple[TipcKey, str]] = {}

    def open(self, msg: bytes) -> Opened | None:
        eh = parse_ehdr(msg)
        if eh is None:
            return None
        aad, sealed = msg[:eh.size], msg[eh.size:]
        slot = (eh.sender, eh.tx_key, eh.destined)
        fit = self._fit.get(slot)
        if fit is not None:
            key, mode = fit
            for name, nonce in nonces(eh, key.salt, sorted(self.peers)):
                if name == mode:
                    plain = key.open(nonce, sealed, aad)
                    if plain is not None:
                        return self._opened(plain, key, mode)
                    break
        for key in list(self.keys):
            for name, nonce in nonces(eh, key.salt, sorted(self.peers)):
                plain = key.open(nonce, sealed, aad)
                if plain is not None:
                    self._fit[slot] = (key, name)
                    return self._opened(plain, key, name)
        return None

    def _opened(self, plain: bytes, key: TipcKey, mode: str) -> Opened:
        for new in distributed_keys(plain):
            if all(new.material != k.material for k in self.keys):
                self.keys.append(new)
                self.learned += 1
        return Opened(plain, key, mode)


# -- keys sent by the kernel (MSG_CRYPTO / KEY_DISTR_MSG) ----------------------------------


def _v2_messages(msg: bytes, depth: int = 0) -> Iterator[bytes]:
    """A v2 message and, for a bundle, the messages packed in it."""
    if len(msg) < 24 or msg[0] >> 5 != 2:
        return
    w0 = struct.unpack("!I", msg[:4])[0]
    user, hsize, size = (w0 >> 25) & 0xF, ((w0 >> 21) & 0xF) * 4, w0 & 0x1FFFF
    msg = msg[:size]
    yield msg
    if user == MSG_BUNDLER and depth == 0:
        body = msg[hsize:]
        while len(body) >= 24:
            inner = struct.unpack("!I", body[:4])[0] & 0x1FFFF
            if inner < 24 or inner > len(body):
                break
            yield from _v2_messages(body[:inner], depth + 1)
            body = body[(inner + 3) & ~3:]


def distributed_keys(msg: bytes) -> list[TipcKey]:
    """Keys a node sent its peers in this v2 message (tipc_crypto_key_xmit's layout:
    INT_H_SIZE header, key generation and mode in word 4, then alg name[32], be32 keylen
    and the key)."""
    found: list[TipcKey] = []
    for m in _v2_messages(msg):
        w0, w1 = struct.unpack("!II", m[:8])
        user, hsize, mtype = (w0 >> 25) & 0xF, ((w0 >> 21) & 0xF) * 4, w1 >> 29
        if user != MSG_CRYPTO or mtype != KEY_DISTR_MSG or len(m) < INT_H_SIZE:
            continue
        data = m[hsize:]
        if len(data) < TIPC_AEAD_ALG_NAME + 4:
            continue
        alg = data[:TIPC_AEAD_ALG_NAME].split(b"\0", 1)[0]
        keylen = struct.unpack("!I", data[TIPC_AEAD_ALG_NAME:TIPC_AEAD_ALG_NAME + 4])[0]
        material = data[TIPC_AEAD_ALG_NAME + 4:TIPC_AEAD_ALG_NAME + 4 + keylen]
        if alg != AEAD_ALG.encode() or keylen not in KEY_LENGTHS or len(material) != keylen:
            continue
        prev = struct.unpack("!I", m[12:16])[0]
        gen = struct.unpack("!I", m[16:20])[0] >> 16
        found.append(TipcKey(material, f"key sent by node {prev:08x} (generation {gen})"))
    return found
