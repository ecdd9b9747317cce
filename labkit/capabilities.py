"""What a kernel can do, found by trying it, and so which lab features it can run.

Each probe runs in a scratch namespace that is removed at once, so `doctor` changes
nothing. Reading /proc/config.gz would miss modules that are absent from disk (our hosts
have none), so on a running kernel we try the real operation. For a cached VM kernel that
is not running, its Debian config file answers (every capability names the config
symbols it needs), until `labkit doctor --kernel K` has probed it for real in a VM.

Capabilities that belong to one feature (AF_TIPC, the handshake family, ...) come from
the feature registry; the generic ones (namespaces, veth, bridge, tun, netem, sockmap,
kTLS) are here. Run as `python -m labkit.capabilities --json` inside a VM.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit import features
from labkit.base import files, netns, syscalls


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
    attr = struct.pack("=IIIII", 15, 4, 4, 1, 0).ljust(72, b"\0")  # SOCKMAP, key 4, val 4
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = syscalls.syscall("bpf", 0, buf, len(attr))  # bpf(BPF_MAP_CREATE), this machine's number
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    os.close(fd)
    return "BPF sockmap created"


def _lo_up() -> None:
    """The scratch namespace's loopback starts down; the socket probes need it."""
    from pyroute2.iproute import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=1, state="up")


@contextlib.contextmanager
def _tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair over this namespace's loopback, closed at the end."""
    _lo_up()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname()) as cli:
            acc, _ = srv.accept()
            with acc:
                yield cli, acc


def _ktls() -> str:
    with _tcp_pair() as (cli, _):
        cli.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP
    return 'TCP_ULP "tls" accepted'


def _tls13_tx(sock: socket.socket, key_byte: int) -> bytes:
    """A TLS 1.3 AES-GCM-128 crypto_info with a dummy key (no record is ever sent)."""
    from labkit.ktls import ciphers, sockopt, uapi

    suite = ciphers.BY_SHORT["aes-gcm-128"]
    return sockopt.crypto_info(uapi.TLS_1_3_VERSION, suite, bytes([key_byte]) * 16,
                               bytes(4), bytes(8), 0)


def _ktls_rekey() -> str:
    """TLS_TX given twice on a TLS 1.3 socket: a rekey where the kernel has KeyUpdate,
    EBUSY where it has not; and the rekey counters it must then have in tls_stat."""
    from labkit.ktls import sockopt, stat

    with _tcp_pair() as (cli, _):
        sockopt.install(cli, tx=_tls13_tx(cli, 1))
        sockopt.rekey(cli, tx=_tls13_tx(cli, 2))
    counters = stat.rekey(stat.read() or {})
    if counters is None:
        raise OSError(0, "a second TLS_TX was accepted, yet /proc/net/tls_stat has no "
                      "rekey counters")
    return f"second TLS_TX on TLS 1.3 accepted; TlsTxRekeyOk {counters['TlsTxRekeyOk']}"


def _ktls_max_payload() -> str:
    from labkit.ktls import sockopt

    with _tcp_pair() as (cli, _):
        sockopt.install(cli, tx=_tls13_tx(cli, 1))
        got = sockopt.max_payload(cli, 1000)
    return f"TLS_TX_MAX_PAYLOAD_LEN set to {got}"


# name -> (probe, kernel config symbols that must all be =y or =m)
CORE: dict[str, tuple[Callable[[], str], tuple[str, ...]]] = {
    "veth": (_veth, ("CONFIG_VETH",)),
    "bridge": (_bridge, ("CONFIG_BRIDGE",)),
    "tun": (_tun, ("CONFIG_TUN",)),
    "netem": (_netem, ("CONFIG_NET_SCH_NETEM",)),
    "bpf_sockmap": (_sockmap, ("CONFIG_BPF_SYSCALL", "CONFIG_NET_SOCK_MSG")),
    "ktls": (_ktls, ("CONFIG_TLS",)),
}


@dataclass(frozen=True)
class Difference:
    """A kernel behaviour that changed between the kernels labkit runs (probed like a
    capability, never needed by a lab feature): `doctor --all-kernels` prints a line for
    each one whose answer differs between kernels. A config file cannot tell them apart,
    so a kernel known only by its config answers from `since` (the first release that
    has it; None: unknown until probed)."""

    label: str
    probe: Callable[[], str]
    symbols: tuple[str, ...]
    since: tuple[int, int] | None
    meaning: str  # what it changes for a user of labkit


DIFFERENCES: dict[str, Difference] = {
    "ktls_rekey": Difference(
        "kTLS KeyUpdate (rekey)", _ktls_rekey, ("CONFIG_TLS",), (6, 14),
        "TLS 1.3 KeyUpdate in the kernel: TLS_TX/TLS_RX again installs the next key, reads "
        "return EKEYEXPIRED after a received KeyUpdate, and tls_stat gains TlsTxRekeyOk, "
        "TlsRxRekeyOk, TlsTxRekeyError, TlsRxRekeyError, TlsRxRekeyReceived"),
    "ktls_max_payload": Difference(
        "kTLS record size limit (TLS_TX_MAX_PAYLOAD_LEN)", _ktls_max_payload,
        ("CONFIG_TLS",), None,
        "RFC 8449: the largest plaintext per record the kernel sends is settable"),
}
ENGINE_NEEDS = ("root", "netns", "veth", "bridge")
ENGINE = "lab engine"


