"""What this kernel can do, found by trying it, and what each lab feature therefore needs.

Each probe runs in a scratch namespace that is removed at once, so `doctor` changes
nothing on the host. Reading /proc/config.gz would miss modules that are absent from
disk (our hosts have none), so we try the real operation instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from labkit.base import netns
from labkit.errors import MissingFeatureError

DEFAULT_VM_KERNEL = "debian-6.12"


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str


def _scratch() -> str:
    return f"lk-_doctor.{os.getpid()}"  # `labkit down --all` sweeps it if a probe dies


def _tipc() -> str:
    s = socket.socket(socket.AF_TIPC, socket.SOCK_RDM)
    s.close()
    return "AF_TIPC sockets work"


def _ktls() -> str:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    try:
        cli.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP
    finally:
        cli.close()
        srv.close()
    return "TCP_ULP \"tls\" accepted"


def _genl(family: str) -> Callable[[], str]:
    def probe() -> str:
        from pyroute2.netlink.generic import GenericNetlinkSocket
        from pyroute2.netlink.nlsocket import Marshal  # noqa: F401

        gs = GenericNetlinkSocket()
        try:
            gs.bind(family, None)  # type: ignore[arg-type]
        finally:
            gs.close()
        return f"generic netlink family '{family}' present"

    return probe


def _veth() -> str:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="lkd0", kind="veth", peer="lkd1")
    return "veth pair created"


def _bridge() -> str:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="lkdbr", kind="bridge")
    return "bridge created"


def _tun() -> str:
    import fcntl

    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"lkdtap", 0x0002 | 0x1000))
    finally:
        os.close(fd)
    return "TAP device created"


def _netem() -> str:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=1, state="up")
        ipr.tc("add", "netem", index=1, handle="1:", delay=1000)
    return "netem qdisc attached"


def _sockmap() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = struct.pack("=IIIII", 15, 4, 4, 1, 0).ljust(72, b"\0")  # SOCKMAP, key 4, val 4
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc.syscall(321, 0, buf, len(attr))  # bpf(BPF_MAP_CREATE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    os.close(fd)
    return "BPF sockmap created"


PROBES: dict[str, Callable[[], str]] = {
    "veth": _veth,
    "bridge": _bridge,
    "tun": _tun,
    "netem": _netem,
    "bpf_sockmap": _sockmap,
    "tipc": _tipc,
    "ktls": _ktls,
    "handshake": _genl("handshake"),
}

# What each lab feature needs from the kernel (plus the core: root, netns, veth, bridge).
CORE = ("root", "netns", "veth", "bridge")
FEATURE_NEEDS: dict[str, tuple[str, ...]] = {
    "lab engine (namespaces, links, LANs)": CORE,
    "tipc": ("tipc",),
    "handshake": ("handshake", "ktls"),
    "kproxy": ("bpf_sockmap",),
    "offload": ("tun", "ktls"),
    "netem impairments": ("netem",),
}


def probe_all() -> dict[str, Probe]:
    results = {"root": Probe("root", os.geteuid() == 0,
                             "running as root" if os.geteuid() == 0 else "not root")}
    name = _scratch()
    try:
        netns.create(name)
        results["netns"] = Probe("netns", True, "namespace created")
    except OSError as exc:
        results["netns"] = Probe("netns", False, exc.strerror or str(exc))
        for key in PROBES:
            results[key] = Probe(key, False, "needs a network namespace to probe")
        return results
    try:
        for key, fn in PROBES.items():
            try:
                with netns.entered(name):
                    results[key] = Probe(key, True, fn())
            except Exception as exc:  # a probe failing is the answer, not an error
                err = getattr(exc, "strerror", None) or getattr(exc, "args", [str(exc)])[-1]
                results[key] = Probe(key, False, str(err))
    finally:
        with contextlib.suppress(OSError):
            netns.delete(name)
    return results


def lab_features(results: dict[str, Probe]) -> dict[str, dict[str, object]]:
    out = {}
    for feature, needs in FEATURE_NEEDS.items():
        missing = [n for n in needs if not results[n].ok]
        out[feature] = {
            "needs": list(needs),
            "missing": missing,
            "runs": "host" if not missing else (
                "needs root" if missing == ["root"] else f"VM ({DEFAULT_VM_KERNEL})"),
        }
    return out


def require_features(topo: object, path: str) -> None:
    """Refuse, before touching anything, a lab whose features this kernel lacks."""
    wanted = list(getattr(topo, "features", {}))
    if not wanted:
        return
    results = probe_all()
    for feature in wanted:
        missing = [n for n in FEATURE_NEEDS.get(feature, ()) if not results[n].ok]
        if missing:
            raise MissingFeatureError(
                f"lab '{getattr(topo, 'name', '?')}' uses {feature}, but this kernel "
                f"({os.uname().release}) has no {', '.join(missing)}.",
                hint=f"Run it in a VM with a kernel that has it: "
                     f"`labkit up {path} --vm {DEFAULT_VM_KERNEL}` "
                     f"(first `labkit vm kernels fetch {DEFAULT_VM_KERNEL}`).")
