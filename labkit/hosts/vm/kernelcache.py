"""The kernel cache: one directory per kernel under paths.kernels_dir(), each with a
kernel.json describing it (the Kernel below).

Entries are written whole or not at all (unpacked in a temporary directory, then renamed),
so a cut download or unpack never leaves a half kernel behind. Any writer (a fetch, a
`labkit kernel build` writing `built:NAME`) takes cache_lock() around its rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.base import files
from labkit.errors import LabkitError
from labkit.hosts.vm import paths

META = "kernel.json"


@dataclass(frozen=True)
class Kernel:
    """What vng boots: `run_arg` is given to `vng --run`, `image` is the bzImage itself."""

    name: str
    version: str  # the guest's `uname -r`; "" when it cannot be read from the image
    image: str
    run_arg: str
    modules_dir: str  # "" when the kernel has no modules labkit knows of
    source: str  # "cache" | "image" | "tree" | "built"
    package: str = ""
    package_version: str = ""
    fetched_at: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def entry_dir(name: str) -> Path:
    return paths.kernels_dir() / name


def read(name: str) -> Kernel | None:
    """The entry in the directory of that name, or None."""
    if not name or "/" in name or name.startswith("."):
        return None
    meta = entry_dir(name) / META
    return load_meta(meta) if meta.is_file() else None


def load_meta(meta: Path) -> Kernel:
    try:
        data = json.loads(files.read_bounded(meta, files.STATE))
        known = set(Kernel.__dataclass_fields__)
        return Kernel(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError, RecursionError,
            files.FileRefused) as exc:
        raise LabkitError(
            f"The kernel cache entry {meta.parent} is damaged ({exc}).",
            hint=f"Remove it (`sudo rm -r {meta.parent}`) and fetch the kernel again.",
        ) from exc


def list_cached() -> list[Kernel]:
    """Every readable entry (a damaged one is skipped: resolving it by name explains)."""
    root = paths.kernels_dir()
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not (entry / META).is_file():
            continue
        with contextlib.suppress(LabkitError):
            found.append(load_meta(entry / META))
    return found


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Two writers at once would unpack into the same place; serialise them."""
    root = paths.kernels_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def install(tmp: Path, name: str) -> Path:
    """Rename a fully written entry into place (replacing an older one of that name);
    the caller holds cache_lock()."""
    root = paths.kernels_dir()
    final = root / name
    old = None
    if final.exists():
        old = root / f".{name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
