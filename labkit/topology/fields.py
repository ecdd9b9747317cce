"""Small typed readers over located YAML that collect problems instead of raising.

Collecting lets `labkit validate` report every mistake in a file at once, each with its
line, rather than making the user fix them one run at a time.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from labkit.base import names
from labkit.errors import LabkitError, Loc
from labkit.topology.located import LList, LMap

IFNAMSIZ = 16  # including the NUL: 15 usable bytes
# Interface names a lab may use: the kernel takes any bytes but '/', ':' and whitespace,
# yet a name reaches `ip`, tc and tcpdump command lines, file names and shell prompts, so
# labkit keeps to what is safe everywhere (a leading '-' would read as an option).
IFNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class Problems:
    """An accumulator of located errors."""

    def __init__(self) -> None:
        self.items: list[LabkitError] = []

    def add(self, loc: Loc, message: str, hint: str = "") -> None:
        self.items.append(LabkitError(message, hint=hint, loc=loc))

    def __bool__(self) -> bool:
        return bool(self.items)


def shown(text: str, limit: int = 40) -> str:
    """A user's value quoted for a message: control characters escaped, at most `limit`
    characters (a 100 kB name is not echoed back)."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def suggest(word: str, choices: list[str]) -> str:
    import difflib  # only for a mistake: a VM's guest loads good topologies

    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"Did you mean '{match[0]}'?" if match else ""


def check_keys(m: LMap, allowed: list[str], where: str, p: Problems,
               required: tuple[str, ...] = ()) -> None:
    for key in m:
        if key not in allowed:
            hint = suggest(key, allowed)
            hint = (hint + " " if hint else "") + f"Allowed keys in {where}: {', '.join(allowed)}."
            p.add(m.key_loc(key), f"unknown key '{key}' in {where}.", hint)
    for key in required:
        if key not in m:
            p.add(m.loc, f"{where} needs the key '{key}'.",
                  f"Add `{key}:` to {where}.")


def as_map(value: Any, loc: Loc, where: str, p: Problems) -> LMap | None:
    if value is None:
        empty = LMap()
        empty.loc, empty.key_locs, empty.val_locs = loc, {}, {}
        return empty
    if not isinstance(value, LMap):
        p.add(loc, f"{where} must be a mapping (key: value lines), not {_kind(value)}.")
        return None
    return value


def as_list(value: Any, loc: Loc, where: str, p: Problems) -> LList | None:
    if value is None:
        empty = LList()
        empty.loc, empty.item_locs = loc, []
        return empty
    if not isinstance(value, LList):
        p.add(loc, f"{where} must be a list (lines starting with '- '), not {_kind(value)}.")
        return None
    return value


def as_str(value: Any, loc: Loc, where: str, p: Problems) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        p.add(loc, f"{where} must be a text value, not {_kind(value)}.")
        return None
    return str(value)


# Terminal control (escape sequences, carriage return) and bidirectional overrides: text
# that `labkit up` prints would rewrite the user's terminal or hide what it says.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def as_text(value: Any, loc: Loc, where: str, p: Problems) -> str | None:
    """A text shown to users (a description): no control characters but newline and tab."""
    text = as_str(value, loc, where, p)
    if text is not None and (bad := CONTROL_RE.search(text)):
        p.add(loc, f"{where} contains the control character {bad.group()!r}.",
              "Write plain text: escape sequences would rewrite the terminal it is shown on.")
        return None
    return text


def as_bool(value: Any, loc: Loc, where: str, p: Problems) -> bool | None:
    if not isinstance(value, bool):
        p.add(loc, f"{where} must be true or false, not {_kind(value)}.")
        return None
    return value


def as_int(value: Any, loc: Loc, where: str, p: Problems, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        p.add(loc, f"{where} must be a whole number from {lo} to {hi}, not {value!r}.")
        return None
    return value


def as_name(value: Any, loc: Loc, where: str, p: Problems,
            max_len: int = names.NODE_NAME_MAX) -> str | None:
    """A name by the one rule of labkit.base.names (the command line checks the same)."""
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    if not names.valid(text, max_len):  # fullmatch: "h1\n" is not "h1"
        p.add(loc, f"{where} {shown(text)} is not a valid name.",
              f"Use {names.NAME_RULE}, at most {max_len} characters.")
        return None
    return text


def check_ifname(name: str, loc: Loc, where: str, p: Problems) -> bool:
    size = len(name.encode())
    if size >= IFNAMSIZ:
        p.add(loc, f"interface name '{name}' in {where} is {size} bytes; Linux allows at "
                   f"most {IFNAMSIZ - 1}.", "Use a shorter name such as eth1.")
        return False
    if not IFNAME_RE.fullmatch(name):
        p.add(loc, f"{shown(name)} in {where} is not a valid interface name.",
              "Use ASCII letters, digits, '_', '.' and '-', starting with a letter, digit "
              "or '_', e.g. eth1.")
        return False
    return True


def as_iface(value: Any, loc: Loc, where: str, p: Problems,
             version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """An address with prefix length, e.g. 198.18.1.1/24 or fd00:1ab::1/64."""
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    family = "IPv4" if version == 4 else "IPv6"
    example = "198.18.1.1/24" if version == 4 else "fd00:1ab::1/64"
    if "/" not in text:
        p.add(loc, f"{where} '{text}' has no prefix length.", f"Write it as e.g. {example}.")
        return None
    try:
        ifa = ipaddress.ip_interface(text)
    except ValueError:
        p.add(loc, f"{where} '{text}' is not a valid {family} address with prefix.",
              f"Write it as e.g. {example}.")
        return None
    if ifa.version != version:
        p.add(loc, f"{where} '{text}' is not an {family} address.",
              f"Put it under ipv{ifa.version}:, or write an {family} one such as {example}.")
        return None
    return ifa


def as_network(value: Any, loc: Loc, where: str, p: Problems,
               version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    text = as_str(value, loc, where, p)
    if text is None:
        return None
    family = "IPv4" if version == 4 else "IPv6"
    example = "198.18.1.0/24" if version == 4 else "fd00:1ab:0:1::/64"
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        hint = f"Write a network such as {example}."
        if "host bits set" in str(exc):
            hint = f"The host bits are set: did you mean {ipaddress.ip_network(text, False)}?"
        p.add(loc, f"{where} '{text}' is not a valid {family} subnet (CIDR).", hint)
        return None
    if net.version != version:
        p.add(loc, f"{where} '{text}' is not an {family} subnet.",
              f"Write one such as {example}.")
        return None
    return net


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
