"""`labkit traffic --proto tipc`: the protocol comes from the feature registry, the agent
loads the TIPC endpoint by name without pyroute2 or scapy, and what TIPC cannot carry
is refused before anything starts, with one consistent limit."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from labkit.errors import UsageError
from labkit.features.tipc import endpoint
from labkit.features.tipc.uapi import MAX_MESSAGE
from labkit.lab.lab import Lab
from labkit.traffic import meter
from tests.conftest import ROOT, run_cli

PAIR = ROOT / "topologies" / "pair.yaml"


def test_the_registry_maps_tipc_to_its_endpoint() -> None:
    assert meter.protocols()[0] == "tcp" and "tipc" in meter.protocols()
    from labkit import features

    assert features.traffic_protocols()["tipc"] == endpoint.__name__


@pytest.mark.parametrize("kind", ["rdm", "seqpacket"])
def test_message_limit_says_what_is_allowed(kind: str) -> None:
    endpoint.check(kind, MAX_MESSAGE)  # the largest message the kernel takes is allowed
    with pytest.raises(UsageError) as info:
        endpoint.check(kind, MAX_MESSAGE + 1)
    text = info.value.render()
    assert f"at most {MAX_MESSAGE} bytes" in text and f"--size {MAX_MESSAGE} or less" in text
    assert "65536" not in text
    endpoint.check("stream", 1 << 20)  # a stream carries any size


def test_unknown_socket_kind_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="stream, rdm, seqpacket"):
        endpoint.check("dgram", 100)


def test_agent_loads_the_endpoint_without_heavy_packages() -> None:
    probe = ("import sys, labkit.traffic.agent as a; "
             "ep = a.endpoint('labkit.features.tipc.endpoint'); "
             "print(ep.SERVICE_TYPE); "
             # a bare 'pyroute2' entry is labkit's lazy stub (nothing loaded); any
             # real use of pyroute2 loads its submodules
             "print(sorted({m.split('.')[0] for m in sys.modules if m != 'pyroute2'} & "
             "{'pyroute2', 'scapy', 'yaml', 'typer', 'rich', 'cryptography'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True).stdout.split("\n")
    assert out[0] == str(endpoint.SERVICE_TYPE) and out[1] == "[]"


def test_agent_refuses_oversized_tipc_messages_itself() -> None:
    res = subprocess.run([sys.executable, "-m", "labkit.traffic.agent", "send", "--proto",
                          "tipc", "--endpoint", endpoint.__name__, "--socket", "rdm",
                          "--size", str(MAX_MESSAGE + 1)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and f"at most {MAX_MESSAGE} bytes" in res.stderr
    assert "Traceback" not in res.stderr


def test_meter_refuses_tipc_on_a_lab_without_it() -> None:
    lab = Lab.load(str(PAIR))  # never brought up: the check comes first
    with pytest.raises(UsageError, match="has no tipc"):
        meter.measure(lab, "a", "b", proto="tipc", socket="rdm", size=1000)
    with pytest.raises(UsageError, match="unknown traffic protocol"):
        meter.measure(lab, "a", "b", proto="sctp")


def test_ready_line_read_is_bounded() -> None:
    """The meter's server start (labkit.base.helper, tested fully in test_helper.py):
    bounded by its deadline, and what came after the ready line is not lost."""
    from labkit.base.helper import HelperFailed, start

    class Here:
        def popen(self, cmd: list[str], **kw: object) -> subprocess.Popen:
            return subprocess.Popen(cmd, **kw)  # type: ignore[call-overload]

    with pytest.raises(HelperFailed, match="no ready line within 0.3 s"):
        start(Here(), [sys.executable, "-c", "import time; time.sleep(30)"], what="x",
              ready='"ready"', timeout=0.3)
    with start(Here(), [sys.executable, "-c", "print('{\"ready\": true}'); print(1)"],
               what="x", ready='"ready"', timeout=30, text=True) as chatty:
        assert json.loads(chatty.line) == {"ready": True}
        rest = chatty.early + chatty.finish(timeout=30)[0]
        assert rest.strip() == "1"


def test_cli_tipc_traffic_on_a_lab_without_tipc(lab_up: Callable[..., Lab]) -> None:
    lab = lab_up(PAIR)
    res = run_cli("traffic", lab.name, "--proto", "tipc", "--socket", "rdm", "--from", "a",
                  "--to", "b", "--duration", "0.5")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"lab '{lab.name}' has no tipc" in res.stderr.replace("\n", " ")
    assert "Traceback" not in res.stderr and "Errno" not in res.stderr
    # positive control: the same lab carries tcp traffic through the same verb
    res = run_cli("traffic", lab.name, "--proto", "tcp", "--from", "a", "--to", "b",
                  "--duration", "0.5", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["bytes"] > 0
