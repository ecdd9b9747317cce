"""The bpf(2) system call from Python: maps, program loading with the verifier's log,
attaching to a sockmap, and finding objects by id (what `bpftool prog/map show` does).

Standard library only (ctypes): the proxy process imports this at start, also inside
emulated VMs where every imported package costs seconds. Numbers are from
include/uapi/linux/bpf.h; the attribute layouts are the leading members of `union
bpf_attr` for each command, packed as the kernel reads them (64-bit little-endian);
the syscall number is the machine's (labkit.base.syscalls).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from labkit.base import syscalls

ATTR_SIZE = 144  # bytes passed for every command: larger than any layout used here
OBJ_NAME_LEN = 16

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD, PROG_ATTACH, PROG_DETACH = 5, 8, 9
PROG_GET_NEXT_ID, MAP_GET_NEXT_ID, PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID = 11, 12, 13, 14
OBJ_GET_INFO_BY_FD, PROG_QUERY = 15, 16

# enum bpf_map_type
MAP_HASH, MAP_ARRAY, MAP_SOCKMAP, MAP_SOCKHASH = 1, 2, 15, 18
# enum bpf_prog_type
PROG_SK_SKB = 14
# enum bpf_attach_type
SK_SKB_STREAM_PARSER, SK_SKB_STREAM_VERDICT = 4, 5
# map update flags
BPF_ANY, BPF_NOEXIST = 0, 1

LOG_SIZE = 1 << 20  # verifier log buffer: ENOSPC below this for our programs is a bug


class BpfError(OSError):
    """A bpf() command the kernel refused: the command, errno, and the verifier's log."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.log = log


def bpf(cmd: int, attr: bytes | ctypes.Array, what: str = "") -> tuple[int, ctypes.Array]:
    """Run one command; returns (result, the attribute buffer the kernel may have filled)."""
    buf = attr if isinstance(attr, ctypes.Array) else \
        ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    ret = syscalls.syscall("bpf", cmd, buf, ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, what or f"bpf command {cmd}")
    return ret, buf


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str) -> int:
    """A new map; returns its fd (the map lives while an fd or a program holds it)."""
    attr = struct.pack("=IIIIIII16s", map_type, key_size, value_size, max_entries, 0, 0, 0,
                       name.encode()[:OBJ_NAME_LEN - 1])
    fd, _ = bpf(MAP_CREATE, attr, f"creating map {name}")
    return fd


def _elem(map_fd: int, key: ctypes.Array, value: ctypes.Array | None, flags: int) -> bytes:
    """The attr of an element command. The caller keeps `key` and `value` referenced until
    the syscall returns (locals, never shared: the proxy's threads call these at once)."""
    return struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(key),
                       ctypes.addressof(value) if value is not None else 0, flags)


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value, len(value))
    bpf(MAP_UPDATE_ELEM, _elem(map_fd, kbuf, vbuf, flags), "updating a map element")


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value_size)
    try:
        bpf(MAP_LOOKUP_ELEM, _elem(map_fd, kbuf, vbuf, 0), "looking up a map element")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return vbuf.raw


def map_delete(map_fd: int, key: bytes) -> bool:
    kbuf = ctypes.create_string_buffer(key, len(key))
    try:
        bpf(MAP_DELETE_ELEM, _elem(map_fd, kbuf, None, 0), "deleting a map element")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def prog_load(prog_type: int, insns: bytes, name: str, license: str = "GPL",
              expected_attach_type: int = 0) -> int:
    """Load a program through the verifier; BpfError carries the verifier's log."""
    ibuf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr = struct.pack("=IIQQIIQII16sII", prog_type, len(insns) // 8, ctypes.addressof(ibuf),
                       ctypes.addressof(lic), 1, LOG_SIZE, ctypes.addressof(log), 0, 0,
                       name.encode()[:OBJ_NAME_LEN - 1], 0, expected_attach_type)
    try:
        fd, _ = bpf(PROG_LOAD, attr, f"loading program {name}")
    except BpfError as exc:
        raise BpfError(exc.errno or 0, exc.what, log.value.decode(errors="replace")) from None
    return fd


