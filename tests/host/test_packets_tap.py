"""The one capture every feature's verify uses (labkit.packets.tap): a burst arrives whole,
directions are told apart, a flood is bounded, drops are counted, and finish() is safe to
call twice. On lo of a scratch namespace (each datagram is seen leaving and arriving)."""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Iterator

import pytest

from labkit.base import netns
from labkit.base.wait import poll
from labkit.packets.tap import Tap

pytestmark = pytest.mark.needs_root


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"lkt-tap-{secrets.token_hex(3)}"
    netns.create(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        netns.delete(name)


def send(ns: str, payloads: list[bytes]) -> None:
    """To a bound receiver (a closed port would add ICMP errors quoting the payload)."""
    with netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        with netns.entered(ns):
            rx.bind(("127.0.0.1", 9))
        for p in payloads:
            tx.sendto(p, ("127.0.0.1", 9))


def test_a_burst_arrives_whole_with_directions(ns: str) -> None:
    marker = b"LKTAP" + secrets.token_hex(4).encode()
    tap = Tap(ns, "lo", label="n:lo")
    send(ns, [marker + bytes(60000)] * 40)  # 2.4 MB at once: past the default buffer
    assert poll(lambda: tap.count(marker) >= 80, 10), tap.count(marker)
    tap.wait_quiet(0.3, 5)
    frames = tap.finish()
    assert tap.finish() is frames  # twice is harmless
    assert tap.count(marker) == 80 and tap.dropped == 0 and tap.truncated == 0
    assert sorted(set(tap.outgoing)) == [False, True]  # lo: each leaves and arrives
    assert tap.label == "n:lo"


def test_a_flood_is_bounded(ns: str) -> None:
    tap = Tap(ns, "lo", max_frames=10)
    send(ns, [b"x" * 100] * 50)
    assert poll(lambda: len(tap.frames) >= 10, 10)
    tap.wait_quiet(0.3, 5)
    assert len(tap.finish()) == 10  # the control above shows frames did arrive
