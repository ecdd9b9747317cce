"""The lab a notebook works on, shared by its panels: which topology, under which name,
and whether it is up right now (asked of the lab's record each time, so a lab brought
down from a terminal shows as down in every panel).

A notebook names its lab in a parameter cell; tests rename it through LABKIT_LAB_NAME so
that runs never collide. Topology paths are found relative to the working directory,
then to the checkout (a notebook's kernel runs in labs/).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
from pathlib import Path

from labkit.base import netns
from labkit.base.names import check_lab
from labkit.errors import LabkitError, UsageError
from labkit.lab import names, state
from labkit.lab.lab import Lab
from labkit.topology import loader, located

CHECKOUT = Path(__file__).resolve().parent.parent.parent
NAME_VARIABLE = "LABKIT_LAB_NAME"


def find_topology(path: str | os.PathLike[str]) -> Path:
    """The topology file: as given, else relative to the checkout."""
    given = Path(path)
    for candidate in (given, CHECKOUT / given):
        if candidate.is_file():
            return candidate.resolve()
    raise UsageError(f"topology file {path} was not found (looked in {Path.cwd()} and "
                     f"{CHECKOUT}).", hint="Give a path such as topologies/routed.yaml.")


def lab_name(default: str, variable: str = NAME_VARIABLE) -> str:
    """The lab name a notebook uses: $LABKIT_LAB_NAME if set (tests), else its default."""
    return check_lab(os.environ.get(variable) or default)


def load(path: str | os.PathLike[str], name: str | None = None) -> Lab:
    """A Lab from a topology file, renamed to `name` if given (nothing is built yet)."""
    found = find_topology(path)
    text = located.read_text(str(found))  # bounded, regular files only
    if name is not None:
        check_lab(name)
        text, n = re.subn(r"^name:.*$", f"name: {name}", text, count=1, flags=re.M)
        if n == 0:
            raise UsageError(f"{found} has no top-level `name:` line to rename.",
                             hint="Add `name: ...` at the top of the topology file.")
    return Lab(loader.loads(text, str(found)))


class LabSession:
    """One lab shared by the panels of a notebook."""

    def __init__(self, topology: str | os.PathLike[str], name: str | None = None, *,
                 keep: bool = False) -> None:
        """keep=False: a lab this session built goes down when the notebook's kernel
        exits (shut down, restarted, or `labkit notebook` stopped), so no lab or VM
        outlives the notebook that made it; keep=True leaves it up."""
        self.planned = load(topology, name)
        self.name = self.planned.name
        self.topo = self.planned.topo
        self.keep = keep
        self._running: Lab | None = None
        self._built = False
        self._registered = False

    def __repr__(self) -> str:
        return f"<LabSession {self.name} ({self.condition()})>"

    def condition(self) -> str:
        """up, down, building, interrupted, broken or leftover (labkit.lab.state)."""
        return state.condition(self.name, netns.list_names(names.lab_prefix(self.name))).word

    def lab(self) -> Lab | None:
        """The running lab, or None when it is not up."""
        cond = state.condition(self.name, netns.list_names(names.lab_prefix(self.name)))
        if cond.word != "up" or cond.state is None:
            self._running = None
            return None
        same = self._running is not None and \
            self._running.placement.to_json() == cond.state.placement.to_json()
        if not same:
            self._running = Lab.from_state(cond.state, attached=True)
        return self._running

    def require(self, what: str) -> Lab:
        """The running lab, or an error saying what cannot be done and how to fix it."""
        lab = self.lab()
        if lab is None:
            raise LabkitError(f"lab '{self.name}' is not up ({self.condition()}), so {what} "
                              "cannot run.", hint="Click Up in the lab panel (or run the "
                              "notebook's bring-up cell) first.")
        return lab

    def has_feature(self, key: str) -> bool:
        return key in self.topo.features

    def up(self, on: str | None = None, progress: object = None,
           say: object = None) -> Lab:
        lab = self.lab()
        if lab is not None:
            return lab
        fresh = Lab(self.topo)
        if not self._registered:
            atexit.register(self._down_at_exit)
            self._registered = True
        self._built = True  # before up: an interrupted up leaves a record to remove
        fresh.up(on=on, progress=progress, say=say)  # type: ignore[arg-type]
        self._running = fresh
        return fresh

    def _down_at_exit(self) -> None:
        if self.keep or not self._built:
            return
        with contextlib.suppress(Exception):  # exiting anyway; `labkit down` is the fallback
            if self.condition() != "down":
                self.down()

    def down(self) -> list[str]:
        """Remove the lab wherever it runs; what was removed, in words."""
        from labkit.lab.lab import down as down_by_name

        lab = self._running
        removed = lab.down() if lab is not None else down_by_name(self.name)
        self._running = None
        self._built = False
        out = []
        if removed.namespaces:
            out.append(f"{len(removed.namespaces)} namespaces")
        if removed.vms:
            out.append(f"VM {', '.join(removed.vms)}")
        return out + list(removed.notes)


def cleanup(*labs: str) -> list[str]:
    """A notebook's clean-up cell: remove the named labs wherever they run, whatever state
    they are in (also after a cell failed midway, or with nothing defined but the names).
    Returns one line per lab saying what was removed."""
    from labkit.lab.lab import down as down_by_name

    out = []
    for name in labs:
        check_lab(name)
        removed = down_by_name(name)
        what = [f"{len(removed.namespaces)} namespaces"] if removed.namespaces else []
        what += [f"VM {vm}" for vm in removed.vms] + list(removed.notes)
        out.append(f"lab '{name}': " + (", ".join(what) if removed.anything else
                                         "nothing was left") + ".")
    return out
