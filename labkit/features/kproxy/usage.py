"""CPU, copies and context switches of a proxy, read from /proc around a measurement.

- the proxy process: utime + stime (/proc/PID/stat, all its threads), rchar and wchar
  (/proc/PID/io: bytes passed to read(2)/write(2)-like calls, i.e. copied through user
  memory; recv/send and splice are not counted there, which is why the boomerang proxy
  uses read/write), and context switches (/proc/PID/task/*/status, every thread);
- softirq time of all CPUs (/proc/stat): where veth and TCP receive work runs;
- kworker threads (their utime + stime): where sockmap sends redirected data to the
  other socket (the psock backlog is a work item), which the two above would miss.
softirq and kworkers are machine-wide: other work on a shared machine shows up there too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    proxy_ticks: int = 0
    rchar: int = 0
    wchar: int = 0
    ctxsw: int = 0
    softirq_ticks: int = 0
    kworker_ticks: int = 0
    busy_ticks: int = 0  # all CPUs, everything but idle and iowait

    def __sub__(self, other: Sample) -> Sample:
        return Sample(*(a - b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[int, ...]:
        return (self.proxy_ticks, self.rchar, self.wchar, self.ctxsw, self.softirq_ticks,
                self.kworker_ticks, self.busy_ticks)


def _stat_ticks(path: str) -> int:
    with open(path) as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _comm(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def process(pid: int) -> tuple[int, int, int, int]:
    """(ticks, rchar, wchar, context switches) of a process and all its threads."""
    ticks = _stat_ticks(f"/proc/{pid}/stat")
    io = {}
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            io[key] = int(value)
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt")):
                        switches += int(line.split()[1])
        except OSError:
            continue  # a thread that just ended
    return ticks, io["rchar"], io["wchar"], switches


def machine() -> tuple[int, int]:
    """(softirq ticks, busy ticks) summed over all CPUs."""
    with open("/proc/stat") as fh:
        cpu = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = cpu[:7]
    steal = cpu[7] if len(cpu) > 7 else 0
    return softirq, user + nice + system + irq + softirq + steal


def kworkers() -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if _comm(f"/proc/{entry}/comm").startswith("kworker"):
                total += _stat_ticks(f"/proc/{entry}/stat")
        except OSError:
            continue
    return total


def sample(pid: int | None) -> Sample:
    ticks = rchar = wchar = switches = 0
    if pid is not None:
        try:
            ticks, rchar, wchar, switches = process(pid)
        except OSError:
            pass
    softirq, busy = machine()
    return Sample(ticks, rchar, wchar, switches, softirq, kworkers(), busy)


def seconds(ticks: int) -> float:
    return ticks / TICK
