"""The SSL-proxy variant on a kernel with kTLS: the proxy terminates TLS on both legs
(kTLS joined with splice, or OpenSSL in the proxy process), the data arrives intact, and
a capture of both legs shows nothing but TLS records, the test's own plaintext marker
nowhere; a plaintext pair through the same capture shows the check can fail. And why the
in-kernel SSL proxy is not sockmap: this kernel refuses kTLS sockets in a sockmap.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from labkit.base import netns
from labkit.features.kproxy import measure
from labkit.features.kproxy.lab import config_of
from labkit.features.kproxy.wire import read_tls
from labkit.ktls import ciphers, sockopt, uapi
from labkit.lab import names
from labkit.lab.lab import Lab
from labkit.packets.tap import Tap
from labkit.packets.tcpstream import streams
from tests import skips
from tests.conftest import ROOT, renamed, unique

pytestmark = pytest.mark.kernel
TOPOLOGY = ROOT / "topologies" / "kproxy-tls.yaml"
PLAIN_PAIR = """    - {name: tp, mode: splice, proxy: proxy, listen: 9446,
       upstream: "server:9546", client: client}
"""
MARKER = b'"test": "up"'  # in every measurement's control message, in plaintext


@pytest.fixture(autouse=True)
def no_leftover_namespaces() -> Iterator[None]:
    """The module's lab outlives single tests; its removal is checked at module end."""
    yield


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    name = unique("kt")
    # this kernel is the one under test: no `kernel:` line (it would ask for a VM)
    text = re.sub(r"^kernel:.*\n", "", renamed(TOPOLOGY, name), flags=re.M)
    # the plaintext pair joins the `pairs:` list, which the topology's `checks:` follow
    text = re.sub(r"^(?=checks:)", PLAIN_PAIR, text, count=1, flags=re.M) \
        if re.search(r"^checks:", text, re.M) else text + PLAIN_PAIR
    path = tmp_path_factory.mktemp("kproxy-tls") / f"{name}.yaml"
    path.write_text(text)
    running = Lab.load(str(path)).up(on="host")
    try:
        yield running
    finally:
        running.down()
        assert not netns.list_names(names.lab_prefix(name))


ALL_KERNELS = "LABKIT_KPROXY_ALL_KERNELS"


def openssl_pair_runs_here() -> bool:
    """The user-space (OpenSSL) pair is the same code on every kernel: it runs on 6.12 and
    later only, which keeps the kernel tier on older kernels to what differs there."""
    if os.environ.get(ALL_KERNELS) == "1":
        return True
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return found is None or (int(found[1]), int(found[2])) >= (6, 12)


def tls_stat(lab: Lab) -> dict[str, int]:
    out = lab.node("proxy").run(["cat", "/proc/net/tls_stat"], check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}


def legs(lab: Lab, pair_name: str) -> dict[str, Any]:
    """Run 1 MiB each way (sha256 checked) through the pair while capturing both of the
    proxy's legs; each direction's stream read as TLS records."""
    pair = config_of(lab).pairs[pair_name]
    assert pair.bind is not None
    proxy = lab.node("proxy").ns
    sniffers = {"client leg": Tap(proxy, "eth1", max_bytes=512 << 20),
                "server leg": Tap(proxy, "eth2", max_bytes=512 << 20)}
    try:
        result = measure.integrity(lab, measure.path_of(lab, pair_name, None), 1 << 20)
    finally:
        for s in sniffers.values():
            s.wait_quiet(0.3, 10)  # the closes' last frames are in
        frames = {leg: s.finish() for leg, s in sniffers.items()}
    ports = {"client leg": pair.bind.port, "server leg": pair.upstream.port}
    seen: dict[str, Any] = {}
    for leg, captured in frames.items():
        for (_, dst), stream in streams(captured, ports[leg]).items():
            data, hole = stream.data()
            if data:
                way = "toward the listener" if dst[1] == ports[leg] else "back"
                reading = read_tls(data)
                if hole:  # what lies after it was not read: no verdict on it
                    reading.problem = f"a hole in the capture after byte {len(data)}"
                seen.setdefault(f"{leg}, {way}", []).append((reading, MARKER in data))
    return {"integrity": result, "directions": seen,
            "truncated": sum(s.truncated for s in sniffers.values()),
            "dropped": sum(s.dropped for s in sniffers.values())}


@pytest.mark.needs("ktls", "bpf_sockmap")
@pytest.mark.parametrize("pair", ["ts", "tb"], ids=["ktls-splice", "openssl-boomerang"])
def test_the_ssl_proxy_is_intact_and_both_legs_carry_only_tls(lab: Lab, pair: str) -> None:
    if pair == "tb" and not openssl_pair_runs_here():
        skips.skip("first-kernel-only", f"the OpenSSL proxy does no TLS in the kernel, so it "
                   f"runs on one kernel (6.12 or later), not {os.uname().release}; set "
                   f"{ALL_KERNELS}=1 to run it here too")
    before = tls_stat(lab)
    got = legs(lab, pair)
    after = tls_stat(lab)
    assert got["integrity"]["intact"], got["integrity"]
    assert (got["truncated"], got["dropped"]) == (0, 0)  # the capture has no holes
    assert len(got["directions"]) == 4  # both ways on both legs
    for direction, readings in got["directions"].items():
        for reading, marker in readings:
            assert reading.only_tls, (direction, reading.problem)
            assert reading.records.get("application_data", 0) > 0, direction
            assert not marker, f"{direction}: the plaintext marker crossed the wire"
    kernel_tx = after["TlsTxSw"] - before["TlsTxSw"]
    kernel_rx = after["TlsRxSw"] - before["TlsRxSw"]
    if pair == "ts":  # two connections, kTLS TX and RX on both of the proxy's sockets
        assert (kernel_tx, kernel_rx) == (4, 4)
    else:  # OpenSSL in the proxy: the kernel did no TLS for it
        assert (kernel_tx, kernel_rx) == (0, 0)


@pytest.mark.needs("bpf_sockmap")
def test_a_plaintext_pair_fails_the_same_check(lab: Lab) -> None:
    got = legs(lab, "tp")
    assert got["integrity"]["intact"]
    readings = [r for rs in got["directions"].values() for r in rs]
    assert readings and not any(reading.only_tls for reading, _ in readings)
    assert any(marker for _, marker in readings)


KEY = sockopt.crypto_info(uapi.TLS_1_3_VERSION, ciphers.BY_SHORT["aes-gcm-128"], b"\x02" * 16,
                         b"\x03" * 4, b"\x01" * 8, 0)  # a fixed test key, not a secret


@pytest.mark.needs("ktls", "bpf_sockmap")
def test_the_kernel_refuses_ktls_sockets_in_a_sockmap(scratch_ns: str) -> None:
    """The reason the in-kernel SSL proxy joins its kTLS legs with splice, not sockmap."""
    from labkit.features.kproxy.sockmap import Sockmap

    made = []

    def pair(port: int) -> tuple[socket.socket, socket.socket]:
        listener = netns.socket_in(scratch_ns, socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        client = netns.socket_in(scratch_ns, socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", port))
        accepted, _ = listener.accept()
        made.extend([listener, client, accepted])
        return client, accepted

    try:
        with Sockmap(None) as sm:
            a, b = pair(7101)
            sm.join(a, b)  # positive control: plain TCP sockets join
            c, d = pair(7102)
            sockopt.install(c, KEY)
            with pytest.raises(OSError) as info:
                sm.join(c, d)
            assert info.value.errno == errno.EINVAL
    finally:
        for s in made:
            s.close()
