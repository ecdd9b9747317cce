"""labkit's own rtnetlink requests (labkit/base/rtnl.py) against this kernel, with
iproute2 as the oracle: what Rtnl made is what `ip -j` shows, and what it reads is what
`ip -j` reads; a refusal carries the kernel's errno and its own words."""

from __future__ import annotations

import errno
import json
import subprocess

import pytest

from labkit.base import netns
from labkit.base.rtnl import NetlinkError, Rtnl, bridge_data, kernel_error, peer_data

pytestmark = pytest.mark.needs_root


def ip_json(ns: str, *args: str) -> list[dict]:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out or "[]")


@pytest.fixture
def two_ns(scratch_ns: str):
    other = f"{scratch_ns}-b"
    netns.create(other)
    fd = netns.open_fd(other)
    try:
        yield scratch_ns, other, fd
    finally:
        import os

        os.close(fd)
        netns.delete(other)
    assert not netns.exists(other)


def test_builds_what_ip_shows(two_ns) -> None:
    ns, other, fd = two_ns
    with Rtnl(ns) as sock:
        sock.add_link("br0", "bridge", bridge_data())
        br = sock.index("br0")
        sock.set_link(br, up=True, alias="LAN x")
        sock.add_link("p1", "veth", peer_data("eth1", fd), master=br)
        sock.set_link(name="p1", up=True, mtu=1400)
        sock.add_addr(br, "198.18.7.1", 24)
        sock.add_addr(br, "fd00:1ab:7::1", 64, flags=0x02)  # IFA_F_NODAD
        sock.add_route("198.18.9.0/24", "198.18.7.2")
        sock.add_route("0.0.0.0/0", "198.18.7.3", oif=br)
        links = {link["ifname"]: link for link in sock.links()}
        addrs = sock.addrs()
    shown = {i["ifname"]: i for i in ip_json(ns, "-d", "link", "show")}
    assert shown["br0"]["linkinfo"]["info_kind"] == "bridge"
    assert shown["br0"]["linkinfo"]["info_data"]["stp_state"] == 0
    assert shown["br0"]["linkinfo"]["info_data"]["forward_delay"] == 0
    assert shown["br0"]["ifalias"] == "LAN x"
    assert shown["p1"]["master"] == "br0" and shown["p1"]["mtu"] == 1400
    assert [i["ifname"] for i in ip_json(other, "link", "show")] == ["lo", "eth1"]
    for name, link in links.items():  # reading: the same as ip reads
        assert link["index"] == shown[name]["ifindex"]
        assert link["mtu"] == shown[name]["mtu"]
        assert link["state"] in ("UNKNOWN", "DOWN", "LOWERLAYERDOWN", "UP")  # moves
        assert link["mac"] == shown[name]["address"]
        assert link["alias"] == shown[name].get("ifalias")
        assert link["kind"] == shown[name].get("linkinfo", {}).get("info_kind")
    assert links["p1"]["master"] == br and links["br0"]["master"] is None
    ip_addrs = {(a["ifindex"], f"{i['local']}/{i['prefixlen']}")
                for a in ip_json(ns, "addr", "show") for i in a["addr_info"]}
    assert set(addrs) == ip_addrs
    assert (br, "198.18.7.1/24") in ip_addrs and (br, "fd00:1ab:7::1/64") in ip_addrs
    routes = {r["dst"]: r.get("gateway") for r in ip_json(ns, "route", "show")}
    assert routes["198.18.9.0/24"] == "198.18.7.2" and routes["default"] == "198.18.7.3"


def test_a_refusal_says_why(scratch_ns: str) -> None:
    with Rtnl(scratch_ns) as sock:
        sock.add_link("d0", "bridge")
        idx = sock.index("d0")
        sock.add_addr(idx, "198.18.8.1", 24)  # control: the first time it is fine
        with pytest.raises(NetlinkError) as info:
            sock.add_addr(idx, "198.18.8.1", 24)
        assert info.value.errno == errno.EEXIST
        err = kernel_error(info.value, "add address 198.18.8.1/24 to d0")
        assert "the kernel refused to add address 198.18.8.1/24 to d0" in err.message
        assert "already exists" in err.hint
        with pytest.raises(NetlinkError) as info:  # the kernel's own words (extended ack)
            sock.add_link("d1", "no-such-kind")
        assert info.value.errno == errno.EOPNOTSUPP
        assert info.value.strerror == "Unknown device type"  # strerror's would differ
        with pytest.raises(NetlinkError) as info:
            sock.index("nope")
        assert info.value.errno == errno.ENODEV
        with pytest.raises(NetlinkError) as info:
            sock.add_route("198.18.99.0/24", "203.0.113.1")  # gateway not on any subnet
        assert info.value.errno == errno.ENETUNREACH
        assert info.value.strerror  # the kernel's text (or strerror's)
