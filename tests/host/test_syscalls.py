"""The machine's syscall numbers: known machines get the kernel's own numbers; any other
machine is refused with a clear error before a wrong number could be called."""

from __future__ import annotations

import ctypes
import errno

import pytest

from labkit.base import syscalls
from labkit.errors import LabkitError


def test_known_numbers_match_the_kernel_tables() -> None:
    assert syscalls.number("bpf", "x86_64") == 321
    assert syscalls.number("keyctl", "x86_64") == 250
    assert syscalls.number("add_key", "aarch64") == 217
    assert syscalls.number("bpf", "aarch64") == 280


def test_unknown_machine_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscalls.platform, "machine", lambda: "riscv64")
    with pytest.raises(LabkitError) as exc:
        syscalls.syscall("bpf", 0, None, 0)
    assert "riscv64" in exc.value.message and "bpf()" in exc.value.message
    assert "x86_64" in exc.value.hint


def test_the_number_reaches_the_kernel() -> None:
    """keyctl(KEYCTL_DESCRIBE) on a serial that cannot exist: the kernel's ENOKEY proves
    the call reached keyctl (a wrong number would give ENOSYS or another call's error)."""
    ret = syscalls.syscall("keyctl", 6, ctypes.c_int(0x7FFFFFF0), None, 0)
    assert ret == -1
    assert ctypes.get_errno() == errno.ENOKEY
