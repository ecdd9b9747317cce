"""The daemon's failure paths, without a handshake kernel: a request whose peer (the far
end of a socketpair) sends garbage, closes early, stalls past the deadline, offers an
unknown PSK or a wrong key, or fails the certificate check ends in DONE with its errno;
the fd is closed every time; the daemon's counters say so and it goes on serving.

The socket a request hands over is one end of a socketpair here, the "kernel" is a
recorder of DONE calls; the engines, handshaker and daemon code are the real ones.
"""

from __future__ import annotations

import errno
import gc
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labkit.features.handshake import certs, engines
from labkit.features.handshake.daemon import Daemon
from labkit.features.handshake.events import read_events, read_status
from labkit.features.handshake.handshaker import NodeConfig, serve
from labkit.features.handshake.messages import Accepted
from labkit.features.handshake.records import DeadlineSocket, HandshakeFailed
from labkit.features.handshake.uapi import (
    AUTH_PSK,
    AUTH_UNAUTH,
    AUTH_X509,
    MSG_TYPE_CLIENTHELLO,
    MSG_TYPE_SERVERHELLO,
)

GARBAGE = b"GET / HTTP/1.1\r\nHost: not-tls\r\n\r\n"


@pytest.fixture(scope="module", autouse=True)
def tlslite() -> None:
    engines.load_tlslite()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca("t")
    srv = certs.issue(ca, "s", ["198.18.6.1"], "t")
    out = {}
    for name, data in (("ca", ca.cert_pem), ("cert", srv.cert_pem), ("key", srv.key_pem)):
        (d / name).write_bytes(data)
        out[name] = str(d / name)
    return out


class Done:
    """Stands in for the kernel's DONE: records (fd, status, serials) in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, list[int]]] = []

    def __call__(self, fd: int, status: int, serials: list[int]) -> None:
        os.fstat(fd)  # DONE names an fd that is still open
        self.calls.append((fd, status, list(serials)))


def accepted(server: bool, auth: int, timeout_ms: int = 2000, **kw: object
             ) -> tuple[Accepted, socket.socket]:
    """An 'ACCEPTed' request: our end of a socketpair as its fd; the peer's end returned."""
    ours, peer = socket.socketpair()
    fd = os.dup(ours.fileno())
    ours.close()
    acc = Accepted(sockfd=fd, message_type=MSG_TYPE_SERVERHELLO if server else
                   MSG_TYPE_CLIENTHELLO, auth_mode=auth, timeout_ms=timeout_ms, **kw)  # type: ignore[arg-type]
    return acc, peer


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def run_with_peer(acc: Accepted, cfg: NodeConfig, peer_action: Callable[[], None]
                  ) -> tuple[int, str, Done]:
    done = Done()
    thread = threading.Thread(target=peer_action, daemon=True)
    thread.start()
    outcome = serve(acc, cfg, done)
    thread.join(5)
    assert closed(acc.sockfd), "the request's fd must be closed after DONE"
    return outcome.status, outcome.reason, done


def cfg_for(tmp: Path, pki: dict[str, str] | None = None, timeout: float = 2.0) -> NodeConfig:
    return NodeConfig(lab="t", node="n", pool=2, timeout=timeout,
                      cert=pki["cert"] if pki else "", key=pki["key"] if pki else "",
                      ca=pki["ca"] if pki else "", events=str(tmp / "events"),
                      status=str(tmp / "status"))


def test_garbage_from_the_client_is_EPROTO(tmp_path: Path, pki: dict[str, str]) -> None:
    acc, peer = accepted(server=True, auth=AUTH_X509)
    status, reason, done = run_with_peer(acc, cfg_for(tmp_path, pki),
                                         lambda: peer.sendall(GARBAGE))
    peer.close()
    assert status == errno.EPROTO, reason
    assert done.calls == [(acc.sockfd, errno.EPROTO, [])]


