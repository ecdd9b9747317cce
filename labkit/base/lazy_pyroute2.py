"""pyroute2 as a bare package: its submodules load when asked for, the rest never.

pyroute2's package `__init__` imports every netlink family it supports (NDB with sqlite,
IPDB, conntrack, nl80211, ipset, plan9...). labkit needs rtnetlink and generic netlink
only. Skipping the rest saves 0.28 s per labkit start here and about 2 s in a TCG VM,
where every `labkit` command, guest daemon and node helper pays it. `install()` registers the
package without running its `__init__`; the first use of a name that only the full
package defines (`from pyroute2 import NDB` in a notebook) runs the real `__init__` then,
so code outside labkit sees the package it expects.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

NAME = "pyroute2"


class _Package(types.ModuleType):
    """The package before its `__init__` ran: finishes loading on the first missing name."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or self.__dict__.get("_lk_loaded", True):
            raise AttributeError(f"module {NAME!r} has no attribute {name!r}")
        if importlib.util.find_spec(f"{NAME}.{name}") is not None:
            return importlib.import_module(f"{NAME}.{name}")  # `from pyroute2 import config`
        self._lk_loaded = True
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(self)  # the real __init__, into this same module
        return getattr(self, name)  # loaded now: a missing name raises AttributeError


def install() -> None:
    """Register the bare package unless pyroute2 is already imported (or missing)."""
    if NAME in sys.modules:
        return
    spec = importlib.util.find_spec(NAME)
    if spec is None or spec.submodule_search_locations is None:
        return
    module = _Package(NAME)
    module.__spec__ = spec
    module.__path__ = list(spec.submodule_search_locations)
    module.__file__ = spec.origin
    module.__package__ = NAME
    module.__loader__ = spec.loader
    module._lk_loaded = False
    sys.modules[NAME] = module