def verifier_log(prog_type: int, insns: bytes, name: str) -> str:
    """Load with log level 2 (every instruction as the verifier walked it), then unload:
    what a reviewer reads to see the kernel's own account of a program."""
    ibuf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr = struct.pack("=IIQQIIQII16sII", prog_type, len(insns) // 8, ctypes.addressof(ibuf),
                       ctypes.addressof(lic), 2, LOG_SIZE, ctypes.addressof(log), 0, 0,
                       name.encode()[:OBJ_NAME_LEN - 1], 0, 0)
    try:
        fd, _ = bpf(PROG_LOAD, attr, f"loading program {name}")
        os.close(fd)
    except BpfError:
        pass
    return log.value.decode(errors="replace")


def prog_attach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    bpf(PROG_ATTACH, struct.pack("=IIIII", target_fd, prog_fd, attach_type, 0, 0),
        "attaching a program to a sockmap")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    bpf(PROG_DETACH, struct.pack("=IIIII", target_fd, prog_fd, attach_type, 0, 0),
        "detaching a program from a sockmap")


# -- objects by id (what bpftool lists) ----------------------------------------------------


@dataclass(frozen=True)
class ObjInfo:
    kind: str  # "prog" | "map"
    id: int
    type: int
    name: str
    map_ids: tuple[int, ...] = ()  # maps a program uses


def _next_id(cmd: int, start: int) -> int | None:
    try:
        _, buf = bpf(cmd, struct.pack("=III", start, 0, 0))
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return int(struct.unpack_from("=I", buf.raw, 4)[0])


def ids(kind: str) -> list[int]:
    """Every program or map id in this kernel (needs CAP_SYS_ADMIN)."""
    cmd = PROG_GET_NEXT_ID if kind == "prog" else MAP_GET_NEXT_ID
    out, cur = [], 0
    while (nxt := _next_id(cmd, cur)) is not None:
        out.append(nxt)
        cur = nxt
    return out


def fd_by_id(kind: str, obj_id: int) -> int | None:
    """An fd on the object, or None when no object has this id (any more)."""
    cmd = PROG_GET_FD_BY_ID if kind == "prog" else MAP_GET_FD_BY_ID
    try:
        fd, _ = bpf(cmd, struct.pack("=III", obj_id, 0, 0))
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return fd


def info(fd: int, kind: str) -> ObjInfo:
    """The kernel's description of a program or map fd (BPF_OBJ_GET_INFO_BY_FD)."""
    size = 232 if kind == "prog" else 96
    data = ctypes.create_string_buffer(size)
    map_ids = (ctypes.c_uint32 * 16)()
    if kind == "prog":  # ask for the ids of the maps it uses (nr_map_ids, map_ids)
        struct.pack_into("=IQ", data, 52, 16, ctypes.addressof(map_ids))
    bpf(OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, size, ctypes.addressof(data)),
        f"reading {kind} info")
    raw = data.raw
    if kind == "prog":
        ptype, pid = struct.unpack_from("=II", raw, 0)
        nr = min(struct.unpack_from("=I", raw, 52)[0], 16)
        name = raw[64:80].split(b"\0")[0].decode(errors="replace")
        return ObjInfo("prog", pid, ptype, name, tuple(map_ids[:nr]))
    mtype, mid = struct.unpack_from("=II", raw, 0)
    name = raw[24:40].split(b"\0")[0].decode(errors="replace")
    return ObjInfo("map", mid, mtype, name)


def info_by_id(kind: str, obj_id: int) -> ObjInfo | None:
    fd = fd_by_id(kind, obj_id)
    if fd is None:
        return None
    try:
        return info(fd, kind)
    finally:
        os.close(fd)


def listing(kind: str, prefix: str = "") -> list[ObjInfo]:
    """Programs or maps whose name starts with prefix, as `bpftool prog show` lists them."""
    out = []
    for obj_id in ids(kind):
        found = info_by_id(kind, obj_id)
        if found is not None and found.name.startswith(prefix):
            out.append(found)
    return out


def exists(kind: str, obj_id: int) -> bool:
    fd = fd_by_id(kind, obj_id)
    if fd is None:
        return False
    os.close(fd)
    return True
