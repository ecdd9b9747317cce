"""What a reproduction scenario is, once validated: typed steps and expectations.

Every step remembers where it was written (file:line:col) so that a verdict can point at
the line of the scenario that failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labkit.errors import Loc
from labkit.topology.model import Topology

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
COULD_NOT_RUN = "could not run"
# A check's `when`: it must hold on every kernel, or it is what the bug (or its absence)
# looks like. The scenario reproduces on a kernel when every `reproduced` check holds.
ALWAYS = "always"
WHENS = (ALWAYS, REPRODUCED, NOT_REPRODUCED)
EXPECTABLE = (REPRODUCED, NOT_REPRODUCED)
HOST = "host"


@dataclass(frozen=True)
class Source:
    """Where the behaviour was reported or fixed: shown in the table and the bundle."""

    commit: str = ""
    subject: str = ""
    url: str = ""
    report: str = ""

    def describe(self) -> str:
        parts = [p for p in (self.commit, f'"{self.subject}"' if self.subject else "",
                             self.url, self.report) if p]
        return " ".join(parts)


@dataclass(frozen=True)
class KernelPlan:
    """One kernel to try: its name (a cached kernel, `host`, or an absolute path), what
    the scenario says happens there (None: no claim), and its kernel command line."""

    name: str
    expect: str | None = None
    options: tuple[str, ...] = ()
    loc: Loc | None = None

    @property
    def label(self) -> str:
        """A file-name-safe label for the kernel (bundle directories)."""
        text = self.name.rstrip("/").rsplit("/", 1)[-1] if "/" in self.name else self.name
        return "".join(c if c.isalnum() or c in "-._" else "-" for c in text) or "kernel"


@dataclass(frozen=True)
class Command:
    """A command in a node: an argv, or a shell line run with `sh -c`."""

    argv: tuple[str, ...] = ()
    shell: str = ""

    def words(self) -> list[str]:
        return ["sh", "-c", self.shell] if self.shell else list(self.argv)

    def describe(self) -> str:
        text = self.shell or " ".join(self.argv)
        return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Outcome:
    """What an exec (or each wait_for attempt) must show. status None: any status."""

    status: int | None = 0
    stdout: str | None = None  # regex that must match
    stderr: str | None = None
    stdout_absent: str | None = None  # regex that must not match
    hangs: bool = False  # the step is expected to be stopped by its timeout


@dataclass
class Step:
    index: int  # 1-based, as the table shows it
    kind: str
    loc: Loc
    name: str = ""
    timeout: float = 60.0
    when: str = ALWAYS

    def label(self) -> str:
        return f"step {self.index} ({self.kind}{' ' + repr(self.name) if self.name else ''})"

    @property
    def is_check(self) -> bool:
        return False


@dataclass
class UpStep(Step):
    pass


@dataclass
class ExecStep(Step):
    node: str = ""
    command: Command = field(default_factory=Command)
    background: bool = False
    expect: Outcome = field(default_factory=Outcome)

    @property
    def is_check(self) -> bool:
        return not self.background


@dataclass
class SysctlStep(Step):
    node: str = ""
    values: dict[str, str] = field(default_factory=dict)


@dataclass
class InjectStep(Step):
    node: str = ""
    iface: str = ""
    frame: str = ""  # a crafted kind, e.g. tipc:ghost_discovery
    pcap: str = ""  # absolute path of a pcap to replay
    count: int = 1
    interval: float = 0.0
    options: dict[str, int] = field(default_factory=dict)  # for the feature's craft()


@dataclass
class TrafficStep(Step):
    src: str = ""
    dst: str = ""
    proto: str = "tcp"
    socket: str = "stream"
    size: int = 65536
    duration: float = 2.0


@dataclass
class CaptureStep(Step):
    node: str = ""
    iface: str = ""
    count: int = 10000
    duration: float = 120.0


@dataclass
class WaitForStep(Step):
    node: str = ""
    command: Command = field(default_factory=Command)
    until: Outcome = field(default_factory=Outcome)
    interval: float = 0.5

    @property
    def is_check(self) -> bool:
        return True


@dataclass
class VerifyStep(Step):
    kind_name: str = ""  # the verification (crossover, encryption...), or "" for checks
    feature: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    outcome: str = "pass"

    @property
    def is_check(self) -> bool:
        return True


@dataclass(frozen=True)
class Compare:
    """A number compared: equals / at_least / at_most (any combination)."""

    equals: int | None = None
    at_least: int | None = None
    at_most: int | None = None

    def holds(self, value: int) -> bool:
        return ((self.equals is None or value == self.equals)
                and (self.at_least is None or value >= self.at_least)
                and (self.at_most is None or value <= self.at_most))

    def describe(self) -> str:
        parts = []
        if self.equals is not None:
            parts.append(f"= {self.equals}")
        if self.at_least is not None:
            parts.append(f">= {self.at_least}")
        if self.at_most is not None:
            parts.append(f"<= {self.at_most}")
        return " and ".join(parts)


@dataclass(frozen=True)
class OutputCheck:
    step: str  # name of an earlier step
    stream: str = "stdout"
    match: str | None = None
    absent: str | None = None
    status: int | None = None


@dataclass(frozen=True)
class DmesgCheck:
    match: str | None = None
    absent: str | None = None


@dataclass(frozen=True)
class CounterCheck:
    node: str
    source: str  # nstat | tls_stat | link | file
    counter: str
    compare: Compare
    iface: str = ""
    path: str = ""


@dataclass(frozen=True)
class PcapCheck:
    capture: str  # name of an earlier capture step
    compare: Compare
    filter: str = ""  # a Wireshark display filter, judged by tshark


Check = OutputCheck | DmesgCheck | CounterCheck | PcapCheck


@dataclass
class ExpectStep(Step):
    check: Check | None = None

    @property
    def is_check(self) -> bool:
        return True


@dataclass
class Scenario:
    name: str
    title: str
    path: str  # the scenario file (absolute)
    text: str  # the scenario file as written
    source: Source
    topology: Topology  # validated; its name is replaced per run
    topology_path: str  # the file the topology came from (the scenario for inline ones)
    topology_text: str  # YAML of the topology, `name:` first
    kernels: list[KernelPlan]
    steps: list[Step]
    description: str = ""
    kernel_options: tuple[str, ...] = ()  # for every kernel, listed or not (bisect, --kernel)

    @property
    def directory(self) -> str:
        import os

        return os.path.dirname(self.path)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)
