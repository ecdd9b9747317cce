"""The kernel's own trace events (tracefs), for tests that check labkit's numbers against
the kernel's: events are read from a trace instance of the test's own (its own buffer,
removed at the end), filtered to one network namespace when asked.

    with tracing.events("handshake", ["handshake_submit"], netns_ino=ino) as read:
        ...
        for ev in read(): ev.name, ev.fields["err"]
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
# "  task-pid  [cpu] flags  12.345678: event_name: key=value key=value"
LINE = re.compile(r"^\s*\S.*?\s(\d+\.\d+): (\w+): (.*)$")


@dataclass(frozen=True)
class Event:
    time: float
    name: str
    fields: dict[str, str]


def parse(text: str) -> list[Event]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m and not line.startswith("#"):
            fields = dict(kv.split("=", 1) for kv in m.group(3).split() if "=" in kv)
            out.append(Event(float(m.group(1)), m.group(2), fields))
    return out


def netns_inode(ns: str) -> int:
    """The inode of a named network namespace: what the kernel's events call netns_ino."""
    return os.stat(f"/run/netns/{ns}").st_ino


@contextmanager
def events(system: str, names: list[str], netns_ino: int | None = None
           ) -> Iterator[Callable[[], list[Event]]]:
    """Enable the events in a fresh trace instance; yields a reader of what they logged."""
    mounted = False
    if not (TRACEFS / "instances").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True,
                       capture_output=True)
        mounted = True
    inst = TRACEFS / "instances" / f"labkit-test-{os.getpid()}"
    inst.mkdir()
    try:
        for name in names:
            ev = inst / "events" / system / name
            if netns_ino is not None:
                (ev / "filter").write_text(f"netns_ino == {netns_ino}\n")
            (ev / "enable").write_text("1\n")
        yield lambda: parse((inst / "trace").read_text())
    finally:
        for name in names:
            (inst / "events" / system / name / "enable").write_text("0\n")
        inst.rmdir()
        if mounted:
            subprocess.run(["umount", str(TRACEFS)], check=True, capture_output=True)
