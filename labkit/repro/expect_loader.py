"""`expect` steps of a scenario file: output, dmesg, counter and pcap checks (display
filters compiled by tshark, so a typo is reported at its line, not mid-run).
"""

from __future__ import annotations

import struct
from typing import Any

from labkit.repro.model import (
    CaptureStep,
    Compare,
    CounterCheck,
    DmesgCheck,
    ExecStep,
    ExpectStep,
    OutputCheck,
    PcapCheck,
    TrafficStep,
    VerifyStep,
    WaitForStep,
)
from labkit.repro.steps_loader import StepContext, choice
from labkit.topology.fields import (
    Problems,
    as_int,
    as_map,
    as_str,
    check_keys,
)
from labkit.topology.located import LMap

OUTPUT_KEYS = ["step", "stream", "match", "absent", "status"]
DMESG_KEYS = ["match", "absent"]
COUNTER_KEYS = ["node", "source", "name", "iface", "path", "equals", "at_least", "at_most"]
PCAP_KEYS = ["capture", "filter", "equals", "at_least", "at_most"]
COUNTER_SOURCES = ["nstat", "tls_stat", "link", "file"]
CHECK_KINDS = ["output", "dmesg", "counter", "pcap"]
LINKTYPE_ETHERNET = 1


def _compare(body: LMap, where: str, p: Problems) -> Compare:
    values = {k: as_int(body[k], body.val_loc(k), f"{where} {k}", p, 0, 1 << 62)
              for k in ("equals", "at_least", "at_most") if k in body}
    if not values:
        p.add(body.loc, f"{where} needs a comparison: equals:, at_least: or at_most:.",
              "E.g. `at_least: 1`.")
    return Compare(**values)


def expect_step(base: dict[str, Any], block: LMap, ctx: StepContext, where: str) -> ExpectStep:
    p = ctx.p
    kinds = [k for k in CHECK_KINDS if k in block]
    step = ExpectStep(**base)
    if len(kinds) != 1:
        p.add(block.loc, f"{where} needs exactly one of {', '.join(CHECK_KINDS)}"
              + (f" (it has {', '.join(kinds)})." if kinds else "."),
              "Write one expectation per step; each gets its own line in the verdict.")
        return step
    kind = kinds[0]
    body = as_map(block[kind], block.val_loc(kind), f"{where} {kind}", p)
    if body is None:
        return step
    inner = f"{where} {kind}"
    if kind == "output":
        check_keys(body, OUTPUT_KEYS, inner, p)
        ref = ctx.earlier(body, "step", inner, (ExecStep, WaitForStep, TrafficStep,
                                                 VerifyStep), "exec, wait_for, traffic or "
                                                              "verify step")
        stream = choice(body["stream"], body.val_loc("stream"), f"{inner} stream",
                         ["stdout", "stderr"], p) if "stream" in body else "stdout"
        status = (as_int(body["status"], body.val_loc("status"), f"{inner} status", p, 0, 255)
                  if "status" in body else None)
        check = OutputCheck(step=ref, stream=stream or "stdout",
                            match=ctx.regex(body, "match", inner),
                            absent=ctx.regex(body, "absent", inner), status=status)
        if not any(k in body for k in ("match", "absent", "status")):
            p.add(body.loc, f"{inner} needs match:, absent: or status:.",
                  "E.g. `match: 'fionread_y=100'`.")
        step.check = check
    elif kind == "dmesg":
        check_keys(body, DMESG_KEYS, inner, p)
        if ("match" in body) == ("absent" in body):
            p.add(body.loc, f"{inner} needs exactly one of match: and absent:.",
                  "E.g. `match: 'WARNING: CPU'`, or `absent: 'BUG:|WARNING:'` (an absence "
                  "check: give it a positive control beside it).")
        step.check = DmesgCheck(match=ctx.regex(body, "match", inner),
                                absent=ctx.regex(body, "absent", inner))
    elif kind == "counter":
        check_keys(body, COUNTER_KEYS, inner, p, required=("node", "source", "name"))
        node = ctx.node(body, "node", inner) if "node" in body else ""
        source = (choice(body["source"], body.val_loc("source"), f"{inner} source",
                          COUNTER_SOURCES, p) if "source" in body else None) or ""
        iface = ""
        if source == "link":
            iface = ctx.iface(body, node, inner)
        path = ""
        if source == "file":
            path = as_str(body.get("path"), body.val_loc("path"), f"{inner} path", p) or "" \
                if "path" in body else ""
            if not path.startswith("/proc/") and not path.startswith("/sys/"):
                p.add(body.val_loc("path") if "path" in body else body.loc,
                      f"{inner} with source file needs `path:` under /proc or /sys.",
                      "E.g. `path: /proc/net/tls_stat` (lines of NAME VALUE).")
        name = as_str(body["name"], body.val_loc("name"), f"{inner} name", p) or "" \
            if "name" in body else ""
        step.check = CounterCheck(node=node, source=source, counter=name,
                                  compare=_compare(body, inner, p), iface=iface, path=path)
    else:
        check_keys(body, PCAP_KEYS, inner, p, required=("capture",))
        ref = ctx.earlier(body, "capture", inner, (CaptureStep,), "capture step") \
            if "capture" in body else ""
        filt = as_str(body["filter"], body.val_loc("filter"), f"{inner} filter", p) or "" \
            if "filter" in body else ""
        wrong = display_filter_problem(filt) if filt else ""
        if wrong:
            p.add(body.val_loc("filter"), f"{inner} filter is not a Wireshark display filter "
                  f"tshark accepts: {wrong}.", "Try it with `tshark -r FILE -Y '...'`; sets "
                  "are written {1, 2}.")
        step.check = PcapCheck(capture=ref, compare=_compare(body, inner, p), filter=filt)
    return step


_FILTERS: dict[str, str] = {}


def display_filter_problem(text: str) -> str:
    """What tshark says is wrong with a display filter ("" if it compiles, or if tshark
    is not installed: the run then says so)."""
    import shutil
    import subprocess
    import tempfile

    if text in _FILTERS:
        return _FILTERS[text]
    tshark = shutil.which("tshark")
    if tshark is None:
        return ""
    with tempfile.NamedTemporaryFile(suffix=".pcap") as empty:
        empty.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        empty.flush()
        done = subprocess.run([tshark, "-n", "-r", empty.name, "-Y", text],
                              capture_output=True, text=True, timeout=60)
    lines = [ln.strip() for ln in done.stderr.splitlines()
             if ln.strip() and "dangerous" not in ln]
    _FILTERS[text] = "" if done.returncode == 0 else (
        lines[0].removeprefix("tshark: ").rstrip(".") if lines else f"exit {done.returncode}")
    return _FILTERS[text]

