"""The tlsnic kernel module next to the kernel: is it there, who uses it, and unloading it
only when nothing does.

The link kind autoloads the module (MODULE_ALIAS_RTNL_LINK) when a lab builds its first
tlsnic pair. Unloading it deletes every tlsnic device in every namespace (the kernel's
rtnl_link_unregister), so `down` removes the module only once no tlsnic device is left
anywhere in this kernel: in no named namespace, in no process's namespace, not in the
root one. Another lab's NICs, or a pair someone made by hand, keep it loaded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator

from labkit.base import netns
from labkit.errors import MissingFeatureError
from labkit.features.offload.config import KIND

SYSFS = f"/sys/module/{KIND}"
BUILD_HINT = ("Build it for the VM kernels on the host: `bash scripts/build_kmod.sh` "
              "(scripts/setup.sh runs it), then bring the lab up again.")


def loaded() -> bool:
    return os.path.isdir(SYSFS)


def ensure_loaded() -> None:
    """modprobe tls and tlsnic (idempotent); MissingFeatureError saying how to get it."""
    for name in ("tls", KIND):
        res = subprocess.run(["modprobe", name], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise MissingFeatureError(
                f"the kernel module {name} cannot be loaded on {os.uname().release}: "
                f"{(res.stderr or res.stdout).strip() or f'exit {res.returncode}'}.",
                hint=BUILD_HINT if name == KIND else
                "Run the lab on a kernel with kTLS (`labkit doctor --all-kernels`).")


def probe() -> str:
    """The doctor's probe (in its scratch namespace): make a tlsnic device, which
    autoloads the module; its namespace's removal takes the pair away."""
    from pyroute2.iproute import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="lkdnic0", kind=KIND)  # the peer is named tlsnicN
    return "tlsnic pair created (emulated TLS TX offload NIC)"


def _namespace_fds() -> Iterator[int]:
    """An open fd on every distinct network namespace of this kernel that can be reached:
    named ones, and those of running processes (the root one among them)."""
    seen: set[int] = set()
    paths = [f"/run/netns/{n}" for n in _listdir("/run/netns")]
    paths += [f"/proc/{p}/ns/net" for p in _listdir("/proc") if p.isdigit()]
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        ino = os.fstat(fd).st_ino
        if ino in seen:
            os.close(fd)
            continue
        seen.add(ino)
        try:
            yield fd
        finally:
            os.close(fd)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _kinds_in(fd: int) -> list[str]:
    """Link kinds of one namespace, dumped from a thread that entered it (so this
    process's other threads stay where they are)."""
    from pyroute2.iproute import IPRoute

    out: list[str] = []

    def work() -> None:
        try:
            netns.enter_fd(fd)
        except OSError:
            return  # a namespace that went away meanwhile holds nothing
        with IPRoute() as ipr:
            for link in ipr.get_links():
                info = link.get_attr("IFLA_LINKINFO")
                kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
                if kind:
                    out.append(str(kind))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(30)
    return out


def devices_anywhere() -> int:
    """tlsnic devices in this kernel, across every namespace that can be reached."""
    return sum(_kinds_in(fd).count(KIND) for fd in _namespace_fds())


def unload_if_unused() -> str:
    """Remove the module when no tlsnic device is left; one line saying what happened."""
    if not loaded():
        return ""
    left = devices_anywhere()
    if left:
        return f"tlsnic stays loaded: {left} tlsnic devices remain (other labs)"
    with contextlib.suppress(subprocess.TimeoutExpired):
        res = subprocess.run(["rmmod", KIND], capture_output=True, text=True, timeout=60)
        if res.returncode == 0:
            return "tlsnic unloaded (no tlsnic device left in this kernel)"
        return f"tlsnic stays loaded: rmmod said {res.stderr.strip()}"
    return "tlsnic stays loaded: rmmod did not finish in time"
