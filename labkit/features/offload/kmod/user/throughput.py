"""One transfer through a tlsnic pair three ways: plain TCP, software kTLS, NIC offload.

A probe for the README's figures, run as root where tlsnic.ko is installed (the VM):

    .venv/bin/labkit vm run --kernel debian-6.12 --memory 2G -- \\
        .venv/bin/python labkit/features/offload/kmod/user/throughput.py --mib 16

The receiver is a plain TCP sink in the other namespace, so the three runs differ only in
what the sender's side does with the bytes: nothing, kTLS in software, or kTLS records the
NIC encrypts (its own time is its tx_tls_encrypt_ns counter). Keys are random and never
written anywhere. The pair is made with iproute2 alone (`ip link add X type tlsnic` names
the peer tlsnicN; it is then moved and renamed), to show that way works too.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import secrets
import socket
import subprocess
import threading
import time

from labkit.base import netns
from labkit.ktls import ciphers, sockopt
from labkit.ktls.uapi import TLS_1_2_VERSION

SUITE = ciphers.BY_SHORT["aes-gcm-128"]


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def socket_in(ns: str) -> socket.socket:
    return netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)


def nic_counters(ns: str, dev: str) -> dict[str, int]:
    out = sh("ip", "netns", "exec", ns, "ethtool", "-S", dev)
    return {k: int(v) for k, v in re.findall(r"^\s+(\w+): (\d+)$", out, re.M)}


def one_run(tx: str, rx: str, mode: str, size: int, port: int) -> dict[str, float]:
    sh("ip", "netns", "exec", tx, "ethtool", "-K", "nic0", "tls-hw-tx-offload",
       "on" if mode == "offload" else "off")
    lsock = socket_in(rx)
    lsock.bind(("198.18.0.2", port))
    lsock.listen(1)
    got = [0]

    def sink() -> None:
        conn, _ = lsock.accept()
        while chunk := conn.recv(1 << 20):
            got[0] += len(chunk)
        conn.close()

    th = threading.Thread(target=sink)
    th.start()
    s = socket_in(tx)
    s.connect(("198.18.0.2", port))
    if mode != "tcp":
        key, salt = secrets.token_bytes(SUITE.key_len), secrets.token_bytes(SUITE.salt_len)
        sockopt.install(s, sockopt.crypto_info(TLS_1_2_VERSION, SUITE, key, salt,
                                               bytes(12 - SUITE.salt_len), 0))
    conf = sh("ip", "netns", "exec", tx, "ss", "-tin", "dst", "198.18.0.2")
    txconf = (re.search(r"txconf: (\w+)", conf) or [None, "none"])[1]
    data = os.urandom(1 << 20)
    before = nic_counters(tx, "nic0")
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    for _ in range(size >> 20):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    th.join()
    elapsed = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    s.close()
    lsock.close()
    after = nic_counters(tx, "nic0")
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"txconf": txconf, "seconds": elapsed, "mib_s": size / elapsed / (1 << 20),
            "cpu_s": cpu,
            "nic_encrypt_s": (after["tx_tls_encrypt_ns"] - before["tx_tls_encrypt_ns"]) / 1e9,
            "nic_copy_s": (after["tx_tls_copy_ns"] - before["tx_tls_copy_ns"]) / 1e9,
            "received": got[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=16, help="MiB per transfer")
    args = ap.parse_args()
    sh("modprobe", "tlsnic")
    tag = secrets.token_hex(3)
    tx, rx = f"lktp-{tag}-tx", f"lktp-{tag}-rx"
    try:
        for ns in (tx, rx):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", tx, "link", "add", "nic0", "type", "tlsnic")
        sh("ip", "-n", tx, "link", "set", "tlsnic0", "netns", rx, "name", "nic1")
        sh("ip", "-n", tx, "addr", "add", "198.18.0.1/24", "dev", "nic0")
        sh("ip", "-n", rx, "addr", "add", "198.18.0.2/24", "dev", "nic1")
        sh("ip", "-n", tx, "link", "set", "nic0", "up")
        sh("ip", "-n", rx, "link", "set", "nic1", "up")
        size = args.mib << 20
        print(f"{args.mib} MiB per transfer, receiver a plain TCP sink; kernel "
              f"{os.uname().release}")
        print(f"{'mode':8} {'txconf':6} {'MiB/s':>7} {'sender CPU s':>12} {'CPU s/GiB':>9} "
              f"{'NIC encrypt s':>13} {'NIC copy s':>10} {'CPU s/GiB w/o NIC':>17}")
        for i, mode in enumerate(("tcp", "sw", "offload")):
            r = one_run(tx, rx, mode, size, 5000 + i)
            assert r["received"] >= size, r
            host = r["cpu_s"] - r["nic_encrypt_s"] - r["nic_copy_s"]
            print(f"{mode:8} {r['txconf']:6} {r['mib_s']:7.2f} {r['cpu_s']:12.2f} "
                  f"{r['cpu_s'] * 1024 / args.mib:9.1f} {r['nic_encrypt_s']:13.2f} "
                  f"{r['nic_copy_s']:10.2f} {host * 1024 / args.mib:17.1f}")
    finally:
        for ns in (tx, rx):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    main()
