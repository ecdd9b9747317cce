"""`expect` steps: output of an earlier step, the kernel log, a counter, a capture.

A capture is judged on this machine by tshark (Wireshark's dissectors, a peer labkit did
not write) when the check has a display filter; counters are read where the node is.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import TYPE_CHECKING

from labkit.repro.model import (
    CounterCheck,
    DmesgCheck,
    ExpectStep,
    OutputCheck,
    PcapCheck,
)
from labkit.repro.results import ERROR, FAILED, OK, SKIPPED, StepResult

if TYPE_CHECKING:
    from labkit.repro.steps import Context


def judge(ctx: Context, step: ExpectStep, result: StepResult) -> None:
    check = step.check
    if isinstance(check, OutputCheck):
        _output(ctx, step, check, result)
    elif isinstance(check, DmesgCheck):
        _dmesg(ctx, step, check, result)
    elif isinstance(check, CounterCheck):
        _counter(ctx, step, check, result)
    elif isinstance(check, PcapCheck):
        _pcap(ctx, step, check, result)


def _output(ctx: Context, step: ExpectStep, check: OutputCheck, result: StepResult) -> None:
    from labkit.repro.steps import finish_background

    if check.step in ctx.background:
        ref = finish_background(ctx, check.step, step.timeout)
    else:
        ref = ctx.results.get(check.step)
    if ref is None or ref.outcome == SKIPPED:
        result.outcome, result.detail = ERROR, f"step '{check.step}' did not run"
        return
    text = ref.stdout if check.stream == "stdout" else ref.stderr
    where = f"{check.stream} of step '{check.step}'"
    if check.status is not None and ref.status != check.status:
        result.outcome = FAILED
        result.detail = f"step '{check.step}' exited with {ref.status}, not {check.status}"
    elif check.match is not None and not re.search(check.match, text, re.M):
        result.outcome = FAILED
        result.detail = f"{where} does not match {check.match!r}{_near(check.match, text)}"
    elif check.absent is not None and (found := re.search(check.absent, text, re.M)):
        result.outcome = FAILED
        result.detail = f"{where} shows {found.group(0)[:120]!r} (must be absent)"
    else:
        result.outcome, result.detail = OK, f"{where} as expected"


def _near(pattern: str, text: str) -> str:
    """The line that looks most like what was expected: a reader sees what came instead."""
    head = re.split(r"[\s.*+?(\[\\|]", pattern, maxsplit=1)[0]
    lines = [ln for ln in text.splitlines() if head and ln.startswith(head)]
    return f"; it says {lines[0][:160]!r}" if lines else ""


def _dmesg(ctx: Context, step: ExpectStep, check: DmesgCheck, result: StepResult) -> None:
    done = ctx.node("").run(["dmesg"], timeout=step.timeout)
    result.stdout = done.stdout
    if done.returncode != 0:
        result.outcome, result.detail = ERROR, f"dmesg failed: {done.stderr.strip()}"
        return
    if check.match is not None:
        found = re.search(check.match, done.stdout, re.M)
        result.outcome = OK if found else FAILED
        result.detail = (f"dmesg shows {_line_of(found, done.stdout)!r}" if found else
                         f"dmesg does not show {check.match!r}")
    else:
        found = re.search(check.absent or "", done.stdout, re.M)
        result.outcome = FAILED if found else OK
        result.detail = (f"dmesg shows {_line_of(found, done.stdout)!r} (must be absent)"
                         if found else f"dmesg has no {check.absent!r}")


def _line_of(found: re.Match[str] | None, text: str) -> str:
    if found is None:
        return ""
    start = text.rfind("\n", 0, found.start()) + 1
    end = text.find("\n", found.end())
    return text[start:end if end >= 0 else None][:200]


def counter_value(ctx: Context, check: CounterCheck, timeout: float) -> int | None:
    """The counter's value in the node now (None: the node does not have it)."""
    node = ctx.node(check.node)
    if check.source == "link":
        path = f"/sys/class/net/{check.iface}/statistics/{check.counter}"
        done = node.run(["cat", path], timeout=timeout)
        return int(done.stdout.strip()) if done.returncode == 0 else None
    if check.source == "nstat":
        done = node.run(["nstat", "-saz"], timeout=timeout)
    else:
        path = check.path if check.source == "file" else "/proc/net/tls_stat"
        done = node.run(["cat", path], timeout=timeout)
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == check.counter and words[1].lstrip("-").isdigit():
            return int(words[1])
    return None


def _counter(ctx: Context, step: ExpectStep, check: CounterCheck, result: StepResult) -> None:
    value = counter_value(ctx, check, step.timeout)
    what = f"{check.source} {check.counter} in {check.node}"
    if value is None:
        result.outcome, result.detail = FAILED, f"{what}: no such counter"
        return
    result.stdout = f"{check.counter} {value}\n"
    held = check.compare.holds(value)
    result.outcome = OK if held else FAILED
    result.detail = f"{what} = {value}" + ("" if held else
                                           f", expected {check.compare.describe()}")


def _pcap(ctx: Context, step: ExpectStep, check: PcapCheck, result: StepResult) -> None:
    bg = ctx.captures.get(check.capture)
    if bg is None:
        result.outcome, result.detail = ERROR, f"capture '{check.capture}' did not run"
        return
    bg.stop()  # the capture ends here: what it holds is what is judged (and bundled)
    if check.filter:
        count = tshark_count(bg.out, check.filter, step.timeout)
    else:
        from labkit.repro.pcapfile import read_pcap_file

        count = len(read_pcap_file(bg.out))
    what = (f"frames of capture '{check.capture}'"
            + (f" matching {check.filter!r}" if check.filter else ""))
    result.stdout = f"{count}\n"
    held = check.compare.holds(count)
    result.outcome = OK if held else FAILED
    result.detail = f"{count} {what}" + ("" if held else
                                         f", expected {check.compare.describe()}")


def tshark_count(pcap: str, display_filter: str, timeout: float) -> int:
    """How many frames of pcap match a Wireshark display filter (tshark judges)."""
    from labkit.errors import LabkitError

    tshark = shutil.which("tshark")
    if tshark is None:
        raise LabkitError("tshark is not installed, so a capture cannot be judged by a "
                          "display filter", hint="Install it with scripts/setup.sh.")
    done = subprocess.run([tshark, "-n", "-r", pcap, "-Y", display_filter, "-T", "fields",
                           "-e", "frame.number"], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise LabkitError(f"tshark could not read {pcap} with {display_filter!r}: "
                          f"{done.stderr.strip()[-300:]}")
    return sum(1 for line in done.stdout.splitlines() if line.strip())
