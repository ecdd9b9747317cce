"""What a kernel can do, found by trying it, and so which lab features it can run.

Each probe runs in a scratch namespace that is removed at once, so `doctor` changes
nothing. Reading /proc/config.gz would miss modules that are absent from disk (our hosts
have none), so on a running kernel we try the real operation. For a cached VM kernel that
is not running, its Debian config file answers (every capability names the config
symbols it needs), until `labkit doctor --kernel K` has probed it for real in a VM.

Capabilities that belong to one feature (AF_TIPC, the handshake family, ...) come from
the feature registry; the generic ones (namespaces, veth, bridge, tun, netem, sockmap,
kTLS) are here. Run as `python -m labkit.hosts.doctor --json` inside a VM.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit import features
from labkit.base import netns


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str


def _veth() -> str:
    from pyroute2.iproute import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="lkd0", kind="veth", peer="lkd1")
    return "veth pair created"


def _bridge() -> str:
    from pyroute2.iproute import IPRoute

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
    from pyroute2.iproute import IPRoute

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
    return 'TCP_ULP "tls" accepted'


# name -> (probe, kernel config symbols that must all be =y or =m)
CORE: dict[str, tuple[Callable[[], str], tuple[str, ...]]] = {
    "veth": (_veth, ("CONFIG_VETH",)),
    "bridge": (_bridge, ("CONFIG_BRIDGE",)),
    "tun": (_tun, ("CONFIG_TUN",)),
    "netem": (_netem, ("CONFIG_NET_SCH_NETEM",)),
    "bpf_sockmap": (_sockmap, ("CONFIG_BPF_SYSCALL", "CONFIG_NET_SOCK_MSG")),
    "ktls": (_ktls, ("CONFIG_TLS",)),
}
ENGINE_NEEDS = ("root", "netns", "veth", "bridge")
ENGINE = "lab engine"


def capabilities() -> dict[str, tuple[Callable[[], str], tuple[str, ...]]]:
    """Every capability a probe can test: the core ones, then the features' own."""
    out = dict(CORE)
    for f in features.all_features():
        for name, (fn, config) in f.probes.items():
            out[name] = (fn, config)
    return out


def _scratch() -> str:
    return f"lk-_doctor.{os.getpid()}"  # `labkit down --all` sweeps it if a probe dies


def probe_all() -> dict[str, Probe]:
    """Probe this kernel, as root, in a scratch namespace."""
    caps = capabilities()
    results = {"root": Probe("root", os.geteuid() == 0,
                             "running as root" if os.geteuid() == 0 else "not root")}
    name = _scratch()
    try:
        netns.create(name)
        results["netns"] = Probe("netns", True, "namespace created")
    except OSError as exc:
        results["netns"] = Probe("netns", False, exc.strerror or str(exc))
        for key in caps:
            results[key] = Probe(key, False, "needs a network namespace to probe")
        return results
    try:
        for key, (fn, _) in caps.items():
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


def from_config(config_text: str) -> dict[str, Probe]:
    """What a kernel that is not running can do, from its config file."""
    enabled = set(re.findall(r"^(CONFIG_\w+)=[ym]$", config_text, re.M))
    out = {"root": Probe("root", True, "labkit runs as root in its VMs"),
           "netns": Probe("netns", "CONFIG_NET_NS" in enabled, "CONFIG_NET_NS")}
    for key, (_, symbols) in capabilities().items():
        missing = [s for s in symbols if s not in enabled]
        ok = bool(symbols) and not missing
        out[key] = Probe(key, ok, "from the kernel config: " + (
            ", ".join(symbols) if ok else f"no {', '.join(missing) or 'config symbol'}"))
    return out


def feature_needs() -> dict[str, tuple[str, ...]]:
    """Lab feature -> capabilities it needs (the lab engine first)."""
    out = {ENGINE: ENGINE_NEEDS}
    for f in features.all_features():
        out[f.key] = tuple(dict.fromkeys((*ENGINE_NEEDS, *f.needs)))
    return out


def missing_for(results: dict[str, Probe], wanted: list[str]) -> dict[str, list[str]]:
    """Feature -> the capabilities it lacks here (only features that lack something)."""
    needs = feature_needs()
    out = {}
    for feature in [ENGINE, *wanted]:
        missing = [n for n in needs[feature] if not (n in results and results[n].ok)]
        if missing:
            out[feature] = missing
    return out


def lab_features(results: dict[str, Probe]) -> dict[str, dict[str, Any]]:
    """Per feature: what it needs, what is missing, and whether it runs on this kernel."""
    out = {}
    for feature, needs in feature_needs().items():
        missing = [n for n in needs if not (n in results and results[n].ok)]
        title = features.get(feature).title if feature != ENGINE else \
            "namespaces, links, LANs"
        out[feature] = {"title": title, "needs": list(needs), "missing": missing,
                        "runs": not missing}
    return out


# -- cached answers for VM kernels --------------------------------------------------------

REPORT = "doctor.json"


def kernel_report(kernel_dir: str | Path) -> dict[str, Probe] | None:
    """The probes `labkit doctor --kernel K` recorded for a cached kernel, if any."""
    try:
        data = json.loads((Path(kernel_dir) / REPORT).read_text())
    except (OSError, ValueError):
        return None
    return {k: Probe(k, bool(v["ok"]), str(v["detail"])) for k, v in data["probes"].items()}


def kernel_capabilities(kernel_dir: str | Path, version: str) -> tuple[dict[str, Probe], str]:
    """(probes, source) for a cached kernel: its recorded probe report, else its config."""
    report = kernel_report(kernel_dir)
    if report is not None:
        return report, "probed in a VM"
    base = Path(kernel_dir)
    configs = (sorted((base / "boot").glob(f"config-{version}*"))
               or sorted((base / "boot").glob("config-*"))
               or sorted(base.glob(f"config-{version}*"))  # beside a user's bzImage
               or [p for p in (base / ".config",) if p.is_file()])  # a build tree
    if not configs:
        return {}, "unknown (no config file and never probed)"
    return from_config(configs[-1].read_text(errors="replace")), "from its config file"


def save_report(kernel_dir: str | Path, release: str, probes: dict[str, Probe]) -> None:
    data = {"release": release, "probes": {k: asdict(v) for k, v in probes.items()}}
    (Path(kernel_dir) / REPORT).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main() -> int:
    """`python -m labkit.hosts.doctor --json`: the probes of the running kernel, as JSON."""
    results = probe_all()
    if "--json" in sys.argv[1:]:
        print(json.dumps({"release": os.uname().release,
                          "probes": {k: asdict(v) for k, v in results.items()}}))
    else:
        for key, pr in results.items():
            print(f"{'yes' if pr.ok else 'no ':3} {key:12} {pr.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
