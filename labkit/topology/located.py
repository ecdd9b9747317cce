"""YAML loaded into plain dicts and lists that remember where every key and value stood.

PyYAML's composer keeps marks on every node; walking the node tree ourselves keeps them,
and lets us refuse duplicate keys (which PyYAML silently overwrites) with both positions.

Aliases are where a small file becomes a huge tree: ten nested aliases of ten items each
("billion laughs") compose in microseconds and would then walk 10^9 values. The composer
below counts, while reading, how many values the aliases stand for and refuses the file
at the alias that crosses MAX_ALIASED_VALUES, and refuses an alias inside its own anchor.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent

from labkit.errors import LabkitError, Loc, TopologyError


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


def _loc(path: str, node: yaml.Node) -> Loc:
    return Loc(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _mark_loc(path: str, mark: Any) -> Loc:
    return Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path)


class _AliasBomb(Exception):
    """Raised by the composer at the alias that makes the file too large or recursive."""

    def __init__(self, error: LabkitError) -> None:
        super().__init__(error.message)
        self.error = error


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader whose composer knows how many values each node expands to.

    The size of a node (itself plus everything below it, aliases expanded) is known when
    the node is complete, so an alias costs one dictionary lookup: counting is linear in
    the file, however large the tree it describes.
    """

    def __init__(self, stream: str, path: str) -> None:
        super().__init__(stream)
        self.path = path
        self.sizes: dict[int, int] = {}
        self.aliased = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.check_event(AliasEvent):
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = []
            self.sizes[id(node)] = 1 + sum(self.sizes.get(id(c), 1) for c in children)
            return node
        event = self.peek_event()
        node = super().compose_node(parent, index)  # raises for an undefined alias
        size = self.sizes.get(id(node))
        if size is None:  # its anchor is still open: the alias sits inside its own value
            raise _AliasBomb(LabkitError(
                f"the alias *{event.anchor} is used inside the value it names, which makes "
                "an endless structure.",
                hint="Move the alias out of its own anchored block, or write the values out.",
                loc=_mark_loc(self.path, event.start_mark)))
        self.aliased += size
        if self.aliased > MAX_ALIASED_VALUES:
            raise _AliasBomb(LabkitError(
                f"the alias *{event.anchor} takes what this file's YAML aliases stand for "
                f"past {MAX_ALIASED_VALUES:,} values, the most labkit reads through aliases "
                "(nested aliases grow exponentially: a \"billion laughs\" file).",
                hint="Write the values out, or alias smaller blocks fewer times.",
                loc=_mark_loc(self.path, event.start_mark)))
        return node


class _Walker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.loader = yaml.SafeLoader("")
        self.problems: list[LabkitError] = []

    def value(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node)
        if isinstance(node, yaml.SequenceNode):
            out = LList(self.value(item) for item in node.value)
            out.loc = _loc(self.path, node)
            out.item_locs = [_loc(self.path, item) for item in node.value]
            return out
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.MappingNode) -> LMap:
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
    reader = _CountingLoader(text, path)
    try:
        node = reader.get_single_node()
    except _AliasBomb as exc:
        raise TopologyError([exc.error]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path)
        what = exc.problem or exc.context or "invalid YAML"
        hint = ("Define each anchor (&name) once, before any alias (*name) that uses it."
                if "alias" in what or "anchor" in what else
                "Check indentation (spaces, not tabs) and that every `key: value` has a "
                "space after the colon.")
        raise TopologyError([LabkitError(f"YAML syntax error: {what}.", hint=hint,
                                         loc=loc)]) from None
    except yaml.YAMLError as exc:
        raise TopologyError([LabkitError(f"YAML error: {exc}", loc=Loc(path))]) from None
    finally:
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


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise TopologyError([LabkitError(
            "no such topology file.",
            hint="Give a path to a YAML file, e.g. topologies/pair.yaml.", loc=Loc(path))]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([LabkitError(
            f"cannot read the topology file: {exc}.", loc=Loc(path))]) from None


def load_file(path: str) -> Any:
    return load_text(read_text(path), path)
