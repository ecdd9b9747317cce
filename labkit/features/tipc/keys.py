"""TIPC keys: AES key + 4-byte salt, read from a file or generated; never printed.

A key file holds the hex string that `tipc node set key 0x...` takes. Generated keys are
written 0600 next to the lab's state (removed at `down`), so a user can still decrypt a
capture; a key file given by the user that others can read is refused.
"""

from __future__ import annotations

import os
import secrets
import stat

from labkit.errors import UsageError
from labkit.features.tipc.netlink import Secret
from labkit.lab import state

SALT = 4


def generate(bits: int) -> Secret:
    return Secret(secrets.token_bytes(bits // 8 + SALT))


def read(path: str) -> Secret:
    try:
        st = os.stat(path)
        with open(path) as fh:
            text = fh.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the TIPC key file {path}: {exc.strerror}.",
                         hint="Remove key_file to have labkit generate a key.") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"the TIPC key file {path} is readable by others "
                         f"(mode {stat.S_IMODE(st.st_mode):o}).",
                         hint=f"Keys are secrets: `chmod 600 {path}`.")
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise UsageError(f"the TIPC key file {path} is not a hex string.",
                         hint="It holds the AES key and 4-byte salt as hex, e.g. what "
                              "`openssl rand -hex 20` prints.") from None
    if len(raw) not in (20, 28, 36):
        raise UsageError(f"the TIPC key in {path} has {len(raw)} bytes; it needs 20, 28 or "
                         "36 (AES-128/192/256 key + 4-byte salt).")
    return Secret(raw)


def write(path: str, key: bytes) -> None:
    """Create the key file 0600; never follow a link or reuse an existing file."""
    if os.path.lexists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")


def per_node(lab: str, identities: list[str], bits: int) -> dict[str, Secret]:
    """One generated key per node identity, stored 0600 as `identity hex` lines."""
    out = {ident: generate(bits) for ident in identities}
    path = state.secret_path(lab, "tipc.keys")
    if os.path.lexists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{ident} {key.hex()}\n" for ident, key in out.items())
    return out


def for_lab(lab: str, key_file: str | None, bits: int) -> Secret:
    """The lab's key: the user's file, or a generated one stored 0600 under the state."""
    if key_file:
        if not os.path.exists(key_file):
            raise UsageError(
                f"the TIPC key file {key_file} does not exist.",
                hint=f"Create one: `openssl rand -hex {bits // 8 + SALT} > {key_file} && "
                     f"chmod 600 {key_file}`, or remove key_file to have labkit generate a "
                     "key for the lab.")
        key = read(key_file)
        if len(key) != bits // 8 + SALT:
            raise UsageError(f"the TIPC key in {key_file} is {len(key)} bytes, but key_bits "
                             f"{bits} needs {bits // 8 + SALT} (key + 4-byte salt).")
        return key
    key = generate(bits)
    write(state.secret_path(lab, "tipc.key"), key)
    return key
