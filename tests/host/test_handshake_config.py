"""The `handshake:` block: what validates, what is refused with a located one-paragraph
error, which nodes get daemons; and placement: a handshake lab goes to a kernel with the
handshake netlink family, and is refused with the reason on this host and on debian-6.1
(whose 6.1 kernel has no CONFIG_NET_HANDSHAKE)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labkit.errors import MissingFeatureError, TopologyError
from labkit.features.handshake.config import HandshakeConfig
from labkit.lab import placement
from labkit.topology import loader
from tests import skips
from tests.conftest import ROOT, run_cli

LAB = """name: t
nodes:
  a: {{}}
  b: {{}}
  x: {{}}
links:
  - endpoints: [a:eth1, b:eth1]
handshake:
{block}
"""


def load(tmp_path: Path, block: str, extra_nodes: str = "") -> HandshakeConfig:
    path = tmp_path / "t.yaml"
    text = LAB.format(block=block)
    if extra_nodes:
        text = text.replace("  x: {}\n", extra_nodes)
    path.write_text(text)
    return loader.load(str(path)).features["handshake"]  # type: ignore[no-any-return]


def refused(tmp_path: Path, block: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load(tmp_path, block)
    return [p.render() for p in info.value.problems]


def test_nvme_block_finds_the_shared_link(tmp_path: Path) -> None:
    cfg = load(tmp_path, "  nvme: {target: a, host: b}")
    assert cfg.nvme is not None and cfg.nvme.path is not None
    assert cfg.nvme.path.server_iface == "eth1" and cfg.nvme.path.client_iface == "eth1"
    assert cfg.daemon_nodes == ["a", "b"]


def test_plaintext_consumer_runs_no_daemon(tmp_path: Path) -> None:
    cfg = load(tmp_path, "  nfs: {server: a, client: b, xprtsec: none}")
    assert cfg.daemon_nodes == []


def test_node_blocks_add_daemons(tmp_path: Path) -> None:
    cfg = load(tmp_path, "  pool: 2", "  x: {handshake: {}}\n")
    assert cfg.daemon_nodes == ["x"] and cfg.pool == 2


def test_a_tls_consumer_cannot_do_without_its_daemon(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(LAB.format(block="  nvme: {target: a, host: b}").replace(
        "  a: {}", "  a: {handshake: {daemon: false}}"))
    with pytest.raises(TopologyError) as info:
        loader.load(str(path))
    assert "daemon: false" in info.value.render() and "t.yaml:" in info.value.render()


@pytest.mark.parametrize(("block", "words"), [
    ("  nvme: {target: a, host: nosuch}", ["nosuch", "is not a node"]),
    ("  nvme: {target: a, host: a}", ["same node"]),
    ("  nvme: {target: a, host: x}", ["no a link or LAN", "Connect them"]),
    ("  nvme: {target: a, host: b, io_queues: 99}", ["io_queues", "1 to 8"]),
    ("  nfs: {server: a, client: b, xprtsec: tsl}", ["tsl", "Did you mean 'tls'"]),
    ("  pool: 0", ["pool", "1 to 64"]),
    ("  timeout: 9999", ["timeout", "1 to 600"]),
    ("  psk_modes: [psk_dh_ke]", ["psk_dh_ke", "psk_dhe_ke"]),
    ("  keylogs: true", ["unknown key 'keylogs'", "Did you mean 'keylog'"]),
])
def test_bad_input_is_located_and_explained(tmp_path: Path, block: str,
                                            words: list[str]) -> None:
    text = " ".join(refused(tmp_path, block))
    assert "t.yaml:" in text  # file:line:column
    for word in words:
        assert word in text, text


def test_shipped_topologies_validate() -> None:
    for name in ("nvme-tls", "nvme-tls-off", "nfs-tls", "nfs-tls-off"):
        topo = loader.load(str(ROOT / "topologies" / f"{name}.yaml"))
        assert "handshake" in topo.features


# -- placement ---------------------------------------------------------------------------


def test_this_host_is_refused_with_the_reason() -> None:
    if placement.host_probes()["handshake"].ok:
        skips.skip("host-kernel", "this machine's kernel has the handshake family: nothing "
                   "to refuse")
    topo = loader.load(str(ROOT / "topologies" / "nvme-tls.yaml"))
    with pytest.raises(MissingFeatureError) as info:
        placement.decide(topo, "host")
    assert "handshake needs handshake" in info.value.message
    assert os.uname().release in info.value.message


def test_debian_61_is_refused_with_the_reason() -> None:
    if placement.kernel_probes("debian-6.1") is None:
        pytest.skip("kernel debian-6.1 is not cached (`labkit vm kernels fetch debian-6.1`)")
    topo = loader.load(str(ROOT / "topologies" / "nfs-tls.yaml"))
    with pytest.raises(MissingFeatureError) as info:
        placement.decide(topo, "debian-6.1")
    assert "debian-6.1" in info.value.message and "handshake" in info.value.message


def test_automatic_placement_picks_a_kernel_with_the_family() -> None:
    if placement.kernel_probes("debian-6.12") is None:
        pytest.skip("kernel debian-6.12 is not cached (`labkit vm kernels fetch debian-6.12`)")
    topo = loader.load(str(ROOT / "topologies" / "nvme-tls.yaml"))
    where = placement.decide(topo)
    assert where.kind == "vm" and where.vms[0].kernel == "debian-6.12"


@pytest.mark.needs_root
@pytest.mark.parametrize("where", [["--host"], ["--vm", "debian-6.1"]])
def test_up_refuses_with_exit_2_and_no_traceback(where: list[str]) -> None:
    res = run_cli("up", str(ROOT / "topologies" / "nvme-tls.yaml"), *where)
    assert res.returncode == 2, res.stderr
    assert "handshake" in res.stderr and "Traceback" not in res.stderr


def test_feature_tls_names_the_labs_tls_feature() -> None:
    """`verify encryption --feature tls` (the issue's spelling) means the lab's one TLS feature:
    handshake in the NVMe lab, offload in the offload lab; a TIPC lab has none, and a name
    that is nothing is refused with the list."""
    from labkit.errors import UsageError
    from labkit.lab.lab import Lab

    root = Path(__file__).resolve().parents[2] / "topologies"
    assert Lab.load(str(root / "nvme-tls.yaml"))._verifying_feature("encryption", "tls") \
        == "handshake"
    assert Lab.load(str(root / "offload.yaml"))._verifying_feature("encryption", "tls") \
        == "offload"
    assert Lab.load(str(root / "nvme-tls.yaml"))._verifying_feature("encryption", None) \
        == "handshake"  # control: the default picks the same one
    with pytest.raises(UsageError, match="none of them"):
        Lab.load(str(root / "cluster.yaml"))._verifying_feature("encryption", "tls")
    with pytest.raises(UsageError, match="there is no feature 'tlz'"):
        Lab.load(str(root / "nvme-tls.yaml"))._verifying_feature("encryption", "tlz")
