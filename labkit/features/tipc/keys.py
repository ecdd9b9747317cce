"""TIPC keys: AES key + salt, read from a file or generated; never printed.

A key file holds the hex string that `tipc node set key 0x...` takes. Generated keys are
written 0600 next to the lab's state (removed at `down`), so a user can still decrypt a
capture; a key file given by the user that others can read is refused. check_file() is
what validation runs on a topology's key_file; for_lab() runs the same checks at `up`.
"""

from __future__ import annotations

import os
import stat

from labkit.base.files import KEY, FileRefused, read_bounded, write_private
from labkit.errors import UsageError
from labkit.features.tipc.identity import KEY_LENGTHS, SALT_LEN, Secret, key_length


def generate(bits: int) -> Secret:
    # `secrets` here, not at the top: its hmac loads OpenSSL's libcrypto (hashlib: ~0.2 s of
    # a lab VM daemon's start under TCG), and keys are made where `up` runs, not in the VM
    import secrets

    return Secret(secrets.token_bytes(key_length(bits)))


def problems(path: str, bits: int) -> list[tuple[str, str]]:
    """Everything wrong with a key file for AES-`bits`, as (message, fix); never the key.

    The length and the permissions are both reported, so one run shows every fix.
    """
    want = key_length(bits)
    create = (f"Create one: `openssl rand -hex {want} > {path} && chmod 600 {path}`, or "
              "remove key_file to have labkit generate a key for the lab.")
    try:
        st = os.stat(path)
        text = read_bounded(path, KEY).strip()  # a regular file of at most 64 KiB
    except FileNotFoundError:
        return [(f"the TIPC key file {path} does not exist.", create)]
    except FileRefused as exc:
        return [(f"cannot use the TIPC key file {path}: {exc.message}", create)]
    except OSError as exc:
        return [(f"cannot read the TIPC key file {path}: {exc.strerror}.", create)]
    found = []
    fix = (f"It holds the AES key and {SALT_LEN}-byte salt as hex, e.g. what "
           f"`openssl rand -hex {want}` prints.")
    try:
        raw: bytes | None = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raw = None
        found.append((f"the TIPC key file {path} is not a hex string.", fix))
    if raw is not None and len(raw) != want:
        if len(raw) in KEY_LENGTHS:
            fix = f"It is an AES-{(len(raw) - SALT_LEN) * 8} key: set key_bits to match."
        found.append((f"the TIPC key in {path} has {len(raw)} bytes, but key_bits {bits} "
                       f"needs {want} (AES key + {SALT_LEN}-byte salt).", fix))
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        found.append((f"the TIPC key file {path} is readable by others "
                       f"(mode {stat.S_IMODE(st.st_mode):o}).",
                       f"Keys are secrets: `chmod 600 {path}`."))
    return found


def read(path: str, bits: int) -> Secret:
    """The key in a user's key file, checked; UsageError naming every problem."""
    found = problems(path, bits)
    if found:
        raise UsageError(" ".join(text for text, _ in found),
                         hint=" ".join(fix for _, fix in found))
    return Secret(bytes.fromhex(read_bounded(path, KEY).strip().removeprefix("0x")))


def per_node(lab: str, identities: list[str], bits: int) -> dict[str, Secret]:
    """One generated key per node identity, stored 0600 as `identity hex` lines."""
    from labkit.lab import state

    out = {ident: generate(bits) for ident in identities}
    write_private(state.secret_path(lab, "tipc.keys"),
                  "".join(f"{ident} {key.hex()}\n" for ident, key in out.items()))
    return out


def for_lab(lab: str, key_file: str | None, bits: int) -> Secret:
    """The lab's key: the user's file, or a generated one stored 0600 under the state."""
    from labkit.lab import state

    if key_file:
        return read(key_file, bits)
    key = generate(bits)
    write_private(state.secret_path(lab, "tipc.key"), key.hex() + "\n")
    return key
