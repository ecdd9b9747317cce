"""Where bisection and rerun get kernels: the one place that talks to the kernel catalogue.

Three questions: which builds lie between two kernel names (in version order), make one of
them bootable (fetched on demand), and how to get exactly this kernel again elsewhere (the
record a bundle keeps for `repro rerun`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from labkit.errors import LabkitError, UsageError

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def version_key(name: str) -> tuple[int, ...]:
    """debian-6.12.69 -> (6, 12, 69); names without numbers sort first."""
    return tuple(int(n) for n in re.findall(r"\d+", name))


def between(first: str, last: str) -> list[str]:
    """Every available build from first to last inclusive, oldest first (names that `ensure`
    and `--kernel` take)."""
    from labkit.hosts.vm import kernels

    names = sorted(kernels.known_names(), key=version_key)
    for end in (first, last):
        if end not in names:
            raise UsageError(f"Unknown kernel {end!r} for a bisection end.",
                             hint=f"Use one of: {', '.join(names)}.")
    lo, hi = names.index(first), names.index(last)
    if lo > hi:
        lo, hi = hi, lo
    return names[lo:hi + 1]


def ensure(name: str, say: Say = _quiet) -> str:
    """The kernel, fetched into the cache if it is not there yet; the name to boot it by."""
    from labkit.hosts.vm import kernels

    if "/" in name or kernels.cached(name) is not None:
        return name
    say(f"{name}: fetching")
    kernels.fetch(name, progress=lambda text: say(f"{name}: {text}"))
    return name


def record(name: str) -> dict[str, Any]:
    """What a bundle keeps so that `repro rerun` gets this very kernel again."""
    from labkit.hosts.vm import kernels

    try:
        k = kernels.resolve(name)
    except LabkitError:
        return {"name": name}
    out: dict[str, Any] = {"name": name, "release": k.version, "source": k.source}
    if k.package:
        out.update(package=k.package, package_version=k.package_version)
    return out


def from_record(rec: dict[str, Any], say: Say = _quiet) -> str:
    """The kernel a bundle names, fetched at the exact package version it recorded.

    Raises LabkitError when that exact build cannot be had here."""
    name = str(rec.get("name", ""))
    if not name:
        raise LabkitError("the bundle names no kernel.",
                          hint="The bundle is damaged: make it again with `labkit repro run`.")
    if "/" in name:
        raise LabkitError(f"the bundle's kernel {name} was a file on the machine that ran it.",
                          hint="Give that kernel with `--kernel PATH` (a bzImage or build "
                               "tree), or rerun a bundle made with a Debian kernel.")
    ensure(name, say)
    from labkit.hosts.vm import kernels

    k = kernels.resolve(name)
    want = rec.get("package_version")
    if want and k.package_version != want:
        raise LabkitError(
            f"{name} is {k.package} {k.package_version} here; the bundle ran "
            f"{rec.get('package')} {want}.",
            hint="That exact build is no longer the newest of its series; name the point "
                 "release itself (e.g. debian-6.12.69) when you run, so bundles record it.")
    return name
