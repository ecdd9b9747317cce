"""The kernel key API (add_key(2), keyctl(2)) for PSKs and certificates handed to consumers.

NVMe/TCP finds its TLS PSKs in the ".nvme" keyring by description; ACCEPT then names
them to the daemon by serial, and the daemon reads them back (it possesses them because
the kernel links the consumer's keyring into the daemon's process keyring at ACCEPT).
The machine's syscall numbers (labkit.base.syscalls); ctypes, standard library only. Key
material is returned to the caller and never appears in an exception or a log line.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass

from labkit.base import syscalls
from labkit.features.handshake.uapi import (
    KEY_SPEC_PROCESS_KEYRING,
    KEYCTL_DESCRIBE,
    KEYCTL_INVALIDATE,
    KEYCTL_READ,
    KEYCTL_SEARCH,
    KEYCTL_UNLINK,
)

KEYCTL_SETPERM = 5
KEYCTL_LINK = 8
# perm bits: possessor all, user view+read+search (root processes that do not possess the
# key, e.g. a daemon on a kernel that does not link the keyring at ACCEPT, can still read)
PERM_POS_ALL = 0x3F000000
PERM_USR_VIEW_READ_SEARCH = 0x000B0000



def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def add_key(key_type: str, description: str, payload: bytes, keyring: int) -> int:
    """add_key(2): a new key (or an update of the key with that type and description)."""
    buf = ctypes.create_string_buffer(payload, len(payload))
    try:
        return _check(syscalls.syscall("add_key", key_type.encode(), description.encode(), buf,
                                    ctypes.c_size_t(len(payload)), ctypes.c_int(keyring)),
                      f"add_key {key_type} {description!r}")
    finally:
        ctypes.memset(buf, 0, len(payload))


def add_readable(key_type: str, description: str, payload: bytes, keyring: int) -> int:
    """A key in `keyring` that root processes can read and search without possessing it.

    A key's default permissions let only its possessors read it, and only a possessor
    may change them: so the key is made in this process's keyring (possessed), opened up,
    linked into the target keyring, and unlinked from ours.
    """
    serial = add_key(key_type, description, payload, KEY_SPEC_PROCESS_KEYRING)
    try:
        setperm(serial, PERM_POS_ALL | PERM_USR_VIEW_READ_SEARCH)
        _check(syscalls.syscall("keyctl", KEYCTL_LINK, ctypes.c_int(serial),
                             ctypes.c_int(keyring)), f"keyctl link {serial:#x}")
    except BaseException:
        invalidate(serial)
        raise
    finally:
        unlink(serial, KEY_SPEC_PROCESS_KEYRING)
    return serial


def setperm(serial: int, perm: int) -> None:
    _check(syscalls.syscall("keyctl", KEYCTL_SETPERM, ctypes.c_int(serial),
                         ctypes.c_uint(perm)), f"keyctl setperm {serial:#x}")


def read(serial: int) -> bytes:
    """KEYCTL_READ: the key's payload."""
    size = _check(syscalls.syscall("keyctl", KEYCTL_READ, ctypes.c_int(serial), None,
                                ctypes.c_size_t(0)), f"keyctl read {serial:#x}")
    buf = ctypes.create_string_buffer(max(size, 1))
    got = _check(syscalls.syscall("keyctl", KEYCTL_READ, ctypes.c_int(serial), buf,
                               ctypes.c_size_t(size)), f"keyctl read {serial:#x}")
    data = buf.raw[:min(got, size)]
    ctypes.memset(buf, 0, size)
    return data


@dataclass(frozen=True)
class KeyInfo:
    serial: int
    type: str
    uid: int
    gid: int
    perm: int
    description: str
    flags: str = ""  # /proc/keys flags: I instantiated, R revoked, D dead, i invalidated

    @property
    def live(self) -> bool:
        return not any(f in self.flags for f in "RDi")


def describe(serial: int) -> KeyInfo:
    """KEYCTL_DESCRIBE: "type;uid;gid;perm;description"."""
    buf = ctypes.create_string_buffer(4096)
    _check(syscalls.syscall("keyctl", KEYCTL_DESCRIBE, ctypes.c_int(serial), buf,
                         ctypes.c_size_t(len(buf))), f"keyctl describe {serial:#x}")
    kind, uid, gid, perm, desc = buf.value.decode(errors="replace").split(";", 4)
    return KeyInfo(serial, kind, int(uid), int(gid), int(perm, 16), desc)


def search(keyring: int, key_type: str, description: str) -> int | None:
    """KEYCTL_SEARCH (recursively, through linked keyrings); None if not found."""
    ret = syscalls.syscall("keyctl", KEYCTL_SEARCH, ctypes.c_int(keyring), key_type.encode(),
                        description.encode(), ctypes.c_int(0))
    if ret < 0:
        return None
    return int(ret)


def invalidate(serial: int) -> bool:
    """KEYCTL_INVALIDATE: the key is unlinked everywhere and freed; False if it was gone."""
    return syscalls.syscall("keyctl", KEYCTL_INVALIDATE, ctypes.c_int(serial)) == 0


def unlink(serial: int, keyring: int) -> bool:
    return syscalls.syscall("keyctl", KEYCTL_UNLINK, ctypes.c_int(serial),
                         ctypes.c_int(keyring)) == 0


_PROC_KEYS = re.compile(r"^([0-9a-f]+) (\S+) +\d+ \S+ ([0-9a-f]+) +(\d+) +(-?\d+) (\S+) +(.*)$")


def proc_keys() -> list[KeyInfo]:
    """Every key /proc/keys shows this process (keys it may view)."""
    out = []
    try:
        with open("/proc/keys") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        match = _PROC_KEYS.match(line)
        if match:
            serial, flags, perm, uid, gid, kind, rest = match.groups()
            desc = rest.rsplit(": ", 1)[0] if kind in ("keyring", "user", "psk") else rest
            out.append(KeyInfo(int(serial, 16), kind, int(uid), int(gid), int(perm, 16), desc,
                               flags))
    return out


def keyring_named(name: str) -> int | None:
    """The serial of a keyring by name (".nvme"), from /proc/keys."""
    return next((k.serial for k in proc_keys() if k.type == "keyring" and k.live and
                 k.description == name), None)


def find_psk(identity: str, keyrings: list[int]) -> int | None:
    """A "psk" key with this identity as description, searched in the given keyrings, then
    in this process's keyrings (where ACCEPT links the consumer's keyring)."""
    for ring in [*keyrings, KEY_SPEC_PROCESS_KEYRING]:
        found = search(ring, "psk", identity)
        if found is not None:
            return found
    return None
