"""One pair's kernel side in sockmap mode: its maps and programs, and joining two sockets.

The proxy process owns every fd here; when it exits (or is killed) the kernel frees the
programs and maps, since nothing else holds them (no pinning, no bpf_link).
"""

from __future__ import annotations

import os
import socket
import struct

from labkit.features.kproxy import bpfsys
from labkit.features.kproxy.programs import FLOW, MISSES, Counters, Rule, parser, verdict

SO_COOKIE = 57  # include/uapi/asm-generic/socket.h


def cookie(sock: socket.socket) -> bytes:
    """The socket's cookie as the maps' key (the bytes bpf_get_socket_cookie yields)."""
    return sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8)


class Sockmap:
    """Maps and programs of one pair; join(a, b) proxies two connected TCP sockets."""

    def __init__(self, rule: Rule | None, max_sockets: int = 1024, tag: str = "kp") -> None:
        self.rule = rule
        self.fds: list[int] = []
        try:
            self.peers = self._map(bpfsys.MAP_SOCKHASH, 8, 8, max_sockets, f"{tag}_peers")
            self.active = self._map(bpfsys.MAP_SOCKHASH, 8, 8, max_sockets, f"{tag}_active")
            self.flows = self._map(bpfsys.MAP_HASH, 8, FLOW.size, max_sockets, f"{tag}_flows")
            self.misses = self._map(bpfsys.MAP_ARRAY, 4, MISSES.size, 1, f"{tag}_misses")
            maps = {"peers": self.peers, "flows": self.flows, "misses": self.misses}
            # Programs are attached before any socket joins `active` (a socket added
            # first would never get them).
            self.verdict = self._prog(verdict(rule).encode(maps), "kp_verdict")
            bpfsys.prog_attach(self.active, self.verdict, bpfsys.SK_SKB_STREAM_VERDICT)
            if rule is not None:
                self.parser = self._prog(parser(rule).encode(maps), "kp_parser")
                bpfsys.prog_attach(self.active, self.parser, bpfsys.SK_SKB_STREAM_PARSER)
        except BaseException:
            self.close()
            raise

    def _map(self, kind: int, key: int, value: int, entries: int, name: str) -> int:
        fd = bpfsys.map_create(kind, key, value, entries, name)
        self.fds.append(fd)
        return fd

    def _prog(self, insns: bytes, name: str) -> int:
        fd = bpfsys.prog_load(bpfsys.PROG_SK_SKB, insns, name)
        self.fds.append(fd)
        return fd

    def ids(self) -> dict[str, list[int]]:
        """The kernel ids of this pair's programs and maps (what bpftool would list)."""
        progs = [self.verdict] + ([self.parser] if self.rule is not None else [])
        maps = [self.peers, self.active, self.flows, self.misses]
        return {"progs": [bpfsys.info(fd, "prog").id for fd in progs],
                "maps": [bpfsys.info(fd, "map").id for fd in maps]}

    def join(self, a: socket.socket, b: socket.socket) -> None:
        """Proxy a and b in the kernel from now on, both ways. The kernel takes only
        ESTABLISHED sockets (EOPNOTSUPP otherwise: a peer that sent its FIN before the
        join); on any error nothing of the two is left in the maps."""
        ka, kb = cookie(a), cookie(b)
        empty = FLOW.pack(0, 0, 0, 0, 0, 0, 0, 0)
        steps = [(self.flows, ka, empty), (self.flows, kb, empty),
                 (self.peers, ka, struct.pack("=Q", b.fileno())),
                 (self.peers, kb, struct.pack("=Q", a.fileno())),
                 (self.active, ka, struct.pack("=Q", a.fileno())),
                 (self.active, kb, struct.pack("=Q", b.fileno()))]
        done: list[tuple[int, bytes]] = []
        try:
            for fd, key, value in steps:
                bpfsys.map_update(fd, key, value)
                done.append((fd, key))
        except OSError:
            for fd, key in reversed(done):
                bpfsys.map_delete(fd, key)
            raise
        # Bytes that arrived before the socket joined sit in its receive queue until the
        # next packet wakes the verdict: setting SO_RCVLOWAT makes TCP check the queue
        # and call the (now the psock's) data_ready at once (tcp_set_rcvlowat).
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)

    def counters(self, sock_cookie: bytes) -> Counters:
        raw = bpfsys.map_lookup(self.flows, sock_cookie, FLOW.size)
        return Counters.unpack(raw) if raw is not None else Counters()

    def misses_count(self) -> int:
        raw = bpfsys.map_lookup(self.misses, struct.pack("=I", 0), MISSES.size)
        return MISSES.unpack(raw)[0] if raw else 0

    def forget(self, sock_cookie: bytes) -> None:
        """Drop a closed socket's counters (closing a socket removes it from the
        sockhashes by itself)."""
        bpfsys.map_delete(self.flows, sock_cookie)

    def close(self) -> None:
        for fd in reversed(self.fds):
            os.close(fd)
        self.fds.clear()

    def __enter__(self) -> Sockmap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
