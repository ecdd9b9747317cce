"""YAML loaded into plain dicts and lists that remember where every key and value stood.

PyYAML's composer keeps marks on every node; walking the node tree ourselves keeps them,
and lets us refuse duplicate keys (which PyYAML silently overwrites) with both positions.

Aliases are where a small file becomes a huge tree: ten nested aliases of ten items each
("billion laughs") compose in microseconds and would then walk 10^9 values. Before any
tree is built, _scan reads the parser's events once and refuses the file at the value that
crosses MAX_VALUES, the level past MAX_DEPTH, the alias that takes what aliases stand for
past MAX_ALIASED_VALUES, or an alias inside its own anchor. The file itself is read by
labkit.base.files.read_bounded: a regular file of bounded size, or a located refusal.

PyYAML is imported only to read text: a lab VM's daemon gets the tree already read, in
its wire form (to_wire/from_wire, positions included), and never imports yaml (~0.5 s
under TCG emulation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.base import files
from labkit.errors import LabkitError, Loc, TopologyError

if TYPE_CHECKING:
    import yaml


class LMap(dict):
    """A mapping whose keys and values know their file positions."""

    loc: Loc
    key_locs: dict[str, Loc]
    val_locs: dict[str, Loc]

    def key_loc(self, key: str) -> Loc:
        return self.key_locs.get(key, self.loc)

    def val_loc(self, key: str) -> Loc:
        return self.val_locs.get(key, self.loc)


class LList(list):
    """A sequence whose items know their file positions."""

    loc: Loc
    item_locs: list[Loc]

    def item_loc(self, index: int) -> Loc:
        return self.item_locs[index] if index < len(self.item_locs) else self.loc


# Values an alias may stand for, summed over every alias in a file. A 2048-node lab that
# gives each node an aliased block of 40 values stays below it; a "billion laughs" file
# crosses it within a few aliases.
MAX_ALIASED_VALUES = 100_000
# Values written in a file (scalars, mappings, lists; aliases counted above). A 2048-node
# lab with ~40 values per node stays below it; counting stops at the value that crosses
# it, so a 200,000-node file is refused after reading a part of it, in well under a second.
MAX_VALUES = 100_000
# Nesting depth: the composer and the walker recurse once per level.
MAX_DEPTH = 64


def _loader(text: str) -> Any:
    """libyaml's parser and composer (C) where PyYAML has them: ten times faster than the
    pure Python ones, same nodes and marks."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)


def _loc(path: str, node: yaml.Node) -> Loc:
    return Loc(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _mark_loc(path: str, mark: Any) -> Loc:
    return Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path)


def _refuse(path: str, event: Any, message: str, hint: str) -> TopologyError:
    return TopologyError([LabkitError(message, hint=hint,
                                      loc=_mark_loc(path, event.start_mark))])


def _scan(text: str, path: str) -> None:
    """Refuse a document too large, too deep or too aliased, before any tree is built.

    One pass over the parser's events, stopped at the first event past a bound: the size
    of each anchored node (itself plus everything below it, aliases expanded) is known at
    its end event, so an alias costs one dictionary lookup and counting is linear in the
    file, however large the tree it describes.
    """
    from yaml.events import (
        AliasEvent,
        CollectionEndEvent,
        CollectionStartEvent,
        ScalarEvent,
    )

    reader = _loader(text)
    open_nodes: list[list[Any]] = []  # [anchor, size] of each collection not yet ended
    sizes: dict[str, int] = {}
    values = aliased = 0
    try:
        while reader.check_event():
            event = reader.get_event()
            if isinstance(event, (ScalarEvent, CollectionStartEvent)):
                values += 1
                if values > MAX_VALUES:
                    raise _refuse(path, event, f"the file holds more than {MAX_VALUES:,} "
                                  "values (keys, items, mappings and lists), the most labkit "
                                  "reads from one file.",
                                  "Is this the right file? Split a lab this large into "
                                  "several labs.")
            if isinstance(event, ScalarEvent):
                size = 1
            elif isinstance(event, CollectionStartEvent):
                open_nodes.append([event.anchor, 1])
                if len(open_nodes) > MAX_DEPTH:
                    raise _refuse(path, event, f"the file nests mappings and lists more than "
                                  f"{MAX_DEPTH} levels deep.",
                                  "Flatten it: a topology needs a few levels only.")
                continue
            elif isinstance(event, CollectionEndEvent):
                anchor, size = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = size
            elif isinstance(event, AliasEvent):
                if any(anchor == event.anchor for anchor, _ in open_nodes):
                    raise _refuse(path, event, f"the alias *{event.anchor} is used inside "
                                  "the value it names, which makes an endless structure.",
                                  "Move the alias out of its own anchored block, or write "
                                  "the values out.")
                size = sizes.get(event.anchor, 1)  # undefined: the composer says so
                aliased += size
                if aliased > MAX_ALIASED_VALUES:
                    raise _refuse(path, event, f"the alias *{event.anchor} takes what this "
                                  "file's YAML aliases stand for past "
                                  f"{MAX_ALIASED_VALUES:,} values, the most labkit reads "
                                  "through aliases (nested aliases grow exponentially: a "
                                  "\"billion laughs\" file).",
                                  "Write the values out, or alias smaller blocks fewer "
                                  "times.")
            else:
                continue  # stream and document events
            if isinstance(event, ScalarEvent) and event.anchor is not None:
                sizes[event.anchor] = 1
            if open_nodes:
                open_nodes[-1][1] += size
    finally:
        reader.dispose()


