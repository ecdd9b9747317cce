"""The emulated TLS TX offload NIC (tlsnic.ko) as the kernel's tls_device drives it (VM tier).

Two namespaces joined by a tlsnic pair. The sender does a real TLS 1.2 handshake with
OpenSSL's `s_server` (Python ssl over memory BIOs, keys from its key log), installs kTLS TX
on the TCP socket, and the kernel offloads it to the emulated NIC, which encrypts the
records on their way out. `s_server` decrypts and authenticates every record itself: its
output must hash like what was sent. Around that: `ss` (txconf), /proc/net/tls_stat, the
NIC's `ethtool -S` counters, and its knobs under /sys/class/net/<dev>/tlsnic/.

Run: .venv/bin/labkit vm run --kernel debian-6.12 --memory 2G -- \
         .venv/bin/python -m pytest -m kernel tests/kernel/test_offload_kmod.py -p no:cacheprovider
The module must have been built for the VM kernel first: bash scripts/build_kmod.sh (host).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import socket
import ssl
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labkit.base import netns
from labkit.ktls import ciphers, handshake, sockopt, uapi
from labkit.ktls.records import RecordSocket
from tests import skips

pytestmark = [pytest.mark.kernel, pytest.mark.needs("ktls", "tlsnic")]

MIB = 1 << 20
SIZE = int(os.environ.get("LABKIT_OFFLOAD_TEST_MIB", "2")) * MIB  # TCG: ~1 MiB/s with crypto
# The lab feature's kernel tests (test_offload.py) show each claim of the issue through
# labkit; this file checks the module underneath. By default only what those do not cover
# runs (CI boots this tier twice under emulation); LABKIT_OFFLOAD_FULL=1 runs all of it.
FULL = os.environ.get("LABKIT_OFFLOAD_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason=skips.reason(
    "opt-in", "covered through the lab feature by tests/kernel/test_offload.py; "
    "LABKIT_OFFLOAD_FULL=1 runs it on the bare module too"))
PORT = 4433
TRANSFER_TIMEOUT = 120.0  # s, for one transfer under TCG with 5% loss
# kTLS suites the NIC offloads, by labkit's name; `.tls12` is the TLS 1.2 suite (ECDSA
# certificates keygen fast)
SUITES = {name: ciphers.BY_SHORT[name] for name in ("aes-gcm-128", "aes-gcm-256")}


# -- processes and namespaces ---------------------------------------------------------

def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def nsexec(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", ns, *argv, check=check)


def in_netns(ns: str) -> contextlib.AbstractContextManager[None]:
    """Run this thread inside ns: sockets made here stay there after we return."""
    return netns.entered(ns)


def wait_for(what: str, fn, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@dataclass
class Pair:
    """nic0 in namespace tx, nic1 in namespace rx: one tlsnic pair, 198.18.0.1 -> .2."""

    tx: str
    rx: str
    tx_dev: str = "nic0"
    rx_dev: str = "nic1"
    tx_ip: str = "198.18.0.1"
    rx_ip: str = "198.18.0.2"

    def stats(self) -> dict[str, int]:
        """The sending NIC's `ethtool -S` counters."""
        out = nsexec(self.tx, "ethtool", "-S", self.tx_dev).stdout
        return {k: int(v) for k, v in re.findall(r"^\s+(\w+): (\d+)$", out, re.M)}

    def tls_stat(self) -> dict[str, int]:
        out = nsexec(self.tx, "cat", "/proc/net/tls_stat").stdout
        return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}

    def knob(self, name: str, value: str | None = None) -> str:
        path = f"/sys/class/net/{self.tx_dev}/tlsnic/{name}"
        if value is not None:
            nsexec(self.tx, "sh", "-c", f"echo {value} > {path}")
        return nsexec(self.tx, "cat", path).stdout.strip()


