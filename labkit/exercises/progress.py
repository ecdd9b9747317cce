"""Who did which exercise of a lab, when: a JSON file per lab that outlives the lab.

Kept in $LABKIT_PROGRESS_DIR (default /var/lib/labkit/progress), not with the lab's state
(/run/labkit/labs, removed at `down`), so progress survives a rebuilt lab, a notebook kernel
restart and a reboot; a trainer's report reads it after the course. It holds no secrets.
Every change is a locked read-modify-write and an atomic replace, so the notebook and the
CLI can both record at once. Counter baselines belong to one lab instance (its `up` time)
and are retaken when the lab was rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from labkit.base.files import STATE, FileRefused, private_dir, read_bounded, write_private
from labkit.base.names import check_lab

DEFAULT_DIR = "/var/lib/labkit/progress"


def progress_dir() -> str:
    return os.environ.get("LABKIT_PROGRESS_DIR", DEFAULT_DIR)


def learner_name(given: str | None = None) -> str:
    """Who is doing the exercises: --learner, $LABKIT_LEARNER, the sudo user, the login."""
    if given:
        return given
    for var in ("LABKIT_LEARNER", "SUDO_USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def path_of(lab: str) -> str:
    return os.path.join(progress_dir(), f"{check_lab(lab)}.json")


def read(lab: str) -> dict[str, Any]:
    try:
        data = json.loads(read_bounded(path_of(lab), STATE))
    except FileRefused as exc:
        if not exc.missing:
            raise
        data = {}
    except (json.JSONDecodeError, RecursionError):
        data = {}
    data = data if isinstance(data, dict) else {}
    data.setdefault("lab", lab)
    data.setdefault("learners", {})
    data.setdefault("baselines", {"instance": None, "values": {}})
    return data


@contextlib.contextmanager
def updating(lab: str) -> Iterator[dict[str, Any]]:
    """The lab's progress, written back atomically when the block ends without error."""
    private_dir(progress_dir())
    lock = os.open(os.path.join(progress_dir(), f"{check_lab(lab)}.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read(lab)
        yield data
        write_private(path_of(lab), json.dumps(data, indent=1, sort_keys=True), atomic=True)
    finally:
        os.close(lock)


def entry(data: dict[str, Any], learner: str, exercise: str) -> dict[str, Any]:
    """One learner's record of one exercise, created empty."""
    rec = data["learners"].setdefault(learner, {}).setdefault(exercise, {})
    for key, value in (("started", None), ("checks", 0), ("last_check", None),
                       ("last_outcome", None), ("passed_at", None), ("hints", 0),
                       ("solution_shown", None), ("solved", None)):
        rec.setdefault(key, value)
    return rec


def baselines(data: dict[str, Any], instance: float | None) -> dict[str, Any]:
    """The baseline values of this lab instance ({exercise: {check index: value}}); a
    record of an earlier instance (the lab was rebuilt since) is dropped."""
    base = data["baselines"]
    if base.get("instance") != instance:
        base.clear()
        base.update({"instance": instance, "values": {}})
    return base["values"]  # type: ignore[no-any-return]


def now() -> float:
    return round(time.time(), 3)
