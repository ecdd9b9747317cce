"""The `offload:` block: every mistake is refused at validation with its line, what is
wrong and the fix, before any namespace exists; what validates says which links become
tlsnic pairs (the lab builder reads it), which knobs each NIC gets, and what netem
arguments its impairment becomes. TLS 1.3 validates, with a note that it will not be
offloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import TopologyError
from labkit.features.offload.config import (
    TLS13_NOTE,
    Impairment,
    OffloadConfig,
    impairment_problems,
    parse_ms,
    parse_percent,
    parse_size,
)
from labkit.lab.build import link_kind
from labkit.topology import loader
from tests.conftest import ROOT

LAB = """name: t
nodes:
  client: {{}}
  server: {{}}
  other: {{}}
links:
  - endpoints: [client:eth1, server:eth1]
  - endpoints: [client:eth2, other:eth1]
lans:
  lan1: {{endpoints: [server:eth2, other:eth2]}}
offload:
{block}
"""


def load(tmp_path: Path, block: str) -> OffloadConfig:
    path = tmp_path / "t.yaml"
    path.write_text(LAB.format(block=block))
    return loader.load(str(path)).features["offload"]  # type: ignore[no-any-return]


def refused(tmp_path: Path, block: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load(tmp_path, block)
    return [p.render() for p in info.value.problems]


def test_the_shipped_topology_makes_one_tlsnic_link() -> None:
    topo = loader.load(str(ROOT / "topologies" / "offload.yaml"))
    cfg: OffloadConfig = topo.features["offload"]
    nic = cfg.nic()
    assert (nic.label, nic.strategy, nic.peer.label) == ("client:eth1", "mlx5", "server:eth1")
    assert [link_kind(topo, link) for link in topo.links] == ["tlsnic"]
    assert cfg.version == "1.2" and not cfg.notes
    assert cfg.traffic.receiver == "s_server" and cfg.traffic.size == 4 << 20


def test_only_the_nics_links_change_kind(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(LAB.format(block="  nics: {client:eth2: {strategy: nfp}}"))
    topo = loader.load(str(path))
    kinds = {link.name: link_kind(topo, link) for link in topo.links}
    assert kinds == {"client:eth1--server:eth1": "veth", "client:eth2--other:eth1": "tlsnic"}


def test_knobs_and_impairment_resolve(tmp_path: Path) -> None:
    cfg = load(tmp_path, """  nics:
    client:eth1:
      strategy: drop
      offload: false
      refuse_add: true
      corrupt_every: 7
      max_ctx: 2
      impair: {loss: 1.5%, delay: 5ms, reorder: 25%}
  traffic: {receiver: ktls, port: 9443, size: 512KiB, threshold: 1.5}""")
    nic = cfg.nic("client:eth1")
    assert nic.knobs() == {"strategy": "drop", "refuse_add": "1", "corrupt_every": "7",
                           "max_ctx": "2"}
    assert nic.offload is False
    assert nic.impair.netem_args() == ["delay", "5ms", "reorder", "25%", "50%", "loss", "1.5%"]
    assert nic.impair.at == "wire" and nic.impair.per_segment
    t = cfg.traffic
    assert (t.nic, t.receiver, t.port, t.size, t.threshold) == ("client:eth1", "ktls", 9443,
                                                                512 << 10, 1.5)


def test_tls13_validates_with_a_note(tmp_path: Path) -> None:
    cfg = load(tmp_path, '  tls: {version: "1.3"}\n  nics: {client:eth1: {}}')
    assert cfg.version == "1.3" and cfg.notes == [TLS13_NOTE]
    assert "txconf: sw" in TLS13_NOTE
    # YAML reads an unquoted 1.3 as a number: taken the same way
    assert load(tmp_path, "  tls: {version: 1.3}\n  nics: {client:eth1: {}}").version == "1.3"


@pytest.mark.parametrize("block, words", [
    ("  nics: {client:eth1: {strategy: mlx4}}", ["4:", "strategy 'mlx4'", "Did you mean 'mlx5'"]),
    ("  nics: {server:eth2: {}}", ["is on LAN 'lan1'", "point-to-point"]),
    ("  nics: {client:eth9: {}}", ["no interface 'eth9'", "Its interfaces: eth1, eth2"]),
    ("  nics: {nobody:eth1: {}}", ["names node 'nobody'"]),
    ("  nics: {eth1: {}}", ["is not NODE:INTERFACE"]),
    ("  nics: {}", ["offload has no NICs"]),
    ("  nics: {client:eth1: {max_ctx: -1}}", ["max_ctx must be a whole number from 0 to"]),
    ("  nics: {client:eth1: {corrupt_every: 4294967296}}", ["corrupt_every must be"]),
    ("  nics: {client:eth1: {bogus: 1}}", ["unknown key 'bogus'"]),
    ("  nics: {client:eth1: {impair: {loss: 120%}}}", ["loss '120%' is not a value from 0"]),
    ("  nics: {client:eth1: {impair: {reorder: 5%}}}", ["reorders without a delay"]),
    ("  nics: {client:eth1: {impair: {at: nic, delay: 5ms}}}",
     ["NIC's own qdisc", "tls_device drops", "at: wire"]),
    ("  nics: {client:eth1: {impair: {at: peer}}}", ["at 'peer'"]),
    ("  tls: {version: '1.1'}\n  nics: {client:eth1: {}}", ["version '1.1'"]),
    ("  tls: {cipher: chacha20}\n  nics: {client:eth1: {}}", ["cipher 'chacha20'"]),
    ("  nics: {client:eth1: {}}\n  traffic: {nic: client:eth2}", ["not one of the lab's"]),
    ("  nics: {client:eth1: {}}\n  traffic: {receiver: gnutls}", ["receiver 'gnutls'"]),
    ("  nics: {client:eth1: {}}\n  traffic: {size: 2GiB}", ["is not a size from 1 byte"]),
    ("  nics: {client:eth1: {}}\n  traffic: {threshold: 0}", ["not a positive number"]),
])
def test_mistakes_are_located_and_explained(tmp_path: Path, block: str,
                                            words: list[str]) -> None:
    problems = refused(tmp_path, block)
    text = "\n".join(problems)
    assert all(p.startswith(str(tmp_path / "t.yaml") + ":") for p in problems), text
    for word in words:
        assert word in text, text


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = refused(tmp_path, """  nics:
    client:eth1: {strategy: x, impair: {at: nic, delay: 5ms}}
    nobody:eth1: {}
  traffic: {receiver: y}""")
    assert len(problems) == 4, problems


def test_a_node_level_block_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes:\n  a: {offload: {}}\n  b: {}\nlinks:\n"
                    "  - endpoints: [a:eth1, b:eth1]\noffload: {nics: {a:eth1: {}}}\n")
    with pytest.raises(TopologyError) as info:
        loader.load(str(path))
    assert "inside node 'a' is not supported" in info.value.render()


def test_a_nic_cannot_join_two_kernels(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes:\n  a: {kernel: debian-6.1}\n  b: {}\nlinks:\n"
                    "  - endpoints: [a:eth1, b:eth1]\noffload: {nics: {a:eth1: {}}}\n")
    with pytest.raises(TopologyError) as info:
        loader.load(str(path))
    assert "different kernels" in info.value.render()


def test_runtime_impairments_follow_the_same_rules() -> None:
    assert impairment_problems(Impairment(loss=5), "x") == []
    assert impairment_problems(Impairment(at="wire", delay_ms=5, reorder=25), "x") == []
    [(key, message, _)] = impairment_problems(Impairment(at="nic", delay_ms=5), "x")
    assert key == "delay" and "orphans" in message
    [(key, _, _)] = impairment_problems(Impairment(reorder=5), "x")
    assert key == "reorder"
    assert Impairment().netem_args() == [] and not Impairment().active


def test_readers() -> None:
    assert parse_size("4MiB") == 4 << 20 and parse_size("512 KiB") == 512 << 10
    assert parse_size("1G") == 1 << 30 and parse_size(100) == 100
    assert parse_size("4 MB?") is None and parse_size(True) is None
    assert parse_percent("1%") == 1.0 and parse_percent(0.5) == 0.5
    assert parse_percent("x%") is None
    assert parse_ms("5ms") == 5.0 and parse_ms("1s") == 1000.0 and parse_ms(2) == 2.0
    assert parse_ms("5 min") is None


def test_counter_rows_for_live_panels() -> None:
    """One row per NIC, the same columns reading after reading; netem's loss as JSON
    prints it (a fraction) shown in percent."""
    from labkit.features.offload.feature import FEATURE

    status = {"nics": {"client:eth1": {
        "knobs": {"strategy": "nfp"}, "tls_hw_tx_offload": True,
        "counters": {"tx_tls_encrypted_packets": 10, "tx_tls_ooo": 2, "tls_tx_fallback": 2},
        "impair": {"netem": [{"at": "wire", "options": {"limit": 1000,
                                                        "loss-random": {"loss": 0.05}}}]}}}}
    rows = FEATURE.counters(status)
    assert list(rows) == ["client:eth1"]
    row = rows["client:eth1"]
    assert row["strategy"] == "nfp" and row["offload"] == "on" and row["loss"] == "5%"
    assert row["fast pkts"] == 10 and row["ooo"] == 2 and row["fallback"] == 2
    assert row["dropped"] == 0
    empty = FEATURE.counters({"nics": {"client:eth1": {"counters": {}, "impair": {}}}})
    assert list(empty["client:eth1"]) == list(row) and empty["client:eth1"]["loss"] == "0%"
    assert FEATURE.counters({}) == {}