def create_pair(tx_ns: str, tx_dev: str, rx_ns: str, rx_dev: str) -> None:
    """The pair across two namespaces in one request, the way labkit builds veth pairs.

    pyroute2 encodes a `peer` only for kind "veth"; tlsnic takes the same VETH_INFO_PEER
    layout, so register veth's IFLA_INFO_DATA class for it and pass the nested attribute.
    """
    from pyroute2.iproute import IPRoute
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    ifinfmsg.ifinfo.register_link_kind(module={"tlsnic": ifinfmsg.ifinfo.veth_data})
    with in_netns(tx_ns):
        ipr = IPRoute()
    fd = os.open(f"/run/netns/{rx_ns}", os.O_RDONLY)
    try:
        ipr.link("add", ifname=tx_dev, kind="tlsnic",
                 VETH_INFO_PEER={"attrs": [["IFLA_IFNAME", rx_dev], ["IFLA_NET_NS_FD", fd]]})
    finally:
        os.close(fd)
        ipr.close()


def tlsnic_devices_in_root() -> list[str]:
    return re.findall(r"^\d+: ([^:@]+)", run("ip", "-o", "link", "show", "type", "tlsnic").stdout,
                      re.M)


@pytest.fixture(scope="module")
def tlsnic_module() -> None:
    if not os.path.exists("/proc/sys/net/core") or run("modprobe", "tls", check=False).returncode:
        pytest.skip("this kernel has no kTLS module (run the kernel tier in the debian-6.12 VM)")
    out = run("modprobe", "tlsnic", check=False)
    if out.returncode:
        pytest.skip(f"tlsnic.ko is not installed for {os.uname().release} "
                    f"({out.stderr.strip()}); build it on the host: bash scripts/build_kmod.sh")


