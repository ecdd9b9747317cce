"""The configuration of a kernel labkit builds: a minimal base plus what its features need.

The base follows virtme-ng's approach (`vng --kconfig`, virtme-configkernel): start from
nothing (`make allnoconfig`, so no driver, no debug info, no modules) and switch on only
what a virtme-ng guest needs to boot and run labkit's agent: 64-bit SMP x86 with PCI and
ACPI, virtio PCI/console/net/blk, 9p and virtiofs for the host's root, tmpfs, devtmpfs,
overlayfs, a serial console, and the user-space interfaces Python and iproute2 use.
Everything labkit's features need is not listed here: it is derived from the feature
registry (every capability's config symbols, see labkit.capabilities.capabilities, plus
each feature's `kconfig`), so a new feature brings its own options. Everything is =y:
the built kernel has no modules.
"""

from __future__ import annotations

import re
from pathlib import Path

from labkit import capabilities as doctor
from labkit import features
from labkit.errors import UsageError

# Bumped when the way a configuration is made changes: it is part of the cache key.
RECIPE = "labkit-kconfig-1"

# (symbol, why) -- the guest platform; every symbol =y.
BASE: tuple[tuple[str, str], ...] = (
    ("64BIT", "x86_64 (allnoconfig would give i386)"),
    ("SMP", "VMs have several vCPUs"),
    ("PCI", "virtio devices are PCI devices"),
    ("PCI_MSI", "virtio-pci interrupts"),
    ("ACPI", "power-off ends the VM"),
    ("HYPERVISOR_GUEST", "paravirtual clock and spinlocks"),
    ("PARAVIRT", "paravirtual clock and spinlocks"),
    ("KVM_GUEST", "kvmclock when KVM is there"),
    ("PRINTK", "kernel messages"),
    ("EARLY_PRINTK", "boot messages before the console"),
    ("TTY", "consoles"),
    ("SERIAL_8250", "the serial console (ttyS0)"),
    ("SERIAL_8250_CONSOLE", "the serial console (ttyS0)"),
    ("UNIX98_PTYS", "ptys for shells"),
    ("VIRTIO_MENU", "virtio"),
    ("VIRTIO", "virtio"),
    ("VIRTIO_PCI", "virtio over PCI"),
    ("VIRTIO_CONSOLE", "hvc0 and the agent's virtio serial port"),
    ("VIRTIO_NET", "backplane and port-forward NICs"),
    ("BLOCK", "block layer (virtio-blk, NVMe)"),
    ("BLK_DEV", "block devices"),
    ("VIRTIO_BLK", "disks given to vng"),
    ("HW_RANDOM", "entropy for TLS"),
    ("HW_RANDOM_VIRTIO", "entropy for TLS"),
    ("BLK_DEV_INITRD", "an initramfs if vng gives one"),
    ("BINFMT_ELF", "run programs"),
    ("BINFMT_SCRIPT", "run scripts"),
    ("MULTIUSER", "users and groups"),
    ("SYSVIPC", "Python multiprocessing and tools"),
    ("FUTEX", "threads"),
    ("EPOLL", "event loops"),
    ("SIGNALFD", "event loops"),
    ("TIMERFD", "event loops"),
    ("EVENTFD", "event loops"),
    ("SHMEM", "shared memory, tmpfs"),
    ("AIO", "asynchronous I/O"),
    ("FILE_LOCKING", "flock (labkit's locks), NFS"),
    ("INOTIFY_USER", "file watches"),
    ("FHANDLE", "name_to_handle_at (mount tools)"),
    ("PROC_FS", "/proc"),
    ("PROC_SYSCTL", "sysctls"),
    ("SYSFS", "/sys"),
    ("TMPFS", "/tmp, /run, /dev/shm in the guest"),
    ("TMPFS_POSIX_ACL", "tmpfs ACLs"),
    ("DEVTMPFS", "/dev"),
    ("DEVTMPFS_MOUNT", "/dev"),
    ("IKCONFIG", "/proc/config.gz tells what the kernel has"),
    ("IKCONFIG_PROC", "/proc/config.gz tells what the kernel has"),
    ("NETWORK_FILESYSTEMS", "9p, NFS"),
    ("NET_9P", "the host's root over 9p"),
    ("NET_9P_VIRTIO", "the host's root over 9p"),
    ("9P_FS", "the host's root over 9p"),
    ("9P_FS_POSIX_ACL", "the host's root over 9p"),
    ("FUSE_FS", "virtiofs"),
    ("VIRTIO_FS", "the host's root over virtiofs"),
    ("OVERLAY_FS", "vng's writable overlays"),
    ("CONFIGFS_FS", "configfs (nvmet)"),
    ("NET", "networking"),
    ("INET", "IPv4"),
    ("IPV6", "IPv6"),
    ("IP_MULTICAST", "multicast (UDP bearers' discovery)"),
    ("UNIX", "Unix sockets"),
    ("PACKET", "AF_PACKET: tcpdump, scapy, labkit's captures"),
    ("INET_DIAG", "ss"),
    ("INET_TCP_DIAG", "ss"),
    ("INET_UDP_DIAG", "ss"),
    ("UNIX_DIAG", "ss"),
    ("NETDEVICES", "network devices"),
    ("NET_CORE", "network devices"),
    ("NAMESPACES", "namespaces"),
    ("NET_SCHED", "tc qdiscs"),
    ("VXLAN", "labs that span kernels (labkit.lab.span)"),
    ("CRYPTO_AES", "kTLS, TIPC encryption"),
    ("CRYPTO_GCM", "kTLS, TIPC encryption"),
    ("CRYPTO_CHACHA20POLY1305", "kTLS ChaCha20-Poly1305"),
    ("CRYPTO_SHA256", "TLS, NFS"),
)

