"""Does a kTLS receiver report a connection reset that arrives after a record?

Debian's 6.12 kernels carry "tls: Preserve sk_err across recvmsg() when data has been
copied" (not in Debian 12's 6.1): when tls_sw_recvmsg() had copied a record and then met
the socket error while waiting for more (MSG_WAITALL), it returned the bytes and the error
was consumed, so the next recv() said 0, a clean end of stream, instead of ECONNRESET.

Run in the server node, after `modprobe tls`. The kernel makes the TLS 1.2 AES-GCM-128
record itself: a kTLS TX socket in --client-netns writes 100 bytes, and the ciphertext is
kept. Then, per case, a plain client sends the bytes and closes with SO_LINGER {1, 0}
(a RST); once the receiver's TCP state is CLOSE it calls recv(8192[, MSG_WAITALL]) three
times. The key is random and never printed. One line per case:

    case=ktls-waitall recv1=100 recv2=ECONNRESET recv3=0 intact=yes
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys

import reprolib as R

TCP_ULP, SOL_TLS, TLS_TX, TLS_RX = 31, 282, 1, 2
TLS_1_2, TLS_CIPHER_AES_GCM_128 = 0x0303, 51
TCP_CLOSE = 7
RECORD_OVERHEAD = 5 + 8 + 16  # header, explicit nonce, tag
PLAINTEXT = b"repro-ktls-" + bytes(range(89))  # 100 bytes


def crypto_info() -> bytes:
    """struct tls12_crypto_info_aes_gcm_128 with a fresh random key, salt and IV."""
    return struct.pack("=HH8s16s4s8s", TLS_1_2, TLS_CIPHER_AES_GCM_128, os.urandom(8),
                       os.urandom(16), os.urandom(4), b"\0" * 8)


def kernel_record(server: str, port: int, client_ns: str | None, info: bytes) -> bytes:
    """The ciphertext the kernel's kTLS TX path makes of PLAINTEXT under info."""
    sender, receiver = R.tcp_pair(server, port, client_ns)
    try:
        sender.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        sender.setsockopt(SOL_TLS, TLS_TX, info)
        sender.sendall(PLAINTEXT)
        want = len(PLAINTEXT) + RECORD_OVERHEAD
        wire = b""
        while len(wire) < want:
            chunk = receiver.recv(want - len(wire))
            if not chunk:
                break
            wire += chunk
        return wire
    finally:
        sender.close()
        receiver.close()


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def case(name: str, server: str, port: int, client_ns: str | None, wire: bytes,
         rx_info: bytes | None, flags: int) -> None:
    client, sock = R.tcp_pair(server, port, client_ns)
    try:
        if rx_info is not None:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
            sock.setsockopt(SOL_TLS, TLS_RX, rx_info)
        client.sendall(wire)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        R.wait_until(lambda: tcp_state(sock) == TCP_CLOSE, 10, "the RST (TCP state CLOSE)")
        sock.settimeout(5)
        results, got = [], b""
        for _ in range(3):
            try:
                data = sock.recv(8192, flags)
                got += data
                results.append(str(len(data)))
            except TimeoutError:
                results.append("blocked")
            except OSError as exc:
                results.append(R.errname(exc))
        print(f"case={name} " + " ".join(f"recv{i + 1}={r}" for i, r in enumerate(results))
              + f" intact={'yes' if got == PLAINTEXT else 'no'}", flush=True)
    finally:
        sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="this node's address to listen on")
    ap.add_argument("--client-netns", help="namespace the senders connect from")
    ap.add_argument("--port", type=int, default=7401)
    args = ap.parse_args()
    print(f"kernel={os.uname().release}", flush=True)
    info = crypto_info()
    try:
        wire = kernel_record(args.server, args.port, args.client_netns, info)
        print(f"record={len(wire)} bytes type={wire[:1].hex()} "
              f"version={wire[1:3].hex()}", flush=True)
        ns, port = args.client_netns, args.port
        case("plain-waitall", args.server, port + 1, ns, PLAINTEXT, None, socket.MSG_WAITALL)
        case("ktls", args.server, port + 2, ns, wire, info, 0)
        case("ktls-waitall", args.server, port + 3, ns, wire, info, socket.MSG_WAITALL)
    except (OSError, TimeoutError) as exc:
        name = R.errname(exc) if isinstance(exc, OSError) and exc.errno else "timeout"
        print(f"error={name} {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