@pytest.fixture
def pair(tlsnic_module: None) -> Iterator[Pair]:
    """A fresh pair per test; its namespaces (and with them the devices) always go."""
    tag = secrets.token_hex(3)
    p = Pair(tx=f"lktn-{tag}-tx", rx=f"lktn-{tag}-rx")
    made: list[str] = []
    try:
        for ns in (p.tx, p.rx):
            run("ip", "netns", "add", ns)
            made.append(ns)
            nsexec(ns, "ip", "link", "set", "lo", "up")
        create_pair(p.tx, p.tx_dev, p.rx, p.rx_dev)
        for ns, dev, ip in ((p.tx, p.tx_dev, p.tx_ip), (p.rx, p.rx_dev, p.rx_ip)):
            nsexec(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            nsexec(ns, "ip", "link", "set", dev, "up")
        yield p
    finally:
        for ns in made:
            run("ip", "netns", "del", ns, check=False)
        left = [ns for ns in made if os.path.exists(f"/run/netns/{ns}")]
        assert not left, f"namespaces left behind: {left}"


# -- impairments ------------------------------------------------------------------------

def wire_impairment(p: Pair, *netem: str) -> None:
    """netem after the NIC, at the receiver's ingress (through an ifb): TCP retransmits
    segments the NIC already encrypted, which is what sends real NICs off their fast path.

    (netem with a delay cannot sit on the sending NIC itself: it orphans skbs, and the
    stack drops offloaded ones that lost their socket, "unencrypted skb with no associated
    socket - dropping", as it would before any real offloading NIC.)"""
    nsexec(p.rx, "ip", "link", "add", "ifb0", "type", "ifb")
    nsexec(p.rx, "ip", "link", "set", "ifb0", "up")
    nsexec(p.rx, "tc", "qdisc", "add", "dev", p.rx_dev, "handle", "ffff:", "ingress")
    nsexec(p.rx, "tc", "filter", "add", "dev", p.rx_dev, "parent", "ffff:", "matchall",
           "action", "mirred", "egress", "redirect", "dev", "ifb0")
    nsexec(p.rx, "tc", "qdisc", "add", "dev", "ifb0", "root", "netem", *netem)


def loss_before_nic(p: Pair, percent: float) -> None:
    """Loss on the sender's qdisc (loss alone keeps skbs owned): the NIC sees the stream
    jump ahead of where it stands."""
    nsexec(p.tx, "tc", "qdisc", "add", "dev", p.tx_dev, "root", "netem", "loss", f"{percent}%")


def per_packet(p: Pair) -> None:
    """netem takes a GSO skb (up to 64 KiB) as one packet, and TCP builds GSO skbs even
    without TSO (segmenting them after the qdisc): cap them at one segment, so a loss rate
    means what it says on the wire."""
    run("ip", "-n", p.tx, "link", "set", p.tx_dev, "gso_max_segs", "1")


IMPAIRMENTS = {
    "loss1": lambda p: wire_impairment(p, "loss", "1%"),
    "loss5": lambda p: wire_impairment(p, "loss", "5%"),
    "reorder": lambda p: wire_impairment(p, "delay", "5ms", "reorder", "25%", "50%"),
    "lost-before-nic": lambda p: loss_before_nic(p, 5),
}


# -- TLS 1.2: a real handshake, then kTLS TX -----------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("offload-cert")
    key, crt = d / "key.pem", d / "cert.pem"
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=labkit-nic")
    key.chmod(0o600)
    return key, crt


@dataclass
class Sender:
    sock: socket.socket
    suite: str


def tls12_connect(p: Pair, suite: str) -> Sender:
    """labkit.ktls.handshake (memory BIOs, nothing read ahead, the key log in a pipe),
    then the keys to the kernel's TX."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SUITES[suite].tls12)

    def connect() -> socket.socket | None:
        with in_netns(p.tx):
            s = socket.socket()
        try:
            s.connect((p.rx_ip, PORT))
            return s
        except OSError:
            s.close()
            return None

    sock = wait_for("s_server to listen", connect, timeout=30, every=0.2)
    hs = handshake.run(ctx, RecordSocket(sock, time.monotonic() + 60), server_side=False)
    assert hs.version_name == "TLSv1.2" and hs.tx_seq == 1, hs  # Finished was record 0
    handshake.install_ktls(sock, hs, rx=False)
    return Sender(sock, suite)


def close_notify(sock: socket.socket) -> None:
    """An alert record (type 21) through kTLS, so s_server ends cleanly."""
    sockopt.send_record(sock, b"\x01\x00", uapi.CT_ALERT)


def tcp_total_retrans(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 100)[0]  # struct tcp_info.tcpi_total_retrans


@dataclass
class Transfer:
    sent: bytes
    received_sha: str
    received_len: int
    completed: bool
    txconf: str
    server_err: str
    retrans: int
    tls_stat: dict[str, int] = field(default_factory=dict)  # delta over the transfer

    @property
    def intact(self) -> bool:
        return self.completed and self.received_sha == hashlib.sha256(self.sent).hexdigest()


def ulp_conf(p: Pair) -> str:
    """What `ss -ti` says of the kTLS socket towards the receiver: txconf hw or sw."""
    out = nsexec(p.tx, "ss", "-tin", "dst", p.rx_ip).stdout
    m = re.search(r"tcp-ulp-tls version: (\S+) cipher: (\S+) rxconf: (\S+) txconf: (\S+)", out)
    return f"{m.group(1)} {m.group(2)} tx={m.group(4)}" if m else f"no tls ulp in: {out!r}"


def unacked(sock: socket.socket) -> int:
    """Bytes not yet acknowledged by the peer (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]


def transfer(p: Pair, cert: tuple[Path, Path], tmp_path: Path, suite: str = "aes-gcm-128",
             size: int = SIZE, timeout: float = TRANSFER_TIMEOUT,
             midway: Callable[[], None] | None = None) -> Transfer:
    """size bytes from tx to `openssl s_server` in rx, through kTLS TX on the sender.

    With midway, the first quarter is sent and acknowledged before midway() runs (an
    impairment that must not hit the start), then the rest."""
    key, crt = cert
    out_file, err_file = tmp_path / "received.bin", tmp_path / "server.err"
    before = p.tls_stat()
    with open(out_file, "wb") as out, open(err_file, "w") as err:
        # stdin stays open: s_server ends a connection when its stdin reaches EOF
        server = subprocess.Popen(
            ["ip", "netns", "exec", p.rx, "openssl", "s_server", "-accept", str(PORT),
             "-cert", str(crt), "-key", str(key), "-tls1_2", "-cipher", SUITES[suite].tls12,
             "-naccept", "1", "-quiet"], stdin=subprocess.PIPE, stdout=out, stderr=err)
    data = os.urandom(size)
    sender = None
    try:
        sender = tls12_connect(p, suite)
        sender.sock.settimeout(timeout)
        completed = True
        try:
            if midway:
                sender.sock.sendall(data[:size // 4])
                wait_for("the first quarter to be acknowledged",
                         lambda: unacked(sender.sock) == 0, timeout=timeout)
                midway()
                sender.sock.sendall(data[size // 4:])
            else:
                sender.sock.sendall(data)
            close_notify(sender.sock)
        except OSError:  # timeout (a stalled flow) or reset (the peer gave up)
            completed = False
        txconf = ulp_conf(p)
        retrans = tcp_total_retrans(sender.sock)
        if completed:
            sender.sock.shutdown(socket.SHUT_WR)
            try:
                server.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                completed = False
    finally:
        if sender:
            sender.sock.close()
        server.kill()
        server.wait()
    received = out_file.read_bytes()
    after = p.tls_stat()
    return Transfer(sent=data, received_sha=hashlib.sha256(received).hexdigest(),
                    received_len=len(received), completed=completed, txconf=txconf,
                    server_err=err_file.read_text(), retrans=retrans,
                    tls_stat={k: after[k] - before.get(k, 0) for k in after})


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def wait_ctx_released(p: Pair, ctx_before: int) -> dict[str, int]:
    """tls_dev_del runs from a workqueue once the socket is destroyed."""
    return wait_for("tls_dev_del", lambda: (s := p.stats())["tx_tls_del"] - ctx_before >= 1
                    and s, timeout=30)


# -- tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("suite", list(SUITES) if FULL else ["aes-gcm-256"])
def test_offloaded_flow_is_encrypted_by_the_nic(pair: Pair, cert, tmp_path: Path,
                                                suite: str) -> None:
    """txconf hw, TlsTxDevice, every byte encrypted by the NIC, intact at s_server."""
    before = pair.stats()
    t = transfer(pair, cert, tmp_path, suite)
    after = wait_ctx_released(pair, before["tx_tls_del"])
    d = delta(before, after)
    assert t.txconf == f"1.2 {suite} tx=hw"
    assert t.tls_stat["TlsTxDevice"] == 1 and t.tls_stat["TlsTxSw"] == 0
    assert t.intact, f"s_server got {t.received_len} bytes of {len(t.sent)}: {t.server_err}"
    assert d["tx_tls_ctx"] == 1 and d["tx_tls_del"] == 1
    # all payload went through the engine: data (and close_notify) plus 29 bytes a record
    assert SIZE + 2 <= d["tx_tls_encrypted_bytes"] <= SIZE * 1.05
    assert d["tx_tls_encrypt_ns"] > 0
    # without loss every segment is the expected one (unless TCP itself retransmitted)
    if t.retrans == 0:
        assert d["tx_tls_ooo"] == 0 and d["tls_tx_fallback"] == 0, d
    assert d["tx_tls_corrupted_tags"] == 0 and d["tx_tls_bad_stream"] == 0


@pytest.mark.parametrize("strategy", ["mlx5", "nfp"] if FULL else ["nfp"])
@pytest.mark.parametrize("impairment", list(IMPAIRMENTS) if FULL else ["lost-before-nic"])
def test_out_of_order_segments_still_arrive_intact(pair: Pair, cert, tmp_path: Path,
                                                   strategy: str, impairment: str) -> None:
    """Retransmissions and reordering send the NIC off its fast path; data stays intact."""
    pair.knob("strategy", strategy)
    per_packet(pair)
    IMPAIRMENTS[impairment](pair)
    before = pair.stats()
    t = transfer(pair, cert, tmp_path, size=SIZE // 2)
    d = delta(before, pair.stats())
    assert t.txconf == "1.2 aes-gcm-128 tx=hw"
    assert t.intact, (f"s_server got {t.received_len} bytes of {len(t.sent)}: {t.server_err}; "
                      f"NIC {d}; retrans {t.retrans}; {run('dmesg').stdout[-3000:]}")
    assert d["tx_tls_ooo"] > 0, (
        f"{impairment} never sent the NIC off its fast path: {d}; retrans {t.retrans}; "
        + nsexec(pair.tx, "tc", "-s", "qdisc", "show").stdout
        + nsexec(pair.rx, "tc", "-s", "qdisc", "show").stdout)
    if strategy == "mlx5":
        # state rebuilt from record starts: record bytes replayed, no software fallback
        assert d["tx_tls_resync_bytes"] > 0 and d["tx_tls_dump_bytes"] == d["tx_tls_resync_bytes"]
        assert d["tx_tls_dump_packets"] > 0 and d["tls_tx_fallback"] == 0
    else:
        # software fallback per segment; the stack resyncs the NIC at a record start
        assert d["tls_tx_fallback"] > 0 and d["tls_tx_no_fallback"] == 0
        assert d["tx_tls_dump_bytes"] == 0
        assert d["tx_tls_resync"] <= d["tx_tls_resync_req"]
        if impairment == "lost-before-nic":  # the stream jumps ahead: it asks for resyncs
            assert d["tx_tls_resync_req"] > 0 and d["tx_tls_resync"] > 0
    assert d["tx_tls_bad_stream"] == 0


@full_only
def test_a_nic_that_cannot_resync_stalls_the_flow(pair: Pair, cert, tmp_path: Path) -> None:
    """`drop`: a retransmission never matches again, so the flow stalls; nothing corrupt."""
    pair.knob("strategy", "drop")
    per_packet(pair)
    before = pair.stats()
    t = transfer(pair, cert, tmp_path, size=SIZE // 2, timeout=20,
                 midway=lambda: wire_impairment(pair, "loss", "5%"))
    d = delta(before, pair.stats())
    assert t.txconf == "1.2 aes-gcm-128 tx=hw"
    assert d["tx_tls_ooo"] > 0 and d["tx_tls_drop_no_sync_data"] > 0, d
    assert not t.completed, "the flow completed although the NIC drops every retransmission"
    # what arrived is an intact prefix, at least the quarter sent before the loss began:
    # s_server never saw a bad record
    assert len(t.sent) // 4 <= t.received_len < len(t.sent)
    assert t.received_sha == hashlib.sha256(t.sent[:t.received_len]).hexdigest()
    assert "bad record mac" not in t.server_err and "decrypt" not in t.server_err


@full_only
def test_offload_off_means_software_ktls(pair: Pair, cert, tmp_path: Path) -> None:
    """`ethtool -K tls-hw-tx-offload off`: kTLS stays in software, the NIC is not asked."""
    nsexec(pair.tx, "ethtool", "-K", pair.tx_dev, "tls-hw-tx-offload", "off")
    assert "tls-hw-tx-offload: off" in nsexec(pair.tx, "ethtool", "-k", pair.tx_dev).stdout
    before = pair.stats()
    t = transfer(pair, cert, tmp_path, size=SIZE // 2)
    d = delta(before, pair.stats())
    assert t.txconf == "1.2 aes-gcm-128 tx=sw"
    assert t.tls_stat["TlsTxSw"] == 1 and t.tls_stat["TlsTxDevice"] == 0
    assert t.intact, t.server_err
    assert d["tx_tls_ctx"] == 0 and d["tx_tls_encrypted_bytes"] == 0


@full_only
def test_refused_tls_dev_add_means_software_ktls(pair: Pair, cert, tmp_path: Path) -> None:
    pair.knob("refuse_add", "1")
    before = pair.stats()
    t = transfer(pair, cert, tmp_path, size=SIZE // 2)
    d = delta(before, pair.stats())
    assert t.txconf == "1.2 aes-gcm-128 tx=sw"
    assert t.tls_stat["TlsTxSw"] == 1 and t.tls_stat["TlsTxDevice"] == 0
    assert t.intact, t.server_err
    assert d["tx_tls_ctx_refused"] == 1 and d["tx_tls_ctx"] == 0


@full_only
def test_corrupted_tag_is_caught_by_the_receiver(pair: Pair, cert, tmp_path: Path) -> None:
    """A NIC fault the receiver must see: s_server rejects the record (bad record mac)."""
    pair.knob("corrupt_every", "5")
    before = pair.stats()
    t = transfer(pair, cert, tmp_path, size=SIZE // 2, timeout=30)
    d = delta(before, pair.stats())
    assert t.txconf == "1.2 aes-gcm-128 tx=hw"
    assert d["tx_tls_corrupted_tags"] >= 1
    assert not t.intact
    assert "bad record mac" in t.server_err.lower(), t.server_err
    # records 1..4 were good: s_server delivered them before it failed on record 5
    assert 0 < t.received_len < len(t.sent)
    assert t.received_sha == hashlib.sha256(t.sent[:t.received_len]).hexdigest()


# -- kTLS with fixed keys (no handshake): limits, TLS 1.3, the decrypting kTLS RX peer ---

def ktls_info(version: int, key: bytes, seq: int = 0) -> bytes:
    return sockopt.crypto_info(version, SUITES["aes-gcm-128"], key, b"salt", seq.to_bytes(8),
                               seq)


@contextlib.contextmanager
def ktls_pair(p: Pair, version: int = 0x0303, port: int = PORT) -> Iterator[tuple]:
    """A TCP connection tx -> rx with kTLS TX on the sender and kTLS RX on the receiver."""
    key = os.urandom(16)
    with in_netns(p.rx):
        lsock = socket.create_server((p.rx_ip, port))
    with in_netns(p.tx):
        tx = socket.socket()
    try:
        tx.connect((p.rx_ip, port))
        rx, _ = lsock.accept()
        sockopt.install(tx, ktls_info(version, key))
        sockopt.install(rx, None, ktls_info(version, key))
        yield tx, rx
    finally:
        tx.close()
        lsock.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(TRANSFER_TIMEOUT)
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, f"connection closed after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


def test_tls13_is_not_offloaded_in_6_12(pair: Pair) -> None:
    """tls_set_device_offload() takes TLS 1.2 only: 1.3 falls back to software, silently."""
    before = pair.stats()
    with ktls_pair(pair, version=0x0304) as (tx, rx):
        conf = ulp_conf(pair)
        data = os.urandom(256 * 1024)
        tx.sendall(data)
        assert recv_exactly(rx, len(data)) == data
        rx.close()
    assert conf == "1.3 aes-gcm-128 tx=sw"
    d = delta(before, pair.stats())
    assert d["tx_tls_ctx"] == 0 and d["tx_tls_ctx_refused"] == 0  # never even asked
    # positive control on the same pair: TLS 1.2 is offloaded
    with ktls_pair(pair, version=0x0303, port=PORT + 1) as (tx, rx):
        assert ulp_conf(pair) == "1.2 aes-gcm-128 tx=hw"
        tx.sendall(data)
        assert recv_exactly(rx, len(data)) == data
        rx.close()


def test_context_limit_refuses_with_enospc(pair: Pair) -> None:
    """max_ctx=1: the second flow's tls_dev_add fails (ENOSPC) and it runs in software."""
    pair.knob("max_ctx", "1")
    before = pair.stats()
    with ktls_pair(pair, port=PORT) as (tx1, rx1):
        assert ulp_conf(pair) == "1.2 aes-gcm-128 tx=hw"
        assert pair.knob("nr_ctx") == "1"
        with ktls_pair(pair, port=PORT + 1) as (tx2, rx2):
            out = nsexec(pair.tx, "ss", "-tin", "dst", f"{pair.rx_ip}:{PORT + 1}").stdout
            assert "txconf: sw" in out
            data = os.urandom(64 * 1024)
            tx1.sendall(data)
            tx2.sendall(data)
            assert recv_exactly(rx1, len(data)) == data
            assert recv_exactly(rx2, len(data)) == data
            rx2.close()
        rx1.close()
    d = delta(before, pair.stats())
    assert d["tx_tls_ctx"] == 1 and d["tx_tls_ctx_full"] == 1


def test_ktls_rx_peer_sees_the_corrupted_tag_as_ebadmsg(pair: Pair) -> None:
    """The same fault seen by the kernel's own software kTLS RX: EBADMSG, TlsDecryptError."""
    pair.knob("corrupt_every", "1")
    rx_before = nsexec(pair.rx, "cat", "/proc/net/tls_stat").stdout
    with ktls_pair(pair) as (tx, rx):
        tx.sendall(b"x" * 1000)
        rx.settimeout(TRANSFER_TIMEOUT)
        with pytest.raises(OSError) as exc:
            rx.recv(4096)
        rx.close()
    assert exc.value.errno == 74  # EBADMSG
    errors = re.compile(r"TlsDecryptError\s+(\d+)")
    after = nsexec(pair.rx, "cat", "/proc/net/tls_stat").stdout
    assert int(errors.search(after).group(1)) == int(errors.search(rx_before).group(1)) + 1


# -- the device itself ----------------------------------------------------------------

def test_knobs_and_counters_are_there(pair: Pair) -> None:
    assert pair.knob("strategy") == "mlx5"
    for value in ("nfp", "drop", "mlx5"):
        assert pair.knob("strategy", value) == value
    bad = nsexec(pair.tx, "sh", "-c",
                 f"/bin/echo bogus > /sys/class/net/{pair.tx_dev}/tlsnic/strategy", check=False)
    assert bad.returncode != 0 and "Invalid argument" in bad.stderr
    names = set(pair.stats())
    assert {"tx_tls_encrypted_packets", "tx_tls_encrypted_bytes", "tx_tls_ctx", "tx_tls_del",
            "tx_tls_ooo", "tx_tls_dump_packets", "tx_tls_dump_bytes", "tx_tls_resync_bytes",
            "tx_tls_drop_no_sync_data", "tx_tls_skip_no_sync_data", "tls_tx_fallback",
            "tx_tls_encrypt_ns"} <= names
    features = nsexec(pair.tx, "ethtool", "-k", pair.tx_dev).stdout
    assert "tls-hw-tx-offload: on" in features
    link = nsexec(pair.tx, "ip", "-d", "link", "show", pair.tx_dev).stdout
    assert "tlsnic" in link and "link-netns" in link  # its peer is in the other namespace


def test_iproute2_makes_a_pair_without_peer_syntax(tlsnic_module: None) -> None:
    """iproute2 has no parser for kind tlsnic, so `peer name B` is refused; without it the
    module names the peer tlsnicN (move it with `ip link set ... netns ... name ...`)."""
    ns = f"lktn-{secrets.token_hex(3)}-ip"
    run("ip", "netns", "add", ns)
    try:
        refused = nsexec(ns, "ip", "link", "add", "a0", "type", "tlsnic", "peer", "name", "b0",
                         check=False)
        assert refused.returncode != 0
        nsexec(ns, "ip", "link", "add", "a0", "type", "tlsnic")
        names = re.findall(r"^\d+: ([^:@]+)", nsexec(ns, "ip", "-o", "link").stdout, re.M)
        assert "a0" in names and "tlsnic0" in names
        nsexec(ns, "ip", "link", "del", "a0")  # takes its peer along
        names = re.findall(r"^\d+: ([^:@]+)", nsexec(ns, "ip", "-o", "link").stdout, re.M)
        assert "tlsnic0" not in names
    finally:
        run("ip", "netns", "del", ns, check=False)


def test_devices_go_with_their_namespace_and_the_module_unloads(tlsnic_module: None) -> None:
    tag = secrets.token_hex(3)
    a, b = f"lktn-{tag}-a", f"lktn-{tag}-b"
    for ns in (a, b):
        run("ip", "netns", "add", ns)
    try:
        create_pair(a, "n0", b, "n1")
        assert "n1" in nsexec(b, "ip", "-o", "link").stdout
    finally:
        run("ip", "netns", "del", a, check=False)
    # deleting a's namespace took the peer in b with it
    wait_for("the peer to go", lambda: "n1" not in nsexec(b, "ip", "-o", "link").stdout)
    run("ip", "netns", "del", b)
    assert not tlsnic_devices_in_root()
    # nothing holds the module: it unloads, and loads again for the next test
    wait_for("tlsnic to unload", lambda: run("rmmod", "tlsnic", check=False).returncode == 0,
             timeout=10)
    assert not os.path.exists("/sys/module/tlsnic")
    run("modprobe", "tlsnic")
