"""KVM or TCG: use hardware virtualisation only where it actually works.

/dev/kvm existing proves little: under nested virtualisation (our CI VMs) qemu starts,
then stops the guest with "KVM internal error" on an AVX instruction in early boot and
hangs instead of exiting, while vng's `accel=kvm:tcg` fallback only covers KVM failing to
initialise. So labkit boots the real guest kernel once under KVM with no root filesystem:
if KVM works, the kernel gets as far as "Unable to mount root fs" and panics (qemu exits
within seconds); if not, qemu prints its KVM error. The verdict is cached per host kernel
and qemu binary, since probing costs a boot.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from labkit.base import files
from labkit.hosts.vm import paths

PROBE_TIMEOUT = 30.0
CACHE_FILE = "kvm-probe.json"
OK_MARKERS = ("Kernel panic", "Unable to mount root", "VFS: Cannot open root device")
FAIL_MARKERS = ("KVM internal error", "failed to set MSR", "kvm run failed", "KVM: entry failed")

_announced = False


@dataclass(frozen=True)
class Accel:
    kind: Literal["kvm", "tcg"]
    reason: str
    cached: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def choose(image: str, qemu: str, *, reprobe: bool = False) -> Accel:
    """KVM if a probe boot under it succeeded on this host, else TCG; forced by LABKIT_VM_ACCEL."""
    forced = os.environ.get("LABKIT_VM_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return Accel(forced, f"forced by LABKIT_VM_ACCEL={forced}")  # type: ignore[arg-type]
    if not os.path.exists("/dev/kvm"):
        return Accel("tcg", "/dev/kvm does not exist (no hardware virtualisation exposed)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("tcg", "/dev/kvm is not accessible to this user")
    key = _cache_key(qemu)
    if not reprobe:
        hit = _read_cache(key)
        if hit is not None:
            return hit
    works, reason = probe(image, qemu)
    accel = Accel("kvm" if works else "tcg", reason)
    if works is not None:
        _write_cache(key, accel)
    return accel


def announce(accel: Accel) -> None:
    """Say once per process why the VM is slow, so nobody wonders about 15 s boots."""
    global _announced
    if accel.kind == "tcg" and not _announced and not accel.reason.startswith("forced"):
        _announced = True
        print(
            f"labkit: KVM is not usable here ({accel.reason}); using TCG emulation, "
            "expect about 15 s per VM boot.",
            file=sys.stderr,
            flush=True,
        )


def probe(image: str, qemu: str, timeout: float = PROBE_TIMEOUT) -> tuple[bool | None, str]:
    """Boot `image` under KVM without a root fs. (True|False|None = undecided, reason)."""
    argv = [
        qemu, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256", "-nodefaults",
        "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", image, "-append", "console=ttyS0 panic=-1 loglevel=4",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    out = bytearray()
    deadline = time.monotonic() + timeout
    verdict: tuple[bool | None, str] | None = None
    try:
        while verdict is None:
            left = deadline - time.monotonic()
            if left <= 0:
                verdict = (None, f"KVM probe undecided after {timeout:.0f} s")
                break
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            out += chunk
            text = out.decode(errors="replace")
            verdict = _classify(text)
            if verdict is None and ready and not chunk:  # qemu exited
                proc.wait()
                verdict = _classify(text, exited=proc.returncode)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return verdict


def _classify(text: str, exited: int | None = None) -> tuple[bool | None, str] | None:
    for marker in FAIL_MARKERS:
        if marker in text:
            return False, f"a test boot under KVM failed with {marker!r}, nested KVM is broken"
    if any(m in text for m in OK_MARKERS):
        return True, "a test boot under KVM reached the root mount"
    if exited is not None:
        last = text.strip().splitlines()[-1:] or ["no output"]
        return False, f"qemu exited with status {exited} under KVM: {last[0][:120]}"
    return None


def _cache_key(qemu: str) -> dict[str, object]:
    st = os.stat(shutil.which(qemu) or qemu)
    return {"host_kernel": os.uname().release, "qemu": qemu, "qemu_mtime": int(st.st_mtime)}


def _cache_path() -> Path:
    return paths.cache_dir() / CACHE_FILE


def _read_cache(key: dict[str, object]) -> Accel | None:
    try:
        data = json.loads(files.read_bounded(_cache_path(), files.STATE))
    except (OSError, ValueError, RecursionError, files.FileRefused):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("key") != key or data.get("kind") not in ("kvm", "tcg"):
        return None
    return Accel(data["kind"], str(data.get("reason", "")), cached=True)


def _write_cache(key: dict[str, object], accel: Accel) -> None:
    with contextlib.suppress(OSError):
        path = _cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "kind": accel.kind, "reason": accel.reason}))
        os.replace(tmp, path)
