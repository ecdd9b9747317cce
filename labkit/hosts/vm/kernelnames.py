"""The grammar of kernel names and their order: one place every caller goes through.

Pure (no apt, no cache), so it can be tested alone and used by loaders without network.

A name is one of:
- an exact release: `6.12.69`, `debian-6.12.69`, `7.3-rc7`, `debian-7.2.13`;
- an exact Debian build, when one release has several: `6.12.90+deb12.1`,
  `debian-6.12.117+deb13`, `debian-6.1.0-57` (Debian 12's ABI-numbered 6.1 packages);
- a series, meaning its newest build: `debian-6.12`, `debian-6.1`, `debian-7.2`,
  `debian-7.3-rc` (release candidates form their own series);
- a kernel someone built: `built:NAME` (a cache entry of that name);
- anything else is a cache entry's directory name or a path (handled by kernels.resolve).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PREFIX = "debian-"
BUILT = "built:"

_VERSION = r"(?P<maj>\d+)\.(?P<min>\d+)(?:\.(?P<patch>\d+))?(?:-rc(?P<rc>\d+))?"
_EXACT_RE = re.compile(rf"(?:{PREFIX})?{_VERSION}(?P<build>\+deb\d+(?:\.\d+)*)?")
_ABI61_RE = re.compile(r"(?:debian-)?(?P<abi>(?P<maj>\d+)\.(?P<min>\d+)\.0-(?P<n>\d+))")
_SERIES_RE = re.compile(rf"(?:{PREFIX})?(?P<maj>\d+)\.(?P<min>\d+)(?P<rc>-rc)?")


@dataclass(frozen=True)
class Spec:
    """A parsed kernel name. kind: "series" | "version" | "build" | "abi" | "built" | "other"."""

    text: str
    kind: str
    series: str = ""  # debian-6.12, debian-7.3-rc (every Debian kind has one)
    version: str = ""  # 6.12.69, 7.3-rc7 ("" for a series or an abi name)
    build: str = ""  # +deb12.1 (kind "build"), 6.1.0-57 (kind "abi")


def parse(text: str) -> Spec:
    """What a kernel name means, by its form alone."""
    text = text.strip()
    if text.startswith(BUILT):
        return Spec(text, "built")
    m = _ABI61_RE.fullmatch(text)
    if m:
        return Spec(text, "abi", series=f"{PREFIX}{m['maj']}.{m['min']}", build=m["abi"])
    m = _SERIES_RE.fullmatch(text)
    if m:
        return Spec(text, "series", series=series_of(f"{m['maj']}.{m['min']}{m['rc'] or ''}"))
    m = _EXACT_RE.fullmatch(text)
    if m and (m["patch"] is not None or m["rc"] is not None):
        version = text.removeprefix(PREFIX).split("+", 1)[0]
        if m["build"]:
            return Spec(text, "build", series=series_of(version), version=version,
                        build=m["build"])
        return Spec(text, "version", series=series_of(version), version=version)
    return Spec(text, "other")


def is_debian(text: str) -> bool:
    """Whether the name designates a Debian package (fetchable, given the catalogue)."""
    return parse(text).kind in ("series", "version", "build", "abi")


def series_of(version: str) -> str:
    """debian-MAJ.MIN for a release, debian-MAJ.MIN-rc for a release candidate."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        return ""
    return f"{PREFIX}{m[1]}.{m[2]}" + ("-rc" if "-rc" in version else "")


def upstream_of(package_version: str) -> str:
    """The kernel release in a Debian package version: 6.12.90-2~bpo12+1 -> 6.12.90,
    7.3~rc7-1~exp1 -> 7.3-rc7, 1:6.1.192-3 -> 6.1.192."""
    v = package_version.split(":", 1)[-1].rsplit("-", 1)[0]
    return v.replace("~rc", "-rc").split("~", 1)[0].split("+", 1)[0]


def version_key(text: str) -> tuple[int, ...]:
    """Sort key of a release or name: 6.1 < 6.1.192 < 6.12.43 < 6.12.118 < 7.2.13 < 7.3-rc7 < 7.3.

    Accepts a bare version, a debian-* name (exact or series) or a build (`+deb12.1` sorts
    after `+deb12`; an ABI name 6.1.0-N after 6.1.0-(N-1)). Unparsable text sorts first.
    """
    t = text.strip().removeprefix(PREFIX)
    m = _ABI61_RE.fullmatch(t)
    if m:
        return (int(m["maj"]), int(m["min"]), 0, 1, 0, int(m["n"]))
    m = _EXACT_RE.fullmatch(t)
    if not m:
        m2 = re.fullmatch(r"(\d+)\.(\d+)-rc", t)
        return (int(m2[1]), int(m2[2]), 0, 0, 0) if m2 else ()
    rc = m["rc"]
    key = (int(m["maj"]), int(m["min"]), int(m["patch"] or 0),
           0 if rc is not None else 1, int(rc or 0))
    if m["build"]:
        key += tuple(int(n) for n in re.findall(r"\d+", m["build"]))
    return key


def debian_version_key(version: str) -> tuple:
    """dpkg's ordering of Debian package versions (epoch, upstream, revision; `~` sorts
    before everything, even the end), as a sort key."""
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return (int(epoch or 0), _dpkg_part(upstream), _dpkg_part(revision))


def _dpkg_part(text: str) -> tuple:
    def char_key(c: str) -> int:
        if c == "~":
            return -1
        if c.isalpha():
            return ord(c)
        return ord(c) + 256

    out: list = []
    for alpha, digits in re.findall(r"(\D*)(\d*)", text):
        if not alpha and not digits:
            continue
        out.append(tuple(char_key(c) for c in alpha) + (0,))
        out.append(int(digits or 0))
    out.append((0,))  # the end sorts after `~` and before anything else
    return tuple(out)


def near(text: str, names: Iterable[str], count: int = 5) -> list[str]:
    """Names close to an unknown one: by version order when it parses (the releases just
    below and above it), else by spelling."""
    pool = sorted(set(names), key=version_key)
    key = version_key(text)
    versioned = [n for n in pool if version_key(n)]
    series = parse(text).kind == "series"  # suggest names of the same kind
    versioned = [n for n in versioned if (parse(n).kind == "series") == series] or versioned
    if key and versioned:
        above = [i for i, n in enumerate(versioned) if version_key(n) >= key]
        pos = above[0] if above else len(versioned)
        lo = max(0, pos - count // 2 - (0 if above else count // 2))
        picked = versioned[lo:lo + count]
        if picked:
            return picked
    return difflib.get_close_matches(text, pool, n=count, cutoff=0.4)


def unknown_hint(text: str, names: Sequence[str]) -> str:
    """The one line every "Unknown kernel" error ends with."""
    close = near(text, names) or sorted({n for n in names if parse(n).kind == "series"},
                                        key=version_key)
    return "near ones: " + ", ".join(close) if close else "no kernel is known yet"
