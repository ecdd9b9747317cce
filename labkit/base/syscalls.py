"""System calls that libc has no wrapper for (bpf, add_key, keyctl), by the machine's number.

Syscall numbers differ by architecture (x86_64 has its own table; aarch64 uses the generic
one of include/uapi/asm-generic/unistd.h), so a number is looked up for platform.machine()
when it is first used, and an unknown machine is refused with a clear error instead of
calling whatever that number is there. Standard library only: the proxy and the handshake
daemon import their users at start under emulation.
"""

from __future__ import annotations

import ctypes
import platform

from labkit.errors import MissingFeatureError

# arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h (aarch64)
NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"add_key": 248, "keyctl": 250, "bpf": 321},
    "aarch64": {"add_key": 217, "keyctl": 219, "bpf": 280},
}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class UnknownMachine(MissingFeatureError):
    """labkit does not know this machine's number for a system call it needs."""


def machine() -> str:
    raw = platform.machine()
    return ALIASES.get(raw.lower(), raw)


def number(name: str, arch: str | None = None) -> int:
    """The syscall number of `name` on `arch` (this machine by default)."""
    arch = arch or machine()
    table = NUMBERS.get(arch)
    if table is None or name not in table:
        known = ", ".join(sorted(NUMBERS))
        raise UnknownMachine(
            f"labkit does not know the {name}() system call's number on this machine "
            f"({arch or 'unknown architecture'}).",
            hint=f"labkit calls {name}() directly on {known} only; run it on one of those "
                 "(or in a labkit VM, which is x86_64), or add the number from the "
                 "kernel's syscall table to labkit/base/syscalls.py.")
    return table[name]


def syscall(name: str, *args: object) -> int:
    """libc's syscall(2) with the number of `name`: the raw result (negative with errno set
    on failure, read it with ctypes.get_errno())."""
    return int(_libc.syscall(number(name), *args))
