"""NVMe/TCP with TLS 1.3 PSK between two lab nodes: the kernel target (nvmet) in one, the
kernel host (nvme-tcp) in the other, the PSK in the ".nvme" keyring.

Where the kernel puts the sockets decides where the handshake daemons must run (the
upcall is per namespace): the target's listener belongs to the namespace of the process
that links the subsystem to the port in configfs, and the host's queues to the namespace
of the process that writes the connect options to /dev/nvme-fabrics. Both are done here
from a thread inside the node. Reconnects are different: the host's error recovery runs
in a kworker, whose sockets go to the root namespace, where no lab route and no daemon
exist. So the lab connects with ctrl_loss_tmo=0: a controller that loses its connection
is removed rather than retried from the wrong namespace, and the lab reconnects it from
the node (`reconnect`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from labkit.base import netns
from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.features.handshake import keyring
from labkit.features.handshake.kmods import ensure_configfs, modprobe
from labkit.features.handshake.uapi import NVME_KEYRING, NVME_PSK_TYPE

FABRICS = "/dev/nvme-fabrics"
NVME_CLASS = "/sys/class/nvme"
HOST_MODULES = ("nvme-tcp",)
TARGET_MODULES = ("nvmet-tcp",)
PSK_LEN = 32  # SHA-256 retained PSK ("NVMe0R01"): 32 bytes
NQN_PREFIX = "nqn.2014-08.org.labkit"


def subnqn(lab: str, node: str) -> str:
    return f"{NQN_PREFIX}:{lab}.{node}"


def hostnqn(lab: str, node: str) -> str:
    return f"{NQN_PREFIX}:{lab}.{node}"


def hostid(nqn: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, nqn))


def psk_identity(host: str, sub: str) -> str:
    """TP 8018 identity of a retained (configured) PSK with SHA-256: what 6.12's host looks
    up by default (nvme_tls_psk_default) and what the target finds in the keyring."""
    return f"NVMe0R01 {host} {sub}"


# -- the PSK -----------------------------------------------------------------------------


def nvme_keyring() -> int:
    ring = keyring.keyring_named(NVME_KEYRING)
    if ring is None:
        modprobe("nvme-keyring")
        ring = keyring.keyring_named(NVME_KEYRING)
    if ring is None:
        raise LabkitError(f"the kernel has no {NVME_KEYRING} keyring.",
                          hint="It comes with the nvme-keyring module (CONFIG_NVME_KEYRING).")
    return ring


def add_psk(identity: str, key: bytes | None = None) -> int:
    """The PSK (random unless given) under this identity in .nvme; its serial."""
    return keyring.add_readable(NVME_PSK_TYPE, identity, key or secrets.token_bytes(PSK_LEN),
                                nvme_keyring())


def remove_psk(identity: str) -> int:
    """Invalidate every .nvme key with this identity; how many there were."""
    gone = 0
    for info in keyring.proc_keys():
        if info.type == NVME_PSK_TYPE and info.description == identity and info.live:
            gone += keyring.invalidate(info.serial)
    return gone


def psk_present(identity: str) -> bool:
    return any(k.type == NVME_PSK_TYPE and k.description == identity and k.live
               for k in keyring.proc_keys())


# -- the target (configfs) -------------------------------------------------------------


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


@dataclass
class Target:
    lab: str
    node: str
    ns: str
    address: str
    port: int
    tls: bool
    backing: str  # file the namespace serves (tmpfs)
    allowed_host: str

    @property
    def nqn(self) -> str:
        return subnqn(self.lab, self.node)


def _root() -> str:
    return os.path.join(ensure_configfs(), "nvmet")


def free_port_id() -> int:
    used = {int(p) for p in os.listdir(os.path.join(_root(), "ports")) if p.isdigit()}
    return next(i for i in range(1, 65535) if i not in used)


def make_backing(path: str, size_mb: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size_mb << 20)
    finally:
        os.close(fd)


def start_target(t: Target, size_mb: int) -> int:
    """Subsystem, namespace (file-backed), host ACL, port; the port's listener is made in
    the target's namespace. Returns the configfs port id."""
    modprobe(*TARGET_MODULES)
    root = _root()
    make_backing(t.backing, size_mb)
    sub = os.path.join(root, "subsystems", t.nqn)
    os.makedirs(sub, exist_ok=True)
    host = os.path.join(root, "hosts", t.allowed_host)
    os.makedirs(host, exist_ok=True)
    _write(os.path.join(sub, "attr_allow_any_host"), "0")
    link = os.path.join(sub, "allowed_hosts", t.allowed_host)
    if not os.path.lexists(link):
        os.symlink(host, link)
    ns1 = os.path.join(sub, "namespaces", "1")
    os.makedirs(ns1, exist_ok=True)
    _write(os.path.join(ns1, "device_path"), t.backing)
    _write(os.path.join(ns1, "buffered_io"), "1")  # tmpfs has no O_DIRECT
    _write(os.path.join(ns1, "enable"), "1")
    port_id = free_port_id()
    port = os.path.join(root, "ports", str(port_id))
    os.makedirs(port)
    for attr, value in (("addr_trtype", "tcp"), ("addr_adrfam",
                        "ipv6" if ":" in t.address else "ipv4"),
                        ("addr_traddr", t.address), ("addr_trsvcid", str(t.port))):
        _write(os.path.join(port, attr), value)
    if t.tls:
        _write(os.path.join(port, "addr_tsas"), "tls1.3")
        _write(os.path.join(port, "addr_treq"), "required")
    with netns.entered(t.ns):  # nvmet_tcp_add_port(): the listener's namespace is ours
        os.symlink(sub, os.path.join(port, "subsystems", t.nqn))
    return port_id


