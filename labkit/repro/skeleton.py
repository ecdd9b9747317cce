"""`labkit repro new LAB`: a scenario skeleton from a running lab, to hand a finding on.

The skeleton is valid as written (it runs the lab's topology on the kernel the lab runs
on, and checks nothing yet), so `labkit repro validate` passes before a word is changed;
each step kind is shown commented out with the lab's own node and interface names.
"""

from __future__ import annotations

import textwrap

import yaml

from labkit.lab.lab import Lab


def from_lab(name: str) -> str:
    lab = Lab.attach(name)
    doc = yaml.safe_load(lab.topo.source) or {}
    doc.pop("name", None)
    topo = textwrap.indent(yaml.safe_dump(doc, sort_keys=False, width=88), "  ")
    kernel = lab.placement.parts[0].kernel  # "host": this machine's kernel
    nodes = list(lab.topo.nodes)
    a, b = nodes[0], nodes[-1]
    iface = next(iter(lab.topo.nodes[a].interfaces), "eth1")
    other = "debian-6.1" if kernel != "debian-6.1" else "debian-6.12"
    return f"""\
# Written by `labkit repro new {name}` from lab '{name}' ({lab.placement.describe()}).
# Fill in title:, source:, what each kernel should show (expect:) and the steps below,
# then: labkit repro validate FILE && labkit repro run FILE
scenario: {_name(name)}
title: "TODO: one line saying what the kernel does wrong"
source:
  # commit: 0123456789ab             # the upstream fix (or the commit that broke it)
  # subject: "net: what the fix is called"
  # url: https://lore.kernel.org/...
  report: "TODO: where this was reported, or what you saw"
description: |
  TODO: what the steps do and what to look for.
topology:
{topo.rstrip()}
# kernel_options: [init_on_alloc=0]  # kernel command line for every kernel below
kernels:
  {kernel}: {{}}                      # e.g. {{expect: reproduced}} (the bug shows here)
  # {other}: {{expect: not reproduced}}
steps:
  - up
  - exec: {{name: kernel, node: {a}, cmd: [uname, -r]}}
  # Steps run in order; each has a timeout (seconds). Checks marked `when: reproduced`
  # say what the bug looks like; `when: not reproduced` what a fixed kernel shows; the
  # others must hold on every kernel. Placeholders: {{python}} {{dir}} {{ns:NODE}}
  # {{ipv4:NODE[:IFACE]}} {{ipv6:NODE[:IFACE]}}. Scripts ship beside the scenario.
  #
  # - sysctl: {{node: {a}, set: {{net.ipv4.tcp_sack: "0"}}}}
  # - capture: {{name: wire, node: {a}, iface: {iface}, duration: 120}}
  # - exec: {{name: bg, node: {b}, cmd: "...", background: true, timeout: 60}}
  # - exec:
  #     name: trigger
  #     node: {a}
  #     cmd: "{{python}} {{dir}}/scripts/trigger.py --peer {{ipv4:{b}}}"
  #     timeout: 60
  #     expect: {{status: 0, stdout: 'done'}}
  # - inject: {{node: {a}, iface: {iface}, pcap: report.pcap}}   # or frame: tipc:KIND
  # - traffic: {{from: {a}, to: {b}, proto: tcp, duration: 2}}
  # - wait_for: {{node: {a}, cmd: "ip -j link", until: {{stdout: 'UP'}}, timeout: 30}}
  # - wait_for: {{dmesg: 'WARNING: CPU', timeout: 30}}
  # - verify: {{kind: checks}}                    # the topology's declared checks
  # - expect: {{name: warns, when: reproduced, dmesg: {{match: 'WARNING: CPU'}}}}
  # - expect: {{name: quiet, when: not reproduced, dmesg: {{absent: 'WARNING: CPU'}}}}
  # - expect: {{name: said, when: reproduced, output: {{step: trigger, match: 'value=0'}}}}
  # - expect: {{counter: {{node: {a}, source: nstat, name: TcpExtTCPAbortOnData, at_least: 1}}}}
  # - expect: {{pcap: {{capture: wire, filter: 'tcp.flags.reset == 1', at_least: 1}}}}
"""


def _name(lab: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in lab)[:40] or "scenario"