def capabilities() -> dict[str, tuple[Callable[[], str], tuple[str, ...]]]:
    """Every capability a probe can test: the core ones, then the features' own."""
    out = dict(CORE)
    for f in features.all_features():
        for name, (fn, config) in f.probes.items():
            out[name] = (fn, config)
    for name, diff in DIFFERENCES.items():
        out[name] = (diff.probe, diff.symbols)
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


def from_config(config_text: str, release: str = "") -> dict[str, Probe]:
    """What a kernel that is not running can do, from its config file (and, for the
    behaviours that changed between releases, from its release)."""
    enabled = set(re.findall(r"^(CONFIG_\w+)=[ym]$", config_text, re.M))
    out = {"root": Probe("root", True, "labkit runs as root in its VMs"),
           "netns": Probe("netns", "CONFIG_NET_NS" in enabled, "CONFIG_NET_NS")}
    for key, (_, symbols) in capabilities().items():
        missing = [s for s in symbols if s not in enabled]
        ok = bool(symbols) and not missing
        out[key] = Probe(key, ok, "from the kernel config: " + (
            ", ".join(symbols) if ok else f"no {', '.join(missing) or 'config symbol'}"))
        diff = DIFFERENCES.get(key)
        if ok and diff is not None:
            out[key] = _by_release(key, diff, release)
    return out


def release_tuple(release: str) -> tuple[int, int] | None:
    """(major, minor) of a `uname -r` string such as 7.2.13+deb14-amd64."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _by_release(key: str, diff: Difference, release: str) -> Probe:
    have = release_tuple(release)
    if diff.since is None or have is None:
        return Probe(key, False, "unknown from the config file: probe it with `labkit "
                     "doctor --kernel K`")
    since = ".".join(map(str, diff.since))
    return Probe(key, have >= diff.since, f"from the release: {since} and later have it")


def _answer(probe: Probe) -> str:
    return "yes" if probe.ok else "unknown" if probe.detail.startswith("unknown") else "no"


def differences(columns: dict[str, dict[str, Probe]]) -> list[str]:
    """One line per kernel behaviour whose answer differs between the kernels given
    (name -> probes), e.g. "kTLS KeyUpdate (rekey): debian-7.2 yes, debian-6.12 no"."""
    lines = []
    for key, diff in DIFFERENCES.items():
        answers = {name: _answer(probes[key]) for name, probes in columns.items()
                   if key in probes}
        if len(set(answers.values()) - {"unknown"}) > 1:
            lines.append(f"{diff.label}: " + ", ".join(
                f"{name} {answer}" for name, answer in answers.items()))
    return lines


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
        data = json.loads(files.read_bounded(Path(kernel_dir) / REPORT, files.STATE))
        return {k: Probe(k, bool(v["ok"]), str(v["detail"]))
                for k, v in data["probes"].items()}
    except (OSError, ValueError, RecursionError, LookupError, TypeError, AttributeError,
            files.FileRefused):
        return None  # none, or not one labkit wrote: `labkit doctor --kernel K` redoes it


def kernel_capabilities(kernel_dir: str | Path, version: str) -> tuple[dict[str, Probe], str]:
    """(probes, source) for a cached kernel: its recorded probe report, else its config.
    A report recorded before labkit knew a capability gets that one from the config."""
    report = kernel_report(kernel_dir)
    config = config_file(kernel_dir, version)
    known = {} if config is None else from_config(config.read_text(errors="replace"), version)
    if report is not None:
        return {**known, **report}, "probed in a VM"
    if config is None:
        return {}, "unknown (no config file and never probed)"
    return known, "from its config file"


def config_file(kernel_dir: str | Path, version: str) -> Path | None:
    """The config file of an unpacked or built kernel: boot/config-* (Debian up to 6.x),
    lib/modules/<version>/config (Debian 7.x, /usr merged: no /boot in the package), one
    beside a user's bzImage, or a build tree's .config."""
    base = Path(kernel_dir)
    candidates = [*sorted((base / "boot").glob(f"config-{version}*")),
                  *sorted((base / "boot").glob("config-*")),
                  *[base / d / "lib/modules" / version / "config" for d in (".", "usr")],
                  *sorted(base.glob(f"config-{version}*")),  # beside a user's bzImage
                  base.parent / "lib/modules" / version / "config",  # image in <root>/boot
                  base / ".config"]  # a build tree
    return next((p for p in candidates if p.is_file()), None)


def running_config() -> tuple[str, str] | None:
    """(text, where) of the running kernel's own config, or None if none is found.

    /proc/config.gz, /boot/config-<release>, /lib/modules/<release>/config; in a labkit VM
    /lib/modules/<release> links to the cached kernel's tree, whose boot/config-* is then
    found a few levels up.
    """
    import gzip

    release = os.uname().release
    with contextlib.suppress(OSError):
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(
            errors="replace"), "/proc/config.gz"
    modules = Path("/lib/modules") / release
    for path in (Path("/boot") / f"config-{release}", modules / "config"):
        if path.is_file():
            return path.read_text(errors="replace"), str(path)
    with contextlib.suppress(OSError):
        real = modules.resolve(strict=True)
        for up in list(real.parents)[1:4]:  # .../lib/modules, .../lib, <root>
            found = config_file(up, release)
            if found is not None:
                return found.read_text(errors="replace"), str(found)
    return None


def save_report(kernel_dir: str | Path, release: str, probes: dict[str, Probe]) -> None:
    data = {"release": release, "probes": {k: asdict(v) for k, v in probes.items()}}
    (Path(kernel_dir) / REPORT).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def main() -> int:
    """`python -m labkit.capabilities --json`: the probes of the running kernel, as JSON."""
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