_LINE = re.compile(r"^(CONFIG_\w+)=(.*)$|^# (CONFIG_\w+) is not set$")


def _sym(name: str) -> str:
    return name if name.startswith("CONFIG_") else f"CONFIG_{name}"


def feature_symbols() -> dict[str, str]:
    """Config symbol -> what needs it, from the feature registry (not a second list)."""
    out: dict[str, str] = {"CONFIG_NET_NS": "lab engine (network namespaces)"}
    for cap, (_, symbols) in doctor.capabilities().items():
        for s in symbols:
            out.setdefault(_sym(s), f"capability {cap}")
    for f in features.all_features():
        for s in getattr(f, "kconfig", ()):
            out.setdefault(_sym(s), f"feature {f.key}")
    return out


def base_fragment() -> str:
    lines = ["# labkit base: a virtme-ng guest (make allnoconfig + these)"]
    lines += [f"CONFIG_{s}=y" for s, _ in BASE]
    return "\n".join(lines) + "\n"


def features_fragment() -> str:
    lines = ["# labkit features (from the feature registry)"]
    lines += [f"{s}=y" for s in sorted(feature_symbols())]
    return "\n".join(lines) + "\n"


def parse(text: str, origin: str = "fragment") -> dict[str, str]:
    """A fragment's assignments: CONFIG_X -> value ('n' for "is not set").

    A line that is neither an assignment, a "not set" comment, a comment nor blank is
    bad input, named by file and line.
    """
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = _LINE.match(line)
        if m:
            if m.group(1):
                out[m.group(1)] = m.group(2)
            else:
                out[m.group(3)] = "n"
        elif line and not line.startswith("#"):
            raise UsageError(
                f"{origin}:{n}: {raw!r} is not a kernel config line.",
                hint="A fragment holds lines like CONFIG_TIPC=y or "
                "`# CONFIG_DEBUG_INFO is not set`, as in a .config file.",
            )
    return out


def read_fragment(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"Cannot read the config fragment {path}: {exc.strerror}.",
                         hint="Give a file of CONFIG_X=y lines with --config.") from exc
    parse(text, str(path))
    return text


def wanted(user_fragments: list[str]) -> dict[str, tuple[str, str]]:
    """Every symbol the build asks for: CONFIG_X -> (value, who asked); user's win."""
    out: dict[str, tuple[str, str]] = {}
    for s, why in BASE:
        out[f"CONFIG_{s}"] = ("y", f"labkit base: {why}")
    for s, why in feature_symbols().items():
        out[s] = ("y", why)
    for i, text in enumerate(user_fragments, 1):
        for s, v in parse(text).items():
            out[s] = (v, f"your fragment #{i}")
    return out


def unmet(config_text: str, asked: dict[str, tuple[str, str]], srctree: Path) -> list[str]:
    """What the final .config does not have as asked, each with the reason found."""
    final = parse_config(config_text)
    problems = []
    for sym, (value, who) in asked.items():
        got = final.get(sym, "n")
        if got == value or (value == "n" and got == "n"):
            continue
        deps = _dependencies(srctree, sym.removeprefix("CONFIG_"))
        if deps is None:
            why = "this kernel has no such option"
        else:
            missing = [d for d in deps if final.get(f"CONFIG_{d}", "n") == "n"]
            why = (f"it depends on {', '.join('CONFIG_' + d for d in missing)}, which "
                   "is not set" if missing else "its dependencies or a choice overrode it")
        problems.append(f"{sym}={value} ({who}) ended {got}: {why}")
    return problems


def parse_config(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m and m.group(1):
            out[m.group(1)] = m.group(2)
    return out


_KCONFIG_CACHE: dict[Path, dict[str, list[str]]] = {}


def _dependencies(srctree: Path, name: str) -> list[str] | None:
    """Symbols named in `depends on` of `config NAME` anywhere in the tree's Kconfig files
    (None when no Kconfig defines it)."""
    index = _KCONFIG_CACHE.get(srctree)
    if index is None:
        index = {}
        for kf in srctree.rglob("Kconfig*"):
            current = None
            try:
                lines = kf.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                m = re.match(r"\s*(?:menu)?config\s+(\w+)\s*$", line)
                if m:
                    current = m.group(1)
                    index.setdefault(current, [])
                    continue
                if current and re.match(r"\s*depends on\s", line):
                    index[current] += re.findall(r"\b([A-Z0-9_]{2,})\b",
                                                 line.split("on", 1)[1])
                elif re.match(r"\s*(?:endmenu|endif|menu|if|choice|source)\b", line):
                    current = None
        _KCONFIG_CACHE[srctree] = index
    deps = index.get(name)
    if deps is None:
        return None
    return list(dict.fromkeys(d for d in deps if d not in ("y", "m", "n")))
