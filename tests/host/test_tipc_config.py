"""The `tipc:` block is validated against the kernel's limits with the same numbers the
netlink client applies, so whatever `labkit validate` accepts, `up` can configure, and
whatever the client would refuse is refused at validation, before any namespace exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import TopologyError, UsageError
from labkit.features.tipc import messages, uapi
from labkit.topology import loader

PAIR = """name: t
nodes:
  a: {{tipc: {{bearers: [eth1]}}}}
  b: {{tipc: {{bearers: [eth1]}}}}
links:
  - endpoints: [a:eth1, b:eth1]
tipc:
{block}
"""


def validates(tmp_path: Path, block: str) -> bool:
    path = tmp_path / "t.yaml"
    path.write_text(PAIR.format(block=block))
    try:
        loader.load(str(path))
    except TopologyError:
        return False
    return True


def client_accepts(build: object) -> bool:
    try:
        build()  # type: ignore[operator]
    except UsageError:
        return False
    return True


@pytest.mark.parametrize("net_id", [uapi.NET_ID_MIN - 1, uapi.NET_ID_MIN, uapi.NET_ID_MAX,
                                    uapi.NET_ID_MAX + 1])
def test_net_id_validation_matches_the_client(tmp_path: Path, net_id: int) -> None:
    ok = validates(tmp_path, f"  net_id: {net_id}")
    assert ok == client_accepts(lambda: messages.build_net_set(net_id))
    assert ok == (uapi.NET_ID_MIN <= net_id <= uapi.NET_ID_MAX)


@pytest.mark.parametrize("minutes", [0, 60, uapi.REKEYING_MAX, uapi.REKEYING_MAX + 1])
def test_rekeying_validation_matches_the_client(tmp_path: Path, minutes: int) -> None:
    ok = validates(tmp_path, f"  encryption: {{mode: master, rekeying: {minutes}}}")
    assert ok == client_accepts(lambda: messages.rekeying_value(minutes))
    assert ok == (minutes <= uapi.REKEYING_MAX)


@pytest.mark.parametrize("bits", [128, 192, 256, 64, 512])
def test_key_bits_validation_matches_the_key_struct(tmp_path: Path, bits: int) -> None:
    ok = validates(tmp_path, f"  encryption: {{mode: master, key_bits: {bits}}}")
    key = bytes(bits // 8 + 4)
    assert ok == client_accepts(lambda: messages.aead_key(key))


def test_bearer_count_limit_is_the_kernels(tmp_path: Path) -> None:
    nodes = "\n".join(f"  - endpoints: [a:eth{i}, b:eth{i}]" for i in range(1, 5))

    def topo(n: int) -> str:
        bearers = ", ".join(f"eth{i}" for i in range(1, n + 1))
        return (f"name: t\nnodes:\n  a: {{tipc: {{bearers: [{bearers}]}}}}\n"
                f"  b: {{tipc: {{bearers: [eth1]}}}}\nlinks:\n{nodes}\n")

    path = tmp_path / "t.yaml"
    path.write_text(topo(uapi.MAX_BEARERS))
    loader.load(str(path))
    path.write_text(topo(uapi.MAX_BEARERS + 1))
    with pytest.raises(TopologyError, match=f"at most {uapi.MAX_BEARERS}"):
        loader.load(str(path))


def test_a_good_key_file_validates(tmp_path: Path) -> None:
    key = tmp_path / "k.hex"
    key.write_text(bytes(range(20)).hex() + "\n")
    key.chmod(0o600)
    assert validates(tmp_path, f"  encryption: {{mode: cluster, key_file: {key}}}")
    key.chmod(0o640)
    assert not validates(tmp_path, f"  encryption: {{mode: cluster, key_file: {key}}}")
    key.chmod(0o600)
    assert not validates(tmp_path, f"  encryption: {{mode: cluster, key_bits: 256, "
                                   f"key_file: {key}}}")
    assert not validates(tmp_path, f"  encryption: {{mode: cluster, key_file: {key}.nope}}")


def test_key_file_problems_never_show_the_key(tmp_path: Path) -> None:
    key = tmp_path / "k.hex"
    secret = bytes(range(7, 23)).hex()  # 16 bytes: the salt is missing
    key.write_text(secret + "\n")
    key.chmod(0o644)
    path = tmp_path / "t.yaml"
    path.write_text(PAIR.format(block=f"  encryption: {{mode: cluster, key_file: {key}}}"))
    with pytest.raises(TopologyError) as info:
        loader.load(str(path))
    text = " ".join(p.render() for p in info.value.problems)
    assert "has 16 bytes" in text and "readable by others" in text
    assert secret not in text


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-encrypted.yaml"])
def test_shipped_lab_descriptions_name_their_own_lab(name: str) -> None:
    import re

    topo = loader.load(str(Path(__file__).resolve().parents[2] / "topologies" / name))
    text = (topo.description or "") + Path(topo.path).read_text().split("\nname:")[0]
    commands = re.findall(r"labkit (?:verify \w+|tipc status|traffic|inject|status|down) "
                          r"([\w.-]+)", text)
    assert commands, "the description shows no command"
    assert set(commands) == {topo.name}, commands