def stop_target(lab: str, node: str) -> list[str]:
    """Remove the target's port(s), subsystem, namespace and host entries (found by NQN,
    so a lost record still cleans up); what was removed."""
    root = os.path.join(ensure_configfs(), "nvmet")
    nqn = subnqn(lab, node)
    removed: list[str] = []
    if not os.path.isdir(root):
        return removed
    ports = os.path.join(root, "ports")
    for pid in os.listdir(ports):
        link = os.path.join(ports, pid, "subsystems", nqn)
        if os.path.lexists(link):
            os.unlink(link)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(ports, pid))
            removed.append(f"port {pid}")
    sub = os.path.join(root, "subsystems", nqn)
    if os.path.isdir(sub):
        ns1 = os.path.join(sub, "namespaces", "1")
        if os.path.isdir(ns1):
            with contextlib.suppress(OSError):
                _write(os.path.join(ns1, "enable"), "0")
            os.rmdir(ns1)
        allowed = os.path.join(sub, "allowed_hosts")
        for h in os.listdir(allowed):
            os.unlink(os.path.join(allowed, h))
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, "hosts", h))
        os.rmdir(sub)
        removed.append(f"subsystem {nqn}")
    return removed


# -- the host ----------------------------------------------------------------------------


@dataclass
class Connect:
    ns: str
    address: str
    port: int
    subnqn: str
    hostnqn: str
    tls: bool
    io_queues: int = 1
    duplicate: bool = False

    def options(self) -> str:
        opts = ["transport=tcp", f"traddr={self.address}", f"trsvcid={self.port}",
                f"nqn={self.subnqn}", f"hostnqn={self.hostnqn}", f"hostid={hostid(self.hostnqn)}",
                f"nr_io_queues={self.io_queues}", "ctrl_loss_tmo=0", "reconnect_delay=1"]
        if self.tls:
            opts.append("tls")
        if self.duplicate:
            opts.append("duplicate_connect")
        return ",".join(opts)


class ConnectFailed(LabkitError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message, hint="See `labkit handshake status` and the kernel log "
                                       "(`dmesg | grep nvme`).")
        self.errno = code


