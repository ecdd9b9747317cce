"""TipcNetlink: TIPC configuration of one network namespace over the TIPCv2 genl family.

The client owns a plain NETLINK_GENERIC socket, created while this thread is inside the
lab namespace (so it can never open or create another namespace), and exchanges the
messages of messages.py over it: send one request, read replies until the ack or the end
of the dump, bounded by a timeout. pyroute2 supplies only the message classes, not its
socket machinery, so no private pyroute2 API is involved.

The socket and the request/reply loop are the one generic netlink transport
(labkit.base.genl). Keys are secrets: error messages never echo a request, and
NETLINK_CAP_ACK (set by the transport) stops the kernel from copying the request (and so
the key) back into its error replies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from labkit.base import genl
from labkit.base import netns as labnetns
from labkit.base.wait import wait_until
from labkit.errors import LabkitError, MissingFeatureError
from labkit.features.tipc import messages as m
from labkit.features.tipc.attributes import tipcmsg
from labkit.features.tipc.identity import KEY_LENGTHS, either, node_id_bytes, node_id_str
from labkit.features.tipc.uapi import (
    AEAD_ALG,
    COMMAND_NAMES,
    FAMILY,
    MAX_BEARERS,
    NET_ID_MAX,
    NET_ID_MIN,
    SIOCGETNODEID,
    TIPC_NL_BEARER_ADD,
    TIPC_NL_BEARER_ENABLE,
    TIPC_NL_BEARER_GET,
    TIPC_NL_KEY_FLUSH,
    TIPC_NL_KEY_SET,
    TIPC_NL_LINK_GET,
    TIPC_NL_NAME_TABLE_GET,
    TIPC_NL_NET_GET,
    TIPC_NL_NET_SET,
    TIPC_NL_NODE_GET,
    UDP_PORT,
)

T = TypeVar("T")

REPLY_TIMEOUT = 30.0  # s: the kernel answers at once; this bounds a wedged exchange


def _open_raw(netns: str | None) -> socket.socket:
    """A NETLINK_GENERIC socket of the one transport (labkit.base.genl) in the named
    namespace (never creating one)."""
    if netns is not None and not labnetns.exists(netns):
        raise LabkitError(
            f"there is no network namespace {netns!r}.",
            hint="Is the lab up? `labkit status` lists its namespaces.",
        )
    return genl.open_socket(REPLY_TIMEOUT, netns)


class TipcNetlink:
    """TIPC configuration of one network namespace through the TIPCv2 genl family.

    Use as a context manager; every method raises LabkitError with the kernel's own
    error text when the kernel refuses. One request at a time (not thread-safe).
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._raw: socket.socket | None = None
        self._family = 0
        self._seq = int.from_bytes(os.urandom(4), "big") >> 2  # not `secrets`: see keys.generate

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> TipcNetlink:
        if self._raw is not None:
            return self
        self._raw = _open_raw(self.netns)
        try:
            self._family = self._resolve_family()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()

    def __enter__(self) -> TipcNetlink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._raw is not None else "closed"
        return f"TipcNetlink(netns={self.netns!r}, {state})"

    @property
    def family_id(self) -> int:
        self._sock()
        return self._family

    def _sock(self) -> socket.socket:
        if self._raw is None:
            raise RuntimeError("TipcNetlink is not open; use it as a context manager")
        return self._raw

    # -- the exchange ------------------------------------------------------------------

    def _resolve_family(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        try:
            family, _ = _transport(lambda: genl.resolve(self._sock(), FAMILY, self._seq),
                                   self._where())
        except genl.NoFamily:
            raise MissingFeatureError(
                f"the kernel has no TIPC netlink family ({FAMILY}).",
                hint="Load it with `modprobe tipc`, or run the lab in the VM "
                "(`labkit vm run`) if this kernel has no TIPC.",
            ) from None
        except NetlinkError as exc:
            raise tipc_error(exc, 0, self.netns) from None
        return family

    def _exchange(self, msg: Any, msg_type: int, flags: int, reply_class: type) -> list[Any]:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        return exchange(self._sock(), msg, msg_type, flags, reply_class, self._seq,
                        self._where())

    def _request(self, msg: tipcmsg, dump: bool = False) -> list[Any]:
        flags = genl.NLM_F_REQUEST | (genl.NLM_F_DUMP if dump else genl.NLM_F_ACK)
        cmd = msg["cmd"]
        try:
            return self._exchange(msg, self.family_id, flags, tipcmsg)
        except NetlinkError as exc:
            raise tipc_error(exc, cmd, self.netns) from None

    def _in_ns(self, fn: Callable[[], T]) -> T:
        if self.netns is None:
            return fn()
        with labnetns.entered(self.netns):
            return fn()

    # -- configuration -----------------------------------------------------------------

    def set_net(self, net_id: int | None = None, node_id: bytes | str | None = None) -> None:
        """NET_SET: the cluster (net) id and this node's 128-bit identity.

        Must come before any bearer: once a bearer has given the node an address the
        kernel answers EPERM. During the first second after a bearer is enabled (the
        address trial) the kernel still accepts a new net id, but the bearer keeps
        advertising the old one and no link comes up: so any enabled bearer is refused
        here, unless nothing would change (so setting up a lab twice is harmless). The
        kernel silently keeps an identity that was already set, so the identity is read
        back and a different one is an error.
        """
        msg = m.build_net_set(net_id, node_id)
        enabled = [b["name"] for b in self.bearers()]
        if enabled:
            have = self.net()
            if (net_id is None or net_id == have["net_id"]) and (
                node_id is None or node_id_bytes(node_id) == have["node_id"]
            ):
                return
            raise LabkitError(
                f"cannot change the TIPC net id or identity{self._where()}: bearer(s) "
                f"{', '.join(enabled)} already enabled.",
                hint=NET_SET_HINT,
            )
        self._request(msg)
        if node_id is not None:
            want = node_id_bytes(node_id)
            have = self.net()["node_id"]
            if have != want:
                raise LabkitError(
                    f"the TIPC node identity{self._where()} is already "
                    f"{node_id_str(have)!r}; the kernel kept it instead of "
                    f"{node_id_str(want)!r}.",
                    hint="An identity is set once per namespace: set it before enabling "
                    "bearers, or recreate the namespace.",
                )

    def enable_bearer_eth(
        self, ifname: str, priority: int | None = None, domain: int | None = None
    ) -> str:
        """BEARER_ENABLE media eth on an interface of this namespace; returns 'eth:IFNAME'."""
        self._request(m.build_bearer_enable_eth(ifname, priority, domain))
        return f"eth:{ifname}"

    def enable_bearer_udp(
        self,
        name: str,
        local: tuple[str, int] | str,
        remote: tuple[str, int] | str | None = None,
        priority: int | None = None,
        domain: int | None = None,
    ) -> str:
        """BEARER_ENABLE media udp; returns 'udp:NAME'.

        local/remote are (ip, port) or just ip (the TIPC port); an IPv6 link-local address
        takes its interface as 'fe80::1%veth0'. Without remote, iproute2's default:
        multicast derived from the net id (messages.default_udp_remote). A unicast remote
        makes a replicast bearer; add more peers with add_udp_remote.
        """
        lip, lport = _ip_port(local)
        lraw = self._sockaddr(lip, lport)
        if remote is None:
            remote = m.default_udp_remote(self.net()["net_id"], ipv6=len(lraw) > 16)
        rip, rport = _ip_port(remote)
        rraw = self._sockaddr(rip, rport)
        self._request(m.build_bearer_enable_udp(name, lraw, rraw, priority, domain))
        return m.udp_bearer_name(name)

    def add_udp_remote(self, name: str, remote: tuple[str, int] | str) -> None:
        """BEARER_ADD: one more unicast peer for a udp bearer (not for a multicast one)."""
        rip, rport = _ip_port(remote)
        self._request(m.build_bearer_add(name, self._sockaddr(rip, rport)))

    def set_key(
        self,
        key: bytes | None,
        *,
        master: bool = False,
        node_id: bytes | str | None = None,
        rekeying: int | str | None = None,
        alg: str = AEAD_ALG,
    ) -> None:
        """KEY_SET: a cluster key, the master key, or a per-node key (see build_key_set).

        key = AES key + salt. Needs the node identity set. The key bytes never appear in
        errors or logs.
        """
        self._request(
            m.build_key_set(key, master=master, node_id=node_id, rekeying=rekeying, alg=alg)
        )

    def flush_keys(self) -> None:
        """KEY_FLUSH: remove every TX and RX key of this node."""
        self._request(m.build_simple(TIPC_NL_KEY_FLUSH))

    # -- state -------------------------------------------------------------------------

    def net(self) -> dict[str, Any]:
        """NET_GET: {net_id, node_id (16 bytes), identity (printable), hash}."""
        for reply in self._request(m.build_simple(TIPC_NL_NET_GET), dump=True):
            parsed = m.parse_net(reply)
            if parsed is not None:
                return parsed
        raise LabkitError(f"the kernel sent no TIPC net information{self._where()}.")

    def own_address(self) -> int:
        """This node's 32-bit address (0 until a bearer ended the address trial)."""

        def get() -> int:
            with socket.socket(socket.AF_TIPC, socket.SOCK_RDM) as s:
                # CPython gives (TIPC_ADDR_ID, node, ref, 0, scope)
                return int(s.getsockname()[1])

        return self._in_ns(get)

    def bearers(self) -> list[dict[str, Any]]:
        """BEARER_GET dump: name, priority, tolerance, window, [mtu, udp{local,remote}]."""
        out = [m.parse_bearer(r) for r in self._request(m.build_simple(TIPC_NL_BEARER_GET),
                                                         True)]
        return [b for b in out if b is not None]

    def links(self) -> list[dict[str, Any]]:
        """LINK_GET dump: the broadcast link and every unicast link with its counters."""
        out = [m.parse_link(r) for r in self._request(m.build_simple(TIPC_NL_LINK_GET), True)]
        return [link for link in out if link is not None]

    def nodes(self) -> list[dict[str, Any]]:
        """NODE_GET dump: {addr, up, identity} of every peer node this node knows."""
        out = []
        for reply in self._request(m.build_simple(TIPC_NL_NODE_GET), dump=True):
            node = m.parse_node(reply)
            if node is None:
                continue
            raw = self.node_id_of(node["addr"]) if node["addr"] else None
            out.append({**node, "identity": node_id_str(raw) if raw else None})
        return out

    def node_id_of(self, addr: int) -> bytes | None:
        """The 16-byte identity behind a node address (SIOCGETNODEID), None if unknown."""

        def get() -> bytes | None:
            req = struct.pack("=I16s", addr, b"")
            with socket.socket(socket.AF_TIPC, socket.SOCK_RDM) as s:
                try:
                    res = fcntl.ioctl(s.fileno(), SIOCGETNODEID, req)
                except OSError:
                    return None
            raw = res[4:20]
            return raw if any(raw) else None

        return self._in_ns(get)

    def name_table(self) -> list[dict[str, Any]]:
        """NAME_TABLE_GET dump: {type, lower, upper, scope, node, port, key} per binding."""
        out = [
            m.parse_publication(r)
            for r in self._request(m.build_simple(TIPC_NL_NAME_TABLE_GET), dump=True)
        ]
        return [p for p in out if p is not None]

    def wait_links_up(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Until at least count unicast links are up; LabkitError after timeout s."""

        def unicast() -> list[dict[str, Any]]:
            return [lk for lk in self.links() if not lk["broadcast"]]

        def enough() -> list[dict[str, Any]] | None:
            links = unicast()
            return links if sum(1 for lk in links if lk["up"]) >= count else None

        def seen() -> str:
            return ", ".join(f"{lk['name']} ({'up' if lk['up'] else 'down'})"
                             for lk in unicast()) or "no links"

        return wait_until(
            enough, timeout, f"{count} TIPC link(s) to come up{self._where()}",
            interval=0.1, detail=seen,
            hint="Check that both ends share the net id, that bearers are enabled on "
                 "connected interfaces, and that keys (if any) match.")

    # -- helpers -----------------------------------------------------------------------

    def _where(self) -> str:
        return f" in namespace {self.netns}" if self.netns else ""

    def _sockaddr(self, ip: str, port: int) -> bytes:
        addr, _, scope = ip.partition("%")  # 'fe80::1%veth0'
        scope_id = 0
        if scope:
            scope_id = int(scope) if scope.isdigit() else self._in_ns(
                lambda: socket.if_nametoindex(scope)
            )
        return m.sockaddr(addr, port, scope_id)


def exchange(sock: socket.socket, msg: Any, msg_type: int, flags: int, reply_class: type,
             seq: int, where: str = "") -> list[Any]:
    """Send one request on a netlink socket (made by _open_raw) through the transport
    (labkit.base.genl.exchange), each reply decoded as reply_class. A kernel refusal raises
    NetlinkError (errno and ext-ack text only)."""
    raw = m.encode(msg, msg_type, flags, seq)
    out = []
    for reply in _transport(lambda: genl.exchange(sock, raw, seq), where):
        decoded = reply_class(reply.raw)
        decoded.decode()
        out.append(decoded)
    return out


def _transport(call: Callable[[], T], where: str) -> T:
    """The transport's outcomes in this client's terms: a refusal is pyroute2's
    NetlinkError (tipc_error explains it), silence or garbage a LabkitError."""
    try:
        return call()
    except genl.KernelRefused as exc:
        if exc.errno == errno.ENOBUFS:  # the socket overran: not the kernel refusing
            raise
        raise NetlinkError(exc.errno, exc.strerror) from None
    except genl.NoAnswer:
        raise LabkitError(f"the kernel sent no complete answer{where} within "
                          f"{REPLY_TIMEOUT:g} s.") from None
    except genl.BadReply as exc:
        raise LabkitError(f"{exc}{where}.") from None


def _ip_port(value: tuple[str, int] | str) -> tuple[str, int]:
    if isinstance(value, str):
        return value, UDP_PORT
    ip, port = value
    return ip, int(port)


# ---------------------------------------------------------------------------------------
# Kernel errors, explained


@dataclass(frozen=True)
class _Hint:
    cmd: int | None
    code: int
    text: str


NET_SET_HINT = (
    "Set the net id and identity before enabling bearers: once a bearer has given the "
    "node an address they are fixed until the namespace is recreated."
)

_HINTS = (
    _Hint(TIPC_NL_NET_SET, errno.EPERM, NET_SET_HINT),
    _Hint(TIPC_NL_NET_SET, errno.EINVAL, f"The net id must be {NET_ID_MIN}..{NET_ID_MAX}."),
    _Hint(TIPC_NL_BEARER_ENABLE, errno.ENODEV,
          "No such interface in this namespace (eth), or no interface holds the local IP "
          "address (udp)."),
    _Hint(TIPC_NL_BEARER_ENABLE, errno.EADDRINUSE,
          "The UDP port is taken: another bearer or socket in the namespace uses it."),
    _Hint(TIPC_NL_BEARER_ENABLE, errno.EINVAL,
          "Check the bearer name (eth:IFNAME, udp:NAME), that it is not already enabled, "
          f"that at most {MAX_BEARERS} bearers exist, and that local and remote UDP "
          "addresses share a family."),
    _Hint(TIPC_NL_BEARER_ADD, errno.EINVAL,
          "Remote addresses can only be added to a udp bearer with a unicast remote."),
    _Hint(TIPC_NL_KEY_SET, errno.EPERM,
          "The node has no identity yet: set it (set_net) before setting keys."),
    _Hint(TIPC_NL_KEY_SET, errno.ENODEV,
          "The kernel cannot load the cipher: is CONFIG_CRYPTO_GCM available?"),
    _Hint(TIPC_NL_KEY_SET, errno.EBUSY,
          "Every key slot is in use; flush the keys or wait for the pending key to settle."),
    _Hint(TIPC_NL_KEY_SET, errno.EKEYREJECTED,
          f"The key must be {either(KEY_LENGTHS)} bytes."),
    _Hint(None, errno.EPERM, "TIPC configuration needs CAP_NET_ADMIN in the namespace."),
)

ENOTSUPP = 524  # kernel-internal, seen by userspace when the algorithm is not supported


def tipc_error(exc: NetlinkError, cmd: int, netns: str | None) -> LabkitError:
    """A NetlinkError turned into a LabkitError with the kernel's words and a hint.

    Only the errno and the kernel's ext-ack text are used: nothing of the request
    (which may hold a key) goes into the message.
    """
    code = exc.code
    text = ""
    if len(exc.args) > 1 and exc.args[1] and exc.args[1] != os.strerror(code):
        text = str(exc.args[1])
    reason = os.strerror(code) if code != ENOTSUPP else "operation not supported"
    where = f" in namespace {netns}" if netns else ""
    what = COMMAND_NAMES.get(cmd, str(cmd))
    message = f"the kernel refused TIPC {what}{where}: {reason}"
    if text:
        message += f" ({text})"
    message += "."
    hint = next((h.text for h in _HINTS if h.code == code and h.cmd in (cmd, None)), "")
    if code == ENOTSUPP and cmd == TIPC_NL_KEY_SET:
        hint = f'The kernel only supports the "{AEAD_ALG}" algorithm.'
    return LabkitError(message, hint=hint)
