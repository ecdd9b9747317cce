"""The measuring client is bounded: a test whose stream or answer never comes ends at its
--timeout with an error that says so, instead of hanging the benchmark or a verb (seen
once in a benchmark run: 219 s stuck on a reply). Beside it, the same client against the
real measuring server ends without an error. Loopback of this namespace only; no root.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from labkit.base.wait import wait_until

AGENT = [sys.executable, "-m", "labkit.features.kproxy.meteragent"]
UP = [{"test": "up", "id": "u", "bytes": 100_000, "hash": True}]


def run_client(port: int, timeout: float, tests: list[dict] = UP) -> dict:
    done = subprocess.run([*AGENT, "run", "--address", "127.0.0.1", "--port", str(port),
                           "--timeout", str(timeout), "--tests", json.dumps(tests)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])["results"][0]


@pytest.fixture
def deaf_server() -> Iterator[int]:
    """Accepts, never reads: the client's writes fill the window and wait in poll()."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts and reads, never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    held: list[socket.socket] = []

    def accept() -> None:
        conn, _ = srv.accept()
        held.append(conn)
        while conn.recv(1 << 16):
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    for s in [*held, srv]:
        s.close()


def test_a_test_without_an_answer_ends_at_its_deadline_with_an_error(silent_server: int) -> None:
    got = run_client(silent_server, timeout=1)
    assert got["sent"]["bytes"] == 100_000  # it sent, then waited for the answer
    assert got["error"] == "no end of the up test within 1 s (the stream or its answer " \
                           "never arrived)"


def test_a_stream_nobody_reads_ends_at_its_deadline(deaf_server: int) -> None:
    """The sender's non-blocking writes wait in poll() on a full window; the deadline
    still ends them (the control: the test above, where the stream went out)."""
    big = [{"test": "up", "id": "u", "bytes": 256 << 20}]
    got = run_client(deaf_server, timeout=1, tests=big)
    assert got["error"] == "no end of the up test within 1 s (the stream or its answer " \
                           "never arrived)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("size", [100_000, 48 << 20])
def test_the_same_test_against_the_measuring_server_has_no_error(size: int) -> None:
    """Exact byte counts, each way: 48 MiB fills the socket buffers, so the non-blocking
    writes come back short and must account for every byte they did write."""
    port = free_port()
    server = subprocess.Popen([*AGENT, "serve", "--address", "127.0.0.1", "--port", str(port),
                               "--timeout", "30", "--connections", "2"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        wait_until(lambda: '"ready"' in server.stdout.readline(), 30, "the server to listen")
        got = run_client(port, timeout=30, tests=[{**UP[0], "bytes": size}])
        down = run_client(port, timeout=30, tests=[
            {"test": "down", "id": "d", "bytes": size, "hash": True}])
        server.wait(timeout=30)
        served = [json.loads(x) for x in server.stdout.read().splitlines() if x.startswith("{")]
    finally:
        server.kill()
        server.communicate()
    assert "error" not in got, got
    assert got["server"]["sha256"] == got["sent"]["sha256"]
    assert got["server"]["bytes"] == got["sent"]["bytes"] == size
    assert "error" not in down, down
    sent_down = next(r for r in served if r.get("id") == "d")
    assert down["received"]["bytes"] == sent_down["bytes"] == size
    assert down["received"]["sha256"] == sent_down["sha256"]