def test_garbage_to_a_psk_server_is_EPROTO(tmp_path: Path) -> None:
    acc, peer = accepted(server=True, auth=AUTH_PSK)
    status, reason, _ = run_with_peer(acc, cfg_for(tmp_path), lambda: peer.sendall(GARBAGE))
    peer.close()
    assert status == errno.EPROTO, reason


def test_peer_closing_early_is_ECONNRESET(tmp_path: Path, pki: dict[str, str]) -> None:
    acc, peer = accepted(server=False, auth=AUTH_UNAUTH, peername="198.18.6.1")

    def close_after_hello() -> None:
        peer.recv(4096)  # the ClientHello
        peer.close()

    status, reason, done = run_with_peer(acc, cfg_for(tmp_path, pki), close_after_hello)
    assert status == errno.ECONNRESET, reason
    assert done.calls[0][1] == errno.ECONNRESET


def test_peer_stalling_past_the_request_timeout_is_ETIMEDOUT(tmp_path: Path,
                                                              pki: dict[str, str]) -> None:
    acc, peer = accepted(server=True, auth=AUTH_X509, timeout_ms=300)
    stop = threading.Event()
    status, reason, _ = run_with_peer(acc, cfg_for(tmp_path, pki), lambda: stop.wait(5))
    stop.set()
    peer.close()
    assert status == errno.ETIMEDOUT, reason


def test_the_daemons_own_timeout_applies_when_the_request_has_none(tmp_path: Path,
                                                                   pki: dict[str, str]) -> None:
    acc, peer = accepted(server=True, auth=AUTH_X509, timeout_ms=0)
    stop = threading.Event()
    status, _, _ = run_with_peer(acc, cfg_for(tmp_path, pki, timeout=0.3), lambda: stop.wait(5))
    stop.set()
    peer.close()
    assert status == errno.ETIMEDOUT


def psk_client(peer: socket.socket, psk: engines.Psk, result: list[object]) -> Callable[[], None]:
    def go() -> None:
        dsock = DeadlineSocket(peer.fileno(), time.monotonic() + 10)
        try:
            result.append(engines.run(dsock, engines.Request(False, "psk", dsock.deadline,
                                                             psks=[psk])))
        except HandshakeFailed as exc:
            result.append(exc)
        finally:
            dsock.release()
    return go


def test_unknown_psk_identity_is_EACCES_and_the_client_gets_an_alert(tmp_path: Path) -> None:
    acc, peer = accepted(server=True, auth=AUTH_PSK)
    client: list[object] = []
    stranger = engines.Psk(1, "NVMe0R01 nqn.x nqn.y", secrets.token_bytes(32))
    status, reason, _ = run_with_peer(acc, cfg_for(tmp_path), psk_client(peer, stranger, client))
    peer.close()
    assert status == errno.EACCES and "keyring" in reason
    assert isinstance(client[0], HandshakeFailed) and client[0].errno == errno.EACCES


def test_wrong_certificate_name_is_EACCES(tmp_path: Path, pki: dict[str, str]) -> None:
    acc, peer = accepted(server=False, auth=AUTH_UNAUTH, peername="198.18.9.9")
    server: list[object] = []

    def tls_server() -> None:
        dsock = DeadlineSocket(peer.fileno(), time.monotonic() + 10)
        try:
            engines.run(dsock, engines.Request(True, "x509", dsock.deadline,
                                               cert_file=pki["cert"], key_file=pki["key"]))
        except HandshakeFailed as exc:
            server.append(exc)
        finally:
            dsock.release()

    status, reason, _ = run_with_peer(acc, cfg_for(tmp_path, pki), tls_server)
    peer.close()
    assert status == errno.EACCES, reason


