"""Exercises files: located errors, the shipped files, and the parsers of what nodes print.

No lab needed: these run anywhere. The grading of real labs is in test_exercises_cli.py
(lab 01 on this kernel) and test_exercises_tipc*.py (labs 02 and 03 in a VM).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import TopologyError
from labkit.exercises import checks, loader, report, tipc
from labkit.topology import loader as topology_loader
from tests.conftest import ROOT

SHIPPED = sorted((ROOT / "labs" / "exercises").glob("*.yaml"))

GOOD = """\
exercises:
  - id: fwd-off
    title: t
    task: do it
    check: {type: sysctl, node: r, key: net.ipv4.ip_forward, value: 0}
"""


def problems(text: str, nodes: list[str] | None = None) -> list[str]:
    with pytest.raises(TopologyError) as info:
        loader.loads(text, "ex.yaml", nodes)
    return [p.render() for p in info.value.problems]


def test_a_good_file_loads_with_positions() -> None:
    got = loader.loads(GOOD, "ex.yaml", ["r"])
    ex = got.items[0]
    assert (ex.id, ex.checks[0].kind, ex.checks[0].params["key"]) == \
        ("fwd-off", "sysctl", "net.ipv4.ip_forward")
    assert ex.checks[0].name == "net.ipv4.ip_forward = 0 in r"
    assert (ex.checks[0].loc.file, ex.checks[0].loc.line) == ("ex.yaml", 5)


def test_unknown_key_is_located_with_did_you_mean() -> None:
    got = problems(GOOD.replace("    task: do it", "    taks: do it"))
    assert any(p.startswith("ex.yaml:4:5: unknown key 'taks' in exercise 'fwd-off'")
               and "Did you mean 'task'?" in p for p in got), got
    assert any("needs the key 'task'" in p for p in got), got


def test_unknown_check_kind_names_the_kinds() -> None:
    got = problems(GOOD.replace("type: sysctl", "type: sysctll"))
    assert len(got) == 1 and got[0].startswith("ex.yaml:5:19: check 1 of exercise 'fwd-off' "
                                               "has unknown type 'sysctll'."), got
    assert "Did you mean 'sysctl'?" in got[0] and "tipc_key" in got[0]


def test_unknown_parameter_of_a_kind_is_located() -> None:
    got = problems(GOOD.replace("key: net", "keys: net"))
    assert any("ex.yaml:5:" in p and "unknown key 'keys'" in p and "Did you mean 'key'?" in p
               for p in got), got


def test_unknown_node_gets_a_did_you_mean() -> None:
    got = problems(GOOD.replace("node: r,", "node: rr,"), nodes=["r", "h1"])
    assert got == ["ex.yaml:5:33: check 1 of exercise 'fwd-off' node names 'rr', which is "
                   "not a node of the lab. Did you mean 'r'? Nodes: r, h1."], got


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD + """\
  - id: fwd-off
    title: t
    task: again
    check:
      - {type: route, node: r, to: 10.0.0.1/8}
      - {type: counter, node: r, source: "iface:eth1:rx_pakets"}
    solution: {steps: [{node: r}]}
