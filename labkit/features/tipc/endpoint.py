"""TIPC endpoints for the traffic agent (`labkit traffic --proto tipc`).

The agent (labkit.traffic.agent, whose docstring defines the endpoint interface) loads
this module by name inside a node and calls it to make its sockets; it knows nothing of
TIPC itself. Services are addressed by name: type SERVICE_TYPE, instance = the agent's
--port. Standard library only (plus the uapi numbers), because the agent starts once per
run inside emulated VMs.
"""

from __future__ import annotations

import errno
import socket

from labkit.errors import UsageError
from labkit.features.tipc.uapi import MAX_MESSAGE

SERVICE_TYPE = 18888
SOCKETS = {"stream": socket.SOCK_STREAM, "rdm": socket.SOCK_RDM,
           "seqpacket": socket.SOCK_SEQPACKET}
CONNECTIONLESS = frozenset({"rdm"})
# The service is not in this node's name table yet (it spreads over the links).
NOT_YET = frozenset({errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ENOENT})


def check(kind: str, size: int) -> None:
    if kind not in SOCKETS:
        raise UsageError(f"TIPC has no socket type '{kind}'.",
                         hint=f"Use one of: {', '.join(SOCKETS)}.")
    if kind != "stream" and size > MAX_MESSAGE:
        raise UsageError(f"a TIPC {kind} message carries at most {MAX_MESSAGE} bytes, so "
                         f"--size {size} is too large.",
                         hint=f"Use --size {MAX_MESSAGE} or less, or --socket stream (a "
                              "byte stream, any size).")


def listen(kind: str, port: int, address: str = "") -> socket.socket:
    s = socket.socket(socket.AF_TIPC, SOCKETS[kind])
    try:
        s.bind((socket.TIPC_ADDR_NAMESEQ, SERVICE_TYPE, port, port))
        if kind not in CONNECTIONLESS:
            s.listen(1)
    except OSError:
        s.close()
        raise
    return s


def sender(kind: str, port: int, address: str = "") -> tuple[socket.socket, tuple | None]:
    dest = (socket.TIPC_ADDR_NAME, SERVICE_TYPE, port, 0)
    s = socket.socket(socket.AF_TIPC, SOCKETS[kind])
    if kind in CONNECTIONLESS:
        return s, dest
    try:
        s.connect(dest)
    except OSError:
        s.close()
        raise
    return s, None
