"""Kernels by name, for everything above labkit.hosts: the names a topology, a scenario or
a verb may give, the cache, the registry's catalogue, and builds from source.

The one door into labkit.hosts.vm's kernel machinery (the import-layer contract forbids
reaching past it), so that how kernels are named, fetched and built can change behind it.
"""

from __future__ import annotations

from typing import Any

from labkit.hosts.vm.catalogue import Available, available, lists_age, needs_update
from labkit.hosts.vm.kernelnames import is_debian, parse
from labkit.hosts.vm.kernels import (
    DEFAULT_KERNEL,
    SERIES,
    Kernel,
    accepts,
    between,
    cached,
    fetch,
    fetchable,
    known_names,
    list_cached,
    lookup,
    resolve,
)

__all__ = ["DEFAULT_KERNEL", "SERIES", "Available", "Kernel", "accepts", "available",
           "between", "build", "cached", "fetch", "fetchable", "is_debian", "known_names",
           "list_cached", "lists_age", "lookup", "needs_update", "parse", "resolve"]


def build(*args: Any, **kwargs: Any) -> Any:
    """`labkit kernel build`: a small VM kernel from source (labkit.hosts.vm.build.build);
    imported on use, since the build machinery reads the feature registry's config."""
    from labkit.hosts.vm import build as kbuild

    return kbuild.build(*args, **kwargs)
