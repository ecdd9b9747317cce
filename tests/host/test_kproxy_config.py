"""The `kproxy:` block: every mistake is refused at validation with its line, what is wrong
and the fix, before any namespace exists; what validates resolves to the addresses the
proxy will bind and connect to, and asks for the kernel capabilities its pairs use."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import TopologyError
from labkit.features.kproxy.config import KproxyConfig
from labkit.topology import loader
from tests.conftest import ROOT

LAB = """name: t
nodes:
  client: {{}}
  proxy: {{}}
  server: {{}}
links:
  - endpoints: [client:eth1, proxy:eth1]
  - endpoints: [proxy:eth2, server:eth1]
kproxy:
  pairs:
{pairs}
"""


def load(tmp_path: Path, pairs: str) -> KproxyConfig:
    path = tmp_path / "t.yaml"
    path.write_text(LAB.format(pairs=pairs))
    return loader.load(str(path)).features["kproxy"]  # type: ignore[no-any-return]


def refused(tmp_path: Path, pairs: str) -> str:
    with pytest.raises(TopologyError) as info:
        load(tmp_path, pairs)
    return info.value.render()


def test_the_shipped_topology_validates_with_one_pair_per_mode() -> None:
    cfg = loader.load(str(ROOT / "topologies" / "kproxy.yaml")).features["kproxy"]
    modes = {p.mode for p in cfg.pairs.values()}
    assert modes == {"sockmap", "splice", "boomerang", "direct"}
    assert any(p.rule is not None and p.mode == "sockmap" for p in cfg.pairs.values())
    km = cfg.pairs["km"]
    # clients reach the proxy on the link they share; the proxy reaches the server likewise
    assert str(km.entry) == "198.19.0.2:9001" and str(km.bind) == "0.0.0.0:9001"
    assert str(km.upstream) == "198.19.0.6:9101" and km.upstream.node == "server"
    assert cfg.needs() == ("bpf_sockmap",)


def test_a_pair_resolves_nodes_and_explicit_addresses(tmp_path: Path) -> None:
    cfg = load(tmp_path, "    - {name: p, mode: splice, proxy: proxy, listen: "
                         "'198.19.0.2:8000', upstream: '198.19.0.6:80', client: client}")
    pair = cfg.pairs["p"]
    assert str(pair.bind) == str(pair.entry) == "198.19.0.2:8000"
    assert pair.upstream.node == "server"  # the address's owner is found
    assert cfg.needs() == ()


def test_tls_in_splice_mode_needs_ktls(tmp_path: Path) -> None:
    cfg = load(tmp_path, "    - {name: t, mode: splice, proxy: proxy, listen: 9000, "
                         "upstream: 'server:9100', tls: true}\n"
                         "    - {name: b, mode: boomerang, proxy: proxy, listen: 9001, "
                         "upstream: 'server:9101', tls: true}")
    assert cfg.needs() == ("ktls",)


@pytest.mark.parametrize("pairs, line, words", [
    ("    - {name: p, mode: sockmapp, proxy: proxy, listen: 9000, upstream: 'server:1'}",
     11, ["mode 'sockmapp'", "Did you mean 'sockmap'?"]),
    ("    - {name: p, mode: sockmap, proxy: proxy, listen: 9000, upstream: 'server:1',\n"
     "       tls: true}", 12,
     ["cannot be a TLS pair in sockmap mode", "reject the combination of TLS and sockmap",
      "Use mode splice"]),
    ("    - {name: p, mode: direct, proxy: proxy, upstream: 'server:1'}", 11,
     ["is direct (no proxy), so it has no proxy"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 9000, upstream: 'sever:1'}", 11,
     ["'sever' is neither a node of the lab nor an IP address", "Did you mean 'server'?"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 9000, upstream: server}", 11,
     ["needs a node or address and a port", "NODE:PORT"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 70000, upstream: 'server:1'}", 11,
     ["port '70000' is not a port number"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: '198.19.0.6:80', "
     "upstream: 'server:1'}", 11, ["198.19.0.6 is not an address of node 'proxy'"]),
    ("    - {name: p, mode: splice, proxy: proxi, listen: 9000, upstream: 'server:1'}", 11,
     ["proxy 'proxi' is not a node", "Did you mean 'proxy'?"]),
    ("    - {name: p, mode: splice, listen: 9000, upstream: 'server:1'}", 11,
     ["(splice) needs `proxy:`"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 9000, upstream: 'server:1',\n"
     "       policy: {drop_prefix: TOOLONGPREFIX}}", 12,
     ["drop_prefix is 13 bytes; the verdict compares 1 to 8"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 9000, upstream: 'server:1',\n"
     "       policy: {drop_prefix: X, max_message: 100000}}", 12,
     ["max_message must be a whole number from 1 to 65536"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 9000, upstream: 'server:1',\n"
     "       policy: {drop_prefix: X, framing: u8}}", 12, ["framing 'u8' is not known"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 9000, upstream: 'server:1',\n"
     "       threshold: -3}", 12, ["threshold must be a positive number of MB/s"]),
    ("    - {name: p, mode: splice, proxy: proxy, listen: 9000, upstream: 'server:1',\n"
     "       lisen: 3}", 12, ["unknown key 'lisen'", "Did you mean 'listen'?"]),
])
def test_mistakes_are_located_and_explained(tmp_path: Path, pairs: str, line: int,
                                            words: list[str]) -> None:
    text = refused(tmp_path, pairs)
    assert f"t.yaml:{line}:" in text, text
    for word in words:
        assert word in text, text


def test_two_pairs_on_one_port_and_one_name_twice(tmp_path: Path) -> None:
    text = refused(tmp_path, "    - {name: a, mode: splice, proxy: proxy, listen: 9000, "
                             "upstream: 'server:1'}\n"
                             "    - {name: b, mode: sockmap, proxy: proxy, listen: 9000, "
                             "upstream: 'server:2'}\n"
                             "    - {name: a, mode: boomerang, proxy: proxy, listen: 9001, "
                             "upstream: 'server:3'}")
    assert "'a' and 'b' both listen on port 9000 of node 'proxy'" in text
    assert "pair name 'a' is used twice" in text


def test_a_kproxy_block_inside_a_node_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(LAB.format(pairs="    - {name: p, mode: direct, upstream: 'server:1'}")
                    .replace("  proxy: {}", "  proxy: {kproxy: {}}"))
    with pytest.raises(TopologyError) as info:
        loader.load(str(path))
    assert "inside node 'proxy' is not supported" in info.value.render()