def connect(c: Connect) -> int:
    """Write the options to /dev/nvme-fabrics from inside the host node; the new
    controller's instance (nvmeN). ConnectFailed with the errno the kernel returned."""
    modprobe(*HOST_MODULES)
    with netns.entered(c.ns):
        fd = os.open(FABRICS, os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                os.write(fd, c.options().encode())
            except OSError as exc:
                raise ConnectFailed(exc.errno or errno.EIO,
                                    f"connecting to {c.subnqn} at {c.address}:{c.port} "
                                    f"failed: {os.strerror(exc.errno or errno.EIO)}.") from None
            answer = os.read(fd, 256).decode()
        finally:
            os.close(fd)
    match = re.search(r"instance=(\d+)", answer)
    if not match:
        raise LabkitError(f"/dev/nvme-fabrics answered {answer!r}, not a controller.")
    return int(match.group(1))


def ctrl_attr(instance: int, attr: str) -> str:
    try:
        with open(os.path.join(NVME_CLASS, f"nvme{instance}", attr)) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def controllers(sub: str) -> list[int]:
    """Instances of the controllers connected to this subsystem."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NVME_CLASS):
            if re.fullmatch(r"nvme\d+", name) and ctrl_attr(int(name[4:]), "subsysnqn") == sub:
                out.append(int(name[4:]))
    return sorted(out)


def disconnect(instance: int) -> bool:
    path = os.path.join(NVME_CLASS, f"nvme{instance}", "delete_controller")
    try:
        _write(path, "1")
    except OSError:
        return False
    return True


def disconnect_all(sub: str, timeout: float = 30.0) -> list[int]:
    gone = []
    for inst in controllers(sub):
        if disconnect(inst):
            gone.append(inst)
    wait_until(lambda: not controllers(sub), timeout, f"the controllers of {sub} to go")
    return gone


def block_device(sub: str) -> str | None:
    """/dev/nvmeXnY of the subsystem's namespace (the multipath head when there is one)."""
    with contextlib.suppress(FileNotFoundError):
        for dev in sorted(os.listdir("/sys/block")):
            if not re.fullmatch(r"nvme\d+n\d+", dev):
                continue
            for attr in ("device/subsysnqn", "device/../subsysnqn"):
                with contextlib.suppress(OSError), \
                        open(os.path.join("/sys/block", dev, attr)) as fh:
                    if fh.read().strip() == sub:
                        return f"/dev/{dev}"
    return None


def wait_live(instance: int, sub: str, timeout: float = 60.0) -> str:
    """Until the controller is live and its block device exists; the device path."""
    wait_until(lambda: ctrl_attr(instance, "state") == "live", timeout,
               f"NVMe controller nvme{instance} to be live",
               detail=lambda: f"state {ctrl_attr(instance, 'state') or 'gone'}")
    return wait_until(lambda: block_device(sub), timeout,
                      f"the block device of {sub} to appear")


# -- reading and writing through the device ---------------------------------------------


def direct_io(path: str, offset: int, data: bytes | None = None, size: int = 0) -> bytes:
    """O_DIRECT read (size bytes) or write (data) at offset: the bytes cross the fabric,
    not the page cache."""
    import mmap

    length = len(data) if data is not None else size
    buf = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT wants
    flags = (os.O_RDWR if data is not None else os.O_RDONLY) | os.O_DIRECT | os.O_CLOEXEC
    fd = os.open(path, flags)
    try:
        if data is not None:
            buf.write(data)
            done = os.pwritev(fd, [buf], offset)
            os.fsync(fd)
            return data[:done]
        got = os.preadv(fd, [buf], offset)
        return bytes(buf[:got])
    finally:
        os.close(fd)
        buf.close()


def file_io(path: str, offset: int, data: bytes | None = None, size: int = 0) -> bytes:
    """The target side: read or write the backing file (through the page cache nvmet's
    buffered I/O uses too)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if data is not None:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
            return data
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def ulp_sockets(ns: str, port: int) -> list[str]:
    """`ss -tni` lines of established connections to/from the NVMe port in a namespace, as
    iproute2 prints them (tcp-ulp-tls ... when kTLS is on)."""
    import subprocess

    res = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tniH", "state", "established",
                          f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, timeout=30)
    lines = res.stdout.splitlines()
    out, cur = [], ""
    for line in lines:
        if line and not line[0].isspace() and cur:
            out.append(cur)
            cur = line
        else:
            cur = (cur + " " + line.strip()).strip()
    if cur:
        out.append(cur)
    return out


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 3)