class _Walker:
    def __init__(self, path: str) -> None:
        import yaml

        self.yaml = yaml
        self.path = path
        self.loader = yaml.SafeLoader("")
        self.problems: list[LabkitError] = []

    def value(self, node: yaml.Node) -> Any:
        yaml = self.yaml
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node)
        if isinstance(node, yaml.SequenceNode):
            out = LList(self.value(item) for item in node.value)
            out.loc = _loc(self.path, node)
            out.item_locs = [_loc(self.path, item) for item in node.value]
            return out
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.MappingNode) -> LMap:
        yaml = self.yaml
        out = LMap()
        out.loc = _loc(self.path, node)
        out.key_locs, out.val_locs = {}, {}
        for key_node, val_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(LabkitError(
                    "YAML merge keys (<<) are not supported in topology files.",
                    hint="Write the keys out, or put shared settings under `defaults:`.",
                    loc=_loc(self.path, key_node)))
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "":
                self.problems.append(LabkitError(
                    "a mapping key must be a plain name.", loc=_loc(self.path, key_node)))
                continue
            key = key_node.value  # as written: YAML would turn `01` into 1 and `on` into True
            if key in out:
                first = out.key_locs[key]
                self.problems.append(LabkitError(
                    f"duplicate key '{key}' (first defined at line {first.line}).",
                    hint="Each name may appear once in a mapping: rename or merge the two.",
                    loc=_loc(self.path, key_node)))
                continue
            out[key] = self.value(val_node)
            out.key_locs[key] = _loc(self.path, key_node)
            # A block collection starts on the next line; its key's line is where the
            # user wrote it, so errors about the whole value point there.
            same_line = val_node.start_mark.line == key_node.start_mark.line
            out.val_locs[key] = _loc(self.path, val_node if same_line else key_node)
        return out


def load_text(text: str, path: str) -> Any:
    """Parse YAML text; syntax errors and duplicate keys become a located TopologyError."""
    import yaml

    reader = None
    try:
        _scan(text, path)
        reader = _loader(text)
        node = reader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path)
        what = exc.problem or exc.context or "invalid YAML"
        hint = ("Define each anchor (&name) once, before any alias (*name) that uses it."
                if "alias" in what or "anchor" in what else
                f"Flatten it: labkit reads at most {MAX_DEPTH} levels."
                if "nesting" in what else
                "Check indentation (spaces, not tabs) and that every `key: value` has a "
                "space after the colon.")
        raise TopologyError([LabkitError(f"YAML syntax error: {what}.", hint=hint,
                                         loc=loc)]) from None
    except yaml.YAMLError as exc:
        raise TopologyError([LabkitError(f"YAML error: {exc}", loc=Loc(path))]) from None
    finally:
        if reader is not None:
            reader.dispose()
    if node is None:
        raise TopologyError([LabkitError(
            "the topology file is empty.",
            hint="A topology needs at least `name:` and `nodes:`; see topologies/pair.yaml.",
            loc=Loc(path, 1, 1))])
    walker = _Walker(path)
    try:
        value = walker.value(node)
    except yaml.YAMLError as exc:
        raise TopologyError([LabkitError(f"YAML error: {exc}", loc=Loc(path))]) from None
    if walker.problems:
        raise TopologyError(walker.problems)
    return value


def read_text(path: str, kind: files.Kind = files.TOPOLOGY) -> str:
    """A topology (or scenario, exercise) file's text, bounded and from a regular file
    only (labkit.base.files.read_bounded); every refusal is a located TopologyError."""
    try:
        return files.read_bounded(path, kind)
    except files.FileRefused as exc:
        raise TopologyError([exc]) from None


def load_file(path: str) -> Any:
    return load_text(read_text(path), path)


# A wire form longer than this is not sent: the guest reads the text instead (correct,
# only slower), and labkit.hosts.rpc's 16 MiB message stays well clear.
MAX_WIRE = 4 * 1024 * 1024


def to_wire(value: Any) -> Any:
    """A tree read by load_text as JSON-ready data, positions included: mappings become
    {"at": [line, col], "map": {key: [[line, col] of the key, of the value, value]}},
    lists {"at": [line, col], "seq": [[[line, col], item], ...]}, scalars stay."""
    if isinstance(value, LMap):
        return {"at": _pos(value.loc), "map": {
            k: [_pos(value.key_loc(k)), _pos(value.val_loc(k)), to_wire(v)]
            for k, v in value.items()}}
    if isinstance(value, LList):
        return {"at": _pos(value.loc),
                "seq": [[_pos(value.item_loc(i)), to_wire(v)] for i, v in enumerate(value)]}
    return value


def wire_text(value: Any) -> str | None:
    """to_wire as JSON text, or None where JSON cannot carry the tree faithfully (a YAML
    date or binary scalar, a NaN) or it is past MAX_WIRE: the reader then reads the text."""
    import json

    wire = to_wire(value)
    try:
        text = json.dumps(wire, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    if len(text) > MAX_WIRE or json.loads(text) != wire:
        return None
    return text


def from_wire(data: Any, path: str) -> Any:
    """The tree to_wire described, as LMap and LList again with their positions in path."""
    if isinstance(data, dict):
        line, col = data["at"]
        if "map" in data:
            out = LMap()
            out.loc = Loc(path, line, col)
            out.key_locs, out.val_locs = {}, {}
            for key, (kpos, vpos, value) in data["map"].items():
                out[key] = from_wire(value, path)
                out.key_locs[key] = Loc(path, *kpos)
                out.val_locs[key] = Loc(path, *vpos)
            return out
        items = LList()
        items.loc = Loc(path, line, col)
        items.item_locs = []
        for pos, value in data["seq"]:
            items.append(from_wire(value, path))
            items.item_locs.append(Loc(path, *pos))
        return items
    return data


def _pos(loc: Loc) -> list[int]:
    return [loc.line, loc.col]
