"""What sending costs the sender, four ways through the same emulated NIC, next to the
kernel (benchmarks/offload.py calls it over the lab):

- tcp: plain TCP, the yardstick;
- ktls-sw: kTLS TX with the NIC's offload switched off (the kernel encrypts in software);
- offload: kTLS TX offloaded to the NIC (the "NIC" encrypts in its xmit path, and counts
  the nanoseconds it spent: tx_tls_encrypt_ns, tx_tls_dump_ns, tx_tls_copy_ns);
- userspace: TLS 1.2 AES-GCM records sealed in user space (OpenSSL through
  `cryptography`, 16 KiB records as a TLS library makes them) written to plain TCP.

The receiver is the same plain TCP sink for all four, so the runs differ only in what the
sending side does. Keys are random and never leave this process. The sender's CPU is its
own thread's (RUSAGE_THREAD: user + system, which includes the kernel's encryption, and
the emulated NIC's, since the xmit path runs in the sending thread's context).
"""

from __future__ import annotations

import resource
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from labkit.base import netns
from labkit.features.offload import nic as nicmod
from labkit.features.offload.transfer import txconf
from labkit.hosts.rpc import remote
from labkit.ktls.ciphers import BY_SHORT
from labkit.ktls.sockopt import crypto_info, install
from labkit.ktls.uapi import TLS_1_2_VERSION

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

MODES = ("tcp", "ktls-sw", "offload", "userspace")
RECORD = 1 << 14
BLOCK = 1 << 20
NIC_TIME = ("tx_tls_encrypt_ns", "tx_tls_dump_ns", "tx_tls_copy_ns")


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime + ru.ru_stime


class _Sink:
    """A plain TCP sink in the receiving namespace, counting bytes on its own thread."""

    def __init__(self, ns: str, address: str, port: int, timeout: float) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.lsock = netns.socket_in(ns, family, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((address, port))
        self.lsock.listen(1)
        self.lsock.settimeout(timeout)
        self.got = 0
        self.cpu = 0.0
        self.thread = threading.Thread(target=self._run, args=(timeout,), daemon=True)
        self.thread.start()

    def _run(self, timeout: float) -> None:
        cpu0 = _cpu()
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        conn.settimeout(timeout)
        with conn:
            try:
                while chunk := conn.recv(BLOCK):
                    self.got += len(chunk)
            except OSError:
                pass
        self.cpu = _cpu() - cpu0

    def finish(self, timeout: float) -> None:
        self.thread.join(timeout)
        self.lsock.close()


def _records(data: bytes, key: bytes, salt: bytes, seq: int) -> tuple[bytes, int]:
    """TLS 1.2 AES-GCM application-data records of `data` (RFC 5288), sealed here."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    out = bytearray()
    for off in range(0, len(data), RECORD):
        plain = data[off:off + RECORD]
        explicit = seq.to_bytes(8, "big")
        aad = explicit + b"\x17\x03\x03" + len(plain).to_bytes(2, "big")
        body = explicit + aead.encrypt(salt + explicit, plain, aad)
        out += b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body
        seq += 1
    return bytes(out), seq


@remote
def sender_cost(lab: Lab, mode: str, size: int, port: int, nic: str = "",
                timeout: float = 600.0) -> dict[str, Any]:
    """One transfer of `size` bytes in one mode; the sender's CPU and the NIC's time."""
    if mode not in MODES:
        raise ValueError(f"mode {mode} is not one of {', '.join(MODES)}")
    cfg = lab.feature_config("offload")
    n = cfg.nic(nic or None)
    tx_ns, rx_ns = lab.node(n.node).ns, lab.node(n.peer.node).ns
    address = str((n.peer.ipv4 or n.peer.ipv6).ip)
    nicmod.set_offload(tx_ns, n.iface, mode == "offload")
    sink = _Sink(rx_ns, address, port, timeout)
    suite = BY_SHORT["aes-gcm-128"]
    key, salt = secrets.token_bytes(suite.key_len), secrets.token_bytes(4)
    data = secrets.token_bytes(BLOCK)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = netns.socket_in(tx_ns, family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    out: dict[str, Any] = {"mode": mode, "size": size}
    try:
        sock.connect((address, port))
        if mode in ("ktls-sw", "offload"):
            install(sock, crypto_info(TLS_1_2_VERSION, suite, key, salt, bytes(8), 0))
        out["txconf"] = txconf(tx_ns, port) if mode in ("ktls-sw", "offload") else "-"
        before = nicmod.counters(tx_ns, n.iface)
        seq = 0
        cpu0, t0 = _cpu(), time.monotonic()
        for _ in range(size // BLOCK):
            if mode == "userspace":
                wire, seq = _records(data, key, salt, seq)
                sock.sendall(wire)
            else:
                sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        cpu = _cpu() - cpu0
        sink.finish(timeout)
        seconds = time.monotonic() - t0
    finally:
        sock.close()
        sink.finish(1.0)
        nicmod.set_offload(tx_ns, n.iface, True)
    d = nicmod.delta(before, nicmod.counters(tx_ns, n.iface))
    nic_s = sum(d.get(k, 0) for k in NIC_TIME) / 1e9
    out.update({"received": sink.got, "seconds": round(seconds, 3),
                "MBps": round(sink.got / seconds / 1e6, 3), "sender_cpu_s": round(cpu, 3),
                "receiver_cpu_s": round(sink.cpu, 3),
                "nic_encrypt_s": round((d.get("tx_tls_encrypt_ns", 0)
                                        + d.get("tx_tls_dump_ns", 0)) / 1e9, 3),
                "nic_copy_s": round(d.get("tx_tls_copy_ns", 0) / 1e9, 3),
                "nic_encrypted_bytes": d.get("tx_tls_encrypted_bytes", 0),
                "sender_cpu_s_without_nic": round(cpu - nic_s, 3)})
    return out

