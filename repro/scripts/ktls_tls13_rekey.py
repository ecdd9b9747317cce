"""Install a kTLS TX key twice on one connection, for TLS 1.2 and for TLS 1.3.

Prints one line per version: `case=tls13 tx1=ok tx2=EBUSY` (the second key refused, as
before "tls: implement rekey for TLS1.3") or `tx2=ok` (the key updated), then the
TlsTxRekeyOk counter of /proc/net/tls_stat (`absent` on kernels without it). Keys are
random and never printed; no record is sent, so no peer needs them.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess

from reprolib import errname

SOL_TLS, TLS_TX, TCP_ULP = 282, 1, 31
VERSIONS = {"tls12": 0x0303, "tls13": 0x0304}
AES_GCM_128 = 51


def crypto_info(version: int) -> bytes:
    """struct tls12_crypto_info_aes_gcm_128: version, cipher, iv[8], key[16], salt[4],
    rec_seq[8]."""
    return struct.pack("=HH8s16s4s8s", version, AES_GCM_128, os.urandom(8), os.urandom(16),
                       os.urandom(4), bytes(8))


def attempt(sock: socket.socket, version: int) -> str:
    try:
        sock.setsockopt(SOL_TLS, TLS_TX, crypto_info(version))
        return "ok"
    except OSError as exc:
        return errname(exc)


def case(name: str, version: int) -> str:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        server, _ = listener.accept()
        with client, server:
            client.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
            first = attempt(client, version)
            second = attempt(client, version)
    return f"case={name} tx1={first} tx2={second}"


def counter(name: str) -> str:
    try:
        with open("/proc/net/tls_stat", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == name:
                    return value.strip() or "?"
    except OSError:
        pass
    return "absent"


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for name, version in VERSIONS.items():
        print(case(name, version), flush=True)
    print(f"TlsTxRekeyOk={counter('TlsTxRekeyOk')}", flush=True)


if __name__ == "__main__":
    main()