def test_a_completed_handshake_reaches_ktls_install(tmp_path: Path, pki: dict[str, str]) -> None:
    """Positive control: a good peer completes the TLS handshake; the status DONE reports
    is then kTLS's (0 where the kernel has tls, ENOENT on a host without the module, and
    the kernel refuses TCP_ULP on a socketpair: EOPNOTSUPP or ENOENT)."""
    acc, peer = accepted(server=False, auth=AUTH_UNAUTH, peername="198.18.6.1")
    server: list[object] = []

    def tls_server() -> None:
        dsock = DeadlineSocket(peer.fileno(), time.monotonic() + 10)
        try:
            server.append(engines.run(dsock, engines.Request(
                True, "x509", dsock.deadline, cert_file=pki["cert"], key_file=pki["key"])))
        finally:
            dsock.release()

    status, reason, _ = run_with_peer(acc, cfg_for(tmp_path, pki), tls_server)
    peer.close()
    assert isinstance(server[0], engines.Result), "the peer saw a completed handshake"
    assert reason.startswith("kTLS"), reason
    assert status in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENOTSUP)


class FakeNetlink:
    def __init__(self) -> None:
        self.done_calls: list[tuple[int, int, list[int]]] = []

    def done(self, fd: int, status: int, serials: list[int] | tuple[int, ...] = ()) -> None:
        self.done_calls.append((fd, status, list(serials)))


@pytest.fixture
def daemon(tmp_path: Path, pki: dict[str, str]) -> Iterator[Daemon]:
    d = Daemon(cfg_for(tmp_path, pki))
    d.nl = FakeNetlink()  # type: ignore[assignment]
    yield d
    d.pool.shutdown(wait=True)
    os.close(d.wake_r)
    os.close(d.wake_w)


def fd_count() -> int:
    """Open fds of this process, after collecting garbage: a socket an earlier test dropped
    must not close in the middle of this count's before and after."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def test_garbage_and_timeouts_leave_the_daemon_serving(daemon: Daemon) -> None:
    before = fd_count()
    requests = [accepted(server=True, auth=AUTH_X509, timeout_ms=300) for _ in range(3)]
    requests[0][1].sendall(GARBAGE)  # garbage; [1] closes early; [2] says nothing (stall)
    requests[1][1].close()
    for acc, _ in requests:  # through the daemon's worker path; the pool has 2 slots, so
        daemon.slots.acquire()  # the third waits for one, as take_requests() would
        daemon.status.add("in_flight")
        daemon.pool.submit(daemon.work, acc)
    daemon.pool.shutdown(wait=True)  # every worker returned
    for _, peer in requests[::2]:
        peer.close()
    st = read_status(daemon.cfg.status)
    assert st is not None
    assert st["failed"] == {"EPROTO": 1, "ECONNRESET": 1, "ETIMEDOUT": 1}
    assert st["in_flight"] == 0 and st["done"] == 0
    assert sorted(c[1] for c in daemon.nl.done_calls) == sorted(  # type: ignore[union-attr]
        [errno.EPROTO, errno.ECONNRESET, errno.ETIMEDOUT])
    events = [e["event"] for e in read_events(daemon.cfg.events)]
    assert events.count("done") == 3
    # and it still serves: a well-behaved client completes its handshake with it
    acc, peer = accepted(server=True, auth=AUTH_X509)
    client: list[object] = []

    def tls_client() -> None:
        dsock = DeadlineSocket(peer.fileno(), time.monotonic() + 10)
        try:
            client.append(engines.run(dsock, engines.Request(False, "unauth", dsock.deadline)))
        finally:
            dsock.release()

    thread = threading.Thread(target=tls_client, daemon=True)
    thread.start()
    daemon.slots.acquire()
    daemon.status.add("in_flight")
    daemon.work(acc)  # the worker path, in this thread
    thread.join(10)
    peer.close()
    assert isinstance(client[0], engines.Result)
    # every slot is free again and no fd leaked (the pool's slots were all released)
    assert all(daemon.slots.acquire(blocking=False) for _ in range(daemon.cfg.pool))
    assert not daemon.slots.acquire(blocking=False)  # and no more than the pool's
    assert fd_count() == before
