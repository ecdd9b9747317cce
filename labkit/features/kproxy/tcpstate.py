"""What the kernel knows about a TCP socket that a proxy needs for close semantics:
bytes received and acknowledged (struct tcp_info, include/uapi/linux/tcp.h) and the
bytes still in the send queue (SIOCOUTQ). Standard library only.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass

SIOCOUTQ = 0x5411  # TIOCOUTQ: unsent + unacknowledged bytes in the send queue
TCP_INFO_SIZE = 232
BYTES_ACKED, BYTES_RECEIVED = 120, 128  # u64 offsets in struct tcp_info
STATE = 0  # u8 tcpi_state


@dataclass(frozen=True)
class TcpState:
    state: int
    bytes_acked: int  # sent and acknowledged by the peer
    bytes_received: int  # received in order (a FIN counts one)
    outq: int  # in the send queue: handed to TCP, not yet acknowledged

    @property
    def handed(self) -> int:
        """Everything given to TCP to send so far (acknowledged or still queued)."""
        return self.bytes_acked + self.outq


def read(sock: socket.socket) -> TcpState:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    acked, received = struct.unpack_from("=QQ", raw, BYTES_ACKED)
    outq = struct.unpack("=i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0]
    return TcpState(raw[STATE], acked, received, outq)


def outq(sock: socket.socket) -> int:
    return int(struct.unpack("=i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0])


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER on, zero seconds): what a reset looks like on the wire."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
