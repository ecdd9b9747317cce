"""Links and LANs between nodes on different kernels: VXLAN over the VMs' backplane.

Each VM of a lab that spans kernels builds its own nodes (labkit.lab.build with `here`).
A link whose ends sit in two VMs becomes, in each VM, a VXLAN device sent to the other
VM's backplane address and moved into the local node under the endpoint's name, so the
node sees an ordinary Ethernet interface. A LAN with members in several VMs gets, in
each VM, one VXLAN port on its bridge that floods to every other VM holding members
(head-end replication; the bridge never sends a frame back out of the port it came in
by, so there are no loops). The VXLAN devices keep their UDP sockets in the guest's root
namespace, on the backplane: the lab's namespaces never see the underlay.

Why VXLAN over a bridged TAP backplane rather than a qemu socket per link: the VMs boot
before a lab is known (labs share a kernel's VM), so links cannot be qemu devices; and
this path stays in the kernels (TAP, bridge, VXLAN) with no user-space hop.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from labkit.base import netns
from labkit.errors import LabkitError, Loc
from labkit.lab import names
from labkit.topology.model import Endpoint, Segment

BACKPLANE_DEV = "lkbp0"  # the guest's backplane NIC (named by the VM agent)
VXLAN_PORT = 4789
DEFAULT_MTU = 1500  # what a veth endpoint would have


@dataclass(frozen=True)
class Span:
    """This kernel's view of a lab spread over VMs."""

    lab: str
    me: str  # this VM
    where: dict[str, str]  # node -> VM holding it
    peers: dict[str, str]  # VM -> its backplane address

    def vms_of(self, seg: Segment) -> set[str]:
        return {self.where[ep.node] for ep in seg.endpoints}

    def spans(self, seg: Segment) -> bool:
        vms = self.vms_of(seg)
        return self.me in vms and len(vms) > 1

    def local(self, ep: Endpoint) -> bool:
        return self.where[ep.node] == self.me


def vni(lab: str, segment: str) -> int:
    """A VXLAN id per (lab, segment): labs share the backplane, so ids must not collide."""
    import hashlib  # here: loading OpenSSL's libcrypto took 0.2 s of every lab VM's start

    digest = hashlib.sha1(f"{lab}/{segment}".encode()).digest()
    return int.from_bytes(digest[:3], "big") or 1


def _ip(args: list[str], what: str, loc: Loc | None) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise LabkitError(f"the kernel refused to {what}: {res.stderr.strip()}.",
                          hint="Is the VM on the backplane? `labkit vm list` shows its "
                               "backplane address.", loc=loc)


def _vxlan(span: Span, seg: Segment, tmp: str, remote: str | None) -> None:
    local = span.peers[span.me]
    cmd = ["link", "add", tmp, "type", "vxlan", "id", str(vni(span.lab, seg.name)),
           "local", local, "dstport", str(VXLAN_PORT), "dev", BACKPLANE_DEV]
    if remote is not None:
        cmd += ["remote", remote]
    _ip(cmd, f"create the tunnel for {seg.name} across kernels", seg.loc)


def carry_link(span: Span, link: Segment) -> None:
    """The local end of a link whose other end is in another VM."""
    mine, other = (link.endpoints if span.local(link.endpoints[0])
                   else link.endpoints[::-1])
    tmp = f"lkvx{vni(span.lab, link.name):06x}"
    _vxlan(span, link, tmp, span.peers[span.where[other.node]])
    ns = names.node_ns(span.lab, mine.node)
    _ip(["link", "set", tmp, "netns", ns], f"move the tunnel into {mine.node}", mine.loc)
    _ip(["-n", ns, "link", "set", tmp, "name", mine.iface, "mtu",
         str(mine.mtu or DEFAULT_MTU)], f"name the tunnel {mine.label}", mine.loc)


def carry_lan(span: Span, lan: Segment) -> None:
    """A port on this VM's bridge of a LAN that has members in other VMs too."""
    tag = f"{vni(span.lab, lan.name):06x}"
    tmp, port = f"lkvx{tag}", f"vx{tag}"
    _vxlan(span, lan, tmp, None)
    lan_ns = names.lan_ns(span.lab)
    _ip(["link", "set", tmp, "netns", lan_ns], f"move the tunnel of LAN {lan.name}", lan.loc)
    _ip(["-n", lan_ns, "link", "set", tmp, "name", port], f"name the tunnel {port}", lan.loc)
    for vm in sorted(span.vms_of(lan) - {span.me}):
        with netns.entered(lan_ns):
            res = subprocess.run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", port,
                                  "dst", span.peers[vm]], capture_output=True, text=True,
                                 check=False)
        if res.returncode != 0:
            raise LabkitError(f"the kernel refused to flood LAN {lan.name} to VM {vm}: "
                              f"{res.stderr.strip()}.", loc=lan.loc)
    _ip(["-n", lan_ns, "link", "set", port, "master", lan.name, "up"],
        f"attach the tunnel to LAN {lan.name}", lan.loc)
