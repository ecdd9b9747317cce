"""A lab VM reads its topology in the wire form the host sends (labkit.topology.loader.wire),
not as YAML: the lab it builds, and every error it could report, must be the ones the YAML
gives, positions included (a kernel's refusal names the topology's line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import TopologyError
from labkit.topology import loader, located
from tests.conftest import ROOT

SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))
BAD = sorted((ROOT / "tests" / "fixtures" / "bad").glob("*.yaml"))


def read(path: Path) -> object:
    """The file's tree as the loader reads it, or None where YAML itself refuses it."""
    try:
        return located.load_text(path.read_text(), str(path))
    except TopologyError:
        return None


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_topology_reads_the_same_from_its_wire_form(path: Path) -> None:
    topo = loader.load(str(path))
    wire = loader.wire(topo)
    assert wire is not None
    again = loader.loads_wire(wire, topo.source, topo.path)
    assert again == topo  # every node, link, address, feature config and position
    assert again.source == topo.source


@pytest.mark.parametrize("path", [p for p in BAD if read(p) is not None],
                         ids=[p.stem for p in BAD if read(p) is not None])
def test_a_bad_topology_fails_the_same_from_its_wire_form(path: Path) -> None:
    with pytest.raises(TopologyError) as from_yaml:
        loader.load(str(path))
    wire = located.wire_text(read(path))
    assert wire is not None
    with pytest.raises(TopologyError) as from_wire:
        loader.loads_wire(wire, path.read_text(), str(path))
    got = [(e.message, e.hint, e.loc) for e in from_wire.value.problems]
    assert got == [(e.message, e.hint, e.loc) for e in from_yaml.value.problems]


def test_positions_survive_the_wire() -> None:
    tree = located.load_text("name: x\nnodes:\n  a: {}\n  b:\n    - 1\n    - two\n", "t.yaml")
    back = located.from_wire(located.to_wire(tree), "t.yaml")
    assert back == tree
    assert back.key_loc("nodes").line == 2 and back["nodes"].key_loc("b").line == 4
    assert back["nodes"]["b"].item_loc(1).line == 6
    assert back["nodes"]["b"].item_loc(1) == tree["nodes"]["b"].item_loc(1)


def test_what_json_cannot_carry_is_read_from_the_text() -> None:
    """A YAML date or binary scalar has no JSON form: no wire, so the guest reads the
    YAML. Control: the same document without it has one."""
    assert located.wire_text(located.load_text("name: x\nwhen: 2026-12-07\n", "t")) is None
    assert located.wire_text(located.load_text("name: x\nblob: !!binary aGk=\n", "t")) is None
    assert located.wire_text(located.load_text("name: x\nnan: .nan\n", "t")) is None
    assert located.wire_text(located.load_text("name: x\nwhen: '2026-12-07'\n", "t"))


def test_a_wire_past_its_bound_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = located.load_text("name: x\n", "t")
    assert located.wire_text(tree) is not None
    monkeypatch.setattr(located, "MAX_WIRE", 10)
    assert located.wire_text(tree) is None
