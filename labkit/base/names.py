"""Names typed by users (labs, nodes), checked once for every place they reach a file name
or a namespace name: no '/', no '..', nothing but letters, digits, '-' and '_'.

The topology loader checks a file's `name:` with the same rule as the command line checks
`labkit down NAME`, so a name that was valid once stays valid everywhere.
"""

from __future__ import annotations

import re

from labkit.errors import UsageError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
LAB_NAME_MAX = 24
NODE_NAME_MAX = 32
NAME_RULE = "letters, digits, '-' and '_', starting with a letter or digit"


def valid(name: str, max_len: int) -> bool:
    return bool(NAME_RE.fullmatch(name)) and len(name) <= max_len


def check_lab(name: str) -> str:
    """A lab name from the command line or an API caller, refused unless it is one."""
    return _check(name, "lab", LAB_NAME_MAX, "; `labkit status` lists the labs that exist")


def check_node(name: str) -> str:
    return _check(name, "node", NODE_NAME_MAX, "")


def _check(name: str, kind: str, max_len: int, more: str) -> str:
    if not isinstance(name, str) or not valid(name, max_len):
        raise UsageError(f"{name!r} is not a {kind} name.",
                         hint=f"{kind.capitalize()} names use {NAME_RULE}, at most {max_len} "
                              f"characters{more}.")
    return name