"""
    got = problems(text, ["r"])
    assert any("'fwd-off' is used twice" in p for p in got), got
    assert any("ex.yaml:10:" in p and "'10.0.0.1/8' is not valid" in p for p in got), got
    assert any("ex.yaml:11:" in p and "Did you mean 'rx_packets'?" in p for p in got), got
    assert any("ex.yaml:12:" in p and "needs either `run:`" in p for p in got), got


def test_bad_yaml_and_empty_file_are_located(tmp_path: Path) -> None:
    assert problems("exercises: [\n") [0].startswith("ex.yaml:2:1: YAML syntax error")
    assert problems("   \n") == ["ex.yaml:1:1: the exercises file is empty. It needs an "
                                 "`exercises:` list; see labs/exercises/01-first-lab.yaml."]
    with pytest.raises(TopologyError) as info:
        loader.load(str(tmp_path / "nope.yaml"))
    assert "no such exercises file" in info.value.render()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_exercise_files_load_against_their_topology(path: Path) -> None:
    got = loader.load(str(path))
    assert got.topology and len(got.items) >= 2
    for ex in got.items:
        assert ex.task and ex.hints and ex.solution and ex.solution.steps, ex.id
    # the topology names this very file back
    assert topology_loader.load(got.topology).exercises == str(path)


def test_parse_tcpdump_hex_of_tipc_and_udp_bearer_frames() -> None:
    # as tcpdump -e -x printed them in the lab (a v2 link state message on eth1; a v7 one
    # under key slot 1 with the master bit; a UDP bearer datagram carrying v7)
    text = (
        "23:16:33.967110 8a:8e:a2:b9:fb:b1 > 1a:53:9f:59:ab:05, ethertype TIPC (0x88ca), "
        "length 58: TIPC v2.0 ...\n"
        "\t0x0000:  4f48 002c 0000 0000 0002 0101 6e31 0000\n"
        "23:19:55.031461 26:c0:1f:e8:33:3a > ee:9c:80:f2:d1:ee, ethertype TIPC (0x88ca), "
        "length 90: TIPC v7.0 ...\n"
        "\t0x0000:  ef4c 0000 0000 0000 0000 02e0 6e31 0000\n"
        "23:19:56.000000 26:c0:1f:e8:33:3a > ee:9c:80:f2:d1:ee, ethertype IPv4 (0x0800), "
        "length 98: 198.18.1.4.6118 > 198.18.2.2.6118: UDP, length 56\n"
        "\t0x0000:  4500 0054 0000 4000 4011 0000 c612 0104\n"
        "\t0x0010:  c612 0202 17e6 17e6 0040 0000 ef8c 0000\n")
    frames = tipc.parse_frames(text)
    assert [(f["version"], f["tx_key"], f["master"]) for f in frames] == \
        [(2, 1, 0), (7, 1, 1), (7, 2, 1)]
    assert tipc.keys_in_use(frames) == ["master key slot 1", "master key slot 2"]


def test_parse_tipc_links_and_stats() -> None:
    assert tipc.parse_links("broadcast-link: up\nn1:eth1-n2:eth1: up\n"
                            "n1:eth1-n3:eth1: down\n") == \
        {"n1:eth1-n2:eth1": True, "n1:eth1-n3:eth1": False}
    stats = ("Link <broadcast-link>\n  RX packets:0\n\nLink <n1:eth1-n2:eth1>\n  ACTIVE\n"
             "  RX states:400 probes:199 naks:0 defs:0 dups:0\n"
             "  TX states:401 probes:200 naks:0 acks:1 retrans:0\n")
    assert tipc.parse_link_stats(stats) == {"n1:eth1-n2:eth1": 801}


def test_parse_counters_and_ss() -> None:
    assert checks.parse_counters("TlsCurrTxSw 1\nTlsTxSw 3\n", flat=True)["TlsTxSw"] == 3
    snmp = "Tcp: RtoAlgorithm OutSegs\nTcp: 1 42\nIp: Forwarding\nIp: 2\n"
    assert checks.parse_counters(snmp, flat=False) == \
        {"TcpRtoAlgorithm": 1, "TcpOutSegs": 42, "IpForwarding": 2}
    socks = checks.split_ss("ESTAB 0 0 1.1.1.1:443 2.2.2.2:5000\n\t cubic tcp-ulp-tls "
                            "rxconf: sw txconf: sw\nESTAB 0 0 1.1.1.1:22 2.2.2.2:6000\n\t cubic\n")
    assert len(socks) == 2 and "tcp-ulp-tls" in socks[0] and "tcp-ulp-tls" not in socks[1]


def test_report_rows_and_csv() -> None:
    items = loader.loads(GOOD, "ex.yaml").items
    data = {"learners": {"ana": {"fwd-off": {"started": 0.0, "checks": 2, "hints": 1,
                                              "passed_at": 86400.0, "last_outcome": "pass",
                                              "solution_shown": None, "solved": None}}}}
    rows = report.rows("lab1", data, items)
    assert rows[0]["learner"] == "ana" and rows[0]["passed_at"] == "1970-01-02T00:00:00Z"
    text = report.to_csv(rows)
    assert text.splitlines()[0].startswith("lab,learner,exercise,title,started,checks")
    assert text.splitlines()[1].startswith("lab1,ana,fwd-off,t,,2,pass,1970-01-02T00:00:00Z,1,0")
