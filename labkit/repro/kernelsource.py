"""Where bisection and rerun get kernels: the one place that talks to the kernel catalogue.

Three questions: which builds lie between two kernel names (in version order), make one of
them bootable (fetched on demand), and how to get exactly this kernel again elsewhere (the
record a bundle keeps for `repro rerun`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from labkit.errors import LabkitError

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def between(first: str, last: str, say: Say = _quiet) -> list[str]:
    """Every available build from first to last inclusive, oldest first (one per release:
    its preferred build), as names `ensure` and `--kernel` take."""
    from labkit.hosts import kernels

    return [a.name for a in kernels.between(first, last, progress=say)]


def ensure(name: str, say: Say = _quiet) -> str:
    """The kernel, fetched into the cache if it is not there yet; the name to boot it by."""
    from labkit.hosts import kernels

    if "/" in name or not kernels.is_debian(name):
        kernels.resolve(name)  # a path, a cache entry or built:NAME: there, or a clear error
        return name
    have = kernels.cached(name)  # a series: its newest cached build (no look-up)
    if have is not None:
        return have.name
    say(f"{name}: fetching")
    return kernels.fetch(name, progress=lambda text: say(f"{name}: {text}")).name


def record(name: str) -> dict[str, Any]:
    """What a bundle keeps so that `repro rerun` gets this very kernel again: the Debian
    package and its exact version, or a built kernel's recipe (build.json)."""
    from labkit.hosts import kernels

    try:
        k = kernels.resolve(name)
    except LabkitError:
        return {"name": name}
    out: dict[str, Any] = {"name": name, "release": k.version, "source": k.source}
    if k.package:
        out.update(package=k.package, package_version=k.package_version)
    if k.source == "built":
        recipe = os.path.join(os.path.dirname(os.path.dirname(k.image)), "build.json")
        try:
            with open(recipe, encoding="utf-8") as fh:
                out["build"] = json.loads(fh.read(1 << 20))
        except (OSError, ValueError):
            pass
    return out


def from_record(rec: dict[str, Any], say: Say = _quiet, base: str = "") -> str:
    """The kernel a bundle names, at the exact build it recorded: the Debian package at
    that version (fetched if needed), or a built kernel: the same build if it is in the
    cache, else built again from its recorded source and patches (base: the directory the
    bundled patches are relative to).

    Raises LabkitError when that exact build cannot be had here."""
    from labkit.hosts import kernels

    name = str(rec.get("name", ""))
    if not name:
        raise LabkitError("the bundle names no kernel.",
                          hint="The bundle is damaged: make it again with `labkit repro run`.")
    if "/" in name:
        raise LabkitError(f"the bundle's kernel {name} was a file on the machine that ran it.",
                          hint="Run its scenario.yaml with `labkit repro run --kernel PATH` "
                               "instead, giving that bzImage or build tree.")
    if rec.get("source") == "built":
        return _built_again(rec, base, say)
    pkg, version = rec.get("package"), rec.get("package_version")
    if not (pkg and version):
        kernels.resolve(name)  # built:NAME or a cache entry: here, or a clear error
        return name
    have = next((k for k in kernels.list_cached()
                 if k.package == pkg and k.package_version == version), None)
    if have is not None:
        return have.name
    say(f"{name}: looking up {pkg} {version}")
    exact = next((a for a in kernels.available(progress=say)
                  if a.package == pkg and a.package_version == version), None)
    if exact is None:
        raise LabkitError(
            f"{pkg} {version}, which the bundle ran as {name}, is not served by the mirror "
            "any more and is not cached here.",
            hint="`labkit vm kernels list --available` shows the builds there are; run the "
                 "bundle's scenario.yaml on the nearest with `labkit repro run --kernel`.")
    say(f"{exact.name}: fetching ({pkg} {version})")
    return kernels.fetch(exact.name, progress=lambda text: say(f"{exact.name}: {text}")).name


def bundle_patches(rec: dict[str, Any], directory: str) -> None:
    """Copy a built kernel's patches into its bundle directory (patches/NN-name), noted in
    rec["build"]["bundled_patches"] relative to that directory, so the bundle rebuilds."""
    build = rec.get("build")
    if not isinstance(build, dict):
        return
    out = []
    for i, path in enumerate(build.get("patches") or [], 1):
        try:
            with open(path, "rb") as fh:
                data = fh.read(PATCH_MAX + 1)
        except OSError:
            continue
        if len(data) > PATCH_MAX:
            continue
        rel = os.path.join("patches", f"{i:02d}-{os.path.basename(path)}")
        os.makedirs(os.path.join(directory, "patches"), exist_ok=True)
        with open(os.path.join(directory, rel), "wb") as fh:
            fh.write(data)
        out.append(rel)
    build["bundled_patches"] = out


PATCH_MAX = 8 << 20


def _built_again(rec: dict[str, Any], base: str, say: Say) -> str:
    from labkit.hosts import kernels

    build = rec.get("build") if isinstance(rec.get("build"), dict) else {}
    key = str(build.get("key", ""))
    have = next((k for k in kernels.list_cached() if k.source == "built" and key
                 and k.package_version == key[:16]), None)
    if have is not None:
        return have.name
    source = str(build.get("source", ""))
    series = source.split("=", 1)[0].removeprefix("linux-source-") if source else ""
    patches = [os.path.join(base, p) for p in build.get("bundled_patches") or []]
    if not series or "/" in series or len(patches) != len(build.get("patches") or []):
        raise LabkitError(
            f"the bundle's kernel {rec.get('name')} was built from {source or 'a tree'} "
            "and is not in this cache; the bundle lacks what rebuilding it needs.",
            hint="Build it with `labkit kernel build --source SERIES --patch ...` as its "
                 "build.json says, then run the bundle's scenario.yaml on it.")

    say(f"{rec.get('name')}: not cached; building {source} with {len(patches)} patch(es)")
    res = kernels.build(series, patches=patches, progress=say)
    if key and res.key != key:
        say(f"{res.kernel.name}: built from the recorded recipe, but its inputs differ from "
            f"the bundle's (key {res.key[:12]} vs {key[:12]}: another source package "
            "version or compiler)")
    return res.kernel.name
