"""The lab VMs' private network: one bridge in a namespace of its own that every lab VM's
second NIC joins, so labs can span kernels without the host's uplink ever seeing a frame.

qemu runs inside the namespace `lkvm-backplane` (its supervisor enters it), so the TAP it
opens for the backplane NIC is created there and bridged to `bp`; the host's root
namespace holds no lab device. Inside the guests, each VM's backplane NIC gets a ULA
address, and links or LANs whose members sit in different VMs become VXLAN tunnels over
it (labkit.lab.span). The namespace goes away with the last VM that used it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import subprocess
from collections.abc import Iterator

from labkit.base import netns
from labkit.base.wait import wait_until
from labkit.errors import LabkitError
from labkit.hosts.vm import paths

NS = "lkvm-backplane"  # not "lk-...": no lab may ever be named after it
BRIDGE = "bp"
MTU = 9000  # room for VXLAN headers around 1500-byte (and larger) lab frames
NETWORK = ipaddress.IPv6Network("fd6c:6b00:bb::/64")
VXLAN_PORT = 4789


def tap_name(vm: str) -> str:
    return "bp-" + hashlib.sha1(vm.encode()).hexdigest()[:10]


def mac(vm: str) -> str:
    digest = hashlib.sha1(b"backplane " + vm.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def address(index: int) -> str:
    return str(NETWORK.network_address + index)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Creating, joining and removing the backplane happen one at a time."""
    root = paths.state_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".backplane.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", "-n", NS, *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise LabkitError(f"the VM backplane: `ip -n {NS} {' '.join(args)}` failed: "
                          f"{res.stderr.strip()}.", hint="Check `dmesg`; is the tun/bridge "
                          "support of this kernel present (`labkit doctor`)?")
    return res


def ensure() -> None:
    """The namespace and its bridge (idempotent); the caller holds locked()."""
    if not netns.exists(NS):
        netns.create(NS)
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip("link", "set", BRIDGE, "mtu", str(MTU), "up")


def attach(vm: str, timeout: float) -> None:
    """Once qemu has created the VM's TAP, put it on the bridge."""
    tap = tap_name(vm)
    wait_until(lambda: _ip("link", "show", tap, check=False).returncode == 0, timeout,
               f"qemu to create the backplane device {tap}", interval=0.1)
    _ip("link", "set", tap, "mtu", str(MTU), "master", BRIDGE, "up")


def in_use() -> list[str]:
    """TAP devices on the bridge (one per running lab VM)."""
    res = _ip("-o", "link", "show", "master", BRIDGE, check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in res.stdout.splitlines()
            if line.strip()]


def remove_if_unused() -> bool:
    """Remove the namespace when no VM is on it any more; True if it was removed."""
    if not netns.exists(NS) or in_use():
        return False
    netns.delete(NS)
    return True
