"""Helpers the reproduction scripts share: standard library only, run as root in a node.

Scripts run inside a lab node (`labkit repro` starts them with `ip netns exec`), so the
sockets they open live in that node. A script that needs a socket in another node enters
that node's namespace for the one call that makes it (setns(2) on this thread), which
`{ns:NODE}` in a scenario names. BPF programs are a few instructions, assembled here and
loaded with the bpf(2) syscall: no clang, no libbpf.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
CLONE_NEWNET = 0x40000000
SYS_BPF = 321  # x86_64


def errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def wait_until(condition: Callable[[], T], timeout: float, what: str,
               interval: float = 0.02) -> T:
    """Poll until condition() is truthy; TimeoutError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def netns(name: str | None) -> Iterator[None]:
    """This thread in the named namespace (/run/netns/NAME) for the block; None: stay."""
    if not name:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def tcp_pair(server: str, port: int, client_ns: str | None,
             timeout: float = 10) -> tuple[socket.socket, socket.socket]:
    """(client, accepted server side): the listener here on server:port, the client in
    client_ns (None: here too)."""
    lsock = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        lsock.bind((server, port))
        lsock.listen(1)
        with netns(client_ns):
            client = socket.create_connection((server, port), timeout=timeout)
        lsock.settimeout(timeout)
        accepted, _ = lsock.accept()
    finally:
        lsock.close()
    client.settimeout(timeout)
    accepted.settimeout(timeout)
    return client, accepted


# -- bpf(2) ---------------------------------------------------------------------------------
BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD, BPF_PROG_ATTACH = 0, 2, 5, 8
BPF_MAP_TYPE_SOCKMAP = 15
BPF_PROG_TYPE_SK_SKB = 14
BPF_SK_SKB_STREAM_VERDICT = 5
BPF_F_INGRESS = 1
FN_SK_REDIRECT_MAP = 52  # bpf_sk_redirect_map(skb, map, key, flags)


def bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, max(len(attr), 128))
    ret = _libc.syscall(SYS_BPF, cmd, buf, len(buf))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return int(ret)


def sockmap(entries: int = 4) -> int:
    # map_type, key_size, value_size, max_entries, map_flags
    return bpf(BPF_MAP_CREATE, struct.pack("=5I", BPF_MAP_TYPE_SOCKMAP, 4, 4, entries, 0))


def sockmap_set(map_fd: int, key: int, sock: socket.socket) -> None:
    k, v = ctypes.c_uint32(key), ctypes.c_uint32(sock.fileno())
    bpf(BPF_MAP_UPDATE_ELEM, struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(k),
                                         ctypes.addressof(v), 0))


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def redirect_program(map_fd: int, key: int, flags: int) -> bytes:
    """return bpf_sk_redirect_map(skb, map, key, flags): every message goes to map[key]."""
    return (insn(0x18, 2, 1, 0, map_fd) + insn(0)  # r2 = map (ld_imm64, pseudo map fd)
            + insn(0xB7, 3, imm=key) + insn(0xB7, 4, imm=flags)  # r3 = key, r4 = flags
            + insn(0x85, imm=FN_SK_REDIRECT_MAP) + insn(0x95))  # call; exit


def load_sk_skb(program: bytes) -> int:
    code = ctypes.create_string_buffer(program)
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(16384)
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
    # prog_flags, prog_name, prog_ifindex, expected_attach_type
    attr = struct.pack("=IIQQIIQII16sII", BPF_PROG_TYPE_SK_SKB, len(program) // 8,
                       ctypes.addressof(code), ctypes.addressof(lic), 1, len(log),
                       ctypes.addressof(log), 0, 0, b"repro_verdict", 0, 0)
    try:
        return bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror}; verifier: "
                                 f"{log.value.decode(errors='replace')[-300:]}") from None


def attach(map_fd: int, prog_fd: int, attach_type: int) -> None:
    bpf(BPF_PROG_ATTACH, struct.pack("=5I", map_fd, prog_fd, attach_type, 0, 0))
